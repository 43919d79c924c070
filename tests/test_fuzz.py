"""Hypothesis fuzz of every endpoint: arbitrary JSON and field-shaped payloads never get a 500,
every 4xx carries a message, and nothing stored is lost (the catalogue only grows by what an
accepted upsert added; acknowledged feedback stays)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.api import Recommender
from agent.serve.app import create_app
from tests.test_api import build_model, fake_encoder

KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ids = st.one_of(st.text(max_size=12), st.sampled_from(["1", "3", "20", "u1", "a/b", ""]))
fields = {
    "/v1/recommendations": st.fixed_dictionaries(
        {},
        optional={
            "user_id": ids | json_values,
            "k": st.integers(-5, 500) | json_values,
            "history": st.lists(ids, max_size=3) | json_values,
            "context": st.text(max_size=60) | json_values,
            "query": st.text(max_size=60),
            "filters": st.fixed_dictionaries(
                {},
                optional={
                    "genres_any": st.lists(st.text(max_size=6), max_size=2),
                    "year_min": st.integers(-(10**6), 10**6) | json_values,
                    "year_max": st.integers(-(10**6), 10**6),
                    "exclude_ids": st.lists(ids, max_size=3),
                },
            )
            | json_values,
            "explain": st.booleans() | json_values,
        },
    ),
    "/v1/feedback": st.fixed_dictionaries(
        {},
        optional={
            "user_id": ids | json_values,
            "item_id": ids | json_values,
            "event": st.sampled_from(["like", "dislike", "rating", "view", "nope"]) | json_values,
            "value": st.floats(allow_nan=False, allow_infinity=False) | json_values,
            "event_id": st.text(max_size=10) | json_values,
        },
    ),
    "/v1/similar": st.fixed_dictionaries(
        {}, optional={"item_id": ids | json_values, "k": st.integers(-3, 300) | json_values}
    ),
    "/v1/users/forget": st.fixed_dictionaries({}, optional={"user_id": ids | json_values}),
    "/v1/chat/completions": st.fixed_dictionaries(
        {},
        optional={
            "messages": st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "role": st.sampled_from(["user", "assistant", "system", "x"]),
                        "content": st.text(max_size=80) | json_values,
                    },
                ),
                max_size=3,
            )
            | json_values,
            "user": ids | json_values,
            "stream": st.booleans() | json_values,
        },
    ),
}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    folder = build_model(root / "model", root / "cache")
    model = Recommender.load(folder, encoder=fake_encoder(root / "cache"))
    with TestClient(create_app(model, api_key=KEY), raise_server_exceptions=False) as c:
        c.recommender = model
        yield c


def check(r) -> None:
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert r.json()["error"]["message"]


@pytest.mark.parametrize("path", sorted(fields))
def test_no_endpoint_answers_a_500(client, path):
    @FUZZ
    @given(body=fields[path] | json_values)
    def run(body) -> None:
        before = client.recommender.store.count()
        check(client.post(path, json=body, headers=AUTH))
        if path != "/v1/users/forget":
            assert client.recommender.store.count() >= before  # nothing stored is lost

    run()


@FUZZ
@given(body=json_values, user=st.text(max_size=20))
def test_raw_bytes_paths_and_deletes_never_answer_a_500(client, body, user):
    check(client.put("/v1/items", json=body, headers=AUTH))
    check(client.request("DELETE", "/v1/users/" + quote(user, safe=""), headers=AUTH))
    check(client.post("/v1/feedback", content=str(body).encode(), headers=AUTH))
    check(client.get("/healthz"))
