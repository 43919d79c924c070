"""What every request's LLM calls pass through: a per-request time budget and one circuit breaker.

:class:`GuardedLLM` wraps any :class:`~agent.llm.LLM`:

* **budget** — the stages of one request run in that request's thread, so a thread-local deadline
  (:meth:`GuardedLLM.budget`) caps each call at what is left of the request's LLM seconds, and a
  call made after the deadline raises :class:`LLMTimeout` at once (the stage falls back);
* **circuit breaker** — after a call finds the backend unavailable, calls fail fast with
  :class:`LLMUnavailable` for ``down_seconds``, so a dead server costs one failed connection per
  window instead of one per stage and request;
* **busy** — once a call of a request finds every backend slot taken (:class:`LLMBusy`), the
  request's later calls are skipped at once, so a request past the LLM's capacity waits for a
  slot once (``[llm] slot_wait``), not once per stage.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from agent.llm.protocol import LLM, Completion, LLMBusy, LLMTimeout, LLMUnavailable, Message

DOWN_SECONDS = 30.0  # after "LLM unavailable", skip the LLM this long


class GuardedLLM:
    """An LLM with a per-thread time budget and a circuit breaker (module doc)."""

    def __init__(self, llm: LLM, down_seconds: float = DOWN_SECONDS) -> None:
        self.inner = llm
        self.name = getattr(llm, "name", "llm")
        self.down_seconds = down_seconds
        self._local = threading.local()
        self._down_until = 0.0

    @contextmanager
    def budget(self, seconds: float) -> Iterator[None]:
        """Calls inside share ``seconds`` (nested budgets take the earlier deadline). Once a call
        inside finds the LLM busy (:class:`LLMBusy`: every slot taken), the rest of the outermost
        budget's calls are skipped at once instead of each waiting for a slot again."""
        outer = getattr(self._local, "deadline", None)
        deadline = time.monotonic() + seconds
        self._local.deadline = deadline if outer is None else min(outer, deadline)
        if outer is None:
            self._local.busy = False
        try:
            yield
        finally:
            self._local.deadline = outer
            if outer is None:
                self._local.busy = False

    @property
    def available(self) -> bool:
        """False while the breaker is open."""
        return time.monotonic() >= self._down_until

    def complete(
        self, messages: Sequence[Message], *, timeout: float | None = None, **kwargs: Any
    ) -> Completion:
        if not self.available:
            raise LLMUnavailable("LLM unavailable (skipping calls for a while)")
        deadline = getattr(self._local, "deadline", None)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0.05:
                raise LLMTimeout("this request's LLM time budget is spent")
            timeout = left if timeout is None else min(timeout, left)
        if getattr(self._local, "busy", False):
            raise LLMBusy("LLM busy: skipped (an earlier call of this request found no free slot)")
        try:
            return self.inner.complete(messages, timeout=timeout, **kwargs)
        except LLMUnavailable:
            self._down_until = time.monotonic() + self.down_seconds
            raise
        except LLMBusy:
            if deadline is not None:  # inside a request: its other stages need not wait again
                self._local.busy = True
            raise

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()
