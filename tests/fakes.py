"""Scripted stand-ins for an LLM, for tests of every LLM stage (no server, no model).

:class:`ScriptedLLM` implements :class:`agent.llm.LLM`: each call consumes the next scripted reply,
which is a string (the answer text), a :class:`~agent.llm.Completion` (to script logprobs), an
exception (raised, e.g. ``LLMUnavailable``), or a callable of the messages returning either. It
records every call, so tests can check what a stage sent. Running out of replies is a test bug and
raises ``AssertionError`` (which no stage catches).
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from agent.llm import Completion, LLMTimeout, Message

Reply = str | Completion | BaseException | Callable[[list[Message]], "str | Completion"]


class ScriptedLLM:
    """An :class:`agent.llm.LLM` that answers from a script.

    Args:
        replies: One entry per expected call, in order.
        name: The model name it reports.
        delay: Seconds each call "takes"; a call whose ``timeout`` is shorter waits ``timeout`` and
            raises :class:`LLMTimeout`, as a slow server would.
        repeat_last: Keep answering with the last reply once the script runs out.

    :meth:`release` ends the delay: calls waiting in it answer now, later calls at once.

    Attributes:
        calls: One dict per call: ``messages`` and every keyword argument.
    """

    def __init__(
        self,
        replies: Sequence[Reply],
        *,
        name: str = "scripted",
        delay: float = 0.0,
        repeat_last: bool = False,
    ) -> None:
        self.name = name
        self.delay = delay
        self.repeat_last = repeat_last
        self.calls: list[dict[str, Any]] = []
        self._replies = list(replies)
        self._next = 0
        self._lock = threading.Lock()
        self._released = threading.Event()

    def release(self) -> None:
        """No more delay: a test whose slow call has shown what it had to need not wait it out."""
        self._released.set()

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
        with self._lock:
            self.calls.append(
                {
                    "messages": list(messages),
                    "max_tokens": max_tokens,
                    "temperature": temperature,
                    "json_schema": json_schema,
                    "logprobs": logprobs,
                    "timeout": timeout,
                }
            )
            if self._next >= len(self._replies):
                if not (self.repeat_last and self._replies):
                    raise AssertionError(
                        f"ScriptedLLM: call {self._next + 1} but only {len(self._replies)} "
                        "replies were scripted"
                    )
                reply = self._replies[-1]
            else:
                reply = self._replies[self._next]
            self._next += 1
        if self.delay:
            if timeout is not None and timeout < self.delay:
                if not self._released.wait(timeout):
                    raise LLMTimeout(f"{self.name}: no answer within {timeout:.2f} s")
            else:
                self._released.wait(self.delay)
        if isinstance(reply, BaseException):
            raise reply
        if callable(reply):
            reply = reply(list(messages))
        if isinstance(reply, Completion):
            return reply
        return Completion(text=str(reply), model=self.name, seconds=self.delay)


def label_logprobs(
    probabilities: Mapping[str, float], *, extra: Mapping[str, float] = ()
) -> Completion:
    """A one-token completion whose top_logprobs give each label the probability asked for.

    ``extra`` adds non-label tokens (e.g. ``{"The": 0.2}``); the text is the most likely token.
    """
    alternatives = {
        tok: math.log(p) for tok, p in {**probabilities, **dict(extra)}.items() if p > 0
    }
    best = max(alternatives, key=alternatives.get)
    return Completion(
        text=best,
        model="scripted",
        tokens=(best,),
        logprobs=(alternatives[best],),
        top_logprobs=(alternatives,),
    )


class HashEmbedder:
    """A sentence-transformers stand-in: bag-of-words vectors hashed into ``dim`` buckets.

    Texts sharing words get a positive cosine, so similarity tests have a known answer. Use it as
    ``TextEncoder(TextEncoderConfig(cache_dir=None, show_progress=False), model=HashEmbedder())``.
    """

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.calls = 0

    def encode(self, sentences: list[str], **kwargs: Any) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(sentences), self.dim), np.float32)
        for row, text in enumerate(sentences):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                bucket = int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim
                out[row, bucket] += 1.0
        return out
