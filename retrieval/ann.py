"""Approximate maximum inner product search over item vectors: the faiss IVF index the
large-catalogue candidate path proposes from.

This module owns the index (:class:`VectorIndex`), its settings (:class:`AnnConfig`) and the
best-first ordering of (item, score) pairs that every candidate-only proposal ends with
(:func:`best_first`). The per-batch score views that use the index are :mod:`retrieval.views`;
which items they propose, and when, is :mod:`retrieval.candidates`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AnnConfig:
    # IVF cells: cells_per_sqrt · √n (≈ 320 at 10⁵ items, 1,000 at 10⁶). A query reads
    # probe_floats / d cells (64 for 64-d factors, 11 for 384-d text): the same scan cost in every
    # space. On 30k items, 32 of 346 cells found 0.67 (SASRec) / 0.73 (ALS) of the exact top-150;
    # 64 of 173 found 0.88 / 0.96; text vectors cluster well and need fewer. Recall against exact
    # top-N at each size: eval/bench_latency.py (eval/results/serving.md)
    cells_per_sqrt: float = 1.0
    probe_floats: int = 4096
    nprobe: int | None = None  # cells read per query; None: probe_floats / d, at least 8
    # a filter that allows fewer items than this is searched exactly over those items (an IVF
    # search would find too few of them in its cells)
    exact_below: int = 20_000
    # items scored per user to estimate the log-rank feature of items outside a source's top list
    rank_sample: int = 2048
    seed: int = 0


class VectorIndex:
    """Maximum inner product search over (n, d) item vectors: a faiss ``IndexIVFFlat`` on vectors
    lifted to n+1 dimensions so that L2 order equals dot-product order (Bachrach et al., "Speeding
    up the Xbox recommender system using a Euclidean transformation for inner-product spaces",
    RecSys 2014: item v → [v, √(M² − ‖v‖²)], query q → [q, 0]).

    Two kinds of item stay out of the IVF cells. Zero vectors (items a factor model never saw in
    training: two thirds of a 10⁶-item synthetic catalogue for ALS) score 0 for every query and
    are never proposed. The √n items of largest norm (one cell's worth; the popular items of a
    factor model) are scored exactly on every query: M is the largest norm of the rest. With M
    set by one outlier (ALS at 10⁶ items: 36 against a 99th percentile of 0.5), every lifted
    point sat at nearly the same place, k-means' cells collapsed and float32 distances lost
    the dot products' order: ALS found 0 of its exact top-150 there."""

    def __init__(self, vectors: np.ndarray, config: AnnConfig | None = None) -> None:
        import faiss

        self.config = c = config or AnnConfig()
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (n, d)
        n, d = self.vectors.shape
        norms = np.linalg.norm(self.vectors, axis=1)
        nonzero = np.flatnonzero(norms > 0)
        if not len(nonzero):  # every item scores 0: any order is exact
            nonzero = np.arange(n)
        by_norm = nonzero[np.argsort(-norms[nonzero], kind="stable")]
        self.head = np.sort(by_norm[: int(np.sqrt(n))])  # scored exactly
        rest = np.sort(by_norm[len(self.head) :])  # in the IVF cells
        self.index, self._m = None, 0.0  # _m: the largest norm in the cells (the lift's M)
        self._in_cells = np.zeros(n, bool)  # which items the IVF cells hold
        self._in_cells[rest] = True
        if len(rest):
            self._m = float(norms[rest].max())
            lifted = self._lifted(self.vectors[rest], norms[rest])
            cells = int(np.clip(c.cells_per_sqrt * np.sqrt(len(rest)), 1, max(len(rest) // 39, 1)))
            self.index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d + 1), d + 1, cells)
            rng = np.random.default_rng(c.seed)
            self.index.train(
                lifted[rng.choice(len(rest), min(len(rest), 64 * cells), replace=False)]
            )
            self.index.add_with_ids(lifted, rest.astype(np.int64))
            probes = c.nprobe if c.nprobe is not None else max(8, round(c.probe_floats / d))
            self.index.nprobe = min(probes, cells)
        self._faiss = faiss

    def __len__(self) -> int:
        return len(self.vectors)

    def _lifted(self, vectors: np.ndarray, norms: np.ndarray) -> np.ndarray:
        lift = np.sqrt(np.maximum(self._m**2 - norms**2, 0.0))[:, None]
        return np.ascontiguousarray(np.hstack([vectors, lift]), dtype=np.float32)

    def extend(self, vectors: np.ndarray) -> None:
        """Take the grown item table (n + k, d), whose first n rows are the indexed items as they
        were, without re-clustering: each new item goes to its nearest existing cell, or, with a
        norm above the cells' M, to the exactly scored items (zero vectors to neither). The
        table is adopted, not copied. Rebuilding instead cost the first request after an upsert
        7.7 s at 10⁵ items, against 22 ms now (eval/results/growth.md)."""
        start = len(self.vectors)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        new = self.vectors[start:]
        norms = np.linalg.norm(new, axis=1)
        ids = start + np.arange(len(new))
        fits = (norms > 0) & (norms <= (self._m if self.index is not None else -1.0))
        self.head = np.concatenate([self.head, ids[(norms > 0) & ~fits]])
        self._in_cells = np.concatenate([self._in_cells, fits])
        if fits.any():
            self.index.add_with_ids(self._lifted(new[fits], norms[fits]), ids[fits])

    def search(
        self, query: np.ndarray, n: int, seen: np.ndarray, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` best unseen, allowed items for ``query`` (d,): (items, dot products), best
        first. ``seen`` holds item indices; ``allowed`` is an (n_items,) mask (None: all)."""
        total = len(self.vectors)
        head = self.head
        if allowed is not None:
            allowed = allowed[:total].copy()
            allowed[seen[seen < total]] = False
            count = int(allowed.sum())
            if count <= self.config.exact_below:
                pool = np.flatnonzero(allowed)
                return best_first(pool, self.vectors[pool] @ query, n)
            head = head[allowed[head]]
        else:
            head = unseen(head, seen)
        found = self._cells(query, n, seen, allowed) if self.index is not None else head[:0]
        pool = np.concatenate([head, found])
        return best_first(pool, self.vectors[pool] @ query, n)

    def _cells(
        self, query: np.ndarray, n: int, seen: np.ndarray, allowed: np.ndarray | None
    ) -> np.ndarray:
        """The IVF cells' best unseen, allowed items for ``query`` (at most ``n``)."""
        index, total = self.index, len(self.vectors)
        q = np.append(query, np.float32(0.0))[None].astype(np.float32)
        if allowed is None:
            # room for the seen items the cells hold, not for the whole history: a long history's
            # seen items are mostly the popular ones, scored exactly outside the cells
            inside = int(self._in_cells[seen[seen < total]].sum())
            _, found = index.search(q, min(index.ntotal, n + inside))
            found = found[0][found[0] >= 0]
            return unseen(found, seen)[:n]
        bits = np.packbits(allowed, bitorder="little")
        f = self._faiss
        # a filter keeping a share p of the items finds about p of each cell: read more cells
        count = int(allowed.sum())
        probe = min(index.nlist, int(index.nprobe * min(8.0, total / count)))
        params = f.SearchParametersIVF(
            sel=f.IDSelectorBitmap(total, f.swig_ptr(bits)), nprobe=probe
        )
        _, found = index.search(q, min(n, count), params=params)
        return found[0][found[0] >= 0]


def unseen(items: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """``items`` that are not in ``seen``, in their order: a lookup in sorted ``seen`` (np.isin
    sorts both arrays; on a request's few hundred items it was 0.8 ms of a 10 ms request)."""
    if not len(seen) or not len(items):
        return items
    s = np.sort(seen)
    at = np.minimum(np.searchsorted(s, items), len(s) - 1)
    return items[s[at] != items]


def best_first(items: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best (item, score) pairs, best first."""
    order = np.argsort(-scores, kind="stable")[:n]
    return items[order].astype(np.int64), scores[order].astype(np.float32)
