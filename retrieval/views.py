"""Candidate-only score views of a large catalogue: what a component's scores of one batch answer
without the (B, n_items) matrix.

From ``HybridConfig.ann_min_items`` up, each component is a per-batch *view* that answers what
candidates and features need (:class:`retrieval.features.RowScores`): its top-N unseen items, its
score of given items, the mean and spread of its scores over the unseen catalogue, and how many
unseen items score higher. This module owns those views: dot-product components
(encoders.base.FactorScorer) share a :class:`FactorSpace` per fit and propose from its faiss IVF
index (:mod:`retrieval.ann`) through :class:`FactorScores`; item-kNN's scores are sparse and exact
(:class:`SparseScores`); popularity is one sorted array (:class:`ConstantScores`). Which view each
component of a hybrid gets is :func:`component_views`, over the spaces :func:`factor_spaces`
builds once per fit. The same views serve fit and requests, so the head learns from the features it
is later given. Which items the views propose is :func:`retrieval.candidates.candidates_from_views`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

from encoders.base import factor_vectors
from hyrec.data.splits import History
from retrieval.ann import AnnConfig, VectorIndex, best_first
from retrieval.features import RowScores, count_above


class FactorSpace:
    """What a dot-product component's views share: its item vectors, their ANN index, the moments
    that give exact score means and spreads, and a fixed item sample for rank estimates."""

    def __init__(self, vectors: np.ndarray, config: AnnConfig | None = None) -> None:
        self.config = config or AnnConfig()
        self.index = VectorIndex(vectors, self.config)
        v = self.index.vectors.astype(np.float64)
        self.mean = v.mean(axis=0)  # (d,)
        self.second = v.T @ v / len(v)  # (d, d): E[s²] = u·second·u
        rng = np.random.default_rng(self.config.seed)
        n = len(v)
        self.sample = np.sort(rng.choice(n, min(n, self.config.rank_sample), replace=False))
        self.sample_vectors = np.ascontiguousarray(self.index.vectors[self.sample].T)  # (d, m)

    def extend(self, vectors: np.ndarray) -> None:
        """Take the grown item table (catalogue growth: the first rows unchanged, new ones at the
        end): the index takes the new rows and the moments follow; the rank sample stays the
        fitted items' (an estimate, and the new items are few)."""
        n = len(self.index)
        new = np.asarray(vectors[n:], np.float64)
        self.mean = (n * self.mean + new.sum(axis=0)) / (n + len(new))
        self.second = (n * self.second + new.T @ new) / (n + len(new))
        self.index.extend(vectors)

    def view(self, users: np.ndarray) -> FactorScores:
        return FactorScores(np.asarray(users, np.float32), self)


class FactorScores:
    """A dot-product component's scores of a batch (B users), never the (B, n_items) matrix.

    Means and spreads over the unseen catalogue are exact (from the item moments, the seen items
    subtracted). The count of unseen items scoring higher than an item is exact inside the list
    :meth:`top` retrieved for that row (up to ANN recall) and estimated from ``rank_sample``
    items beyond it."""

    def __init__(self, users: np.ndarray, space: FactorSpace) -> None:
        self.users, self.space = users, space  # (B, d)
        vectors = space.index.vectors
        self.n = len(vectors)
        self.sample = np.sort(users @ space.sample_vectors, axis=1)  # (B, m) ascending
        self._top: dict[int, np.ndarray] = {}  # row → its unfiltered top scores, best first
        self._seen: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # row → (seen, their scores)

    def informative(self, row: int) -> bool:
        return bool(self.users[row].any())

    def _seen_scores(self, row: int, seen: np.ndarray) -> np.ndarray:
        """The row's scores of its seen items: computed once, for :meth:`stats` and
        :meth:`higher` (the features ask both with the same ``seen``)."""
        cached = self._seen.get(row)
        if cached is not None and cached[0] is seen:
            return cached[1]
        known = seen[seen < self.n]
        done = self.space.index.vectors[known] @ self.users[row] if len(known) else np.zeros(0)
        self._seen[row] = (seen, done)
        return done

    def at(self, row: int, items: np.ndarray) -> np.ndarray:
        known = items < self.n
        if known.all():
            return self.space.index.vectors[items] @ self.users[row]
        out = np.full(len(items), self.stats(row, np.zeros(0, np.int64))[0], np.float32)
        out[known] = self.space.index.vectors[items[known]] @ self.users[row]
        return out

    def top(self, row: int, n: int, seen: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
        items, scores = self.space.index.search(self.users[row], n, seen, allowed)
        if allowed is None:
            self._top[row] = scores
        return items

    def stats(self, row: int, seen: np.ndarray) -> tuple[float, float]:
        u = self.users[row].astype(np.float64)
        done = self._seen_scores(row, seen)
        count = max(self.n - len(done), 1)
        mean = (self.n * float(u @ self.space.mean) - done.sum(dtype=np.float64)) / count
        sq = self.n * float(u @ self.space.second @ u) - np.square(done, dtype=np.float64).sum()
        return mean, float(np.sqrt(max(sq / count - mean * mean, 0.0))) + 1e-6

    def higher(self, row: int, values: np.ndarray, seen: np.ndarray) -> np.ndarray:
        m = self.sample.shape[1]
        # unbiased: the sample holds each seen item with chance m/n, and the seen ones are known
        # (exact when the sample is the whole catalogue)
        estimate = self.n * (m - np.searchsorted(self.sample[row], values, side="right")) / m
        estimate = np.maximum(estimate - count_above(self._seen_scores(row, seen), values), 0.0)
        top = self._top.get(row)
        if top is None or not len(top):
            return estimate
        inside = values >= top[-1]
        exact = np.searchsorted(-top, -values, side="left")  # retrieved items scoring higher
        return np.where(inside, exact, np.maximum(estimate, len(top)))


class SparseScores:
    """Scores that are zero for most items (item-kNN: history × item-item similarity), exact."""

    def __init__(self, scores: sp.csr_matrix) -> None:
        self.m = scores.tocsr()
        self.m.sort_indices()
        self.n = self.m.shape[1]

    def _row(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.m.indptr[row], self.m.indptr[row + 1]
        return self.m.indices[lo:hi], self.m.data[lo:hi]

    def informative(self, row: int) -> bool:
        _, values = self._row(row)
        return bool(len(values)) and (np.ptp(values) > 0 or len(values) < self.n)

    def at(self, row: int, items: np.ndarray) -> np.ndarray:
        idx, values = self._row(row)
        pos = np.minimum(np.searchsorted(idx, items), max(len(idx) - 1, 0))
        hit = (pos < len(idx)) & (idx[pos] == items) if len(idx) else np.zeros(len(items), bool)
        return np.where(hit, values[pos] if len(idx) else 0.0, 0.0).astype(np.float32)

    def top(self, row: int, n: int, seen: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
        idx, values = self._row(row)
        keep = ~np.isin(idx, seen) & (values > 0)
        if allowed is not None:
            keep &= allowed[idx]
        idx, values = idx[keep], values[keep]
        return best_first(idx, values, n)[0]

    def stats(self, row: int, seen: np.ndarray) -> tuple[float, float]:
        done = self.at(row, seen).astype(np.float64)
        _, values = self._row(row)
        count = max(self.n - len(seen), 1)
        mean = (values.sum(dtype=np.float64) - done.sum()) / count
        sq = np.square(values, dtype=np.float64).sum() - np.square(done).sum()
        return mean, float(np.sqrt(max(sq / count - mean * mean, 0.0))) + 1e-6

    def higher(self, row: int, values: np.ndarray, seen: np.ndarray) -> np.ndarray:
        idx, stored = self._row(row)
        unseen = ~np.isin(idx, seen)
        ordered = np.sort(stored[unseen])
        above = len(ordered) - np.searchsorted(ordered, values, side="right")
        zeros = self.n - len(seen) - len(ordered)  # unseen items scoring exactly 0 (about)
        return above + np.where(values < 0, zeros, 0)


class ConstantScores:
    """The same scores for every row (popularity); exact, from one sorted copy."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = np.asarray(scores, np.float32)
        self.order = np.argsort(-self.scores, kind="stable")
        self.ascending = np.sort(self.scores)
        self.total = float(self.scores.sum(dtype=np.float64))
        self.total_sq = float(np.square(self.scores, dtype=np.float64).sum())
        self.n = len(self.scores)
        self.flat = np.ptp(self.scores) == 0

    def informative(self, row: int) -> bool:
        return not self.flat

    def at(self, row: int, items: np.ndarray) -> np.ndarray:
        # items added after the fit (catalogue growth) get the mean: neutral, as in FactorScores
        known = items < self.n
        if known.all():
            return self.scores[items]
        out = np.full(len(items), self.total / max(self.n, 1), np.float32)
        out[known] = self.scores[items[known]]
        return out

    def top(self, row: int, n: int, seen: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
        order = self.order if allowed is None else self.order[allowed[self.order]]
        head = order[: n + len(seen)]
        return head[~np.isin(head, seen)][:n].astype(np.int64)

    def stats(self, row: int, seen: np.ndarray) -> tuple[float, float]:
        seen = seen[seen < self.n]
        done = self.scores[seen].astype(np.float64)
        count = max(self.n - len(seen), 1)
        mean = (self.total - done.sum()) / count
        sq = self.total_sq - np.square(done).sum()
        return mean, float(np.sqrt(max(sq / count - mean * mean, 0.0))) + 1e-6

    def higher(self, row: int, values: np.ndarray, seen: np.ndarray) -> np.ndarray:
        above = self.n - np.searchsorted(self.ascending, values, side="right")
        return above - count_above(self.scores[seen[seen < self.n]], values)


def factor_spaces(
    components: Mapping[str, Any], embeddings: np.ndarray | None
) -> dict[str, FactorSpace]:
    """Component name → the :class:`FactorSpace` of its item vectors, for every dot-product
    component, and ``"query"`` over the item text ``embeddings`` for request text when no semantic
    component has one."""
    spaces = {}
    for name, scorer in components.items():
        pair = factor_vectors(scorer)
        if pair is not None:
            spaces[name] = FactorSpace(pair[1]())
    if "semantic" not in spaces and embeddings is not None:
        spaces["query"] = FactorSpace(embeddings)
    return spaces


def component_views(
    history: History,
    components: Mapping[str, Any],
    native_items: Mapping[str, int],
    spaces: Mapping[str, FactorSpace],
    constant: Callable[[str, np.ndarray], ConstantScores],
) -> dict[str, RowScores]:
    """Each component's candidate-only view of this batch's scores: from its space for a
    dot-product component, sparse for item-kNN, ``constant`` (a cache of
    :class:`ConstantScores`) for popularity. A component reads only the history items it knows
    (``native_items``: those of its fit)."""
    out: dict[str, RowScores] = {}
    for name, scorer in components.items():
        known = native_items.get(name, history.n_items)
        h = history
        if known < history.n_items:
            h = History(history.users, tuple(s[s < known] for s in history.sequences), known)
        if name in spaces:
            out[name] = spaces[name].view(factor_vectors(scorer)[0](h))
        elif getattr(scorer, "similarity", None) is not None:  # item-kNN: sparse, exact
            out[name] = SparseScores(h.matrix @ scorer.similarity)
        elif getattr(scorer, "counts", None) is not None:  # popularity
            out[name] = constant(name, scorer.counts)
        else:
            raise ValueError(
                f"component {name!r} has no candidate-only scores for a catalogue of "
                f"{history.n_items} items; raise HybridConfig.ann_min_items above it to "
                "score it over the whole catalogue"
            )
    return out
