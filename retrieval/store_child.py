"""The store's child process, child side: one chromadb client serving the parent's calls.

The child is started by :class:`retrieval.store_client._StoreProcess` as ``python -c`` code that
runs :func:`_child_main` (``retrieval.store_client._CHILD``). It takes the folder's lock file,
opens one ``chromadb.PersistentClient`` on the folder, says it is ready on stdout, and then serves
each connection from the parent (authenticated with a key the parent wrote on stdin) in a thread
of its own (:class:`_ChildServer`), answering with results and exceptions the parent can unpickle
without chromadb. It exits, after finishing the calls in flight, when its stdin closes (the parent
closed it or died) or on SIGTERM.

What the child promises, and the parent's side: :mod:`retrieval.store_client`; the store itself:
:mod:`retrieval.store`; its configuration: :mod:`retrieval.store_config`.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import sys
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from retrieval.store_client import _ATTRIBUTES, _DRAIN_WAIT, _READY, StoreProcessError
from retrieval.store_config import _settings

log = logging.getLogger("retrieval.store")  # the store's records keep one logger name

_LOCK_FILE = ".hyrec-store.lock"  # held by the child that has the folder open
_LOCK_WAIT = 60.0  # seconds a new child waits for an old one (still finishing) to let go


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
    """The child: ``-c _CHILD ROOT PATH ADDRESS`` (:mod:`retrieval.store_client`), the connection
    key on stdin's first line."""
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
