"""Side-by-side latency of two source trees of hyrec, in one run: ``bench latency`` runs
alternately in each tree (same venv, same synthetic catalogue and seed), and the table gives each
tree's median over its rounds and the new/old ratio.

Usage::

    git worktree add /tmp/old <commit>
    python -m eval.bench_versions --old /tmp/old --rounds 2 --catalog-size 10000 \\
        --out eval/results/latency_versions.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

#: How each tree runs ``hyrec bench latency``: the code before the layout change had the command
#: in ``hyrec.cli``; since then it is ``python -m eval bench``.
_OLD_CLI = "from hyrec.cli import app; import sys; app(['bench', 'latency', *sys.argv[1:]])"
KEYS = ("p50_ms", "p99_ms")


def run_tree(tree: Path, args: list[str], new: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OPENBLAS_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "eval", "bench", "latency", *args]
    if not new:
        cmd = [sys.executable, "-c", _OLD_CLI, *args]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout[done.stdout.index("{") :])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", type=Path, required=True, help="the other source tree")
    p.add_argument("--new", type=Path, default=Path(__file__).resolve().parents[1])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--catalog-size", type=int, default=10_000)
    p.add_argument("--requests", type=int, default=1_000)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    args = ["--catalog-size", str(a.catalog_size), "--requests", str(a.requests), "--json"]
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for _ in range(a.rounds):  # alternate, so both trees see the same machine load
        runs["old"].append(run_tree(a.old, args, new=False))
        runs["new"].append(run_tree(a.new, args, new=True))
    table = {
        name: {k: statistics.median(r[k] for r in rs) for k in KEYS} for name, rs in runs.items()
    }
    ratio = {k: round(table["new"][k] / table["old"][k], 3) for k in KEYS}
    print(f"{'tree':<6} {'p50 ms':>8} {'p99 ms':>8}")
    for name in ("old", "new"):
        print(f"{name:<6} {table[name]['p50_ms']:>8.2f} {table[name]['p99_ms']:>8.2f}")
    print(f"{'new/old':<6} {ratio['p50_ms']:>8.3f} {ratio['p99_ms']:>8.3f}")
    report = {
        "catalog_size": a.catalog_size,
        "requests": a.requests,
        "rounds": a.rounds,
        "median": table,
        "ratio_new_over_old": ratio,
        "runs": runs,
    }
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
