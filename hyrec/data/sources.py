"""Where a dataset's files come from, and the one entry point that loads any supported dataset.

Resolution order for ``load_dataset(name, data_dir)``:

1. ``data_dir`` — the dataset's own folder (e.g. the one holding ``u.data``);
2. ``$HYREC_DATA_DIR/<name>/`` — a root with one folder per dataset;
3. the user cache, ``<platformdirs user cache>/hyrec/datasets/<name>/``;
4. a download from the official source (GroupLens for MovieLens) into that cache.

With no network and no local copy, :class:`DataUnavailableError` says how to supply the files.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import platformdirs

from .atomic import load_atomic
from .dataset import DataError, Dataset
from .generic import load_generic
from .movielens import load_ml100k, load_ml_csv, load_ml_dat
from .reader import BadLines

log = logging.getLogger(__name__)

GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
#: Official download for each name; the zip's top folder holds the dataset files.
DOWNLOADS: dict[str, tuple[str, str]] = {
    "ml-100k": (GROUPLENS + "ml-100k.zip", "ml-100k"),
    "ml-1m": (GROUPLENS + "ml-1m.zip", "ml-1m"),
    "ml-10m": (GROUPLENS + "ml-10m.zip", "ml-10M100K"),
    "ml-latest-small": (GROUPLENS + "ml-latest-small.zip", "ml-latest-small"),
    "ml-latest": (GROUPLENS + "ml-latest.zip", "ml-latest"),
}

Loader = Callable[..., Dataset]


class DataUnavailableError(DataError):
    """No local copy of a dataset and no way to download it."""


def detect_format(directory: Path) -> Loader:
    """Pick the loader from the files present in ``directory``."""
    if (directory / "u.data").exists():
        return load_ml100k
    if (directory / "ratings.dat").exists():
        return load_ml_dat
    if (directory / "ratings.csv").exists() and (directory / "movies.csv").exists():
        return load_ml_csv
    if any(directory.glob("*.inter")):
        return load_atomic
    if any((directory / f"events.{ext}").exists() for ext in ("csv", "jsonl")):
        return load_generic
    files = sorted(p.name for p in directory.iterdir())[:10] if directory.is_dir() else []
    raise DataError(
        f"{directory}: no known dataset format (looked for u.data, ratings.dat, "
        "ratings.csv + movies.csv, "
        f"*.inter, events.csv/events.jsonl); found {files or 'nothing'}"
    )


def cache_root() -> Path:
    return Path(platformdirs.user_cache_dir("hyrec")) / "datasets"


def resolve_data_dir(
    name: str, data_dir: str | Path | None = None, *, download: bool = True
) -> Path:
    """The folder holding ``name``'s files, downloading into the cache when it is nowhere local."""
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise DataUnavailableError(f"--data-dir {path} is not a directory")
        return path
    candidates = []
    if root := os.environ.get("HYREC_DATA_DIR"):
        candidates.append(Path(root).expanduser() / name)
    candidates.append(cache_root() / name)
    for path in candidates:
        if path.is_dir() and any(path.iterdir()):
            return path
    if download and name in DOWNLOADS:
        return _download(name, cache_root() / name)
    raise DataUnavailableError(_how_to_supply(name, candidates))


def _how_to_supply(name: str, looked: list[Path], error: Exception | None = None) -> str:
    where = ", ".join(str(p) for p in looked)
    src = f" from {DOWNLOADS[name][0]}" if name in DOWNLOADS else ""
    why = f" (download failed: {error})" if error else ""
    return (
        f"dataset {name!r} not found{why}. Looked in: {where}. "
        f"Download it{src} and unpack it, then either "
        "pass --data-dir <folder holding its files> "
        f"or set HYREC_DATA_DIR to a folder containing {name}/."
    )


def _download(name: str, dest: Path) -> Path:
    url, inner = DOWNLOADS[name]
    log.info("downloading %s from %s", name, url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        archive = Path(tmp) / "data.zip"
        try:
            with urllib.request.urlopen(url, timeout=30) as r, archive.open("wb") as f:
                shutil.copyfileobj(r, f)
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)
        except (OSError, zipfile.BadZipFile) as e:
            raise DataUnavailableError(_how_to_supply(name, [dest], e)) from e
        if dest.is_dir() and not any(dest.iterdir()):  # left empty by an interrupted run
            dest.rmdir()
        shutil.move(str(Path(tmp) / inner), dest)
    return dest


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    on_bad_lines: BadLines = "error",
    download: bool = True,
) -> Dataset:
    """Load a dataset by name from the first place that has it (see the module docstring).

    Args:
        name: ``ml-100k``, ``ml-1m``, ``ml-10m``, ``ml-latest-small``, ``ml-latest``, or the folder
        name of
            an atomic (UniSRec/RecBole) or generic CSV/JSONL dataset.
        data_dir: The dataset's own folder; overrides every other place.
        on_bad_lines: ``"error"`` (default) stops at the first malformed line; ``"skip"`` drops
        such lines
            and counts them in ``Dataset.skipped``.
        download: Allow a download from the official source when no local copy exists.
    """
    directory = resolve_data_dir(name, data_dir, download=download)
    loader = detect_format(directory)
    ds = loader(directory, on_bad_lines=on_bad_lines, name=name)
    if ds.skipped:
        log.warning("%s: skipped %d rows: %s", name, sum(ds.skipped.values()), dict(ds.skipped))
    return ds
