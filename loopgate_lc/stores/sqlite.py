"""The default store: one SQLite file, safe for several processes on one machine.

The file runs in WAL mode, so readers never wait for the writer. Every change runs in a
``BEGIN IMMEDIATE`` transaction: it takes the file's write lock up front, so a
compare-and-set cannot interleave with another process's, and the loser of a
:meth:`~SQLiteStore.resolve` race reads the winner inside the same transaction. Other
processes are waited for with SQLite's ``busy_timeout``; threads of this process queue on
a lock of their own first, which is cheaper than SQLite's sleep-and-retry.

The queries, schema and migrations are the shared SQL layer's (``stores/_sql.py``); this
module only drives them: each operation runs to its end in one worker thread
(``asyncio.to_thread``) over a small pool of connections, so the store works from any
event loop and any thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from loopgate_lc.errors import ConfigurationError, LoopgateError, StoreError
from loopgate_lc.stores._common import json_text, utc
from loopgate_lc.stores._sql import TABLES, Dialect, Op, Row, SQLStore, Stmt, drive

__all__ = ["SQLiteStore"]

_T = TypeVar("_T")

#: Threads of one process writing the same file queue here rather than in SQLite's
#: busy handler, which sleeps in coarse steps. Keyed by the file's resolved path so two
#: store objects on one file share it.
_write_locks: dict[str, threading.Lock] = {}
_write_locks_guard = threading.Lock()


def _write_lock_for(path: Path) -> threading.Lock:
    key = str(path)
    with _write_locks_guard:
        return _write_locks.setdefault(key, threading.Lock())


def _ts(value: datetime) -> str:
    # Fixed-width UTC text sorts in time order, so SQL can compare and index it.
    return utc(value).isoformat(timespec="microseconds")


def _dt(value: str) -> datetime:
    return utc(datetime.fromisoformat(value))


def _json(value: Any, what: str) -> str:
    return json_text(value, what=what)


DIALECT = Dialect(
    placeholder="?",
    types={"pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "seq": "INTEGER NOT NULL",
           "ts": "TEXT", "json": "TEXT"},
    for_update="",  # BEGIN IMMEDIATE already holds the file's write lock
    skip_locked="",
    session_seq="(SELECT COALESCE(MAX(seq), 0) + 1 FROM {sessions})",
    table_exists="SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
    json_field="json_extract({column}, '$.{key}')",
    ts=_ts,
    read_ts=_dt,
    json=_json,
    read_json=json.loads,
)


class SQLiteStore(SQLStore):
    """A :class:`Store` in one SQLite file.

    Args:
        path: The database file; created on :meth:`setup`. It may be shared with other
            data (for example LangGraph's SQLite checkpointer): every table this store
            creates is prefixed ``loopgate_``.
        timeout: Seconds to wait for another process's write lock before giving up
            with :class:`~loopgate_lc.errors.StoreError`.
        max_idle_connections: Connections kept open between calls.

    Raises:
        ConfigurationError: ``path`` is empty or ``:memory:`` (each connection would see
            its own empty database; use ``MemoryStore`` instead).
    """

    dialect = DIALECT

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 30.0,
        max_idle_connections: int = 8,
    ) -> None:
        text = os.fspath(path)
        if text in ("", ":memory:") or text.startswith("file:"):
            raise ConfigurationError(
                f"SQLiteStore needs a file path, got {text!r}; use MemoryStore "
                "(open_store('memory://')) for a store that lives in memory"
            )
        self.path = Path(text).expanduser()
        # Fixed now, so a later chdir() cannot point the store at another file.
        self._file = self.path.resolve()
        self.timeout = timeout
        self._max_idle = max_idle_connections
        self._idle: list[sqlite3.Connection] = []
        self._idle_lock = threading.Lock()
        self._write_lock = _write_lock_for(self._file)
        super().__init__({name: f"loopgate_{name}" for name in TABLES})

    @classmethod
    def from_conn_string(cls, conn_string: str, **kwargs: Any) -> SQLiteStore:
        """Open ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.

        Raises:
            ConfigurationError: The string is not a ``sqlite:///`` URL with a path.
        """
        prefix = "sqlite:///"
        if not conn_string.startswith(prefix) or len(conn_string) == len(prefix):
            raise ConfigurationError(
                f"expected 'sqlite:///relative/path.db' or 'sqlite:////absolute/path.db', "
                f"got {conn_string!r}"
            )
        return cls(conn_string[len(prefix) :], **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    # plumbing ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self._file,
                timeout=self.timeout,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # a pooled connection moves between threads
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {str(self.path)!r}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        return conn

    def _acquire(self) -> sqlite3.Connection:
        with self._idle_lock:
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _release(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:  # only after a failure mid-transaction
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                conn.close()
                return
        with self._idle_lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def _call(self, op: Op[_T], write: bool) -> _T:
        conn = self._acquire()

        def execute(stmt: Stmt) -> list[Row]:
            rows: list[Row] = conn.execute(self._sql(stmt.text), stmt.params).fetchall()
            return rows

        try:
            if not write:
                return drive(op, execute)
            with self._write_lock:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = drive(op, execute)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result
        except LoopgateError:
            raise
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {str(self.path)!r} failed: {exc}") from exc
        finally:
            self._release(conn)

    async def _run(self, op: Op[_T], *, write: bool) -> _T:
        return await asyncio.to_thread(self._call, op, write)

    # lifecycle ---------------------------------------------------------------------------

    async def setup(self) -> None:
        """Create the file and apply pending migrations; safe from several processes."""

        def wal() -> Op[None]:
            yield Stmt("PRAGMA journal_mode = WAL")

        await self._run(wal(), write=False)
        await self._run(self._migrate(), write=True)

    async def close(self) -> None:
        """Close idle connections; the store opens new ones if used again."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
