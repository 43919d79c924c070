"""The one currency type between recommendation stages: a small frozen list of scored items.

An :class:`ItemList` carries item indices, the current score of each, the per-source score columns
that produced it (``columns``) and which candidate sources proposed each item (``sources``). Stages
never pass bare dicts or ``(ids, scores)`` tuples to each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class ItemList:
    """Scored items of one user, no duplicates.

    Attributes:
        items: (n,) int item indices.
        scores: (n,) float32, higher is better.
        columns: Named per-item values, e.g. each scorer's score, all (n,).
        sources: Candidate source name → (n,) bool, whether that source proposed the item.
    """

    items: np.ndarray
    scores: np.ndarray
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)
    sources: Mapping[str, np.ndarray] = field(default_factory=dict)

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

    def _take(self, rows: np.ndarray, scores: np.ndarray | None = None) -> ItemList:
        return ItemList(
            self.items[rows],
            (self.scores if scores is None else scores)[rows],
            {k: v[rows] for k, v in self.columns.items()},
            {k: v[rows] for k, v in self.sources.items()},
        )

    def rescored(self, scores: np.ndarray) -> ItemList:
        """The same items with new scores (the old ones stay available as columns)."""
        return self._take(np.arange(len(self)), np.asarray(scores, dtype=np.float32))

    def top(self, k: int) -> ItemList:
        """The k best by score, best first (ties: lower item index first)."""
        order = np.lexsort((self.items, -self.scores))[:k]
        return self._take(order)

    def source_names(self, row: int) -> list[str]:
        return [name for name, flags in self.sources.items() if flags[row]]

    @classmethod
    def union(cls, proposals: Mapping[str, np.ndarray]) -> ItemList:
        """Merge candidate item arrays from named sources; scores start at 0."""
        arrays = [np.asarray(v, dtype=np.int64) for v in proposals.values()]
        items, where = np.unique(np.concatenate(arrays), return_inverse=True)
        sources, start = {}, 0
        for name, v in zip(proposals, arrays, strict=True):
            flags = np.zeros(len(items), dtype=bool)
            flags[where[start : start + len(v)]] = True  # one sort in all, not one per source
            sources[name], start = flags, start + len(v)
        return cls(items, np.zeros(len(items), np.float32), {}, sources)
