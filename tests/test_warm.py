"""The server's warm-up (:mod:`agent.serve.warm`): every step runs before the first request,
sends nothing to the LLM, stores nothing, and a step that fails only logs."""

from __future__ import annotations

import shutil
import subprocess
import sys

import httpx
import pytest

from agent.llm.openai_backend import OpenAICompatibleLLM
from agent.llm.settings import LLMSettings
from agent.serve.warm import warm_up
from tests.servers import ROOT
from tests.test_api import build_model, llm_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    return build_model(root / "model", root / "cache"), root / "cache"


def test_every_step_runs_and_nothing_is_sent_or_stored(saved, tmp_path, caplog):
    caplog.set_level("INFO", logger="agent.serve.warm")
    sent: list[httpx.Request] = []

    def llm_server(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(503)

    llm = OpenAICompatibleLLM(
        LLMSettings(base_url="http://llm.test/v1", model="m"),
        transport=httpx.MockTransport(llm_server),
    )
    with llm_model(saved, tmp_path, llm) as model:
        n_items, users = model.n_items, model.store.users()
        took = warm_up(model)
        assert model.n_items == n_items and model.store.users() == users
        assert model.store.count() == 0
    assert not sent  # the SDK was warmed on an in-memory transport, not on the LLM's
    assert took["text encoder"] is not None and took["scoring"] is not None
    assert took["LLM client"] is not None  # an OpenAI-compatible LLM: its SDK was warmed
    assert took["item store"] is not None  # the tiny model has its chromadb store
    assert "could not be warmed" not in caplog.text
    assert "warmed up: text encoder" in caplog.text


def test_a_step_that_fails_only_logs_and_the_others_still_run(caplog):
    caplog.set_level("WARNING", logger="agent.serve.warm")

    class Encoder:
        def __init__(self) -> None:
            self.seen: list[list[str]] = []

        def encode_queries(self, texts):
            self.seen.append(list(texts))
            raise OSError("model not on this machine")

    class Model:  # a recommender whose encoder cannot load and that has nothing else to warm
        encoder = Encoder()
        hybrid = type("Hybrid", (), {"store": None})()
        llm = None

    took = warm_up(Model())  # type: ignore[arg-type]
    assert Model.encoder.seen == [["warm-up"]]
    assert took["text encoder"] is None and "retried on first use" in caplog.text
    assert took["item store"] is None and took["LLM client"] is None
    assert took["scoring"] is None  # no catalogue on this stand-in: logged, not raised


def test_a_server_freezes_what_it_loaded_out_of_the_collector(saved, tmp_path):
    """``open_model``, as ``hyrec serve`` runs it, ends with the loaded model in the collector's
    permanent generation: a full collection afterwards walks only what was made since. In a
    process of its own (a frozen heap stays frozen)."""
    folder, _ = saved
    shutil.copytree(folder, tmp_path / "model")
    code = (
        "import gc, sys\n"
        "from pathlib import Path\n"
        "from agent.serve.startup import open_model\n"
        "r, handle, _ = open_model(Path(sys.argv[1]), use_llm=False)\n"
        "print(gc.get_freeze_count(), len(gc.get_objects()))\n"
        "r.close()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "model")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    frozen, tracked = map(int, out.stdout.split()[-2:])
    assert frozen > 50_000 and tracked < frozen / 10, (frozen, tracked)
