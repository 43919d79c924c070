"""The HTTP door: the FastAPI app (:mod:`agent.serve.app`) and its payloads
(:mod:`agent.serve.schemas`)."""
