"""What a SQLite error means to the caller of the feedback store: "not now" (the file locked
elsewhere, the disk full or read-only, an I/O error) becomes
:class:`~agent.feedback.events.StoreUnavailable` naming what failed, with nothing written (the
HTTP layer answers 503 with ``Retry-After``); anything else is a bug and stays as it is."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from agent.feedback.events import StoreUnavailable

#: SQLite error texts that mean "not now" (nothing was written), not a bug.
_UNAVAILABLE = ("locked", "busy", "full", "readonly", "read-only", "disk i/o", "unable to open")


@contextmanager
def mapped(what: str) -> Iterator[None]:
    """SQLite's operational errors as :class:`StoreUnavailable`, naming what failed."""
    try:
        yield
    except sqlite3.OperationalError as e:
        text = str(e).lower()
        if any(word in text for word in _UNAVAILABLE):
            raise StoreUnavailable(f"{what}: the feedback store is unavailable ({e})") from e
        raise
