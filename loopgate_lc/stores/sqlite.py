"""The default store: one SQLite file, safe for several processes on one machine.

The file runs in WAL mode, so readers never wait for the writer. Every change runs in a
``BEGIN IMMEDIATE`` transaction: it takes the file's write lock up front, so a
compare-and-set cannot interleave with another process's, and the loser of a
:meth:`~SQLiteStore.resolve` race reads the winner inside the same transaction. Other
processes are waited for with SQLite's ``busy_timeout``; threads of this process queue on
a lock of their own first, which is cheaper than SQLite's sleep-and-retry.

The queries, schema and migrations are the shared SQL layer's (``stores/_sql.py``); this
module only drives them. Reads run to their end in a worker thread (``asyncio.to_thread``)
over a small pool of connections, so the store works from any event loop and any thread.

Writes go to one writer thread per store, which commits whatever is queued together
(group commit): a write that arrives while another commits waits for the next
transaction, and that transaction carries every write queued by then, each in a
``SAVEPOINT`` of its own. One operation's failure rolls back its savepoint only; the
others still commit, and each one's status, audit events and outbox entries stay
together, committed all or not at all. Concurrent decisions then share one commit (one
``fsync``) instead of queueing for one each, and no thread holds the write lock while it
waits for the interpreter lock.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import sqlite3
import threading
from dataclasses import dataclass
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


_MAX_BATCH = 64
"""Writes committed together at most (a bound on one transaction's length)."""


@dataclass(slots=True)
class _Write:
    """A write operation queued for the writer thread, and where its outcome goes."""

    op: Op[Any]
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[Any]


def _settle(outcomes: list[tuple[_Write, bool, Any]]) -> None:
    """Hand each write's outcome to its caller's loop: one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Write, bool, Any]]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, settled in by_loop.items():
        try:
            loop.call_soon_threadsafe(_deliver, settled)
        except RuntimeError:  # the caller's loop has closed: nobody waits any more
            pass


def _deliver(outcomes: list[tuple[_Write, bool, Any]]) -> None:
    for write, ok, value in outcomes:
        if write.done.done():  # the caller stopped waiting (cancelled)
            continue
        if ok:
            write.done.set_result(value)
        else:
            write.done.set_exception(value)


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
        self._writes: queue.SimpleQueue[_Write | None] | None = None
        self._write_thread: threading.Thread | None = None
        self._writes_lock = threading.Lock()
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

    def _call(self, op: Op[_T]) -> _T:
        """Drive a read ``op`` on a pooled connection (in a worker thread)."""
        conn = self._acquire()
        try:
            return drive(op, self._executor(conn))
        except LoopgateError:
            raise
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {str(self.path)!r} failed: {exc}") from exc
        finally:
            self._release(conn)

    def _executor(self, conn: sqlite3.Connection) -> Any:
        def execute(stmt: Stmt) -> list[Row]:
            rows: list[Row] = conn.execute(self._sql(stmt.text), stmt.params).fetchall()
            return rows

        return execute

    async def _run(self, op: Op[_T], *, write: bool) -> _T:
        if not write:
            return await asyncio.to_thread(self._call, op)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[_T] = loop.create_future()
        self._writer().put(_Write(op, loop, done))
        return await done

    # the writer thread ---------------------------------------------------------------------

    def _writer(self) -> queue.SimpleQueue[_Write | None]:
        with self._writes_lock:
            if self._writes is None or self._write_thread is None \
                    or not self._write_thread.is_alive():
                self._writes = queue.SimpleQueue()
                self._write_thread = threading.Thread(
                    target=self._write_loop, args=(self._writes,), daemon=True,
                    name=f"loopgate-sqlite-writer:{self.path.name}")
                self._write_thread.start()
            return self._writes

    def _write_loop(self, writes: queue.SimpleQueue[_Write | None]) -> None:
        """Commit what is queued, in batches, until told to stop (``None``)."""
        conn: sqlite3.Connection | None = None
        try:
            while True:
                first = writes.get()
                if first is None:
                    return
                batch, stop = [first], False
                while len(batch) < _MAX_BATCH:
                    try:
                        nxt = writes.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
                if conn is None:
                    try:
                        conn = self._connect()
                    except StoreError as exc:
                        _settle([(w, False, exc) for w in batch])
                        continue
                _settle(self._commit(conn, batch))
                if stop:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Write]
                ) -> list[tuple[_Write, bool, Any]]:
        """Run ``batch`` in one transaction, each write in its own savepoint (a lone
        write needs none): ``(write, ok, result or error)`` for each."""
        execute = self._executor(conn)
        alone = len(batch) == 1
        outcomes: list[tuple[_Write, bool, Any]] = []
        try:
            with self._write_lock:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for write in batch:
                        if not alone:
                            conn.execute("SAVEPOINT loopgate_write")
                        try:
                            result = drive(write.op, execute)
                        except Exception as exc:
                            if alone:
                                raise
                            conn.execute("ROLLBACK TO loopgate_write")
                            conn.execute("RELEASE loopgate_write")
                            outcomes.append((write, False, self._error(exc)))
                        else:
                            if not alone:
                                conn.execute("RELEASE loopgate_write")
                            outcomes.append((write, True, result))
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        except Exception as exc:  # nothing of the batch committed
            error = self._error(exc)
            if alone and not outcomes:
                return [(batch[0], False, error)]
            return [(write, False, error) for write in batch]
        return outcomes

    def _error(self, exc: Exception) -> Exception:
        if isinstance(exc, sqlite3.Error):
            error = StoreError(f"SQLite store {str(self.path)!r} failed: {exc}")
            error.__cause__ = exc
            return error
        return exc

    async def _stop_writer(self) -> None:
        with self._writes_lock:
            writes, thread = self._writes, self._write_thread
            self._writes = self._write_thread = None
        if writes is not None and thread is not None:
            writes.put(None)  # after everything queued before it
            await asyncio.to_thread(thread.join, self.timeout)

    # lifecycle ---------------------------------------------------------------------------

    async def setup(self) -> None:
        """Create the file and apply pending migrations; safe from several processes."""

        def wal() -> Op[None]:
            yield Stmt("PRAGMA journal_mode = WAL")

        await self._run(wal(), write=False)
        await self._run(self._migrate(), write=True)

    async def close(self) -> None:
        """Commit what is queued, stop the writer and close idle connections; the store
        starts again if used again."""
        await self._stop_writer()
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
