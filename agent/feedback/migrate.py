"""The PostgreSQL schema, created and migrated explicitly: plain SQL files in
``agent/feedback/migrations/postgres/`` named ``NNNN_what.sql``, applied in order, each with its
row in ``hyrec_schema`` (the versions a database holds), all in one transaction: a failing file
leaves the database as it was.

:func:`migrate` runs at open (:class:`~agent.feedback.postgres.PostgresFeedbackStore`) and is
safe when several replicas start at once: it takes a transaction-level advisory lock first, so one
process applies a version and the others find it recorded; :func:`pending` says what it would do.
A database whose recorded version is newer than this code knows is refused (an older hyrec must not
write into a newer schema).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK = 0x68797265  # pg_advisory_xact_lock key ("hyre"): one migrating process at a time

SCHEMA_TABLE = """
CREATE TABLE IF NOT EXISTS hyrec_schema (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    """One SQL file of the migration folder."""

    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped with hyrec, oldest first.

    Raises:
        RuntimeError: the folder holds a misnamed file or a gap in the numbering (a packaging bug).
    """
    folder = resources.files("agent.feedback") / "migrations" / "postgres"
    found = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE.match(entry.name)
        if match is None:
            raise RuntimeError(f"migration file {entry.name!r} is not named NNNN_what.sql")
        found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations are not numbered 1..n: {[m.version for m in found]}")
    return found


def latest() -> int:
    """The schema version this code writes."""
    return migrations()[-1].version


def applied(conn: Any) -> list[int]:
    """Versions recorded in ``hyrec_schema`` (empty for a new database)."""
    row = conn.execute("SELECT to_regclass('hyrec_schema')").fetchone()
    if row[0] is None:
        return []
    return [int(v) for (v,) in conn.execute("SELECT version FROM hyrec_schema ORDER BY version")]


def pending(conn: Any) -> list[Migration]:
    """The migrations :func:`migrate` would apply to this database."""
    done = set(applied(conn))
    return [m for m in migrations() if m.version not in done]


def migrate(conn: Any) -> list[int]:
    """Bring the database to :func:`latest`; returns the versions applied now.

    Args:
        conn: A psycopg connection in autocommit mode (migrate opens its own transaction).

    Raises:
        RuntimeError: the database holds a newer schema than this hyrec knows.
    """
    known = migrations()
    now: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        conn.execute(SCHEMA_TABLE)
        done = set(applied(conn))
        newer = sorted(done - {m.version for m in known})
        if newer:
            raise RuntimeError(
                f"the feedback database has schema version {max(newer)}, newer than this hyrec "
                f"knows ({known[-1].version}): upgrade hyrec, or use another database"
            )
        for m in known:
            if m.version in done:
                continue
            try:
                conn.execute(m.sql)
            except Exception as e:  # the whole transaction rolls back
                raise RuntimeError(f"migration {m.version:04d}_{m.name}.sql failed: {e}") from e
            conn.execute(
                "INSERT INTO hyrec_schema (version, name) VALUES (%s, %s)", (m.version, m.name)
            )
            now.append(m.version)
            log.info("feedback database: applied migration %04d_%s", m.version, m.name)
    return now
