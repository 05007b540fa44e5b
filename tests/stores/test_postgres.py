"""PostgresStore against the conformance suite, each test in a fresh schema."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from loopgate_lc.errors import ConfigurationError, StoreError
from loopgate_lc.stores import PostgresStore, Store
from loopgate_lc.testing.stores import MakeStore, StoreConformance, request

psycopg = pytest.importorskip("psycopg")
psycopg_pool = pytest.importorskip("psycopg_pool")


class TestPostgresStore(StoreConformance):
    @pytest.fixture
    async def make_store(self, postgres_dsn: str, pg_schema: str) -> AsyncIterator[MakeStore]:
        made: list[Store] = []

        async def make() -> Store:
            store = PostgresStore(postgres_dsn, schema=pg_schema, max_size=4)
            made.append(store)
            return store

        yield make
        for store in made:
            await store.close()


async def test_setup_is_versioned_and_idempotent(postgres_dsn: str, pg_schema: str) -> None:
    store = PostgresStore.from_conn_string(postgres_dsn, schema=pg_schema)
    try:
        assert await store.schema_version() == 0
        await store.setup()
        await store.setup()
        assert await store.schema_version() == PostgresStore.SCHEMA_VERSION == 8
    finally:
        await store.close()
    async with await psycopg.AsyncConnection.connect(postgres_dsn) as conn:
        cur = await conn.execute(f'SELECT version FROM "{pg_schema}".loopgate_schema_version')
        assert await cur.fetchall() == [(1,), (2,), (3,), (4,), (5,), (6,), (7,), (8,)]


async def test_concurrent_setup_from_many_stores(postgres_dsn: str, pg_schema: str) -> None:
    import asyncio

    stores = [PostgresStore(postgres_dsn, schema=pg_schema, max_size=1) for _ in range(4)]
    try:
        await asyncio.gather(*(s.setup() for s in stores))
        assert [await s.schema_version() for s in stores] == [PostgresStore.SCHEMA_VERSION] * 4
    finally:
        for s in stores:
            await s.close()


async def test_a_newer_schema_is_refused(postgres_dsn: str, pg_schema: str) -> None:
    async with PostgresStore(postgres_dsn, schema=pg_schema) as store:
        async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
            await conn.execute(
                f'INSERT INTO "{pg_schema}".loopgate_schema_version (version) VALUES (99)'
            )
        with pytest.raises(StoreError, match="newer"):
            await store.setup()


async def test_works_on_a_pool_the_caller_owns(postgres_dsn: str, pg_schema: str) -> None:
    pool = psycopg_pool.AsyncConnectionPool(postgres_dsn, min_size=1, max_size=2, open=False)
    await pool.open()
    try:
        store = PostgresStore(pool, schema=pg_schema)
        await store.setup()
        _, created = await store.create_request(request("r1"))
        assert created
        await store.close()
        assert not pool.closed
        # a non-autocommit pool still commits: a fresh connection sees the row
        async with await psycopg.AsyncConnection.connect(postgres_dsn) as conn:
            cur = await conn.execute(f'SELECT id FROM "{pg_schema}".loopgate_requests')
            assert await cur.fetchall() == [("r1",)]
    finally:
        await pool.close()


async def test_unreachable_server_is_a_store_error() -> None:
    store = PostgresStore(
        "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1", min_size=0, max_size=1
    )
    with pytest.raises(StoreError):
        await store.setup()
    await store.close()


def test_bad_arguments_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        PostgresStore("")
    with pytest.raises(ConfigurationError):
        PostgresStore("postgresql://h/db", schema=" ")
    with pytest.raises(ConfigurationError):
        PostgresStore.from_conn_string("mysql://h/db")
