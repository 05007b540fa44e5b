"""The default store: one SQLite file, safe for several processes on one machine.

The file runs in WAL mode, so readers never wait for the writer. Every change runs in a
``BEGIN IMMEDIATE`` transaction: it takes the file's write lock up front, so a
compare-and-set cannot interleave with another process's, and the loser of a
:meth:`~SQLiteStore.resolve` race reads the winner inside the same transaction. Other
processes are waited for with SQLite's ``busy_timeout``; store objects of this process on
one file queue on a lock of their own first, which is cheaper than SQLite's
sleep-and-retry.

The queries, schema and migrations are the shared SQL layer's (``stores/_sql.py``); this
module only drives them, on one thread per store with one connection (the way
``aiosqlite`` does), so the store works from any event loop and any thread, and no
database work runs on an event loop. The thread takes whatever is queued when it looks:
reads run one by one, and the writes are committed together (group commit), each in a
``SAVEPOINT`` of its own. One write's failure rolls back its savepoint only; the others
still commit, and each one's status, audit events and outbox entries stay together,
committed all or not at all. Concurrent decisions then share one commit (one ``fsync``)
and one wake-up of each waiting event loop, instead of a thread hop and a commit each,
with threads queueing on the write lock while they wait for the interpreter lock.

:class:`DirectSQLiteStore` runs the same operations, transactions and errors on the
caller's thread instead, for a process that does one thing and exits (the CLI's store
commands): its coroutines never wait, so they run without an event loop (see
:mod:`loopgate_lc._inline`), and this module imports asyncio only where a store thread
hands results to one.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from loopgate_lc.errors import ConfigurationError, StoreError
from loopgate_lc.stores._common import json_text, utc
from loopgate_lc.stores._sql import TABLES, Dialect, Op, Row, SQLStore, Stmt, drive

if TYPE_CHECKING:
    import asyncio

__all__ = ["DirectSQLiteStore", "SQLiteStore"]

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
    if value.tzinfo is not UTC:  # the times loopgate_lc makes are UTC already
        value = utc(value)
    return value.isoformat(timespec="microseconds")


def _dt(value: str) -> datetime:
    return utc(datetime.fromisoformat(value))


def _json(value: Any, what: str) -> str:
    return json_text(value, what=what)


#: The JSON texts most request rows hold (no message references yet, no votes), made
#: without the decoder: ``json.loads`` costs a few Python calls even for ``{}``, and a
#: decision reads both columns twice. Each call makes a new object, as the decoder does.
_EMPTY_JSON: dict[str, Callable[[], Any]] = {"{}": dict, "[]": list}


def _read_json(value: str) -> Any:
    empty = _EMPTY_JSON.get(value)
    return json.loads(value) if empty is None else empty()


#: A write transaction's own statements (run through the batch's cursor, as its writes).
_BEGIN = Stmt("BEGIN IMMEDIATE", rows=False)
_SAVEPOINT = Stmt("SAVEPOINT loopgate_write", rows=False)
_ROLLBACK_TO = Stmt("ROLLBACK TO loopgate_write", rows=False)
_RELEASE = Stmt("RELEASE loopgate_write", rows=False)
_COMMIT = Stmt("COMMIT", rows=False)

#: Jobs the store thread takes at once at most (a bound on one transaction's length).
_MAX_BATCH = 64


@dataclass(slots=True)
class _Job:
    """An operation queued for the store thread, and where its outcome goes."""

    op: Op[Any]
    write: bool
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[Any]


#: Whether an operation succeeded, and its result or error.
_Done = tuple[bool, Any]
#: A job, whether it succeeded, and its result or error.
_Outcome = tuple[_Job, bool, Any]


def _take(jobs: queue.SimpleQueue[_Job | None]) -> tuple[list[_Job], bool]:
    """Wait for a job, then take every one queued behind it (up to ``_MAX_BATCH``);
    and whether the stop mark (None) came."""
    first = jobs.get()
    if first is None:
        return [], True
    batch = [first]
    # only this thread takes, so a queue that is not empty has a job to give (and an
    # empty one raises nothing: most batches are one job)
    while not jobs.empty() and len(batch) < _MAX_BATCH:
        job = jobs.get_nowait()
        if job is None:
            return batch, True
        batch.append(job)
    return batch, False


def _settle(outcomes: list[_Outcome]) -> None:
    """Hand each job's outcome to its caller's loop: one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, settled in by_loop.items():
        # a caller's loop that has closed has nobody waiting any more
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_deliver, settled)


def _deliver(outcomes: list[_Outcome]) -> None:
    for job, ok, value in outcomes:
        if job.done.done():  # the caller stopped waiting (cancelled)
            continue
        if ok:
            job.done.set_result(value)
        else:
            job.done.set_exception(value)


DIALECT = Dialect(
    placeholder="?",
    types={"pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "seq": "INTEGER NOT NULL",
           "ts": "TEXT", "json": "TEXT"},
    for_update="",  # BEGIN IMMEDIATE already holds the file's write lock
    skip_locked="",
    session_seq="(SELECT COALESCE(MAX(seq), 0) + 1 FROM {sessions})",
    table_exists="SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
    json_field="json_extract({column}, '$.{key}')",
    json_keys="json_each({column})",
    fuse=False,  # in-process: a statement costs little, and SQLite has no data-modifying WITH
    ts=_ts,
    read_ts=_dt,
    json=_json,
    read_json=_read_json,
)


class SQLiteStore(SQLStore):
    """A :class:`Store` in one SQLite file.

    Args:
        path: The database file; created on :meth:`setup`. It may be shared with other
            data (for example LangGraph's SQLite checkpointer): every table this store
            creates is prefixed ``loopgate_``.
        timeout: Seconds to wait for another process's write lock before giving up
            with :class:`~loopgate_lc.errors.StoreError`.
        max_idle_connections: Unused (the store keeps one connection, on its own
            thread); accepted so existing calls keep working.

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
        del max_idle_connections
        self._write_lock = _write_lock_for(self._file)
        self._jobs: queue.SimpleQueue[_Job | None] | None = None
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
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
                check_same_thread=False,  # opened by the store's thread, closed by it
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {str(self.path)!r}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        return conn

    async def _run(self, op: Op[_T], *, write: bool) -> _T:
        import asyncio

        loop = asyncio.get_running_loop()
        done: asyncio.Future[_T] = loop.create_future()
        self._queue().put(_Job(op, write, loop, done))
        return await done

    def _queue(self) -> queue.SimpleQueue[_Job | None]:
        """The store thread's queue; the thread starts on first use (and after close)."""
        with self._thread_lock:
            if self._jobs is None or self._thread is None or not self._thread.is_alive():
                self._jobs = queue.SimpleQueue()
                self._thread = threading.Thread(
                    target=self._serve, args=(self._jobs,), daemon=True,
                    name=f"loopgate-sqlite:{self.path.name}")
                self._thread.start()
            return self._jobs

    def _serve(self, jobs: queue.SimpleQueue[_Job | None]) -> None:
        """The store thread: run what is queued, in batches, until told to stop."""
        conn: sqlite3.Connection | None = None
        try:
            while True:
                batch, stop = _take(jobs)
                if batch:
                    if conn is None:
                        try:
                            conn = self._connect()
                        except StoreError as exc:
                            _settle([(job, False, exc) for job in batch])
                            continue
                    execute = self._executor(conn)
                    outcomes: list[_Outcome] = [(job, *self._read(execute, job.op))
                                                for job in batch if not job.write]
                    writes = [job for job in batch if job.write]
                    if writes:
                        committed = self._commit(conn, execute, [job.op for job in writes])
                        outcomes += [(job, *done)
                                     for job, done in zip(writes, committed, strict=True)]
                    _settle(outcomes)
                if stop:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _executor(self, conn: sqlite3.Connection) -> Callable[[Stmt], list[Row]]:
        # One cursor for all the statements of a batch (``conn.execute`` makes one per
        # statement), and no fetch for a statement whose rows nobody reads.
        cursor = conn.cursor()

        def execute(stmt: Stmt) -> list[Row]:
            cursor.execute(self._sql(stmt.text), stmt.params)
            if not stmt.rows:
                return []
            rows: list[Row] = cursor.fetchall()
            return rows

        return execute

    def _read(self, execute: Callable[[Stmt], list[Row]], op: Op[Any]) -> _Done:
        try:
            return True, drive(op, execute)
        except Exception as exc:
            return False, self._error(exc)

    def _commit(self, conn: sqlite3.Connection, execute: Callable[[Stmt], list[Row]],
                writes: list[Op[Any]]) -> list[_Done]:
        """Run ``writes`` in one transaction, each in its own savepoint (a lone write
        needs none, and is rolled back whole when it fails); how each one ended, in
        order."""
        alone = len(writes) == 1
        outcomes: list[_Done] = []
        try:
            with self._write_lock:
                execute(_BEGIN)
                try:
                    for op in writes:
                        if not alone:
                            execute(_SAVEPOINT)
                        try:
                            result = drive(op, execute)
                        except Exception as exc:
                            if alone:
                                raise
                            execute(_ROLLBACK_TO)
                            execute(_RELEASE)
                            outcomes.append((False, self._error(exc)))
                        else:
                            if not alone:
                                execute(_RELEASE)
                            outcomes.append((True, result))
                    execute(_COMMIT)
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        except Exception as exc:  # nothing of the batch committed
            error = self._error(exc)
            return [(False, value if not ok else error) for ok, value in outcomes] + [
                (False, error)] * (len(writes) - len(outcomes))
        return outcomes

    def _error(self, exc: Exception) -> Exception:
        """What a caller is told: library errors as they are, SQLite's as a StoreError."""
        if isinstance(exc, sqlite3.Error):
            error = StoreError(f"SQLite store {str(self.path)!r} failed: {exc}")
            error.__cause__ = exc
            return error
        return exc

    # lifecycle ---------------------------------------------------------------------------

    async def setup(self) -> None:
        """Create the file and apply pending migrations; safe from several processes."""

        def wal() -> Op[None]:
            yield Stmt("PRAGMA journal_mode = WAL")

        await self._run(wal(), write=False)
        await self._run(self._migrate(), write=True)

    async def close(self) -> None:
        """Finish what is queued, then stop the store's thread and close its connection;
        the store starts again if used again."""
        with self._thread_lock:
            jobs, thread = self._jobs, self._thread
            self._jobs = self._thread = None
        if jobs is not None and thread is not None:
            import asyncio

            jobs.put(None)  # after everything queued before it
            await asyncio.to_thread(thread.join, self.timeout)


class DirectSQLiteStore(SQLiteStore):
    """A :class:`SQLiteStore` that runs each operation at once, on the caller's thread.

    The same file, statements, transactions and errors, on one connection opened on
    first use: a read runs as it comes, a write in a ``BEGIN IMMEDIATE`` transaction of
    its own under the file's write lock. Its coroutines never wait, so a process that
    does one thing and exits drives them without an event loop or the store's thread
    (:func:`loopgate_lc._inline.run_inline`). Every call blocks its caller for as long
    as its statements take: on an event loop, use :class:`SQLiteStore`.
    """

    _conn: sqlite3.Connection | None = None

    async def _run(self, op: Op[_T], *, write: bool) -> _T:
        if self._conn is None:
            self._conn = self._connect()
        execute = self._executor(self._conn)
        ok, value = (self._commit(self._conn, execute, [op])[0] if write
                     else self._read(execute, op))
        if not ok:
            raise value
        result: _T = value
        return result

    async def close(self) -> None:
        """Close the connection; the store opens another if used again."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
