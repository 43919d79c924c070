"""The store's child process, parent side: the embedded item store in a process of its own.

``StoreConfig(own_process=True)`` (the default of ``hyrec serve``, through
:func:`~retrieval.store_config.own_process_default`). chromadb's Rust bindings hold the GIL for
the whole of a write (30-230 ms for one item on 2 shared cores, most of it waiting on its own
threads and the disk), which freezes every thread and the server's event loop for that long. In
its own process the same ``PersistentClient`` does the same writes, and the caller waits on a
socket with the GIL released. The contract does not change: a write returns after chromadb
committed it (durable, and queryable by the next call from any thread), errors come back as
exceptions, and every :class:`~retrieval.store.ItemStore` method works the same. The ItemStores of
one process on one folder share one child. The child exits when its parent does (also on SIGKILL:
it sees its stdin close), after finishing the calls in flight; a new child on the same folder
waits (up to 60 s) for the old one's lock first. A child that died is started again on the next
call, which is retried once (every call is idempotent).

This module owns the parent's side: :class:`_StoreProcess` starts the child (``python -c`` code
that runs :func:`retrieval.store_child._child_main`), keeps the pool of connections to it and
restarts it; :class:`_Remote` stands in for the chromadb client and its collections;
:class:`StoreProcessError` is what a failure raises. The child's side is
:mod:`retrieval.store_child`; the store that uses this is :mod:`retrieval.store` (which re-exports
:class:`StoreProcessError`), configured by :mod:`retrieval.store_config`.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import selectors
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retrieval.store import ItemStore

log = logging.getLogger("retrieval.store")  # the store's records keep one logger name

_READY = "ready"
_START_WAIT = 180.0  # seconds for a child to import chromadb and open the folder
_DRAIN_WAIT = 60.0  # seconds a stopping child lets the calls in flight finish
_ATTRIBUTES = frozenset({"configuration_json", "name", "id", "metadata"})  # read, not called
_CHILD = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from retrieval.store_child import _child_main; _child_main()"
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
