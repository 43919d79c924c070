"""The single-purpose calls beside the request path, on a :class:`~agent.api.Recommender`: the
item store's nearest neighbours of a text (:func:`search`), an item's neighbours by text and
collaborative score (:func:`similar_items`, :meth:`HybridRecommender.similar`) and one item
explained to one user (:func:`explain`, :func:`agent.stages.reasons.explain`, inside the request's
LLM budget). Each reads the model under its read lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent import pipeline
from agent.config import Recommendation

if TYPE_CHECKING:
    from agent.api import Recommender
    from retrieval.filters import Filter


def search(model: Recommender, query: str, k: int, filters: Filter | None) -> list[Recommendation]:
    """See :meth:`agent.api.Recommender.search`."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not query.strip():
        raise ValueError("query must not be empty")
    with model._lock.read():
        store = model.hybrid.store
        if store is None:
            raise ValueError("this model has no text store (fit it with the semantic component)")
        vec = model.encoder.encode_queries([query])
        hits = store.query(vec, k, where=filters)[0]
        found = hits.indexed(model.catalogue.item_index, model.hybrid.view)
        return [
            Recommendation(
                it.item_id, it.title, float(cos), ("query",), {"query": float(cos)}, None
            )
            for it, cos in ((found.item(r), found.scores[r]) for r in range(len(found)))
        ]


def similar_items(
    model: Recommender, item_id: str, k: int, filters: Filter | None
) -> list[Recommendation]:
    """See :meth:`agent.api.Recommender.similar_items`."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    with model._lock.read():
        lst = model.hybrid.similar(model._index(item_id), k, filters)
        return [pipeline.as_recommendation(lst, r) for r in range(len(lst))]


def explain(model: Recommender, user: str, item_id: str) -> str:
    """See :meth:`agent.api.Recommender.explain`: the state is read under the lock, the reason
    written outside it."""
    from agent.stages.reasons import explain as explain_item

    with model._lock.read():
        index = model._index(item_id)
        state = model._state(user, None)
        events, items = state.latest(model.config.profile_events, without=index)
        embeddings = model.hybrid.facts.embeddings
        vectors = embeddings[items] if embeddings is not None else None
        item_vector = embeddings[index] if embeddings is not None else None
        item = model.catalogue.items[index]
    with pipeline.budget(model.parts):
        return explain_item(
            model.llm, events, item, history_vectors=vectors, item_vector=item_vector
        )
