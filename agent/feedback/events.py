"""What a feedback event is: the kinds the store accepts, which count as interest, and the typed
stored event."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


class StoreUnavailable(RuntimeError):
    """The store could not take or answer a request in time (locked, busy, full, read-only or an
    I/O error). Nothing was written; the caller may retry after retry_after seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EventConflict(ValueError):
    """A client event_id that was already used for a different event."""


#: Events the store accepts: kind → whether it counts as interest in the item. ``rating`` depends
#: on its value (see :func:`is_positive`).
EVENTS: Mapping[str, bool | None] = {
    "view": True,
    "click": True,
    "like": True,
    "purchase": True,
    "rating": None,
    "dislike": False,
    "skip": False,
}

#: Events that count as a hit on an item shown (the online hit rate's numerator).
HIT_EVENTS = ("like", "click", "purchase")


@dataclass(frozen=True)
class FeedbackEvent:
    """One stored event (``id`` grows with insertion order)."""

    id: int
    user_id: str
    item_id: str
    event: str
    value: float | None
    timestamp: float
    client_id: str | None = None  # the client's idempotency key (``event_id`` in the API)
    duplicate: bool = False  # True when this add() found the event already stored


def is_positive(event: str, value: float | None, positive_rating: float) -> bool:
    """Whether ``event`` says the user wants more like the item (ratings: ``value >=
    positive_rating``)."""
    kind = EVENTS[event]
    if kind is None:
        return value is not None and value >= positive_rating
    return kind


def check_event(event: str, value: float | None) -> None:
    """Raise ValueError naming the problem when ``event``/``value`` is not a storable event."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}; use one of {sorted(EVENTS)}")
    if event == "rating" and value is None:
        raise ValueError("a 'rating' event needs a value (e.g. 4.0)")
    if value is not None and value != value:  # NaN
        raise ValueError("value must be a number, got NaN")
