"""The durable feedback store: user events and catalogue upserts in one embedded SQLite file.

An event is acknowledged only after its transaction has committed, so an acknowledged event
survives a crash of the process. The file is opened in WAL mode (readers never block the writer)
with ``synchronous=FULL`` by default: every commit fsyncs the write-ahead log, so an acknowledged
event also survives a power cut or an OS crash. ``synchronous=NORMAL`` syncs only at checkpoints;
in WAL mode that is still safe against a crash of the *process* (the committed frames are in the
OS page cache and reach the file when the OS writes them back), but the last commits can be lost
when the *machine* goes down, so it is an opt-in for throughput, not the default
(https://www.sqlite.org/wal.html, https://www.sqlite.org/pragma.html#pragma_synchronous).

A store that cannot answer in time — the file locked by another process, the disk full or
read-only, an I/O error — raises :class:`~agent.feedback.events.StoreUnavailable` after at most
``wait`` seconds (default 2), with nothing written; the HTTP layer turns it into a 503 with
``Retry-After``. Reads go through their own connection, so a write stuck on a lock never holds
back a recommendation's read of the user's events. A client may give an event an idempotency key
(``event_id``): the same key again returns the stored event (``duplicate=True``), stored once.

Events and impressions that arrive together are committed in one transaction and one fsync
(:mod:`agent.feedback.group_commit`); each caller still returns only after that commit.

Forgetting a user deletes their rows with ``secure_delete`` on (freed pages are zeroed) and then
checkpoints and truncates the WAL from a connection of its own, so the deleted events leave no
copy in either file and other writers do not wait behind the checkpoint.

Tables: ``events`` (one row per feedback event), ``items`` (catalogue entries added or changed
through the API, replayed onto the saved model when it is loaded), ``impressions`` (which items
were shown to which user, per answer: the denominator of the online metrics, see
:meth:`FeedbackStore.online_rates`). Impressions are committed like events and forgotten with them.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Literal

from agent.feedback.events import (
    EventConflict,
    FeedbackEvent,
    StoreUnavailable,
    check_event,
)
from agent.feedback.group_commit import GroupCommit
from agent.feedback.reports import Reports
from agent.feedback.schema import create_or_migrate, item_from_json, item_json
from agent.feedback.sqlite_errors import mapped
from hyrec.data import Item

log = logging.getLogger(__name__)

WAIT_SECONDS = 2.0  # longest a call waits for a file locked elsewhere before StoreUnavailable


class FeedbackStore(Reports):
    """Events and item upserts in a SQLite file (or in memory, for a model not saved yet): the
    :class:`agent.feedback.protocol.Store` of one process.

    Args:
        path: The database file; ``None`` keeps everything in memory until :meth:`backup_to`.
        synchronous: ``"FULL"`` (default: fsync at every commit) or ``"NORMAL"`` (see the module
            doc for what each one guarantees).
        wait: Longest a call waits for the file (a lock held elsewhere) before it raises
            :class:`StoreUnavailable`.

    Thread-safe: a write connection and a read connection, each behind its own lock. Events and
    impressions that arrive together share one committed transaction
    (:mod:`agent.feedback.group_commit`); each call returns after the commit that holds it.
    """

    shared = False  # one process: replicas need agent.feedback.postgres

    def __init__(
        self,
        path: Path | None = None,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        wait: float = WAIT_SECONDS,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        if not 0 < wait <= 60:
            raise ValueError(f"wait must be in (0, 60] seconds, got {wait!r}")
        self.path = Path(path) if path is not None else None
        self.synchronous = synchronous
        self.wait = wait
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._closed = False
        self._conn = self._open(self.path)
        self._reader = self._open_reader()
        self._group = GroupCommit(self._lock, lambda: self._conn, wait)
        self._scrub_lock = threading.Lock()
        self._scrub_pending = False  # an erasure whose WAL checkpoint did not complete yet

    def _open(self, path: Path | None) -> sqlite3.Connection:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            ":memory:" if path is None else str(path),
            check_same_thread=False,  # guarded by a lock
            isolation_level=None,  # explicit BEGIN/COMMIT
            timeout=self.wait,  # SQLite's busy wait on a file locked elsewhere
        )
        with mapped(f"opening {path}"):
            if path is not None:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise RuntimeError(f"{path}: SQLite refused WAL mode (got {mode!r})")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA secure_delete=ON")  # forgotten rows are overwritten, not freed
            create_or_migrate(conn)
        return conn

    def _open_reader(self) -> sqlite3.Connection:
        """A second connection for reads (the same one in memory, which cannot be shared)."""
        if self.path is None:
            return self._conn
        conn = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=self.wait
        )
        conn.execute("PRAGMA query_only=ON")
        return conn

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """The write connection, within ``wait`` seconds, with SQLite's errors mapped."""
        if not self._lock.acquire(timeout=self.wait):
            raise StoreUnavailable(f"{what}: the feedback store is busy", self.wait)
        try:
            with mapped(what):
                yield self._conn
        finally:
            self._lock.release()

    @contextmanager
    def _read(self, what: str = "reading feedback") -> Iterator[sqlite3.Connection]:
        lock = self._lock if self._reader is self._conn else self._read_lock
        if not lock.acquire(timeout=self.wait):
            raise StoreUnavailable(f"{what}: the feedback store is busy", self.wait)
        try:
            with mapped(what):
                yield self._reader
        finally:
            lock.release()

    def health(self) -> tuple[bool, str]:
        """``(True, "ok")``, or ``(False, why)`` when the store cannot be read or written now.
        Never waits longer than ``wait``."""
        try:
            with self._read("health check") as conn:
                conn.execute("SELECT COUNT(*) FROM events WHERE id = -1").fetchone()
            with self._write("health check") as conn:
                conn.execute("BEGIN IMMEDIATE")  # can we take the write lock?
                conn.execute("ROLLBACK")
        except StoreUnavailable as e:
            return False, str(e)
        return True, "ok"

    # ---- events --------------------------------------------------------------------------------
    def add(
        self,
        user_id: str,
        item_id: str,
        event: str,
        value: float | None = None,
        timestamp: float | None = None,
        client_id: str | None = None,
    ) -> FeedbackEvent:
        """Store one event; returns only after the commit (so the caller may acknowledge it).

        Args:
            client_id: The client's idempotency key: an event already stored with it is returned
                (``duplicate=True``) instead of being stored again.

        Raises:
            ValueError: an unknown event kind or a rating without a value.
            EventConflict: ``client_id`` was used for a different event.
            StoreUnavailable: the store could not commit within ``wait`` seconds.
        """
        check_event(event, value)
        ts = time.time() if timestamp is None else float(timestamp)

        def store(conn: sqlite3.Connection) -> FeedbackEvent:
            if client_id is not None:
                found = self._by_client_id(conn, client_id)
                if found is not None:
                    if (found.user_id, found.item_id, found.event, found.value) != (
                        user_id,
                        item_id,
                        event,
                        value,
                    ):
                        raise EventConflict(
                            f"event_id {client_id!r} was already used for a different event"
                        )
                    return replace(found, duplicate=True)
            cur = conn.execute(
                "INSERT INTO events (user_id, item_id, event, value, timestamp, client_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (user_id, item_id, event, value, ts, client_id),
            )
            return FeedbackEvent(int(cur.lastrowid), user_id, item_id, event, value, ts, client_id)

        # committed (and synced) with whatever else queued meanwhile, before this returns
        return self._group.run("storing feedback", store)

    @staticmethod
    def _by_client_id(conn: sqlite3.Connection, client_id: str) -> FeedbackEvent | None:
        row = conn.execute(
            "SELECT id, user_id, item_id, event, value, timestamp, client_id FROM events "
            "WHERE client_id = ?",
            (client_id,),
        ).fetchone()
        return None if row is None else FeedbackEvent(*row)

    def events(self, user_id: str) -> list[FeedbackEvent]:
        """The user's events, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id, user_id, item_id, event, value, timestamp, client_id FROM events "
                "WHERE user_id = ? ORDER BY id",
                (user_id,),
            ).fetchall()
        return [FeedbackEvent(*r) for r in rows]

    def users(self) -> list[str]:
        """Every user with at least one stored event."""
        with self._read() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT user_id FROM events")]

    def count_users(self) -> int:
        """How many users have at least one stored event."""
        with self._read() as conn:
            row = conn.execute("SELECT COUNT(DISTINCT user_id) FROM events").fetchone()
        return int(row[0])

    def count(self, user_id: str | None = None) -> int:
        """Number of stored events (of one user, or of everyone)."""
        with self._read() as conn:
            if user_id is None:
                return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
            return int(
                conn.execute(
                    "SELECT COUNT(*) FROM events WHERE user_id = ?", (user_id,)
                ).fetchone()[0]
            )

    def forget(
        self,
        user_id: str,
        *,
        user_key: str | None = None,
        profile_key: str | None = None,
        snapshot_row: int | None = None,
    ) -> int:
        """Delete every event and impression of ``user_id`` (one transaction) and scrub the freed
        pages; returns how many events. The keyword arguments are for a store replicas share
        (:class:`agent.feedback.protocol.SharedStore`): this one serves one process, whose profile
        cache files and snapshot :class:`agent.api.Recommender` erases itself."""
        del user_key, profile_key, snapshot_row  # nothing else of the user is kept here
        with self._transaction("forgetting a user") as conn:
            removed = conn.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount
            shown = conn.execute("DELETE FROM impressions WHERE user_id = ?", (user_id,)).rowcount
            self._scrub_pending |= bool(removed or shown)
        self._scrub()
        return int(removed)

    def _scrub(self) -> None:
        """After an erasure, copy the zeroed pages into the file and empty the WAL, whose older
        frames still hold the deleted rows. It runs on a connection of its own, so events keep
        committing meanwhile (SQLite holds writers back only while the log is truncated); a
        checkpoint that could not finish (readers in the way, a locked file) is retried at the
        next erasure and at close."""
        if self.path is None or not self._scrub_pending:
            return
        with self._scrub_lock:
            try:
                conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=self.wait)
                try:
                    busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                finally:
                    conn.close()
            except sqlite3.Error as e:
                log.warning("feedback store: erasure committed, WAL not emptied yet: %s", e)
                return
            if busy:
                log.warning("feedback store: erasure committed, WAL not emptied yet (busy)")
            else:
                self._scrub_pending = False

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One transaction on the write connection: committed at the end, rolled back on any
        error (nothing of it is stored then)."""
        with self._write(what) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

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
        self._group.run(
            "recording impressions",
            lambda conn: conn.executemany(
                "INSERT INTO impressions (user_id, item_id, request_id, timestamp) "
                "VALUES (?, ?, ?, ?)",
                rows,
            ),
        )
        return len(rows)

    def impressions(self, user_id: str) -> list[tuple[str, str, float]]:
        """The user's impressions as ``(item_id, request_id, timestamp)``, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT item_id, request_id, timestamp FROM impressions WHERE user_id = ? "
                "ORDER BY id",
                (user_id,),
            ).fetchall()
        return [(str(i), str(r), float(t)) for i, r, t in rows]

    # ---- catalogue upserts ------------------------------------------------------------------
    def upsert_items(self, items: Iterable[Item]) -> int:
        """Store (or replace) catalogue entries, all in one transaction."""
        now = time.time()
        rows = [(it.item_id, item_json(it), now) for it in items]
        with self._transaction("storing catalogue items") as conn:
            conn.executemany(
                "INSERT INTO items (item_id, body, updated) VALUES (?, ?, ?) "
                "ON CONFLICT(item_id) DO UPDATE SET body = excluded.body, "
                "updated = excluded.updated",
                rows,
            )
        return len(rows)

    def items(self) -> list[Item]:
        """Every stored catalogue entry, in the order they were first stored."""
        with self._read() as conn:
            rows = conn.execute("SELECT body FROM items ORDER BY rowid").fetchall()
        return [item_from_json(body) for (body,) in rows]

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
        self._reader = self._open_reader()

    def close(self) -> None:
        """Checkpoint the WAL and close both connections (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self.path is not None:
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as e:  # a locked file: the WAL is checkpointed on next open
                log.warning("feedback store: no checkpoint at close: %s", e)
            finally:
                if self._reader is not self._conn:
                    self._reader.close()
                self._conn.close()
