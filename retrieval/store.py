"""The item store: catalogue vectors and metadata in a Chroma collection, nearest-neighbour search.

:class:`ItemStore` keeps one record per catalogue :class:`~hyrec.data.Item` in a cosine-space
Chroma collection (HNSW index, Malkov & Yashunin, "Efficient and robust approximate nearest
neighbor search using Hierarchical Navigable Small World graphs", TPAMI 2018), either embedded on
disk (``chromadb.PersistentClient``) or on a running Chroma server (``chromadb.HttpClient``).
Embeddings are always passed in: the collection has no embedding function, because Chroma's
default one downloads a model and fails offline.

Each record holds the item's vector and this metadata (nothing else, no document text):

* ``title`` (str) — :attr:`Item.title`;
* ``year`` (int) — :attr:`Item.year`: ``attributes["year"]`` when it is a whole number (an int, a
  whole float or a string of digits);
* ``genres`` (list of str) — ``attributes["genres"]``, only when non-empty (Chroma rejects empty
  lists); likewise every other attribute whose value is a non-empty list of strings (``tags``,
  ``categories``) under its own key;
* every scalar attribute (str, int, float, bool; e.g. ``category``, ``brand``) under its own key,
  except keys that start with ``#`` or ``$`` (reserved by Chroma) or clash with the keys here;
* ``content_hash`` (str) — sha256 of the item's title, description, attributes and the metadata
  derived from them;
* ``vector_hash`` (str) — sha256 of the float32 vector's bytes.

:meth:`ItemStore.sync` compares both hashes with the stored ones to skip unchanged items. Given
vectors, a record changes when its item or its vector changed (so a new model or template, which
changes every vector, rewrites every record). Given an :class:`ItemEmbedder`, only items whose
content changed are embedded and written: after changing the embedder's model or template, sync
once with precomputed vectors (or into a new collection).

Filter with :class:`Filter` (``genres_any``, ``genres_none``, ``year_min``, ``year_max``,
``exclude_ids``); genre names match exactly (case-sensitive) and unknown ones match nothing.
Chroma's ``where`` syntax on these keys works too, through :meth:`Filter.to_where` or the raw
collection (:attr:`ItemStore.collection`).

**The embedded store in a process of its own** (``StoreConfig(own_process=True)``; the default of
``hyrec serve``, through :func:`own_process_default`). chromadb's Rust bindings hold the GIL for
the whole of a write (30-230 ms for one item on 2 shared cores, most of it waiting on its own
threads and the disk), which freezes every thread and the server's event loop for that long. In
its own process the same ``PersistentClient`` does the same writes, and the caller waits on a
socket with the GIL released. The contract does not change: a write returns after chromadb
committed it (durable, and queryable by the next call from any thread), errors come back as
exceptions, and every :class:`ItemStore` method works the same. The ItemStores of one process on
one folder share one child. The child exits when its parent does (also on SIGKILL: it sees its
stdin close), after finishing the calls in flight; a new child on the same folder waits (up to
60 s) for the old one's lock first. A child that died is started again on the next call, which is
retried once (every call is idempotent).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from hyrec.data import Item
from retrieval.filters import Filter
from retrieval.items import StoreHits
from retrieval.records import HASH_KEY, VECTOR_KEY, content_hash, item_metadata, vector_hash

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]$")  # Chroma's collection rule
_MISSING_SHOWN = 10  # ids named in a KeyError before "and N more"
PROCESS_ENV = "HYREC_CHROMA_PROCESS"  # "1": embedded stores in their own process by default
_own_process: ContextVar[bool | None] = ContextVar("hyrec_store_own_process", default=None)


@contextlib.contextmanager
def own_process_default(on: bool = True) -> Iterator[None]:
    """Open embedded stores whose ``StoreConfig.own_process`` is None in a child process (or not)
    while the block runs, in this thread (``hyrec serve`` wraps the model's load in it)."""
    token = _own_process.set(on)
    try:
        yield
    finally:
        _own_process.reset(token)


@dataclass(frozen=True)
class StoreConfig:
    """Where the collection lives: exactly one of ``path`` (embedded) or ``host`` (server)."""

    path: Path | None = None  # PersistentClient folder, normally <model_dir>/chroma
    host: str | None = None  # a running Chroma server instead (HttpClient)
    port: int = 8000  # Chroma server's default port
    ssl: bool = False
    headers: Mapping[str, str] | None = None  # e.g. an auth header for the server
    collection: str = "hyrec-items"
    # HNSW: Chroma's defaults (100, 100, 16) found only 46% of the true top-100 on 10k random
    # 384-d vectors; these find 98% at about the same latency (eval/results/store_latency.md).
    # The last two are fixed when the collection is created; ef_search may change later.
    ef_search: int = 400  # candidates kept while searching (hnswlib raises it to n if smaller)
    ef_construction: int = 200  # candidates kept while inserting
    max_neighbors: int = 32  # graph links per node (HNSW's M)
    batch_size: int = 1000  # records per write; capped by the client's max batch size
    show_progress: bool = True  # progress bar when a write spans several batches
    # the embedded client in a child process, so its writes never hold this process's GIL (module
    # doc); None: own_process_default(), else HYREC_CHROMA_PROCESS=1, else in this process
    own_process: bool | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.host is None):
            raise ValueError("StoreConfig needs exactly one of path= (embedded) or host= (server)")
        if self.own_process and self.host is not None:
            raise ValueError("own_process is for the embedded store (path=); a server is one")
        if not _NAME.match(self.collection) or ".." in self.collection:
            raise ValueError(
                f"collection name {self.collection!r} is not valid in Chroma: use 3-512 characters "
                "from letters, digits, '.', '_' and '-', starting and ending with a letter or digit"
            )
        for name in ("ef_search", "ef_construction", "max_neighbors", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class SyncReport:
    """What :meth:`ItemStore.sync` changed."""

    added: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0


@runtime_checkable
class ItemEmbedder(Protocol):
    """What the store needs to embed items itself (:class:`encoders.text.TextEncoder` is one)."""

    def encode_items(self, items: Sequence[Item]) -> np.ndarray: ...


Embeddings = np.ndarray | ItemEmbedder


@dataclass
class _Records:
    """Validated records, ready to write."""

    ids: list[str]
    metadatas: list[dict[str, Any]]
    vectors: np.ndarray | None  # (n, d) float32; None until an embedder has run
    items: list[Item]

    def take(self, positions: list[int]) -> _Records:
        return _Records(
            [self.ids[p] for p in positions],
            [self.metadatas[p] for p in positions],
            None if self.vectors is None else self.vectors[positions],
            [self.items[p] for p in positions],
        )


class ItemStore:
    """Catalogue vectors and metadata in one cosine-space Chroma collection.

    Args:
        config: Where the collection lives (:class:`StoreConfig`).

    Writes (:meth:`sync`, :meth:`upsert`, :meth:`delete`) validate every input before the first
    write, so a ValueError leaves the store as it was. A write that fails inside Chroma midway can
    leave some batches written; :meth:`sync` is idempotent, so run it again. :meth:`close` (or
    ``with``) stops an own-process store's child once no other store uses it; otherwise it exits
    with this process.
    """

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self._child: _StoreProcess | None = None
        if config.path is not None and _wants_own_process(config):
            self._child = _StoreProcess.acquire(Path(config.path))
            self._release = _finalizer(self, self._child)
            self.client: Any = _Remote(self._child, None)
        elif config.path is not None:
            import chromadb  # imported here: it takes ~1 s, and most commands never open a store

            Path(config.path).mkdir(parents=True, exist_ok=True)
            self.client = chromadb.PersistentClient(path=str(config.path), settings=_settings())
        else:
            import chromadb

            settings = _settings()
            self.client = chromadb.HttpClient(
                host=config.host,
                port=config.port,
                ssl=config.ssl,
                headers=dict(config.headers or {}),
                settings=settings,
            )
        hnsw = {
            "space": "cosine",
            "ef_search": config.ef_search,
            "ef_construction": config.ef_construction,
            "max_neighbors": config.max_neighbors,
        }
        self.collection = self.client.get_or_create_collection(
            config.collection,
            configuration={"hnsw": hnsw},
            embedding_function=None,  # never embed in Chroma: its default model needs a download
        )
        self._check_index(hnsw)
        self.batch_size = min(config.batch_size, self.client.get_max_batch_size())
        self._dim: int | None = None

    @property
    def own_process(self) -> bool:
        """Whether chromadb runs in a child process (module doc)."""
        return self._child is not None

    @property
    def child_pid(self) -> int | None:
        """The child process's id (None in this process or on a server)."""
        return self._child.proc.pid if self._child is not None else None

    def close(self) -> None:
        """Stop the child process once no other store of this process uses it (after its calls
        in flight); a no-op for an in-process or server store."""
        if self._child is not None:
            self._release()

    def __enter__(self) -> ItemStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writes ------------------------------------------------------------------------------

    def sync(self, items: Sequence[Item], embeddings: Embeddings) -> SyncReport:
        """Make the store hold exactly ``items``, writing only what changed.

        Args:
            items: The whole catalogue (unique ids).
            embeddings: (n, d) vectors aligned with ``items``; or an :class:`ItemEmbedder`, which
                is then asked to embed only the new and changed items.

        Returns:
            Counts of added, updated, deleted and unchanged items.

        Raises:
            ValueError: duplicate ids, a length mismatch, a non-finite or zero vector, or a
                dimension other than the stored vectors'; nothing is written then.
        """
        records = self._records(items, embeddings, embed=False)
        stored = self._stored_hashes()
        given = records.vectors is not None  # vectors given: a new vector is a change too
        new, changed, unchanged = [], [], 0
        for pos, meta in enumerate(records.metadatas):
            old = stored.get(records.ids[pos])
            if old is None:
                new.append(pos)
            elif old[0] != meta[HASH_KEY] or (given and old[1] != meta[VECTOR_KEY]):
                changed.append(pos)
            else:
                unchanged += 1
        catalogue = set(records.ids)
        gone = [item_id for item_id in stored if item_id not in catalogue]
        write = new + changed
        if records.vectors is None:  # an embedder: embed only what will be written
            records = self._records([records.items[p] for p in write], embeddings, embed=True)
        else:
            records = records.take(write)
        if write:
            self._write(records.ids, records.metadatas, records.vectors)
        self._delete(gone)
        report = SyncReport(len(new), len(changed), len(gone), unchanged)
        log.info("synced %s: %s", self.config.collection, report)
        return report

    def upsert(self, items: Sequence[Item], embeddings: Embeddings) -> None:
        """Add or replace ``items`` (vectors aligned with them, or an :class:`ItemEmbedder`).

        Raises:
            ValueError: as :meth:`sync`; nothing is written then.
        """
        records = self._records(items, embeddings, embed=True)
        if records.ids:
            self._write(records.ids, records.metadatas, records.vectors)

    def delete(self, item_ids: Collection[str]) -> int:
        """Remove ``item_ids``; ids not in the store are ignored. Returns how many were removed."""
        ids = list(dict.fromkeys(_check_ids(item_ids)))
        present = []
        for chunk in _chunks(ids, self.batch_size):
            present += self.collection.get(ids=chunk, include=[])["ids"]
        self._delete(present)
        return len(present)

    # --- reads -------------------------------------------------------------------------------

    def query(
        self,
        vectors: np.ndarray,
        n: int,
        *,
        where: Filter | None = None,
        exclude_ids: Collection[str] = (),
    ) -> list[StoreHits]:
        """The ``n`` nearest items to each query vector, most similar first.

        Args:
            vectors: (m, d) query vectors (a single (d,) vector is treated as m = 1).
            n: Results per query; fewer when fewer items pass the filter.
            where: Genre/year constraints and ids to leave out.
            exclude_ids: More ids to leave out (e.g. the user's history); the search over-fetches
                so that ``n`` results still come back when the store has enough items.

        Returns:
            Per query vector, the item ids and their cosine similarity, similarity descending.
        """
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        queries = self._check_vectors(np.atleast_2d(vectors), what="query vectors")
        excluded = set(exclude_ids) | set(where.exclude_ids if where else ())
        clause = where.to_where() if where else None
        out: list[StoreHits] = []
        for rows in _slices(len(queries), self.batch_size):
            result = self.collection.query(
                query_embeddings=queries[rows],
                n_results=n + len(excluded),  # Chroma returns fewer when the store holds fewer
                where=clause,
                include=["distances"],  # no metadata or vectors back: about 2.5x faster
            )
            for ids, dists in zip(result["ids"], result["distances"], strict=True):
                keep = [r for r, i in enumerate(ids) if i not in excluded][:n]
                cosine = np.clip(1.0 - np.asarray(dists, np.float32)[keep], -1.0, 1.0)
                out.append(StoreHits(tuple(ids[r] for r in keep), cosine.astype(np.float32)))
        return out

    def get_embeddings(self, item_ids: Sequence[str]) -> np.ndarray:
        """(len(item_ids), d) float32 stored vectors, in the order of ``item_ids``.

        Raises:
            KeyError: some ids are not in the store (the message names them).
        """
        ids = _check_ids(item_ids)
        found: dict[str, np.ndarray] = {}
        for chunk in _chunks(list(dict.fromkeys(ids)), self.batch_size):
            got = self.collection.get(ids=chunk, include=["embeddings"])
            found.update(zip(got["ids"], got["embeddings"], strict=True))
        missing = [i for i in dict.fromkeys(ids) if i not in found]
        if missing:
            raise KeyError(f"{len(missing)} item id(s) not in the store: {_preview(missing)}")
        if not ids:
            return np.zeros((0, self.dimension() or 0), dtype=np.float32)
        return np.stack([np.asarray(found[i], dtype=np.float32) for i in ids])

    def count(self) -> int:
        """Number of items stored."""
        return self.collection.count()

    def ids(self) -> list[str]:
        """Every stored item id (in Chroma's order)."""
        return [item_id for item_id, _ in self._pages(include=[])]

    def dimension(self) -> int | None:
        """Dimension of the stored vectors, or None while the store is empty."""
        if self._dim is None:  # Chroma fixes a collection's dimension at its first write
            got = self.collection.get(limit=1, include=["embeddings"])
            self._dim = len(got["embeddings"][0]) if got["ids"] else None
        return self._dim

    # --- internals ---------------------------------------------------------------------------

    def _check_index(self, wanted: Mapping[str, Any]) -> None:
        """Refuse a non-cosine collection; carry a new ``ef_search`` over to an existing one."""
        name = self.config.collection
        stored = (self.collection.configuration_json or {}).get("hnsw") or {}
        if stored.get("space", "cosine") != "cosine":
            raise ValueError(
                f"collection {name!r} exists with distance {stored['space']!r}, not cosine; "
                "delete it or choose another StoreConfig.collection"
            )
        fixed = {k: stored.get(k) for k in ("ef_construction", "max_neighbors")}
        if any(stored.get(k) not in (None, wanted[k]) for k in fixed):
            log.info("collection %r keeps the HNSW settings it was built with: %s", name, fixed)
        if stored.get("ef_search") not in (None, wanted["ef_search"]):
            # Chroma applies it when the collection is next loaded (e.g. in a new process)
            with warnings.catch_warnings():  # Chroma warns about its own no-function config
                warnings.filterwarnings("ignore", "legacy embedding function", DeprecationWarning)
                self.collection.modify(configuration={"hnsw": {"ef_search": wanted["ef_search"]}})
            log.info("collection %r: ef_search set to %d", name, wanted["ef_search"])

    def _records(self, items: Sequence[Item], embeddings: Embeddings, *, embed: bool) -> _Records:
        """Validate ``items`` and their vectors (running an embedder only when ``embed``)."""
        items = list(items)
        ids = _check_ids([it.item_id for it in items])
        dupes = [item_id for item_id, k in Counter(ids).items() if k > 1]
        if dupes:
            raise ValueError(f"duplicate item ids: {_preview(dupes)}")
        metadatas = [{**item_metadata(it), HASH_KEY: content_hash(it)} for it in items]
        if isinstance(embeddings, ItemEmbedder):
            if not embed:
                return _Records(ids, metadatas, None, items)
            embeddings = embeddings.encode_items(items) if items else np.zeros((0, 0), np.float32)
        vectors = self._check_vectors(embeddings, n=len(items))
        for meta, vec in zip(metadatas, vectors, strict=True):
            meta[VECTOR_KEY] = vector_hash(vec)
        return _Records(ids, metadatas, vectors, items)

    def _check_vectors(
        self, vectors: np.ndarray, *, n: int | None = None, what: str = "embeddings"
    ) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if n == 0 and vectors.size == 0:
            return vectors.reshape(0, vectors.shape[-1] if vectors.ndim == 2 else 0)
        if vectors.ndim != 2 or vectors.shape[1] == 0:
            raise ValueError(f"{what} must be a 2-D (n, dim) array, got shape {vectors.shape}")
        if n is not None and len(vectors) != n:
            raise ValueError(f"{what}: got {len(vectors)} rows for {n} items")
        bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
        if len(bad):
            raise ValueError(f"{what}: rows {_preview(bad.tolist())} hold NaN or infinite values")
        zero = np.flatnonzero(~(np.abs(vectors) > 0).any(axis=1))
        if len(zero):
            raise ValueError(f"{what}: rows {_preview(zero.tolist())} are all zero (no cosine)")
        dim = self.dimension()
        if dim is not None and vectors.shape[1] != dim:
            raise ValueError(
                f"{what} have dimension {vectors.shape[1]} but the store holds {dim}-d vectors; "
                "use the same encoder, or a new StoreConfig.collection for a new model"
            )
        return vectors

    def _stored_hashes(self) -> dict[str, tuple[str | None, str | None]]:
        """Item id -> (content hash, vector hash) of every stored record, read page by page."""
        return {
            i: ((meta or {}).get(HASH_KEY), (meta or {}).get(VECTOR_KEY))
            for i, meta in self._pages(include=["metadatas"])
        }

    def _pages(self, include: list[str]) -> Iterator[tuple[str, Mapping[str, Any] | None]]:
        offset = 0
        while True:
            got = self.collection.get(include=include, limit=self.batch_size, offset=offset)
            metas = got.get("metadatas") or [None] * len(got["ids"])
            yield from zip(got["ids"], metas, strict=True)
            if len(got["ids"]) < self.batch_size:
                return
            offset += self.batch_size

    def _write(self, ids: list[str], metadatas: list[dict[str, Any]], vectors: np.ndarray) -> None:
        for chunk in self._progress(len(ids), "writing"):
            self.collection.upsert(
                ids=ids[chunk], embeddings=vectors[chunk], metadatas=metadatas[chunk]
            )

    def _delete(self, ids: list[str]) -> None:
        for chunk in self._progress(len(ids), "deleting"):
            self.collection.delete(ids=ids[chunk])

    def _progress(self, n: int, verb: str) -> Iterator[slice]:
        batches = list(_slices(n, self.batch_size))
        if not self.config.show_progress or len(batches) < 2:
            return iter(batches)
        return iter(tqdm(batches, desc=f"{verb} {n} items", unit="batch", leave=False))


def _slices(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _chunks(values: list[str], size: int) -> Iterator[list[str]]:
    for rows in _slices(len(values), size):
        yield values[rows]


def _check_ids(item_ids: Collection[str]) -> list[str]:
    if isinstance(item_ids, str):
        raise ValueError(f"expected a collection of item ids, got the string {item_ids!r}")
    ids = list(item_ids)
    bad = [i for i in ids if not isinstance(i, str) or not i]
    if bad:
        raise ValueError(f"item ids must be non-empty strings, got {_preview(bad)}")
    return ids


def _preview(values: Sequence[Any]) -> str:
    shown = ", ".join(repr(v) for v in values[:_MISSING_SHOWN])
    more = len(values) - _MISSING_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def _settings() -> Any:
    from chromadb.config import Settings

    return Settings(anonymized_telemetry=False)  # telemetry would reach for the network


def _wants_own_process(config: StoreConfig) -> bool:
    if config.own_process is not None:
        return config.own_process
    default = _own_process.get()
    if default is not None:
        return default
    return os.environ.get(PROCESS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


# --- the embedded store in its own process ---------------------------------------------------

_READY = "ready"
_LOCK_FILE = ".hyrec-store.lock"  # held by the child that has the folder open
_LOCK_WAIT = 60.0  # seconds a new child waits for an old one (still finishing) to let go
_START_WAIT = 180.0  # seconds for a child to import chromadb and open the folder
_DRAIN_WAIT = 60.0  # seconds a stopping child lets the calls in flight finish
_ATTRIBUTES = frozenset({"configuration_json", "name", "id", "metadata"})  # read, not called
_CHILD = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from retrieval.store import _child_main; _child_main()"
)


class StoreProcessError(RuntimeError):
    """The store's child process failed, or chromadb raised there (named in the message)."""


class _Remote:
    """The chromadb client (``collection=None``) or one collection, in the child: a method call
    is sent there and waited for; attributes in ``_ATTRIBUTES`` are read there."""

    def __init__(self, child: _StoreProcess, collection: str | None) -> None:
        self._child = child
        self._collection = collection

    def get_or_create_collection(self, name: str, **kwargs: Any) -> _Remote:
        kwargs.pop("embedding_function", None)  # the child never embeds either
        self._child.open_collection(name, kwargs)
        return _Remote(self._child, name)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in _ATTRIBUTES:
            return self._child.call(self._collection, name, None, None)

        def method(*args: Any, **kwargs: Any) -> Any:
            return self._child.call(self._collection, name, args, kwargs)

        return method


def _finalizer(store: ItemStore, child: _StoreProcess) -> Callable[[], None]:
    """Release the child once, at close() or when ``store`` is garbage-collected."""
    import weakref

    return weakref.finalize(store, child.release)


class _StoreProcess:
    """A child process holding one embedded chromadb client (module doc), shared by this
    process's stores on the same folder, and the pool of connections threads call it through."""

    _running: dict[str, _StoreProcess] = {}
    _guard = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path
        self.users = 0
        self._lock = threading.RLock()  # the idle list; starting/stopping the child
        self._idle: list[Any] = []  # connections no thread is using
        self._collections: dict[str, dict[str, Any]] = {}  # opened: replayed on a restart
        self._generation = 0
        self._start()

    @classmethod
    def acquire(cls, path: Path) -> _StoreProcess:
        key = str(Path(path).resolve())
        with cls._guard:
            child = cls._running.get(key)
            if child is None:
                child = cls._running[key] = cls(Path(key))
            child.users += 1
            return child

    def release(self) -> None:
        with self._guard:
            self.users -= 1
            if self.users > 0:
                return
            self._running.pop(str(self.path), None)
        self.stop()

    # --- the process -------------------------------------------------------------------------

    def _start(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="hyrec-chroma-")  # 0700: only this user connects
        self.address = os.path.join(self._dir, "socket")
        self._key = secrets.token_bytes(32)
        root = str(Path(__file__).resolve().parents[1])
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, root, str(self.path), self.address],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # a terminal's Ctrl-C goes to the parent, which closes it
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(self._key.hex().encode() + b"\n")
        self.proc.stdin.flush()
        line = _read_line(self.proc.stdout, _START_WAIT)
        self.proc.stdout.close()
        if line != _READY:
            self.proc.kill()
            self.proc.wait()
            shutil.rmtree(self._dir, ignore_errors=True)
            raise StoreProcessError(
                f"the item store's process for {self.path} did not start ({line or 'no answer'}; "
                f"exit code {self.proc.returncode}; its errors are on stderr)"
            )
        self._generation += 1
        log.info("item store %s: chromadb in process %d", self.path, self.proc.pid)

    def stop(self) -> None:
        """Close stdin (the child finishes its calls in flight, then exits) and wait for it."""
        with self._lock:
            for conn in self._idle:
                conn.close()
            self._idle.clear()
            if self.proc.poll() is None:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()  # type: ignore[union-attr]
                try:
                    self.proc.wait(timeout=_DRAIN_WAIT + 5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            shutil.rmtree(self._dir, ignore_errors=True)

    def _restart(self, generation: int) -> None:
        """Start the child again when it died (once, whichever thread gets here first)."""
        with self._lock:
            if generation != self._generation or self.proc.poll() is None:
                return  # another thread restarted it, or it is alive (the error was elsewhere)
            log.warning(
                "item store %s: its process exited (code %s); starting it again",
                self.path,
                self.proc.returncode,
            )
            for conn in self._idle:
                conn.close()
            self._idle.clear()
            shutil.rmtree(self._dir, ignore_errors=True)
            self._start()
            for name, kwargs in self._collections.items():
                self._send(None, "get_or_create_collection", (name,), kwargs)

    # --- calls -------------------------------------------------------------------------------

    def open_collection(self, name: str, kwargs: dict[str, Any]) -> None:
        self.call(None, "get_or_create_collection", (name,), kwargs)
        self._collections[name] = kwargs

    def call(
        self,
        collection: str | None,
        name: str,
        args: tuple[Any, ...] | None,
        kwargs: dict[str, Any] | None,
    ) -> Any:
        """Run ``name`` on the client or a collection in the child and return its result; a call
        that finds the child dead starts it again and is sent once more (all are idempotent)."""
        generation = self._generation
        try:
            return self._send(collection, name, args, kwargs)
        except (EOFError, OSError):
            try:  # a dying process closes its sockets a moment before it can be waited for
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                raise StoreProcessError(
                    f"the item store's process for {self.path} is not answering"
                ) from None
        self._restart(generation)
        return self._send(collection, name, args, kwargs)

    def _send(
        self,
        collection: str | None,
        name: str,
        args: tuple[Any, ...] | None,
        kwargs: dict[str, Any] | None,
    ) -> Any:
        from multiprocessing.connection import Client

        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = Client(self.address, family="AF_UNIX", authkey=self._key)
        try:
            conn.send((collection, name, args, kwargs))  # waits with the GIL released
            ok, value = conn.recv()
        except BaseException:
            conn.close()  # a half-finished exchange: the connection cannot be reused
            raise
        with self._lock:
            self._idle.append(conn)
        if not ok:
            raise value
        return value


def _read_line(stream: Any, timeout: float) -> str | None:
    """One line from a child's stdout, or None when none came within ``timeout`` (or it closed)."""
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout):
            return None
    line = stream.readline()
    return line.decode(errors="replace").strip() or None


@atexit.register
def _stop_children() -> None:
    """At a normal exit, let each child finish its calls and exit before this process does."""
    with _StoreProcess._guard:
        children = list(_StoreProcess._running.values())
        _StoreProcess._running.clear()
    for child in children:
        child.stop()


class _ChildServer:
    """The child's side: one chromadb client, a thread per connection, and the drain on exit."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.collections: dict[str, Any] = {}
        self.active = 0
        self.stopping = False
        self.cond = threading.Condition()

    def serve(self, conn: Any) -> None:
        with conn:
            while True:
                try:
                    collection, name, args, kwargs = conn.recv()
                except (EOFError, OSError):
                    return
                with self.cond:
                    if self.stopping:
                        return  # the parent is gone; nobody waits for an answer
                    self.active += 1
                try:
                    reply = (True, self.run(collection, name, args, kwargs))
                except Exception as e:
                    reply = (False, _portable(e))
                finally:
                    with self.cond:
                        self.active -= 1
                        self.cond.notify_all()
                try:
                    conn.send(reply)
                except (OSError, ValueError):
                    return

    def run(
        self, collection: str | None, name: str, args: tuple | None, kwargs: dict | None
    ) -> Any:
        if collection is None and name == "get_or_create_collection":
            got = self.client.get_or_create_collection(
                *args,
                **kwargs,
                embedding_function=None,  # never embed in Chroma
            )
            self.collections[args[0]] = got
            return None
        target = self.client if collection is None else self.collections[collection]
        if args is None:
            if name not in _ATTRIBUTES:
                raise AttributeError(name)
            return _plain(getattr(target, name))
        if name.startswith("_"):
            raise AttributeError(name)
        return _plain(getattr(target, name)(*args, **kwargs))

    def drain_and_exit(self, *_: Any) -> None:
        """Finish the calls in flight (bounded), then exit without running anything else."""
        with self.cond:
            self.stopping = True
            self.cond.wait_for(lambda: self.active == 0, timeout=_DRAIN_WAIT)
        os._exit(0)

    def watch_parent(self, parent: int) -> None:
        """Return when stdin closes (the parent closed it, or died: also on SIGKILL) or the parent
        is gone (a forked grandchild may hold stdin's other end)."""
        with selectors.DefaultSelector() as sel:
            sel.register(sys.stdin.buffer, selectors.EVENT_READ)
            while os.getppid() == parent:
                if sel.select(1.0) and not os.read(sys.stdin.fileno(), 4096):
                    return


def _plain(value: Any) -> Any:
    """A chromadb result with nothing in it that needs chromadb to unpickle (its include enums)."""
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if k != "included"}
    return value


def _portable(error: Exception) -> Exception:
    """``error`` as one the parent can unpickle without chromadb: builtins as they are."""
    if type(error).__module__ == "builtins":
        try:
            import pickle

            pickle.loads(pickle.dumps(error))
            return error
        except Exception:
            pass
    return StoreProcessError(f"{type(error).__module__}.{type(error).__qualname__}: {error}")


def _child_main() -> None:
    """The child: ``-c _CHILD ROOT PATH ADDRESS``, the connection key on stdin's first line."""
    import fcntl
    from multiprocessing.connection import Listener

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s item store: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this one stops
    path, address = Path(sys.argv[1]), sys.argv[2]
    parent = os.getppid()
    key = bytes.fromhex(sys.stdin.buffer.readline().decode().strip())
    path.mkdir(parents=True, exist_ok=True)
    lock = open(path / _LOCK_FILE, "a")  # noqa: SIM115 (held for the life of the process)
    deadline = time.monotonic() + _LOCK_WAIT
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                log.warning(
                    "%s is still held by another item store process; opening it anyway", path
                )
                break
            time.sleep(0.1)
    import chromadb

    warnings.filterwarnings("ignore", "legacy embedding function", DeprecationWarning)
    server = _ChildServer(chromadb.PersistentClient(path=str(path), settings=_settings()))
    listener = Listener(address, family="AF_UNIX", authkey=key)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.drain_and_exit).start())

    def watch() -> None:
        server.watch_parent(parent)
        server.drain_and_exit()

    threading.Thread(target=watch, daemon=True).start()
    sys.stdout.write(_READY + "\n")
    sys.stdout.flush()
    os.dup2(2, 1)  # anything printed later goes to stderr: nobody reads the pipe any more
    while True:
        try:
            conn = listener.accept()
        except Exception:  # a client that failed the key, or went away during the handshake
            continue
        threading.Thread(target=server.serve, args=(conn,), daemon=True).start()
