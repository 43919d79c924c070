"""Untuned against tuned hybrid, side by side on the test split over several seeds: the report of
a ``hyrec tune`` run. It replaces the old per-scorer grid script; the search itself is ``hyrec
tune`` (:mod:`retrieval.tuning`, Optuna, validation split only), and this script reads the test
split only to report, after the choice is made.

For each model seed both hybrids are fitted exactly as the harness fits ``hybrid`` (leave-one-out,
components on the inner split, head early-stopped on validation) and ranked over the full
catalogue. A component whose settings the search left as they were is fitted once per seed and
given to both hybrids (``HybridRecommender.fit(fitted=...)``): the same seed and config give the
same model, so this only saves CPU.

Usage (the must-show run, docs/tuning.md)::

    hyrec tune --dataset ml-100k --budget 60m --out eval/results/ml-100k/tuning
    python -m eval.tune --tuning eval/results/ml-100k/tuning [--seeds 3]

writes ``comparison.json`` and ``report.md`` beside ``tuned.json``, ``tuning_history.json`` and
``tuning_history.png``, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from encoders.base import FitData
from encoders.text import TextEncoder, TextEncoderConfig
from hyrec.data import load_dataset
from hyrec.data.splits import Split, leave_one_out
from hyrec.metrics import evaluate
from hyrec.threads import limit_blas
from retrieval.hybrid import HybridConfig, HybridRecommender
from retrieval.tuned import TUNED_FILE, load_tuned
from retrieval.tuning import same_settings

log = logging.getLogger(__name__)

KEYS = ("ndcg@10", "hr@10", "mrr@10", "ndcg@20", "coverage@10")


def shared_components(a: HybridConfig, b: HybridConfig, seed: int) -> list[str]:
    """Components both configs build with the same settings at ``seed``."""
    return [
        n
        for n in a.components
        if n in b.components and same_settings(n, a.params.get(n), b.params.get(n), seed)
    ]


def compare(
    split: Split,
    embeddings: Any,
    configs: dict[str, HybridConfig],
    seeds: Sequence[int],
) -> dict[str, dict[str, Any]]:
    """Per config label, every seed's validation and test numbers and their mean and sd."""
    data = FitData(split.dataset, split.train, split.task("valid"), embeddings)
    test = split.task("test")
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in configs}
    (first, a), *rest = configs.items()
    for seed in seeds:
        t0 = time.perf_counter()
        base = HybridRecommender(replace(a, seed=seed)).fit(data)
        runs[first].append(_row(base, test, seed, time.perf_counter() - t0))
        for label, config in rest:
            reuse = shared_components(a, config, seed)
            fitted = {n: base.components[n] for n in reuse}
            t0 = time.perf_counter()
            model = HybridRecommender(replace(config, seed=seed)).fit(data, fitted=fitted)
            row = _row(model, test, seed, time.perf_counter() - t0)
            row["components_shared_with_" + first] = reuse
            runs[label].append(row)
            log.info("seed %d: %s %.4f, %s %.4f", seed, first, runs[first][-1]["ndcg@10"],
                     label, row["ndcg@10"])  # fmt: skip
    return {label: _summary(rows) for label, rows in runs.items()}


def _row(model: HybridRecommender, test: Any, seed: int, seconds: float) -> dict[str, Any]:
    report = model.fit_report
    metrics = evaluate(model.score, test, ks=(10, 20))
    return {
        "seed": seed,
        "valid_ndcg@10": report["ranker_valid_ndcg@10"][report["ranker"]],
        **{k: round(metrics[k], 5) for k in KEYS},
        "ranker": report["ranker"],
        "fit_seconds": round(seconds, 1),
        "component_valid_ndcg@10": report.get("component_valid_ndcg@10", {}),
    }


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("valid_ndcg@10", *KEYS, "fit_seconds"):
        values = [r[key] for r in rows]
        out[key] = round(statistics.fmean(values), 5)
        out[f"{key}_sd"] = round(statistics.stdev(values), 5) if len(values) > 1 else None
    out["per_seed"] = rows
    return out


def write(folder: Path, body: dict[str, Any]) -> Path:
    """``comparison.json`` and ``report.md`` in ``folder``; returns the report's path."""
    (folder / "comparison.json").write_text(json.dumps(body, indent=2) + "\n")
    search, rows = body["tuned_file"]["search"], body["models"]
    seeds = ", ".join(str(r["seed"]) for r in next(iter(rows.values()))["per_seed"])
    lines = [
        f"# {body['dataset']['name']}: the hybrid untuned and tuned (`hyrec tune`), side by side",
        "",
        f"Search: {search.get('budget')} budget, {search['seconds']} s of wall time; "
        f"{search['split']}. Both hybrids fitted as `hyrec eval` fits `hybrid` (leave-one-out, "
        f"full-catalogue ranking) from model seeds {seeds}; the test split is read only here, "
        f"after the choice. Target: tuned test NDCG@10 >= {body['target_ndcg@10']}: "
        + ("reached." if body["reached"] else "**not reached**."),
        "",
        "| hybrid | valid NDCG@10 | test NDCG@10 (mean ± sd) | per seed | HR@10 | MRR@10 | "
        "NDCG@20 | coverage@10 | fit s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        per_seed = ", ".join(f"{s['ndcg@10']:.4f}" for s in r["per_seed"])
        lines.append(
            f"| {label} | {r['valid_ndcg@10']:.4f} | {r['ndcg@10']:.4f} ± "
            f"{_f(r['ndcg@10_sd'])} | {per_seed} | {r['hr@10']:.4f} | {r['mrr@10']:.4f} | "
            f"{r['ndcg@20']:.4f} | {r['coverage@10']:.4f} | {r['fit_seconds']:.0f} |"
        )
    lines += [
        "",
        f"Load average (1 min) before / after: {body['load_average'][0]:.1f} / "
        f"{body['load_average'][1]:.1f} on {body['cpus']} CPUs (fit seconds are contended).",
        "",
        "## The search, per stage (validation NDCG@10; the first trial of each is the defaults)",
        "",
        "| stage | trials | defaults | best |",
        "|---|---|---|---|",
    ]
    for stage, info in body["tuned_file"]["best"].items():
        lines.append(
            f"| {stage} | {info['trials']} | {_f(info['default_valid_ndcg@10'])} | "
            f"{_f(info['best_valid_ndcg@10'])} |"
        )
    lines += _check_lines(body["tuned_file"]["best"].get("check"))
    chosen = body["tuned_file"]["hybrid"]
    lines += [
        "",
        "Chosen head: "
        + json.dumps({k: chosen[k] for k in ("per_source", "neighbours", "ranker")})
        + "; components:",
        "",
        "```json",
        json.dumps(chosen["params"], indent=2),
        "```",
        "",
        "![search history](tuning_history.png)",
        "",
    ]
    path = folder / "report.md"
    path.write_text("\n".join(lines))
    return path


def _check_lines(check: dict[str, Any] | None) -> list[str]:
    """The final check's outcome (``tuned.json`` ``best["check"]``; files from before it have
    none, and say so)."""
    if check is None:
        return ["", "No final check: this tuned.json predates it (version 1)."]
    lines = [
        "",
        f"Final check (validation NDCG@10): **{check['winner']}** kept at "
        f"{_f(check['best_valid_ndcg@10'])}; the tuned hybrid scored "
        f"{_f(check['tuned_valid_ndcg@10'])}, the defaults {_f(check['default_valid_ndcg@10'])}"
        + (f"; defaults kept for {', '.join(check['reverted'])}" if check["reverted"] else "")
        + (f"; no time to try {', '.join(check['not_tried'])}" if check["not_tried"] else "")
        + ".",
        "",
        "| hybrid compared | valid NDCG@10 | fitted by the check |",
        "|---|---|---|",
    ]
    for h in check["hybrids"]:
        lines.append(
            f"| {h['label']} | {_f(h['valid_ndcg@10'])} | {'yes' if h['fitted_here'] else 'no'} |"
        )
    return lines


def _f(v: Any) -> str:
    return "–" if v is None else f"{v:.4f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tuning", type=Path, required=True, help="the hyrec tune --out folder")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--target", type=float, default=0.125)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("encoders", "retrieval", "chromadb", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    limit_blas()
    tuned_file = json.loads((args.tuning / TUNED_FILE).read_text())
    configs = {"untuned": HybridConfig(), "tuned": load_tuned(args.tuning)}
    ds = load_dataset(args.dataset, args.data_dir)
    vectors = TextEncoder(TextEncoderConfig(show_progress=False)).encode_items(ds.items)
    load = [os.getloadavg()[0]]
    models = compare(leave_one_out(ds), vectors, configs, range(args.seeds))
    load.append(os.getloadavg()[0])
    body = {
        "dataset": ds.fingerprint(),
        "target_ndcg@10": args.target,
        "reached": models["tuned"]["ndcg@10"] >= args.target,
        "models": models,
        "load_average": load,
        "cpus": os.cpu_count(),
        "tuned_file": tuned_file,
    }
    path = write(args.tuning, body)
    for label, r in models.items():
        print(f"{label:8s} test ndcg@10 {r['ndcg@10']:.4f} ± {_f(r['ndcg@10_sd'])}  "
              f"valid {r['valid_ndcg@10']:.4f}")  # fmt: skip
    print(f"wrote {path} and comparison.json (target reached: {body['reached']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
