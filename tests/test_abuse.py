"""The server as an attacker and an unlucky operator would try it: each test is one row of the
hardening issue's table, run against a real ``hyrec serve`` process on loopback (the tiny model,
the tests' text encoder, a scripted OpenAI-compatible LLM where an LLM is needed)."""

from __future__ import annotations

import glob
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from eval.scripted_llm import serve as scripted_llm
from tests.servers import ROOT, SERVE, free_port, rss_kib, start_serve
from tests.test_api import build_model

KEY = "abuse-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("abuse")
    return build_model(root / "model", root / "cache"), root / "cache", root


def copy_of(model, name: str) -> Path:
    """A private copy of the model folder (each server gets its own feedback database)."""
    import shutil

    folder, _, root = model
    target = root / name
    shutil.copytree(folder, target)
    return target


@pytest.fixture(scope="module")
def plain(model):
    """A server without an LLM, with one thread per pool (``--threads 1``): the fewest threads
    an attacker has to tie up."""
    _, cache, root = model
    folder = copy_of(model, "plain")
    server = start_serve(folder, cache, root / "plain.log", "--no-llm", "--threads", "1")
    yield server
    server.stop()


def llm_server(model, name: str, delay: float):
    """A server whose LLM is the scripted one, answering after ``delay`` seconds."""
    _, cache, root = model
    port = free_port()
    llm = scripted_llm(port, delay)
    env = {"HYREC_LLM_BASE_URL": f"http://127.0.0.1:{port}/v1", "HYREC_LLM_MODEL": "scripted"}
    server = start_serve(copy_of(model, name), cache, root / f"{name}.log", "--llm", env=env)
    return server, llm


def post(server, path: str, body, timeout: float = 60, **kw) -> httpx.Response:
    method = "PUT" if path == "/v1/items" else "POST"
    return httpx.request(method, server.base + path, json=body, headers=AUTH, timeout=timeout, **kw)


# ---- row 1: a 50 MB body without a token; 5 MB of bad JSON without a token ------------------
def test_a_huge_body_without_a_token_costs_nothing(plain):
    before = rss_kib(plain.proc.pid)
    body = b"x" * 50_000_000
    t0 = time.perf_counter()
    r = httpx.post(plain.base + "/v1/recommendations", content=body, timeout=60)
    seconds = time.perf_counter() - t0
    assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
    assert seconds < 1.0, f"the refusal took {seconds:.2f} s"
    assert rss_kib(plain.proc.pid) - before < 20_000  # not buffered: < 20 MB more
    bad = b"{" * 5_000_000
    r = httpx.post(plain.base + "/v1/feedback", content=bad, timeout=60)
    assert r.status_code == 401


def test_a_huge_body_with_the_token_is_refused_naming_the_limit(plain):
    r = httpx.post(plain.base + "/v1/feedback", content=b"x" * 2_000_000, headers=AUTH, timeout=60)
    assert r.status_code == 413 and "1000000-byte limit" in r.json()["error"]["message"]

    def chunks():  # no Content-Length: refused while it streams in
        for _ in range(40):
            yield b" " * 100_000

    r = httpx.post(plain.base + "/v1/feedback", content=chunks(), headers=AUTH, timeout=60)
    assert r.status_code == 413


@pytest.fixture(scope="module")
def scripted(model):
    """A server and its scripted LLM, which answers at once until a test sets ``llm.delay``."""
    server, llm = llm_server(model, "fast", delay=0.01)
    yield server, llm
    server.stop()
    llm.shutdown()


@pytest.fixture(scope="module")
def fast(scripted):
    return scripted[0]


# ---- row 2: feedback never waits behind someone else's LLM call or a catalogue writer -------
def test_feedback_does_not_wait_behind_a_slow_llm_request_and_an_upsert(scripted):
    server, llm = scripted
    llm.delay.seconds = 10.0
    slow = threading.Thread(
        target=post, args=(server, "/v1/recommendations", {"user_id": "u1", "k": 4})
    )
    try:
        slow.start()
        time.sleep(1.5)  # the request is in its LLM call now
        item = {"items": [{"item_id": "new-1", "title": "A new story"}]}
        t0 = time.perf_counter()
        assert post(server, "/v1/items", item).status_code == 200
        upsert = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = post(server, "/v1/feedback", {"user_id": "u7", "item_id": "3", "event": "like"})
        seconds = time.perf_counter() - t0
        assert r.status_code == 200 and r.json()["stored"]
        # waiting behind the 10 s LLM call would take ~8.5 s; 1 s leaves room for a busy machine
        assert seconds < 1.0, f"feedback took {seconds * 1000:.0f} ms behind the LLM request"
        assert upsert < 1.0, f"the upsert waited {upsert:.1f} s for the LLM request"
        assert slow.is_alive()  # the LLM request was still running all along
    finally:  # the slow request's calls answer now, and the next tests' at once
        llm.delay.cut(0.01)
        slow.join(timeout=60)


# ---- row 3: an upsert with a non-text category; then the LLM path for a user who has it ----
def test_a_bad_attribute_is_refused_at_upsert_and_a_good_one_serves_with_the_llm(fast):
    server = fast
    bad = {"items": [{"item_id": "c1", "title": "Catted", "attributes": {"category": 5}}]}
    r = post(server, "/v1/items", bad)
    assert r.status_code == 400 and "genres must be a string" in r.json()["error"]["message"]
    good = {"items": [{"item_id": "c2", "title": "Catted", "attributes": {"category": "Toys"}}]}
    assert post(server, "/v1/items", good).status_code == 200
    assert (
        post(
            server, "/v1/feedback", {"user_id": "u3", "item_id": "c2", "event": "like"}
        ).status_code
        == 200
    )
    for _ in range(2):  # every such request, not only the first
        r = post(server, "/v1/recommendations", {"user_id": "u3", "k": 4})
        assert r.status_code == 200 and len(r.json()["items"]) == 4


# ---- row 4: the feedback database locked by another process ---------------------------------
def test_a_locked_database_is_a_quick_503_and_health_never_blocks(plain, model):
    folder = model[2] / "plain"
    holder = sqlite3.connect(str(folder / "feedback.sqlite3"), timeout=1, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        t0 = time.perf_counter()
        r = post(plain, "/v1/feedback", {"user_id": "u2", "item_id": "3", "event": "like"})
        seconds = time.perf_counter() - t0
        assert r.status_code == 503 and r.headers["retry-after"].isdigit()
        assert "feedback store" in r.json()["error"]["message"]
        assert seconds < 3.0, f"the 503 took {seconds:.1f} s"
        t0 = time.perf_counter()
        assert httpx.get(plain.base + "/healthz", timeout=5).status_code == 200
        assert time.perf_counter() - t0 < 0.5
        ready = httpx.get(plain.base + "/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["status"] == "degraded"
        t0 = time.perf_counter()
        assert post(plain, "/v1/recommendations", {"user_id": "u2", "k": 3}).status_code == 200
        assert time.perf_counter() - t0 < 3.0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    r = post(plain, "/v1/feedback", {"user_id": "u2", "item_id": "3", "event": "like"})
    assert r.status_code == 200  # the store is back: nothing was lost or wedged
    assert httpx.get(plain.base + "/readyz", timeout=10).json()["status"] == "ok"


def test_feedback_waits_for_its_own_threads_and_only_for_the_stores_wait(plain, model):
    """One thread per pool (``--threads 1``) and the database locked elsewhere: an upsert stuck on
    the store, then four feedback requests at once. Each feedback is a 503 with Retry-After while
    the database is still locked: none queues behind the upsert (feedback has its own threads) or
    behind the thread another feedback holds (the wait for a thread is the store's wait). With one
    shared pool they took turns, a store wait each, and the last ones were answered only after the
    database was unlocked."""
    server, folder = plain, model[2] / "plain"
    holder = sqlite3.connect(str(folder / "feedback.sqlite3"), timeout=1, isolation_level=None)
    answers: dict[str, tuple[httpx.Response, float]] = {}

    def send(name: str, path: str, body: dict) -> None:
        r = post(server, path, body)
        answers[name] = (r, time.monotonic())

    item = {"items": [{"item_id": "stuck-1", "title": "A story that waits"}]}
    requests = [("upsert", "/v1/items", item)] + [
        (f"feedback {n}", "/v1/feedback", {"user_id": f"w{n}", "item_id": "3", "event": "like"})
        for n in range(4)
    ]
    try:
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        threads = [threading.Thread(target=send, args=r) for r in requests]
        for t in threads:
            t.start()
            time.sleep(0.1)  # the upsert first, then the feedback in order
        time.sleep(6.0)  # three store waits (2 s each): what the last ones waited in one pool
        unlocked = time.monotonic()
        holder.execute("ROLLBACK")
        for t in threads:
            t.join(timeout=30)
        for name, _, _ in requests[1:]:
            r, at = answers[name]
            assert r.status_code == 503 and r.headers["retry-after"].isdigit(), (name, r.text)
            assert at < unlocked, f"{name} was answered only after the database was unlocked"
        r = post(server, "/v1/feedback", {"user_id": "w9", "item_id": "3", "event": "like"})
        assert r.status_code == 200  # nothing wedged
    finally:
        holder.close()


def test_a_feedback_that_waited_for_a_thread_gets_only_what_is_left_of_its_wait(plain, model):
    """Twelve feedback requests at once for the four feedback threads, the database locked
    elsewhere: each is answered within one store wait (2 s) of being sent, the wait for a
    thread included. Before, the eight that waited ~2 s for a thread then waited a whole store
    wait more (~4 s)."""
    server, folder = plain, model[2] / "plain"
    holder = sqlite3.connect(str(folder / "feedback.sqlite3"), timeout=1, isolation_level=None)
    took: list[tuple[int, float]] = []

    def send(n: int) -> None:
        t0 = time.monotonic()
        r = post(server, "/v1/feedback", {"user_id": f"q{n}", "item_id": "3", "event": "like"})
        took.append((r.status_code, time.monotonic() - t0))

    try:
        holder.execute("BEGIN EXCLUSIVE")
        threads = [threading.Thread(target=send, args=(n,)) for n in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert len(took) == 12 and all(status == 503 for status, _ in took), took
    # one store wait plus the client's and a loaded host's overhead (2.64 s seen on a slow host
    # under the parallel suite), well below the two waits (~4 s) this test guards against
    assert max(s for _, s in took) < 3.2, sorted(round(s, 2) for _, s in took)


# ---- row 5: a user id with a slash can be erased ---------------------------------------------
def test_any_id_the_feedback_endpoint_accepts_can_be_erased(plain):
    for user in ("a/b", "x y", "ü/../é"):
        assert (
            post(
                plain, "/v1/feedback", {"user_id": user, "item_id": "3", "event": "like"}
            ).status_code
            == 200
        )
    r = httpx.delete(plain.base + "/v1/users/a%2Fb", headers=AUTH, timeout=30)
    assert r.status_code == 200 and r.json() == {"user_id": "a/b", "removed_events": 1}
    for user in ("x y", "ü/../é"):
        r = post(plain, "/v1/users/forget", {"user_id": user})
        assert r.status_code == 200 and r.json()["removed_events"] == 1
    assert "a/b" not in plain.text() and "x y" not in plain.text()  # ids never logged


# ---- row 6: forgetting removes every cached profile variant --------------------------------
def test_forgetting_a_user_removes_every_cached_profile_variant(fast, model):
    profiles = model[2] / "fast" / "profiles"
    before = set(profiles.glob("*.json"))
    post(fast, "/v1/recommendations", {"user_id": "u4", "k": 3})
    post(fast, "/v1/recommendations", {"user_id": "u4", "k": 3, "history": ["20", "21"]})
    assert len(set(profiles.glob("*.json")) - before) == 2  # the user's own and one variant
    assert post(fast, "/v1/users/forget", {"user_id": "u4"}).status_code == 200
    assert set(profiles.glob("*.json")) == before


# ---- row 7: closed by default ---------------------------------------------------------------
def test_docs_and_sizes_are_closed_without_the_token(plain, model):
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(plain.base + path, timeout=10).status_code == 401
        assert httpx.get(plain.base + path, headers=AUTH, timeout=10).status_code == 404
    body = httpx.get(plain.base + "/healthz", timeout=10).json()
    assert body["n_items"] is None and body["n_users"] is None
    folder, cache, root = model
    cmd = [sys.executable, "-m", "agent.cli.serve", "--model-dir", str(folder)]
    cmd += ["--port", str(free_port()), "--api-key", "visible-in-ps", "--no-llm"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2 and "--api-key is refused" in done.stdout + done.stderr


# ---- row 8: no orphaned LLM server or log -------------------------------------------------
def llama_servers() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "llama_cpp.server"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


@pytest.mark.integration
def test_a_failed_start_and_a_killed_server_leave_no_llm_server_or_log(model):
    pytest.importorskip("llama_cpp")
    folder, cache, root = model
    logs_before = set(glob.glob("/tmp/hyrec-llama-server-*.log"))
    servers_before = llama_servers()
    cmd = [sys.executable, "-c", SERVE, str(cache), "--model-dir", str(folder), "--llm"]
    cmd += ["--port", str(free_port())]
    env = {**os.environ, "HYREC_API_KEY": KEY, "HYREC_CHAT_TOOLS": "bogus"}
    env.pop("HYREC_LLM_BASE_URL", None)  # the embedded llama.cpp server starts first
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT, env=env)
    assert done.returncode == 2 and "HYREC_CHAT_TOOLS" in done.stdout + done.stderr
    assert llama_servers() == servers_before
    assert set(glob.glob("/tmp/hyrec-llama-server-*.log")) == logs_before
    # a SIGKILLed parent: its embedded server exits by itself and removes its log
    env["HYREC_CHAT_TOOLS"] = "rules"
    server = start_serve(copy_of(model, "killed"), cache, root / "killed.log", "--llm", env=env)
    try:
        assert len(llama_servers() - servers_before) == 1
    finally:
        server.proc.kill()
        server.proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and llama_servers() != servers_before:
        time.sleep(0.2)
    assert llama_servers() == servers_before
    assert set(glob.glob("/tmp/hyrec-llama-server-*.log")) == logs_before


# ---- row 9: a retried event is stored once; work after the commit cannot fail it ----------
def test_a_retried_event_is_acknowledged_and_stored_once(plain, model):
    body = {"user_id": "u9", "item_id": "4", "event": "like", "event_id": "client-123"}
    first = post(plain, "/v1/feedback", body).json()
    again = post(plain, "/v1/feedback", body).json()
    assert first["event_id"] == again["event_id"] and again["duplicate"] is True
    clash = post(plain, "/v1/feedback", {**body, "event": "dislike"})
    assert clash.status_code == 409 and "already used" in clash.json()["error"]["message"]
    db = sqlite3.connect(str(model[2] / "plain" / "feedback.sqlite3"))
    try:
        (n,) = db.execute("SELECT COUNT(*) FROM events WHERE client_id = 'client-123'").fetchone()
    finally:
        db.close()
    assert n == 1


def test_a_failing_profile_cache_after_the_commit_does_not_fail_the_event(model, monkeypatch):
    """In process (the failure is injected): the event is committed, so the answer is 200."""
    from fastapi.testclient import TestClient

    from agent.api import Recommender
    from agent.serve.app import create_app
    from agent.stages.profile_cache import ProfileCache
    from tests.fakes import ScriptedLLM
    from tests.test_api import fake_encoder

    folder, cache, root = model
    model_dir = copy_of(model, "oserror")
    llm = ScriptedLLM(["{}"], repeat_last=True)
    rec = Recommender.load(model_dir, llm=llm, encoder=fake_encoder(cache))

    def broken(self, pseudonym):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ProfileCache, "drop_stale", broken)
    with TestClient(create_app(rec, api_key=KEY), raise_server_exceptions=False) as client:
        body = {"user_id": "u1", "item_id": "4", "event": "like", "event_id": "e-1"}
        r = client.post("/v1/feedback", json=body, headers=AUTH)
        assert r.status_code == 200 and r.json()["stored"]
        assert client.post("/v1/feedback", json=body, headers=AUTH).json()["duplicate"]
        assert sum(e.client_id == "e-1" for e in rec.store.events("u1")) == 1


# ---- row 10: numbers and sizes out of range ---------------------------------------------------
@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v1/items", {"items": [{"item_id": "y", "title": "Y", "attributes": {"year": 1e29}}]},
         "not a whole year"),
        ("/v1/items", {"items": [{"item_id": "z", "title": "Z",
                                  "attributes": {f"k{i}": 1 for i in range(100)}}]}, "at most 64"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 9000}]},
         "8000-character limit"),
        ("/v1/feedback", {"user_id": "u", "item_id": "3", "event": "rating", "value": 1e300},
         "less than or equal"),
    ],
)  # fmt: skip
def test_values_out_of_range_are_4xx_naming_the_limit(plain, path, body, message):
    r = post(plain, path, body)
    assert 400 <= r.status_code < 500 and message in json.dumps(r.json())
