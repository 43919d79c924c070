"""Candidate generation: each source's top-N unseen, allowed items, tagged with who proposed them.

Sources, per history row:

* every component named in ``HybridConfig.sources`` proposes its ``per_source`` best items (a
  source with no signal for the row, e.g. SASRec on an empty history, proposes nothing);
* ``semantic``: the ``neighbours`` text neighbours of the user's recent items;
* ``query``: the ``query_neighbours`` text neighbours of the request's query vector;
* when nothing is informative (an untrained catalogue), the 50 most popular items.

Below ``HybridConfig.ann_min_items`` every component scores the whole catalogue and each source's
top-N is exact (:func:`candidates`). From there up (:func:`candidates_from_views`) no
(users × items) matrix is built: dot-product components (ALS, BPR, LightGCN, SASRec, semantic
and the query) propose from a faiss IVF index over their item vectors (:class:`VectorIndex`),
item-kNN from its sparse scores, popularity from one sorted array, and only the candidates are
scored (the views below). Every component's score of each candidate travels with it as a column
(plus the query cosine), which is what the features read.

How deep each source goes follows the catalogue size unless set (:func:`candidate_depth`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from hyrec.data.splits import History
from retrieval.features import ItemFacts, RowScores, seen_rows
from retrieval.filters import Filter
from retrieval.items import Catalogue, ItemList
from retrieval.store import ItemStore

POPULAR_FALLBACK = 50  # items proposed when no source has a signal for a row
# The candidate-depth rule (HybridConfig.per_source / neighbours / query_neighbours left unset):
# each source proposes ⌈√n_items⌉ items, clipped to [DEPTH_MIN, DEPTH_MAX]. A deeper list finds
# the target more often on a larger catalogue, but features and the head cost grow with it, so it
# grows slower than the catalogue: 50 up to 2,500 items, 100 at 10⁴, 150 from 22,500 up. The floor:
# on ML-100K's 1,682 items √n = 42 per source lowered validation NDCG@10 from 0.1342 to 0.1316
# (candidate recall 0.676 → 0.639) against 50, and 50 per source is cheap on small catalogues.
DEPTH_MIN, DEPTH_MAX = 50, 150


@dataclass(frozen=True)
class Depth:
    """How many candidates each kind of source proposes per row."""

    per_source: int
    neighbours: int
    query_neighbours: int


def candidate_depth(
    n_items: int,
    per_source: int | None = None,
    neighbours: int | None = None,
    query_neighbours: int | None = None,
) -> Depth:
    """The given depths, and the rule above (module constants) for each one left ``None``."""
    rule = int(np.clip(np.ceil(np.sqrt(max(n_items, 1))), DEPTH_MIN, DEPTH_MAX))
    return Depth(
        rule if per_source is None else per_source,
        rule if neighbours is None else neighbours,
        rule if query_neighbours is None else query_neighbours,
    )


def top_unblocked(scores: np.ndarray, blocked: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` best scores of one row among the items not ``blocked`` (any order)."""
    s = np.where(blocked, -np.inf, scores)
    n = min(n, int((~blocked).sum()))
    if n <= 0:
        return np.zeros(0, np.int64)
    return np.argpartition(-s, n - 1)[:n]


def nearest_in_store(
    store: ItemStore,
    catalogue_index: Mapping[str, int],
    item_ids: np.ndarray,
    vector: np.ndarray,
    n: int,
    filter: Filter | None,
    seen: np.ndarray,
) -> np.ndarray:
    """The ``n`` nearest allowed, unseen items in the chromadb HNSW index (large catalogues)."""
    exclude = [item_ids[i] for i in np.unique(seen)]
    hits = store.query(vector[None], n, where=filter, exclude_ids=exclude)[0]
    return hits.indexed(catalogue_index).items


def candidates(
    history: History,
    scores: Mapping[str, np.ndarray],
    *,
    config,  # retrieval.hybrid.HybridConfig (sources, per_source, neighbours, ...)
    facts: ItemFacts,
    catalogue: Catalogue,
    store: ItemStore | None = None,
    item_ids: np.ndarray | None = None,
    item_index: Mapping[str, int] | None = None,
    ann: bool = False,
    recent: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
    filter: Filter | None = None,
    queries: np.ndarray | None = None,
) -> list[ItemList]:
    """Per history row, the union of every source's proposals (see the module doc).

    Args:
        history: The users and their item sequences.
        scores: (B, n_items) per component.
        config: The hybrid's config.
        facts: Item facts (text vectors, popularity).
        catalogue: What the item indices mean (travels with the lists).
        store: The item store.
        item_ids, item_index: Catalogue ids and their index, for the store's answers.
        ann: Text neighbours from the store's HNSW index instead of an exact cosine.
        recent: (B, d) query vectors of the users' recent items (needed with ``ann``).
        allowed: (n_items,) mask of the items the filter lets through.
        filter: The same filter, for the store's search.
        queries: (B, d) query vectors; zero rows are no query.
    """
    seen = seen_rows(history)
    depth = config.depth(history.n_items)
    n_text, n_query = depth.neighbours, depth.query_neighbours
    use_store = ann and store is not None

    def near(vector: np.ndarray, n: int, row: int, cosine: np.ndarray, blocked) -> np.ndarray:
        if use_store:
            seq = history.sequences[row]
            return nearest_in_store(store, item_index, item_ids, vector, n, filter, seq)
        return top_unblocked(cosine, blocked, n)

    out = []
    for row in range(len(history)):
        blocked = np.zeros(history.n_items, dtype=bool) if allowed is None else ~allowed
        blocked[seen[row]] = True
        proposals = {
            name: top_unblocked(scores[name][row], blocked, depth.per_source)
            for name in config.sources
            if np.ptp(scores[name][row]) > 0
        }
        if "semantic" in scores and n_text > 0 and scores["semantic"][row].any():
            vector = recent[row] if use_store else None  # type: ignore[index]
            proposals["semantic"] = near(vector, n_text, row, scores["semantic"][row], blocked)
        query = None if queries is None or not queries[row].any() else queries[row]
        if query is not None:
            cosine = facts.embeddings @ query  # (n_items,)
            proposals["query"] = near(query, n_query, row, cosine, blocked)
        if not proposals:
            proposals["pop"] = top_unblocked(facts.popularity, blocked, POPULAR_FALLBACK)
        c = ItemList.union(proposals, catalogue)
        columns = {name: s[row, c.items] for name, s in scores.items()}
        if query is not None:
            columns["query"] = cosine[c.items]
        out.append(ItemList(c.items, c.scores, columns, c.sources, catalogue))
    return out


# ---- large catalogues: ANN proposals, candidate-only scores ----------------------------------
# From ``HybridConfig.ann_min_items`` up, no (B, n_items) score matrix is built. Each component
# is a per-batch *view* (below) that answers what candidates and features need: its top-N unseen
# items, its score of given items, the mean and spread of its scores over the unseen catalogue,
# and how many unseen items score higher. Dot-product components (encoders.base.FactorScorer)
# propose from a faiss IVF index over their item vectors; item-kNN's scores are sparse and exact;
# popularity is one sorted array. The same views serve fit and requests, so the head learns from
# the features it is later given.


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
    RecSys 2014: item v → [v, √(M² − ‖v‖²)], query q → [q, 0])."""

    def __init__(self, vectors: np.ndarray, config: AnnConfig | None = None) -> None:
        import faiss

        self.config = c = config or AnnConfig()
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (n, d)
        n, d = self.vectors.shape
        norms = np.linalg.norm(self.vectors, axis=1)
        lift = np.sqrt(np.maximum(norms.max() ** 2 - norms**2, 0.0))[:, None]
        lifted = np.ascontiguousarray(np.hstack([self.vectors, lift]), dtype=np.float32)
        cells = int(np.clip(c.cells_per_sqrt * np.sqrt(n), 1, max(n // 39, 1)))
        self.index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d + 1), d + 1, cells)
        rng = np.random.default_rng(c.seed)
        train = lifted[rng.choice(n, min(n, 64 * cells), replace=False)]
        self.index.train(train)
        self.index.add(lifted)
        probes = c.nprobe if c.nprobe is not None else max(8, round(c.probe_floats / d))
        self.index.nprobe = min(probes, cells)
        self._faiss = faiss

    def __len__(self) -> int:
        return len(self.vectors)

    def search(
        self, query: np.ndarray, n: int, seen: np.ndarray, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` best unseen, allowed items for ``query`` (d,): (items, dot products), best
        first. ``seen`` holds item indices; ``allowed`` is an (n_items,) mask (None: all)."""
        total = len(self.vectors)
        if allowed is not None:
            allowed = allowed[:total].copy()
            allowed[seen[seen < total]] = False
            count = int(allowed.sum())
            if count <= self.config.exact_below:
                pool = np.flatnonzero(allowed)
                return _best(pool, self.vectors[pool] @ query, n)
        q = np.append(query, np.float32(0.0))[None].astype(np.float32)
        if allowed is None:
            width = min(total, n + len(seen))
            _, found = self.index.search(q, width)
            found = found[0][found[0] >= 0]
            found = found[~np.isin(found, seen)][:n]
        else:
            bits = np.packbits(allowed, bitorder="little")
            f = self._faiss
            # a filter keeping a share p of the items finds about p of each cell: read more cells
            probe = min(self.index.nlist, int(self.index.nprobe * min(8.0, total / count)))
            params = f.SearchParametersIVF(
                sel=f.IDSelectorBitmap(total, f.swig_ptr(bits)), nprobe=probe
            )
            _, found = self.index.search(q, min(n, count), params=params)
            found = found[0][found[0] >= 0]
        return _best(found, self.vectors[found] @ query, n)


def _best(items: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best (item, score) pairs, best first."""
    order = np.argsort(-scores, kind="stable")[:n]
    return items[order].astype(np.int64), scores[order].astype(np.float32)


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

    def informative(self, row: int) -> bool:
        return bool(self.users[row].any())

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
        seen = seen[seen < self.n]
        done = self.space.index.vectors[seen] @ self.users[row] if len(seen) else np.zeros(0)
        count = max(self.n - len(seen), 1)
        mean = (self.n * float(u @ self.space.mean) - done.sum(dtype=np.float64)) / count
        sq = self.n * float(u @ self.space.second @ u) - np.square(done, dtype=np.float64).sum()
        return mean, float(np.sqrt(max(sq / count - mean * mean, 0.0))) + 1e-6

    def higher(self, row: int, values: np.ndarray, seen: np.ndarray) -> np.ndarray:
        m = self.sample.shape[1]
        # unbiased: the sample holds each seen item with chance m/n, and the seen ones are known
        # (exact when the sample is the whole catalogue)
        estimate = self.n * (m - np.searchsorted(self.sample[row], values, side="right")) / m
        seen = seen[seen < self.n]
        if len(seen):
            done = self.space.index.vectors[seen] @ self.users[row]
            estimate = estimate - (done[None, :] > values[:, None]).sum(axis=1)
        estimate = np.maximum(estimate, 0.0)
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
        return _best(idx, values, n)[0]

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
        return self.scores[items]

    def top(self, row: int, n: int, seen: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
        order = self.order if allowed is None else self.order[allowed[self.order]]
        head = order[: n + len(seen)]
        return head[~np.isin(head, seen)][:n].astype(np.int64)

    def stats(self, row: int, seen: np.ndarray) -> tuple[float, float]:
        done = self.scores[seen].astype(np.float64)
        count = max(self.n - len(seen), 1)
        mean = (self.total - done.sum()) / count
        sq = self.total_sq - np.square(done).sum()
        return mean, float(np.sqrt(max(sq / count - mean * mean, 0.0))) + 1e-6

    def higher(self, row: int, values: np.ndarray, seen: np.ndarray) -> np.ndarray:
        above = self.n - np.searchsorted(self.ascending, values, side="right")
        return above - (self.scores[seen][None, :] > values[:, None]).sum(axis=1)


def candidates_from_views(
    history: History,
    views: Mapping[str, RowScores],
    *,
    config,  # retrieval.hybrid.HybridConfig
    facts: ItemFacts,
    catalogue: Catalogue,
    popular: ConstantScores,
    query_index: VectorIndex | None = None,
    allowed: np.ndarray | None = None,
    queries: np.ndarray | None = None,
) -> list[ItemList]:
    """:func:`candidates` for large catalogues: the same sources, proposed by each view's
    :meth:`top` (ANN for dot-product components) and scored only on the candidates."""
    seen = seen_rows(history)
    depth = config.depth(history.n_items)
    out = []
    for row in range(len(history)):
        proposals = {
            name: views[name].top(row, depth.per_source, seen[row], allowed)
            for name in config.sources
            if views[name].informative(row)
        }
        semantic = views.get("semantic")
        if semantic is not None and depth.neighbours > 0 and semantic.informative(row):
            proposals["semantic"] = semantic.top(row, depth.neighbours, seen[row], allowed)
        query = None if queries is None or not queries[row].any() else queries[row]
        if query is not None and query_index is not None:
            proposals["query"] = query_index.search(
                query, depth.query_neighbours, seen[row], allowed
            )[0]
        if not proposals:
            proposals["pop"] = popular.top(row, POPULAR_FALLBACK, seen[row], allowed)
        c = ItemList.union(proposals, catalogue)
        columns = {name: v.at(row, c.items) for name, v in views.items()}
        if query is not None:
            columns["query"] = facts.embeddings[c.items] @ query
        out.append(ItemList(c.items, c.scores, columns, c.sources, catalogue))
    return out
