"""Candidate generation: each source's top-N unseen, allowed items, tagged with who proposed them.

This module owns which items each row's candidate list holds: the depth rule
(:func:`candidate_depth`), the exact path over (B, n_items) score matrices (:func:`candidates`)
and the large-catalogue path over candidate-only score views (:func:`candidates_from_views`).

Sources, per history row:

* every component named in ``HybridConfig.sources`` proposes its ``per_source`` best items (a
  source with no signal for the row, e.g. SASRec on an empty history, proposes nothing);
* ``semantic``: the ``neighbours`` text neighbours of the user's recent items;
* ``query``: the ``query_neighbours`` text neighbours of the request's query vector;
* when nothing is informative (an untrained catalogue), the 50 most popular items.

Below ``HybridConfig.ann_min_items`` every component scores the whole catalogue and each source's
top-N is exact (:func:`candidates`). From there up (:func:`candidates_from_views`) no
(users × items) matrix is built: dot-product components (ALS, BPR, LightGCN, SASRec, semantic
and the query) propose from a faiss IVF index over their item vectors
(:class:`retrieval.ann.VectorIndex`), item-kNN from its sparse scores, popularity from one sorted
array, and only the candidates are scored (the views of :mod:`retrieval.views`). Every
component's score of each candidate travels with it as a column (plus the query cosine), which is
what the features read.

How deep each source goes follows the catalogue size unless set (:func:`candidate_depth`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from hyrec.data.splits import History
from retrieval.ann import AnnConfig, VectorIndex
from retrieval.features import ItemFacts, RowScores, seen_rows
from retrieval.filters import Filter
from retrieval.items import Catalogue, ItemList
from retrieval.store import ItemStore
from retrieval.views import ConstantScores, FactorScores, FactorSpace, SparseScores

# the index and the views lived here once; callers may still import them from this module
__all__ = [
    "AnnConfig",
    "ConstantScores",
    "Depth",
    "FactorScores",
    "FactorSpace",
    "SparseScores",
    "VectorIndex",
    "candidate_depth",
    "candidates",
    "candidates_from_views",
    "nearest_in_store",
    "top_unblocked",
]

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
