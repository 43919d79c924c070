"""The one dataset representation every hyrec stage reads.

A :class:`Dataset` is a catalogue of :class:`Item` records (text is first-class: title, description
and
attributes are what the text encoder embeds) plus columnar :class:`Interactions` over internal
integer
indices. External ids are strings; internal indices are positions in ``Dataset.item_ids`` /
``Dataset.user_ids``. Interaction rows keep the order of the source file, so ties in time can be
broken by
file order (as RecBole does with ``order: TO``).
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp


class DataError(ValueError):
    """Input data is malformed; the message names the file, the line and the problem."""


def attribute_year(attributes: Mapping[str, Any]) -> int | None:
    """``attributes["year"]`` as an int (an int, a whole float or a digit string), else None.

    Every layer that filters, featurises or prompts by year reads it here, so they agree."""
    value = attributes.get("year")
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


#: Attribute keys that name an item's genres or categories, in the order they are read.
GENRE_KEYS = ("genres", "categories", "category")


def attribute_genres(attributes: Mapping[str, Any]) -> tuple[str, ...]:
    """The item's genres: the first of ``genres``, ``categories``, ``category`` that is present,
    as distinct non-empty strings (a single string is one genre; other values are none).

    Every layer that filters, prompts, parses or explains by genre reads it here, so they agree."""
    value = next((attributes[k] for k in GENRE_KEYS if attributes.get(k) not in (None, "", [])), ())
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        return ()
    return tuple(dict.fromkeys(v.strip() for v in value if isinstance(v, str) and v.strip()))


#: Bounds on an item's attributes (what a catalogue upsert may carry).
MAX_ATTRIBUTES = 64  # keys per item
MAX_KEY_CHARS = 64
MAX_TEXT_CHARS = 2_000  # a string value
MAX_LIST_ITEMS = 100  # entries of a list value (each a short string or a number)
YEAR_RANGE = (1, 9999)


def check_attributes(attributes: Mapping[str, Any]) -> None:
    """Refuse attributes that no stage could read the same way, naming the key and the limit.

    Values are strings, finite numbers, booleans, ``None`` or flat lists of those (no nesting);
    ``genres`` / ``categories`` / ``category`` hold a string or a list of strings (the one reading
    of :func:`attribute_genres`); ``year``, when given, is a whole number in :data:`YEAR_RANGE`.

    Raises:
        ValueError: the first problem found.
    """
    if not isinstance(attributes, Mapping):
        raise ValueError("attributes must be an object of key → value")
    if len(attributes) > MAX_ATTRIBUTES:
        raise ValueError(f"attributes: {len(attributes)} keys, at most {MAX_ATTRIBUTES}")
    for key, value in attributes.items():
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
            raise ValueError(f"attribute key {str(key)[:80]!r}: 1-{MAX_KEY_CHARS} characters")
        values = value if isinstance(value, list | tuple) else [value]
        if isinstance(value, list | tuple) and len(value) > MAX_LIST_ITEMS:
            raise ValueError(f"attribute {key!r}: {len(value)} entries, at most {MAX_LIST_ITEMS}")
        for v in values:
            if isinstance(v, str):
                if len(v) > MAX_TEXT_CHARS:
                    raise ValueError(f"attribute {key!r}: a text over {MAX_TEXT_CHARS} characters")
            elif isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"attribute {key!r}: {v} is not a finite number")
            elif not (v is None or isinstance(v, bool | int | float)):
                raise ValueError(
                    f"attribute {key!r}: {type(v).__name__} values are not allowed (strings, "
                    "numbers, booleans, null or a flat list of those)"
                )
        if key in GENRE_KEYS and value is not None and not all(isinstance(v, str) for v in values):
            raise ValueError(f"attribute {key!r}: genres must be a string or a list of strings")
    if attributes.get("year") is not None:
        year = attribute_year(attributes)
        low, high = YEAR_RANGE
        if year is None or not low <= year <= high:
            raise ValueError(
                f"attribute 'year': {attributes['year']!r} is not a whole year in {low}-{high}"
            )


@dataclass(frozen=True)
class Item:
    """One catalogue entry.

    Attributes:
        item_id: External id, as the source file spells it.
        title: Human-readable title (may include the year, as MovieLens titles do).
        description: Free text; empty when the source has none.
        attributes: Structured facts, e.g. ``{"genres": ["Comedy"], "year": 1995}``.
    """

    item_id: str
    title: str
    description: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def year(self) -> int | None:
        """The ``year`` attribute as an int (see :func:`attribute_year`)."""
        return attribute_year(self.attributes)

    @property
    def genres(self) -> tuple[str, ...]:
        """The ``genres`` attribute as distinct strings (see :func:`attribute_genres`)."""
        return attribute_genres(self.attributes)

    def text(self) -> str:
        """Title, attributes and description as one string (the default text-encoder input)."""
        parts = [self.title]
        if self.genres:
            parts.append("Genres: " + ", ".join(self.genres))
        for key in ("category", "brand", "year"):
            if self.attributes.get(key):
                parts.append(f"{key.capitalize()}: {self.attributes[key]}")
        if self.description:
            parts.append(self.description)
        return ". ".join(parts)


@dataclass(frozen=True)
class Interactions:
    """Columnar events over internal indices, in source-file order.

    Attributes:
        user: (N,) int32 user index.
        item: (N,) int32 item index.
        timestamp: (N,) int64 unix seconds (or any monotone clock).
        rating: (N,) float32 explicit rating, NaN where the source has none.
        context: Optional (N,) object array of scenario strings ("" where unknown).
    """

    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    rating: np.ndarray
    context: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.user)
        lengths = {len(self.item), len(self.timestamp), len(self.rating)}
        if self.context is not None:
            lengths.add(len(self.context))
        if lengths != {n}:
            raise ValueError(f"interaction columns differ in length: {sorted(lengths | {n})}")

    def __len__(self) -> int:
        return len(self.user)

    def take(self, index: np.ndarray) -> Interactions:
        """The rows at ``index`` (a boolean mask or integer positions), order preserved."""
        return Interactions(
            user=self.user[index],
            item=self.item[index],
            timestamp=self.timestamp[index],
            rating=self.rating[index],
            context=None if self.context is None else self.context[index],
        )

    def chronological_order(self) -> np.ndarray:
        """Positions sorted by (user, timestamp), ties kept in file order (a stable sort)."""
        return np.lexsort((np.arange(len(self)), self.timestamp, self.user))

    @staticmethod
    def concat(parts: Sequence[Interactions]) -> Interactions:
        with_context = any(p.context is not None for p in parts)

        def ctx(p: Interactions) -> np.ndarray:
            return p.context if p.context is not None else np.full(len(p), "", dtype=object)

        return Interactions(
            user=np.concatenate([p.user for p in parts]),
            item=np.concatenate([p.item for p in parts]),
            timestamp=np.concatenate([p.timestamp for p in parts]),
            rating=np.concatenate([p.rating for p in parts]),
            context=np.concatenate([ctx(p) for p in parts]) if with_context else None,
        )


@dataclass(frozen=True, eq=False)
class Dataset:
    """A catalogue, a user list and their interactions.

    Build one with :meth:`from_records` (which maps external ids to indices and validates) or with
    the
    loaders in :mod:`hyrec.data.loaders`.
    """

    name: str
    items: tuple[Item, ...]
    user_ids: np.ndarray  # (n_users,) str
    interactions: Interactions
    skipped: Mapping[str, int] = field(
        default_factory=dict
    )  # reason -> rows skipped on load (opt-in)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @cached_property
    def item_ids(self) -> np.ndarray:
        return np.array([it.item_id for it in self.items], dtype=object)

    @cached_property
    def item_index(self) -> dict[str, int]:
        return {it.item_id: i for i, it in enumerate(self.items)}

    @cached_property
    def user_index(self) -> dict[str, int]:
        return {u: i for i, u in enumerate(self.user_ids)}

    def titles(self) -> list[str]:
        return [it.title for it in self.items]

    def matrix(self, interactions: Interactions | None = None) -> sp.csr_matrix:
        """Binary user × item CSR matrix of ``interactions`` (default: all of them)."""
        return interaction_matrix(
            self.interactions if interactions is None else interactions, self.n_users, self.n_items
        )

    def with_interactions(self, interactions: Interactions, name: str | None = None) -> Dataset:
        return Dataset(name or self.name, self.items, self.user_ids, interactions, self.skipped)

    def with_items(self, items: Sequence[Item]) -> Dataset:
        """This dataset with ``items`` appended to the catalogue (interactions unchanged).

        Raises:
            DataError: an id that is already in the catalogue or repeated among ``items``.
        """
        counts = Counter(it.item_id for it in items)
        clash = sorted(i for i, n in counts.items() if n > 1 or i in self.item_index)
        if clash:
            raise DataError(
                f"item ids already in the catalogue of {self.name} or repeated: {clash}"
            )
        return Dataset(
            self.name, self.items + tuple(items), self.user_ids, self.interactions, self.skipped
        )

    def fingerprint(self) -> dict[str, Any]:
        """Counts plus a content hash, so a metrics file says exactly which data it measured."""
        h = hashlib.sha256()
        for it in self.items:
            h.update(it.item_id.encode())
            h.update(b"\x00")
        for col in (self.interactions.user, self.interactions.item, self.interactions.timestamp):
            h.update(np.ascontiguousarray(col).tobytes())
        h.update(np.nan_to_num(self.interactions.rating, nan=-1.0).astype(np.float32).tobytes())
        return {
            "name": self.name,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_interactions": len(self.interactions),
            "sha256": h.hexdigest()[:16],
        }

    @classmethod
    def from_records(
        cls,
        name: str,
        items: Sequence[Item],
        events: Sequence[tuple[str, str, int, float, str]],
        *,
        source: str = "<events>",
        skipped: Mapping[str, int] | None = None,
    ) -> Dataset:
        """Index external ids and validate.

        Args:
            name: Dataset name.
            items: Catalogue; item ids must be unique.
            events: ``(user_id, item_id, timestamp, rating, context)`` in file order; ``rating``
            may be NaN.
            source: File name used in error messages.
            skipped: Counts of rows the loader already skipped, by reason, carried into the dataset.

        Raises:
            DataError: duplicate item ids, or an event naming an unknown item (loaders check items
                line by line first, so this is the safety net for programmatic callers).
        """
        index: dict[str, int] = {}
        for it in items:
            if it.item_id in index:
                raise DataError(f"duplicate item id {it.item_id!r} in the catalogue of {name}")
            index[it.item_id] = len(index)
        users: dict[str, int] = {}
        u_col, i_col, t_col, r_col, c_col = [], [], [], [], []
        for n, (user, item, ts, rating, context) in enumerate(events, start=1):
            i = index.get(item)
            if i is None:
                raise DataError(
                    f"{source}: event {n} names item {item!r}, which is not in the catalogue"
                )
            u_col.append(users.setdefault(user, len(users)))
            i_col.append(i)
            t_col.append(ts)
            r_col.append(rating)
            c_col.append(context)
        has_context = any(c_col)
        inter = Interactions(
            user=np.asarray(u_col, dtype=np.int32),
            item=np.asarray(i_col, dtype=np.int32),
            timestamp=np.asarray(t_col, dtype=np.int64),
            rating=np.asarray(r_col, dtype=np.float32),
            context=np.asarray(c_col, dtype=object) if has_context else None,
        )
        users_arr = np.array(list(users), dtype=object)
        return cls(name, tuple(items), users_arr, inter, dict(skipped or {}))


def interaction_matrix(inter: Interactions, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary CSR matrix; repeated (user, item) pairs count once."""
    m = sp.csr_matrix(
        (np.ones(len(inter), dtype=np.float32), (inter.user, inter.item)), shape=(n_users, n_items)
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def to_implicit(ds: Dataset, min_rating: float) -> Dataset:
    """Keep events rated at least ``min_rating`` (events without a rating are kept)."""
    r = ds.interactions.rating
    keep = np.isnan(r) | (r >= min_rating)
    return ds.with_interactions(ds.interactions.take(keep))


def k_core(ds: Dataset, k: int) -> Dataset:
    """Iteratively drop users and items with fewer than ``k`` distinct interactions.

    Indices and catalogue are kept (dropped items simply have no events), so results stay
    comparable.
    Deterministic: it depends only on the data.
    """
    inter = ds.interactions
    keep = np.ones(len(inter), dtype=bool)
    while True:
        m = interaction_matrix(inter.take(keep), ds.n_users, ds.n_items)
        user_deg = np.diff(m.indptr)
        item_deg = np.asarray(m.sum(axis=0)).ravel()
        bad = keep & ((user_deg[inter.user] < k) | (item_deg[inter.item] < k))
        if not bad.any():
            return ds.with_interactions(inter.take(keep), name=f"{ds.name}-{k}core")
        keep &= ~bad
