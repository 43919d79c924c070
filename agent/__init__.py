"""agent: the top floor. Everything that talks to an LLM, and every door.

* :mod:`agent.pipeline` — the one request path (user state → intent → profile → hybrid → re-rank
  → reasons), called by every door;
* :mod:`agent.api` — :class:`~agent.api.Recommender`, the Python API around that path (fit, save,
  load, feedback, catalogue upserts, erasure);
* :mod:`agent.llm` — the one-method LLM protocol, its backends and the embedded server;
* :mod:`agent.stages` — the LLM stages (interest profiles, re-ranking, reasons) and privacy;
* :mod:`agent.chat` — the request parser, the chat agent and its LangChain tools;
* :mod:`agent.serve` — the FastAPI server; :mod:`agent.cli` — the ``hyrec`` command.
"""
