"""Side-by-side latency of two source trees of hyrec, in one run: each tree fits its hybrid once
on the same catalogue with the same settings (:mod:`eval.versions_worker`), then the trees take
turns timing single-user ``recommend_batch`` calls from their saved models (``--rounds`` turns of
``--requests`` each, old first in even rounds and new first in odd ones), so both see the same
machine load and neither always goes first. The table gives each tree's
p50/p99 over all its timed calls, the median of its per-round p50/p99, and the new/old ratios.

Usage::

    git worktree add /tmp/old <commit>
    python -m eval.bench_versions --old /tmp/old --rounds 6 --catalog-size 10000 \\
        --out eval/results/latency_versions.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

WORKER = Path(__file__).with_name("versions_worker.py")
KEYS = ("p50_ms", "p99_ms")


def run_tree(tree: Path, *args: str) -> dict:
    """The worker's JSON answer, run inside ``tree`` (its code on PYTHONPATH)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OPENBLAS_NUM_THREADS": "1"}
    cmd = [sys.executable, str(WORKER), *args]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {' '.join(args[:1])} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def percentiles(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", type=Path, required=True, help="the other source tree")
    p.add_argument("--new", type=Path, default=Path(__file__).resolve().parents[1])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--catalog-size", type=int, default=10_000)
    p.add_argument("--requests", type=int, default=500, help="timed calls per round")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    trees = {"old": a.old, "new": a.new}
    n = str(a.catalog_size)
    with tempfile.TemporaryDirectory(prefix="hyrec-versions-") as tmp:
        folders = {name: str(Path(tmp) / name) for name in trees}
        fits = {name: run_tree(tree, "fit", folders[name], n) for name, tree in trees.items()}
        rounds: dict[str, list[dict]] = {"old": [], "new": []}
        samples: dict[str, list[float]] = {"old": [], "new": []}
        loads = []
        for r in range(a.rounds):  # alternate, so both trees see the same machine load,
            order = list(trees.items())  # and swap who goes first each round (old-new, new-old)
            for name, tree in order if r % 2 == 0 else order[::-1]:
                loads.append(round(os.getloadavg()[0], 2))
                got = run_tree(tree, "time", folders[name], n, str(a.requests))
                samples[name] += got["ms"]
                rounds[name].append({**percentiles(got["ms"]), "candidates": got["candidates"]})
    table = {
        name: {
            **{k: round(v, 2) for k, v in percentiles(samples[name]).items()},
            **{
                f"median_round_{k}": round(statistics.median(r[k] for r in rounds[name]), 2)
                for k in KEYS
            },
        }
        for name in trees
    }
    ratio = {k: round(table["new"][k] / table["old"][k], 3) for k in table["new"]}
    print(f"{'tree':<8} {'p50 ms':>8} {'p99 ms':>8} {'round p50':>10} {'round p99':>10}")
    for name in ("old", "new"):
        t = table[name]
        print(
            f"{name:<8} {t['p50_ms']:>8.2f} {t['p99_ms']:>8.2f} "
            f"{t['median_round_p50_ms']:>10.2f} {t['median_round_p99_ms']:>10.2f}"
        )
    print(
        f"{'new/old':<8} {ratio['p50_ms']:>8.3f} {ratio['p99_ms']:>8.3f} "
        f"{ratio['median_round_p50_ms']:>10.3f} {ratio['median_round_p99_ms']:>10.3f}"
    )
    report = {
        "catalog_size": a.catalog_size,
        "requests_per_round": a.requests,
        "rounds": a.rounds,
        "trees": {name: str(tree) for name, tree in trees.items()},
        "fit": fits,
        "all_calls": table,
        "ratio_new_over_old": ratio,
        "per_round": rounds,
        "load_average_1min_per_turn": loads,
        "cpus": os.cpu_count(),
    }
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
