"""Checkpointers and stores to measure on, each set up fresh and torn down after.

PostgreSQL runs in a schema of its own (dropped at the end), so a benchmark never
touches anyone's tables; without a DSN the PostgreSQL rows say so instead.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._harness import postgres_dsn
from loopgate_lc.stores.base import Store
from loopgate_lc.stores.memory import MemoryStore
from loopgate_lc.stores.sqlite import SQLiteStore

__all__ = ["Backend", "backend", "backend_names"]

BACKENDS = ("memory", "sqlite", "postgres")
CHECKPOINTERS = {"memory": "InMemorySaver", "sqlite": "SqliteSaver", "postgres": "PostgresSaver"}
STORES = {"memory": "memory://", "sqlite": "SQLite file", "postgres": "PostgreSQL"}


@dataclass
class Backend:
    """One place to keep state: a LangGraph checkpointer factory and a loopgate store."""

    name: str
    workdir: Path
    dsn: str | None = None
    schema: str | None = None

    @property
    def label(self) -> str:
        return f"{CHECKPOINTERS[self.name]} + {STORES[self.name]} store"

    def checkpointer(self) -> Any:
        """A fresh checkpointer (each benchmark variant gets its own, like its own app)."""
        if self.name == "memory":
            from langgraph.checkpoint.memory import InMemorySaver

            return InMemorySaver()
        if self.name == "sqlite":
            from langgraph.checkpoint.sqlite import SqliteSaver

            path = self.workdir / f"checkpoints-{uuid.uuid4().hex[:8]}.db"
            conn = sqlite3.connect(path, check_same_thread=False)
            lite = SqliteSaver(conn)
            lite.setup()
            self._closers.append(conn.close)
            return lite
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row

        assert self.dsn is not None and self.schema is not None
        pg = psycopg.connect(self.dsn, autocommit=True, prepare_threshold=0,
                             row_factory=dict_row, options=f"-c search_path={self.schema}")
        saver = PostgresSaver(pg)
        saver.setup()
        self._closers.append(pg.close)
        return saver

    def store(self) -> Store:
        """A fresh store (each benchmark variant gets its own data)."""
        if self.name == "memory":
            return MemoryStore()
        if self.name == "sqlite":
            return SQLiteStore(self.workdir / f"loopgate-{uuid.uuid4().hex[:8]}.db")
        from loopgate_lc.stores.postgres import PostgresStore

        assert self.dsn is not None
        return PostgresStore(self.dsn, schema=self.schema)

    def twin(self, store: Store) -> Store:
        """Another handle on ``store``'s data, for use from another event loop (a
        Postgres pool belongs to the loop that opened it; the memory store is shared)."""
        if isinstance(store, SQLiteStore):
            return SQLiteStore(store.path)
        if self.name == "postgres":
            from loopgate_lc.stores.postgres import PostgresStore

            assert self.dsn is not None
            return PostgresStore(self.dsn, schema=self.schema)
        return store

    def __post_init__(self) -> None:
        self._closers: list[Any] = []

    def on_close(self, closer: Any) -> None:
        """Call ``closer`` when this backend is torn down (connections a benchmark opens
        beside the checkpointers and stores)."""
        self._closers.append(closer)

    def close(self) -> None:
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                closer()
        self._closers.clear()


def backend_names() -> list[tuple[str, str | None]]:
    """Every backend, with the reason it cannot run here (None when it can)."""
    dsn = postgres_dsn()
    why = None if dsn else (
        "no PostgreSQL configured (set LOOPGATE_TEST_POSTGRES_DSN, e.g. "
        "postgresql://postgres@127.0.0.1:5432/postgres)")
    return [("memory", None), ("sqlite", None), ("postgres", why)]


@contextlib.contextmanager
def backend(name: str) -> Iterator[Backend]:
    """A backend in a fresh temporary directory (and a fresh Postgres schema)."""
    with tempfile.TemporaryDirectory(prefix="loopgate-bench-") as tmp:
        if name != "postgres":
            made = Backend(name, Path(tmp))
            try:
                yield made
            finally:
                made.close()
            return
        import psycopg

        dsn = postgres_dsn()
        if dsn is None:
            raise RuntimeError("no PostgreSQL DSN configured")
        schema = f"loopgate_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'CREATE SCHEMA "{schema}"')
        made = Backend(name, Path(tmp), dsn=dsn, schema=schema)
        try:
            yield made
        finally:
            made.close()
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
