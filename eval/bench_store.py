"""Latency of :class:`retrieval.store.ItemStore` (embedded Chroma) on a synthetic catalogue.

Measures:

* ``sync`` of ``--items`` new items (random unit ``--dim``-d vectors; title, year, 1-3 of 18
  genres, a category) into an empty store, then a second ``sync`` of the same catalogue (all
  unchanged: only the stored hashes are read);
* reopening the store in a fresh process (ItemStore + count, imports excluded);
* ``--queries`` single-vector top-``--k`` queries, unfiltered and with ``Filter(genres_any=...)``
  on one genre, reported as p50/p99 milliseconds, with the recall of the exact (brute-force)
  top-``k`` that Chroma's approximate HNSW search achieves.

The load average is recorded, since other processes may share the CPU.

Usage: ``python -m eval.bench_store [--out eval/results]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from hyrec.data import Item
from hyrec.data.movielens import ML100K_GENRES
from retrieval.filters import Filter
from retrieval.store import ItemStore, StoreConfig

GENRES = ML100K_GENRES[1:]  # without "unknown"


def synthetic(n: int, dim: int, seed: int) -> tuple[list[Item], np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    items = []
    for i in range(n):
        genres = rng.choice(GENRES, size=int(rng.integers(1, 4)), replace=False).tolist()
        attrs = {"genres": genres, "year": int(rng.integers(1950, 2021)), "category": "film"}
        items.append(Item(f"item{i}", f"Synthetic film {i}", "", attrs))
    return items, vectors


def latency(
    store: ItemStore, queries: np.ndarray, k: int, where: Filter | None, exact: list[set[str]]
) -> dict[str, Any]:
    """Per-query latency, and recall of the true top ``k`` (``exact``) by Chroma's HNSW."""
    store.query(queries[:10], k, where=where)  # warm-up
    ms, returned, recall = [], [], []
    for q, truth in zip(queries, exact, strict=True):
        start = time.perf_counter()
        hits = store.query(q[None, :], k, where=where)
        ms.append(1000 * (time.perf_counter() - start))
        returned.append(len(hits[0]))
        recall.append(len(truth & {item_id for item_id, _ in hits[0]}) / len(truth))
    return {
        "queries": len(queries),
        "k": k,
        "filter": None if where is None else where.to_where(),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "mean_ms": round(float(np.mean(ms)), 2),
        "mean_returned": round(float(np.mean(returned)), 1),
        "recall_vs_exact": round(float(np.mean(recall)), 4),
    }


def exact_top(
    items: list[Item], vectors: np.ndarray, queries: np.ndarray, k: int, genre: str | None
) -> list[set[str]]:
    """The true top-``k`` ids per query by brute-force cosine (vectors are unit norm)."""
    keep = np.array([genre is None or genre in it.attributes["genres"] for it in items])
    ids = np.array([it.item_id for it in items])[keep]
    sims = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ vectors[keep].T
    top = np.argsort(-sims, axis=1)[:, :k]
    return [set(ids[row].tolist()) for row in top]


REOPEN = """
import sys, time
from pathlib import Path
import chromadb  # imported before the clock starts
from retrieval.store import ItemStore, StoreConfig
start = time.perf_counter()
store = ItemStore(StoreConfig(path=Path(sys.argv[1]), show_progress=False))
store.count()
print(time.perf_counter() - start)
"""


def reopen_in_new_process(path: Path) -> float:
    """Seconds to open the store and count it in a fresh process (imports excluded)."""
    done = subprocess.run(
        [sys.executable, "-c", REOPEN, str(path)], capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("eval/results"))
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--genre", default="Comedy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    items, vectors = synthetic(args.items, args.dim, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    with_genre = sum(args.genre in it.attributes["genres"] for it in items)
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory() as tmp:
        config = StoreConfig(path=Path(tmp) / "chroma", show_progress=False)
        start = time.perf_counter()
        store = ItemStore(config)
        open_s = time.perf_counter() - start
        start = time.perf_counter()
        added = store.sync(items, vectors)
        add_s = time.perf_counter() - start
        start = time.perf_counter()
        again = store.sync(items, vectors)
        resync_s = time.perf_counter() - start
        reopen_s = reopen_in_new_process(config.path)
        exact = exact_top(items, vectors, queries, args.k, None)
        exact_genre = exact_top(items, vectors, queries, args.k, args.genre)
        genre = Filter(genres_any=(args.genre,))
        results = {
            "unfiltered": latency(store, queries, args.k, None, exact),
            "genre_filter": latency(store, queries, args.k, genre, exact_genre),
        }
        size_mb = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file()) / 1e6
    report = {
        "items": args.items,
        "dim": args.dim,
        "seed": args.seed,
        "hnsw": {k: getattr(config, k) for k in ("ef_search", "ef_construction", "max_neighbors")},
        "items_with_filter_genre": with_genre,
        "open_seconds": round(open_s, 2),
        "sync_add": {
            "seconds": round(add_s, 2),
            "items_per_s": round(args.items / add_s, 1),
            "report": vars(added),
        },
        "sync_unchanged": {"seconds": round(resync_s, 2), "report": vars(again)},
        "reopen_seconds": round(reopen_s, 3),
        "disk_mb": round(size_mb, 1),
        "results": results,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "chromadb": version("chromadb"),
            "load_average_before": load_before,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
    }
    markdown = to_markdown(report, args.genre)
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "store_latency.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "store_latency.md").write_text(markdown + "\n")


def to_markdown(report: dict[str, Any], genre: str) -> str:
    add, resync = report["sync_add"], report["sync_unchanged"]
    lines = [
        "# Item store latency (embedded Chroma, CPU)",
        "",
        f"{report['items']:,} synthetic items, random unit {report['dim']}-d vectors; chromadb "
        f"{report['machine']['chromadb']}; {report['machine']['cpu_count']} CPUs shared with "
        f"other processes (load average {report['machine']['load_average_before']} before, "
        f"{report['machine']['load_average_at_end'][0]} after). HNSW settings (StoreConfig "
        f"defaults): {report['hnsw']}.",
        "",
        "| operation | result |",
        "|---|---|",
        f"| sync into an empty store ({add['report']['added']:,} added) | {add['seconds']:.1f} s "
        f"({add['items_per_s']:.0f} items/s) |",
        f"| sync again ({resync['report']['unchanged']:,} unchanged) | {resync['seconds']:.2f} s |",
        f"| reopen in a new process (ItemStore + count, imports excluded) "
        f"| {report['reopen_seconds']:.3f} s |",
        f"| size on disk | {report['disk_mb']} MB |",
        "",
        "| query | queries | k | p50 ms | p99 ms | mean ms | mean returned | recall vs exact |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {
        "unfiltered": "unfiltered",
        "genre_filter": f"genres_any=({genre!r},) ({report['items_with_filter_genre']:,} items)",
    }
    for key, label in labels.items():
        r = report["results"][key]
        lines.append(
            f"| {label} | {r['queries']} | {r['k']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
            f"| {r['mean_ms']:.1f} | {r['mean_returned']} | {r['recall_vs_exact']:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
