"""The feedback store on PostgreSQL, shared by any number of server replicas: events, impressions,
catalogue upserts, the interest-profile cache entries and the record of forgotten users, through
psycopg 3 and a :class:`psycopg_pool.ConnectionPool` (https://www.psycopg.org/psycopg3/docs/).

Acknowledged means committed, as in the SQLite store: connections run in autocommit mode, so a
single ``INSERT`` is its own transaction and ``execute`` returns after the server committed it
(with PostgreSQL's default ``synchronous_commit=on`` the commit record is flushed to the WAL
first); several statements run in one explicit transaction. The server keeps the data durable,
so there is no ``synchronous`` knob here.

Every call waits at most ``wait`` seconds for a pooled connection and for a lock held elsewhere,
and every statement runs at most ``statement_seconds``; a pool timeout, a refused connection, a
server that went away or a statement cancelled by its timeout raises
:class:`~agent.feedback.events.StoreUnavailable` (the HTTP layer's 503 with ``Retry-After``).
Nothing was written then — except in the one case no client can tell apart: the connection broke
during ``COMMIT``. A client that sends an ``event_id`` retries safely either way (the retry finds
the stored event).

Replicas share state through one change counter (``hyrec_changes``): every catalogue upsert and
every forgotten user takes the next version, under an advisory lock so versions commit in order,
and sends ``NOTIFY hyrec_changes`` in the same transaction (delivered at commit). Each replica
follows with :meth:`PostgresFeedbackStore.follow`: a ``LISTEN`` connection that wakes on the
notification and also polls every ``interval`` seconds, so a change is applied within
``interval`` even if a notification is lost (a broken ``LISTEN`` connection is reopened): that
follower is :mod:`agent.feedback.pg_follow`, the pool and its error mapping
:mod:`agent.feedback.pg_pool`.

Forgetting deletes the user's events, impressions and profile entries and records the deletion
(pseudonyms only, never the raw id) in one transaction. PostgreSQL keeps deleted row versions on
disk until (auto)vacuum reclaims them, and WAL archives or backups keep what their retention says:
see ``docs/deployment.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager

import psycopg

from agent.feedback.events import EventConflict, FeedbackEvent, StoreUnavailable, check_event
from agent.feedback.migrate import migrate
from agent.feedback.pg_follow import CHANNEL, Follower
from agent.feedback.pg_pool import open_pool, pooled
from agent.feedback.pg_reports import PgReports
from agent.feedback.protocol import Changes, Deletion
from agent.feedback.schema import item_from_json, item_json
from hyrec.data import Item

WAIT_SECONDS = 2.0  # longest a call waits for a pooled connection before StoreUnavailable
_CHANGES_LOCK = 0x68796368  # pg_advisory_xact_lock key: change versions commit in order
FORGOTTEN_GUARD = 120  # seconds after a deletion in which a replica may not re-cache the profile

_EVENT_COLUMNS = "id, user_id, item_id, event, value, timestamp, client_id"


class PostgresFeedbackStore(PgReports):
    """The :class:`~agent.feedback.protocol.SharedStore` on PostgreSQL (module doc).

    Args:
        url: A libpq connection URL, ``postgresql://user@host:port/dbname``.
        wait: Longest a call waits for a connection, a connection attempt takes, or a statement
            waits for a lock held elsewhere.
        pool_size: Most connections this process opens (each replica has its own pool).
        statement_seconds: Longest one statement may run (a lock held elsewhere included).

    Raises:
        StoreUnavailable: the server cannot be reached within ``wait`` seconds at open.
        RuntimeError: the database holds a newer schema than this hyrec knows.
    """

    shared = True
    path = None  # no local file (agent.api checks this for the SQLite store's backup)

    def __init__(
        self,
        url: str,
        *,
        wait: float = WAIT_SECONDS,
        pool_size: int = 8,
        statement_seconds: float = 5.0,
    ) -> None:
        if not 0 < wait <= 60:
            raise ValueError(f"wait must be in (0, 60] seconds, got {wait!r}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        self.url = url
        self.wait = wait
        self.statement_seconds = statement_seconds
        self._followers: list[Follower] = []
        self._pool = open_pool(
            url, wait=wait, pool_size=pool_size, statement_seconds=statement_seconds
        )
        with self._conn("migrating the feedback database") as conn:
            migrate(conn)

    def _conn(self, what: str) -> AbstractContextManager[psycopg.Connection]:
        """A pooled connection within ``wait`` seconds, with "not now" errors mapped."""
        return pooled(self._pool, self.wait, what)

    def health(self) -> tuple[bool, str]:
        """``(True, "ok")``, or ``(False, why)`` (unreachable, or a read-only standby)."""
        try:
            with self._conn("health check") as conn:
                standby = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        except StoreUnavailable as e:
            return False, str(e)
        if standby:
            return False, "health check: the feedback database is a read-only standby"
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
        """Store one event; returns only after the commit (see the SQLite store's ``add``).

        Raises:
            ValueError: an unknown event kind or a rating without a value.
            EventConflict: ``client_id`` was used for a different event.
            StoreUnavailable: the database could not commit within the wait.
        """
        check_event(event, value)
        ts = time.time() if timestamp is None else float(timestamp)
        row = (user_id, item_id, event, value, ts, client_id)
        with self._conn("storing feedback") as conn:
            found = None
            while found is None:  # twice at most: the key's row deleted (forgotten) in between
                got = conn.execute(
                    "INSERT INTO events (user_id, item_id, event, value, timestamp, client_id) "
                    "VALUES (%s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (client_id) WHERE client_id IS NOT NULL DO NOTHING RETURNING id",
                    row,
                ).fetchone()  # autocommit: committed when this returns
                if got is not None:
                    return FeedbackEvent(int(got[0]), user_id, item_id, event, value, ts, client_id)
                found = conn.execute(
                    f"SELECT {_EVENT_COLUMNS} FROM events WHERE client_id = %s", (client_id,)
                ).fetchone()
        stored = FeedbackEvent(*found, duplicate=True)
        if (stored.user_id, stored.item_id, stored.event, stored.value) != row[:4]:
            raise EventConflict(f"event_id {client_id!r} was already used for a different event")
        return stored

    def events(self, user_id: str) -> list[FeedbackEvent]:
        """The user's events, oldest first."""
        with self._conn("reading feedback") as conn:
            rows = conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE user_id = %s ORDER BY id", (user_id,)
            ).fetchall()
        return [FeedbackEvent(*r) for r in rows]

    def users(self) -> list[str]:
        """Every user with at least one stored event."""
        with self._conn("reading feedback") as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT user_id FROM events")]

    def count_users(self) -> int:
        with self._conn("reading feedback") as conn:
            return int(conn.execute("SELECT COUNT(DISTINCT user_id) FROM events").fetchone()[0])

    def count(self, user_id: str | None = None) -> int:
        """Number of stored events (of one user, or of everyone)."""
        with self._conn("reading feedback") as conn:
            if user_id is None:
                return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
            query = "SELECT COUNT(*) FROM events WHERE user_id = %s"
            return int(conn.execute(query, (user_id,)).fetchone()[0])

    def forget(
        self,
        user_id: str,
        *,
        user_key: str | None = None,
        profile_key: str | None = None,
        snapshot_row: int | None = None,
    ) -> int:
        """Delete the user's events, impressions and profile entries and, with ``user_key``,
        record the deletion for the other replicas — one transaction. Returns how many events."""
        with self._conn("forgetting a user") as conn, conn.transaction():
            removed = conn.execute("DELETE FROM events WHERE user_id = %s", (user_id,)).rowcount
            conn.execute("DELETE FROM impressions WHERE user_id = %s", (user_id,))
            if profile_key is not None:
                conn.execute("DELETE FROM profiles WHERE pseudonym = %s", (profile_key,))
            if user_key is not None:
                version = self._next_version(conn)
                conn.execute(
                    "INSERT INTO deletions (user_key, profile_key, snapshot_row, version) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (user_key) DO UPDATE SET "
                    "profile_key = excluded.profile_key, "
                    "snapshot_row = COALESCE(excluded.snapshot_row, deletions.snapshot_row), "
                    "version = excluded.version, forgotten_at = now()",
                    (user_key, profile_key, snapshot_row, version),
                )
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(version)))
        return int(removed)

    @staticmethod
    def _next_version(conn: psycopg.Connection) -> int:
        """The next change version, holding the change lock until the transaction ends."""
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CHANGES_LOCK,))
        return int(conn.execute("SELECT nextval('hyrec_changes')").fetchone()[0])

    # ---- impressions ----------------------------------------------------------------------------
    def add_impressions(
        self,
        user_id: str,
        item_ids: Sequence[str],
        request_id: str,
        timestamp: float | None = None,
    ) -> int:
        """Record that ``item_ids`` were shown to ``user_id`` in one answer (one transaction);
        returns how many rows were stored."""
        if not user_id:
            raise ValueError("an impression needs a user id")
        ts = time.time() if timestamp is None else float(timestamp)
        rows = [(user_id, i, request_id, ts) for i in dict.fromkeys(item_ids)]
        if not rows:
            return 0
        with self._conn("recording impressions") as conn, conn.transaction():
            conn.cursor().executemany(
                "INSERT INTO impressions (user_id, item_id, request_id, timestamp) "
                "VALUES (%s, %s, %s, %s)",
                rows,
            )
        return len(rows)

    def impressions(self, user_id: str) -> list[tuple[str, str, float]]:
        """The user's impressions as ``(item_id, request_id, timestamp)``, oldest first."""
        with self._conn("reading impressions") as conn:
            rows = conn.execute(
                "SELECT item_id, request_id, timestamp FROM impressions WHERE user_id = %s "
                "ORDER BY id",
                (user_id,),
            ).fetchall()
        return [(str(i), str(r), float(t)) for i, r, t in rows]

    # ---- catalogue upserts and the change log ----------------------------------------------------
    def upsert_items(self, items: Iterable[Item]) -> int:
        """Store (or replace) catalogue entries in one transaction; a changed or new entry takes
        a change version and notifies the replicas."""
        now = time.time()
        rows = [(it.item_id, item_json(it), now) for it in items]
        if not rows:
            return 0
        with self._conn("storing catalogue items") as conn, conn.transaction():
            version = self._next_version(conn)
            conn.cursor().executemany(
                "INSERT INTO items (item_id, body, updated, version) VALUES (%s, %s, %s, "
                f"{version}) ON CONFLICT (item_id) DO UPDATE SET body = excluded.body, "
                "updated = excluded.updated, version = excluded.version "
                "WHERE items.body IS DISTINCT FROM excluded.body",
                rows,
            )
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(version)))
        return len(rows)

    def items(self) -> list[Item]:
        """Every stored catalogue entry, in the order they were first stored."""
        with self._conn("reading catalogue items") as conn:
            rows = conn.execute("SELECT body FROM items ORDER BY seq").fetchall()
        return [item_from_json(body) for (body,) in rows]

    def changes(self, after: int) -> Changes:
        """Upserts and deletions with a version above ``after``, in version order, read in one
        statement (one snapshot: versions commit in order, so nothing below the newest one read
        can still appear)."""
        with self._conn("reading the change log") as conn:
            rows = conn.execute(
                "SELECT version, 0, body, NULL, NULL FROM items WHERE version > %s "
                "UNION ALL SELECT version, 1, user_key, profile_key, snapshot_row FROM deletions "
                "WHERE version > %s ORDER BY 1, 2",
                (after, after),
            ).fetchall()
        items = tuple(item_from_json(r[2]) for r in rows if r[1] == 0)
        deletions = tuple(Deletion(r[2], r[3], r[4]) for r in rows if r[1] == 1)
        version = max([after, *(int(r[0]) for r in rows)])
        return Changes(version, items, deletions)

    def follow(self, on_change: Callable[[], None], interval: float = 1.0) -> Follower:
        """Call ``on_change`` after each committed change (NOTIFY) and every ``interval`` seconds
        (the bound when a notification is lost); stopped by ``close``."""
        follower = Follower(self.url, on_change, interval)
        self._followers.append(follower)
        return follower

    # ---- profile cache entries ---------------------------------------------------------------
    def get_profile(self, pseudonym: str, variant: str) -> tuple[str, str] | None:
        with self._conn("reading a cached profile") as conn:
            row = conn.execute(
                "SELECT key, body FROM profiles WHERE pseudonym = %s AND variant = %s",
                (pseudonym, variant),
            ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def put_profile(self, pseudonym: str, variant: str, key: str, body: str) -> bool:
        """Store one slot unless the user was forgotten in the last ``FORGOTTEN_GUARD`` seconds
        (a profile computed on another replica while the user was being forgotten)."""
        with self._conn("caching a profile") as conn:
            cur = conn.execute(
                "INSERT INTO profiles (pseudonym, variant, key, body) "
                "SELECT %s, %s, %s, %s WHERE NOT EXISTS (SELECT 1 FROM deletions "
                "WHERE profile_key = %s AND forgotten_at > now() - make_interval(secs => %s)) "
                "ON CONFLICT (pseudonym, variant) DO UPDATE SET key = excluded.key, "
                "body = excluded.body, updated = now()",
                (pseudonym, variant, key, body, pseudonym, FORGOTTEN_GUARD),
            )
            return cur.rowcount == 1

    def drop_profiles(self, pseudonym: str) -> int:
        with self._conn("dropping cached profiles") as conn:
            return conn.execute("DELETE FROM profiles WHERE pseudonym = %s", (pseudonym,)).rowcount

    # ---- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the followers and close the pool (idempotent)."""
        for follower in self._followers:
            follower.stop()
        self._followers.clear()
        self._pool.close()
