"""The PostgreSQL feedback store against a real throwaway server (tests/pg.py): the shared store
contract (tests/store_contract.py, SIGKILL mid-burst included), the versioned migrations, every
"not now" mapped to StoreUnavailable with nothing written (lock, pool, refused, server gone),
forgetting in one transaction, the profile entries and the change log replicas follow."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from agent.feedback import StoreUnavailable, open_store
from agent.feedback.migrate import applied, latest, migrations, pending
from hyrec.data import Item
from tests.pg import pg_url, postgres_server, start_server  # noqa: F401 (fixtures)
from tests.servers import free_port
from tests.store_contract import WAIT, StoreContract

psycopg = pytest.importorskip(
    "psycopg", reason="needs the postgres extra: pip install 'hyrec[postgres]'"
)


class TestPostgresStoreContract(StoreContract):
    @pytest.fixture
    def target(self, pg_url):  # noqa: F811
        return pg_url

    @pytest.fixture
    def hold_lock(self, target):
        @contextlib.contextmanager
        def hold():
            with psycopg.connect(target) as conn:  # a transaction until the block ends
                conn.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
                yield
                conn.rollback()

        return hold


# ---- schema --------------------------------------------------------------------------------------
def test_migrations_are_numbered_and_recorded_once(pg_url):  # noqa: F811
    assert [m.version for m in migrations()] == list(range(1, latest() + 1))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert applied(conn) == [] and len(pending(conn)) == latest()
    opened = [None, None]

    def open_one(n: int) -> None:  # two replicas starting at once
        opened[n] = open_store(pg_url, wait=5)

    threads = [threading.Thread(target=open_one, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in opened:
        s.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert applied(conn) == list(range(1, latest() + 1)) and pending(conn) == []
        conn.execute("INSERT INTO hyrec_schema (version, name) VALUES (999, 'future')")
    with pytest.raises(RuntimeError, match="schema version 999, newer"):
        open_store(pg_url)


# ---- unavailable ---------------------------------------------------------------------------------
def test_no_server_is_store_unavailable_naming_the_url_without_its_password():
    url = f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/hyrec"
    t0 = time.perf_counter()
    with pytest.raises(StoreUnavailable, match="cannot reach the feedback database") as caught:
        open_store(url, wait=WAIT)
    assert time.perf_counter() - t0 < 5
    assert "s3cret" not in str(caught.value) and ":***@127.0.0.1" in str(caught.value)


def test_an_exhausted_pool_is_store_unavailable(pg_url):  # noqa: F811
    store = open_store(pg_url, wait=WAIT, pool_size=1)
    try:
        with store._conn("holding the only connection"):
            t0 = time.perf_counter()
            with pytest.raises(StoreUnavailable, match="storing feedback"):
                store.add("u", "1", "like")
            assert time.perf_counter() - t0 < WAIT + 2
        assert store.count() == 0 and store.add("u", "1", "like").id > 0
    finally:
        store.close()


def test_a_server_that_goes_away_is_store_unavailable_and_comes_back():
    root = Path(tempfile.mkdtemp(prefix="hyrec-pg-gone-"))
    os.chmod(root, 0o755)
    server = start_server(root)
    try:
        store = open_store(server.url(), wait=WAIT)
        store.add("u", "1", "like")
        server.stop("immediate")  # the server dies under open pooled connections
        for what in (lambda: store.add("u", "2", "like"), lambda: store.events("u")):
            with pytest.raises(StoreUnavailable, match="unavailable"):
                what()
        ok, why = store.health()
        assert not ok and "unavailable" in why
        server.start()
        deadline = time.monotonic() + 20
        while store.health() != (True, "ok") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [e.item_id for e in store.events("u")] == ["1"]  # nothing of the failed add
        store.add("u", "3", "like")
        assert store.count("u") == 2
        store.close()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_a_missing_driver_names_the_extra(monkeypatch):
    monkeypatch.delitem(sys.modules, "agent.feedback.postgres", raising=False)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'hyrec\[postgres\]'"):
        open_store("postgresql://127.0.0.1:1/x")
    with pytest.raises(ValueError, match="unknown feedback store mysql://"):
        open_store("mysql://127.0.0.1/x")


# ---- what replicas share ----------------------------------------------------------------------
def test_forget_deletes_every_trace_in_one_transaction(pg_url, postgres_server):  # noqa: F811
    store = open_store(pg_url, wait=WAIT)
    try:
        for i in range(20):
            store.add("secret-user-42", str(i % 5), "view", client_id=f"c{i}")
        store.add_impressions("secret-user-42", ["1", "2"], "r1")
        store.add("other", "1", "like")
        assert store.put_profile("pk-42", "own", '["pk-42"]', "{}")
        assert store.forget("secret-user-42", user_key="uk-42", profile_key="pk-42",
                            snapshot_row=7) == 20  # fmt: skip
        assert store.get_profile("pk-42", "own") is None
        assert not store.put_profile("pk-42", "own", '["pk-42"]', "{}")  # forgotten just now
        changes = store.changes(0)
        assert [(d.user_key, d.profile_key, d.snapshot_row) for d in changes.deletions] == [
            ("uk-42", "pk-42", 7)
        ]
        dump = subprocess.run(
            [str(postgres_server.bin / "pg_dump"), "--data-only", pg_url],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        assert "other" in dump and "secret-user-42" not in dump
        # a failure inside the transaction leaves everything: the deletion is all or nothing
        store.add("again", "1", "like")
        with pytest.raises(psycopg.errors.NumericValueOutOfRange):
            store.forget("again", user_key="k-again", snapshot_row=2**40)  # not an integer
        assert store.count("again") == 1 and store.changes(changes.version).deletions == ()
    finally:
        store.close()


def test_changes_are_versioned_and_followers_are_woken(pg_url):  # noqa: F811
    store = open_store(pg_url, wait=WAIT)
    woken: list[float] = []
    try:
        assert store.changes(0).version == 0
        store.follow(lambda: woken.append(time.monotonic()), interval=5.0)
        time.sleep(0.5)
        before = len(woken)
        t0 = time.monotonic()
        store.upsert_items([Item("n1", "New one"), Item("n2", "New two")])
        while len(woken) == before and time.monotonic() - t0 < 3:
            time.sleep(0.01)
        assert len(woken) > before and woken[-1] - t0 < 1.0  # NOTIFY, not the 5 s poll
        first = store.changes(0)
        assert [it.item_id for it in first.items] == ["n1", "n2"] and first.version >= 1
        store.upsert_items([Item("n1", "New one")])  # unchanged: no new version
        assert store.changes(first.version).items == ()
        store.forget("u", user_key="k1")
        later = store.changes(first.version)
        assert later.items == () and [d.user_key for d in later.deletions] == ["k1"]
        assert (
            later.version > first.version and store.changes(later.version).version == later.version
        )
    finally:
        store.close()
