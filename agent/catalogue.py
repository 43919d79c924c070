"""Catalogue upserts through the API: which items of a request are new, which would change an
item the model already serves (refused: that needs a refit), and the checks every upserted item
passes first (non-empty id and title, one id once, attributes every stage can read:
:func:`hyrec.data.check_attributes`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from hyrec.data import Dataset, Item, check_attributes

log = logging.getLogger(__name__)


def check_upsert(items: Sequence[Item]) -> None:
    """Raise ValueError naming the first item no stage could serve."""
    ids = [it.item_id for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError("the same item id appears twice in one upsert")
    for it in items:
        if not it.item_id.strip() or not it.title.strip():
            raise ValueError(f"item {it.item_id!r} needs a non-empty item_id and title")
        try:
            check_attributes(it.attributes)
        except ValueError as e:
            raise ValueError(f"item {it.item_id!r}: {e}") from None


def new_items(catalogue: Dataset, items: Sequence[Item], *, strict: bool) -> list[Item]:
    """The items ``catalogue`` does not hold yet. One it holds with other content is refused
    (``strict``: ValueError, nothing changes) or skipped with a warning (a stored upsert replayed
    onto a refitted model)."""
    fresh = []
    for it in items:
        index = catalogue.item_index.get(it.item_id)
        if index is None:
            fresh.append(it)
        elif content(catalogue.items[index]) != content(it):
            message = (
                f"item {it.item_id!r} is already in the catalogue with different content; "
                "changing an existing item needs a refit (hyrec fit)"
            )
            if strict:
                raise ValueError(message)
            log.warning("skipping a stored upsert: %s", message)
    return fresh


def content(item: Item) -> str:
    body = [item.title, item.description, dict(item.attributes)]
    return json.dumps(body, sort_keys=True, ensure_ascii=False, default=str)
