"""The HTTP server: auth, typed answers, 4xx (never 500) for bad payloads, OpenAI-compatible chat
with the items as data, more like this, impressions, Prometheus metrics and the dashboard's data,
durability under SIGKILL, and (integration) the whole loop with the embedded LLM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from agent.api import Recommendation, Recommender
from agent.feedback import event_ids
from agent.llm import LLMTimeout
from agent.serve.app import create_app
from agent.serve.metrics import fallback_labels
from agent.serve.schemas import chat_items
from agent.serve.startup import check_auth_settings, is_loopback
from encoders.text import TextEncoder, TextEncoderConfig
from hyrec.data.snapshot import load_snapshot
from tests.fakes import ScriptedLLM
from tests.test_api import CHEAP, block, build_model, fake_encoder

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
        c.recommender = model
        yield c


def test_health_needs_no_key_and_gives_sizes_only_with_it(client):
    body = client.get("/healthz").json()
    assert body == {"status": "ok", "n_items": None, "n_users": None, "llm": False, "auth": True}
    body = client.get("/healthz", headers=AUTH).json()
    assert body == {"status": "ok", "n_items": 24, "n_users": 40, "llm": False, "auth": True}
    assert client.get("/readyz").json() == {"status": "ok", "store": "ok"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}])
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/v1/recommendations", {"user_id": "u0"}),
        ("post", "/v1/similar", {"item_id": "1"}),
        ("get", "/v1/dashboard", None),
        ("get", "/metrics", None),
    ],
)
def test_v1_needs_the_api_key(client, headers, method, path, body):
    r = client.request(method, path, json=body, headers=headers)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "API key" in r.json()["error"]["message"]


def test_recommendations_answer_typed_items(client):
    r = client.post("/v1/recommendations", json={"user_id": "u1", "k": 4}, headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["user_id"] == "u1" and len(body["items"]) == 4 and body["fallbacks"] == []
    fields = {"item_id", "title", "score", "sources", "contributions", "reason"}
    for it in body["items"]:
        assert set(it) == fields | {"year", "genres", "category"}
        assert it["sources"] and isinstance(it["reason"], str)
        assert it["year"] == 1990 + int(it["item_id"]) and it["genres"] == [block(it["item_id"])]
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
    assert client.recommender.store.count() == 4
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
    ("post", "/v1/similar", {}, 422, "item_id: Field required"),
    ("post", "/v1/similar", {"item_id": "999"}, 404, "'999'"),
    ("post", "/v1/similar", {"item_id": "1", "k": 0}, 422, "k: Input should be"),
    ("post", "/v1/similar", {"item_id": "1", "user": "a"}, 422, "user: Extra inputs"),
    ("post", "/v1/similar", {"item_id": "1", "user_id": ""}, 422, "user_id"),
    ("post", "/v1/similar", {"item_id": ["1"]}, 422, "item_id"),
    ("post", "/v1/similar", {"item_id": "1", "filters": {"year_min": "x"}}, 422, "year_min"),
    ("get", "/v1/dashboard?x=1", None, 200, ""),  # unknown query parameters are ignored
]


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), BAD)
def test_bad_payloads_get_4xx_with_a_message(client, method, path, body, status, message):
    r = client.request(method, path, json=body, headers=AUTH)
    assert r.status_code == status, r.text
    if status >= 400:
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
@given(
    body=payloads,
    path=st.sampled_from(["/v1/feedback", "/v1/recommendations", "/v1/items", "/v1/similar"]),
)
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
        sizes = client.get("/healthz", headers=AUTH).json()
        assert len(after) == r.json()["n_items"] == sizes["n_items"]


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
    assert len(chunks[-1]["hyrec"]["items"]) == 3 and "hyrec" not in chunks[0]


def test_docs_are_closed_by_default_and_behind_the_key_when_on(client, saved, tmp_path):
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 401  # no token: nothing said
        assert client.get(path, headers=AUTH).status_code == 404  # off unless asked for
    folder, cache = saved
    model = Recommender.load(
        folder, encoder=fake_encoder(cache), feedback_path=tmp_path / "docs.sqlite3"
    )
    with TestClient(create_app(model, api_key=KEY, docs=True)) as c:
        assert c.get("/openapi.json").status_code == 401
        paths = c.get("/openapi.json", headers=AUTH).json()["paths"]
        assert c.get("/docs", headers=AUTH).status_code == 200
    for p in ("/v1/recommendations", "/v1/chat/completions", "/v1/feedback", "/v1/items"):
        assert p in paths
    assert "/v1/users/{user_id}" in paths and "/v1/users/forget" in paths
    assert {"/v1/similar", "/v1/dashboard", "/metrics", "/healthz", "/readyz"} <= set(paths)


# ---- items as data, impressions, more like this ----------
def test_chat_items_carry_the_reason_their_line_gives_and_the_catalogue_facts(saved):
    ds = load_snapshot(saved[0] / "data")
    recs = tuple(
        Recommendation(i, f"Beta story {i}", 1.0, ("als",), {}, None) for i in ("13", "14")
    )
    text = "2 picks — B:\n1. Beta story 13 — B as asked\n2. Beta story 14 — close to X\nNote: n."
    items = chat_items(FakeReply(text, recs), ds)
    assert [it.reason for it in items] == ["B as asked", "close to X"]
    assert items[0].year == 2003 and items[0].genres == ["B"] and items[0].sources == ["als"]


def test_chat_answers_carry_items_as_data_and_count_as_impressions(client):
    body = {"messages": [{"role": "user", "content": "something fun"}], "user": "chatter"}
    out = client.post("/v1/chat/completions", json=body, headers=AUTH).json()
    items, store = out["hyrec"]["items"], client.recommender.store
    assert len(items) == 3 and out["hyrec"]["request_id"] == out["id"]
    for it in items:
        assert {"item_id", "title", "year", "genres", "reason", "sources"} <= set(it)
        assert it["year"] == 1990 + int(it["item_id"]) and it["genres"]
    shown = store.impressions("chatter")
    assert [i for i, _, _ in shown] == [it["item_id"] for it in items]
    assert {r for _, r, _ in shown} == {out["id"]}


def test_answers_to_signed_in_users_are_recorded_as_impressions(client):
    store = client.recommender.store
    body = {"user_id": "imp", "k": 4, "explain": False}
    rec = client.post("/v1/recommendations", json=body, headers=AUTH).json()
    shown = store.impressions("imp")
    assert [i for i, _, _ in shown] == [it["item_id"] for it in rec["items"]]
    assert {r for _, r, _ in shown} == {rec["request_id"]}
    client.post("/v1/recommendations", json={"k": 4, "explain": False}, headers=AUTH)
    assert store.count_impressions() == 4  # an anonymous answer shows nobody anything
    assert client.delete("/v1/users/imp", headers=AUTH).status_code == 200
    assert store.impressions("imp") == [] and store.count_impressions() == 0


def test_more_like_this_leaves_out_the_users_dislikes(client):
    def similar(**extra):
        r = client.post("/v1/similar", json={"item_id": "13", "k": 5, **extra}, headers=AUTH)
        assert r.status_code == 200, r.text
        return r.json()

    before = similar()
    ids = [it["item_id"] for it in before["items"]]
    assert before["item_id"] == "13" and before["title"] == "Beta story 13" and len(ids) == 5
    assert "13" not in ids and [block(i) for i in ids].count("B") >= 4
    assert all(it["reason"] and it["genres"] for it in before["items"])
    assert before["items"][0]["reason"] == "B like Beta story 13"
    r = client.post(
        "/v1/feedback", json={"user_id": "sim", "item_id": ids[0], "event": "dislike"}, headers=AUTH
    )
    assert r.status_code == 200
    after = similar(user_id="sim")
    assert ids[0] not in [it["item_id"] for it in after["items"]] and len(after["items"]) == 5
    shown = client.recommender.store.impressions("sim")
    assert [i for i, _, _ in shown] == [it["item_id"] for it in after["items"]]
    assert similar()["items"] == before["items"]  # anonymous: nothing left out


# ---- metrics and the dashboard ----------
def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def totals(family, *labels: str) -> dict:
    return {
        tuple(s.labels[k] for k in labels): s.value
        for s in family.samples
        if s.name.endswith("_total") or s.name == family.name
    }


def test_metrics_parse_as_prometheus_text_with_route_templates(client):
    client.post(
        "/v1/recommendations", json={"user_id": "m1", "k": 3, "explain": False}, headers=AUTH
    )
    for item, event in (("3", "like"), ("4", "dislike")):
        body = {"user_id": "m1", "item_id": item, "event": event}
        assert client.post("/v1/feedback", json=body, headers=AUTH).status_code == 200
    client.delete("/v1/users/secret-id-77", headers=AUTH)
    client.get("/v1/nothing-here", headers=AUTH)
    r = client.get("/metrics", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "secret-id-77" not in r.text and "m1" not in r.text  # never an id in a label
    got = families(r.text)
    requests = totals(got["hyrec_http_requests"], "method", "route", "status")
    assert requests[("POST", "/v1/recommendations", "200")] == 1
    assert requests[("POST", "/v1/feedback", "200")] == 2
    assert requests[("DELETE", "/v1/users/{user_id:path}", "200")] == 1
    assert requests[("GET", "unmatched", "404")] == 1
    latency = got["hyrec_http_request_duration_seconds"].samples
    count = [
        s for s in latency if s.name.endswith("_count") and s.labels["route"] == "/v1/feedback"
    ]
    assert count[0].value == 2
    assert totals(got["hyrec_feedback_events"], "event") == {("like",): 1, ("dislike",): 1}
    assert got["hyrec_catalogue_items"].samples[0].value == 24
    assert totals(got["hyrec_users"], "kind") == {("snapshot",): 40, ("feedback",): 1}
    assert got["hyrec_impressions"].samples[0].value == 3
    for name in ("hyrec_profile_cache_hits", "hyrec_profile_cache_misses", "hyrec_llm_up"):
        assert got[name].samples[0].value == 0  # no LLM, no profiles


def test_two_apps_in_one_process_keep_their_own_metrics(client, saved, tmp_path):
    folder, cache = saved
    model = Recommender.load(
        folder, encoder=fake_encoder(cache), feedback_path=tmp_path / "other.sqlite3"
    )
    with TestClient(create_app(model, api_key=KEY)) as c:
        c.get("/healthz")
        mine = families(c.get("/metrics", headers=AUTH).text)["hyrec_http_requests"]
    theirs = families(client.get("/metrics", headers=AUTH).text)["hyrec_http_requests"]
    assert totals(mine, "route")[("/healthz",)] == 1
    assert ("/healthz",) not in totals(theirs, "route")


@pytest.mark.parametrize(
    ("line", "labels"),
    [
        ("rerank: LLM timeout: slow; used mmr", ("rerank", "timeout")),
        ("profile: LLM unavailable (skipping calls); used the attribute-based profile",
         ("profile", "unavailable")),
        ("reasons: 3 LLM reason(s) failed ('reason' is not a sentence about the item: 'X'); "
         "used similarity-based reasons", ("reasons", "invalid")),
        ("llm tools: APIConnectionError: Connection refused; used rules",
         ("llm_tools", "unavailable")),
        ("reasons: 1 LLM reason(s) failed ('because' must be a history number 1..5, got 9); "
         "used similarity-based reasons", ("reasons", "invalid")),
        ("reasons: 2 LLM reason(s) failed (this request's LLM time budget is spent); used …",
         ("reasons", "timeout")),
        ("search: RuntimeError: boom", ("search", "error")),
        ("a new stage 123: whatever", ("other", "error")),
    ],
)  # fmt: skip
def test_fallback_lines_become_a_small_label_set(line, labels):
    assert fallback_labels(line) == labels


def test_llm_calls_and_fallbacks_are_counted_by_outcome_and_reason(saved, tmp_path):
    folder, cache = saved
    llm = ScriptedLLM([LLMTimeout("slow")], repeat_last=True)
    model = Recommender.load(
        folder, llm=llm, encoder=fake_encoder(cache), feedback_path=tmp_path / "fb.sqlite3"
    )
    with TestClient(create_app(model, api_key=KEY)) as c:
        recs = c.post("/v1/recommendations", json={"user_id": "u1", "k": 3}, headers=AUTH).json()
        got = families(c.get("/metrics", headers=AUTH).text)
        dash = c.get("/v1/dashboard", headers=AUTH).json()
    assert recs["fallbacks"] and llm.calls
    assert totals(got["hyrec_llm_calls"], "outcome") == {("timeout",): len(llm.calls)}
    fallbacks = totals(got["hyrec_fallbacks"], "stage", "reason")
    assert sum(fallbacks.values()) == len(recs["fallbacks"])
    assert {stage for stage, _ in fallbacks} <= {"profile", "rerank", "reasons"}
    assert ("rerank", "timeout") in fallbacks
    assert got["hyrec_profile_calls"].samples[0].value >= 1
    assert dash["llm"]["configured"] and dash["llm"]["model"] == "scripted"
    assert dash["llm"]["calls"] == {"timeout": len(llm.calls)} and dash["llm"]["p50"] is not None
    assert dash["llm"]["fallbacks"]["rerank"]["timeout"] >= 1


def test_dashboard_counts_feedback_impressions_and_names_the_model(client):
    body = {"user_id": "d1", "k": 4, "explain": False}
    ids = [
        it["item_id"]
        for it in client.post("/v1/recommendations", json=body, headers=AUTH).json()["items"]
    ]
    not_shown = next(str(i) for i in range(24) if str(i) not in ids)
    for item, event in ((ids[0], "like"), (ids[1], "dislike"), (not_shown, "like")):
        body = {"user_id": "d1", "item_id": item, "event": event}
        assert client.post("/v1/feedback", json=body, headers=AUTH).status_code == 200
    d = client.get("/v1/dashboard", headers=AUTH).json()
    assert d["catalogue"] == {"n_items": 24, "n_users": 40, "feedback_users": 1}
    assert d["feedback"]["total"] == 3 and d["feedback"]["by_event"] == {"like": 2, "dislike": 1}
    timeline = d["feedback"]["timeline"]
    assert timeline["bucket_seconds"] == 60 and set(timeline["kinds"]) == {"like", "dislike"}
    assert sum(sum(b["counts"].values()) for b in timeline["buckets"]) == 3
    online = d["online"]
    assert online["impressions"] == 4 and online["shown"] == 4
    assert (online["hits"], online["dislikes"]) == (1, 1) and online["hit_rate"] == 0.25
    m = d["model"]
    assert m["components"] == list(client.recommender.hybrid.config.components)
    assert m["head"] in ("lightgbm", "mlp") and 0 <= m["valid_ndcg@10"] <= 1
    assert m["dataset"]["name"] == "checkerboard" and m["dataset"]["n_items"] == 24
    assert m["dataset"]["sha256"] and m["fitted_at_source"] == "saved"
    assert datetime.fromisoformat(m["fitted_at"]).tzinfo is not None
    assert d["requests"]["POST /v1/recommendations"]["count"] == 1
    assert d["requests"]["POST /v1/recommendations"]["p99"] > 0
    assert d["llm"] == {**d["llm"], "configured": False, "reachable": False, "model": None}


def test_old_model_folders_get_their_file_time_and_a_resave_keeps_the_fit_date(saved, tmp_path):
    folder, cache = saved
    shutil.copytree(folder, tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "hybrid.json").read_text())
    fitted = meta["fit_report"].pop("fitted_at")
    (tmp_path / "old" / "hybrid.json").write_text(json.dumps(meta))
    model = Recommender.load(tmp_path / "old", encoder=fake_encoder(cache))
    with TestClient(create_app(model, api_key=KEY)) as c:
        m = c.get("/v1/dashboard", headers=AUTH).json()["model"]
    assert m["fitted_at_source"] == "file time" and m["fitted_at"]
    again = Recommender.load(folder, encoder=fake_encoder(cache), feedback_path=tmp_path / "f.db")
    again.save(tmp_path / "resaved")
    again.close()
    meta = json.loads((tmp_path / "resaved" / "hybrid.json").read_text())
    assert meta["fit_report"]["fitted_at"] == fitted


def test_without_auth_on_loopback_the_page_and_its_calls_just_work(saved, tmp_path):
    folder, cache = saved
    model = Recommender.load(folder, encoder=fake_encoder(cache), feedback_path=tmp_path / "f.db")
    with TestClient(create_app(model, api_key=None)) as c:
        assert c.get("/healthz").json()["auth"] is False  # so the page asks for no key
        assert c.get("/").status_code == 200
        assert c.get("/v1/dashboard").status_code == 200 and c.get("/metrics").status_code == 200


def test_pages_load_without_a_key_under_a_strict_content_policy(client):
    for path in ("/", "/dashboard"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        policy = r.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    page = client.get("/").text + client.get("/static/app.js").text
    for hook in ("chat-input", "chat-send", "chat-message", "rec-card", "rec-title", "rec-reason",
                 "rec-like", "rec-dislike", "rec-more", "user-id", "user-load", "feedback-saved",
                 "api-key"):  # fmt: skip
        assert f'"{hook}"' in page or f"={hook}]" in page, hook
    for name in ("api.js", "app.js", "dashboard.js", "style.css", "favicon.svg"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and "cdn" not in r.text.lower()


def test_auth_can_be_off_only_on_loopback():
    assert check_auth_settings("0.0.0.0", "k", False) == "k"
    assert check_auth_settings("127.0.0.1", None, True) is None
    assert check_auth_settings("::1", None, True) is None
    with pytest.raises(ValueError, match="loopback"):
        check_auth_settings("0.0.0.0", None, True)
    with pytest.raises(ValueError, match="no API key"):
        check_auth_settings("127.0.0.1", None, False)
    assert is_loopback("localhost") and not is_loopback("example.com")


def test_the_item_store_process_setting(tmp_path):
    from agent.serve.startup import StoreSettings

    assert StoreSettings.resolve(environ={}).chroma_process is True  # the serve default
    config = tmp_path / "config.toml"
    config.write_text("[chroma]\nprocess = false\n")
    env = {"HYREC_CONFIG": str(config)}
    assert StoreSettings.resolve(environ=env).chroma_process is False
    assert StoreSettings.resolve(environ={**env, "HYREC_CHROMA_PROCESS": "1"}).chroma_process
    assert not StoreSettings.resolve(environ={"HYREC_CHROMA_PROCESS": "0"}).chroma_process
    config.write_text('[chroma]\nprocess = "maybe"\n')
    with pytest.raises(ValueError, match="true or false"):
        StoreSettings.resolve(environ=env)


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


def store_children(pid: int) -> list[int]:
    """The item store processes (retrieval.store's child) started by process ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in "ZX" and b"retrieval.store" in cmdline:
            found.append(int(stat.parent.name))
    return found


def gone(pid: int, wait: float = 30.0) -> bool:
    """Whether process ``pid`` exits within ``wait`` seconds (a zombie counts as gone)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def test_what_a_sigkilled_server_acknowledged_survives_it(saved, tmp_path):
    """Eight clients send feedback and one upserts an item; the server is SIGKILLed mid-burst.
    Every acknowledged event is in the feedback database, the upserted item is in chromadb
    (durable, queryable: the embedded item store runs in a child process by default, which exits
    with the server), and the restarted server (here with HYREC_CHROMA_PROCESS=0: the store in
    the server's process) counts every stored event and serves the item again. A SIGTERM then
    shuts it down gracefully, checkpointing the database."""
    from retrieval.store import ItemStore, StoreConfig
    from tests.servers import start_serve

    folder, cache = saved
    model_dir = tmp_path / "model"
    shutil.copytree(folder, model_dir)
    server = start_serve(model_dir, cache, tmp_path / "serve.log", "--no-llm", key=KEY)
    acked: list[int] = []
    stop = threading.Event()
    lock = threading.Lock()

    def burst(worker: int) -> None:
        with httpx.Client(base_url=server.base, headers=AUTH, timeout=10) as c:
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
    try:
        children = store_children(server.proc.pid)
        assert len(children) == 1, server.text()
        for t in threads:
            t.start()
        item = {"item_id": "fresh-1", "title": "gamma story, brand new", "description": "new"}
        r = httpx.put(f"{server.base}/v1/items", json={"items": [item]}, headers=AUTH, timeout=30)
        assert r.status_code == 200 and r.json()["upserted"] == 1, r.text
        deadline = time.monotonic() + 60
        while len(acked) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.proc.kill()  # mid-burst
        server.proc.wait()
        stop.set()
        for t in threads:
            t.join()
    assert len(acked) >= 200
    stored = set(event_ids(model_dir / "feedback.sqlite3"))
    assert set(acked) <= stored, f"{len(set(acked) - stored)} acknowledged events lost"
    assert gone(children[0]), "the store's child outlived the SIGKILLed server"
    store = ItemStore(StoreConfig(path=model_dir / "chroma", show_progress=False))
    vector = store.get_embeddings(["fresh-1"])  # KeyError if the upsert was not durable
    assert store.query(vector, 1)[0].ids[0] == "fresh-1"
    del store
    env = {"HYREC_CHROMA_PROCESS": "0"}
    server = start_serve(model_dir, cache, tmp_path / "again.log", "--no-llm", key=KEY, env=env)
    try:
        assert store_children(server.proc.pid) == []
        health = httpx.get(f"{server.base}/healthz", headers=AUTH).json()
        assert health["n_items"] == 25  # the upsert, replayed from the feedback store
        r = httpx.post(f"{server.base}/v1/similar", json={"item_id": "fresh-1"}, headers=AUTH)
        assert r.status_code == 200, r.text
        board = httpx.get(f"{server.base}/v1/dashboard", headers=AUTH).json()
        assert board["feedback"]["total"] == len(stored) >= len(acked)
    finally:
        assert server.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
    wal = model_dir / "feedback.sqlite3-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # the lifespan closed (checkpointed) it


@pytest.mark.integration
def test_chat_then_recommend_then_feedback_with_the_embedded_llm(saved, tmp_path):
    """The whole loop over HTTP with the packaged SmolLM2 behind llama.cpp (structure only).
    Each request may spend 4 s on the LLM, not 30: a stage that runs out falls back, and the
    loop is the same."""
    pytest.importorskip("llama_cpp")
    encoder = TextEncoder(TextEncoderConfig(cache_dir=tmp_path / "cache", show_progress=False))
    config = replace(CHEAP, llm_budget=4.0)
    model_dir = build_model(tmp_path / "model", tmp_path / "cache", encoder=encoder, config=config)
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


def test_a_recommendation_that_finds_every_thread_busy_is_shed_with_a_503(saved, tmp_path):
    """One thread, held 2 s by a request whose LLM is slow: the next request waits at most
    queue_wait for it, then gets 503 overloaded with Retry-After; feedback is not affected."""
    folder, cache = saved
    slow = ScriptedLLM(["{}"], delay=2.0, repeat_last=True)
    model = Recommender.load(
        folder, llm=slow, encoder=fake_encoder(cache), feedback_path=tmp_path / "fb.sqlite3"
    )
    app = create_app(model, api_key=KEY, threads=1, queue_wait=0.3)
    with TestClient(app, raise_server_exceptions=False) as c:
        body = {"user_id": "u1", "k": 3}
        first = threading.Thread(target=c.post, args=("/v1/recommendations",),
                                 kwargs={"json": body, "headers": AUTH})  # fmt: skip
        first.start()
        end = time.monotonic() + 5
        while not slow.calls and time.monotonic() < end:
            time.sleep(0.01)
        t0 = time.perf_counter()
        r = c.post("/v1/recommendations", json={"user_id": "u2", "k": 3}, headers=AUTH)
        assert r.status_code == 503 and time.perf_counter() - t0 < 1.5
        assert r.json()["error"]["type"] == "overloaded" and r.headers["Retry-After"] == "1"
        assert "queue-wait" in r.json()["error"]["message"]
        fb = c.post("/v1/feedback", json={"user_id": "u3", "item_id": "1", "event": "like"},
                    headers=AUTH)  # fmt: skip
        assert fb.status_code == 200
        slow.release()
        first.join()
    with pytest.raises(ValueError, match="queue_wait"):
        create_app(model, api_key=KEY, queue_wait=0)
