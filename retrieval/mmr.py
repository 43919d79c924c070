"""Maximal Marginal Relevance (Carbonell & Goldstein, SIGIR 1998) over item text vectors: the
deterministic diversity re-ranker, and the fallback of every LLM re-ranking path."""

from __future__ import annotations

import numpy as np

from encoders.base import unit_rows
from retrieval.items import ItemList


def minmax(x: np.ndarray) -> np.ndarray:
    """Finite values scaled to [0, 1] (all equal: 1); non-finite ones become 0."""
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    if not finite.any():
        return np.ones_like(x)
    lo, hi = x[finite].min(), x[finite].max()
    return np.where(finite, (x - lo) / (hi - lo) if hi > lo else 1.0, 0.0)


def mmr_order(
    relevance: np.ndarray,
    embeddings: np.ndarray,
    k: int,
    lambda_: float = 0.5,
    tiebreak: np.ndarray | None = None,
) -> np.ndarray:
    """Row positions picked greedily by λ·relevance − (1 − λ)·max cosine to the rows already picked.

    ``relevance`` is used as given (callers scale it to [0, 1]); ties go to the higher
    ``tiebreak`` (the unscaled scores, which scaling can round into a tie), then the lower row.
    """
    n = len(relevance)
    k = min(k, n)
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"lambda_ must be in [0, 1], got {lambda_}")
    if len(embeddings) != n:
        raise ValueError(f"embeddings has {len(embeddings)} rows for {n} candidates")
    e = unit_rows(embeddings)
    rel = np.asarray(relevance, dtype=np.float64)
    max_sim = np.zeros(n)
    picked: list[int] = []
    free = np.ones(n, dtype=bool)
    for step in range(k):
        value = rel if step == 0 else lambda_ * rel - (1.0 - lambda_) * max_sim
        value = np.where(free, value, -np.inf)
        j = int(np.argmax(value))
        if tiebreak is not None:
            tied = np.flatnonzero(value == value[j])
            j = int(tied[np.argmax(tiebreak[tied])])  # first of the highest: the lower row
        picked.append(j)
        free[j] = False
        max_sim = np.maximum(max_sim, e @ e[j])
    return np.asarray(picked, dtype=np.int64)


def mmr(candidates: ItemList, k: int, lambda_: float = 0.5) -> ItemList:
    """The top ``k`` of ``candidates`` re-ordered by MMR over their scores and text vectors.

    Args:
        candidates: Scored items whose catalogue has text vectors (the scores are the relevance,
            min–max scaled to [0, 1]).
        k: List length.
        lambda_: 1 = pure relevance (the head's order), 0 = pure diversity.

    Returns:
        ``k`` items (fewer if there are fewer candidates) scored k, k−1, …, 1 in MMR order; the
        scores they had are kept in ``columns["head_score"]``.

    Raises:
        ValueError: the list's catalogue has no text vectors.
    """
    vectors = candidates.vectors
    if vectors is None:
        raise ValueError("MMR needs item text vectors: the list's catalogue has none")
    scores = np.asarray(candidates.scores, dtype=np.float64)
    rows = mmr_order(
        minmax(scores), vectors, k, lambda_, tiebreak=np.nan_to_num(scores, nan=-np.inf)
    )
    return candidates.ranked(rows)
