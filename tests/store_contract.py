"""What every feedback store must do (:class:`agent.feedback.protocol.Store`), stated once.

A test class inherits :class:`StoreContract` and provides two fixtures: ``target`` (what
:func:`agent.feedback.open_store` opens: a SQLite path or a ``postgresql://`` URL, fresh per test)
and ``hold_lock`` (a context manager factory that makes the store's next write wait on a lock
held elsewhere). Every check then runs against that store with known answers: order, counts,
idempotency keys, forgetting, impressions and the dashboard's online rates, durability across a
reopen, a bounded ``StoreUnavailable`` with nothing written, concurrent writers, and acknowledged
events surviving a SIGKILL of the writing process mid-burst.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from agent.feedback import EventConflict, Store, StoreUnavailable, open_store
from hyrec.data import Item

WAIT = 0.5  # seconds: the stores under test give up this fast

WRITER = textwrap.dedent(
    """
    import sys
    from agent.feedback import open_store
    store = open_store(sys.argv[1])
    for i in range(1_000_000):
        event = store.add("burst", str(i), "view")
        print(event.id, flush=True)  # the acknowledgement: only after the commit
    """
)


class StoreContract:
    """The shared checks; subclasses provide the ``target`` and ``hold_lock`` fixtures."""

    @pytest.fixture
    def store(self, target):
        s = open_store(target, wait=WAIT)
        yield s
        s.close()

    def test_implements_the_protocol(self, store):
        assert isinstance(store, Store)
        assert store.health() == (True, "ok")

    def test_events_keep_their_order_and_are_counted(self, store):
        a = store.add("alice", "1", "like")
        b = store.add("alice", "2", "rating", 2.0)
        store.add("bob", "1", "view", timestamp=123.5)
        assert b.id > a.id and not a.duplicate
        assert [(e.item_id, e.event, e.value) for e in store.events("alice")] == [
            ("1", "like", None),
            ("2", "rating", 2.0),
        ]
        assert store.events("bob")[0].timestamp == 123.5 and store.events("nobody") == []
        assert store.count() == 3 and store.count("bob") == 1 and store.count("nobody") == 0
        assert set(store.users()) == {"alice", "bob"} and store.count_users() == 2

    def test_bad_events_are_rejected_before_anything_is_written(self, store):
        for args, message in (
            (("a", "1", "love"), "unknown event 'love'"),
            (("a", "1", "rating"), "needs a value"),
            (("a", "1", "rating", float("nan")), "NaN"),
        ):
            with pytest.raises(ValueError, match=message):
                store.add(*args)
        assert store.count() == 0

    def test_an_idempotency_key_stores_an_event_once(self, store):
        first = store.add("u1", "4", "rating", 5.0, client_id="k-1")
        again = store.add("u1", "4", "rating", 5.0, client_id="k-1")
        assert again.duplicate and again.id == first.id and again.client_id == "k-1"
        assert again.timestamp == first.timestamp
        with pytest.raises(EventConflict, match="k-1"):
            store.add("u1", "5", "rating", 5.0, client_id="k-1")
        store.add("u1", "4", "rating", 5.0, client_id="k-2")
        assert store.count() == 2

    def test_forget_removes_the_user_and_nobody_else(self, store):
        for i in range(5):
            store.add("gone", str(i), "view", client_id=f"g{i}")
        store.add("kept", "1", "like")
        store.add_impressions("gone", ["1", "2"], "r1")
        store.add_impressions("kept", ["1"], "r2")
        assert store.forget("gone", user_key="uk", profile_key="pk", snapshot_row=None) == 5
        assert store.events("gone") == [] and store.impressions("gone") == []
        assert store.count() == 1 and store.count_impressions() == 1 and store.users() == ["kept"]
        assert store.forget("gone") == 0
        assert not store.add("gone", "1", "view", client_id="g1").duplicate  # the key went too

    def test_impressions_are_deduplicated_per_answer(self, store):
        assert store.add_impressions("a", ["1", "2", "2", "3"], "req-1", 100.0) == 3
        assert store.add_impressions("a", [], "req-2") == 0
        with pytest.raises(ValueError, match="user id"):
            store.add_impressions("", ["1"], "req-3")
        assert store.impressions("a") == [("1", "req-1", 100.0), ("2", "req-1", 100.0),
                                          ("3", "req-1", 100.0)]  # fmt: skip
        assert store.count_impressions() == 3

    def test_online_rates_timeline_and_span(self, store):
        assert store.online_rates()["shown"] == 0 and store.online_rates()["hit_rate"] == 0.0
        assert store.span() is None and store.timeline(60) == []
        store.add_impressions("a", ["1", "2", "3", "4"], "r1", timestamp=1000.0)
        store.add_impressions("a", ["1"], "r2", timestamp=1500.0)  # shown again: one pair
        store.add_impressions("b", ["1"], "r3", timestamp=1000.0)
        store.add("a", "1", "like", timestamp=1200.0)  # a hit
        store.add("a", "2", "click", timestamp=1000.0 + 2 * 86_400)  # too late
        store.add("a", "3", "dislike", timestamp=1100.0)
        store.add("a", "9", "like", timestamp=1100.0)  # never shown
        store.add("b", "1", "like", timestamp=900.0)  # before it was shown
        assert store.online_rates(horizon_seconds=86_400) == {
            "shown": 5, "hits": 1, "dislikes": 1, "hit_rate": 0.2, "dislike_rate": 0.2,
        }  # fmt: skip
        assert store.online_rates(horizon_seconds=3 * 86_400)["hits"] == 2
        assert store.counts_by_event() == {"like": 3, "click": 1, "dislike": 1}
        assert store.span() == (900.0, 1000.0 + 2 * 86_400)
        assert store.timeline(1000) == [
            (0.0, "like", 1), (1000.0, "dislike", 1), (1000.0, "like", 2),
            (173000.0, "click", 1),
        ]  # fmt: skip
        with pytest.raises(ValueError, match="bucket_seconds"):
            store.timeline(0)

    def test_catalogue_upserts_replace_and_keep_first_order(self, store):
        a = Item("x", "X", "d", {"genres": ["A"], "year": 2001, "price": 9.5})
        assert store.upsert_items([a, Item("y", "Y")]) == 2
        store.upsert_items([Item("x", "X2", "", {})])
        assert [it.item_id for it in store.items()] == ["x", "y"]
        assert store.items()[0] == Item("x", "X2", "", {})
        store.upsert_items([a])
        assert store.items()[0] == a  # attributes come back with their types

    def test_everything_survives_a_reopen(self, store, target):
        store.add("a", "1", "like", client_id="k")
        store.add_impressions("a", ["1"], "r")
        store.upsert_items([Item("x", "X")])
        store.close()
        again = open_store(target, wait=WAIT)
        try:
            assert again.count() == 1 and again.count_impressions() == 1
            assert again.items() == [Item("x", "X")]
            assert again.add("a", "1", "like", client_id="k").duplicate
        finally:
            again.close()

    def test_a_held_lock_is_store_unavailable_within_the_wait(self, store, hold_lock):
        store.add("u1", "1", "like")
        with hold_lock():
            t0 = time.perf_counter()
            with pytest.raises(StoreUnavailable, match="storing feedback") as caught:
                store.add("u1", "3", "like")
            assert time.perf_counter() - t0 < WAIT + 3
            assert caught.value.retry_after > 0
        assert [e.item_id for e in store.events("u1")] == ["1"]  # nothing was written
        assert store.add("u1", "3", "like").id > 0 and store.health() == (True, "ok")

    def test_concurrent_writers_each_get_their_own_committed_event(self, store):
        ids: list[int] = []
        errors: list[BaseException] = []

        def write(n: int) -> None:
            try:
                for i in range(25):
                    ids.append(store.add(f"w{n}", str(i), "view", client_id=f"{n}-{i}").id)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(set(ids)) == 100 and store.count() == 100

    def test_acknowledged_events_survive_sigkill_mid_burst(self, target):
        open_store(target).close()  # schema created before the burst
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(target)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=os.getcwd(),
        )
        acked = []
        deadline = time.monotonic() + 60
        while len(acked) < 300 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked.append(int(line))
        os.kill(proc.pid, signal.SIGKILL)  # mid-burst: the writer never stops on its own
        proc.wait()
        acked += [int(line) for line in proc.stdout.read().split()]  # acks still in the pipe
        store = open_store(target)
        try:
            stored = {e.id for e in store.events("burst")}
        finally:
            store.close()
        assert len(acked) >= 300
        assert set(acked) <= stored, f"{len(set(acked) - stored)} acknowledged events lost"
