"""Serving cost as the catalogue grows: single-user recommend() latency of the hybrid without any
LLM stage, the model's build time and peak memory, and candidate recall against exact scoring
(``hyrec bench latency``; ``python -m eval.bench_latency`` runs several sizes and writes
``eval/results/serving.json`` and ``serving.md``).

On a synthetic catalogue (:func:`eval.synthetic.generate`: power-law popularity, long-tail
histories; 384-d text vectors clustered by genre from :func:`eval.synthetic.synthetic_vectors`)
or on a real dataset, fit the default hybrid with few training epochs (latency does not depend on
how long the models trained), then time ``recommend_batch`` for one user at a time, as a serving
process would: plain requests, requests with a genre filter, requests with a query vector.

From ``HybridConfig.ann_min_items`` items up the hybrid proposes candidates from faiss IVF
indexes instead of scoring the whole catalogue (:mod:`retrieval.ann`, :mod:`retrieval.views`);
``recall`` is then, per dot-product source, the share of its exact top-N (unseen items, full
scoring) that the index proposed, over ``recall_requests`` requests. Below the threshold the
scoring is exact (recall 1).
Every size runs in its own process, so peak RSS (``ru_maxrss``) is that size's alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from agent.serve.warm import freeze_heap
from encoders.base import FitData, factor_vectors
from eval.synthetic import SyntheticConfig, generate, synthetic_vectors
from hyrec.data import leave_one_out, load_dataset
from retrieval.filters import Filter
from retrieval.hybrid import HybridConfig, HybridRecommender

RESULTS = Path(__file__).parent / "results"


def synthetic_catalogue(n_items: int, n_users: int, events_per_user: int = 40, seed: int = 0):
    """A synthetic dataset of ``n_items`` items and its text vectors (module doc)."""
    config = SyntheticConfig(
        interactions=n_users * events_per_user,
        users=n_users,
        items=n_items,
        seed=seed,
        description_words=0,  # the vectors are synthetic: no text to encode
    )
    ds = generate(config)
    return ds, synthetic_vectors(ds, seed=seed)


def fast_config(**changes: Any) -> HybridConfig:
    """The default hybrid with short training: inference cost is the same as a fully trained one
    (same components, candidate depth, features and head architecture). Validation is cut to 500
    users (it only early-stops, and each check scores the catalogue), the head learns from 2,000
    users' lists, and only the MLP head (the one every full ML-100K fit kept) is fitted."""
    settings: dict[str, Any] = {
        "params": {"sasrec": {"max_epochs": 1, "patience": 1}, "lightgcn": {"max_epochs": 2}},
        "valid_users": 500,
        "head_users": 2_000,
        "ranker": "mlp",
    }
    return HybridConfig(**(settings | changes))


def store_rate(ds, vectors, sample: int = 3_000) -> float:
    """Items per second the chromadb item store syncs, on the first ``sample`` items."""
    import tempfile

    from retrieval.store import ItemStore, StoreConfig

    with tempfile.TemporaryDirectory() as folder:
        store = ItemStore(StoreConfig(path=Path(folder), show_progress=False))
        n = min(sample, ds.n_items)
        t0 = time.perf_counter()
        store.sync(ds.items[:n], vectors[:n])
        seconds = time.perf_counter() - t0
    return n / seconds


def run(
    catalog_size: int = 10_000,
    requests: int = 1_000,
    dataset: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    recall_requests: int = 100,
    item_store: bool | None = None,
) -> dict[str, Any]:
    """Build the model, time ``requests`` single-user requests, measure candidate recall.

    ``item_store`` (default: only below 50,000 items) syncs the chromadb item store inside the
    build. No request reads it; above that size the bench measures its sync rate on 3,000 items
    and reports the whole catalogue's sync time as rate × items instead (it is linear)."""
    if item_store is None:
        item_store = catalog_size < 50_000
    t_data = time.perf_counter()
    if dataset is None:
        n_users = int(np.clip(catalog_size // 10, 500, 20_000))
        ds, vectors = synthetic_catalogue(catalog_size, n_users=n_users, seed=seed)
    else:
        from encoders.text import TextEncoder

        ds = load_dataset(dataset, data_dir)
        vectors = TextEncoder().encode_items(ds.items)
    data_s = time.perf_counter() - t_data
    split = leave_one_out(ds)
    t0 = time.perf_counter()
    model = HybridRecommender(fast_config(item_store=item_store)).fit(
        FitData(ds, split.train, split.task("valid"), vectors)
    )
    build_s = time.perf_counter() - t0
    store = {"synced_in_build": item_store}
    if not item_store:
        rate = store_rate(ds, vectors)
        store |= {"items_per_second": round(rate, 1), "projected_seconds": round(ds.n_items / rate)}
    rng = np.random.default_rng(seed)
    task = split.task("test")
    rows = rng.choice(len(task), size=requests, replace=True)
    histories = [task.history[np.array([r])] for r in rows]
    for h in histories[:20]:  # warm-up: first calls pay for lazy initialisation
        model.recommend_batch(h, k=10)
    # as `hyrec serve` does once its model is loaded and warm: the garbage collector no longer
    # walks the model's objects (side by side at 10^5 items: p99 9.6-9.8 ms frozen, 10.3-13.7 not)
    frozen = freeze_heap()
    genre = ds.items[0].genres
    flt = Filter(genres_any=genre[:1]) if genre else Filter(year_min=1990)
    queries = vectors[rng.integers(0, ds.n_items, size=requests)]
    load_before = os.getloadavg()[0]
    # One BLAS thread, as a serving process should run: a request's matrix-vector products are
    # too small to gain from threads, and on a busy 2-core machine threads made them ~10x slower.
    with threadpool_limits(1):
        plain = _summary(_timed(model, histories))
        filtered = _summary(_timed(model, histories, filter=flt))
        with_query = _summary(_timed(model, histories, queries=queries))
    load_after = os.getloadavg()[0]
    large = model.dataset.n_items >= model.config.ann_min_items
    return {
        "catalogue": ds.name,
        "items": ds.n_items,
        "users": ds.n_users,
        "interactions": len(ds.interactions),
        "requests": requests,
        "candidates": "ann (faiss IVF) + candidate-only features" if large else "exact scoring",
        **plain,
        "filtered": {"filter": repr(flt), **filtered},
        "with_query": with_query,
        "recall_vs_exact": _recall(model, histories[:recall_requests], queries) if large else 1.0,
        "load_average_1min": {"before": round(load_before, 2), "after": round(load_after, 2)},
        "candidates_per_request": round(
            float(
                np.mean([len(model.recommend_batch(h, k=ds.n_items)[0]) for h in histories[:50]])
            ),
            1,
        ),
        "depth": vars(model.config.depth(ds.n_items)),
        "data_seconds": round(data_s, 1),
        "build_seconds": round(build_s, 1),
        "build_stages_seconds": _stage_seconds(model.fit_report),
        "item_store": store,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "heap_frozen_objects": frozen,
        "cpus": os.cpu_count(),
        "blas_threads": 1,
        "components": list(model.config.components),
        "ranker": model.fit_report.get("ranker"),
        "llm": False,
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
    }


def _stage_seconds(report: dict[str, Any]) -> dict[str, float]:
    out = dict(report.get("component_seconds", {}))
    out.update({k: v for k, v in report.get("stage_seconds", {}).items()})
    return out


def _recall(model: HybridRecommender, histories: list, queries: np.ndarray) -> dict[str, float]:
    """Per dot-product source (and ``query``), mean |ANN top-N ∩ exact top-N| / N over requests:
    exact = the component's scores of the whole catalogue, seen items removed."""
    depth = model.config.depth(model.dataset.n_items)
    hits: dict[str, list[float]] = {}
    for row, h in enumerate(histories):
        seen = np.unique(h.sequences[0])
        for name, space in model._spaces.items():
            if name == "query":
                continue
            scorer = model.components[name]
            user = factor_vectors(scorer)[0](h)[0]
            n = depth.neighbours if name == "semantic" else depth.per_source
            if not user.any():
                continue
            found, _ = space.index.search(user, n, seen)
            hits.setdefault(name, []).append(_overlap(found, space.index.vectors @ user, seen, n))
        semantic = model._spaces.get("semantic") or model._spaces.get("query")
        if semantic is not None:
            q = queries[row]
            found, _ = semantic.index.search(q, depth.query_neighbours, seen)
            exact = semantic.index.vectors @ q
            hits.setdefault("query", []).append(
                _overlap(found, exact, seen, depth.query_neighbours)
            )
    return {name: round(float(np.mean(v)), 4) for name, v in hits.items()}


def _overlap(found: np.ndarray, exact_scores: np.ndarray, seen: np.ndarray, n: int) -> float:
    s = exact_scores.copy()
    s[seen] = -np.inf
    truth = np.argpartition(-s, n - 1)[:n]
    return len(np.intersect1d(found, truth)) / n


def _timed(
    model: HybridRecommender,
    histories: list,
    filter: Filter | None = None,
    queries: np.ndarray | None = None,
) -> np.ndarray:
    """Milliseconds of one single-user ``recommend_batch`` call per history."""
    times = []
    for row, h in enumerate(histories):
        q = None if queries is None else queries[row : row + 1]
        t = time.perf_counter()
        model.recommend_batch(h, k=10, filter=filter, query_vectors=q)
        times.append((time.perf_counter() - t) * 1000)
    return np.asarray(times)


def _summary(times: np.ndarray) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(times, 50)), 2),
        "p90_ms": round(float(np.percentile(times, 90)), 2),
        "p99_ms": round(float(np.percentile(times, 99)), 2),
        "max_ms": round(float(times.max()), 2),
    }


# ---- several sizes, one process each: eval/results/serving.{json,md} --------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--out", type=Path, default=RESULTS / "serving.json")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child: this size, JSON out
    args = parser.parse_args(argv)
    if args.one:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        print(json.dumps(run(args.one, args.requests)))
        return
    rows = json.loads(args.out.read_text()).get("rows", []) if args.out.exists() else []
    for size in args.sizes:
        uptime_before = os.getloadavg()
        t0 = time.perf_counter()
        # the same run() as `hyrec bench latency --catalog-size N`, with its fit progress logged
        cmd = [sys.executable, "-m", "eval.bench_latency", "--one", str(size)]
        done = subprocess.run(
            [*cmd, "--requests", str(args.requests)], stdout=subprocess.PIPE, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"bench latency at {size} items failed ({done.returncode})")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["bench_wall_seconds"] = round(time.perf_counter() - t0, 1)
        row["load_average_1min"]["run_start"] = round(uptime_before[0], 2)
        row["load_average_1min"]["run_end"] = round(os.getloadavg()[0], 2)
        rows = [r for r in rows if r.get("items") != row["items"]] + [row]
        rows.sort(key=lambda r: r["items"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(table(rows))
        print(table(rows))


def table(rows: list[dict[str, Any]]) -> str:
    """The serving table (markdown)."""
    lines = [
        "| items | users | candidates | build s | bench wall s | peak RSS MB | p50 ms | p99 ms "
        "| filtered p99 ms | query p99 ms | recall vs exact | load 1-min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        recall = r["recall_vs_exact"]
        if isinstance(recall, dict):
            recall = ", ".join(f"{k} {v:.3f}" for k, v in recall.items())
        load = r["load_average_1min"]
        load = f"{load.get('run_start', load['before'])}-{load.get('run_end', load['after'])}"
        lines.append(
            f"| {r['items']:,} | {r['users']:,} | {r['candidates']} | {r['build_seconds']} "
            f"| {r.get('bench_wall_seconds', '')} | {r['peak_rss_mb']} | {r['p50_ms']} "
            f"| {r['p99_ms']} | {r['filtered']['p99_ms']} | {r['with_query']['p99_ms']} "
            f"| {recall} | {load} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
