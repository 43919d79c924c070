"""Per (user, candidate) features for the ranking head.

Only scale-free views of each component's score go in: the score standardised over the user's
unseen items (``z``) and ``log(1 + rank)`` of the item in that component's ranking of the unseen
catalogue. Raw scores do not: their scale drifts whenever a component is retrained, and the head
must not depend on it (ML-100K validation NDCG@10 was the same or better without them,
``eval/results/ml-100k/hybrid-experiments.md``). Then item facts (log popularity, days since the
item was last consumed, release year), the user's history length, the cosine between the item and
the user's most recent item, which candidate sources proposed the item, and — when the hybrid was
fitted with a profile function — the cosine between the user's interest-profile embedding and the
item.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hyrec.data import Dataset, Interactions, interaction_matrix
from hyrec.data.splits import EvalTask, History
from retrieval.filters import item_year
from retrieval.items import ItemList


@dataclass(frozen=True, eq=False)
class ItemFacts:
    """Catalogue-side inputs to the features, computed once at fit time."""

    popularity: np.ndarray  # (n_items,) training users per item
    days_since_last: np.ndarray  # (n_items,) days from the item's last training event to the end
    year: np.ndarray  # (n_items,) release year, NaN when unknown
    embeddings: np.ndarray | None  # (n_items, d) unit-norm text embeddings

    def extended(self, year: np.ndarray, embeddings: np.ndarray | None) -> ItemFacts:
        """These facts plus new items that have no events yet (popularity 0, days unknown)."""
        k = len(year)
        return ItemFacts(
            np.concatenate([self.popularity, np.zeros(k, np.float32)]),
            np.concatenate([self.days_since_last, np.full(k, np.nan, np.float32)]),
            np.concatenate([self.year, np.asarray(year, np.float64)]),
            None if self.embeddings is None else np.vstack([self.embeddings, embeddings]),
        )


def item_facts(dataset: Dataset, train: Interactions, embeddings: np.ndarray | None) -> ItemFacts:
    """Popularity, recency and year of every catalogue item, from the training events."""
    n = dataset.n_items
    popularity = np.asarray(interaction_matrix(train, dataset.n_users, n).sum(axis=0)).ravel()
    last = np.full(n, train.timestamp.min() if len(train) else 0, dtype=np.float64)
    np.maximum.at(last, train.item, train.timestamp)
    days = (train.timestamp.max() - last) / 86400.0 if len(train) else np.zeros(n)
    year = np.array([item_year(it) for it in dataset.items])
    return ItemFacts(popularity.astype(np.float32), days.astype(np.float32), year, embeddings)


def feature_names(
    components: Sequence[str], sources: Sequence[str], *, with_text: bool, with_profile: bool
) -> list[str]:
    names = []
    for c in components:
        names += [f"{c}:z", f"{c}:log_rank"]
    names += ["log_popularity", "log_days_since_last", "year", "log_history_len"]
    if with_text:
        names.append("last_item_cosine")
    if with_profile:
        names.append("profile_cosine")
    names += [f"from:{s}" for s in sources]
    return names


def seen_rows(history: History) -> list[np.ndarray]:
    """Each row's distinct history items, as sorted int arrays."""
    m = history.matrix
    return [m.indices[m.indptr[r] : m.indptr[r + 1]] for r in range(len(history))]


def count_above(scores: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per value, how many of ``scores`` are strictly greater: a sort and a binary search, not a
    (values × scores) comparison (a 1,000-event history made that the slowest step of a request)."""
    if not len(scores):
        return np.zeros(len(values), np.int64)
    ordered = np.sort(scores)
    return len(ordered) - np.searchsorted(ordered, values, side="right")


def standardised_and_ranks(
    scores: np.ndarray, seen: Sequence[np.ndarray], candidates: Sequence[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row, for its candidates: the score standardised over the row's unseen items, and the
    number of unseen items that score strictly higher (the 0-based rank, ties sharing a rank).

    One sort per row of the catalogue; the few seen items are subtracted, not masked out, so the
    cost does not grow with a (B, n_items) mask.
    """
    n = scores.shape[1]
    ordered = np.sort(scores, axis=1)  # (B, n) ascending
    out = []
    for row, (s, done, items) in enumerate(zip(scores, seen, candidates, strict=True)):
        done_s = s[done]
        count = n - len(done)
        mean = (s.sum(dtype=np.float64) - done_s.sum(dtype=np.float64)) / max(count, 1)
        sq = np.square(s, dtype=np.float64).sum() - np.square(done_s, dtype=np.float64).sum()
        std = np.sqrt(max(sq / max(count, 1) - mean * mean, 0.0)) + 1e-6
        c = s[items]
        higher = n - np.searchsorted(ordered[row], c, side="right") - count_above(done_s, c)
        out.append((((c - mean) / std).astype(np.float32), higher))
    return out


def build_features(
    history: History,
    candidates: Sequence[ItemList],
    scores: Mapping[str, np.ndarray],
    facts: ItemFacts,
    sources: Sequence[str],
    profile_vectors: np.ndarray | None = None,
    seen: Sequence[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """One (n_candidates, n_features) float32 matrix per user, columns in :func:`feature_names`
    order (``profile_cosine`` only when ``profile_vectors`` is given)."""
    seen = seen_rows(history) if seen is None else seen
    items = [c.items for c in candidates]
    per_component = [standardised_and_ranks(s, seen, items) for s in scores.values()]
    return [
        _feature_matrix(
            history, row, cand, [c[row] for c in per_component], facts, sources, profile_vectors
        )
        for row, cand in enumerate(candidates)
    ]


class RowScores(Protocol):
    """One component's scores of a batch of users, asked row by row (large catalogues never build
    the (B, n_items) matrix; the views are in :mod:`retrieval.views`)."""

    def informative(self, row: int) -> bool:
        """Whether the row's scores differ between items (a source without signal proposes
        nothing)."""
        ...

    def at(self, row: int, items: np.ndarray) -> np.ndarray:
        """The row's scores of ``items``."""
        ...

    def top(self, row: int, n: int, seen: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
        """The row's ``n`` best items that are not ``seen`` and are ``allowed``."""
        ...

    def stats(self, row: int, seen: np.ndarray) -> tuple[float, float]:
        """Mean and standard deviation (+1e-6) of the row's scores over its unseen items."""
        ...

    def higher(self, row: int, values: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """Per value, the (estimated) number of unseen items scoring strictly higher."""
        ...


def build_features_from_views(
    history: History,
    candidates: Sequence[ItemList],
    views: Mapping[str, RowScores],
    facts: ItemFacts,
    sources: Sequence[str],
    profile_vectors: np.ndarray | None = None,
) -> list[np.ndarray]:
    """:func:`build_features` for large catalogues: the same columns, each component's z and log
    rank from its view (exact z; rank exact inside its retrieved list, estimated beyond it)."""
    seen = seen_rows(history)
    out = []
    for row, cand in enumerate(candidates):
        per_component = []
        for name, view in views.items():
            values = cand.columns[name]
            mean, std = view.stats(row, seen[row])
            per_component.append(((values - mean) / std, view.higher(row, values, seen[row])))
        out.append(
            _feature_matrix(history, row, cand, per_component, facts, sources, profile_vectors)
        )
    return out


def _feature_matrix(history, row, cand, per_component, facts, sources, profile_vectors):
    """One row's (n_candidates, n_features) matrix from its per-component (z, rank) pairs."""
    idx = cand.items
    cols = []
    for z, higher in per_component:
        cols += [np.asarray(z, np.float32), np.log1p(higher)]
    cols += [np.log1p(facts.popularity[idx]), np.log1p(facts.days_since_last[idx])]
    cols.append(facts.year[idx])
    cols.append(np.full(len(idx), np.log1p(len(history.sequences[row]))))
    if facts.embeddings is not None:
        seq = history.sequences[row]
        last = facts.embeddings[seq[-1]] if len(seq) else np.zeros(facts.embeddings.shape[1])
        cols.append(facts.embeddings[idx] @ last)
    if profile_vectors is not None:
        cols.append(facts.embeddings[idx] @ profile_vectors[row])
    cols += [cand.sources[s] if s in cand.sources else np.zeros(len(idx)) for s in sources]
    return np.stack(cols, axis=1).astype(np.float32)


def sample_rows(rows: np.ndarray, at_most: int, seed: int) -> np.ndarray:
    """``rows`` when there are at most ``at_most``, else a seeded sample of that many (in their
    original order), so costs that grow with users × catalogue stop growing with users."""
    if len(rows) <= at_most:
        return rows
    keep = np.random.default_rng(seed).choice(len(rows), at_most, replace=False)
    return rows[np.sort(keep)]


def sample_task(task: EvalTask | None, at_most: int, seed: int) -> EvalTask | None:
    """:func:`sample_rows` for the users of an evaluation task."""
    if task is None or len(task) <= at_most:
        return task
    return task.subset(sample_rows(np.arange(len(task)), at_most, seed))
