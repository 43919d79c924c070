"""The LLM stages of a request, each with a deterministic fallback: interest profiles, re-ranking
and reasons; plus what keeps personal data out of prompts (:mod:`agent.stages.privacy`)."""
