"""The eval harness end to end: CLI on a tiny dataset, and the real ML-100K numbers against
RecBole."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from eval.cli import app
from eval.harness import EvalConfig, run_eval
from eval.peer_check import recbole_pop_scores
from hyrec.data import leave_one_out, load_dataset
from hyrec.metrics import evaluate
from tests.conftest import checkerboard

runner = CliRunner()

# RecBole 1.2.1 on the same protocol (shared/peer/recbole_ml100k_results.json), test NDCG@10
RECBOLE_NDCG10 = {"Pop": 0.0354, "ItemKNN": 0.0629, "BPR": 0.0673}
RECBOLE_POP_HR10 = 0.0710


def write_ml100k(ds, folder: Path) -> Path:
    """Write a Dataset in MovieLens-100K's own file format."""
    folder.mkdir(parents=True)
    with (folder / "u.item").open("w", encoding="latin-1") as f:
        for it in ds.items:
            flags = ["0"] * 19
            flags[1 if "A" in it.attributes["genres"] else 5] = "1"
            f.write("|".join([it.item_id, it.title, "01-Jan-1995", "", "http://x", *flags]) + "\n")
    with (folder / "u.data").open("w") as f:
        inter = ds.interactions
        for u, i, t in zip(inter.user, inter.item, inter.timestamp, strict=True):
            f.write(f"{ds.user_ids[u]}\t{ds.items[i].item_id}\t4\t{t}\n")
    return folder


def test_cli_eval_writes_metrics_and_report(tmp_path):
    folder = write_ml100k(checkerboard(), tmp_path / "ml-100k")
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "eval",
            "--dataset",
            "ml-100k",
            "--data-dir",
            str(folder),
            "--models",
            "pop,itemknn",
            "--out",
            str(out),
            "--text-model",
            "none",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "ml-100k" / "metrics.json").read_text())
    assert set(report) >= {"protocol", "dataset", "seed", "models"}
    assert report["dataset"]["n_users"] == 20 and report["dataset"]["sha256"]
    for name in ("pop", "itemknn"):
        m = report["models"][name]
        for key in (
            "ndcg@10",
            "hr@10",
            "mrr@10",
            "ndcg@20",
            "hr@20",
            "coverage@10",
            "ild@10",
            "novelty@10",
            "fit_seconds",
            "eval_seconds",
        ):
            assert key in m, (name, key)
    assert report["models"]["itemknn"]["hr@10"] > report["models"]["pop"]["hr@10"]
    assert "| itemknn |" in (out / "ml-100k" / "report.md").read_text()


def test_cli_eval_rejects_unknown_model_and_bad_user_count(tmp_path):
    folder = write_ml100k(checkerboard(), tmp_path / "ml-100k")
    bad = runner.invoke(
        app, ["eval", "--data-dir", str(folder), "--models", "pop,nope", "--out", str(tmp_path)]
    )
    assert bad.exit_code == 2 and "unknown model(s) ['nope']" in bad.output
    bad = runner.invoke(
        app, ["eval", "--data-dir", str(folder), "--users", "0", "--out", str(tmp_path)]
    )
    assert bad.exit_code == 2 and "--users" in bad.output
    bad = runner.invoke(
        app, ["eval", "--data-dir", str(folder), "--models", "semantic", "--text-model", "none"]
    )
    assert bad.exit_code == 2 and "read item text" in bad.output


def test_user_sample_is_seeded(tmp_path):
    folder = write_ml100k(checkerboard(), tmp_path / "ml-100k")
    runs = [
        run_eval(
            EvalConfig(models=("pop",), data_dir=str(folder), users=7, text_model=None, seed=3)
        )
        for _ in range(2)
    ]
    metrics = [
        {k: v for k, v in r["models"]["pop"].items() if not k.endswith("_seconds")} for r in runs
    ]
    assert metrics[0]["users"] == 7 and metrics[0] == metrics[1]
    other = run_eval(
        EvalConfig(models=("pop",), data_dir=str(folder), users=7, text_model=None, seed=4)
    )
    assert other["protocol"]["users"] == "seeded sample of 7"


def test_seeded_models_report_the_mean_over_seeds_in_process_or_in_workers(tmp_path):
    folder = write_ml100k(checkerboard(), tmp_path / "ml-100k")
    config = EvalConfig(models=("pop", "bpr"), data_dir=str(folder), text_model=None, seeds=3)
    serial = run_eval(config, tmp_path / "serial")
    bpr = serial["models"]["bpr"]
    assert bpr["seeds"] == [0, 1, 2] and [f["seed"] for f in bpr["per_seed"]] == [0, 1, 2]
    per_seed = [f["ndcg@10"] for f in bpr["per_seed"]]
    assert len(set(per_seed)) > 1  # the seed reaches the model
    assert bpr["ndcg@10"] == pytest.approx(np.mean(per_seed), abs=1e-5)
    assert bpr["ndcg@10_sd"] == pytest.approx(np.std(per_seed, ddof=1), abs=1e-5)
    assert "per_seed" not in serial["models"]["pop"]  # no seed: fitted once
    lines = (tmp_path / "serial" / "ml-100k" / "report.md").read_text().splitlines()
    header = next(x for x in lines if x.startswith("| model |"))
    header = [c.strip() for c in header.strip("|").split("|")]
    row = [
        c.strip() for c in next(x for x in lines if x.startswith("| bpr |")).strip("|").split("|")
    ]
    assert row[header.index("seeds")] == "0, 1, 2"
    assert row[header.index("ndcg@10_sd")] == f"{bpr['ndcg@10_sd']:.4f}"
    assert sum(x.startswith("| bpr |") for x in lines) == 1 + 3  # the mean row + one per seed
    parallel = run_eval(replace(config, jobs=2))
    assert [f["ndcg@10"] for f in parallel["models"]["bpr"]["per_seed"]] == per_seed
    with pytest.raises(ValueError, match="seeds and jobs must be at least 1"):
        run_eval(replace(config, seeds=0))
    twice = run_eval(replace(config, models=("bpr", "bpr"), seeds=2))
    assert twice["models"]["bpr"]["seeds"] == [0, 1]


def test_cli_eval_rejects_zero_seeds(tmp_path):
    folder = write_ml100k(checkerboard(), tmp_path / "ml-100k")
    bad = runner.invoke(app, ["eval", "--data-dir", str(folder), "--seeds", "0"])
    assert bad.exit_code == 2 and "--seeds must be at least 1, got 0" in bad.output


@pytest.mark.integration
def test_ml100k_protocol_matches_recbole(ml100k_dir):
    """Our split + exclusion + metrics reproduce RecBole's Pop when fed RecBole's popularity counts,
    and our ItemKNN / BPR land within 15 % of RecBole's (or better)."""
    ds = load_dataset("ml-100k", ml100k_dir)
    split = leave_one_out(ds)
    test = split.task("test")
    runs = []
    for seed in range(3):
        s = recbole_pop_scores(split, np.random.default_rng(seed)).astype(np.float32)
        runs.append(evaluate(lambda h, s=s: np.broadcast_to(s, (len(h), len(s))), test))
    assert np.mean([r["ndcg@10"] for r in runs]) == pytest.approx(RECBOLE_NDCG10["Pop"], abs=0.003)
    assert np.mean([r["hr@10"] for r in runs]) == pytest.approx(RECBOLE_POP_HR10, abs=0.005)

    report = run_eval(EvalConfig(models=("itemknn", "bpr", "semantic"), data_dir=str(ml100k_dir)))
    assert report["models"]["itemknn"]["ndcg@10"] >= 0.85 * RECBOLE_NDCG10["ItemKNN"]
    assert report["models"]["bpr"]["ndcg@10"] >= 0.85 * RECBOLE_NDCG10["BPR"]
    assert report["dataset"]["n_interactions"] == 100_000
    assert report["protocol"]["ild_vectors"] == "item text embeddings"
    assert 0 < report["models"]["semantic"]["ild@10"] < 1


def test_demo_fits_once_then_shows_reasons_and_a_chat_answer(tmp_path):
    from agent.cli.main import app
    from agent.config import fit_profile

    folder = write_ml100k(checkerboard(), tmp_path / "ml-100k")
    args = ["demo", "--data-dir", str(folder), "--model-dir", str(tmp_path / "model")]
    args += ["--user", "u0", "-k", "3", "--no-llm", "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    shown = json.loads(first.stdout)  # --json: stdout is the JSON alone
    assert shown["user_id"] == "u0" and len(shown["items"]) == 3
    assert all(it["title"] and it["reason"] for it in shown["items"])
    assert shown["chat"]["user"] and shown["chat"]["assistant"]
    assert any("--no-llm" in f for f in shown["fallbacks"])
    # the quick profile by default, with each part's validation score beside the hybrid's
    assert shown["profile"] == "quick" and shown["llm"] is None
    scores = shown["valid_ndcg@10"]
    assert set(scores) == {*fit_profile("quick").hybrid.components, "hybrid"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    # progress off a terminal: plain timestamped lines on stderr, one per stage at least
    assert "with the quick profile" in first.stderr
    for stage in ("data", "text", "store", "sasrec", "als", "head", "save"):
        assert re.search(rf"^\[\s*[\d.]+ s\] {stage}: done in", first.stderr, re.M), stage
    saved = (tmp_path / "model" / "hybrid.json").stat().st_mtime_ns
    again = runner.invoke(app, args)  # reuses the saved model
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["items"] == shown["items"]
    assert json.loads(again.stdout)["valid_ndcg@10"] == scores
    assert "reusing the model" in again.stderr
    assert (tmp_path / "model" / "hybrid.json").stat().st_mtime_ns == saved


def test_hyrec_eval_runs_the_harness_as_its_own_process(tmp_path):
    """The CLI imports nothing of eval: `hyrec eval` forwards its arguments to `python -m eval`."""
    import subprocess
    import sys

    folder = write_ml100k(checkerboard(), tmp_path / "ml-100k")
    cmd = [
        sys.executable,
        "-m",
        "agent.cli.main",
        "eval",
        "--data-dir",
        str(folder),
        "--seeds",
        "0",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--seeds must be at least 1, got 0" in done.stdout
