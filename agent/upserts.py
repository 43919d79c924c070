"""Catalogue upserts applied to a served :class:`~agent.api.Recommender`: the new items' text
vectors are computed before the write lock, which is held only to add them to the hybrid and to
store the request (:func:`upsert_items`); :func:`apply_items` adds whatever the catalogue does not
hold yet (also for the upserts a store replays at load and the ones other replicas made). Which
items are new, and the checks every upserted item passes first, are :mod:`agent.catalogue`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from agent.catalogue import check_upsert, new_items

if TYPE_CHECKING:
    from agent.api import Recommender
    from hyrec.data import Item


def upsert_items(model: Recommender, items: Sequence[Item]) -> int:
    """See :meth:`agent.api.Recommender.upsert_items`."""
    check_upsert(items)
    # the text vectors are computed before the write lock, which is held only to apply them
    fresh = new_items(model.catalogue, items, strict=True)
    encoded = model.encoder.encode_items(fresh) if fresh else []
    vectors = dict(zip([it.item_id for it in fresh], encoded, strict=True))
    with model._lock.write():
        added = apply_items(model, items, strict=True, vectors=vectors)
        # served first, stored second: a crash in between loses an item nobody was told
        # about, never one that was acknowledged (and a failed add stores nothing). The whole
        # request is stored, not only the new items, so a retry after a failed store write
        # still stores items the first attempt already served.
        model.store.upsert_items(items)
    return len(added)


def apply_items(
    model: Recommender, items: Sequence[Item], *, strict: bool, vectors: dict | None = None
) -> list[Item]:
    """Add the items the catalogue does not hold yet; returns them. ``vectors``: text vectors
    computed beforehand, by id (the others are encoded here)."""
    fresh = new_items(model.catalogue, items, strict=strict)  # again: a concurrent upsert
    if fresh:  # may have added some since the vectors were computed
        known = dict(vectors or {})
        missing = [it for it in fresh if it.item_id not in known]
        if missing:
            encoded = model.encoder.encode_items(missing)
            known.update(zip([it.item_id for it in missing], encoded, strict=True))
        model.hybrid.add_items(fresh, np.stack([known[it.item_id] for it in fresh]))
    return fresh
