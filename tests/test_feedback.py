"""Feedback: the SQLite store is durable and scrubs forgotten users; events change the next
recommendation; forget_user removes every trace; catalogue upserts survive a restart."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from agent.api import Recommender, UnknownItemError
from agent.feedback import FeedbackStore, event_ids, is_positive
from hyrec.data import Item
from hyrec.data.snapshot import load_snapshot
from tests.test_api import block, build_model, fake_encoder


# ---- the store ----------
def test_store_is_wal_with_full_sync_and_keeps_events_in_order(tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite3")
    a = store.add("alice", "1", "like")
    b = store.add("alice", "2", "rating", 2.0)
    store.add("bob", "1", "view")
    assert b.id > a.id
    assert [e.item_id for e in store.events("alice")] == ["1", "2"]
    assert store.count() == 3 and store.count("bob") == 1 and set(store.users()) == {"alice", "bob"}
    mode = store._conn.execute("PRAGMA journal_mode").fetchone()[0]
    sync = store._conn.execute("PRAGMA synchronous").fetchone()[0]
    assert mode == "wal" and sync == 2  # 2 = FULL
    store.close()
    reopened = FeedbackStore(tmp_path / "fb.sqlite3")
    assert reopened.count() == 3
    reopened.close()


def test_bad_events_are_rejected_before_anything_is_written(tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite3")
    with pytest.raises(ValueError, match="unknown event 'love'"):
        store.add("a", "1", "love")
    with pytest.raises(ValueError, match="needs a value"):
        store.add("a", "1", "rating")
    with pytest.raises(ValueError, match="NaN"):
        store.add("a", "1", "rating", float("nan"))
    assert store.count() == 0
    with pytest.raises(ValueError, match="synchronous"):
        FeedbackStore(tmp_path / "x.sqlite3", synchronous="OFF")


def test_positive_events():
    assert is_positive("like", None, 3.5) and is_positive("rating", 4.0, 3.5)
    assert not is_positive("rating", 3.0, 3.5) and not is_positive("dislike", None, 3.5)


def test_forget_scrubs_the_user_from_the_database_file(tmp_path):
    path = tmp_path / "fb.sqlite3"
    store = FeedbackStore(path)
    for i in range(50):
        store.add("secret-user-42", str(i % 5), "view")
    store.add("other", "1", "like")
    assert store.forget("secret-user-42") == 50
    assert store.count() == 1 and store.events("secret-user-42") == []
    raw = path.read_bytes() + (tmp_path / "fb.sqlite3-wal").read_bytes()
    assert b"secret-user-42" not in raw
    store.close()


def test_memory_store_moves_into_a_file(tmp_path):
    store = FeedbackStore()
    store.add("a", "1", "like")
    store.upsert_items([Item("x", "X", "d", {"genres": ["A"]})])
    store.backup_to(tmp_path / "fb.sqlite3")
    store.add("a", "2", "like")
    store.close()
    assert event_ids(tmp_path / "fb.sqlite3") == [1, 2]
    again = FeedbackStore(tmp_path / "fb.sqlite3")
    assert again._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert again.items() == [Item("x", "X", "d", {"genres": ["A"]})]
    again.close()


WRITER = textwrap.dedent(
    """
    import sys
    from agent.feedback import FeedbackStore
    store = FeedbackStore(sys.argv[1])
    for i in range(1_000_000):
        event = store.add("u", str(i), "view")
        print(event.id, flush=True)  # the acknowledgement: only after the commit
    """
)


def test_acknowledged_events_survive_sigkill(tmp_path):
    path = tmp_path / "fb.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )
    acked = []
    deadline = time.monotonic() + 30
    while len(acked) < 300 and time.monotonic() < deadline:
        acked.append(int(proc.stdout.readline()))
    os.kill(proc.pid, signal.SIGKILL)  # mid-burst: the writer never stops on its own
    proc.wait()
    acked += [int(line) for line in proc.stdout.read().split()]  # acks still in the pipe
    stored = set(event_ids(path))
    assert len(acked) >= 300
    assert set(acked) <= stored, f"{len(set(acked) - stored)} acknowledged events lost"
    sqlite3.connect(str(path)).execute("PRAGMA integrity_check").fetchone()


# ---- through the Recommender ----------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    return build_model(root / "model", root / "cache"), root / "cache"


@pytest.fixture
def model_dir(saved, tmp_path):
    folder, _ = saved
    copy = tmp_path / "model"
    subprocess.run(["cp", "-r", str(folder), str(copy)], check=True)
    return copy


def open_model(model_dir, saved):
    return Recommender.load(model_dir, encoder=fake_encoder(saved[1]))


def test_feedback_changes_the_next_recommendation(model_dir, saved):
    with open_model(model_dir, saved) as m:
        before = m.recommend("newcomer", k=5, explain=False)
        for item in ("12", "13", "14", "15", "16"):
            receipt = m.feedback("newcomer", item, "like")
            assert receipt.positive and receipt.event_id > 0
        after = m.recommend("newcomer", k=5, explain=False)
        assert [r.item_id for r in after.items] != [r.item_id for r in before.items]
        assert [block(r.item_id) for r in after.items].count("B") >= 4
        assert not {"12", "13", "14", "15", "16"} & {r.item_id for r in after.items}
    with open_model(model_dir, saved) as m:  # durable: the same list after a restart
        again = m.recommend("newcomer", k=5, explain=False)
        assert [r.item_id for r in again.items] == [r.item_id for r in after.items]


def test_feedback_moves_a_known_user_too(model_dir, saved):
    with open_model(model_dir, saved) as m:
        # u0 likes block A; a burst of B likes must bring B into the list
        before = m.recommend("u0", k=6, explain=False)
        assert [block(r.item_id) for r in before.items].count("B") <= 1
        for item in map(str, range(12, 22)):
            m.feedback("u0", item, "rating", 5.0)
        after = m.recommend("u0", k=6, explain=False)
        assert [block(r.item_id) for r in after.items].count("B") >= 1
        assert {r.item_id for r in after.items}.isdisjoint(map(str, range(12, 22)))


def test_disliked_items_never_come_back(model_dir, saved):
    with open_model(model_dir, saved) as m:
        top = m.recommend("u0", k=1, explain=False).items[0].item_id
        receipt = m.feedback("u0", top, "dislike")
        assert not receipt.positive
        assert top not in {r.item_id for r in m.recommend("u0", k=10, explain=False).items}


def test_unknown_item_and_bad_event_are_clear_errors(model_dir, saved):
    with open_model(model_dir, saved) as m:
        with pytest.raises(UnknownItemError, match="'no-such-item'"):
            m.feedback("u0", "no-such-item", "like")
        with pytest.raises(KeyError):  # UnknownItemError is a KeyError
            m.feedback("u0", "no-such-item", "like")
        with pytest.raises(ValueError, match="unknown event"):
            m.feedback("u0", "1", "love")
        with pytest.raises(ValueError, match="non-empty"):
            m.feedback(" ", "1", "like")
        assert m.store.count() == 0


def test_forget_user_removes_every_trace(model_dir, saved):
    with open_model(model_dir, saved) as m:
        known = int((m.catalogue.interactions.user == m.catalogue.user_index["u3"]).sum())
        m.feedback("u3", "12", "like")
        m.feedback("u3", "13", "like")
        assert m.forget_user("u3") == known + 2
        assert m.store.count("u3") == 0 and "u3" not in m.catalogue.user_index
        cold = m.recommend("never-seen", k=5, explain=False)
        gone = m.recommend("u3", k=5, explain=False)
        assert [r.item_id for r in gone.items] == [r.item_id for r in cold.items]
    snapshot = load_snapshot(model_dir / "data")
    assert "u3" not in set(snapshot.user_ids)
    assert len(snapshot.interactions) == len(load_snapshot(saved[0] / "data").interactions) - known
    assert b'"u3"' not in (model_dir / "data" / "users.json").read_bytes()
    with open_model(model_dir, saved) as m:
        assert "u3" not in m.catalogue.user_index
        assert m.forget_user("u3") == 0


def test_upserted_items_are_served_and_survive_a_restart(model_dir, saved):
    new = [
        Item("new-1", "Beta story deluxe", "", {"genres": ["B"], "year": 2001}),
        Item("new-2", "Beta story returns", "", {"genres": ["B"], "year": 2002}),
    ]
    with open_model(model_dir, saved) as m:
        assert m.upsert_items(new) == 2
        assert m.upsert_items(new) == 0  # the same items again: nothing to do
        assert m.catalogue.n_items == 26
        assert m.search("deluxe beta story", k=1)[0].item_id == "new-1"
        assert len(m.hybrid.store.get_embeddings(["new-1", "new-2"])) == 2
        m.feedback("fan", "new-1", "like")  # a new item takes feedback at once
        with pytest.raises(ValueError, match="different content"):
            m.upsert_items([Item("new-1", "Renamed", "", {})])
        with pytest.raises(ValueError, match="twice"):
            m.upsert_items([new[0], new[0]])
        assert m.catalogue.n_items == 26
    with open_model(model_dir, saved) as m:  # replayed from the feedback store
        assert m.catalogue.n_items == 26 and m.catalogue.items[24].item_id == "new-1"
        assert m.catalogue.items[25].title == "Beta story returns"
        assert m.store.count("fan") == 1
        recs = m.recommend("fan", k=5, explain=False).items
        assert "new-1" not in {r.item_id for r in recs}
        assert m._state("fan", None).sequence.tolist() == [24]  # the new item is their history
        assert "Beta story deluxe" in m.explain("fan", recs[0].item_id)  # and grounds reasons


def test_concurrent_requests_feedback_and_deletion_stay_consistent(model_dir, saved):
    import threading

    errors: list[BaseException] = []
    stop = threading.Event()
    with open_model(model_dir, saved) as m:

        def reader(n: int) -> None:
            try:
                while not stop.is_set():
                    m.recommend(f"u{n}", k=5, explain=False)
                    m.feedback(f"r{n}", str(n % 24), "view")
            except BaseException as e:  # noqa: BLE001 - the test reports it
                errors.append(e)

        threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        removed = m.forget_user("u5")  # a writer must get through a steady stream of readers
        waited = time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert removed > 0 and waited < 5
