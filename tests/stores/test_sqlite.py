"""SQLiteStore against the conformance suite, plus file-level behaviour."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from loopgate_lc.errors import ConfigurationError, StoreError
from loopgate_lc.schema import RequestKind, Status, utcnow
from loopgate_lc.stores import SQLiteStore, Store
from loopgate_lc.stores.base import RequestRecord
from loopgate_lc.stores.sqlite import DirectSQLiteStore
from loopgate_lc.testing.stores import MakeStore, StoreConformance, request


class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> MakeStore:
        path = tmp_path / "loopgate.db"

        async def make() -> Store:
            return SQLiteStore(path)

        return make


class TestDirectSQLiteStore(StoreConformance):
    """The store the CLI runs inline keeps every promise of the contract (here on an
    event loop, which it blocks for each statement)."""

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> MakeStore:
        path = tmp_path / "loopgate.db"

        async def make() -> Store:
            return DirectSQLiteStore(path)

        return make


async def test_setup_creates_a_wal_file_at_the_latest_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "nested.db"
    store = SQLiteStore(path)
    assert await store.schema_version() == 0
    await store.setup()
    await store.setup()
    assert await store.schema_version() == SQLiteStore.SCHEMA_VERSION == 8
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = conn.execute("SELECT version FROM loopgate_schema_version").fetchall()
    assert versions == [(1,), (2,), (3,), (4,), (5,), (6,), (7,), (8,)]


async def test_a_version_one_database_is_migrated_once(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = SQLiteStore(path)
    await store.setup()
    await store.close()
    await store.create_request(RequestRecord(id="old", kind=RequestKind.APPROVAL))
    await store.resolve("old", status=Status.APPROVED, decision={"type": "approve"},
                        decided_by="a", channel="c")
    assert await store.mark_resumed("old")
    await store.close()
    with sqlite3.connect(path) as conn:  # what a loopgate_lc with schema 1 left behind
        conn.execute("DROP INDEX loopgate_requests_unresumed")
        conn.execute("DROP INDEX loopgate_outbox_dead")
        conn.execute("ALTER TABLE loopgate_requests DROP COLUMN resume_done_at")
        conn.execute("ALTER TABLE loopgate_outbox DROP COLUMN dead")
        conn.execute("ALTER TABLE loopgate_outbox DROP COLUMN created_at")
        conn.execute("ALTER TABLE loopgate_requests DROP COLUMN votes")
        conn.execute("DROP TABLE loopgate_grants")
        conn.execute("ALTER TABLE loopgate_requests DROP COLUMN schema_digest")
        conn.execute("DROP TABLE loopgate_response_schemas")
        conn.execute("DELETE FROM loopgate_schema_version WHERE version > 1")
    store = SQLiteStore(path)
    await store.setup()
    await store.setup()
    assert await store.schema_version() == SQLiteStore.SCHEMA_VERSION == 8
    old = await store.get_request("old")
    assert old.resume_done_at == old.resumed_at  # resumes made before 3 count as done
    assert await store.list_requests(unresumed=True, stale_before=utcnow()) == []
    await store.close()
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "loopgate_requests_unresumed" in names


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    store = SQLiteStore(path)
    await store.setup()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO loopgate_schema_version VALUES (99, '2099-01-01')")
    with pytest.raises(StoreError, match="newer"):
        await store.setup()
    await store.close()


async def test_shares_a_file_with_other_tables(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE checkpoints (id TEXT PRIMARY KEY)")
        conn.execute("INSERT INTO checkpoints VALUES ('keep me')")
    async with SQLiteStore(path) as store:
        await store.create_request(request("r1"))
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT id FROM checkpoints").fetchall() == [("keep me",)]


async def test_two_store_objects_on_one_file_see_each_other(tmp_path: Path) -> None:
    path = tmp_path / "two.db"
    async with SQLiteStore(path) as one, SQLiteStore(str(path)) as two:
        await one.create_request(request("r1"))
        assert (await two.get_request("r1")).id == "r1"


async def test_a_response_schema_is_stored_once_for_every_request_naming_it(
        tmp_path: Path) -> None:
    # every pause of one tool carries the same (often 10 kB) schema: its requests'
    # rows name it, so filing and deciding them write it once, not per row
    path = tmp_path / "schemas.db"
    schema = '{"type": "object", "title": "deploy", "padding": "' + "x" * 9000 + '"}'
    async with SQLiteStore(path) as one, SQLiteStore(path) as two:
        for i, store in enumerate((one, one, two, two)):
            await store.create_request(request(f"r{i}", payload={
                "type": "tool_approval", "response_schema": schema}))
        await one.resolve("r0", status=Status.APPROVED, decision={"type": "approve"},
                          decided_by="ann", channel="api")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT body FROM loopgate_response_schemas").fetchall() == [
            (schema,)]
        payloads = conn.execute("SELECT payload FROM loopgate_requests").fetchall()
        assert len(payloads) == 4
        assert all(len(p) < 200 for (p,) in payloads)


@pytest.mark.parametrize("path", ["", ":memory:", "file::memory:?cache=shared"])
def test_in_memory_paths_are_refused(path: str) -> None:
    with pytest.raises(ConfigurationError, match="MemoryStore"):
        SQLiteStore(path)


def test_from_conn_string_relative_and_absolute(tmp_path: Path) -> None:
    relative = SQLiteStore.from_conn_string("sqlite:///data/loopgate.db")
    assert relative.path == Path("data/loopgate.db")
    absolute = SQLiteStore.from_conn_string(f"sqlite:///{tmp_path}/x.db")
    assert absolute.path == tmp_path / "x.db"
    assert absolute.path.is_absolute()
    for bad in ("sqlite://", "sqlite:///", "sqlite:x.db", "postgresql://h/db"):
        with pytest.raises(ConfigurationError):
            SQLiteStore.from_conn_string(bad)


async def test_unopenable_file_is_a_store_error(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "missing-dir" / "x.db")
    with pytest.raises(StoreError, match="cannot open"):
        await store.setup()


async def test_store_is_usable_again_after_close(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "reuse.db")
    await store.setup()
    await store.create_request(request("r1"))
    await store.close()
    assert (await store.get_request("r1")).id == "r1"
    await store.close()
