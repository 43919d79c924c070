"""`hyrec recommend` on a tiny saved model: JSON shape, cold start, readable errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from agent.cli.main import app
from tests.test_api import build_model

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return build_model(root / "model", root / "cache")


def run(*args: str):
    return runner.invoke(app, ["recommend", *args])


def test_recommend_json_for_a_known_user(model_dir):
    result = run("--model-dir", str(model_dir), "--user", "u0", "-k", "5", "--no-llm", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["user_id"] == "u0" and body["cold_start"] is False
    assert len(body["items"]) == 5
    assert len({it["item_id"] for it in body["items"]}) == 5
    for it in body["items"]:
        assert set(it) == {"item_id", "title", "score", "sources", "reason"}
        assert it["sources"] and it["reason"]
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert any("--no-llm" in f for f in body["fallbacks"])


def test_unknown_user_gets_the_cold_start_path(model_dir):
    result = run("--model-dir", str(model_dir), "--user", "nobody", "-k", "3", "--no-llm", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["cold_start"] is True and len(body["items"]) == 3


def test_bad_input_is_a_readable_error(model_dir, tmp_path):
    bad_k = run("--model-dir", str(model_dir), "--user", "u0", "-k", "0", "--no-llm")
    assert bad_k.exit_code == 2 and "-k must be a positive" in bad_k.output
    missing = run("--model-dir", str(tmp_path / "nothing"), "--user", "u0", "--no-llm")
    assert missing.exit_code == 2 and "hybrid.json missing" in missing.output
