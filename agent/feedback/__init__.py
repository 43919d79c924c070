"""Feedback: the durable store of user events, impressions and catalogue upserts. One protocol
(:mod:`agent.feedback.protocol`: ``Store``, and ``SharedStore`` for replicas), two stores: SQLite
for one process (:mod:`agent.feedback.store`, the default) and PostgreSQL for replicas
(:mod:`agent.feedback.postgres`, imported only by :func:`open_store` for a ``postgresql://`` URL,
with its pool in :mod:`agent.feedback.pg_pool` and its LISTEN/NOTIFY follower in
:mod:`agent.feedback.pg_follow`);
what an event is (:mod:`agent.feedback.events`) and the dashboard's queries
(:mod:`agent.feedback.reports`, :mod:`agent.feedback.pg_reports`)."""

from agent.feedback.events import (
    EVENTS,
    HIT_EVENTS,
    EventConflict,
    FeedbackEvent,
    StoreUnavailable,
    check_event,
    is_positive,
)
from agent.feedback.opener import is_postgres_url, open_store
from agent.feedback.protocol import Changes, Deletion, SharedStore, Store
from agent.feedback.schema import count_events, event_ids
from agent.feedback.store import FeedbackStore

__all__ = [
    "EVENTS",
    "HIT_EVENTS",
    "Changes",
    "Deletion",
    "EventConflict",
    "FeedbackEvent",
    "FeedbackStore",
    "SharedStore",
    "Store",
    "StoreUnavailable",
    "check_event",
    "count_events",
    "event_ids",
    "is_positive",
    "is_postgres_url",
    "open_store",
]
