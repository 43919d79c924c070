"""StoreConfig, own_process_default: where the store's collection lives, which process opens it.

:class:`StoreConfig` names the collection (a folder for the embedded ``chromadb.PersistentClient``,
or a running Chroma server), its HNSW settings and how it is written. An embedded store's chromadb
runs in a child process of its own when ``StoreConfig.own_process`` says so, else (when that is
None) inside an :func:`own_process_default` block (``hyrec serve`` wraps the model's load in one),
else when ``HYREC_CHROMA_PROCESS`` (:data:`PROCESS_ENV`) is ``1``; otherwise in this process.

The other modules of the store: :mod:`retrieval.store` (:class:`~retrieval.store.ItemStore`, which
re-exports the public names here), :mod:`retrieval.store_inputs` (its inputs checked),
:mod:`retrieval.store_client` (the child process, this process's side; why a child: its doc) and
:mod:`retrieval.store_child` (the child's side).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]$")  # Chroma's collection rule
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
    # the embedded client in a child process, so its writes never hold this process's GIL
    # (retrieval.store_client's doc); None: own_process_default(), else HYREC_CHROMA_PROCESS=1,
    # else in this process
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
