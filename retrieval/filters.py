"""Which items a request may return: :class:`Filter`, and the catalogue masks that apply it.

One reading of genres and years for every stage: :attr:`hyrec.data.Item.genres` and
:attr:`hyrec.data.Item.year`. :class:`CatalogueIndex` turns a filter into a boolean mask over the
catalogue in a few array operations; :meth:`Filter.to_where` turns the same filter into a chromadb
``where`` clause for the item store, with the same rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hyrec.data import Item


@dataclass(frozen=True)
class Filter:
    """Which items a query may return; every field left at its default constrains nothing.

    Attributes:
        genres_any: Keep items with at least one of these genres.
        genres_none: Drop items with any of these genres (items without genres are kept).
        year_min: Keep items whose year is at least this (items without a year are dropped).
        year_max: Keep items whose year is at most this (items without a year are dropped).
        exclude_ids: Never return these ids (applied by :meth:`ItemStore.query` after the search,
            not in the ``where`` clause, which would make Chroma filter instead of search).
    """

    genres_any: tuple[str, ...] = ()
    genres_none: tuple[str, ...] = ()
    year_min: int | None = None
    year_max: int | None = None
    exclude_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("genres_any", "genres_none", "exclude_ids"):
            value = getattr(self, name)
            value = (value,) if isinstance(value, str) else tuple(value)
            if not all(isinstance(v, str) for v in value):
                raise ValueError(f"Filter.{name} must hold strings, got {value!r}")
            object.__setattr__(self, name, value)
        low, high = self.year_min, self.year_max
        if low is not None and high is not None and low > high:
            raise ValueError(f"Filter.year_min {self.year_min} is after year_max {self.year_max}")

    def to_where(self) -> dict[str, Any] | None:
        """The Chroma ``where`` dict for the genre and year constraints, or None if there are none.

        >>> Filter(genres_any=("Comedy",), year_min=1990).to_where()
        {'$and': [{'genres': {'$contains': 'Comedy'}}, {'year': {'$gte': 1990}}]}
        """
        clauses: list[dict[str, Any]] = []
        any_of = [{"genres": {"$contains": g}} for g in dict.fromkeys(self.genres_any)]
        if any_of:
            clauses.append(any_of[0] if len(any_of) == 1 else {"$or": any_of})
        clauses += [{"genres": {"$not_contains": g}} for g in dict.fromkeys(self.genres_none)]
        if self.year_min is not None:
            clauses.append({"year": {"$gte": int(self.year_min)}})
        if self.year_max is not None:
            clauses.append({"year": {"$lte": int(self.year_max)}})
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def item_year(item: Item) -> float:
    """The item's release year as a float (NaN when unknown)."""
    return float("nan") if item.year is None else float(item.year)


class CatalogueIndex:
    """Genre masks and years of the catalogue, so a :class:`Filter` costs a few array operations."""

    def __init__(self, items: Sequence[Item]) -> None:
        self.item_index = {it.item_id: i for i, it in enumerate(items)}
        self.year = np.array([item_year(it) for it in items])
        self.genres: dict[str, np.ndarray] = {}
        for i, it in enumerate(items):
            for g in it.genres:
                self.genres.setdefault(g, np.zeros(len(items), dtype=bool))[i] = True

    def allowed(self, filter: Filter) -> np.ndarray:
        """(n_items,) mask of the items ``filter`` lets through (same rules as the item store)."""
        none = np.zeros(len(self.year), dtype=bool)
        ok = ~none
        if filter.genres_any:
            ok = np.logical_or.reduce([self.genres.get(g, none) for g in filter.genres_any])
        for g in filter.genres_none:
            ok = ok & ~self.genres.get(g, none)
        with np.errstate(invalid="ignore"):  # NaN years fail both bounds, as in the store
            if filter.year_min is not None:
                ok = ok & (self.year >= filter.year_min)
            if filter.year_max is not None:
                ok = ok & (self.year <= filter.year_max)
        gone = [self.item_index[i] for i in filter.exclude_ids if i in self.item_index]
        if gone:
            ok = ok.copy()
            ok[gone] = False
        return ok


def merge(a: Filter | None, b: Filter | None) -> Filter | None:
    """Both filters at once (genres_any: ``a``'s when it has one, else ``b``'s); None if empty."""
    a, b = (None if f == Filter() else f for f in (a, b))
    if a is None or b is None:
        return a or b
    low = [y for y in (a.year_min, b.year_min) if y is not None]
    high = [y for y in (a.year_max, b.year_max) if y is not None]
    year_min, year_max = (max(low) if low else None), (min(high) if high else None)
    if year_min is not None and year_max is not None and year_min > year_max:
        year_min, year_max = a.year_min, a.year_max  # contradictory: the explicit filter wins
    merged = Filter(
        genres_any=a.genres_any or b.genres_any,
        genres_none=tuple(dict.fromkeys(a.genres_none + b.genres_none)),
        year_min=year_min,
        year_max=year_max,
        exclude_ids=tuple(dict.fromkeys(a.exclude_ids + b.exclude_ids)),
    )
    return None if merged == Filter() else merged
