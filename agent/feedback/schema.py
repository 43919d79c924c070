"""The feedback database's schema, created and migrated explicitly: each version is one
idempotent step run at open (``PRAGMA user_version`` records where a file is), what inspects a
file from outside (durability checks), and the JSON a catalogue entry is kept as (by both stores).

Versions: 1 — events, items, impressions; 2 — ``events.client_id`` (idempotency keys, unique).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hyrec.data import Item

VERSION = 2

SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event TEXT NOT NULL,
    value REAL,
    timestamp REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id, id);
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS impressions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    timestamp REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS impressions_user_item ON impressions (user_id, item_id, timestamp);
CREATE INDEX IF NOT EXISTS events_user_item ON events (user_id, item_id, timestamp);
"""


def create_or_migrate(conn: sqlite3.Connection) -> None:
    """Bring a new or older file to :data:`VERSION`."""
    conn.executescript(SCHEMA_V1)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version < 2:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        if "client_id" not in columns:
            conn.execute("ALTER TABLE events ADD COLUMN client_id TEXT")
        conn.execute(
            "CREATE UNIQUE INDEX IF NOT EXISTS events_client_id ON events (client_id) "
            "WHERE client_id IS NOT NULL"
        )
    if version != VERSION:
        conn.execute(f"PRAGMA user_version = {VERSION}")


def count_events(path: Path) -> int:
    """Events in a database file, read with a fresh connection (for durability checks)."""
    conn = sqlite3.connect(str(path))
    try:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    finally:
        conn.close()


def event_ids(path: Path) -> Sequence[int]:
    """Every stored event id in a database file, read with a fresh connection."""
    conn = sqlite3.connect(str(path))
    try:
        return [r[0] for r in conn.execute("SELECT id FROM events ORDER BY id")]
    finally:
        conn.close()


def item_json(item: Item) -> str:
    """A catalogue entry as the JSON both stores keep."""
    body: dict[str, Any] = {
        "item_id": item.item_id,
        "title": item.title,
        "description": item.description,
        "attributes": dict(item.attributes),
    }
    return json.dumps(body, ensure_ascii=False)


def item_from_json(body: str) -> Item:
    """The inverse of :func:`item_json`."""
    r = json.loads(body)
    return Item(r["item_id"], r["title"], r["description"], r["attributes"])
