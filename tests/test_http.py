"""The HTTP server: auth, typed answers, 4xx (never 500) for bad payloads, OpenAI-compatible chat,
durability under SIGKILL, and (integration) the whole loop with the embedded LLM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.api import Recommender
from agent.feedback import event_ids
from agent.serve.app import check_auth_settings, create_app, is_loopback
from encoders.text import TextEncoder, TextEncoderConfig
from tests.test_api import block, build_model, fake_encoder

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@dataclass(frozen=True)
class FakeReply:
    text: str
    items: tuple
    fallbacks: tuple = ()


class FakeChat:
    """Answers with the recommender's own list, so the test checks the HTTP plumbing."""

    def __init__(self, recommender: Recommender) -> None:
        self.recommender = recommender
        self.seen: list = []

    def reply(self, messages, user_id=None):
        self.seen.append((list(messages), user_id))
        recs = self.recommender.recommend(user_id, k=3, explain=False)
        return FakeReply("Try: " + ", ".join(r.title for r in recs.items), recs.items)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    return build_model(root / "model", root / "cache"), root / "cache"


@pytest.fixture
def client(saved, tmp_path):
    folder, cache = saved
    model = Recommender.load(
        folder, encoder=fake_encoder(cache), feedback_path=tmp_path / "fb.sqlite3"
    )
    app = create_app(model, api_key=KEY, chat_agent=FakeChat)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_health_needs_no_key_and_reports_sizes(client):
    body = client.get("/healthz").json()
    assert body == {
        "status": "ok",
        "n_items": 24,
        "n_users": 40,
        "feedback_events": 0,
        "llm": False,
    }


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}])
def test_v1_needs_the_api_key(client, headers):
    r = client.post("/v1/recommendations", json={"user_id": "u0"}, headers=headers)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "API key" in r.json()["error"]["message"]


def test_recommendations_answer_typed_items(client):
    r = client.post("/v1/recommendations", json={"user_id": "u1", "k": 4}, headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["user_id"] == "u1" and len(body["items"]) == 4 and body["fallbacks"] == []
    for it in body["items"]:
        assert set(it) == {"item_id", "title", "score", "sources", "contributions", "reason"}
        assert it["sources"] and isinstance(it["reason"], str)
    assert [block(it["item_id"]) for it in body["items"]].count("B") >= 3


def test_feedback_round_trip_changes_the_list(client):
    def top():
        r = client.post(
            "/v1/recommendations", json={"user_id": "fresh", "k": 5, "explain": False}, headers=AUTH
        )
        return [it["item_id"] for it in r.json()["items"]]

    before = top()
    for item in ("12", "13", "14", "15"):
        r = client.post(
            "/v1/feedback",
            json={"user_id": "fresh", "item_id": item, "event": "like"},
            headers=AUTH,
        )
        assert r.status_code == 200 and r.json()["stored"] is True
    after = top()
    assert after != before and [block(i) for i in after].count("B") >= 4
    assert client.get("/healthz").json()["feedback_events"] == 4
    r = client.delete("/v1/users/fresh", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"user_id": "fresh", "removed_events": 4}
    assert top() == before


def test_put_items_validates_and_upserts(client):
    r = client.put("/v1/items", json={"items": []}, headers=AUTH)
    assert r.status_code == 422 and "items" in r.json()["error"]["message"]
    item = {"item_id": "n1", "title": "Beta story new", "attributes": {"genres": ["B"]}}
    r = client.put("/v1/items", json={"items": [item]}, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"upserted": 1, "n_items": 25}
    r = client.put("/v1/items", json={"items": [{**item, "title": "Renamed"}]}, headers=AUTH)
    assert r.status_code == 400 and "different content" in r.json()["error"]["message"]
    r = client.post(
        "/v1/feedback", json={"user_id": "a", "item_id": "n1", "event": "like"}, headers=AUTH
    )
    assert r.status_code == 200


BAD = [
    ("post", "/v1/feedback", {"item_id": "1", "event": "like"}, 422, "user_id: Field required"),
    ("post", "/v1/feedback", {"user_id": "a", "item_id": "1", "event": "love"}, 422, "event"),
    ("post", "/v1/feedback", {"user_id": "a", "item_id": "999", "event": "like"}, 404, "'999'"),
    ("post", "/v1/feedback", {"user_id": "a", "item_id": "1", "event": "rating"}, 400, "value"),
    ("post", "/v1/feedback", {"user_id": "", "item_id": "1", "event": "like"}, 422, "user_id"),
    ("post", "/v1/recommendations", {"user_id": "u0", "k": 0}, 422, "k: Input should be"),
    ("post", "/v1/recommendations", {"user_id": "u0", "k": "ten"}, 422, "k:"),
    ("post", "/v1/recommendations", {"usr_id": "u0"}, 422, "usr_id: Extra inputs"),
    ("post", "/v1/recommendations", {"history": ["nope"]}, 404, "'nope'"),
    ("post", "/v1/recommendations", {"filters": {"year_min": 2000, "year_max": 1990}}, 400, "year"),
    ("post", "/v1/recommendations", [1, 2], 422, "body"),
    ("post", "/v1/chat/completions", {"messages": []}, 422, "messages"),
    (
        "post",
        "/v1/chat/completions",
        {"messages": [{"role": "system", "content": "x"}]},
        422,
        "user",
    ),
    ("put", "/v1/items", {"items": [{"item_id": "x"}]}, 422, "items.0.title: Field required"),
    ("get", "/v1/nothing-here", None, 404, "Not Found"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), BAD)
def test_bad_payloads_get_4xx_with_a_message(client, method, path, body, status, message):
    r = client.request(method, path, json=body, headers=AUTH)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error["message"] and error["type"]


def test_malformed_json_is_a_422_not_a_500(client):
    headers = {**AUTH, "Content-Type": "application/json"}
    r = client.post("/v1/feedback", content=b'{"user_id": "a",', headers=headers)
    assert r.status_code == 422 and "JSON" in r.json()["error"]["message"]
    body = b'{"user_id": "a", "item_id": "1", "event": "rating", "value": Infinity}'
    r = client.post("/v1/feedback", content=body, headers=headers)
    assert r.status_code == 422 and "value" in r.json()["error"]["message"]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
fields = {
    "user_id": st.text(max_size=5) | json_values,
    "item_id": st.sampled_from(["1", "12", "x", ""]) | json_values,
    "event": st.sampled_from(["like", "rating", "dislike", "??"]) | json_values,
    "value": st.floats(allow_nan=False, allow_infinity=False) | json_values,
    "k": st.integers(-3, 200) | json_values,
    "history": st.lists(st.sampled_from(["1", "2", "zz"]), max_size=3) | json_values,
    "filters": st.fixed_dictionaries(
        {}, optional={"year_min": st.integers(1900, 2100), "year_max": st.integers(1900, 2100)}
    )
    | json_values,
    "explain": st.just(False),
}
payloads = st.fixed_dictionaries({}, optional=fields) | json_values


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=payloads, path=st.sampled_from(["/v1/feedback", "/v1/recommendations", "/v1/items"]))
def test_no_payload_gives_a_500(client, body, path):
    method = "put" if path == "/v1/items" else "post"
    r = client.request(method, path, json=body, headers=AUTH)
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert r.json()["error"]["message"]


item_fields = {
    "item_id": st.sampled_from(["1", "n1", "n2", "", " "]) | json_values,
    "title": st.text(max_size=12) | json_values,
    "description": st.text(max_size=20) | json_values,
    "attributes": st.fixed_dictionaries(
        {}, optional={"genres": st.lists(st.text(max_size=5), max_size=2), "year": st.integers()}
    )
    | json_values,
}
plausible_item = st.fixed_dictionaries(  # often valid: new ids, an existing id, odd titles
    {
        "item_id": st.sampled_from(["1", "n1", "n2", "n3"]),
        "title": st.text(min_size=1, max_size=12),
    },
    optional={
        "description": st.text(max_size=20),
        "attributes": st.fixed_dictionaries(
            {}, optional={"genres": st.lists(st.text(max_size=5), max_size=2)}
        ),
    },
)
items_payloads = (
    st.fixed_dictionaries({"items": st.lists(plausible_item, min_size=1, max_size=3)})
    | st.fixed_dictionaries({"items": st.lists(st.fixed_dictionaries({}, optional=item_fields))})
    | st.fixed_dictionaries({}, optional={"items": json_values})
    | json_values
)


@pytest.fixture
def own_client(saved, tmp_path):
    """A client over a copy of the saved model: accepted upserts must not reach other tests."""
    import shutil

    folder, cache = saved
    shutil.copytree(folder, tmp_path / "model")
    model = Recommender.load(
        tmp_path / "model", encoder=fake_encoder(cache), feedback_path=tmp_path / "fb.sqlite3"
    )
    with TestClient(create_app(model, api_key=KEY), raise_server_exceptions=False) as c:
        yield c, model


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=items_payloads)
def test_no_item_upsert_gives_a_500_or_loses_the_catalogue(own_client, body):
    client, model = own_client
    before = list(model.catalogue.items)
    r = client.put("/v1/items", json=body, headers=AUTH)
    assert r.status_code < 500, r.text
    after = list(model.catalogue.items)
    assert after[: len(before)] == before  # nothing stored is changed or lost
    if r.status_code >= 400:
        assert r.json()["error"]["message"] and after == before
    else:
        assert len(after) == r.json()["n_items"] == client.get("/healthz").json()["n_items"]


def test_chat_completions_answer_in_openai_shape(client):
    body = {
        "model": "hyrec",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "something fun"}]}],
        "user": "u0",
        "temperature": 0.2,
    }
    r = client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert r.status_code == 200
    out = r.json()
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    choice = out["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "stop"
    assert choice["message"]["content"].startswith("Try: ")
    assert len(out["hyrec"]["items"]) == 3


def test_langchain_and_openai_clients_talk_to_the_chat_endpoint(client):
    from langchain_openai import ChatOpenAI
    from openai import OpenAI

    chat = ChatOpenAI(
        base_url="http://testserver/v1", api_key=KEY, model="hyrec", http_client=client
    )
    answer = chat.invoke("something fun")
    assert isinstance(answer.content, str) and answer.content.startswith("Try: ")
    oa = OpenAI(base_url="http://testserver/v1", api_key=KEY, http_client=client)
    got = oa.chat.completions.create(model="hyrec", messages=[{"role": "user", "content": "hi"}])
    assert got.choices[0].message.content.startswith("Try: ")
    streamed = oa.chat.completions.create(
        model="hyrec", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text.startswith("Try: ")


def test_chat_streaming_is_server_sent_events(client):
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body, headers=AUTH) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(x) for x in lines[:-1]]
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"]["content"].startswith("Try: ")
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_openapi_docs_list_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/v1/recommendations", "/v1/chat/completions", "/v1/feedback", "/v1/items"):
        assert p in paths
    assert "/v1/users/{user_id}" in paths and "/healthz" in paths


def test_auth_can_be_off_only_on_loopback():
    assert check_auth_settings("0.0.0.0", "k", False) == "k"
    assert check_auth_settings("127.0.0.1", None, True) is None
    assert check_auth_settings("::1", None, True) is None
    with pytest.raises(ValueError, match="loopback"):
        check_auth_settings("0.0.0.0", None, True)
    with pytest.raises(ValueError, match="no API key"):
        check_auth_settings("127.0.0.1", None, False)
    assert is_loopback("localhost") and not is_loopback("example.com")


# ---- a real server process ----------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, port: int, *extra: str, env: dict | None = None):
    cmd = [sys.executable, "-m", "agent.cli.serve", "--model-dir", str(model_dir)]
    cmd += ["--port", str(port), *extra]
    env = {**os.environ, "HYREC_API_KEY": KEY, **(env or {})}  # never a key on the command line
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not answer /healthz in 120 s")


def test_acknowledged_feedback_survives_sigkill_of_the_server(saved, tmp_path):
    folder, _ = saved
    model_dir = tmp_path / "model"
    subprocess.run(["cp", "-r", str(folder), str(model_dir)], check=True)
    port = free_port()
    proc = start_server(model_dir, port, "--no-llm")  # needs no encoder: feedback only
    acked: list[int] = []
    stop = threading.Event()
    lock = threading.Lock()

    def burst(worker: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=10) as c:
            i = 0
            while not stop.is_set():
                body = {"user_id": f"w{worker}", "item_id": str(i % 24), "event": "view"}
                try:
                    r = c.post("/v1/feedback", json=body)
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    with lock:
                        acked.append(r.json()["event_id"])
                i += 1

    threads = [threading.Thread(target=burst, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-burst
    proc.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) >= 200
    stored = set(event_ids(model_dir / "feedback.sqlite3"))
    assert set(acked) <= stored, f"{len(set(acked) - stored)} acknowledged events lost"
    proc = start_server(model_dir, port, "--no-llm")  # restarts on the same file
    try:
        health = httpx.get(f"http://127.0.0.1:{port}/healthz").json()
        assert health["feedback_events"] == len(stored) >= len(acked)
    finally:
        proc.send_signal(signal.SIGTERM)  # graceful: uvicorn runs the lifespan shutdown
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
    wal = model_dir / "feedback.sqlite3-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # the lifespan closed (checkpointed) it


@pytest.mark.integration
def test_chat_then_recommend_then_feedback_with_the_embedded_llm(saved, tmp_path):
    """The whole loop over HTTP with the packaged SmolLM2 behind llama.cpp (structure only)."""
    pytest.importorskip("llama_cpp")
    encoder = TextEncoder(TextEncoderConfig(cache_dir=tmp_path / "cache", show_progress=False))
    model_dir = build_model(tmp_path / "model", tmp_path / "cache", encoder=encoder)
    port = free_port()
    proc = start_server(model_dir, port, "--llm")
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, headers=AUTH, timeout=300) as c:
            assert c.get("/healthz").json()["llm"] is True
            chat = c.post(
                "/v1/chat/completions",
                json={
                    "messages": [{"role": "user", "content": "a beta story please"}],
                    "user": "e2e",
                },
            ).json()
            assert chat["object"] == "chat.completion"
            assert isinstance(chat["choices"][0]["message"]["content"], str)
            assert chat["choices"][0]["message"]["content"].strip()

            def recommend():
                r = c.post("/v1/recommendations", json={"user_id": "e2e", "k": 5})
                assert r.status_code == 200, r.text
                return r.json()

            before = recommend()
            assert len(before["items"]) == 5 and all(it["reason"] for it in before["items"])
            assert isinstance(before["fallbacks"], list)
            for item in ("12", "13", "14", "15", "16"):
                r = c.post(
                    "/v1/feedback", json={"user_id": "e2e", "item_id": item, "event": "like"}
                )
                assert r.status_code == 200
            after = recommend()
            assert after["profile"] is not None and after["profile"]["likes"] is not None
            ids = [it["item_id"] for it in after["items"]]
            assert ids != [it["item_id"] for it in before["items"]]
            assert not {"12", "13", "14", "15", "16"} & set(ids)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
