"""One deadline per request for every wait on the feedback store.

The server gives a feedback request ``store_wait`` seconds in all (a 503 with ``Retry-After``
after that): first the wait for one of the feedback threads, then the store's own waits (the
write lock, a file or a row locked elsewhere, a pooled connection). Without a shared deadline
each wait had the whole budget, so under the chaos bench's 5-s database lock 30 of 541
feedbacks answered after 2.1-2.9 s for a 2-s wait. The server sets the request's deadline
(:func:`store_deadline`, at its arrival plus the wait) around the call; the stores ask
:func:`remaining` how long they may still wait. Calls made outside a request (the Python API,
tests, batch jobs) have no deadline and wait their store's full ``wait``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: The shortest store wait a request gets even past its deadline: one try at a lock held for a
#: moment (a commit in flight, a checkpoint), not a refusal of a store that is only busy.
MIN_WAIT = 0.05

_deadline: ContextVar[float | None] = ContextVar("hyrec_store_deadline", default=None)


@contextmanager
def store_deadline(at: float) -> Iterator[None]:
    """Store waits inside this block end by ``at`` (``time.monotonic()`` seconds)."""
    token = _deadline.set(at)
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining(wait: float) -> float:
    """Seconds a store wait of at most ``wait`` may last from now: ``wait``, or less when the
    request's deadline comes first, never less than :data:`MIN_WAIT`."""
    at = _deadline.get()
    if at is None:
        return wait
    return max(MIN_WAIT, min(wait, at - time.monotonic()))
