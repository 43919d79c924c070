"""`hyrec batch`: rows equal the serving path, resumable and idempotent output, failures recorded,
LLM calls that overlap, the local and Ray engines agree, a SIGKILLed job restarted writes each
user exactly once, and the ray.data.llm (vLLM) path with a fake processor.

Ray's fixed costs are large on a 2-core machine: one in-process cluster for the session
(``ray.init(num_cpus=2)``) and few Ray tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from agent.api import Recommender
from agent.batch import BatchConfig, BatchOutput, OutputMismatch, read_rows, run_batch
from agent.batch.jobs import recommend_row
from agent.llm import LLMUnavailable
from agent.llm.settings import LLMSettings
from eval.scripted_llm import answer_for, make_handler
from tests.fakes import ScriptedLLM
from tests.test_api import build_model, fake_encoder

PROFILE = json.dumps(
    {
        "likes": ["alpha stories"],
        "dislikes": [],
        "recent_shift": "",
        "constraints": [],
        "summary": "Likes alpha stories.",
    }
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("batch")
    return build_model(root / "model", root / "cache"), root / "cache"


@pytest.fixture
def model_dir(saved, tmp_path) -> Path:
    """A fresh copy of the tiny model folder (its profile cache starts empty)."""
    return Path(shutil.copytree(saved[0], tmp_path / "model"))


def users_of(folder: Path) -> list[str]:
    with Recommender.load(folder) as model:
        return [str(u) for u in model.catalogue.user_ids]


def served_rows(folder: Path, cache: Path, k: int = 5) -> list[dict]:
    with Recommender.load(folder, encoder=fake_encoder(cache)) as model:
        users = [str(u) for u in model.catalogue.user_ids]
        return sorted(
            (recommend_row(u, model.recommend(u, k=k, explain=False)) for u in users),
            key=lambda r: r["user_id"],
        )


# ---- the output writer --------------------------------------------------------------------------
def test_jsonl_output_cuts_a_half_written_line_and_writes_each_key_once(tmp_path):
    out = tmp_path / "rows.jsonl"
    first = BatchOutput(out, {"job": "x"}, "user_id")
    first.write([{"user_id": "a", "v": 1}, {"user_id": "b", "v": 2}])
    with out.open("a") as f:
        f.write('{"user_id": "c", "v"')  # a kill in the middle of a write
    again = BatchOutput(out, {"job": "x"}, "user_id")
    assert again.done == {"a", "b"}
    with pytest.raises(ValueError, match="already written"):
        again.write([{"user_id": "a", "v": 9}])
    again.write([{"user_id": "c", "v": 3}])
    rows = read_rows(out, "user_id")
    assert [r["user_id"] for r in rows] == ["a", "b", "c"] and rows[2]["v"] == 3
    with pytest.raises(OutputMismatch, match="another job"):
        BatchOutput(out, {"job": "y"}, "user_id")


def test_parquet_output_resumes_from_whole_parts_only(tmp_path):
    out = tmp_path / "rows"
    first = BatchOutput(out, {"job": "x"}, "user_id")
    first.write([{"user_id": "a", "likes": ["x"]}])
    first.write([{"user_id": "b", "likes": []}])
    (out / ".part-000002.parquet.dead.tmp").write_bytes(b"PAR1 half")  # an interrupted part
    again = BatchOutput(out, {"job": "x"}, "user_id")
    assert again.done == {"a", "b"} and not list(out.glob("*.tmp"))
    again.write([{"user_id": "c", "likes": ["y", "z"]}])
    assert [r["user_id"] for r in read_rows(out, "user_id")] == ["a", "b", "c"]


# ---- the jobs on the local engine ---------------------------------------------------------------
def test_recommend_rows_are_the_served_lists_and_a_rerun_writes_nothing(saved, tmp_path):
    folder, cache = saved
    config = BatchConfig("recommend", folder, tmp_path / "recs.jsonl", k=5, batch_size=7)
    report = run_batch(config)
    assert report.written == report.total == len(users_of(folder)) and report.skipped == 0
    assert read_rows(config.out, "user_id") == served_rows(folder, cache)
    again = run_batch(config)
    assert again.written == 0 and again.skipped == report.total
    with pytest.raises(OutputMismatch, match="different k"):
        run_batch(BatchConfig("recommend", folder, config.out, k=3))


def test_llm_profiles_land_in_the_cache_serving_reads(model_dir, tmp_path):
    users = users_of(model_dir)[:6]
    config = BatchConfig("profiles", model_dir, tmp_path / "p.jsonl", users=tuple(users))
    llm = ScriptedLLM([PROFILE], repeat_last=True)
    report = run_batch(config, llm=llm)
    rows = read_rows(config.out, "user_id")
    assert report.statuses == {"ok": 6} and len(llm.calls) == 6
    assert {r["source"] for r in rows} == {"llm"} and all(r["cached"] for r in rows)
    assert rows[0]["likes"] == ["alpha stories"] and rows[0]["model"] == "scripted"
    # serving with the same model asks its LLM for no profile: every one is a cache hit
    dead = ScriptedLLM([LLMUnavailable("down")], repeat_last=True)
    with Recommender.load(model_dir, llm=dead) as served:
        got = served.recommend(users[0], k=3, explain=False)
        assert got.profile is not None and got.profile.summary == "Likes alpha stories."
        assert served.profiles.stats["cache_hits"] == 1
        assert served.profiles.stats["llm_calls"] == 0


def test_failed_rows_are_recorded_with_their_reason(model_dir, tmp_path):
    users = tuple(users_of(model_dir)[:3])
    replies = [RuntimeError("boom"), PROFILE, LLMUnavailable("server down")]
    config = BatchConfig("profiles", model_dir, tmp_path / "p.jsonl", users=users)
    report = run_batch(config, llm=ScriptedLLM(replies))
    assert report.statuses == {"error": 1, "fallback": 1, "ok": 1}
    rows = {r["user_id"]: r for r in read_rows(config.out)}
    assert rows[users[0]]["status"] == "error" and "RuntimeError: boom" in rows[users[0]]["reason"]
    assert rows[users[1]]["status"] == "ok"
    fell = rows[users[2]]
    assert fell["reason"].startswith("LLM unavailable") and fell["source"] == "fallback"
    assert fell["cached"] is False and fell["likes"]  # the attribute-based profile, not cached


class InFlight(ScriptedLLM):
    """Counts the calls running at the same time."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.now = self.most = 0
        self._count = threading.Lock()

    def complete(self, messages, **kwargs):
        with self._count:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            return super().complete(messages, **kwargs)
        finally:
            with self._count:
                self.now -= 1


def test_local_concurrency_overlaps_the_llm_calls_of_a_batch(model_dir, tmp_path):
    users = tuple(users_of(model_dir)[:8])
    config = BatchConfig(
        "profiles", model_dir, tmp_path / "p.jsonl", users=users, concurrency=4, batch_size=8
    )
    llm = InFlight([PROFILE], repeat_last=True, delay=0.2)
    assert run_batch(config, llm=llm).statuses == {"ok": 8}
    assert llm.most == 4


def test_embed_items_gives_the_encoder_vectors_and_reads_a_new_catalogue(saved, tmp_path):
    folder, cache = saved
    encoder = fake_encoder(cache)
    config = BatchConfig("embed", folder, tmp_path / "items", batch_size=10)
    report = run_batch(config, encoder=encoder)
    rows = read_rows(config.out, "item_id")
    with Recommender.load(folder, encoder=encoder) as model:
        items = {it.item_id: it for it in model.catalogue.items}
    assert report.written == len(items) == len(rows)
    want = encoder.encode_items([items[r["item_id"]] for r in rows])
    np.testing.assert_array_equal(np.array([r["vector"] for r in rows], np.float32), want)
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps({"item_id": "n1", "title": "Gamma story"}) + "\n")
    fresh = BatchConfig("embed", folder, tmp_path / "new-vectors.jsonl", items_file=new)
    run_batch(fresh, encoder=encoder)
    (row,) = read_rows(fresh.out)
    assert row["item_id"] == "n1" and len(row["vector"]) == want.shape[1]


def test_unknown_users_and_a_missing_ray_are_named(saved, tmp_path, monkeypatch):
    folder, _ = saved
    with pytest.raises(ValueError, match="does not know"):
        run_batch(BatchConfig("profiles", folder, tmp_path / "p.jsonl", users=("nobody",)))
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'hyrec\[ray\]'"):
        run_batch(BatchConfig("recommend", folder, tmp_path / "r.jsonl", engine="ray"))


# ---- a scripted OpenAI-compatible server, counting the calls in flight --------------------------
class CountingServer:
    def __init__(self, delay: float) -> None:
        base = make_handler(delay)
        self.now = self.most = self.calls = 0
        lock = threading.Lock()
        outer = self

        class Handler(base):
            def do_POST(self) -> None:  # noqa: N802
                with lock:
                    outer.now += 1
                    outer.calls += 1
                    outer.most = max(outer.most, outer.now)
                try:
                    super().do_POST()
                finally:
                    with lock:
                        outer.now -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted_server():
    server = CountingServer(delay=0.2)
    yield server
    server.close()


# ---- kill and restart ---------------------------------------------------------------------------
def test_a_killed_job_restarted_writes_each_user_exactly_once(model_dir, tmp_path, scripted_server):
    out = tmp_path / "profiles.jsonl"
    env = {
        **os.environ,
        "HYREC_LLM_BASE_URL": scripted_server.url,
        "HYREC_LLM_MODEL": "scripted",
        "HYREC_CONFIG": str(tmp_path / "none.toml"),
    }
    (tmp_path / "none.toml").write_text("")
    cmd = [sys.executable, "-m", "agent.cli.main", "batch", "profiles"]
    cmd += ["--model-dir", str(model_dir), "--out", str(out), "--batch-size", "2"]
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and job.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 4:
            break
        time.sleep(0.05)
    assert job.poll() is None, "the job ended before it could be killed"
    job.send_signal(signal.SIGKILL)
    job.wait()
    before = read_rows(out)
    assert 4 <= len(before) < len(users_of(model_dir))
    # the same command again, in this process (typer's runner): a restart needs no new process
    from typer.testing import CliRunner

    from agent.cli.main import app

    done = CliRunner().invoke(app, cmd[3:], env=env)
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout.strip().splitlines()[-1])
    rows = read_rows(out)
    ids = [r["user_id"] for r in rows]
    assert sorted(ids) == sorted(users_of(model_dir)) and len(ids) == len(set(ids))
    assert report["skipped"] == len(before) and report["written"] == len(ids) - len(before)
    assert {r["status"] for r in rows} == {"ok"} and {r["model"] for r in rows} == {"scripted"}


# ---- Ray: one in-process cluster for the session ------------------------------------------------
@pytest.fixture(scope="session")
def ray_cluster():
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_rows_equal_local_rows_and_resume_what_local_wrote(saved, tmp_path, ray_cluster):
    folder, cache = saved
    served = served_rows(folder, cache)
    out = tmp_path / "recs.jsonl"
    config = BatchConfig("recommend", folder, out, k=5, batch_size=6)
    half = BatchOutput(out, config.manifest(), "user_id")  # a local run that stopped half-way
    half.write(served[: len(served) // 2])
    ray_config = BatchConfig(
        "recommend", folder, out, k=5, batch_size=6, engine="ray", concurrency=2
    )
    report = run_batch(ray_config)
    assert report.skipped == len(served) // 2 and report.workers == 2
    assert read_rows(out, "user_id") == served  # each user once, the served lists


def test_ray_profiles_overlap_http_llm_calls_and_match_local(
    saved, tmp_path, ray_cluster, scripted_server
):
    users = tuple(users_of(saved[0])[:12])
    settings = LLMSettings(base_url=scripted_server.url, model="scripted", timeout=20)
    rows = {}
    for engine in ("local", "ray"):
        folder = Path(shutil.copytree(saved[0], tmp_path / engine / "model"))
        config = BatchConfig(
            "profiles",
            folder,
            tmp_path / engine / "p.parquet",
            engine=engine,
            users=users,
            concurrency=4,
            actors=1,  # one actor's four threads overlap (two actors: the test above)
            batch_size=6,
            llm=settings,
        )
        scripted_server.most = 0
        report = run_batch(config)
        assert report.statuses == {"ok": 12}
        assert scripted_server.most >= 2, f"{engine}: the LLM calls did not overlap"
        rows[engine] = read_rows(config.out, "user_id")
        assert len(list((folder / "profiles").glob("*.json"))) == 12  # the serving cache
    assert rows["local"] == rows["ray"]
    assert {r["summary"] for r in rows["ray"]} == {json.loads(answer_for_profile())["summary"]}


def answer_for_profile() -> str:
    from agent.stages.profile_types import PROFILE_SCHEMA

    return answer_for({"response_format": {"json_schema": {"schema": PROFILE_SCHEMA}}})


class FakeVLLMProcessor:
    """Stands in for ``ray.data.llm``'s vLLM processor: the same preprocess and postprocess around
    an engine that answers from a script (and fails one row, as should_continue_on_error does)."""

    def __init__(self, fail_prompt_with: str | None = None) -> None:
        self.fail = fail_prompt_with

    def __call__(self, ds):
        from agent.batch.vllm import ERROR_COLUMN, postprocess, preprocess

        fail = self.fail

        def engine(row: dict) -> dict:
            request = preprocess(row, max_tokens=160)
            assert request["sampling_params"]["temperature"] == 0.0
            assert "json" in request["sampling_params"]["structured_outputs"]
            assert request["messages"][0]["role"] == "system"
            if fail and any(fail in m["content"] for m in request["messages"]):
                return {**row, "answer": "", ERROR_COLUMN: "CUDA out of memory"}
            out = postprocess({**row, **request, "generated_text": PROFILE})
            return {**out, ERROR_COLUMN: None}

        return ds.map(engine)


def test_vllm_path_with_a_fake_processor_caches_what_serving_reads(
    model_dir, tmp_path, ray_cluster
):
    from agent.batch import VLLMConfig
    from agent.batch.vllm import run_vllm

    users = users_of(model_dir)[:4]
    config = BatchConfig(
        "profiles",
        model_dir,
        tmp_path / "p.jsonl",
        engine="ray",
        users=tuple(users),
        batch_size=2,
        actors=1,
        vllm=VLLMConfig("org/tiny-model"),
    )
    output = BatchOutput(config.out, config.manifest(), config.key_field)
    got = []
    run_vllm(config, users, output, got.extend, processor=FakeVLLMProcessor("Beta story"))
    rows = {r["user_id"]: r for r in read_rows(config.out)}
    assert sorted(rows) == sorted(users) and len(got) == 4
    ok = [r for r in rows.values() if r["status"] == "ok"]
    failed = [r for r in rows.values() if r["status"] == "fallback"]
    assert ok and failed  # even users watch Alpha items, odd users Beta items
    assert {r["model"] for r in ok} == {"org/tiny-model"} and all(r["cached"] for r in ok)
    assert all("CUDA out of memory" in r["reason"] for r in failed)
    user = ok[0]["user_id"]
    dead = ScriptedLLM([LLMUnavailable("down")], repeat_last=True, name="org/tiny-model")
    with Recommender.load(model_dir, llm=dead) as served:
        served.recommend(user, k=3, explain=False)
        assert served.profiles.stats["cache_hits"] == 1 and served.profiles.stats["llm_calls"] == 0


def test_the_vllm_processor_is_built_from_ray_data_llm_config():
    pytest.importorskip("ray.data.llm")
    from agent.batch import VLLMConfig
    from agent.batch.vllm import build_vllm_processor

    try:
        processor = build_vllm_processor(VLLMConfig("org/tiny-model", engines=2), 160)
    except ImportError as e:  # building may need vLLM itself, absent on a CPU host
        pytest.skip(f"vLLM is not installed: {e}")
    assert processor.config.model_source == "org/tiny-model"
    assert processor.config.should_continue_on_error is True
