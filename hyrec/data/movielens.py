"""MovieLens loaders (GroupLens): 100K (``u.data``/``u.item``), 1M and 10M (``::`` ``.dat``),
latest (CSV).

MovieLens has no plot text; an item's description is left empty and its genres and year go into
attributes
(the text encoder's template reads them). Tags from ``tags.dat``/``tags.csv`` become an item's
``tags``
attribute. Cite Harper & Konstan, "The MovieLens Datasets: History and Context", ACM TiiS 2015.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from pathlib import Path

from .dataset import DataError, Dataset, Item
from .reader import BadLines, RowReader, parse_float, parse_int

#: u.genre of the 100K release, in flag order (used when the file is missing).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

_YEAR = re.compile(r"\((\d{4})\)\s*$")


def _year(title: str) -> int | None:
    m = _YEAR.search(title)
    return int(m.group(1)) if m else None


def _events(
    reader: RowReader, rows, known_items: dict[str, int]
) -> list[tuple[str, str, int, float, str]]:
    """(user, item, timestamp, rating, "") from rows of [user, item, rating, timestamp] fields."""
    events = []
    for lineno, (user, item, rating_s, ts_s) in rows:
        rating = parse_float(reader, lineno, rating_s, "rating")
        ts = parse_int(reader, lineno, ts_s, "timestamp")
        if rating is None or ts is None:
            continue
        if not math.isfinite(rating):
            reader.bad(lineno, "rating is not a finite number", repr(rating_s))
            continue
        item = item.strip()
        if item not in known_items:
            reader.bad(lineno, "item id not in the catalogue", repr(item))
            continue
        events.append((user.strip(), item, ts, rating, ""))
    return events


def _check_unique(reader: RowReader, items: list[Item], seen: dict[str, int], lineno: int) -> None:
    """Drop the item just appended if its id was seen before (reporting the line)."""
    item_id = items[-1].item_id
    if item_id in seen:
        items.pop()
        reader.bad(lineno, "duplicate item id", f"{item_id!r} (first on line {seen[item_id]})")
        return
    seen[item_id] = lineno


def load_ml100k(
    directory: Path, *, on_bad_lines: BadLines = "error", name: str = "ml-100k"
) -> Dataset:
    """MovieLens 100K: ``u.item`` (pipe-separated, latin-1, 19 genre flags) and ``u.data``
    (tab-separated)."""
    skipped: Counter[str] = Counter()
    genre_names = _ml100k_genres(directory)
    reader = RowReader(
        directory / "u.item", encoding="latin-1", on_bad_lines=on_bad_lines, skipped=skipped
    )
    items: list[Item] = []
    seen: dict[str, int] = {}
    for lineno, f in reader.split("|", 5 + len(genre_names)):
        flags = f[5:]
        if any(x not in ("0", "1") for x in flags):
            reader.bad(lineno, "genre flags must be 0 or 1", repr(flags))
            continue
        title = f[1].strip()
        attrs: dict = {
            "genres": [
                g for g, x in zip(genre_names, flags, strict=True) if x == "1" and g != "unknown"
            ]
        }
        if (year := _year(title)) is not None:
            attrs["year"] = year
        if f[2]:
            attrs["release_date"] = f[2]
        items.append(Item(f[0].strip(), title, "", attrs))
        _check_unique(reader, items, seen, lineno)
    reader = RowReader(
        directory / "u.data", encoding="latin-1", on_bad_lines=on_bad_lines, skipped=skipped
    )
    events = _events(reader, reader.split("\t", 4), seen)
    return Dataset.from_records(name, items, events, source=str(reader.path), skipped=skipped)


def _ml100k_genres(directory: Path) -> list[str]:
    path = directory / "u.genre"
    if not path.exists():  # the list is fixed in the 100K release
        return list(ML100K_GENRES)
    reader = RowReader(
        path, encoding="latin-1"
    )  # always strict: a wrong genre list shifts every flag
    pairs = [(parse_int(reader, n, f[1], "genre index"), f[0]) for n, f in reader.split("|", 2)]
    return [g for _, g in sorted(pairs)]


def load_ml_dat(
    directory: Path, *, on_bad_lines: BadLines = "error", name: str = "ml-1m"
) -> Dataset:
    """MovieLens 1M / 10M: ``movies.dat`` (``id::title::A|B``) and ``ratings.dat`` (``u::i::r::t``).

    1M is latin-1 and 10M is UTF-8; the encoding is chosen by trying UTF-8 first on the movie file.
    """
    skipped: Counter[str] = Counter()
    movies = directory / "movies.dat"
    encoding = "utf-8"
    try:
        movies.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        encoding = "latin-1"
    except FileNotFoundError as e:
        raise DataError(f"{movies}: file not found") from e
    tags = _tags_dat(directory / "tags.dat", on_bad_lines, skipped)
    reader = RowReader(movies, encoding=encoding, on_bad_lines=on_bad_lines, skipped=skipped)
    items: list[Item] = []
    seen: dict[str, int] = {}
    for lineno, f in reader.split("::", 3):
        items.append(_movie(f[0], f[1], f[2], tags))
        _check_unique(reader, items, seen, lineno)
    reader = RowReader(
        directory / "ratings.dat", encoding=encoding, on_bad_lines=on_bad_lines, skipped=skipped
    )
    events = _events(reader, reader.split("::", 4), seen)
    return Dataset.from_records(name, items, events, source=str(reader.path), skipped=skipped)


def _tags_dat(path: Path, on_bad_lines: BadLines, skipped: Counter[str]) -> dict[str, list[str]]:
    tags: dict[str, list[str]] = defaultdict(list)
    if path.exists():
        reader = RowReader(path, on_bad_lines=on_bad_lines, skipped=skipped)
        for _, f in reader.split("::", 4):
            if f[2] not in tags[f[1]]:
                tags[f[1]].append(f[2])
    return tags


def _movie(movie_id: str, title: str, genres: str, tags: dict[str, list[str]]) -> Item:
    title = title.strip()
    attrs: dict = {"genres": [g for g in genres.split("|") if g and g != "(no genres listed)"]}
    if (year := _year(title)) is not None:
        attrs["year"] = year
    if tags.get(movie_id):
        attrs["tags"] = tags[movie_id][:20]
    return Item(movie_id.strip(), title, "", attrs)


def load_ml_csv(
    directory: Path, *, on_bad_lines: BadLines = "error", name: str = "ml-latest-small"
) -> Dataset:
    """MovieLens "latest" / 20M / 25M / 32M CSV: ``movies.csv``, ``ratings.csv``, optional
    ``tags.csv``."""
    skipped: Counter[str] = Counter()
    tags: dict[str, list[str]] = defaultdict(list)
    if (directory / "tags.csv").exists():
        reader = RowReader(directory / "tags.csv", on_bad_lines=on_bad_lines, skipped=skipped)
        for _, row in reader.csv_dicts(("movieId", "tag")):
            if row["tag"] not in tags[row["movieId"]]:
                tags[row["movieId"]].append(row["tag"])
    reader = RowReader(directory / "movies.csv", on_bad_lines=on_bad_lines, skipped=skipped)
    items: list[Item] = []
    seen: dict[str, int] = {}
    for lineno, row in reader.csv_dicts(("movieId", "title", "genres")):
        items.append(_movie(row["movieId"], row["title"], row["genres"], tags))
        _check_unique(reader, items, seen, lineno)
    reader = RowReader(directory / "ratings.csv", on_bad_lines=on_bad_lines, skipped=skipped)
    cols = ("userId", "movieId", "rating", "timestamp")
    rows = ((n, [r[c] for c in cols]) for n, r in reader.csv_dicts(cols))
    events = _events(reader, rows, seen)
    return Dataset.from_records(name, items, events, source=str(reader.path), skipped=skipped)
