"""The store's inputs, checked: ids and vectors before the first write, and the write batches.

Every write of :class:`retrieval.store.ItemStore` checks all of its input first, so a ValueError
leaves the store as it was: ids with :func:`_check_ids`, vectors (and query vectors) with
:func:`_valid_vectors`; what passes is a :class:`_Records`, written in slices of the store's batch
size (:func:`_slices`, :func:`_chunks`). Messages name at most ``_MISSING_SHOWN`` of the values at
fault (:func:`_preview`).

The other modules of the store: :mod:`retrieval.store` (the store, which builds the records),
:mod:`retrieval.store_config` (its configuration), :mod:`retrieval.store_client` and
:mod:`retrieval.store_child` (the embedded store in a process of its own).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hyrec.data import Item

_MISSING_SHOWN = 10  # ids named in a KeyError before "and N more"


@dataclass
class _Records:
    """Validated records, ready to write."""

    ids: list[str]
    metadatas: list[dict[str, Any]]
    vectors: np.ndarray | None  # (n, d) float32; None until an embedder has run
    items: list[Item]

    def take(self, positions: list[int]) -> _Records:
        return _Records(
            [self.ids[p] for p in positions],
            [self.metadatas[p] for p in positions],
            None if self.vectors is None else self.vectors[positions],
            [self.items[p] for p in positions],
        )


def _valid_vectors(
    vectors: np.ndarray,
    dimension: Callable[[], int | None],
    *,
    n: int | None = None,
    what: str = "embeddings",
) -> np.ndarray:
    """``vectors`` as float32 rows: 2-D, ``n`` of them (when given), finite, not all zero, and
    of the store's dimension (``dimension()``, asked last; None while the store is empty)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if n == 0 and vectors.size == 0:
        return vectors.reshape(0, vectors.shape[-1] if vectors.ndim == 2 else 0)
    if vectors.ndim != 2 or vectors.shape[1] == 0:
        raise ValueError(f"{what} must be a 2-D (n, dim) array, got shape {vectors.shape}")
    if n is not None and len(vectors) != n:
        raise ValueError(f"{what}: got {len(vectors)} rows for {n} items")
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if len(bad):
        raise ValueError(f"{what}: rows {_preview(bad.tolist())} hold NaN or infinite values")
    zero = np.flatnonzero(~(np.abs(vectors) > 0).any(axis=1))
    if len(zero):
        raise ValueError(f"{what}: rows {_preview(zero.tolist())} are all zero (no cosine)")
    dim = dimension()
    if dim is not None and vectors.shape[1] != dim:
        raise ValueError(
            f"{what} have dimension {vectors.shape[1]} but the store holds {dim}-d vectors; "
            "use the same encoder, or a new StoreConfig.collection for a new model"
        )
    return vectors


def _slices(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _chunks(values: list[str], size: int) -> Iterator[list[str]]:
    for rows in _slices(len(values), size):
        yield values[rows]


def _check_ids(item_ids: Collection[str]) -> list[str]:
    if isinstance(item_ids, str):
        raise ValueError(f"expected a collection of item ids, got the string {item_ids!r}")
    ids = list(item_ids)
    bad = [i for i in ids if not isinstance(i, str) or not i]
    if bad:
        raise ValueError(f"item ids must be non-empty strings, got {_preview(bad)}")
    return ids


def _preview(values: Sequence[Any]) -> str:
    shown = ", ".join(repr(v) for v in values[:_MISSING_SHOWN])
    more = len(values) - _MISSING_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")
