"""Shared fixtures: fresh thread configs and side-effect counters."""

from __future__ import annotations

import itertools
import os
from collections import Counter
from typing import Any

import pytest

_threads = itertools.count()


@pytest.fixture(autouse=True, scope="session")
def _private_user_data(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Point the per-user default store (and every subprocess's) at a temp folder, so the
    suite never reads or writes the real user's loopgate-lc data."""
    saved = {k: os.environ.get(k) for k in ("XDG_DATA_HOME", "LOOPGATE_STORE")}
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("user-data"))
    os.environ.pop("LOOPGATE_STORE", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def config() -> dict[str, Any]:
    """A LangGraph config on a thread no other test uses."""
    return {"configurable": {"thread_id": f"thread-{next(_threads)}"}}


@pytest.fixture
def runs() -> Counter[str]:
    """How often each tool body ran: the exactly-once invariant is read from here."""
    return Counter()


BACKENDS = ["memory", "sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def any_store(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """A fresh store of every backend (PostgreSQL in its own schema, when a DSN is set)."""
    from loopgate_lc.stores import MemoryStore, SQLiteStore

    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        yield SQLiteStore(tmp_path / "loopgate.db")
    else:
        schema = request.getfixturevalue("pg_schema")
        from loopgate_lc.stores.postgres import PostgresStore

        yield PostgresStore(request.getfixturevalue("postgres_dsn"), schema=schema)


@pytest.fixture
def postgres_dsn() -> str:
    import os

    dsn = os.environ.get("LOOPGATE_TEST_POSTGRES_DSN")
    if not dsn:
        pytest.skip("set LOOPGATE_TEST_POSTGRES_DSN to run the PostgreSQL tests")
    return dsn


@pytest.fixture
def pg_schema(postgres_dsn: str) -> Any:
    """A schema name no other test uses; dropped with everything in it afterwards."""
    import uuid

    psycopg = pytest.importorskip("psycopg")
    name = f"loopgate_test_{uuid.uuid4().hex[:16]}"
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


class FakeClock:
    """A clock tests move by hand, so timeouts fire without waiting."""

    def __init__(self) -> None:
        from loopgate_lc.schema import utcnow

        self.now = utcnow()

    def __call__(self) -> Any:
        return self.now

    def advance(self, seconds: float) -> Any:
        from datetime import timedelta

        self.now = self.now + timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
