"""The report's plots end to end: one harness run with pop, itemknn and a cheap hybrid writes
ndcg.png, tradeoff.png and activity.png beside report.md, links them, and stores the numbers behind
them in metrics.json; ``python -m eval.plots`` re-draws them from that metrics.json alone."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from encoders.text import TextEncoder, TextEncoderConfig
from eval import harness, plots, tradeoff
from eval.harness import EvalConfig, run_eval
from hyrec.data import Dataset, History, Item
from retrieval.hybrid import HybridRecommender
from tests.conftest import cheap_hybrid
from tests.fakes import HashEmbedder
from tests.test_eval import write_ml100k

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("ndcg.png", "tradeoff.png", "activity.png")


def varied_checkerboard(n_users: int = 24, n_items: int = 24, seed: int = 0) -> Dataset:
    """``tests.conftest.checkerboard``'s two taste groups, but user u touches 4 + u % 6 items of
    their block (not 6 each), so history lengths differ and every activity tercile has users."""
    rng = np.random.default_rng(seed)
    half = n_items // 2
    items = [
        Item(str(i), f"item {i}", attributes={"genres": ["A" if i < half else "B"]})
        for i in range(n_items)
    ]
    events = []
    for u in range(n_users):
        block = np.arange(half) if u % 2 == 0 else np.arange(half, n_items)
        for t, i in enumerate(rng.permutation(block)[: 4 + u % 6]):
            events.append((f"u{u}", str(int(i)), 1000 + 10 * t, 4.0, ""))
    return Dataset.from_records("checkerboard", items, events)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One harness run (2 seeds, so the hybrid has real error bars), with an LLM
    ablation file already in the report folder, as in eval/results/ml-100k."""
    tmp = tmp_path_factory.mktemp("plots")
    folder = write_ml100k(varied_checkerboard(), tmp / "data" / "ml-100k")
    report_dir = tmp / "out" / "ml-100k"
    report_dir.mkdir(parents=True)
    ablation = {
        "llm": "scripted",
        "rows": {
            "head": {"ndcg@10": 0.30, "ild@10": 0.20, "users": 6},
            "llm": {"ndcg@10": 0.28, "ild@10": 0.25, "users": 6},
        },
    }
    (report_dir / "llm_ablation.json").write_text(json.dumps(ablation))
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(harness.MODELS, "hybrid", lambda: HybridRecommender(cheap_hybrid()))
        mp.setattr(
            harness,
            "TextEncoder",
            lambda config: TextEncoder(
                TextEncoderConfig(cache_dir=None, show_progress=False), model=HashEmbedder()
            ),
        )
        config = EvalConfig(
            models=("pop", "itemknn", "hybrid"), data_dir=str(folder), seeds=2, text_model="hash"
        )
        report = run_eval(config, tmp / "out")
    return report, report_dir


def test_the_three_plots_are_written_as_pngs_and_linked_from_the_report(run):
    report, folder = run
    text = (folder / "report.md").read_text()
    for name in FIGURES:
        path = folder / name
        width, height = png_size(path)
        assert width >= 500 and height >= 400, (name, width, height)
        assert path.stat().st_size > 10_000, name  # axes, bars and labels, not a blank canvas
        assert f"]({name})" in text, name
    assert "## Plots" in text and "| MMR λ=0.5 |" in text


def test_metrics_json_holds_the_sweep_with_the_head_as_its_lambda_one_point(run):
    report, folder = run
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["tradeoff"] == report["tradeoff"]
    t = saved["tradeoff"]
    assert (t["model"], t["seed"], t["window"], t["k"]) == ("hybrid", 0, 20, 10)
    assert [p["lambda"] for p in t["mmr"]] == pytest.approx([i / 10 for i in range(11)])
    by_lambda = {p["lambda"]: p for p in t["mmr"]}
    # λ = 1 is pure relevance: the head's own order, so the head's own numbers (known answer)
    assert by_lambda[1.0]["ndcg@10"] == pytest.approx(t["head"]["ndcg@10"], abs=1e-9)
    assert by_lambda[1.0]["ild@10"] == pytest.approx(t["head"]["ild@10"], abs=1e-9)
    # and the head is the seed-0 hybrid the harness evaluated, measured the same way
    seed0 = saved["models"]["hybrid"]["per_seed"][0]
    assert seed0["seed"] == 0 and "tradeoff" not in seed0
    assert t["head"]["ndcg@10"] == pytest.approx(seed0["ndcg@10"], abs=1e-5)
    assert t["head"]["ild@10"] == pytest.approx(seed0["ild@10"], abs=1e-5)
    assert t["users"] == seed0["users"]
    # more diversity weight never makes the lists less diverse at the ends of the sweep
    assert by_lambda[0.0]["ild@10"] >= by_lambda[1.0]["ild@10"]
    llm = t["llm"]
    assert (llm["ndcg@10"], llm["ild@10"], llm["users"]) == (0.28, 0.25, 6)
    assert llm["head"] == {"ndcg@10": 0.30, "ild@10": 0.20}


def test_metrics_json_holds_ndcg_by_activity_bucket_for_every_model(run):
    report, folder = run
    a = json.loads((folder / "metrics.json").read_text())["activity"]
    assert list(a["buckets"]) == ["short", "medium", "long"]  # leave-one-out: nobody is cold
    counts = [b["users"] for b in a["buckets"].values()]
    assert all(c > 0 for c in counts)
    assert sum(counts) == report["models"]["pop"]["users"] == 24
    assert set(a["ndcg@10"]) == {"pop", "itemknn", "hybrid"}
    assert set(a["ndcg@10_sd"]) == {"hybrid"}  # the only seeded model here
    for model, row in report["models"].items():
        by_bucket = a["ndcg@10"][model]
        # the buckets partition the users: their user-weighted mean is the model's NDCG@10
        weighted = sum(by_bucket[b] * n for b, n in zip(a["buckets"], counts, strict=True))
        assert weighted / sum(counts) == pytest.approx(row["ndcg@10"], abs=1e-4), model
    lo, hi = a["cuts"]
    assert a["history_length"]["min"] <= lo <= hi < a["history_length"]["max"]
    assert a["buckets"]["long"]["range"] == f"≥ {hi + 1} events"


def test_plots_redraws_from_metrics_json_and_names_what_needs_a_rerun(run, tmp_path, capsys):
    _, folder = run
    assert plots.main(["--report", str(folder), "--out", str(tmp_path / "again")]) == 0
    for name in FIGURES:
        png_size(tmp_path / "again" / name)
    old = json.loads((folder / "metrics.json").read_text())
    del old["tradeoff"], old["activity"]  # a metrics.json from before the plots
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.json").write_text(json.dumps(old))
    capsys.readouterr()
    assert plots.main(["--report", str(tmp_path / "old")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "old" / "ndcg.png").exists()
    assert not (tmp_path / "old" / "tradeoff.png").exists()
    assert "tradeoff: not drawn" in out and "hybrid among --models" in out
    assert "activity: not drawn" in out
    assert plots.main(["--report", str(tmp_path / "missing")]) == 2


def test_activity_buckets_are_terciles_of_history_length_with_cold_users_apart():
    lengths = [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    history = History(
        np.arange(len(lengths)), tuple(np.arange(n, dtype=np.int32) for n in lengths), 10
    )
    activity = tradeoff.activity_buckets(history)
    assert activity.cuts == (3, 6)  # terciles of the 9 warm lengths 1..9
    assert activity.bucket.tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    summary = tradeoff.activity_summary(activity, {})
    assert {b: v["users"] for b, v in summary["buckets"].items()} == {
        "cold": 2,
        "short": 3,
        "medium": 3,
        "long": 3,
    }
    assert [v["range"] for v in summary["buckets"].values()] == [
        "0 events",
        "1–3 events",
        "4–6 events",
        "≥ 7 events",
    ]


def test_mmr_reorders_only_the_scored_items_of_a_window_and_keeps_the_head_at_lambda_one():
    # items 0-2 share a vector; 8 items scored, the last 4 not (-inf: outside the candidates)
    vectors = np.eye(10, dtype=np.float32)[[0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]]
    window = np.arange(12)
    scores = np.array([8, 7, 6, 5, 4, 3, 2, 1, *[-np.inf] * 4], dtype=np.float32)
    assert tradeoff._mmr_top(window, scores, vectors, 1.0).tolist() == list(range(10))
    # λ=0: the twins of item 0 come last among the scored items, never after an unscored one
    diverse = [0, 3, 4, 5, 6, 7, 1, 2, 8, 9]
    assert tradeoff._mmr_top(window, scores, vectors, 0.0).tolist() == diverse
    truth = sp.csr_matrix(([1.0], ([0], [1])), shape=(1, 12))
    sweep = tradeoff.mmr_sweep(window[None], scores[None], truth, vectors, vectors, (0.0, 1.0))
    head, (div, same) = sweep["head"], sweep["mmr"]
    assert same == {"lambda": 1.0, **head}
    assert head["ndcg@10"] == pytest.approx(1 / np.log2(3), abs=1e-5)  # item 1 at rank 2
    assert div["ndcg@10"] == pytest.approx(1 / np.log2(8), abs=1e-5)  # at rank 7
    assert div["ild@10"] == head["ild@10"]  # the same ten items, in another order
