"""The one currency type between recommendation stages: a small frozen list of scored items.

An :class:`ItemList` carries item indices, the current score of each, the per-source score columns
that produced it (``columns``), which candidate sources proposed each item (``sources``) and the
:class:`Catalogue` the indices point into, so every later stage reads titles, items and text
vectors from the list itself (:attr:`ItemList.titles`, :attr:`ItemList.vectors`) instead of
taking them as parallel arguments. Stages never pass bare dicts or ``(ids, scores)`` tuples to
each other; the item store's answer is a :class:`StoreHits`, turned into an :class:`ItemList` by
:meth:`StoreHits.indexed`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from hyrec.data import Item


@dataclass(frozen=True, eq=False)
class Catalogue:
    """What an item index means: the items, and their unit-norm text vectors when the model has
    them. The catalogue only grows (new items are appended), so an index stays valid."""

    items: Sequence[Item]
    embeddings: np.ndarray | None = None  # (n_items, d) float32, unit rows


@dataclass(frozen=True, eq=False)
class ItemList:
    """Scored items of one user, no duplicates.

    Attributes:
        items: (n,) int item indices.
        scores: (n,) float32, higher is better.
        columns: Named per-item values, e.g. each scorer's score, all (n,).
        sources: Candidate source name → (n,) bool, whether that source proposed the item.
        catalogue: What the indices point into (``None`` for a bare list in a unit test).
    """

    items: np.ndarray
    scores: np.ndarray
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)
    sources: Mapping[str, np.ndarray] = field(default_factory=dict)
    catalogue: Catalogue | None = None

    def __post_init__(self) -> None:
        n = len(self.items)
        if len(np.unique(self.items)) != n:
            raise ValueError("an ItemList cannot hold the same item twice")
        bad = [
            k
            for k, v in {**self.columns, **self.sources, "scores": self.scores}.items()
            if len(v) != n
        ]
        if bad:
            raise ValueError(f"columns {bad} do not have one value per item ({n})")

    def __len__(self) -> int:
        return len(self.items)

    # ---- what the indices mean ----------------------------------------------------------------
    def item(self, row: int) -> Item:
        return self._catalogue().items[int(self.items[row])]

    @property
    def titles(self) -> list[str]:
        items = self._catalogue().items
        return [items[i].title for i in self.items]

    @property
    def vectors(self) -> np.ndarray | None:
        """(n, d) text vectors of the items, in list order; ``None`` without embeddings."""
        emb = self._catalogue().embeddings
        return None if emb is None else emb[self.items]

    def _catalogue(self) -> Catalogue:
        if self.catalogue is None:
            raise ValueError("this ItemList has no catalogue: build it with catalogue=")
        return self.catalogue

    def source_names(self, row: int) -> list[str]:
        return [name for name, flags in self.sources.items() if flags[row]]

    # ---- new lists from this one ----------------------------------------------------------------
    def take(self, rows: np.ndarray, scores: np.ndarray | None = None) -> ItemList:
        """The items at ``rows``, in that order (``scores``: new scores for them)."""
        rows = np.asarray(rows, dtype=np.int64)
        return ItemList(
            self.items[rows],
            self.scores[rows] if scores is None else np.asarray(scores, np.float32),
            {k: v[rows] for k, v in self.columns.items()},
            {k: v[rows] for k, v in self.sources.items()},
            self.catalogue,
        )

    def with_columns(self, **columns: np.ndarray) -> ItemList:
        """The same list with more (or replaced) per-item columns."""
        return ItemList(
            self.items, self.scores, {**self.columns, **columns}, self.sources, self.catalogue
        )

    def rescored(self, scores: np.ndarray) -> ItemList:
        """The same items with new scores."""
        return self.take(np.arange(len(self)), scores)

    def order(self) -> np.ndarray:
        """Row positions best first by score (ties: lower item index first)."""
        return np.lexsort((self.items, -self.scores))

    def top(self, k: int) -> ItemList:
        """The k best by score, best first (ties: lower item index first)."""
        return self.take(self.order()[:k])

    def ranked(self, rows: np.ndarray) -> ItemList:
        """The items at ``rows`` in that order, scored n, n−1, …, 1; the score they had is kept as
        column ``head_score``."""
        rows = np.asarray(rows, dtype=np.int64)
        out = self.take(rows, np.arange(len(rows), 0, -1, dtype=np.float32))
        return out.with_columns(head_score=self.scores[rows])

    @classmethod
    def union(
        cls, proposals: Mapping[str, np.ndarray], catalogue: Catalogue | None = None
    ) -> ItemList:
        """Merge candidate item arrays from named sources; scores start at 0."""
        arrays = [np.asarray(v, dtype=np.int64) for v in proposals.values()]
        items, where = np.unique(np.concatenate(arrays), return_inverse=True)
        sources, start = {}, 0
        for name, v in zip(proposals, arrays, strict=True):
            flags = np.zeros(len(items), dtype=bool)
            flags[where[start : start + len(v)]] = True  # one sort in all, not one per source
            sources[name], start = flags, start + len(v)
        return cls(items, np.zeros(len(items), np.float32), {}, sources, catalogue)


@dataclass(frozen=True, eq=False)
class StoreHits:
    """The item store's answer to one query vector: ids and cosine similarities, best first."""

    ids: tuple[str, ...]
    scores: np.ndarray  # (n,) float32

    def __len__(self) -> int:
        return len(self.ids)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StoreHits):
            return NotImplemented
        return self.ids == other.ids and np.array_equal(self.scores, other.scores)

    def pairs(self) -> list[tuple[str, float]]:
        """``(item id, cosine)`` per hit, best first (for display and JSON)."""
        return [(i, float(s)) for i, s in zip(self.ids, self.scores, strict=True)]

    def indexed(
        self, item_index: Mapping[str, int], catalogue: Catalogue | None = None
    ) -> ItemList:
        """The hits as an :class:`ItemList` (ids the catalogue does not hold are dropped); the
        cosine is the score and column ``cosine``."""
        keep = [r for r, i in enumerate(self.ids) if i in item_index]
        items = np.array([item_index[self.ids[r]] for r in keep], dtype=np.int64)
        scores = self.scores[keep].astype(np.float32)
        return ItemList(items, scores, {"cosine": scores}, {}, catalogue)
