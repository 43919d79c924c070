"""Hyper-parameter selection on the *validation* split (never test) for the baseline scorers.

Fits every configuration of a small grid, ranks by validation NDCG@10 and writes
``<out>/tuning-<model>.md``. The chosen defaults live in each scorer's config dataclass; test
NDCG@10 is
shown only so a reader can see how well validation predicted it.

Usage: ``python -m eval.tune {itemknn,als,bpr} [--out eval/results/ml-100k]``
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import asdict
from pathlib import Path

from encoders.base import FitData
from encoders.collaborative import ALS, BPR, ALSConfig, BPRConfig, ItemKNN, ItemKNNConfig
from hyrec.data import leave_one_out, load_dataset
from hyrec.metrics import evaluate

GRIDS = {
    "itemknn": (ItemKNN, ItemKNNConfig, {"neighbours": [10, 20, 50, 100, 200, 400]}),
    "als": (
        ALS,
        ALSConfig,
        {"factors": [32, 64, 128], "regularization": [0.01, 0.05, 0.5], "alpha": [1.0, 2.0, 5.0]},
    ),
    "bpr": (
        BPR,
        BPRConfig,
        {
            "factors": [64, 128],
            "learning_rate": [0.005, 0.01],
            "regularization": [0.001, 0.01],
            "iterations": [30, 60, 100],
        },
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(GRIDS))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path("eval/results/ml-100k"))
    args = parser.parse_args()
    cls, config_cls, grid = GRIDS[args.model]
    ds = load_dataset("ml-100k", args.data_dir)
    split = leave_one_out(ds)
    data, test = FitData(ds, split.train, split.task("valid")), split.task("test")
    rows = []
    for values in itertools.product(*grid.values()):
        config = config_cls(**dict(zip(grid, values, strict=True)))
        t0 = time.perf_counter()
        model = cls(config).fit(data)
        fit_s = time.perf_counter() - t0
        valid, tst = (
            evaluate(model.score, data.valid)["ndcg@10"],
            evaluate(model.score, test)["ndcg@10"],
        )
        rows.append((valid, tst, fit_s, config))
        print(f"{config}: valid {valid:.4f} test {tst:.4f} fit {fit_s:.1f}s", flush=True)
    rows.sort(key=lambda r: -r[0])
    keys = list(grid)
    lines = [
        f"# {args.model} on ML-100K: grid ranked by validation NDCG@10",
        "",
        "| " + " | ".join(keys) + " | valid NDCG@10 | test NDCG@10 | fit s |",
        "|" + "---|" * (len(keys) + 3),
    ]
    for valid, tst, fit_s, config in rows:
        c = asdict(config)
        lines.append(
            "| "
            + " | ".join(str(c[k]) for k in keys)
            + f" | {valid:.4f} | {tst:.4f} | {fit_s:.1f} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"tuning-{args.model}.md").write_text("\n".join(lines) + "\n")
    print(f"best on validation: {rows[0][3]}")


if __name__ == "__main__":
    main()
