"""SASRec's loss, measured: full softmax CE against the sampled softmax (SASRec+), on a dataset's
validation split, with the same settings, seed and epoch cap.

For each loss: the best validation NDCG@10 within the cap, the epoch it came at, and the median
seconds per epoch (training and the per-epoch validation), plus each one's ratio to full CE. The
default ``loss="auto"`` picks the sampled loss only where the catalogue has more trained items than
``negatives`` (3000); on a small catalogue like ML-100K (1,682 items) the two are the same thing at
3000 negatives, so this bench samples fewer to see what sampling costs in accuracy.

Usage::

    python -m eval.bench_sasrec_loss [--dataset ml-100k] [--epochs 60] [--negatives 256,1024]
        [--out eval/results/ml-100k/tuning/sasrec_loss.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from encoders.sasrec import SASRec, SASRecConfig
from encoders.text import TextEncoder, TextEncoderConfig
from hyrec.data import load_dataset
from hyrec.threads import limit_blas
from retrieval.tuning import tuning_data

log = logging.getLogger(__name__)


def run(dataset: str, epochs: int, negatives: Sequence[int], data_dir: str | None = None) -> dict:
    """Fit one SASRec per loss (full, then sampled with each count) and measure it."""
    ds = load_dataset(dataset, data_dir)
    vectors = TextEncoder(TextEncoderConfig(show_progress=False)).encode_items(ds.items)
    data = tuning_data(ds, vectors)  # train + validation; the test split is not built
    variants = [("full", {"loss": "full"})] + [
        (f"sampled-{n}", {"loss": "sampled", "negatives": n}) for n in negatives
    ]
    rows = {}
    load = [os.getloadavg()[0]]
    for name, params in variants:
        config = SASRecConfig(max_epochs=epochs, patience=epochs, **params)
        t0 = time.perf_counter()
        model = SASRec(config).fit(data)
        per_epoch = [r["seconds"] for r in model.history_]
        rows[name] = {
            **params,
            "best_valid_ndcg@10": round(model.best_valid_ndcg, 5),
            "best_epoch": model.best_epoch,
            "epochs": len(model.history_),
            "median_seconds_per_epoch": round(statistics.median(per_epoch), 3),
            "fit_seconds": round(time.perf_counter() - t0, 1),
            "context": model.config.max_len,
        }
        load.append(os.getloadavg()[0])
        log.info("%s: %s", name, rows[name])
    full = rows["full"]
    for row in rows.values():
        row["ndcg_ratio_to_full"] = round(row["best_valid_ndcg@10"] / full["best_valid_ndcg@10"], 3)
        row["time_ratio_to_full"] = round(
            row["median_seconds_per_epoch"] / full["median_seconds_per_epoch"], 3
        )
    return {
        "dataset": ds.fingerprint(),
        "split": "leave-one-out validation (second-last event); test never read",
        "epoch_cap": epochs,
        "seed": 0,
        "load_average_1min": {"before": load[0], "after_each": load[1:]},
        "cpus": os.cpu_count(),
        "losses": rows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--negatives", default="256,1024")
    parser.add_argument(
        "--out", type=Path, default=Path("eval/results/ml-100k/tuning/sasrec_loss.json")
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("encoders.sasrec").setLevel(logging.WARNING)
    limit_blas()
    counts = [int(n) for n in args.negatives.split(",") if n.strip()]
    result = run(args.dataset, args.epochs, counts, args.data_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    heads = ("valid ndcg@10", "best ep", "s/epoch", "ndcg×", "time×")
    print(f"{'loss':14s} " + " ".join(f"{h:>{max(len(h), 6)}s}" for h in heads))
    for name, r in result["losses"].items():
        print(
            f"{name:14s} {r['best_valid_ndcg@10']:13.4f} {r['best_epoch']:7d} "
            f"{r['median_seconds_per_epoch']:8.3f} {r['ndcg_ratio_to_full']:6.3f} "
            f"{r['time_ratio_to_full']:6.3f}"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
