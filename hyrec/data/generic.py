"""The generic format: your own catalogue and events as CSV or JSON lines.

A dataset folder holds one items table and one events table, each either ``.csv`` (with a header)
or ``.jsonl`` (one JSON object per line), never both:

* ``items.csv`` / ``items.jsonl``: ``item_id`` and ``title`` (required, non-empty) and
  ``description`` (optional); every other column becomes an entry of :attr:`Item.attributes`.
  In CSV, ``genres``, ``tags`` and ``categories`` are ``|``-separated lists, ``year`` is an integer,
  other values stay strings and empty cells are left out. In JSONL, values keep their JSON type
  (a ``|``-separated string in a list column is split; ``year`` must be an integer).
* ``events.csv`` / ``events.jsonl``: ``user_id``, ``item_id`` and ``timestamp`` (required);
  ``rating`` (optional number; empty or absent means no rating) and ``context`` (optional scenario
  string such as ``"mobile"``). ``timestamp`` is integer unix seconds or an ISO-8601 string
  (``2024-05-01T12:30:00+02:00``); an ISO time without a zone is read as UTC.

Events keep their file order, so ties in time are broken by it. See ``docs/data-formats.md``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .dataset import DataError, Dataset, Item
from .reader import BadLines, RowReader

ITEM_COLUMNS = ("item_id", "title")
EVENT_COLUMNS = ("user_id", "item_id", "timestamp")
LIST_COLUMNS = ("genres", "tags", "categories")  # "|"-separated in CSV


def load_generic(
    directory: Path, *, on_bad_lines: BadLines = "error", name: str | None = None
) -> Dataset:
    """Load ``items.{csv,jsonl}`` and ``events.{csv,jsonl}`` (format: see the module docstring).

    Args:
        directory: The dataset folder.
        on_bad_lines: ``"error"`` raises :class:`DataError` naming file and line; ``"skip"`` drops
            and counts bad lines, duplicate items and events naming an unknown item.
        name: Dataset name; defaults to the folder name.

    Raises:
        DataError: a table is missing or present as both CSV and JSONL, a required column is
            missing, or a line is bad (unless skipped).
    """
    skipped: Counter[str] = Counter()
    items_path, events_path = _table_path(directory, "items"), _table_path(directory, "events")
    reader = RowReader(items_path, on_bad_lines=on_bad_lines, skipped=skipped)
    items = _read_items(reader)
    reader = RowReader(events_path, on_bad_lines=on_bad_lines, skipped=skipped)
    events = _read_events(reader, {it.item_id for it in items}, items_path.name)
    return Dataset.from_records(
        name or directory.name, items, events, source=str(events_path), skipped=skipped
    )


def _table_path(directory: Path, table: str) -> Path:
    found = [p for p in (directory / f"{table}.csv", directory / f"{table}.jsonl") if p.is_file()]
    if len(found) == 2:
        raise DataError(
            f"{directory}: both {table}.csv and {table}.jsonl exist; keep only one of them"
        )
    if not found:
        raise DataError(f"{directory}: no {table}.csv or {table}.jsonl (see docs/data-formats.md)")
    return found[0]


def _rows(reader: RowReader, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a CSV or JSONL table as dicts; a JSONL object without a required key is bad."""
    if reader.path.suffix == ".csv":
        yield from reader.csv_dicts(required)
        return
    for lineno, obj in reader.jsonl():
        missing = [c for c in required if obj.get(c) is None]
        if missing:
            reader.bad(lineno, "missing required key(s)", str(missing))
            continue
        yield lineno, obj


def _id(reader: RowReader, lineno: int, value: Any, column: str) -> str | None:
    """An id (a string or an integer) as a stripped, non-empty string, or None after reporting."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    reader.bad(lineno, f"{column} must be a non-empty string or integer", repr(value))
    return None


def _read_items(reader: RowReader) -> list[Item]:
    items: list[Item] = []
    seen: dict[str, int] = {}
    for lineno, row in _rows(reader, ITEM_COLUMNS):
        item_id = _id(reader, lineno, row.pop("item_id"), "item_id")
        title, description = row.pop("title"), row.pop("description", None) or ""
        if item_id is None:
            continue
        if item_id in seen:
            reader.bad(lineno, "duplicate item id", f"{item_id!r} (first on line {seen[item_id]})")
            continue
        if not isinstance(title, str) or not title.strip() or not isinstance(description, str):
            reader.bad(lineno, "title must be a non-empty string and description a string")
            continue
        attributes = _attributes(reader, lineno, row)
        if attributes is not None:
            seen[item_id] = lineno
            items.append(Item(item_id, title.strip(), description.strip(), attributes))
    return items


def _attributes(reader: RowReader, lineno: int, row: dict[str, Any]) -> dict[str, Any] | None:
    """The remaining columns as attributes; None after reporting a bad ``year``."""
    attributes: dict[str, Any] = {}
    for key, value in row.items():
        if value is None or value == "":
            continue
        if key in LIST_COLUMNS and isinstance(value, str):
            value = [v.strip() for v in value.split("|") if v.strip()]
        elif key == "year":
            value = _year(value)
            if value is None:
                reader.bad(lineno, "year is not an integer", repr(row[key]))
                return None
        attributes[key] = value
    return attributes


def _year(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _read_events(
    reader: RowReader, catalogue: set[str], items_file: str
) -> list[tuple[str, str, int, float, str]]:
    events = []
    for lineno, row in _rows(reader, EVENT_COLUMNS):
        event = _event(reader, lineno, row)
        if event is None:
            continue
        if event[1] not in catalogue:
            reader.bad(lineno, f"item is not in {items_file}", repr(event[1]))
            continue
        events.append(event)
    return events


def _event(
    reader: RowReader, lineno: int, row: dict[str, Any]
) -> tuple[str, str, int, float, str] | None:
    """One ``(user, item, timestamp, rating, context)`` event, or None after reporting."""
    if (user := _id(reader, lineno, row["user_id"], "user_id")) is None:
        return None
    if (item := _id(reader, lineno, row["item_id"], "item_id")) is None:
        return None
    if (ts := _timestamp(reader, lineno, row["timestamp"])) is None:
        return None
    if (rating := _rating(reader, lineno, row.get("rating"))) is None:
        return None
    context = row.get("context") or ""
    if not isinstance(context, str):
        reader.bad(lineno, "context must be a string", repr(context))
        return None
    return user, item, ts, rating, context.strip()


def _timestamp(reader: RowReader, lineno: int, value: Any) -> int | None:
    """Integer unix seconds, or an ISO-8601 string converted to them; None after reporting."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return math.floor(moment.timestamp())
    reader.bad(
        lineno, "timestamp is neither integer unix seconds nor an ISO-8601 string", repr(value)
    )
    return None


def _rating(reader: RowReader, lineno: int, value: Any) -> float | None:
    """A finite rating, NaN when absent or empty, or None after reporting."""
    if value is None or value == "":
        return math.nan
    if not isinstance(value, bool):
        try:
            rating = float(value)
        except (TypeError, ValueError):
            rating = math.nan
        if math.isfinite(rating):
            return rating
    reader.bad(lineno, "rating is not a number", repr(value))
    return None


__all__ = ["load_generic"]
