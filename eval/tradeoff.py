"""The numbers behind the report's trade-off and activity plots (drawn by :mod:`eval.plots`).

**Accuracy–diversity trade-off.** The seed-0 hybrid the harness fitted anyway keeps each test
user's top :data:`WINDOW` (20) while it is evaluated (:class:`TopCapture`, no extra fit or scoring
pass). :func:`mmr_sweep` re-orders that window by MMR — ``retrieval.mmr.mmr_order`` over the
min–max scaled head scores and the item text vectors, exactly what ``retrieval.mmr.mmr`` does to an
``ItemList`` — for each λ in :data:`LAMBDAS`, and measures NDCG@10 and ILD@10 of the top 10 with
``hyrec.metrics``' own functions and the report's ILD vectors. λ = 1 keeps the head's order, so
its point is the head's own top 10 (the hybrid's seed-0 NDCG@10 and ILD@10). When the report's
folder holds ``llm_ablation.json`` (``eval/bench_llm.py``), its LLM re-ranker row joins as a point,
with the ablation's own head row: that benchmark ranks a 60-user sample with its own hybrid.

**Activity buckets.** The evaluated users are split by the length of the history they are ranked
from (events before the held-out item, repeats counted) into terciles: *short* (length ≤ the first
tercile), *medium* (≤ the second) and *long*, plus *cold* for users with no history (served by
popularity in the hybrid; only a temporal split can have them). The cuts come from the history
lengths alone, before any model is fitted; each model's NDCG@10 is then averaged per bucket from
the same per-user NDCG@10 whose mean is its ``ndcg@10``.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from hyrec.data.splits import History
from hyrec.metrics import ScoreFn, hits_at, intra_list_diversity, ndcg, top_k
from retrieval.mmr import minmax, mmr_order

#: MMR's λ sweep: 0 = pure diversity, 1 = the head's own order.
LAMBDAS = tuple(round(0.1 * i, 1) for i in range(11))
#: The head's window MMR re-orders (the pipeline's re-ranking window) and the list length kept.
WINDOW, K = 20, 10
#: The model whose seed-0 fit the sweep re-ranks.
SWEEP_MODEL = "hybrid"
BUCKETS = ("cold", "short", "medium", "long")


# ---- activity buckets ------------------------------------------------------------------------
@dataclass(frozen=True)
class Activity:
    """Each evaluated user's bucket (an index into :data:`BUCKETS`) and how the cuts were made."""

    bucket: np.ndarray  # (U,) int
    cuts: tuple[int, int]  # short: length <= cuts[0]; medium: <= cuts[1]; long: above
    lengths: np.ndarray  # (U,) history length

    def ranges(self) -> dict[str, str]:
        lo, hi = self.cuts
        first = int(self.lengths[self.lengths > 0].min(initial=lo))  # the shortest warm history
        return {
            "cold": "0 events",
            "short": _span(first, lo),
            "medium": _span(lo + 1, hi),
            "long": f"≥ {hi + 1} events",
        }


def _span(first: int, last: int) -> str:
    if first > last:
        return "none"
    return f"{first} events" if first == last else f"{first}–{last} events"


def activity_buckets(history: History) -> Activity:
    """Tercile buckets of the history lengths of ``history``'s rows (see the module doc)."""
    lengths = np.array([len(s) for s in history.sequences], dtype=np.int64)
    warm = lengths[lengths > 0]
    if len(warm):
        lo, hi = (int(math.floor(q)) for q in np.quantile(warm, [1 / 3, 2 / 3]))
    else:
        lo = hi = 0
    bucket = np.where(lengths == 0, 0, np.where(lengths <= lo, 1, np.where(lengths <= hi, 2, 3)))
    return Activity(bucket.astype(np.int64), (lo, hi), lengths)


def bucket_ndcg(per_user: dict[str, np.ndarray], bucket: np.ndarray) -> dict[str, float]:
    """One fit's mean NDCG@10 per bucket that has users (``ndcg@10_short`` …), from
    ``hyrec.metrics.evaluate(..., per_user=True)``'s per-user numbers (none without @10)."""
    values = per_user.get("ndcg@10")
    if values is None:
        return {}
    return {
        f"ndcg@10_{name}": round(float(values[bucket == b].mean()), 5)
        for b, name in enumerate(BUCKETS)
        if (bucket == b).any()
    }


def activity_summary(activity: Activity, models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """metrics.json's ``activity``: the rule, the cuts, users per bucket, each model's NDCG@10 per
    bucket (the mean over seeds) and, for seeded models, its sd between seeds."""
    counts = np.bincount(activity.bucket, minlength=len(BUCKETS))
    names = [n for b, n in enumerate(BUCKETS) if n != "cold" or counts[b]]
    ranges = activity.ranges()
    out: dict[str, Any] = {
        "rule": "terciles of the evaluated users' history lengths (events they are ranked from); "
        "cold: no history",
        "cuts": list(activity.cuts),
        "history_length": {
            f: float(getattr(np, f)(activity.lengths)) if len(activity.lengths) else None
            for f in ("min", "median", "max")
        },
        "buckets": {n: {"range": ranges[n], "users": int(counts[BUCKETS.index(n)])} for n in names},
        "ndcg@10": {},
        "ndcg@10_sd": {},
    }
    for model, row in models.items():
        out["ndcg@10"][model] = {n: row.get(f"ndcg@10_{n}") for n in names}
        fits = row.get("per_seed") or []
        if len(fits) > 1:
            out["ndcg@10_sd"][model] = {
                n: (
                    round(statistics.stdev(f[f"ndcg@10_{n}"] for f in fits), 5)
                    if all(f.get(f"ndcg@10_{n}") is not None for f in fits)
                    else None
                )
                for n in names
            }
    return out


# ---- the MMR sweep ---------------------------------------------------------------------------
class TopCapture:
    """A score function that passes ``score`` through and keeps each row's top ``n`` unseen items
    and their scores, chosen exactly as ``hyrec.metrics.evaluate`` chooses them."""

    def __init__(self, score: ScoreFn, n: int = WINDOW) -> None:
        self.score, self.n = score, n
        self._items: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []

    def __call__(self, history: History) -> np.ndarray:
        scores = self.score(history)
        top = top_k(scores, self.n, exclude=history.matrix)
        self._items.append(top)
        self._scores.append(np.take_along_axis(np.asarray(scores, np.float32), top, 1))
        return scores

    def window(self) -> tuple[np.ndarray, np.ndarray]:
        """(U, n) items and (U, n) scores of every row scored so far, in order."""
        return np.concatenate(self._items), np.concatenate(self._scores)


def capture(name: str, seed: int, score: ScoreFn) -> TopCapture | None:
    """A :class:`TopCapture` of ``score`` for the fit the sweep re-ranks (the seed-0
    :data:`SWEEP_MODEL`), else ``None``."""
    return TopCapture(score) if (name, seed) == (SWEEP_MODEL, 0) else None


def _point(lists: np.ndarray, truth: sp.csr_matrix, ild_vectors: np.ndarray) -> dict[str, float]:
    n_targets = np.diff(truth.indptr)
    hits = hits_at(lists, truth)
    return {
        "ndcg@10": round(float(ndcg(hits, n_targets, K).mean()), 5),
        "ild@10": round(intra_list_diversity(lists, ild_vectors, K), 5),
    }


def _mmr_top(window: np.ndarray, scores: np.ndarray, vectors: np.ndarray, lam: float) -> np.ndarray:
    """MMR's top :data:`K` of one window. Only the scored items (finite: the hybrid's candidates)
    are re-ordered, as in the pipeline; a window with fewer than K of them is filled up in the
    head's order (the unscored items sort last), as the head's own list is."""
    k, n = min(K, len(window)), int(np.isfinite(scores).sum())
    rows = mmr_order(minmax(scores[:n]), vectors[window[:n]], k, lam)
    return window[np.concatenate([rows, np.arange(n, n + k - len(rows))])]


def mmr_sweep(
    items: np.ndarray,
    scores: np.ndarray,
    truth: sp.csr_matrix,
    text_vectors: np.ndarray,
    ild_vectors: np.ndarray,
    lambdas: tuple[float, ...] = LAMBDAS,
) -> dict[str, Any]:
    """The head's top 10 and MMR's top 10 out of each user's window, for every λ.

    Args:
        items: (U, W) each user's window, in the head's order; ``scores`` (U, W) its head scores.
        truth: (U, n_items) the held-out items.
        text_vectors: Item text vectors MMR reads (as the pipeline's MMR does).
        ild_vectors: The vectors the report's ILD@10 uses.
    """
    curve = []
    for lam in lambdas:
        lists = np.stack(
            [_mmr_top(row, s, text_vectors, lam) for row, s in zip(items, scores, strict=True)]
        )
        curve.append({"lambda": lam, **_point(lists, truth, ild_vectors)})
    return {
        "users": int(len(items)),
        "window": int(items.shape[1]),
        "k": K,
        "rule": "MMR (retrieval.mmr) over the min-max scaled head scores of the head's top "
        f"{items.shape[1]} and the item text vectors; λ=1 is the head's order",
        "head": _point(items[:, :K], truth, ild_vectors),
        "mmr": curve,
    }


def add_llm_point(report: dict[str, Any], folder: Path) -> None:
    """Put the LLM re-ranker row of ``folder/llm_ablation.json`` (and the head row measured beside
    it) into ``report["tradeoff"]["llm"]``, when both exist."""
    source = folder / "llm_ablation.json"
    tradeoff = report.get("tradeoff")
    if tradeoff is None or not source.exists():
        return
    try:
        ablation = json.loads(source.read_text())
        rows = ablation["rows"]
        point = {k: float(rows["llm"][k]) for k in ("ndcg@10", "ild@10")}
        head = rows.get("head")
        head = {k: float(head[k]) for k in ("ndcg@10", "ild@10")} if head else None
    except (KeyError, TypeError, ValueError):
        return  # not an ablation with an llm row: no point
    tradeoff["llm"] = {
        **point,
        "users": rows["llm"].get("users"),
        "llm": ablation.get("llm"),
        "head": head,
        "source": source.name,
        "note": "the LLM ablation's own hybrid and user sample; `head` is its head on those users",
    }
