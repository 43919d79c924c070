"""Two replicas behave as one service: two real ``hyrec serve`` processes on one model folder, one
real PostgreSQL (tests/pg.py) and one real chromadb server (``chroma run``). Feedback through A
changes B's next list; an item upserted on A is recommendable on B within the stated bound
(``sync_interval``, 1 s, plus the time to apply it); a user forgotten on A is forgotten on B (the
snapshot row; in process, also B's cached profile)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent.api import Recommender
from tests.fakes import ScriptedLLM
from tests.pg import pg_url, postgres_server  # noqa: F401 (fixtures)
from tests.servers import free_port, start_serve
from tests.test_api import block, build_model, fake_encoder

pytestmark = pytest.mark.integration
psycopg = pytest.importorskip("psycopg", reason="needs pip install 'hyrec[postgres]'")

BOUND = 1.0  # RecommenderConfig.sync_interval: the longest a lost NOTIFY delays a change
SLACK = 9.0  # applying a change (encoding the item) on two shared, busy cores


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory) -> Iterator[str]:
    """``chroma run`` (the CLI that ships with chromadb) on a free loopback port."""
    cli = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    if not Path(cli).exists():
        pytest.skip("the chroma CLI is not installed")
    port = free_port()
    folder = tmp_path_factory.mktemp("chroma-server")
    proc = subprocess.Popen(
        [cli, "run", "--path", str(folder), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.2)
        else:
            pytest.fail("chroma run did not start listening within 60 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("model")
    return build_model(root / "model", root / "cache"), root / "cache"


def ids(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [it["item_id"] for it in answer.json()["items"]]


def ready(server) -> bool:
    if server.proc.poll() is not None:
        pytest.fail(f"server exited: {server.text()[-2000:]}")
    try:
        return httpx.get(server.base + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def until(check, seconds: float) -> float:
    """Seconds until ``check()`` is true; fails after ``seconds``."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > seconds:
            pytest.fail(f"not true within {seconds} s")
        time.sleep(0.05)
    return time.monotonic() - t0


def test_two_served_replicas_behave_as_one_service(saved, pg_url, chroma_url, tmp_path):  # noqa: F811
    model_dir, cache = tmp_path / "model", saved[1]
    shutil.copytree(saved[0], model_dir)  # forgetting rewrites the folder's snapshot
    args = ("--no-auth", "--no-llm", "--feedback-url", pg_url, "--chroma-url", chroma_url)
    started = [
        start_serve(model_dir, cache, tmp_path / f"{n}.log", *args, key=None, wait=False)
        for n in ("a", "b")
    ]  # both start at once; then wait for each
    try:
        for server in started:
            until(lambda s=server: ready(s), 120)
        a, b = started
        with (
            httpx.Client(base_url=a.base, timeout=30) as on_a,
            httpx.Client(base_url=b.base, timeout=30) as on_b,
        ):
            # feedback through A changes the next list B returns for that user
            ask = {"user_id": "newcomer", "k": 5, "explain": False}
            before = ids(on_b.post("/v1/recommendations", json=ask))
            for item in ("12", "13", "14", "15", "16"):
                body = {"user_id": "newcomer", "item_id": item, "event": "like"}
                assert on_a.post("/v1/feedback", json=body).status_code == 200
            after = ids(on_b.post("/v1/recommendations", json=ask))
            assert after != before and [block(i) for i in after].count("B") >= 4
            assert not {"12", "13", "14", "15", "16"} & set(after)

            # an item upserted on A is recommendable on B within the bound
            new = {"item_id": "new-1", "title": "Beta story deluxe", "description": "",
                   "attributes": {"genres": ["B"], "year": 2001}}  # fmt: skip
            put = on_a.put("/v1/items", json={"items": [new]})
            assert put.status_code == 200, put.text
            assert put.json()["n_items"] == 25
            lag = until(lambda: on_b.get("/healthz").json()["n_items"] == 25, BOUND + SLACK)
            # a candidate for a cold user through the query's text neighbours (pop has no count)
            asked = {"user_id": "fan", "k": 30, "query": "Beta story deluxe", "explain": False}
            assert "new-1" in ids(on_b.post("/v1/recommendations", json=asked))
            like = {"user_id": "fan", "item_id": "new-1", "event": "like"}
            assert on_b.post("/v1/feedback", json=like).status_code == 200
            print(f"upsert on A recommendable on B after {lag:.3f} s")

            # a user forgotten on A is forgotten on B: snapshot row and stored events
            cold = ids(on_b.post("/v1/recommendations", json={"user_id": "x", "k": 5}))
            u3 = {"user_id": "u3", "k": 5, "explain": False}
            assert ids(on_b.post("/v1/recommendations", json=u3)) != cold
            on_b.post("/v1/feedback", json={"user_id": "u3", "item_id": "12", "event": "like"})
            assert on_a.delete("/v1/users/u3").json()["removed_events"] > 1
            until(lambda: ids(on_b.post("/v1/recommendations", json=u3)) == cold, BOUND + SLACK)
            with psycopg.connect(pg_url) as conn:
                n = conn.execute("SELECT COUNT(*) FROM events WHERE user_id = 'u3'").fetchone()
                assert n[0] == 0

        # the chromadb server holds the upserted item for every replica
        import chromadb

        port = int(chroma_url.rsplit(":", 1)[1])
        collection = chromadb.HttpClient(host="127.0.0.1", port=port).get_collection("hyrec-items")
        assert collection.count() == 25 and collection.get(ids=["new-1"])["ids"] == ["new-1"]
    finally:
        codes = [server.stop() for server in started]
    for server, code in zip(started, codes, strict=True):  # uvicorn re-raises SIGTERM: -15
        assert code in (0, -15) and "Traceback" not in server.text(), server.text()[-2000:]


PROFILE = '{"likes": ["beta stories"], "summary": "Likes beta stories."}'


def test_cached_profiles_and_forgetting_are_shared(saved, pg_url, tmp_path):  # noqa: F811
    model_dir, cache = tmp_path / "model", saved[1]
    shutil.copytree(saved[0], model_dir)

    def replica() -> Recommender:
        llm = ScriptedLLM([PROFILE], repeat_last=True)
        return Recommender.load(model_dir, llm, encoder=fake_encoder(cache), feedback_url=pg_url)

    with replica() as a, replica() as b:
        first = a.recommend("u3", k=5, explain=False)
        assert first.profile is not None and first.profile.fallback_reason is None
        assert b.recommend("u3", k=5, explain=False).profile == first.profile
        assert b.profiles.stats["cache_hits"] == 1  # computed on A, served to B from PostgreSQL
        assert len(b.profiles.cache) == 1

        a.forget_user("u3")
        until(lambda: "u3" not in b.catalogue.user_index, BOUND + SLACK)
        assert len(b.profiles.cache) == 0  # B's memory copy went with the deletion
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT COUNT(*) FROM profiles").fetchone()[0] == 0
            assert conn.execute("SELECT COUNT(*) FROM deletions").fetchone()[0] == 1
        cold = b.recommend("never-seen", k=5, explain=False)
        gone = b.recommend("u3", k=5, explain=False)
        assert [r.item_id for r in gone.items] == [r.item_id for r in cold.items]
    with replica() as c:  # a replica started later never sees the forgotten user either
        assert "u3" not in c.catalogue.user_index
