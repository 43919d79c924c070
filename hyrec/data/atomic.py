"""RecBole "atomic" files, as UniSRec ships its Amazon datasets (Scientific, Pantry, Office, ...).

Every atomic table is tab-separated under a ``field:type`` header (types ``token``, ``float``, and
``token_seq``: space-separated tokens). Two layouts of interactions are read:

* **Split sequences** (UniSRec): ``<stem>.train.inter``, ``<stem>.valid.inter`` and
  ``<stem>.test.inter`` with columns ``user_id:token  item_id_list:token_seq  item_id:token``,
  i.e. a (truncated) history and the item that followed it. Ids there are UniSRec's integer
  indices; ``<stem>.item2index`` / ``<stem>.user2index`` (headerless ``raw_id<TAB>index`` lines)
  map them back to Amazon ASINs and reviewer ids.
* **Plain events**: one ``<stem>.inter`` with ``user_id:token item_id:token`` and optional
  ``rating:float timestamp:float`` columns, one event per line.

``<stem>.text`` (``item_id:token  text:token_seq``, keyed by raw id) holds each item's text.

Cite Hou et al., "Towards Universal Sequence Representation Learning for Recommender Systems",
KDD 2022, and Zhao et al., "RecBole: Towards a Unified, Comprehensive and Efficient Framework for
Recommendation Algorithms", CIKM 2021.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .dataset import DataError, Dataset, Item
from .reader import BadLines, RowReader, parse_float, parse_int

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
TITLE_CHARS = 80  # titles cut from UniSRec text stay short enough for result tables and prompts


@dataclass
class _Files:
    stem: str
    splits: dict[str, Path]  # "train"/"valid"/"test" -> file, in that order; empty for plain events
    plain: Path | None


@dataclass
class _Row:
    lineno: int
    prefix: list[str]  # item tokens, oldest first
    target: str


def load_atomic(
    directory: Path, *, on_bad_lines: BadLines = "error", name: str | None = None
) -> Dataset:
    """Load a RecBole/UniSRec atomic dataset from ``directory``.

    Items come from ``<stem>.text``, in ``item2index`` order when that file exists. UniSRec's text
    is ``"<title>. <categories>. <brand>."`` with no separate title field, so an item's **title is
    the text up to the first ". "** (cut at a word boundary to 80 characters) and its
    **description is the full text**. An item with no text is titled by its id. Without a
    ``.text`` file the catalogue is every item the interactions name, titled by id.

    Split-sequence files are **expanded into one event per item**: each user's training sequence,
    then the validation target, then the test target, with synthetic timestamps ``0, 1, 2, ...``
    (positions in the user's sequence) and no rating. :func:`hyrec.data.splits.leave_one_out`
    therefore reproduces the dataset's own split exactly; a global temporal split is meaningless on
    these clocks. A user's training rows may be oldest first or, as UniSRec writes them, newest
    first; the full sequence is rebuilt from the rows (whose histories UniSRec truncates to 50
    items), and every row must agree with it.

    Plain ``.inter`` events keep their file order; without a timestamp column, line order is time.

    Args:
        directory: Folder holding the atomic files of one dataset.
        on_bad_lines: ``"error"`` raises :class:`DataError` naming file and line; ``"skip"`` drops
            and counts bad lines in ``Dataset.skipped``.
        name: Dataset name; defaults to the files' stem (``Scientific`` for
            ``Scientific.train.inter``).

    Raises:
        DataError: no or ambiguous ``.inter`` files, a missing column, or a bad line (unless
            skipped).
    """
    files = _find_files(directory, name)
    skipped: Counter[str] = Counter()

    def reader(path: Path) -> RowReader:
        return RowReader(path, on_bad_lines=on_bad_lines, skipped=skipped)

    def optional(suffix: str, read: Callable[[RowReader], dict[str, str]]) -> dict[str, str] | None:
        path = directory / f"{files.stem}.{suffix}"
        return read(reader(path)) if path.is_file() else None

    item_map = optional("item2index", _read_index)
    user_map = optional("user2index", _read_index)
    texts = optional("text", _read_text)
    catalogue = _catalogue(item_map, texts)
    ids = _Ids(item_map, user_map, None if catalogue is None else {it.item_id for it in catalogue})
    if files.splits:
        events = _sequence_events({s: reader(p) for s, p in files.splits.items()}, ids)
    else:
        events = _plain_events(reader(files.plain), ids)
    if catalogue is None:
        seen = dict.fromkeys(e[1] for e in events)
        catalogue = [Item(i, i) for i in seen]
    source = str(files.plain or next(iter(files.splits.values())))
    return Dataset.from_records(
        name or files.stem, catalogue, events, source=source, skipped=skipped
    )


def _find_files(directory: Path, name: str | None) -> _Files:
    by_stem: dict[str, _Files] = {}
    for path in sorted(directory.glob("*.inter")):
        base = path.name.removesuffix(".inter")
        stem, _, part = base.rpartition(".")
        if stem and part in SPLITS:
            by_stem.setdefault(stem, _Files(stem, {}, None)).splits[part] = path
        else:
            by_stem.setdefault(base, _Files(base, {}, None)).plain = path
    if not by_stem:
        raise DataError(f"{directory}: no .inter file")
    if len(by_stem) > 1:
        matching = [s for s in by_stem if name and s.lower() == name.lower()]
        if len(matching) != 1:
            raise DataError(
                f"{directory}: .inter files of several datasets {sorted(by_stem)}; "
                "keep one dataset per folder, or load it under one of these names"
            )
        by_stem = {matching[0]: by_stem[matching[0]]}
    files = next(iter(by_stem.values()))
    files.splits = {s: files.splits[s] for s in SPLITS if s in files.splits}
    if files.splits and files.plain:
        log.info("%s: using the train/valid/test files; ignoring %s", directory, files.plain.name)
        files.plain = None
    return files


def _header(
    reader: RowReader, lines: Iterator[tuple[int, str]], required: tuple[str, ...]
) -> list[str]:
    """Column names from an atomic ``field:type`` header; every ``required`` field must be there."""
    first = next(lines, None)
    if first is None:
        raise DataError(
            f"{reader.path}: empty file; expected a header like 'user_id:token<TAB>...'"
        )
    lineno, line = first
    columns = line.split("\t")
    if not all(":" in c for c in columns):
        raise DataError(
            f"{reader.path}:{lineno}: expected a header of field:type columns, got {line!r}"
        )
    names = [c.split(":", 1)[0] for c in columns]
    missing = [c for c in required if c not in names]
    if missing:
        raise DataError(f"{reader.path}: missing column(s) {missing}; header is {columns}")
    return names


def _table(reader: RowReader, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of an atomic table with a header, as dicts keyed by field name."""
    lines = reader.lines()
    names = _header(reader, lines, required)
    for lineno, line in lines:
        fields = line.split("\t")
        if len(fields) != len(names):
            reader.bad(
                lineno, f"expected {len(names)} fields separated by '\\t', got {len(fields)}"
            )
            continue
        yield lineno, dict(zip(names, fields, strict=True))


def _read_index(reader: RowReader) -> dict[str, str]:
    """``raw_id<TAB>index`` lines → {index token: raw id}, in index order."""
    by_index: dict[int, str] = {}
    seen: dict[str, int] = {}
    for lineno, (raw, index) in reader.split("\t", 2):
        raw, i = raw.strip(), parse_int(reader, lineno, index, "index")
        if i is None:
            continue
        if not raw:
            reader.bad(lineno, "empty id")
        elif raw in seen:
            reader.bad(lineno, "duplicate id", f"{raw!r} (first on line {seen[raw]})")
        elif i in by_index:
            reader.bad(lineno, "duplicate index", f"{i} (already {by_index[i]!r})")
        else:
            seen[raw] = lineno
            by_index[i] = raw
    return {str(i): by_index[i] for i in sorted(by_index)}


def _read_text(reader: RowReader) -> dict[str, str]:
    """``item_id<TAB>text`` lines → {raw id: text}; the header is optional, a tab-less line has no
    text."""
    texts: dict[str, str] = {}
    seen: dict[str, int] = {}
    for n, (lineno, line) in enumerate(reader.lines()):
        item_id, _, text = line.partition("\t")
        item_id = item_id.strip()
        if n == 0 and item_id.startswith("item_id:"):
            continue  # the header
        if item_id in seen:
            reader.bad(lineno, "duplicate item id", f"{item_id!r} (first on line {seen[item_id]})")
            continue
        seen[item_id] = lineno
        texts[item_id] = text.strip()
    return texts


def _title(text: str) -> str:
    """The title part of UniSRec item text: up to the first ". ", at most ``TITLE_CHARS`` long."""
    head = text.split(". ", 1)[0].strip().rstrip(".").strip()
    if len(head) > TITLE_CHARS:
        head = head[:TITLE_CHARS].rsplit(" ", 1)[0].rstrip(" ,;:") + "…"
    return head


def _catalogue(item_map: dict[str, str] | None, texts: dict[str, str] | None) -> list[Item] | None:
    if texts is None:
        return None if item_map is None else [Item(i, i) for i in item_map.values()]
    order = list(dict.fromkeys([*(item_map or {}).values(), *texts]))
    no_text = sum(1 for i in order if not texts.get(i))
    if no_text:
        log.warning("%d of %d items have no text; they are titled by id", no_text, len(order))
    return [Item(i, _title(texts.get(i, "")) or i, texts.get(i, "")) for i in order]


@dataclass
class _Ids:
    """Maps tokens in .inter files to raw ids and checks them against the catalogue."""

    items: dict[str, str] | None  # index token -> raw item id
    users: dict[str, str] | None  # index token -> raw user id
    catalogue: set[str] | None

    def item(self, reader: RowReader, lineno: int, token: str) -> str | None:
        raw = token if self.items is None else self.items.get(token)
        if not token:
            reader.bad(lineno, "item_id is empty")
            raw = None
        elif raw is None:
            reader.bad(lineno, "item is not in the item2index file", repr(token))
        elif self.catalogue is not None and raw not in self.catalogue:
            reader.bad(lineno, "item is not in the .text file", repr(raw))
            raw = None
        return raw

    @cached_property
    def _known(self) -> dict[str, str] | None:
        """Token -> raw id for every acceptable item; None when every non-empty token is."""
        if self.items is not None:
            ok = self.catalogue
            return {t: raw for t, raw in self.items.items() if ok is None or raw in ok}
        return None if self.catalogue is None else {raw: raw for raw in self.catalogue}

    def check(self, reader: RowReader, lineno: int, tokens: list[str]) -> bool:
        """Whether every token names an acceptable item; reports the first one that does not."""
        known = self._known
        if all(tokens) if known is None else all(map(known.__contains__, tokens)):
            return True  # the fast path, one C-level pass
        for token in tokens:
            if self.item(reader, lineno, token) is None:
                break
        return False

    def raw(self, token: str) -> str:
        """The raw id of a token that passed :meth:`check`."""
        return token if self._known is None else self._known[token]

    def user(self, reader: RowReader, lineno: int, token: str) -> str | None:
        raw = token if self.users is None else self.users.get(token)
        if not token:
            reader.bad(lineno, "user_id is empty")
            raw = None
        elif raw is None:
            reader.bad(lineno, "user is not in the user2index file", repr(token))
        return raw


def _plain_events(reader: RowReader, ids: _Ids) -> list[tuple[str, str, int, float, str]]:
    events = []
    for lineno, row in _table(reader, ("user_id", "item_id")):
        rating = (
            parse_float(reader, lineno, row["rating"], "rating") if "rating" in row else math.nan
        )
        ts = (
            parse_float(reader, lineno, row["timestamp"], "timestamp")
            if "timestamp" in row
            else lineno
        )
        if rating is None or ts is None:
            continue
        if not math.isfinite(ts):
            reader.bad(lineno, "timestamp is not finite", repr(row["timestamp"]))
            continue
        user = ids.user(reader, lineno, row["user_id"].strip())
        if user is None:
            continue
        if (item := ids.item(reader, lineno, row["item_id"].strip())) is not None:
            events.append((user, item, int(ts), rating, ""))
    return events


def _sequence_rows(reader: RowReader, ids: _Ids) -> Iterator[tuple[str, _Row]]:
    """Rows of a split file as (raw user id, row of item *tokens*)."""
    for lineno, row in _table(reader, ("user_id", "item_id_list", "item_id")):
        user = ids.user(reader, lineno, row["user_id"].strip())
        tokens = [*row["item_id_list"].split(), row["item_id"].strip()]
        if user is not None and ids.check(reader, lineno, tokens):
            yield user, _Row(lineno, tokens[:-1], tokens[-1])


def _sequence_events(
    readers: dict[str, RowReader], ids: _Ids
) -> list[tuple[str, str, int, float, str]]:
    """Each user's sequence (train items, valid target, test target) as events timed by position."""
    rows: dict[str, dict[str, list[_Row]]] = {}
    for split, reader in readers.items():
        for user, row in _sequence_rows(reader, ids):
            rows.setdefault(user, {}).setdefault(split, []).append(row)
    rank = {raw: n for n, raw in enumerate((ids.users or {}).values())}  # user2index order
    events = []
    for user in sorted(rows, key=lambda u: rank.get(u, len(rank))):
        by_split = rows[user]
        history: list[str] = []
        for split, reader in readers.items():
            extend = _extend_train if split == "train" else _extend_target
            history = extend(reader, by_split.get(split, []), history)
        events.extend((user, ids.raw(t), pos, math.nan, "") for pos, t in enumerate(history))
    return events


def _continue(history: list[str], prefix: list[str]) -> bool:
    """Make ``history`` end with ``prefix`` (extending it on the left); False if they disagree."""
    n = min(len(history), len(prefix))
    if history[len(history) - n :] != prefix[len(prefix) - n :]:
        return False
    history[:0] = prefix[: len(prefix) - n]
    return True


def _extend_train(reader: RowReader, rows: list[_Row], history: list[str]) -> list[str]:
    """``history`` plus a user's training rows, each of which predicts the item after its prefix."""
    if len(rows) > 1 and len(rows[0].prefix) > len(rows[-1].prefix):
        rows = rows[::-1]  # UniSRec writes a user's rows newest first
    for row in rows:
        if _continue(history, row.prefix):
            history.append(row.target)
        else:
            reader.bad(row.lineno, "item_id_list does not continue the user's earlier rows")
    return history


def _extend_target(reader: RowReader, rows: list[_Row], history: list[str]) -> list[str]:
    """``history`` plus the one target a user has in the valid or test file."""
    for extra in rows[1:]:
        reader.bad(extra.lineno, "a second row for this user", f"first on line {rows[0].lineno}")
    if rows and _continue(history, rows[0].prefix):
        history.append(rows[0].target)
    elif rows:
        reader.bad(rows[0].lineno, "item_id_list does not end the user's earlier sequence")
    return history


__all__ = ["load_atomic"]
