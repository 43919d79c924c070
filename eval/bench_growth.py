"""Upserts on a large catalogue: what one ``add_items`` costs and what the next request pays for it.

``python -m eval.bench_growth --catalog-size 100000`` builds the serving bench's model
(:func:`eval.bench_latency.synthetic_catalogue`, :func:`eval.bench_latency.fast_config`), then
alternates two ways of taking an upserted item, one item per round, on the same model:

* ``grow``: what :func:`retrieval.catalogue_growth.add_items` does now, the built ANN indexes take
  the new rows in place;
* ``rebuild``: what it did before 2026-12-02, the indexes are dropped after the upsert and the
  next request builds them again over the whole catalogue.

Per round: the upsert's own time, the first request after it and the one after that (single-user
``recommend_batch``, one BLAS thread). Writes ``eval/results/growth.json`` and ``growth.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from encoders.base import FitData
from eval.bench_latency import fast_config, synthetic_catalogue
from hyrec.data import Item, leave_one_out
from retrieval.hybrid import HybridRecommender

RESULTS = Path(__file__).parent / "results"


def run(catalog_size: int, rounds: int = 4, seed: int = 0) -> dict[str, Any]:
    n_users = int(np.clip(catalog_size // 10, 500, 20_000))
    ds, vectors = synthetic_catalogue(catalog_size, n_users=n_users, seed=seed)
    split = leave_one_out(ds)
    t0 = time.perf_counter()
    model = HybridRecommender(fast_config(item_store=False)).fit(
        FitData(ds, split.train, split.task("valid"), vectors)
    )
    build_s = time.perf_counter() - t0
    task = split.task("test")
    rng = np.random.default_rng(seed)
    histories = [task.history[np.array([r])] for r in rng.choice(len(task), 4 * rounds + 10)]
    samples: dict[str, list[dict[str, float]]] = {"grow": [], "rebuild": []}
    with threadpool_limits(1):
        for h in histories[:10]:  # warm-up: the first calls build the indexes
            model.recommend_batch(h, k=10)
        for r in range(rounds):
            for mode in ("grow", "rebuild"):
                v = rng.normal(size=(1, vectors.shape[1])).astype(np.float32)
                t = time.perf_counter()
                if mode == "rebuild":  # the old add_items: no index to grow, the next request
                    model.__dict__.pop("_spaces", None)  # builds them all
                model.add_items([Item(f"bench-{mode}-{r}", f"upserted item {r}")], v)
                add_ms = (time.perf_counter() - t) * 1000
                first, after = histories[10 + 2 * len(samples[mode]) :][:2]
                t = time.perf_counter()
                model.recommend_batch(first, k=10)
                first_ms = (time.perf_counter() - t) * 1000
                t = time.perf_counter()
                model.recommend_batch(after, k=10)
                next_ms = (time.perf_counter() - t) * 1000
                samples[mode].append(
                    {"upsert_ms": add_ms, "first_ms": first_ms, "next_ms": next_ms}
                )
    summary = {
        mode: {k: round(float(np.median([s[k] for s in rows])), 1) for k in rows[0]}
        for mode, rows in samples.items()
    }
    return {
        "items": catalog_size,
        "rounds": rounds,
        "build_seconds": round(build_s, 1),
        "median": summary,
        "samples": samples,
        "first_request_ratio_rebuild_over_grow": round(
            summary["rebuild"]["first_ms"] / summary["grow"]["first_ms"], 1
        ),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def table(row: dict[str, Any]) -> str:
    lines = [
        f"# Upserts on a {row['items']:,}-item catalogue ({row['rounds']} rounds each, medians)",
        "",
        "| upserted item | upsert ms | first request after ms | next request ms |",
        "|---|---|---|---|",
    ]
    for mode, label in (
        ("grow", "joins the built indexes (now)"),
        ("rebuild", "drops them (before)"),
    ):
        m = row["median"][mode]
        lines.append(f"| {label} | {m['upsert_ms']} | {m['first_ms']} | {m['next_ms']} |")
    lines += [
        "",
        f"First request after an upsert: rebuild / grow = "
        f"{row['first_request_ratio_rebuild_over_grow']}×. Model build {row['build_seconds']} s; "
        f"1-min load {row['load_average_1min']}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog-size", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS / "growth.json")
    args = parser.parse_args(argv)
    row = run(args.catalog_size, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table(row))
    print(table(row))


if __name__ == "__main__":
    main()
