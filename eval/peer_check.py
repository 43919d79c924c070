"""Side-by-side check of the harness against RecBole 1.2.1 on MovieLens-100K (``shared/peer``).

Our ``pop`` ranks items by their true training popularity. RecBole's ``Pop`` does not: it is a
"traditional" model trained for one epoch, and ``calculate_loss`` runs
``item_cnt[item] = item_cnt[item] + 1`` on each 2,048-row training batch, where the batch holds
1,024
positive rows *and* 1,024 uniformly sampled negative rows (Pop is a point-wise model, so negatives
are rows
too), and repeated indices in one batch add only once. Its "popularity" is therefore the number of
batches
(≈ 96) an item shows up in, as a positive or as a negative: popular items saturate and tie, and
ties are
broken by RecBole's internal id (first appearance in ``u.data``).

This script evaluates, on our split and metrics, (a) true popularity and (b) popularity counted by
that
rule over several seeds, next to RecBole's published numbers. If (b) reproduces RecBole's value,
the split,
exclusion and metric code agree with RecBole and the gap in (a) is RecBole's counting, not our
protocol.

Usage: ``python -m eval.peer_check [--peer-results PATH] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from encoders.base import FitData
from encoders.collaborative import MostPopular
from hyrec.data import Split, leave_one_out, load_dataset
from hyrec.metrics import evaluate

BATCH_POSITIVES = 1024  # RecBole: train_batch_size 2048 // (1 positive + 1 negative)


def recbole_pop_scores(split: Split, rng: np.random.Generator) -> np.ndarray:
    """Item scores as RecBole 1.2.1's Pop computes them after its single training epoch."""
    ds, train = split.dataset, split.train
    n_items = ds.n_items
    seen = split.train_matrix.tolil().rows
    order = rng.permutation(len(train))
    users, items = train.user[order], train.item[order]
    negatives = rng.integers(0, n_items, len(train))
    for r in range(len(train)):  # uniform negatives exclude the user's training items
        while negatives[r] in seen[users[r]]:
            negatives[r] = rng.integers(0, n_items)
    counts = np.zeros(n_items, np.int64)
    for b in range(0, len(train), BATCH_POSITIVES):
        batch = np.unique(
            np.concatenate([items[b : b + BATCH_POSITIVES], negatives[b : b + BATCH_POSITIVES]])
        )
        counts[batch] += 1
    # ties go to the lower RecBole id, i.e. the item that appears first in the interaction file
    first_seen = np.full(n_items, n_items, np.int64)
    _, first = np.unique(ds.interactions.item, return_index=True)
    first_seen[np.unique(ds.interactions.item)] = np.argsort(np.argsort(first))
    return (counts * (n_items + 1) + (n_items - first_seen)).astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--peer-results", type=Path, default=Path("../shared/peer/recbole_ml100k_results.json")
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("eval/results/ml-100k"))
    args = parser.parse_args()

    ds = load_dataset("ml-100k", args.data_dir)
    split = leave_one_out(ds)
    test = split.task("test")
    true_pop = MostPopular().fit(FitData(ds, split.train))
    rows = {"pop (true popularity)": evaluate(true_pop.score, test)}
    emulated = []
    for seed in range(args.seeds):
        scores = recbole_pop_scores(split, np.random.default_rng(seed)).astype(np.float32)
        emulated.append(evaluate(lambda h, s=scores: np.broadcast_to(s, (len(h), len(s))), test))
    rows["pop (RecBole counting rule, mean of seeds)"] = {
        k: float(np.mean([e[k] for e in emulated]))
        for k in ("ndcg@10", "hr@10", "ndcg@20", "hr@20")
    }
    spread = {k: float(np.std([e[k] for e in emulated])) for k in ("ndcg@10", "hr@10")}
    peer = json.loads(args.peer_results.read_text()) if args.peer_results.exists() else {}
    if "Pop" in peer:
        t = peer["Pop"]["test"]
        rows["RecBole 1.2.1 Pop (peer run)"] = {
            "ndcg@10": t["ndcg@10"],
            "hr@10": t["hit@10"],
            "ndcg@20": t["ndcg@20"],
            "hr@20": t["hit@20"],
        }
    lines = ["| model | NDCG@10 | HR@10 | NDCG@20 | HR@20 |", "|---|---|---|---|---|"]
    for name, m in rows.items():
        lines.append(
            f"| {name} | "
            + " | ".join(f"{m[k]:.4f}" for k in ("ndcg@10", "hr@10", "ndcg@20", "hr@20"))
            + " |"
        )
    table = "\n".join(lines)
    print(table)
    print(
        f"emulation spread over {args.seeds} seeds: "
        f"std NDCG@10 {spread['ndcg@10']:.4f}, HR@10 {spread['hr@10']:.4f}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peer_check.json").write_text(
        json.dumps({"rows": rows, "emulation_std": spread}, indent=2) + "\n"
    )
    (args.out / "peer_check.md").write_text(
        "# Pop vs RecBole 1.2.1 on ML-100K (leave-one-out, full ranking)\n\n" + table + "\n\n"
        f"Emulation std over {args.seeds} seeds: "
        f"NDCG@10 {spread['ndcg@10']:.4f}, HR@10 {spread['hr@10']:.4f}. "
        "See eval/peer_check.py for RecBole's counting rule.\n"
    )


if __name__ == "__main__":
    main()
