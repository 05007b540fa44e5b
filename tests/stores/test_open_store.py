"""open_store(): one string picks the backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopgate_lc.errors import ConfigurationError
from loopgate_lc.stores import MemoryStore, SQLiteStore, aopen_store, open_store
from loopgate_lc.testing.stores import request


@pytest.mark.parametrize("url", ["memory://", "memory:", "memory", " MEMORY:// "])
def test_memory_urls(url: str) -> None:
    assert isinstance(open_store(url), MemoryStore)


def test_sqlite_url_and_plain_paths(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/a.db")
    assert isinstance(store, SQLiteStore)
    assert store.path == tmp_path / "a.db"
    for name in ("b.db", "c.sqlite", "d.sqlite3", "E.DB"):
        plain = open_store(str(tmp_path / name))
        assert isinstance(plain, SQLiteStore)
        assert plain.path == tmp_path / name
    as_path = open_store(tmp_path / "f.db")
    assert isinstance(as_path, SQLiteStore)
    assert as_path.path == tmp_path / "f.db"


def test_none_is_the_default_sqlite_file() -> None:
    store = open_store(None)
    assert isinstance(store, SQLiteStore)
    assert store.path == Path("loopgate.db")


def test_an_existing_store_is_returned_as_is() -> None:
    store = MemoryStore()
    assert open_store(store) is store


@pytest.mark.parametrize(
    "url", ["postgresql://user@127.0.0.1:5432/db", "postgres://user@127.0.0.1/db"]
)
def test_postgres_urls(url: str) -> None:
    pytest.importorskip("psycopg")
    from loopgate_lc.stores import PostgresStore

    store = open_store(url)
    assert isinstance(store, PostgresStore)


@pytest.mark.parametrize(
    "url", ["mysql://h/db", "redis://localhost", "loopgate.txt", "", "http://x/y.db"]
)
def test_unknown_schemes_name_the_accepted_ones(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        open_store(url)
    message = str(caught.value)
    for scheme in ("memory://", "sqlite:///", "postgresql://", ".db"):
        assert scheme in message


def test_open_store_does_not_touch_the_file(tmp_path: Path) -> None:
    open_store(tmp_path / "untouched.db")
    assert not (tmp_path / "untouched.db").exists()


async def test_aopen_store_sets_up(tmp_path: Path) -> None:
    store = await aopen_store(tmp_path / "ready.db")
    try:
        _, created = await store.create_request(request("r1"))
        assert created
    finally:
        await store.close()
