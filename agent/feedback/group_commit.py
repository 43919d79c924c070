"""Group commit: writes that arrive together share one SQLite transaction and one fsync.

With ``synchronous=FULL`` every commit waits for the disk. Committed one by one, concurrent
feedback requests queue on the single write connection, each waiting for the fsyncs of everyone
ahead of it (under the chaos bench, 79% of the feedback threads' samples were that wait). Here a
writer queues its piece of work and tries to take the write connection; whoever gets it (the
leader) runs *every* queued piece in one transaction, each inside its own savepoint so that a
failing piece (an idempotency conflict, a bad row) rolls back only itself, commits once, and wakes
them all. Every caller still returns only after the commit that holds its work, so an
acknowledged event is exactly as durable as before; it shares the fsync with the events that
queued while the previous commit was on disk. There is no added delay: a batch is whatever queued
meanwhile (the idea of PostgreSQL's ``commit_delay``, without the delay).

:class:`agent.feedback.store.FeedbackStore` routes events and impressions through one
:class:`GroupCommit`; catalogue upserts and erasure take the same write lock directly.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from agent.feedback.deadline import remaining
from agent.feedback.events import StoreUnavailable
from agent.feedback.sqlite_errors import mapped

T = TypeVar("T")


class _Work:
    __slots__ = ("deadline", "done", "error", "fn", "result")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], deadline: float) -> None:
        self.fn = fn
        self.deadline = deadline
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommit:
    """Runs pieces of write work in shared transactions on one connection.

    Args:
        lock: The write connection's lock (shared with every other user of the connection).
        connection: Returns the write connection now (the store may swap it, see ``backup_to``).
        wait: Longest a caller waits for the lock before :class:`StoreUnavailable` (less when
            its request's deadline comes first: :mod:`agent.feedback.deadline`).
    """

    def __init__(
        self,
        lock: threading.Lock,
        connection: Callable[[], sqlite3.Connection],
        wait: float,
    ) -> None:
        self._lock = lock
        self._connection = connection
        self._wait = wait
        self._queue: list[_Work] = []
        self._queue_lock = threading.Lock()
        self.batches = 0  # commits made, and pieces they held (for tests and the bench)
        self.pieces = 0

    def run(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` inside a transaction; returns its result after the commit.

        ``fn`` must only read and write through the connection it is given (it may run on another
        thread, inside another caller's batch). An exception from ``fn`` undoes ``fn``'s writes
        only and is raised here.

        Raises:
            StoreUnavailable: the lock or the file was not free within ``wait`` seconds, or the
                commit failed (nothing of ``fn`` is stored then).
        """
        deadline = time.monotonic() + remaining(self._wait)  # the request's, when it has one
        work = _Work(fn, deadline)
        with self._queue_lock:
            self._queue.append(work)
        while not work.done.is_set():
            if self._lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
                try:
                    if not work.done.is_set():  # not done by a leader before us: still queued
                        self._commit_queued(what)
                finally:
                    self._lock.release()
                continue
            with self._queue_lock:
                if work in self._queue:  # nobody took it: give up, nothing was written
                    self._queue.remove(work)
                    raise StoreUnavailable(f"{what}: the feedback store is busy", self._wait)
            work.done.wait()  # a leader holds it; its transaction ends within SQLite's own wait
        if work.error is not None:
            raise work.error
        return work.result

    def _commit_queued(self, what: str) -> None:
        """As the leader (holding the lock): everything queued, in one transaction."""
        with self._queue_lock:
            batch, self._queue = self._queue, []
        if not batch:
            return
        conn = self._connection()
        # SQLite's own wait for a file locked elsewhere ends with the earliest caller's deadline,
        # so no caller waits past its ``wait`` in all (the lock above, then the file)
        left = min(w.deadline for w in batch) - time.monotonic()
        try:
            with mapped(what):
                # (at least 50 ms: a caller already past its deadline must not fail the batch on
                # a lock held for a moment, e.g. an erasure's checkpoint)
                conn.execute(f"PRAGMA busy_timeout = {max(50, int(left * 1000))}")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for work in batch:
                        _run_one(conn, work, what)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            self.batches += 1
            self.pieces += len(batch)
        except BaseException as e:  # nothing of the batch is stored: every piece fails
            for work in batch:
                work.result, work.error = None, _for_each(e, what)
            if not isinstance(e, Exception):
                raise  # KeyboardInterrupt and the like stay with the thread they hit
        finally:
            # a broken connection fails its next user with the mapped error
            with contextlib.suppress(sqlite3.Error):
                conn.execute(f"PRAGMA busy_timeout = {int(self._wait * 1000)}")
            for work in batch:
                work.done.set()


def _run_one(conn: sqlite3.Connection, work: _Work, what: str) -> None:
    conn.execute("SAVEPOINT piece")
    try:
        with mapped(what):
            work.result = work.fn(conn)
    except Exception as e:  # this piece only: undo it, keep the others
        conn.execute("ROLLBACK TO piece")
        work.result, work.error = None, e
    conn.execute("RELEASE piece")


def _for_each(error: BaseException, what: str) -> BaseException:
    """A failure of the shared commit, as each waiting caller's own exception: a fresh
    :class:`StoreUnavailable` for "not now" and for an interrupt, the error itself otherwise."""
    if isinstance(error, StoreUnavailable):
        copy = StoreUnavailable(str(error), error.retry_after)
    elif isinstance(error, Exception):
        return error
    else:
        copy = StoreUnavailable(f"{what}: the commit was interrupted ({type(error).__name__})")
    copy.__cause__ = error
    return copy
