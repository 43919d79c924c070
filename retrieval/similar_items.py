"""Item-to-item similarity: the items most like one catalogue item, as a hybrid answers it.

This module owns :func:`similar`, which :meth:`retrieval.hybrid.HybridRecommender.similar`
delegates to. Two signals are standardised over the items a filter allows and summed: the text
cosine to the item, and one collaborative component's score of a one-item history (the first of
itemknn, als, lightgcn, sasrec the hybrid has). Each proposes its best items, so the answer is the
tagged union of both lists ranked by the sum; an item the collaborative component does not know
scores neutral there, so items added after the fit rank by their text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from encoders.base import NotFittedError
from hyrec.data.splits import History
from retrieval.candidates import top_unblocked
from retrieval.filters import Filter
from retrieval.items import ItemList

if TYPE_CHECKING:
    from retrieval.hybrid import HybridRecommender


def similar(
    model: HybridRecommender, item_index: int, k: int = 10, filter: Filter | None = None
) -> ItemList:
    """See :meth:`retrieval.hybrid.HybridRecommender.similar` (module doc)."""
    if model.dataset is None:
        raise NotFittedError("HybridRecommender.fit() first")
    n = model.dataset.n_items
    if not 0 <= item_index < n:
        raise IndexError(f"item index {item_index} is outside the catalogue (0..{n - 1})")
    blocked = np.zeros(n, dtype=bool) if filter is None else ~model.index.allowed(filter)
    blocked[item_index] = True
    one = History.of_items([item_index], n)
    signals: dict[str, np.ndarray] = {}
    if model.facts.embeddings is not None:
        signals["text"] = model.facts.embeddings @ model.facts.embeddings[item_index]
    collab = next(
        (c for c in ("itemknn", "als", "lightgcn", "sasrec") if c in model.components), None
    )
    if collab is not None:
        signals["collaborative"] = model._score_with(collab, one)[0]
    if not signals:
        raise ValueError("similar() needs item embeddings or a collaborative component")
    width = max(k, 50)
    proposals = {name: top_unblocked(s, blocked, width) for name, s in signals.items()}
    c = ItemList.union(proposals, model.view)
    ok = ~blocked
    total = sum((s[c.items] - s[ok].mean()) / (s[ok].std() + 1e-6) for s in signals.values())
    columns = {name: s[c.items] for name, s in signals.items()}
    return ItemList(c.items, np.asarray(total, np.float32), columns, c.sources, model.view).top(k)
