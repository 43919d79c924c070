"""Catalogue growth: items added to a fitted hybrid by their text alone, with no retraining.

This module owns :func:`add_items`, which :meth:`retrieval.hybrid.HybridRecommender.add_items`
delegates to. Every check runs before anything changes (known or repeated ids, vector count and
dimension, NaN or zero vectors). Then the new vectors go to the item store, the text-based
components learn the items (the semantic scorer's cosine, SASRec's text projection), the others
keep scoring only the items they were fitted on (the hybrid pads theirs with a neutral score), and
the catalogue, item facts, filter masks and ANN indexes follow the grown catalogue.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from encoders.base import NotFittedError, factor_vectors, unit_rows
from encoders.semantic import SemanticScorer
from hyrec.data import Item
from retrieval.filters import item_year

if TYPE_CHECKING:
    from retrieval.hybrid import HybridRecommender


def add_items(model: HybridRecommender, items: Sequence[Item], embeddings: np.ndarray) -> int:
    """See :meth:`retrieval.hybrid.HybridRecommender.add_items` (module doc)."""
    if model.ranker is None:
        raise NotFittedError("HybridRecommender.fit() first")
    items = list(items)
    if model.facts.embeddings is None:
        raise ValueError("add_items needs a model fitted with item text embeddings")
    vectors = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
    dim = model.facts.embeddings.shape[1]
    if vectors.shape != (len(items), dim):
        raise ValueError(f"embeddings have shape {vectors.shape}; expected ({len(items)}, {dim})")
    norms = np.linalg.norm(vectors, axis=1)
    if not (np.isfinite(norms) & (norms > 0)).all():
        raise ValueError("embeddings hold NaN, infinite or all-zero rows")
    if not items:
        return 0
    grown = model.dataset.with_items(items)  # raises on a known or repeated id
    vectors = unit_rows(vectors)
    if model.store is not None:
        model.store.upsert(items, vectors)  # validates before writing
    for name, scorer in model.components.items():
        if isinstance(scorer, SemanticScorer):
            scorer.item_embeddings = np.vstack([scorer.item_embeddings, vectors])
        elif getattr(getattr(scorer, "net", None), "use_text", False):
            scorer.add_items(vectors)
        else:
            continue
        model.native_items[name] = grown.n_items
    model.facts = model.facts.extended(np.array([item_year(it) for it in items]), vectors)
    model.dataset = grown
    model._forget_views()
    _grow_spaces(model)
    return len(items)


def _grow_spaces(model: HybridRecommender) -> None:
    """Large catalogues: each ANN space whose item vectors grew takes the new rows (the others'
    components still score only their fitted items). Spaces not built yet are built whole on
    first use."""
    for name, space in model.__dict__.get("_spaces", {}).items():
        pair = factor_vectors(model.components[name]) if name in model.components else None
        vectors = pair[1]() if pair is not None else model.facts.embeddings  # "query": the text
        if len(vectors) > len(space.index):
            space.extend(vectors)
