"""Feedback: the SQLite store is durable and scrubs forgotten users; impressions and the online
rates counted from them; events change the next recommendation; forget_user removes every trace;
catalogue upserts survive a restart."""

from __future__ import annotations

import contextlib
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
from tests.store_contract import StoreContract
from tests.test_api import block, build_model, fake_encoder


class TestSQLiteStoreContract(StoreContract):
    """The shared store contract (tests/store_contract.py) on a SQLite file."""

    @pytest.fixture
    def target(self, tmp_path):
        return str(tmp_path / "fb.sqlite3")

    @pytest.fixture
    def hold_lock(self, target):
        @contextlib.contextmanager
        def hold():
            holder = sqlite3.connect(target, isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            try:
                yield
            finally:
                holder.execute("ROLLBACK")
                holder.close()

        return hold


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


# ---- impressions ----------
def test_impressions_are_committed_counted_and_scrubbed_with_the_user(tmp_path):
    path = tmp_path / "fb.sqlite3"
    store = FeedbackStore(path)
    assert store.add_impressions("secret-user-42", ["1", "2", "2", "3"], "req-1", 100.0) == 3
    assert store.add_impressions("other", ["1"], "req-2", 100.0) == 1
    assert store.add_impressions("other", [], "req-3") == 0
    with pytest.raises(ValueError, match="user id"):
        store.add_impressions("", ["1"], "req-4")
    fresh = sqlite3.connect(str(path))  # committed: another connection sees them at once
    assert fresh.execute("SELECT COUNT(*) FROM impressions").fetchone()[0] == 4
    fresh.close()
    assert store.impressions("secret-user-42") == [
        ("1", "req-1", 100.0), ("2", "req-1", 100.0), ("3", "req-1", 100.0),
    ]  # fmt: skip
    store.add("secret-user-42", "1", "like")
    assert store.forget("secret-user-42") == 1  # events removed; impressions go with them
    assert store.impressions("secret-user-42") == [] and store.count_impressions() == 1
    raw = path.read_bytes() + (tmp_path / "fb.sqlite3-wal").read_bytes()
    assert b"secret-user-42" not in raw
    store.close()


def test_online_rates_count_what_followed_an_impression_within_the_horizon():
    store = FeedbackStore()
    assert store.online_rates()["hit_rate"] == 0.0 and store.online_rates()["shown"] == 0
    store.add_impressions("a", ["1", "2", "3", "4"], "r1", timestamp=1000.0)
    store.add_impressions("a", ["1"], "r2", timestamp=1500.0)  # shown again: still one pair
    store.add_impressions("b", ["1"], "r3", timestamp=1000.0)
    store.add("a", "1", "like", timestamp=1200.0)  # a hit
    store.add("a", "2", "click", timestamp=1000.0 + 2 * 86_400)  # too late: no hit
    store.add("a", "3", "dislike", timestamp=1100.0)
    store.add("a", "9", "like", timestamp=1100.0)  # never shown: not counted
    store.add("b", "1", "like", timestamp=900.0)  # before it was shown: not a hit
    rates = store.online_rates(horizon_seconds=86_400)
    assert rates == {
        "shown": 5, "hits": 1, "dislikes": 1, "hit_rate": 0.2, "dislike_rate": 0.2,
    }  # fmt: skip
    assert store.online_rates(horizon_seconds=3 * 86_400)["hits"] == 2
    assert store.counts_by_event() == {"like": 3, "click": 1, "dislike": 1}
    assert store.span() == (900.0, 1000.0 + 2 * 86_400)


def test_timeline_buckets_events_by_kind():
    store = FeedbackStore()
    assert store.span() is None and store.timeline(60) == []
    for ts, event in ((0.0, "like"), (30.0, "like"), (59.0, "dislike"), (125.0, "like")):
        store.add("a", "1", event, timestamp=ts)
    assert store.timeline(60) == [(0.0, "dislike", 1), (0.0, "like", 2), (120.0, "like", 1)]
    with pytest.raises(ValueError, match="bucket_seconds"):
        store.timeline(0)


def test_a_database_from_before_impressions_opens_and_keeps_its_events(tmp_path):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(str(path))
    conn.executescript(
        "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, "
        "item_id TEXT NOT NULL, event TEXT NOT NULL, value REAL, timestamp REAL NOT NULL);"
        "CREATE TABLE items (item_id TEXT PRIMARY KEY, body TEXT NOT NULL, updated REAL NOT NULL);"
        "INSERT INTO events (user_id, item_id, event, value, timestamp) "
        "VALUES ('a', '1', 'like', NULL, 5.0);"
    )
    conn.commit()
    conn.close()
    store = FeedbackStore(path)
    assert store.count() == 1 and store.count_impressions() == 0
    store.add_impressions("a", ["1"], "r")
    assert store.online_rates()["shown"] == 1
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


def test_a_file_from_before_idempotency_keys_is_migrated_and_keeps_its_events(tmp_path):
    import sqlite3

    from agent.feedback.schema import VERSION

    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(str(path))
    old.executescript(
        "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, "
        "item_id TEXT NOT NULL, event TEXT NOT NULL, value REAL, timestamp REAL NOT NULL);"
        "INSERT INTO events (user_id, item_id, event, value, timestamp) "
        "VALUES ('u1', '3', 'like', NULL, 1.0);"
    )
    old.close()
    store = FeedbackStore(path)
    try:
        assert [e.item_id for e in store.events("u1")] == ["3"]
        first = store.add("u1", "4", "like", client_id="k-1")
        again = store.add("u1", "4", "like", client_id="k-1")
        assert again.duplicate and again.id == first.id and store.count() == 2
    finally:
        store.close()
    check = sqlite3.connect(str(path))
    assert check.execute("PRAGMA user_version").fetchone()[0] == VERSION
    check.close()


def test_a_locked_file_is_store_unavailable_within_the_wait(tmp_path):
    import sqlite3
    import time

    from agent.feedback import StoreUnavailable

    store = FeedbackStore(tmp_path / "fb.sqlite3", wait=0.3)
    holder = sqlite3.connect(str(tmp_path / "fb.sqlite3"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        t0 = time.perf_counter()
        with pytest.raises(StoreUnavailable, match="storing feedback"):
            store.add("u1", "3", "like")
        assert time.perf_counter() - t0 < 1.5
        assert store.events("u1") == []  # reads go on (their own connection)
        ok, why = store.health()
        assert not ok and "unavailable" in why
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.add("u1", "3", "like").id == 1 and store.health() == (True, "ok")
    store.close()


# ---- where a server finds its stores ----------
def test_store_settings_take_the_flag_then_the_environment_then_the_config_file(tmp_path):
    from agent.serve.startup import StoreSettings

    config = tmp_path / "config.toml"
    config.write_text(
        '[feedback]\nurl = "postgresql://file@db/h"\n[chroma]\nurl = "https://chroma.lan"\n'
    )
    env = {"HYREC_CONFIG": str(config)}
    from_file = StoreSettings.resolve(environ=env)
    assert from_file == StoreSettings("postgresql://file@db/h", "https://chroma.lan")
    store = from_file.item_store()
    assert (store.host, store.port, store.ssl) == ("chroma.lan", 443, True)
    env["HYREC_FEEDBACK_URL"] = "postgresql://env@db/h"
    assert StoreSettings.resolve(environ=env).feedback_url == "postgresql://env@db/h"
    flagged = StoreSettings.resolve("/tmp/fb.sqlite3", "http://127.0.0.1:9", environ=env)
    assert flagged.feedback_url == "/tmp/fb.sqlite3" and flagged.item_store().port == 9
    with pytest.raises(FileNotFoundError, match="does not exist"):
        StoreSettings.resolve(environ={"HYREC_CONFIG": str(tmp_path / "missing.toml")})
    with pytest.raises(ValueError, match="http://host:port"):
        StoreSettings(chroma_url="chroma:8000").item_store()
    assert StoreSettings().item_store() is None
