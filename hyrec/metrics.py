"""Full-catalogue ranking metrics: accuracy (NDCG, HR, recall, MRR) and beyond accuracy (coverage,
ILD,
novelty, Gini).

Every metric is a small vectorised function over top-K lists ``recs`` (U, K) and a binary truth
matrix.
:func:`evaluate` ranks the *whole* catalogue for batches of users — never a sample of negatives,
whose
metrics can disagree with full ranking (Krichene & Rendle, "On Sampled Metrics for Item
Recommendation",
KDD 2020) — with each user's observed items excluded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, overload

import numpy as np
import scipy.sparse as sp

from .data.splits import EvalTask, History

ScoreFn = Callable[[History], np.ndarray]


def top_k(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None) -> np.ndarray:
    """(B, k) item indices by descending score; items in ``exclude`` are never returned.

    Ties are broken towards the lower item index, so results are deterministic.
    """
    s = np.array(scores, dtype=np.float32, copy=True)
    if exclude is not None and exclude.nnz:
        rows, cols = exclude.nonzero()
        s[rows, cols] = -np.inf
    k = min(k, s.shape[1])
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(s, part, 1).min(axis=1, keepdims=True)
    # where items tie with the k-th score, argpartition cut among them arbitrarily: redo those rows
    # with a stable sort, which keeps tied items in index order
    tied = np.flatnonzero((s >= kth).sum(axis=1) > k)
    if len(tied):
        part[tied] = np.argsort(-s[tied], axis=1, kind="stable")[:, :k]
    vals = np.take_along_axis(s, part, 1)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, 1)


def hits_at(recs: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """(U, K) bool: whether each recommended item is a target of that user."""
    dense = truth.toarray().astype(bool)
    return np.take_along_axis(dense, recs, 1)


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def ndcg(hits: np.ndarray, n_targets: np.ndarray, k: int) -> np.ndarray:
    """Per-user NDCG@k with binary relevance; ideal DCG over min(k, #targets) hits."""
    disc = _discounts(k)
    dcg = (hits[:, :k] * disc).sum(axis=1)
    idcg = np.cumsum(disc)[np.clip(np.minimum(n_targets, k) - 1, 0, None)]
    return np.where(n_targets > 0, dcg / idcg, 0.0)


def hit_rate(hits: np.ndarray, k: int) -> np.ndarray:
    """Per-user HR@k: 1 if any target is in the top k (= recall@k with one target)."""
    return hits[:, :k].any(axis=1).astype(np.float64)


def recall(hits: np.ndarray, n_targets: np.ndarray, k: int) -> np.ndarray:
    """Per-user recall@k: targets found in the top k over all targets."""
    return hits[:, :k].sum(axis=1) / np.maximum(n_targets, 1)


def mrr(hits: np.ndarray, k: int) -> np.ndarray:
    """Per-user MRR@k: 1 / rank of the first target in the top k, 0 if none."""
    h = hits[:, :k]
    first = h.argmax(axis=1)
    return np.where(h.any(axis=1), 1.0 / (first + 1), 0.0)


def coverage(recs: np.ndarray, n_items: int, k: int) -> float:
    """Share of the catalogue that appears in at least one top-k list."""
    return len(np.unique(recs[:, :k])) / n_items


def intra_list_diversity(recs: np.ndarray, item_vectors: np.ndarray, k: int) -> float:
    """Mean over users of 1 − mean pairwise cosine similarity of the top-k items' vectors."""
    v = item_vectors.astype(np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
    lists = v[recs[:, :k]]  # (U, k, D)
    k_eff = lists.shape[1]
    if k_eff < 2:
        return 0.0
    sims = np.einsum("ukd,ujd->ukj", lists, lists)
    off_diag = (sims.sum(axis=(1, 2)) - np.trace(sims, axis1=1, axis2=2)) / (k_eff * (k_eff - 1))
    return float(np.mean(1.0 - off_diag))


def novelty(recs: np.ndarray, item_popularity: np.ndarray, n_users: int, k: int) -> float:
    """Mean self-information −log2 p(i) of recommended items, p(i) = (users with i + 1) / (users +
    1)."""
    p = (item_popularity + 1.0) / (n_users + 1.0)
    return float(np.mean(-np.log2(p[recs[:, :k]])))


def gini(recs: np.ndarray, n_items: int, k: int) -> float:
    """Gini index of how often each catalogue item is recommended (0 = even, 1 = one item only)."""
    counts = np.sort(np.bincount(recs[:, :k].ravel(), minlength=n_items).astype(np.float64))
    total = counts.sum()
    if total == 0:
        return 0.0
    i = np.arange(1, n_items + 1)
    return float(((2 * i - n_items - 1) * counts).sum() / (n_items * total))


PerUser = dict[str, np.ndarray]


@overload
def evaluate(
    score: ScoreFn,
    task: EvalTask,
    ks: Sequence[int] = ...,
    *,
    item_vectors: np.ndarray | None = ...,
    item_popularity: np.ndarray | None = ...,
    n_train_users: int | None = ...,
    batch_size: int = ...,
    per_user: Literal[False] = ...,
) -> dict[str, float]: ...
@overload
def evaluate(
    score: ScoreFn,
    task: EvalTask,
    ks: Sequence[int] = ...,
    *,
    item_vectors: np.ndarray | None = ...,
    item_popularity: np.ndarray | None = ...,
    n_train_users: int | None = ...,
    batch_size: int = ...,
    per_user: Literal[True],
) -> tuple[dict[str, float], PerUser]: ...
def evaluate(
    score: ScoreFn,
    task: EvalTask,
    ks: Sequence[int] = (10, 20),
    *,
    item_vectors: np.ndarray | None = None,
    item_popularity: np.ndarray | None = None,
    n_train_users: int | None = None,
    batch_size: int = 512,
    per_user: bool = False,
) -> dict[str, float] | tuple[dict[str, float], PerUser]:
    """Rank the full catalogue for every user of ``task`` and average the metrics.

    Args:
        score: Maps a :class:`History` batch to a (B, n_items) score matrix (higher = better).
        task: Users, their observed history (excluded from ranking) and targets.
        ks: Cut-offs.
        item_vectors: Item vectors for ILD (text embeddings, or attribute vectors).
        item_popularity: Per-item count of training users, for novelty.
        n_train_users: Number of training users, for novelty.
        batch_size: Users scored at once.
        per_user: Also return the per-user accuracy metrics (``ndcg@k``, ``hr@k``, ``recall@k``,
            ``mrr@k``: one value per row of ``task``, in its order) whose means the first dict
            holds.
    """
    kmax = max(ks)
    recs, hits = [], []
    for start in range(0, len(task), batch_size):
        rows = np.arange(start, min(start + batch_size, len(task)))
        batch = task.subset(rows)
        scores = score(batch.history)
        r = top_k(scores, kmax, exclude=batch.history.matrix)
        recs.append(r)
        hits.append(hits_at(r, batch.targets))
    recs_all, hits_all = np.concatenate(recs), np.concatenate(hits)
    n_targets = np.diff(task.targets.indptr)
    n_items = task.history.n_items
    out: dict[str, float] = {}
    users: PerUser = {}
    for k in ks:
        users[f"ndcg@{k}"] = ndcg(hits_all, n_targets, k)
        users[f"hr@{k}"] = hit_rate(hits_all, k)
        users[f"recall@{k}"] = recall(hits_all, n_targets, k)
        users[f"mrr@{k}"] = mrr(hits_all, k)
        for name in ("ndcg", "hr", "recall", "mrr"):
            out[f"{name}@{k}"] = float(users[f"{name}@{k}"].mean())
        out[f"coverage@{k}"] = coverage(recs_all, n_items, k)
        out[f"gini@{k}"] = gini(recs_all, n_items, k)
        if item_vectors is not None:
            out[f"ild@{k}"] = intra_list_diversity(recs_all, item_vectors, k)
        if item_popularity is not None and n_train_users:
            out[f"novelty@{k}"] = novelty(recs_all, item_popularity, n_train_users, k)
    out["users"] = float(len(task))
    return (out, users) if per_user else out
