"""Where batch rows go: :class:`BatchOutput`, a resumable writer that writes each key exactly once.

Two formats, chosen by the name of ``out``:

* ``*.jsonl``: one JSON object per line, appended one batch per ``write`` (flushed and fsynced).
  A kill can leave a half-written last line; opening the file again cuts it off, so every line
  that remains is whole.
* anything else: a Parquet folder of ``part-NNNNNN.parquet`` files, one per ``write``, each
  written under a temporary name and renamed into place, so a part is either complete or absent.

Opening an existing output reads the keys it holds: those rows are not computed again, and
:meth:`BatchOutput.write` refuses a key that is already there, so a killed job restarted writes
every key exactly once. The job's :meth:`~agent.batch.config.BatchConfig.manifest` is kept
beside the rows (``<out>.job.json`` / ``<out>/_job.json``); a restart whose manifest differs is
refused rather than mixing the rows of two jobs. Parquet needs pyarrow (``pip install
'hyrec[ray]'`` brings it).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.batch.config import RAY_HINT

log = logging.getLogger(__name__)


class OutputMismatch(ValueError):
    """The output already holds rows of a different job."""


def is_jsonl(path: Path) -> bool:
    return Path(path).suffix.lower() in (".jsonl", ".ndjson")


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            f"Parquet output needs pyarrow: {RAY_HINT} (or pip install pyarrow), or write JSON "
            "lines instead (--out rows.jsonl)"
        ) from None
    return pa, pq


class BatchOutput:
    """The rows of one job, keyed by ``key_field`` (module doc).

    Args:
        path: A ``.jsonl`` file or a Parquet folder.
        manifest: The job's manifest; must equal the one an earlier run left there.
        key_field: The column every row is identified by.

    Raises:
        OutputMismatch: ``path`` holds rows of a job with another manifest.
    """

    def __init__(self, path: Path, manifest: Mapping[str, Any], key_field: str) -> None:
        self.path = Path(path)
        self.key_field = key_field
        self.jsonl = is_jsonl(self.path)
        self._manifest_path = (
            self.path.with_name(self.path.name + ".job.json")
            if self.jsonl
            else self.path / "_job.json"
        )
        self._check_manifest(dict(manifest))
        self.done: set[str] = self._recover()
        self._part = 1 + max((_part_number(p) for p in self._parts()), default=-1)

    # ---- reading what is there -----------------------------------------------------------------
    def _check_manifest(self, manifest: dict[str, Any]) -> None:
        if self._manifest_path.is_file():
            held = json.loads(self._manifest_path.read_text())
            if held != manifest:
                changed = sorted(k for k in {*held, *manifest} if held.get(k) != manifest.get(k))
                raise OutputMismatch(
                    f"{self.path} holds rows of another job (different {', '.join(changed)}); "
                    "write to a new --out, or delete it to start over"
                )
            return
        if self.jsonl:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        else:
            self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write(self._manifest_path, json.dumps(manifest, indent=2, sort_keys=True))

    def _recover(self) -> set[str]:
        if self.jsonl:
            if not self.path.exists():
                return set()
            _cut_partial_line(self.path)
            return {str(r[self.key_field]) for r in _jsonl_rows(self.path)}
        for stale in self.path.glob("*.tmp"):  # a part a kill interrupted: never renamed in
            stale.unlink(missing_ok=True)
        parts = self._parts()
        if not parts:
            return set()
        _, pq = _pyarrow()
        done: set[str] = set()
        for part in parts:
            done.update(
                map(str, pq.read_table(part, columns=[self.key_field])[self.key_field].to_pylist())
            )
        return done

    def _parts(self) -> list[Path]:
        return [] if self.jsonl else sorted(self.path.glob("part-*.parquet"))

    # ---- writing --------------------------------------------------------------------------------
    def write(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Append one batch durably; returns how many rows were written.

        Raises:
            ValueError: a row's key was written before (or twice in ``rows``): nothing is written.
        """
        if not rows:
            return 0
        keys = [str(r[self.key_field]) for r in rows]
        again = [k for k in keys if k in self.done]
        if again or len(set(keys)) != len(keys):
            raise ValueError(f"rows already written for {again[:5] or keys[:5]}: nothing written")
        if self.jsonl:
            data = "".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in rows)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        else:
            pa, pq = _pyarrow()
            table = pa.Table.from_pylist([dict(r) for r in rows])
            target = self.path / f"part-{self._part:06d}.parquet"
            tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
            pq.write_table(table, tmp)
            _fsync(tmp)
            os.replace(tmp, target)
            self._part += 1
        self.done.update(keys)
        return len(rows)


def read_rows(path: Path, key_field: str | None = None) -> list[dict[str, Any]]:
    """Every row of a batch output, sorted by ``key_field`` when given."""
    path = Path(path)
    if is_jsonl(path):
        rows = list(_jsonl_rows(path)) if path.exists() else []
    else:
        _, pq = _pyarrow()
        parts = sorted(path.glob("part-*.parquet"))
        rows = [r for p in parts for r in pq.read_table(p).to_pylist()]
    if key_field is not None:
        rows.sort(key=lambda r: str(r[key_field]))
    return rows


# ---- helpers -------------------------------------------------------------------------------------
def _jsonl_rows(path: Path) -> Iterable[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _cut_partial_line(path: Path) -> None:
    """Drop a last line without its newline (a write a kill interrupted)."""
    with path.open("rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        block, end = 65536, size
        while end > 0:
            start = max(0, end - block)
            f.seek(start)
            chunk = f.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        else:
            keep = 0
        log.warning("%s: dropping a partly written last line (%d bytes)", path, size - keep)
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())


def _part_number(path: Path) -> int:
    return int(path.stem.split("-")[1])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
