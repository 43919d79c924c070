"""The durable feedback store: user events and catalogue upserts in one embedded SQLite file.

An event is acknowledged only after its transaction has committed, so an acknowledged event
survives a crash of the process. The file is opened in WAL mode (readers never block the writer)
with ``synchronous=FULL`` by default: every commit fsyncs the write-ahead log, so an acknowledged
event also survives a power cut or an OS crash. ``synchronous=NORMAL`` syncs only at checkpoints;
in WAL mode that is still safe against a crash of the *process* (the committed frames are in the
OS page cache and reach the file when the OS writes them back), but the last commits can be lost
when the *machine* goes down, so it is an opt-in for throughput, not the default
(https://www.sqlite.org/wal.html, https://www.sqlite.org/pragma.html#pragma_synchronous).

Forgetting a user deletes their rows with ``secure_delete`` on (freed pages are zeroed) and then
checkpoints and truncates the WAL, so the deleted events leave no copy in either file.

Tables: ``events`` (one row per feedback event), ``items`` (catalogue entries added or changed
through the API, replayed onto the saved model when it is loaded), ``impressions`` (which items
were shown to which user, per answer: the denominator of the online metrics, see
:meth:`FeedbackStore.online_rates`). Impressions are committed like events and forgotten with them.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hyrec.data import Item

log = logging.getLogger(__name__)

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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event TEXT NOT NULL,
    value REAL,
    timestamp REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id, id);
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS impressions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    timestamp REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS impressions_user_item ON impressions (user_id, item_id, timestamp);
CREATE INDEX IF NOT EXISTS events_user_item ON events (user_id, item_id, timestamp);
"""

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


class FeedbackStore:
    """Events and item upserts in a SQLite file (or in memory, for a model not saved yet).

    Args:
        path: The database file; ``None`` keeps everything in memory until :meth:`backup_to`.
        synchronous: ``"FULL"`` (default: fsync at every commit) or ``"NORMAL"`` (see the module
            doc for what each one guarantees).

    Thread-safe: one connection behind a lock; every write is its own committed transaction.
    """

    def __init__(
        self, path: Path | None = None, *, synchronous: Literal["FULL", "NORMAL"] = "FULL"
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        self.path = Path(path) if path is not None else None
        self.synchronous = synchronous
        self._lock = threading.Lock()
        self._conn = self._open(self.path)

    def _open(self, path: Path | None) -> sqlite3.Connection:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            ":memory:" if path is None else str(path),
            check_same_thread=False,  # guarded by self._lock
            isolation_level=None,  # explicit BEGIN/COMMIT
            timeout=30.0,
        )
        if path is not None:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise RuntimeError(f"{path}: SQLite refused WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA secure_delete=ON")  # forgotten rows are overwritten, not just freed
        conn.executescript(_SCHEMA)
        return conn

    # ---- events --------------------------------------------------------------------------------
    def add(
        self,
        user_id: str,
        item_id: str,
        event: str,
        value: float | None = None,
        timestamp: float | None = None,
    ) -> FeedbackEvent:
        """Store one event; returns only after the commit (so the caller may acknowledge it).

        Raises:
            ValueError: an unknown event kind or a rating without a value.
        """
        check_event(event, value)
        ts = time.time() if timestamp is None else float(timestamp)
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO events (user_id, item_id, event, value, timestamp) "
                "VALUES (?, ?, ?, ?, ?)",
                (user_id, item_id, event, value, ts),
            )  # autocommit: the statement is its own transaction, committed (and synced) here
            event_id = int(cur.lastrowid)
        return FeedbackEvent(event_id, user_id, item_id, event, value, ts)

    def events(self, user_id: str) -> list[FeedbackEvent]:
        """The user's events, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, user_id, item_id, event, value, timestamp FROM events "
                "WHERE user_id = ? ORDER BY id",
                (user_id,),
            ).fetchall()
        return [FeedbackEvent(*r) for r in rows]

    def users(self) -> list[str]:
        """Every user with at least one stored event."""
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT DISTINCT user_id FROM events")]

    def count_users(self) -> int:
        """How many users have at least one stored event."""
        with self._lock:
            row = self._conn.execute("SELECT COUNT(DISTINCT user_id) FROM events").fetchone()
        return int(row[0])

    def count(self, user_id: str | None = None) -> int:
        """Number of stored events (of one user, or of everyone)."""
        with self._lock:
            if user_id is None:
                return int(self._conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
            return int(
                self._conn.execute(
                    "SELECT COUNT(*) FROM events WHERE user_id = ?", (user_id,)
                ).fetchone()[0]
            )

    def counts_by_event(self) -> dict[str, int]:
        """Stored events per kind (kinds without events are left out)."""
        with self._lock:
            rows = self._conn.execute("SELECT event, COUNT(*) FROM events GROUP BY event")
            return {str(e): int(n) for e, n in rows}

    def timeline(self, bucket_seconds: float) -> list[tuple[float, str, int]]:
        """Events per time bucket and kind: ``(bucket start, event, count)``, oldest first."""
        if not bucket_seconds > 0:
            raise ValueError(f"bucket_seconds must be positive, got {bucket_seconds!r}")
        with self._lock:
            rows = self._conn.execute(
                "SELECT CAST(timestamp / ? AS INTEGER) AS b, event, COUNT(*) FROM events "
                "GROUP BY b, event ORDER BY b",
                (bucket_seconds,),
            ).fetchall()
        return [(b * bucket_seconds, str(e), int(n)) for b, e, n in rows]

    def span(self) -> tuple[float, float] | None:
        """The first and last event time, or None without events."""
        with self._lock:
            lo, hi = self._conn.execute(
                "SELECT MIN(timestamp), MAX(timestamp) FROM events"
            ).fetchone()
        return None if lo is None else (float(lo), float(hi))

    def forget(self, user_id: str) -> int:
        """Delete every event and impression of ``user_id`` and scrub the freed pages; returns
        how many events."""
        with self._transaction() as conn:
            removed = conn.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount
            conn.execute("DELETE FROM impressions WHERE user_id = ?", (user_id,))
        if self.path is not None:  # copy the zeroed pages back and empty the WAL
            with self._lock:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(removed)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock: committed at the end, rolled back on any error."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # ---- impressions ----------------------------------------------------------------------------
    def add_impressions(
        self,
        user_id: str,
        item_ids: Sequence[str],
        request_id: str,
        timestamp: float | None = None,
    ) -> int:
        """Record that ``item_ids`` were shown to ``user_id`` in one answer (one transaction,
        committed before this returns); returns how many rows were stored."""
        if not user_id:
            raise ValueError("an impression needs a user id")
        ts = time.time() if timestamp is None else float(timestamp)
        rows = [(user_id, i, request_id, ts) for i in dict.fromkeys(item_ids)]
        if not rows:
            return 0
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO impressions (user_id, item_id, request_id, timestamp) "
                "VALUES (?, ?, ?, ?)",
                rows,
            )
        return len(rows)

    def impressions(self, user_id: str) -> list[tuple[str, str, float]]:
        """The user's impressions as ``(item_id, request_id, timestamp)``, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT item_id, request_id, timestamp FROM impressions WHERE user_id = ? "
                "ORDER BY id",
                (user_id,),
            ).fetchall()
        return [(str(i), str(r), float(t)) for i, r, t in rows]

    def count_impressions(self) -> int:
        """Stored impressions (one per item per answer)."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM impressions").fetchone()[0])

    def online_rates(self, horizon_seconds: float = 86_400.0) -> dict[str, float | int]:
        """Online metrics over the items shown: of the distinct (user, item) pairs shown, the
        share that got a like, click or purchase (``hit_rate``) and the share that got a
        dislike (``dislike_rate``) from that user within ``horizon_seconds`` after the item was
        first shown to them.

        Returns:
            ``shown`` (distinct pairs), ``hits``, ``dislikes``, ``hit_rate``, ``dislike_rate``
            (0.0 when nothing was shown).
        """
        marks = ",".join("?" * len(HIT_EVENTS))
        query = f"""
            WITH shown AS (
                SELECT user_id, item_id, MIN(timestamp) AS t FROM impressions
                GROUP BY user_id, item_id
            )
            SELECT COUNT(*),
                SUM(EXISTS (SELECT 1 FROM events e WHERE e.user_id = s.user_id
                    AND e.item_id = s.item_id AND e.event IN ({marks})
                    AND e.timestamp >= s.t AND e.timestamp <= s.t + ?)),
                SUM(EXISTS (SELECT 1 FROM events e WHERE e.user_id = s.user_id
                    AND e.item_id = s.item_id AND e.event = 'dislike'
                    AND e.timestamp >= s.t AND e.timestamp <= s.t + ?))
            FROM shown s
        """  # only the placeholders are interpolated
        with self._lock:
            shown, hits, dislikes = self._conn.execute(
                query, (*HIT_EVENTS, horizon_seconds, horizon_seconds)
            ).fetchone()
        shown, hits, dislikes = int(shown or 0), int(hits or 0), int(dislikes or 0)
        return {
            "shown": shown,
            "hits": hits,
            "dislikes": dislikes,
            "hit_rate": hits / shown if shown else 0.0,
            "dislike_rate": dislikes / shown if shown else 0.0,
        }

    # ---- catalogue upserts ------------------------------------------------------------------
    def upsert_items(self, items: Iterable[Item]) -> int:
        """Store (or replace) catalogue entries, all in one transaction."""
        now = time.time()
        rows = [(it.item_id, json.dumps(_item_body(it), ensure_ascii=False), now) for it in items]
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO items (item_id, body, updated) VALUES (?, ?, ?) "
                "ON CONFLICT(item_id) DO UPDATE SET body = excluded.body, "
                "updated = excluded.updated",
                rows,
            )
        return len(rows)

    def items(self) -> list[Item]:
        """Every stored catalogue entry, in the order they were first stored."""
        with self._lock:
            rows = self._conn.execute("SELECT body FROM items ORDER BY rowid").fetchall()
        out = []
        for (body,) in rows:
            r = json.loads(body)
            out.append(Item(r["item_id"], r["title"], r["description"], r["attributes"]))
        return out

    # ---- lifecycle -------------------------------------------------------------------------------
    def backup_to(self, path: Path) -> None:
        """Copy everything into ``path`` (a new file) and continue writing there."""
        path = Path(path)
        if self.path is not None and path.resolve() == self.path.resolve():
            return
        if path.exists():
            raise FileExistsError(f"{path}: a feedback database is already there")
        target = self._open(path)
        with self._lock:
            self._conn.backup(target)
            self._conn.close()
            self._conn, self.path = target, path

    def close(self) -> None:
        with self._lock:
            try:
                if self.path is not None:
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._conn.close()


def _item_body(item: Item) -> dict[str, Any]:
    return {
        "item_id": item.item_id,
        "title": item.title,
        "description": item.description,
        "attributes": dict(item.attributes),
    }


def count_events(path: Path) -> int:
    """Events in a database file, read with a fresh connection (for durability checks)."""
    conn = sqlite3.connect(str(path))
    try:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    finally:
        conn.close()


def event_ids(path: Path) -> Sequence[int]:
    """Every stored event id in a database file, read with a fresh connection."""
    conn = sqlite3.connect(str(path))
    try:
        return [r[0] for r in conn.execute("SELECT id FROM events ORDER BY id")]
    finally:
        conn.close()
