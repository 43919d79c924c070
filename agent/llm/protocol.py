"""The one-method LLM protocol every LLM stage talks to, and its error types.

Backends implement :class:`LLM`: the OpenAI-compatible client (``agent.llm.openai_backend``; vLLM,
the embedded llama.cpp server, any hosted endpoint) and an in-process transformers model. The stages
(profiles, re-ranking, explanations, chat) never import a backend; they take an ``LLM`` and treat
every :class:`LLMError` as "fall back to the non-LLM path".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class Completion:
    """What one call returned.

    Attributes:
        text: The generated text.
        model: The model name the server reported.
        seconds: Wall time of the call.
        tokens: Generated tokens, when logprobs were asked for and the backend returns them.
        logprobs: Log-probability of each generated token (same length as ``tokens``).
        top_logprobs: Per generated position, the top alternatives as token → log-probability.
        usage: Token counts as reported (``prompt_tokens``, ``completion_tokens``).
    """

    text: str
    model: str = ""
    seconds: float = 0.0
    tokens: tuple[str, ...] | None = None
    logprobs: tuple[float, ...] | None = None
    top_logprobs: tuple[Mapping[str, float], ...] | None = None
    usage: Mapping[str, int] = field(default_factory=dict)


class LLMError(RuntimeError):
    """Any failure of an LLM call; callers fall back to the non-LLM path."""


class LLMUnavailable(LLMError):
    """The backend cannot be reached (server down, refused connection, failed start)."""


class LLMTimeout(LLMError):
    """The call ran past its timeout."""


class LLMBusy(LLMTimeout):
    """Every concurrency slot stayed taken for the whole slot wait: the call was not made."""


class LLMBadOutput(LLMError):
    """The model answered, but not in the shape the caller asked for."""


@runtime_checkable
class LLM(Protocol):
    """A chat-completion model. Implementations are thread-safe and bound their own concurrency."""

    name: str

    def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        json_schema: Mapping[str, Any] | None = None,
        logprobs: int = 0,
        timeout: float | None = None,
    ) -> Completion:
        """Generate one assistant turn.

        Args:
            messages: The conversation, oldest first.
            max_tokens: Upper bound on generated tokens (sent as ``max_tokens``: llama.cpp's server
                ignores ``max_completion_tokens``).
            temperature: 0 means greedy.
            json_schema: Constrain the output to this JSON schema where the backend supports
                structured output; otherwise a hint the caller still validates.
            logprobs: How many top alternatives per generated token to return (0: none).
            timeout: Seconds before :class:`LLMTimeout`; ``None`` uses the backend's default.

        Raises:
            LLMUnavailable, LLMTimeout, LLMError.
        """
        ...


def check_arguments(
    messages: Sequence[Message], max_tokens: int, temperature: float, logprobs: int, timeout: float
) -> None:
    """Raise ``ValueError`` naming the first bad argument of :meth:`LLM.complete`."""
    if not messages:
        raise ValueError("messages is empty: give at least one message")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1 (got {max_tokens})")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (got {temperature})")
    if logprobs < 0:
        raise ValueError(f"logprobs must be >= 0 (got {logprobs})")
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds (got {timeout})")
