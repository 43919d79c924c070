"""The PostgreSQL store's connections: a :class:`psycopg_pool.ConnectionPool` in autocommit mode
whose every connection has a ``statement_timeout`` and a ``lock_timeout`` (:func:`open_pool`),
and pooled connections within a bounded wait with the "not now" errors (pool timeout, refused
connection, server gone, statement cancelled by its timeout) mapped onto
:class:`~agent.feedback.events.StoreUnavailable` (:func:`pooled`). :func:`redacted` keeps a URL's
password out of messages and logs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool

from agent.feedback.deadline import remaining
from agent.feedback.events import StoreUnavailable


def redacted(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def open_pool(url: str, *, wait: float, pool_size: int, statement_seconds: float) -> ConnectionPool:
    """An open pool of at most ``pool_size`` connections to ``url``.

    Raises:
        StoreUnavailable: the server cannot be reached within ``wait`` seconds.
    """
    statement_ms, lock_ms = int(statement_seconds * 1000), int(wait * 1000)

    def configure(conn: psycopg.Connection) -> None:
        conn.execute(f"SET statement_timeout = {statement_ms}")  # ints: nothing to quote
        conn.execute(f"SET lock_timeout = {lock_ms}")  # a row or table locked elsewhere

    pool = ConnectionPool(
        url,
        min_size=1,
        max_size=pool_size,
        open=False,
        timeout=wait,
        name="hyrec-feedback",
        kwargs={
            "autocommit": True,
            "connect_timeout": max(1, round(wait)),
            "application_name": "hyrec",
        },
        configure=configure,
        check=ConnectionPool.check_connection,  # a connection the server dropped is replaced
        reconnect_timeout=max(wait, 30.0),
    )
    try:
        pool.open(wait=True, timeout=wait)
    except psycopg.OperationalError as e:  # PoolTimeout is one
        pool.close()
        raise StoreUnavailable(
            f"cannot reach the feedback database {redacted(url)} within {wait:g} s ({e}); "
            "check that PostgreSQL runs there and the URL is right",
            wait,
        ) from None
    return pool


@contextmanager
def pooled(pool: ConnectionPool, wait: float, what: str) -> Iterator[psycopg.Connection]:
    """A connection of ``pool`` within ``wait`` seconds (less when the request's deadline comes
    first: :mod:`agent.feedback.deadline`), with "not now" errors mapped."""
    try:
        with pool.connection(timeout=remaining(wait)) as conn:
            yield conn
    except psycopg.OperationalError as e:  # pool timeout, refused, server gone, timed out
        raise StoreUnavailable(
            f"{what}: the feedback database is unavailable ({type(e).__name__}: {e})", wait
        ) from e
