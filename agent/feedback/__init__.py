"""Feedback: the durable store of user events, impressions and catalogue upserts
(:mod:`agent.feedback.store`), what an event is (:mod:`agent.feedback.events`) and the dashboard's
queries (:mod:`agent.feedback.reports`)."""

from agent.feedback.events import (
    EVENTS,
    HIT_EVENTS,
    EventConflict,
    FeedbackEvent,
    StoreUnavailable,
    check_event,
    is_positive,
)
from agent.feedback.schema import count_events, event_ids
from agent.feedback.store import FeedbackStore

__all__ = [
    "EVENTS",
    "HIT_EVENTS",
    "EventConflict",
    "FeedbackEvent",
    "FeedbackStore",
    "StoreUnavailable",
    "check_event",
    "count_events",
    "event_ids",
    "is_positive",
]
