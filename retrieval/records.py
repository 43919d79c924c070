"""What the item store keeps per item besides its vector: the metadata a ``where`` filter reads
(one reading of title, year and genres, :class:`hyrec.data.Item`) and the two hashes that let
:meth:`retrieval.store.ItemStore.sync` skip unchanged records."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np

from hyrec.data import Item

HASH_KEY = "content_hash"
VECTOR_KEY = "vector_hash"
RESERVED_KEYS = frozenset({"title", "year", "genres", HASH_KEY, VECTOR_KEY})


def item_metadata(item: Item) -> dict[str, Any]:
    """The Chroma metadata stored for ``item``, without the two hashes (see the module doc)."""
    meta: dict[str, Any] = {"title": str(item.title)}
    attrs = item.attributes
    if item.year is not None:
        meta["year"] = item.year
    if item.genres:
        meta["genres"] = list(item.genres)
    for key, value in attrs.items():
        if key in RESERVED_KEYS or not key or key[0] in "#$":
            continue
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            continue
        if isinstance(value, str | int | float | bool):
            meta[key] = value
        elif isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
            meta[key] = list(dict.fromkeys(value))
    return meta


def content_hash(item: Item) -> str:
    """sha256 over everything the stored metadata and the embedded text are made from."""
    # the derived metadata too: a change in how it is derived (say, whole-float years now kept)
    # rewrites the records it changes on the next sync
    payload = json.dumps(
        [item.title, item.description, dict(item.attributes), item_metadata(item)],
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def vector_hash(vector: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(vector, dtype=np.float32).tobytes()).hexdigest()
