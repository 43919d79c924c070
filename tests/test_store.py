"""ItemStore on a designed catalogue whose right answers are known: 12 items in two clusters of
8-d unit vectors (cluster A around axis 0, cluster B around axis 1), with genres and years."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from encoders.text import TextEncoder, TextEncoderConfig
from hyrec.data import Item
from retrieval.filters import Filter
from retrieval.records import item_metadata
from retrieval.store import ItemStore, StoreConfig, SyncReport

DIM = 8
A_IDS = [f"a{k}" for k in range(6)]
B_IDS = [f"b{k}" for k in range(6)]


def catalogue() -> tuple[list[Item], np.ndarray]:
    """a0..a5: Comedy (a0, a1 also Romance), years 1990..1995; b0..b5: Horror (b0 also Sci-Fi),
    years 2000..2005; a5 has no genres and b5 no year. Vectors: the cluster's axis plus a small
    item-specific offset on one of axes 2..7, so similarities within a cluster are ~0.99."""
    items, rows = [], []
    for k in range(6):
        genres = ["Comedy", "Romance"] if k < 2 else ["Comedy"]
        attrs = {"genres": genres, "year": 1990 + k} if k < 5 else {"year": 1995}
        items.append(Item(f"a{k}", f"Funny film {k}", "", attrs))
        rows.append(np.eye(DIM)[0] + 0.1 * (k + 1) * np.eye(DIM)[2 + k])
    for k in range(6):
        attrs = {"genres": ["Horror", "Sci-Fi"] if k == 0 else ["Horror"], "category": "film"}
        if k < 5:
            attrs["year"] = 2000 + k
        items.append(Item(f"b{k}", f"Scary film {k}", "", attrs))
        rows.append(np.eye(DIM)[1] + 0.1 * (k + 1) * np.eye(DIM)[2 + k])
    vectors = np.asarray(rows, dtype=np.float32)
    return items, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def axis(i: int) -> np.ndarray:
    return np.eye(DIM, dtype=np.float32)[i][None, :]


def open_store(path: Path, **config) -> ItemStore:
    return ItemStore(StoreConfig(path=path, batch_size=5, show_progress=False, **config))


@pytest.fixture
def store(tmp_path) -> ItemStore:
    s = open_store(tmp_path / "chroma")
    s.sync(*catalogue())
    return s


def ids_of(hits) -> list[str]:
    return list(hits.ids)


# --- query ---------------------------------------------------------------------------------------


def test_query_returns_the_right_cluster_with_cosine_similarities(store):
    items, vectors = catalogue()
    query = np.vstack([axis(0), axis(1)])
    hits = store.query(query, 6)
    assert set(ids_of(hits[0])) == set(A_IDS) and set(ids_of(hits[1])) == set(B_IDS)
    reference = dict(zip([it.item_id for it in items], vectors @ axis(0)[0], strict=True))
    for item_id, sim in hits[0].pairs():
        assert -1.0 <= sim <= 1.0
        assert sim == pytest.approx(float(reference[item_id]), abs=1e-5)
    sims = [s for _, s in hits[0].pairs()]
    assert sims == sorted(sims, reverse=True)


def test_a_single_vector_and_more_than_the_store(store):
    hits = store.query(axis(0)[0], 50)
    assert len(hits) == 1 and len(hits[0]) == 12


def test_exclude_ids_still_returns_n(store):
    hits = store.query(axis(0), 6, exclude_ids={"a0", "a3"})[0]
    assert len(hits) == 6
    assert set(ids_of(hits)[:4]) == set(A_IDS) - {"a0", "a3"}
    assert not {"a0", "a3"} & set(ids_of(hits))
    via_filter = store.query(axis(0), 6, where=Filter(exclude_ids=("a0",)), exclude_ids=["a3"])
    assert via_filter[0] == hits


FILTER_CASES = [
    (Filter(genres_any=("Romance",)), {"a0", "a1"}),
    (Filter(genres_any=("Romance", "Sci-Fi")), {"a0", "a1", "b0"}),
    (Filter(genres_none=("Comedy",)), {"a5", *B_IDS}),  # a5 has no genres: kept
    (Filter(genres_any=("Horror",), genres_none=("Sci-Fi",)), set(B_IDS) - {"b0"}),
    (Filter(year_min=1993, year_max=2001), {"a3", "a4", "a5", "b0", "b1"}),
    (Filter(year_min=2003), {"b3", "b4"}),  # b5 has no year: dropped by a year bound
    (Filter(genres_any=("Comedy",), year_max=1991), {"a0", "a1"}),
    (Filter(genres_any=("Western",)), set()),
]


@pytest.mark.parametrize(("flt", "expected"), FILTER_CASES)
def test_filters(store, flt, expected):
    hits = store.query(axis(0), 12, where=flt)[0]
    assert set(ids_of(hits)) == expected


def test_filter_to_where():
    assert Filter().to_where() is None
    assert Filter(genres_any="Comedy").genres_any == ("Comedy",)
    assert Filter(year_min=1990).to_where() == {"year": {"$gte": 1990}}
    assert Filter(genres_any=("A", "B"), genres_none=("C",)).to_where() == {
        "$and": [
            {"$or": [{"genres": {"$contains": "A"}}, {"genres": {"$contains": "B"}}]},
            {"genres": {"$not_contains": "C"}},
        ]
    }
    with pytest.raises(ValueError, match="year_min"):
        Filter(year_min=2000, year_max=1990)


# --- sync, upsert, delete ------------------------------------------------------------------------


def test_sync_is_incremental(tmp_path):
    store = open_store(tmp_path / "chroma")
    items, vectors = catalogue()
    assert store.sync(items, vectors) == SyncReport(added=12)
    assert store.sync(items, vectors) == SyncReport(unchanged=12)

    items[3] = replace(items[3], title="Funny film 3, director's cut")
    assert store.sync(items, vectors) == SyncReport(updated=1, unchanged=11)
    got = store.collection.get(ids=["a3"], include=["metadatas"])
    assert got["metadatas"][0]["title"] == "Funny film 3, director's cut"

    vectors[4] = axis(7)[0]  # a new vector with the same text also counts as a change
    assert store.sync(items, vectors) == SyncReport(updated=1, unchanged=11)

    assert store.sync(items[1:], vectors[1:]) == SyncReport(deleted=1, unchanged=11)
    assert "a0" not in store.ids() and store.count() == 11

    rng = np.random.default_rng(0)
    new = [Item(f"n{k}", f"new item {k}") for k in range(100)]
    new_vectors = rng.standard_normal((100, DIM)).astype(np.float32)
    report = store.sync(items[1:] + new, np.vstack([vectors[1:], new_vectors]))
    assert report == SyncReport(added=100, unchanged=11)
    assert store.count() == 111


def test_sync_rewrites_records_whose_derived_metadata_changed(tmp_path, monkeypatch):
    import retrieval.records as records
    import retrieval.store as store_module

    store = open_store(tmp_path / "chroma")
    items, vectors = catalogue()
    store.sync(items, vectors)
    derive = records.item_metadata

    # the same attributes, derived differently (as when whole-float years began to be kept)
    def changed(it):
        return {**derive(it), "decade": (it.year or 0) // 10}

    monkeypatch.setattr(records, "item_metadata", changed)
    monkeypatch.setattr(store_module, "item_metadata", changed)
    assert store.sync(items, vectors) == SyncReport(updated=12)
    got = store.collection.get(ids=["a3"], include=["metadatas"])
    assert got["metadatas"][0]["decade"] == 199


def test_upsert_and_delete(store):
    store.upsert([Item("c0", "Cartoon")], axis(5))
    assert store.count() == 13
    assert store.query(axis(5), 1)[0].ids[0] == "c0"
    store.upsert([Item("c0", "Cartoon, renamed")], axis(6))
    assert store.count() == 13 and store.query(axis(6), 1)[0].ids[0] == "c0"
    assert store.delete(["c0", "a0", "not-there"]) == 2
    assert store.count() == 11 and not {"c0", "a0"} & set(store.ids())


def test_get_embeddings_keeps_input_order(store):
    items, vectors = catalogue()
    got = store.get_embeddings(["b2", "a0", "b2"])
    assert got.dtype == np.float32 and got.shape == (3, DIM)
    np.testing.assert_allclose(got, vectors[[8, 0, 8]], atol=1e-6)
    with pytest.raises(KeyError, match="'zz'"):
        store.get_embeddings(["a0", "zz"])
    assert sorted(store.ids()) == sorted(A_IDS + B_IDS) and store.count() == 12


def bad_batches() -> dict[str, tuple[list[Item], np.ndarray, str]]:
    """Two new items with something wrong, and the error message it must give."""
    new = [Item("x0", "new 0"), Item("x1", "new 1")]
    ones = np.ones((2, DIM), np.float32)
    nan = ones.copy()
    nan[1, 3] = np.nan
    return {
        "nan": (new, nan, "NaN"),
        "inf": (new, np.full((2, DIM), np.inf, np.float32), "infinite"),
        "zero": (new, np.zeros((2, DIM), np.float32), "all zero"),
        "wrong-dim": (new, np.ones((2, DIM + 1), np.float32), "dimension 9"),
        "length": (new, np.ones((3, DIM), np.float32), r"\d+ rows for \d+ items"),
        "duplicate": ([new[0], new[0]], ones, "duplicate"),
        "1-d": (new, np.ones(2 * DIM, np.float32), "2-D"),
    }


def with_catalogue(items: list[Item], vectors: np.ndarray) -> tuple[list[Item], np.ndarray]:
    """The catalogue minus a0 (a sync would delete it) plus ``items``, vectors padded alike."""
    known, known_vectors = catalogue()
    if vectors.ndim != 2:
        return known[1:] + items, vectors
    padded = np.zeros((11, vectors.shape[1]), np.float32)
    padded[:, :DIM] = known_vectors[1:, : vectors.shape[1]]
    return known[1:] + items, np.vstack([padded, vectors])


@pytest.mark.parametrize("case", list(bad_batches()))
@pytest.mark.parametrize("method", ["sync", "upsert"])
def test_invalid_input_changes_nothing(store, method, case):
    items, vectors, message = bad_batches()[case]
    queries = np.vstack([axis(0), axis(1)])
    before = store.query(queries, 5)
    with pytest.raises(ValueError, match=message):
        if method == "sync":
            store.sync(*with_catalogue(items, vectors))
        else:
            store.upsert(items, vectors)
    assert store.count() == 12 and "a0" in store.ids()
    assert store.query(queries, 5) == before


def test_invalid_query_vectors(store):
    with pytest.raises(ValueError, match="dimension 3"):
        store.query(np.ones((1, 3), np.float32), 5)
    with pytest.raises(ValueError, match="NaN"):
        store.query(np.full((1, DIM), np.nan, np.float32), 5)
    with pytest.raises(ValueError, match="n must be"):
        store.query(axis(0), 0)


# --- persistence ---------------------------------------------------------------------------------

REOPEN = """
import json, sys
from pathlib import Path
import numpy as np
from retrieval.filters import Filter
from retrieval.store import ItemStore, StoreConfig
store = ItemStore(StoreConfig(path=Path(sys.argv[1]), show_progress=False))
hits = store.query(np.eye(8, dtype=np.float32)[:2], 4, where=Filter(genres_none=("Sci-Fi",)))
print(json.dumps({"count": store.count(), "hits": [h.pairs() for h in hits]}))
"""


def test_reopen_gives_the_same_results(store, tmp_path):
    query = np.vstack([axis(0), axis(1)])
    flt = Filter(genres_none=("Sci-Fi",))
    expected = store.query(query, 4, where=flt)
    assert open_store(tmp_path / "chroma").query(query, 4, where=flt) == expected
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", REOPEN, str(tmp_path / "chroma")],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=120,
        check=True,
    )
    reopened = json.loads(done.stdout.strip().splitlines()[-1])
    assert reopened["count"] == 12
    assert [[tuple(h) for h in row] for row in reopened["hits"]] == [h.pairs() for h in expected]


def test_a_closed_store_folder_can_be_deleted_and_opened_again_in_this_process(tmp_path):
    """What saving a model into the folder it was loaded from does (``retrieval/saved.py``):
    chromadb shares one system per folder among a process's clients, and before close() released
    it, the store opened on the recreated folder wrote into the deleted files: it answered, and
    the folder on disk was empty."""
    path = tmp_path / "chroma"
    first = open_store(path)
    assert not first.own_process
    first.sync(*catalogue())
    first.close()
    first.close()  # idempotent
    shutil.rmtree(path)
    with open_store(path) as again:
        again.sync(*catalogue())
        assert again.count() == 12
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", REOPEN, str(path)],
        capture_output=True, text=True, cwd=root, timeout=120, check=True,
    )  # fmt: skip
    assert json.loads(done.stdout.strip().splitlines()[-1])["count"] == 12  # 0 before the fix


# --- configuration and metadata ------------------------------------------------------------------


def test_store_config_validation(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        StoreConfig()
    with pytest.raises(ValueError, match="exactly one"):
        StoreConfig(path=tmp_path, host="localhost")
    with pytest.raises(ValueError, match="3-512"):
        StoreConfig(path=tmp_path, collection="ab")


def test_reopening_with_another_ef_search_updates_it(store, tmp_path):
    assert store.collection.configuration_json["hnsw"]["ef_search"] == StoreConfig.ef_search
    reopened = open_store(tmp_path / "chroma", ef_search=50, max_neighbors=8)
    hnsw = reopened.collection.configuration_json["hnsw"]
    assert hnsw["ef_search"] == 50 and hnsw["max_neighbors"] == StoreConfig.max_neighbors


def test_item_metadata():
    item = Item(
        "1",
        "Shoe",
        "Comfortable.",
        {
            "genres": ["Sport", "Sport", "Casual"],
            "year": np.int64(2001),
            "brand": "Acme",
            "category": "Shoes",
            "price": 9.5,
            "rating": float("nan"),
            "tags": ["red"],
            "sizes": [40, 41],
            "extra": {"a": 1},
            "title": "ignored",
            "#bad": "x",
            "none": None,
        },
    )
    assert item_metadata(item) == {
        "title": "Shoe",
        "year": 2001,
        "genres": ["Sport", "Casual"],
        "brand": "Acme",
        "category": "Shoes",
        "price": 9.5,
        "tags": ["red"],
    }
    assert item_metadata(Item("2", "Plain", attributes={"genres": [], "year": "n/a"})) == {
        "title": "Plain"
    }


# --- with the text encoder -----------------------------------------------------------------------


class CountingModel:
    """Bag of hashed words → a 16-d vector; records every text it embeds."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, sentences: list[str], **kwargs) -> np.ndarray:
        self.seen += sentences
        out = np.zeros((len(sentences), 16), dtype=np.float32)
        for row, text in enumerate(sentences):
            for word in text.lower().split():
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 16] += 1.0
        return out


@pytest.mark.parametrize("cache", [False, True], ids=["no-cache", "cache"])
def test_sync_with_a_text_encoder_embeds_only_new_items(tmp_path, cache):
    model = CountingModel()
    config = TextEncoderConfig(cache_dir=tmp_path / "emb" if cache else None, show_progress=False)
    encoder = TextEncoder(config, model=model, model_id="counting")
    store = open_store(tmp_path / "chroma")
    items, _ = catalogue()
    new = [Item(f"n{k}", f"brand new item {k}", attributes={"genres": ["New"]}) for k in range(100)]

    assert store.sync(items, encoder) == SyncReport(added=12)
    assert encoder.last_encoded == 12
    assert store.sync(items + new, encoder) == SyncReport(added=100, unchanged=12)
    assert encoder.last_encoded == 100
    assert sorted(model.seen[12:]) == sorted(encoder.render(it) for it in new)
    np.testing.assert_allclose(
        store.get_embeddings(["n7"]), encoder.encode_items([new[7]]), atol=1e-6
    )

    n_seen = len(model.seen)
    assert store.sync(items + new, encoder) == SyncReport(unchanged=112)
    assert len(model.seen) == n_seen  # nothing changed: the encoder is not even called

    items[0] = replace(items[0], description="Now with a plot.")
    assert store.sync(items + new, encoder) == SyncReport(updated=1, unchanged=111)
    assert encoder.last_encoded == 1

    # precomputed vectors agree with what the embedder wrote: nothing is rewritten
    assert store.sync(items + new, encoder.encode_items(items + new)) == SyncReport(unchanged=112)


# --- the embedded store in a process of its own ---------------------------------------------------


@pytest.fixture
def own(tmp_path) -> Iterator[ItemStore]:
    s = open_store(tmp_path / "chroma", own_process=True)
    s.sync(*catalogue())
    yield s
    s.close()


def test_own_process_store_passes_the_same_checks(own, tmp_path):
    """Every check above that the ``store`` fixture runs, on one store whose chromadb is a child
    process (one child for all: each start imports chromadb)."""
    assert own.own_process and own.child_pid not in (None, os.getpid())
    test_query_returns_the_right_cluster_with_cosine_similarities(own)
    test_a_single_vector_and_more_than_the_store(own)
    test_exclude_ids_still_returns_n(own)
    for flt, expected in FILTER_CASES:
        test_filters(own, flt, expected)
    test_get_embeddings_keeps_input_order(own)
    for case in bad_batches():
        for method in ("sync", "upsert"):
            test_invalid_input_changes_nothing(own, method, case)
    test_invalid_query_vectors(own)
    assert own.collection.configuration_json["hnsw"]["ef_search"] == StoreConfig.ef_search
    assert set(own.collection.get(ids=["a3"], include=["metadatas"])) >= {"ids", "metadatas"}
    with pytest.raises(ValueError, match="include"):  # chromadb's own error, through the pipe
        own.collection.get(ids=["a3"], include=["bogus"])
    query = np.vstack([axis(0), axis(1)])
    expected = own.query(query, 4)
    test_upsert_and_delete(own)  # leaves c0 and a0 deleted
    after = own.query(query, 4)
    own.close()
    assert own.child_pid is not None and not pid_alive(own.child_pid)
    reopened = open_store(tmp_path / "chroma")  # in this process: the child's writes are there
    assert reopened.count() == 11 and reopened.query(query, 4) == after != expected


def pid_alive(pid: int, wait: float = 30.0) -> bool:
    """Whether ``pid`` still runs after up to ``wait`` seconds (a child that is not ours to reap
    shows as a zombie until its parent does, which counts as gone)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.1)
    return True


def test_own_process_default_and_one_child_per_folder(tmp_path, monkeypatch):
    from retrieval.store import PROCESS_ENV, own_process_default

    with pytest.raises(ValueError, match="own_process"):
        StoreConfig(host="localhost", own_process=True)
    monkeypatch.delenv(PROCESS_ENV, raising=False)
    with own_process_default(True):
        first = open_store(tmp_path / "chroma")
        second = open_store(tmp_path / "chroma")
        with own_process_default(False):
            assert not open_store(tmp_path / "other").own_process
    assert first.own_process and first.child_pid == second.child_pid  # one child per folder
    assert not open_store(tmp_path / "third").own_process  # outside the block: this process
    first.sync(*catalogue())
    first.close()
    assert pid_alive(first.child_pid, wait=0.5)  # the second still uses it
    assert second.count() == 12
    second.close()
    assert not pid_alive(first.child_pid)
    monkeypatch.setenv(PROCESS_ENV, "1")
    with open_store(tmp_path / "chroma") as by_env:
        assert by_env.own_process and by_env.count() == 12


def longest_stall(write: Callable[[], None], calls: int = 3) -> float:
    """The median, over ``calls`` writes, of the longest time a ticking thread could not run
    while one write was in flight (seconds)."""

    def tick(ticks: list[float], done: threading.Event) -> None:
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    stalls = []
    for _ in range(calls):
        ticks: list[float] = []
        done = threading.Event()
        ticker = threading.Thread(target=tick, args=(ticks, done))
        ticker.start()
        time.sleep(0.02)
        t0 = time.perf_counter()
        write()
        t1 = time.perf_counter()
        done.set()
        ticker.join()
        inside = [t0] + [t for t in ticks if t0 < t < t1] + [t1]
        stalls.append(max(np.diff(inside)))
    return float(np.median(stalls))


def test_own_process_writes_do_not_hold_this_process_gil(tmp_path):
    """chromadb's Rust bindings hold the GIL for a whole write: in this process a thread stalls
    as long as the write; with the store in its own process it keeps running."""
    rng = np.random.default_rng(0)
    items = [Item(f"g{k}", f"item {k}") for k in range(150)]
    vectors = rng.normal(size=(len(items), 64)).astype(np.float32)
    stalls = {}
    for own_process in (False, True):
        path = tmp_path / f"chroma-{own_process}"
        with ItemStore(StoreConfig(path=path, show_progress=False, own_process=own_process)) as s:
            s.upsert(items, vectors)  # the collection exists and has its dimension
            stalls[own_process] = longest_stall(lambda s=s: s.upsert(items, -vectors))
    assert stalls[True] < stalls[False] / 2, stalls


KILLED_WRITER = """
import sys
from pathlib import Path
import numpy as np
from hyrec.data import Item
from retrieval.store import ItemStore, StoreConfig
store = ItemStore(StoreConfig(path=Path(sys.argv[1]), own_process=True, show_progress=False))
print("child", store.child_pid, flush=True)
rng = np.random.default_rng(0)
for k in range(100000):
    store.upsert([Item(f"k{k}", f"item {k}")], rng.normal(size=(1, 8)).astype(np.float32))
    print("acked", k, flush=True)
"""


def test_acknowledged_writes_survive_a_sigkill_of_the_parent(tmp_path):
    """Every upsert that returned in the parent is in the folder after the parent is SIGKILLed
    mid-burst, and the child exits by itself (it finishes the write in flight first)."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path / "chroma")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
    )
    child, acked = None, -1
    try:
        for line in proc.stdout:
            word, number = line.split()
            if word == "child":
                child = int(number)
            else:
                acked = int(number)
            if acked >= 30:
                break
    finally:
        proc.kill()
        proc.wait()
    acked = max([acked, *(int(ln.split()[1]) for ln in proc.stdout if ln.startswith("acked"))])
    assert child is not None and acked >= 30
    assert not pid_alive(child), "the store's child outlived its SIGKILLed parent"
    stored = set(open_store(tmp_path / "chroma").ids())
    assert {f"k{k}" for k in range(acked + 1)} <= stored


def test_a_dead_child_is_started_again(own):
    import signal

    first = own.child_pid
    os.kill(first, signal.SIGKILL)
    assert not pid_alive(first)
    assert own.count() == 12  # the next call starts a new child and is sent again
    assert own.child_pid != first
    own.upsert([Item("c0", "Cartoon")], axis(5))
    assert own.query(axis(5), 1)[0].ids[0] == "c0"


# --- a real Chroma server ------------------------------------------------------------------------


@pytest.fixture
def chroma_server(tmp_path) -> Iterator[int]:
    """``chroma run`` (the CLI that ships with chromadb) on a free local port."""
    cli = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    if not Path(cli).exists():
        pytest.skip("the chroma CLI is not installed")
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [cli, "run", "--path", str(tmp_path / "server"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("localhost", port), 1):
                break
            time.sleep(0.2)
        else:
            pytest.fail("chroma run did not start listening within 60 s")
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.integration
def test_http_server(chroma_server):
    store = ItemStore(StoreConfig(host="localhost", port=chroma_server, show_progress=False))
    items, vectors = catalogue()
    assert store.sync(items, vectors) == SyncReport(added=12)
    assert store.sync(items[1:], vectors[1:]) == SyncReport(deleted=1, unchanged=11)
    hits = store.query(axis(0), 3, where=Filter(genres_any=("Comedy",)), exclude_ids=["a1"])[0]
    assert len(hits) == 3 and set(ids_of(hits)) <= set(A_IDS) - {"a0", "a1"}


def test_a_locked_chroma_database_at_open_is_waited_for_not_failed():
    """chromadb's SQLite is briefly locked while another client of the folder writes (seen as a
    flaky 'database is locked' when a store reopened a folder with another ef_search)."""
    from retrieval.store import _while_locked

    answers = [RuntimeError("Database error: (code: 5) database is locked")] * 2 + ["done"]

    def call():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert _while_locked(call) == "done" and not answers
    with pytest.raises(ValueError, match="other"):  # anything else fails at once
        _while_locked(lambda: (_ for _ in ()).throw(ValueError("other")))
    locked = RuntimeError("database is locked")
    with pytest.raises(RuntimeError, match="locked"):  # and a lock that stays, after the wait
        _while_locked(lambda: (_ for _ in ()).throw(locked), wait=0.2)
