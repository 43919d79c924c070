"""Group commit (agent/feedback/group_commit.py): writes that queue together share one transaction,
each still returns only after the commit holding it, and one piece's failure stays its own."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from agent.feedback import EventConflict, FeedbackStore, StoreUnavailable


def queued(store: FeedbackStore) -> int:
    with store._group._queue_lock:
        return len(store._group._queue)


def wait_until(cond, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def held_then_released(store: FeedbackStore, calls, n_queued: int) -> list:
    """Hold the write lock while ``calls`` queue, then release it: the first thread to take the
    lock commits everything queued. Returns each call's result or exception, in order."""
    out: list = [None] * len(calls)

    def run(i, fn):
        try:
            out[i] = fn()
        except Exception as e:  # noqa: BLE001 - the test inspects it
            out[i] = e

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    with store._lock:
        for t in threads:
            t.start()
        wait_until(lambda: queued(store) == n_queued)
    for t in threads:
        t.join(30)
    return out


def test_writes_that_queue_together_share_one_commit_and_all_are_stored(tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite3")
    before = store._group.batches
    calls = [lambda i=i: store.add(f"u{i % 4}", str(i), "view") for i in range(24)]
    calls.append(lambda: store.add_impressions("u0", ["1", "2"], "req"))
    out = held_then_released(store, calls, len(calls))
    assert store._group.batches - before == 1 and store._group.pieces >= len(calls)
    events = out[:-1]
    assert len({e.id for e in events}) == 24 and out[-1] == 2
    fresh = sqlite3.connect(str(tmp_path / "fb.sqlite3"))  # committed: another connection sees it
    assert fresh.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 24
    assert fresh.execute("SELECT COUNT(*) FROM impressions").fetchone()[0] == 2
    fresh.close()
    store.close()


def test_a_conflicting_piece_fails_alone_and_a_retry_in_the_same_batch_is_a_duplicate(tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite3")
    calls = [
        lambda: store.add("a", "1", "like", client_id="k1"),
        lambda: store.add("a", "1", "like", client_id="k1"),  # the client's retry
        lambda: store.add("a", "2", "like", client_id="k1"),  # the same key, another event
        lambda: store.add("b", "3", "click"),
    ]
    out = held_then_released(store, calls, len(calls))
    stored = [r for r in out if not isinstance(r, Exception)]
    conflicts = [r for r in out if isinstance(r, EventConflict)]
    assert len(conflicts) <= 1 and len(stored) + len(conflicts) == 4
    k1 = [r for r in stored if r.client_id == "k1"]
    assert len({r.id for r in k1}) == 1  # stored once, whichever came first
    assert sum(not r.duplicate for r in k1) == 1
    assert store.count() == 2 and store.count("b") == 1
    store.close()


def test_a_writer_that_cannot_get_the_lock_gives_up_and_is_never_stored_later(tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite3", wait=0.2)
    with store._lock:  # someone else's long write
        start = time.monotonic()
        with pytest.raises(StoreUnavailable, match="busy"):
            store.add("a", "1", "like")
        assert time.monotonic() - start < 2.0
        assert queued(store) == 0  # taken out of the queue: no later leader commits it
    store.add("b", "1", "like")
    assert store.count("a") == 0 and store.count("b") == 1
    store.close()


def test_a_failed_commit_fails_every_piece_of_the_batch_and_stores_none(tmp_path):
    path = tmp_path / "fb.sqlite3"
    store = FeedbackStore(path, wait=0.3)
    holder = sqlite3.connect(str(path), isolation_level=None, timeout=0.1)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the file
    calls = [lambda i=i: store.add("a", str(i), "view") for i in range(5)]
    out = held_then_released(store, calls, len(calls))
    assert all(isinstance(r, StoreUnavailable) for r in out), out
    assert len({id(r) for r in out}) == 5  # each caller gets its own exception
    holder.execute("ROLLBACK")
    holder.close()
    assert store.count() == 0
    store.add("a", "9", "view")
    assert store.count() == 1
    store.close()


def test_events_keep_committing_while_an_erasure_checkpoints(tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite3")
    for i in range(20):
        store.add("gone", str(i), "view")
    stop = threading.Event()
    added: list[int] = []

    def writer():
        while not stop.is_set():
            added.append(store.add("stays", "1", "view").id)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert store.forget("gone") == 20
    finally:
        stop.set()
        t.join(10)
    assert store.count("gone") == 0 and store.count("stays") == len(added)
    store.forget("nobody")  # nothing deleted, nothing pending: no checkpoint needed
    assert not store._scrub_pending
    store.close()
    raw = (tmp_path / "fb.sqlite3").read_bytes()
    assert b"gone" not in raw


def test_a_file_locked_elsewhere_fails_within_one_wait_even_after_waiting_for_the_lock(tmp_path):
    """The wait is one budget for the Python lock and SQLite's wait for the file together."""
    path = tmp_path / "fb.sqlite3"
    store = FeedbackStore(path, wait=0.6)
    holder = sqlite3.connect(str(path), isolation_level=None, timeout=0.1)
    holder.execute("BEGIN EXCLUSIVE")
    out: list = []
    with store._lock:  # another write of this process holds the connection for 0.4 s
        t = threading.Thread(target=lambda: out.append(_timed(store)))
        t.start()
        time.sleep(0.4)
    t.join(10)
    holder.execute("ROLLBACK")
    holder.close()
    error, seconds = out[0]
    assert isinstance(error, StoreUnavailable) and seconds < 0.6 + 0.3, seconds
    store.close()


def _timed(store: FeedbackStore) -> tuple[Exception | None, float]:
    t0 = time.monotonic()
    try:
        store.add("a", "1", "like")
    except StoreUnavailable as e:
        return e, time.monotonic() - t0
    return None, time.monotonic() - t0


def test_a_request_deadline_shortens_the_wait_and_never_below_one_short_try(tmp_path):
    """Inside ``store_deadline`` the store waits only until the request's deadline (at least
    ``MIN_WAIT``); outside one, its whole ``wait``."""
    from agent.feedback.deadline import MIN_WAIT, remaining, store_deadline

    path = tmp_path / "fb.sqlite3"
    store = FeedbackStore(path, wait=1.5)
    holder = sqlite3.connect(str(path), isolation_level=None, timeout=0.1)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with store_deadline(time.monotonic() + 0.3):
            error, seconds = _timed(store)
        assert isinstance(error, StoreUnavailable) and 0.2 < seconds < 0.3 + 0.3, seconds
        with store_deadline(time.monotonic() - 5):  # spent queueing: one short try
            assert remaining(1.5) == MIN_WAIT
            error, seconds = _timed(store)
        assert isinstance(error, StoreUnavailable) and seconds < MIN_WAIT + 0.3, seconds
        error, seconds = _timed(store)  # no request around it: the whole wait
        assert isinstance(error, StoreUnavailable) and seconds > 1.3, seconds
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert remaining(1.5) == 1.5
    store.add("a", "1", "like")  # the store is free again: stored
    assert store.count("a") == 1
    store.close()
