"""Opening a feedback store from one setting: :func:`open_store` takes a ``postgresql://`` URL
(the :class:`~agent.feedback.postgres.PostgresFeedbackStore` several replicas share) or a SQLite
file path (the default :class:`~agent.feedback.store.FeedbackStore` of one process)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from agent.feedback.protocol import Store

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
EXTRA = "pip install 'hyrec[postgres]'"


def is_postgres_url(target: str | Path) -> bool:
    """Whether ``target`` names a PostgreSQL database rather than a SQLite file."""
    return isinstance(target, str) and target.startswith(POSTGRES_SCHEMES)


def open_store(
    target: str | Path,
    *,
    synchronous: Literal["FULL", "NORMAL"] = "FULL",
    wait: float = 2.0,
    pool_size: int = 8,
) -> Store:
    """The feedback store at ``target``.

    Args:
        target: ``postgresql://user@host:port/db`` (psycopg is imported only then), or the path of
            a SQLite file (created when missing).
        synchronous: The SQLite store's durability (PostgreSQL's server decides its own).
        wait: Longest a call waits before :class:`~agent.feedback.events.StoreUnavailable`.
        pool_size: Connections per process (PostgreSQL only).

    Raises:
        ImportError: a PostgreSQL URL without psycopg installed (the message names the extra).
        agent.feedback.StoreUnavailable: the PostgreSQL server cannot be reached in ``wait``.
    """
    if is_postgres_url(target):
        try:
            from agent.feedback.postgres import PostgresFeedbackStore
        except ImportError as e:
            raise ImportError(
                f"a postgresql:// feedback URL needs psycopg 3 and its pool: {EXTRA} ({e})"
            ) from None
        return PostgresFeedbackStore(str(target), wait=wait, pool_size=pool_size)
    if isinstance(target, str) and "://" in target:
        raise ValueError(
            f"unknown feedback store {target.split('://')[0]}://: use a postgresql:// URL or the "
            "path of a SQLite file"
        )
    from agent.feedback.store import FeedbackStore

    return FeedbackStore(Path(target), synchronous=synchronous, wait=wait)
