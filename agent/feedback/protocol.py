"""The feedback store seam: :class:`Store`, what every feedback store does (the SQLite
:class:`~agent.feedback.store.FeedbackStore` and the PostgreSQL
:class:`~agent.feedback.postgres.PostgresFeedbackStore`), and :class:`SharedStore`, what a store
that several server replicas share adds: the interest-profile cache entries, and one change log
over catalogue upserts and forgotten users that each replica follows.

``tests/store_contract.py`` states the contract once and runs it against both stores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from agent.feedback.events import FeedbackEvent
from hyrec.data import Item


@runtime_checkable
class Store(Protocol):
    """Durable feedback: an event is acknowledged (returned) only after it is committed.

    Every call answers within about ``wait`` seconds or raises
    :class:`~agent.feedback.events.StoreUnavailable` with nothing written.
    """

    wait: float

    def health(self) -> tuple[bool, str]:
        """``(True, "ok")``, or ``(False, why)`` when the store cannot be read or written now."""
        ...

    def add(
        self,
        user_id: str,
        item_id: str,
        event: str,
        value: float | None = None,
        timestamp: float | None = None,
        client_id: str | None = None,
    ) -> FeedbackEvent:
        """Store one event (idempotent per ``client_id``); returns after the commit."""
        ...

    def events(self, user_id: str) -> list[FeedbackEvent]:
        """The user's events, oldest first."""
        ...

    def users(self) -> list[str]: ...

    def count_users(self) -> int: ...

    def count(self, user_id: str | None = None) -> int: ...

    def forget(
        self,
        user_id: str,
        *,
        user_key: str | None = None,
        profile_key: str | None = None,
        snapshot_row: int | None = None,
    ) -> int:
        """Delete every event and impression of ``user_id`` in one transaction; returns how many
        events. ``user_key`` (the model's pseudonym of the user), ``profile_key`` (the profile
        cache's) and ``snapshot_row`` matter to a :class:`SharedStore` only, which deletes the
        user's profile entries and records the deletion for the other replicas in the same
        transaction."""
        ...

    def add_impressions(
        self,
        user_id: str,
        item_ids: Sequence[str],
        request_id: str,
        timestamp: float | None = None,
    ) -> int: ...

    def impressions(self, user_id: str) -> list[tuple[str, str, float]]: ...

    def upsert_items(self, items: Iterable[Item]) -> int: ...

    def items(self) -> list[Item]:
        """Every stored catalogue entry, in the order they were first stored."""
        ...

    # the dashboard's queries (agent.feedback.reports, agent.feedback.pg_reports)
    def counts_by_event(self) -> dict[str, int]: ...

    def timeline(self, bucket_seconds: float) -> list[tuple[float, str, int]]: ...

    def span(self) -> tuple[float, float] | None: ...

    def count_impressions(self) -> int: ...

    def online_rates(self, horizon_seconds: float = 86_400.0) -> dict[str, float | int]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Deletion:
    """A user forgotten through some replica: what the others must drop from memory."""

    user_key: str  # the model's pseudonym of the user (agent.api.Recommender._user_key)
    profile_key: str | None  # the profile cache's pseudonym
    snapshot_row: int | None  # the user's row in the model snapshot, if they had one


@dataclass(frozen=True)
class Changes:
    """What changed after a version: items upserted and users forgotten, in commit order."""

    version: int  # the newest change included (the ``after`` asked for when nothing changed)
    items: tuple[Item, ...] = ()
    deletions: tuple[Deletion, ...] = ()


class Follower(Protocol):
    """A running subscription to a :class:`SharedStore`'s changes; ``stop()`` ends it."""

    def stop(self) -> None: ...


@runtime_checkable
class SharedStore(Store, Protocol):
    """A store several replicas share (PostgreSQL): profile entries and the change log."""

    def changes(self, after: int) -> Changes:
        """Upserts and deletions with a version above ``after``, read in one snapshot."""
        ...

    def follow(self, on_change: Callable[[], None], interval: float) -> Follower:
        """Call ``on_change`` soon after every committed change (and every ``interval``
        seconds anyway, so a lost notification costs at most that long)."""
        ...

    def get_profile(self, pseudonym: str, variant: str) -> tuple[str, str] | None:
        """The stored ``(key JSON, profile JSON)`` of one cache slot, or None."""
        ...

    def put_profile(self, pseudonym: str, variant: str, key: str, body: str) -> bool:
        """Store one cache slot; refused (False) when the user was forgotten moments ago."""
        ...

    def drop_profiles(self, pseudonym: str) -> int:
        """Delete every cache slot of a pseudonym; returns how many."""
        ...
