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
``hyrec serve``, through :func:`own_process_default`): the same ``PersistentClient`` in a child
process, so that chromadb's writes never hold this process's GIL. The contract does not change: a
write returns after chromadb committed it, errors come back as exceptions, and every
:class:`ItemStore` method works the same (how: :mod:`retrieval.store_client`).

The store's modules: this one owns :class:`ItemStore` and the types of its API
(:class:`SyncReport`, :class:`ItemEmbedder`); :mod:`retrieval.store_config` owns
:class:`StoreConfig` and the choice of process (:func:`own_process_default`, ``PROCESS_ENV``);
:mod:`retrieval.store_inputs` the checks every input passes before a write, and the batches;
:mod:`retrieval.store_client` this process's side of the child (:class:`StoreProcessError`);
:mod:`retrieval.store_child` the child's side. The public names of the others are re-exported
here, so ``from retrieval.store import ...`` keeps working.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from hyrec.data import Item
from retrieval.filters import Filter
from retrieval.items import StoreHits
from retrieval.records import HASH_KEY, VECTOR_KEY, content_hash, item_metadata, vector_hash
from retrieval.store_client import StoreProcessError as StoreProcessError  # re-exported
from retrieval.store_client import _finalizer, _Remote, _StoreProcess
from retrieval.store_config import PROCESS_ENV as PROCESS_ENV  # re-exported
from retrieval.store_config import StoreConfig, _settings, _wants_own_process
from retrieval.store_config import own_process_default as own_process_default  # re-exported
from retrieval.store_inputs import _check_ids, _chunks, _preview, _Records, _slices, _valid_vectors

log = logging.getLogger(__name__)


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


class ItemStore:
    """Catalogue vectors and metadata in one cosine-space Chroma collection.

    Args:
        config: Where the collection lives (:class:`StoreConfig`).

    Writes (:meth:`sync`, :meth:`upsert`, :meth:`delete`) validate every input before the first
    write, so a ValueError leaves the store as it was. A write that fails inside Chroma midway can
    leave some batches written; :meth:`sync` is idempotent, so run it again. :meth:`close` (or
    ``with``) stops an own-process store's child once no other store uses it, and closes an
    in-process or server store's client.
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
        in flight); an in-process or server store closes its chromadb client. Chromadb shares one
        system per folder among a process's clients until the last closes: a folder deleted and
        opened again under a client left open gets that client's stale database ("attempt to
        write a readonly database", "no such table")."""
        if self._child is not None:
            self._release()
        else:
            self.client.close()  # idempotent

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
                change = {"hnsw": {"ef_search": wanted["ef_search"]}}
                _while_locked(lambda: self.collection.modify(configuration=change))
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
        return _valid_vectors(vectors, self.dimension, n=n, what=what)

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


def _while_locked(call: Any, wait: float = 5.0) -> Any:
    """``call()``, tried for up to ``wait`` s while chromadb's SQLite is "database is locked"
    (another client of the folder writing): a change made once at open waits, not fails."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return call()
        except Exception as e:  # chromadb's InternalError, or the store process's error
            if "database is locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
