"""Line-level reading shared by every loader: decoding, splitting and bad-line policy.

Every problem is reported with the file and the 1-based line number. With ``on_bad_lines="skip"``
the
line is dropped instead and counted under its reason, so a caller can report exactly what was
skipped.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from .dataset import DataError

BadLines = Literal["error", "skip"]


class RowReader:
    """Reads delimited or JSONL rows from one file, applying one bad-line policy.

    Args:
        path: The file.
        encoding: Text encoding of the file (MovieLens 100K and 1M are latin-1).
        on_bad_lines: ``"error"`` raises :class:`DataError`; ``"skip"`` drops and counts the line.
        skipped: Shared counter of skipped lines by reason.
    """

    def __init__(
        self,
        path: Path,
        *,
        encoding: str = "utf-8",
        on_bad_lines: BadLines = "error",
        skipped: Counter[str] | None = None,
    ) -> None:
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        self.path = path
        self.encoding = encoding
        self.on_bad_lines = on_bad_lines
        self.skipped = skipped if skipped is not None else Counter()

    def bad(self, lineno: int, reason: str, detail: str = "") -> None:
        """Raise for a bad line, or count it when skipping is on."""
        if self.on_bad_lines == "skip":
            self.skipped[f"{self.path.name}: {reason}"] += 1
            return
        raise DataError(f"{self.path}:{lineno}: {reason}{': ' + detail if detail else ''}")

    def lines(self) -> Iterator[tuple[int, str]]:
        """Decoded, newline-stripped non-empty lines with their line numbers."""
        with self.path.open("rb") as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    line = raw.decode(self.encoding)
                except UnicodeDecodeError as e:
                    self.bad(lineno, f"cannot decode as {self.encoding}", str(e))
                    continue
                line = line.rstrip("\r\n")
                if line.strip():
                    yield lineno, line

    def split(
        self, sep: str, n_fields: int, *, at_least: bool = False
    ) -> Iterator[tuple[int, list[str]]]:
        """Lines split on ``sep``; a line with the wrong number of fields is a bad line."""
        for lineno, line in self.lines():
            fields = line.split(sep)
            ok = len(fields) >= n_fields if at_least else len(fields) == n_fields
            if not ok:
                self.bad(
                    lineno, f"expected {n_fields} fields separated by {sep!r}, got {len(fields)}"
                )
                continue
            yield lineno, fields

    def csv_dicts(
        self, required: tuple[str, ...], delimiter: str = ","
    ) -> Iterator[tuple[int, dict]]:
        """Rows of a CSV file with a header, as dicts; the header must name every ``required``
        column.

        Lines are decoded one at a time, so an undecodable line is reported (or skipped) by its
        number.
        """
        lineno = 0

        def decoded(f) -> Iterator[str]:
            nonlocal lineno
            for lineno, raw in enumerate(f, start=1):  # noqa: B007 - read by the reader below
                try:
                    yield raw.decode(self.encoding)
                except UnicodeDecodeError as e:
                    self.bad(lineno, f"cannot decode as {self.encoding}", str(e))
                    yield "\n"  # the csv reader skips blank rows, so numbering stays right

        with self.path.open("rb") as f:
            reader = csv.DictReader(decoded(f), delimiter=delimiter)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(f"{self.path}: missing column(s) {missing}; header is {header}")
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as e:
                    self.bad(lineno, "malformed CSV", str(e))
                    continue
                if None in row or any(row.get(c) is None for c in header):
                    self.bad(lineno, f"expected {len(header)} columns")
                    continue
                yield lineno, row

    def jsonl(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Objects of a JSON-lines file; a line that is not a JSON object is a bad line."""
        for lineno, line in self.lines():
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                self.bad(lineno, "invalid JSON", str(e))
                continue
            if not isinstance(obj, dict):
                self.bad(lineno, "expected a JSON object")
                continue
            yield lineno, obj


def parse_int(reader: RowReader, lineno: int, value: str, column: str) -> int | None:
    """An integer field, or ``None`` after reporting a bad line."""
    try:
        return int(value)
    except ValueError:
        try:  # some exports write timestamps as floats ("881250949.0")
            f = float(value)
            if f.is_integer():
                return int(f)
        except ValueError:
            pass
        reader.bad(lineno, f"{column} is not an integer", repr(value))
        return None


def parse_float(reader: RowReader, lineno: int, value: str, column: str) -> float | None:
    """A float field, or ``None`` after reporting a bad line."""
    try:
        return float(value)
    except ValueError:
        reader.bad(lineno, f"{column} is not a number", repr(value))
        return None


__all__ = ["BadLines", "RowReader", "parse_float", "parse_int"]
