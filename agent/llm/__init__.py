"""The LLM room: the one-method protocol (re-exported here), budgets, backends, the embedded server.

Stages import only the protocol names from here; backends are imported by
:func:`agent.llm.connect.connect` and the CLI.
"""

from agent.llm.protocol import (
    LLM,
    Completion,
    LLMBadOutput,
    LLMBusy,
    LLMError,
    LLMTimeout,
    LLMUnavailable,
    Message,
    check_arguments,
)

__all__ = [
    "LLM",
    "Completion",
    "LLMBadOutput",
    "LLMBusy",
    "LLMError",
    "LLMTimeout",
    "LLMUnavailable",
    "Message",
    "check_arguments",
]
