"""Candidate generation: each source's top-N unseen, allowed items, tagged with who proposed them.

Sources, per history row:

* every component named in ``HybridConfig.sources`` proposes its ``per_source`` best items (a
  source with no signal for the row, e.g. SASRec on an empty history, proposes nothing);
* ``semantic``: the ``neighbours`` text neighbours of the user's recent items;
* ``query``: the ``query_neighbours`` text neighbours of the request's query vector;
* when nothing is informative (an untrained catalogue), the 50 most popular items.

Text neighbours are an exact cosine over the item vectors below ``ann_min_items``, and the
chromadb HNSW index (:class:`retrieval.store.ItemStore`) from there up, where the metadata filters
apply inside the search. Every component's score of each candidate travels with it as a column
(plus the query cosine), which is what the features read.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from hyrec.data.splits import History
from retrieval.features import ItemFacts, seen_rows
from retrieval.filters import Filter
from retrieval.items import Catalogue, ItemList
from retrieval.store import ItemStore

POPULAR_FALLBACK = 50  # items proposed when no source has a signal for a row


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
    n_text, n_query = config.neighbours, config.query_neighbours
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
            name: top_unblocked(scores[name][row], blocked, config.per_source)
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
