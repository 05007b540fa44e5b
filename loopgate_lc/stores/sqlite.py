"""The default store: one SQLite file, safe for several processes on one machine.

The file runs in WAL mode, so readers never wait for the writer. Every change runs in a
``BEGIN IMMEDIATE`` transaction: it takes the file's write lock up front, so a
compare-and-set cannot interleave with another process's, and the loser of a
:meth:`~SQLiteStore.resolve` race reads the winner inside the same transaction. Other
processes are waited for with SQLite's ``busy_timeout``; threads of this process queue on
a lock of their own first, which is cheaper than SQLite's sleep-and-retry.

The blocking ``sqlite3`` calls run in worker threads (``asyncio.to_thread``) over a small
pool of connections, so the store works from any event loop and any thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from loopgate_lc.errors import (
    ConfigurationError,
    LoopgateError,
    RequestNotFound,
    SessionExists,
    SessionNotFound,
    StoreError,
)
from loopgate_lc.schema import RequestKind, Status, utcnow
from loopgate_lc.stores._common import (
    already_decided,
    check_limit,
    coerce_status,
    final_status,
    json_text,
    outbox_not_found,
    utc,
)
from loopgate_lc.stores.base import (
    AuditEvent,
    OutboxItem,
    RequestRecord,
    SessionRecord,
    Store,
)

__all__ = ["SQLiteStore"]

_T = TypeVar("_T")

#: Ordered migrations: (version, statements). Applied once each, in one transaction per
#: setup(); never edit a released entry, append a new one.
_MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE loopgate_sessions (
                session_id TEXT PRIMARY KEY,
                seq INTEGER NOT NULL,
                client_id TEXT NOT NULL DEFAULT '',
                telegram_id INTEGER,
                approvers TEXT NOT NULL DEFAULT '[]',
                active INTEGER NOT NULL DEFAULT 1,
                created_at TEXT NOT NULL,
                metadata TEXT NOT NULL DEFAULT '{}'
            )""",
            """CREATE TABLE loopgate_requests (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE,
                kind TEXT NOT NULL,
                session_id TEXT,
                client_id TEXT,
                thread_id TEXT,
                interrupt_id TEXT,
                graph TEXT,
                payload TEXT NOT NULL DEFAULT '{}',
                status TEXT NOT NULL,
                decision TEXT,
                decided_by TEXT,
                channel TEXT,
                created_at TEXT NOT NULL,
                expires_at TEXT,
                decided_at TEXT,
                escalation_level INTEGER NOT NULL DEFAULT 0,
                resumed_at TEXT,
                message_refs TEXT NOT NULL DEFAULT '{}'
            )""",
            """CREATE UNIQUE INDEX loopgate_requests_interrupt
                ON loopgate_requests (thread_id, interrupt_id)
                WHERE thread_id IS NOT NULL AND interrupt_id IS NOT NULL""",
            "CREATE INDEX loopgate_requests_created ON loopgate_requests (created_at, seq)",
            "CREATE INDEX loopgate_requests_thread ON loopgate_requests (thread_id)",
            "CREATE INDEX loopgate_requests_session ON loopgate_requests (session_id)",
            """CREATE INDEX loopgate_requests_expiry ON loopgate_requests (expires_at)
                WHERE status = 'pending'""",
            """CREATE TABLE loopgate_callbacks (
                key TEXT PRIMARY KEY,
                request_id TEXT NOT NULL,
                action TEXT NOT NULL,
                created_at TEXT NOT NULL
            )""",
            """CREATE TABLE loopgate_audit (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                at TEXT NOT NULL,
                event TEXT NOT NULL,
                request_id TEXT,
                session_id TEXT,
                thread_id TEXT,
                actor TEXT,
                channel TEXT,
                args_hash TEXT,
                details TEXT NOT NULL DEFAULT '{}'
            )""",
            "CREATE INDEX loopgate_audit_request ON loopgate_audit (request_id)",
            "CREATE INDEX loopgate_audit_session ON loopgate_audit (session_id)",
            "CREATE INDEX loopgate_audit_thread ON loopgate_audit (thread_id)",
            "CREATE INDEX loopgate_audit_at ON loopgate_audit (at)",
            """CREATE TABLE loopgate_outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                request_id TEXT NOT NULL,
                notifier TEXT NOT NULL,
                kind TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                due_at TEXT NOT NULL,
                last_error TEXT,
                done INTEGER NOT NULL DEFAULT 0,
                leased_until TEXT
            )""",
            """CREATE UNIQUE INDEX loopgate_outbox_open
                ON loopgate_outbox (request_id, notifier, kind) WHERE done = 0""",
            "CREATE INDEX loopgate_outbox_due ON loopgate_outbox (due_at) WHERE done = 0",
        ),
    ),
    (
        2,
        (
            # what a restarted gateway looks for every poll: decided, not yet resumed
            """CREATE INDEX loopgate_requests_unresumed ON loopgate_requests (graph)
                WHERE status <> 'pending' AND resumed_at IS NULL""",
        ),
    ),
    (
        3,
        (
            # a claimed resume is done once the graph's checkpoint has it; a claim that
            # never completes belongs to a process that died mid-resume
            "ALTER TABLE loopgate_requests ADD COLUMN resume_done_at TEXT",
            "UPDATE loopgate_requests SET resume_done_at = resumed_at "
            "WHERE resumed_at IS NOT NULL",
            "DROP INDEX loopgate_requests_unresumed",
            """CREATE INDEX loopgate_requests_unresumed ON loopgate_requests (graph)
                WHERE status <> 'pending' AND resume_done_at IS NULL""",
        ),
    ),
)

_REQUEST_COLUMNS = (
    "id, kind, session_id, client_id, thread_id, interrupt_id, graph, payload, status, "
    "decision, decided_by, channel, created_at, expires_at, decided_at, escalation_level, "
    "resumed_at, message_refs, resume_done_at"
)

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


def _ts_or_none(value: datetime | None) -> str | None:
    return None if value is None else _ts(value)


def _dt(value: str) -> datetime:
    return utc(datetime.fromisoformat(value))


def _dt_or_none(value: str | None) -> datetime | None:
    return None if value is None else _dt(value)


def _loads(text: str) -> Any:
    return json.loads(text)


def _request(row: sqlite3.Row) -> RequestRecord:
    return RequestRecord(
        id=row["id"],
        kind=RequestKind(row["kind"]),
        session_id=row["session_id"],
        client_id=row["client_id"],
        thread_id=row["thread_id"],
        interrupt_id=row["interrupt_id"],
        graph=row["graph"],
        payload=_loads(row["payload"]),
        status=Status(row["status"]),
        decision=None if row["decision"] is None else _loads(row["decision"]),
        decided_by=row["decided_by"],
        channel=row["channel"],
        created_at=_dt(row["created_at"]),
        expires_at=_dt_or_none(row["expires_at"]),
        decided_at=_dt_or_none(row["decided_at"]),
        escalation_level=row["escalation_level"],
        resumed_at=_dt_or_none(row["resumed_at"]),
        resume_done_at=_dt_or_none(row["resume_done_at"]),
        message_refs=_loads(row["message_refs"]),
    )


def _session(row: sqlite3.Row) -> SessionRecord:
    return SessionRecord(
        session_id=row["session_id"],
        client_id=row["client_id"],
        telegram_id=row["telegram_id"],
        approvers=_loads(row["approvers"]),
        active=bool(row["active"]),
        created_at=_dt(row["created_at"]),
        metadata=_loads(row["metadata"]),
    )


def _audit(row: sqlite3.Row) -> AuditEvent:
    return AuditEvent(
        id=row["id"],
        at=_dt(row["at"]),
        event=row["event"],
        request_id=row["request_id"],
        session_id=row["session_id"],
        thread_id=row["thread_id"],
        actor=row["actor"],
        channel=row["channel"],
        args_hash=row["args_hash"],
        details=_loads(row["details"]),
    )


def _outbox(row: sqlite3.Row) -> OutboxItem:
    return OutboxItem(
        id=row["id"],
        request_id=row["request_id"],
        notifier=row["notifier"],
        kind=row["kind"],
        attempts=row["attempts"],
        due_at=_dt(row["due_at"]),
        last_error=row["last_error"],
        done=bool(row["done"]),
    )


class SQLiteStore(Store):
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

    def _call(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._acquire()
        try:
            return fn(conn)
        except LoopgateError:
            raise
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {str(self.path)!r} failed: {exc}") from exc
        finally:
            self._release(conn)

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        return await asyncio.to_thread(self._call, fn)

    @contextmanager
    def _write(self, conn: sqlite3.Connection) -> Iterator[None]:
        """One write transaction holding the file's write lock from its first statement."""
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # lifecycle ---------------------------------------------------------------------------

    async def setup(self) -> None:
        """Create the file and apply pending migrations; safe from several processes."""

        def run(conn: sqlite3.Connection) -> None:
            with self._write_lock:
                conn.execute("PRAGMA journal_mode = WAL")
            with self._write(conn):
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS loopgate_schema_version ("
                    "version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
                )
                row = conn.execute(
                    "SELECT COALESCE(MAX(version), 0) FROM loopgate_schema_version"
                ).fetchone()
                current = int(row[0])
                if current > self.SCHEMA_VERSION:
                    raise StoreError(
                        f"{str(self.path)!r} has loopgate schema version {current}, newer "
                        f"than this loopgate_lc supports ({self.SCHEMA_VERSION}); upgrade "
                        "loopgate_lc"
                    )
                for version, statements in _MIGRATIONS:
                    if version <= current:
                        continue
                    for statement in statements:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO loopgate_schema_version (version, applied_at) VALUES (?, ?)",
                        (version, _ts(utcnow())),
                    )

        await self._run(run)

    async def schema_version(self) -> int:
        """The schema version the file is at (0 before :meth:`setup`)."""

        def run(conn: sqlite3.Connection) -> int:
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' "
                "AND name = 'loopgate_schema_version'"
            ).fetchone()
            if exists is None:
                return 0
            row = conn.execute(
                "SELECT COALESCE(MAX(version), 0) FROM loopgate_schema_version"
            ).fetchone()
            return int(row[0])

        return await self._run(run)

    async def close(self) -> None:
        """Close idle connections; the store opens new ones if used again."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # sessions ----------------------------------------------------------------------------

    async def create_session(self, session: SessionRecord) -> SessionRecord:
        values = (
            session.client_id,
            session.telegram_id,
            json_text([str(a) for a in session.approvers], what="session approvers"),
            int(session.active),
            _ts(session.created_at),
            json_text(session.metadata, what="session metadata"),
            session.session_id,
        )

        def run(conn: sqlite3.Connection) -> SessionRecord:
            with self._write(conn):
                row = conn.execute(
                    "SELECT active FROM loopgate_sessions WHERE session_id = ?",
                    (session.session_id,),
                ).fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO loopgate_sessions (client_id, telegram_id, approvers, "
                        "active, created_at, metadata, session_id, seq) VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, "
                        "(SELECT COALESCE(MAX(seq), 0) + 1 FROM loopgate_sessions))",
                        values,
                    )
                elif row["active"]:
                    raise SessionExists(session.session_id)
                else:
                    conn.execute(
                        "UPDATE loopgate_sessions SET client_id = ?, telegram_id = ?, "
                        "approvers = ?, active = ?, created_at = ?, metadata = ? "
                        "WHERE session_id = ?",
                        values,
                    )
                stored = conn.execute(
                    "SELECT * FROM loopgate_sessions WHERE session_id = ?",
                    (session.session_id,),
                ).fetchone()
            return _session(stored)

        return await self._run(run)

    async def get_session(self, session_id: str) -> SessionRecord:
        def run(conn: sqlite3.Connection) -> SessionRecord:
            row = conn.execute(
                "SELECT * FROM loopgate_sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
            if row is None:
                raise SessionNotFound(session_id)
            return _session(row)

        return await self._run(run)

    async def deactivate_session(self, session_id: str) -> SessionRecord:
        def run(conn: sqlite3.Connection) -> SessionRecord:
            with self._write(conn):
                conn.execute(
                    "UPDATE loopgate_sessions SET active = 0 WHERE session_id = ?",
                    (session_id,),
                )
                row = conn.execute(
                    "SELECT * FROM loopgate_sessions WHERE session_id = ?", (session_id,)
                ).fetchone()
            if row is None:
                raise SessionNotFound(session_id)
            return _session(row)

        return await self._run(run)

    async def list_sessions(self, *, active: bool | None = None) -> list[SessionRecord]:
        def run(conn: sqlite3.Connection) -> list[SessionRecord]:
            if active is None:
                rows = conn.execute(
                    "SELECT * FROM loopgate_sessions ORDER BY created_at, seq"
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT * FROM loopgate_sessions WHERE active = ? ORDER BY created_at, seq",
                    (int(active),),
                ).fetchall()
            return [_session(r) for r in rows]

        return await self._run(run)

    # requests ----------------------------------------------------------------------------

    async def create_request(self, record: RequestRecord) -> tuple[RequestRecord, bool]:
        values = (
            record.id,
            RequestKind(record.kind).value,
            record.session_id,
            record.client_id,
            record.thread_id,
            record.interrupt_id,
            record.graph,
            json_text(record.payload, what="request payload"),
            coerce_status(record.status).value,
            None if record.decision is None else json_text(record.decision, what="decision"),
            record.decided_by,
            record.channel,
            _ts(record.created_at),
            _ts_or_none(record.expires_at),
            _ts_or_none(record.decided_at),
            record.escalation_level,
            _ts_or_none(record.resumed_at),
            json_text(record.message_refs, what="message refs"),
            _ts_or_none(record.resume_done_at),
        )

        def run(conn: sqlite3.Connection) -> tuple[RequestRecord, bool]:
            with self._write(conn):
                row = conn.execute(
                    "SELECT * FROM loopgate_requests WHERE id = ?", (record.id,)
                ).fetchone()
                if row is None and record.thread_id is not None and record.interrupt_id is not None:
                    row = conn.execute(
                        "SELECT * FROM loopgate_requests WHERE thread_id = ? AND interrupt_id = ?",
                        (record.thread_id, record.interrupt_id),
                    ).fetchone()
                if row is not None:
                    return _request(row), False
                conn.execute(
                    f"INSERT INTO loopgate_requests ({_REQUEST_COLUMNS}) "
                    f"VALUES ({', '.join('?' * len(values))})",
                    values,
                )
                row = conn.execute(
                    "SELECT * FROM loopgate_requests WHERE id = ?", (record.id,)
                ).fetchone()
            return _request(row), True

        return await self._run(run)

    async def get_request(self, request_id: str) -> RequestRecord:
        def run(conn: sqlite3.Connection) -> RequestRecord:
            row = conn.execute(
                "SELECT * FROM loopgate_requests WHERE id = ?", (request_id,)
            ).fetchone()
            if row is None:
                raise RequestNotFound(request_id)
            return _request(row)

        return await self._run(run)

    async def find_request(self, thread_id: str, interrupt_id: str) -> RequestRecord | None:
        def run(conn: sqlite3.Connection) -> RequestRecord | None:
            row = conn.execute(
                "SELECT * FROM loopgate_requests WHERE thread_id = ? AND interrupt_id = ?",
                (thread_id, interrupt_id),
            ).fetchone()
            return None if row is None else _request(row)

        return await self._run(run)

    async def list_requests(
        self,
        *,
        status: Status | None = None,
        session_id: str | None = None,
        thread_id: str | None = None,
        graph: str | None = None,
        unresumed: bool = False,
        stale_before: datetime | None = None,
        limit: int | None = None,
    ) -> list[RequestRecord]:
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            where.append("status = ?")
            params.append(coerce_status(status).value)
        for column, value in (
            ("session_id", session_id),
            ("thread_id", thread_id),
            ("graph", graph),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if unresumed:
            where.append("status != 'pending' AND resume_done_at IS NULL "
                         "AND (resumed_at IS NULL OR resumed_at <= ?)")
            params.append(_ts_or_none(stale_before))
        query = "SELECT * FROM loopgate_requests"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY created_at, seq"
        if check_limit(limit) is not None:
            query += " LIMIT ?"
            params.append(limit)

        def run(conn: sqlite3.Connection) -> list[RequestRecord]:
            return [_request(r) for r in conn.execute(query, params).fetchall()]

        return await self._run(run)

    async def resolve(
        self,
        request_id: str,
        *,
        status: Status,
        decision: dict[str, Any],
        decided_by: str | None,
        channel: str | None,
        decided_at: datetime | None = None,
    ) -> RequestRecord:
        final = final_status(status)
        values = (
            final.value,
            json_text(decision, what="decision"),
            decided_by,
            channel,
            _ts(decided_at or utcnow()),
            request_id,
        )

        def run(conn: sqlite3.Connection) -> RequestRecord:
            with self._write(conn):
                won = conn.execute(
                    "UPDATE loopgate_requests SET status = ?, decision = ?, decided_by = ?, "
                    "channel = ?, decided_at = ? WHERE id = ? AND status = 'pending'",
                    values,
                ).rowcount
                row = conn.execute(
                    "SELECT * FROM loopgate_requests WHERE id = ?", (request_id,)
                ).fetchone()
            if row is None:
                raise RequestNotFound(request_id)
            record = _request(row)
            if won != 1:
                raise already_decided(record)
            return record

        return await self._run(run)

    async def mark_resumed(
        self, request_id: str, *, stale_before: datetime | None = None,
        at: datetime | None = None,
    ) -> bool:
        """See :meth:`Store.mark_resumed`; a still-pending request cannot be claimed."""
        now = _ts(at or utcnow())
        stale = _ts_or_none(stale_before)

        def run(conn: sqlite3.Connection) -> bool:
            with self._write(conn):
                won = conn.execute(
                    "UPDATE loopgate_requests SET resumed_at = ? "
                    "WHERE id = ? AND status != 'pending' AND resume_done_at IS NULL "
                    "AND (resumed_at IS NULL OR resumed_at <= ?)",
                    (now, request_id, stale),
                ).rowcount
                if won == 1:
                    return True
                exists = conn.execute(
                    "SELECT 1 FROM loopgate_requests WHERE id = ?", (request_id,)
                ).fetchone()
            if exists is None:
                raise RequestNotFound(request_id)
            return False

        return await self._run(run)

    async def complete_resume(self, request_id: str, *, at: datetime | None = None) -> None:
        """See :meth:`Store.complete_resume`."""
        now = _ts(at or utcnow())

        def run(conn: sqlite3.Connection) -> None:
            with self._write(conn):
                found = conn.execute(
                    "UPDATE loopgate_requests SET resume_done_at = COALESCE(resume_done_at, ?) "
                    "WHERE id = ?", (now, request_id),
                ).rowcount
            if found != 1:
                raise RequestNotFound(request_id)

        await self._run(run)

    async def extend_expiry(
        self, request_id: str, *, expires_at: datetime, escalation_level: int
    ) -> bool:
        """See :meth:`Store.extend_expiry`. Raises: RequestNotFound."""
        values = (_ts(expires_at), escalation_level, request_id, escalation_level - 1)

        def run(conn: sqlite3.Connection) -> bool:
            with self._write(conn):
                moved = conn.execute(
                    "UPDATE loopgate_requests SET expires_at = ?, escalation_level = ? "
                    "WHERE id = ? AND status = 'pending' AND escalation_level = ?",
                    values,
                ).rowcount
                if moved == 1:
                    return True
                exists = conn.execute(
                    "SELECT 1 FROM loopgate_requests WHERE id = ?", (request_id,)
                ).fetchone()
            if exists is None:
                raise RequestNotFound(request_id)
            return False

        return await self._run(run)

    async def expired(self, now: datetime, *, limit: int = 100) -> list[RequestRecord]:
        params = (_ts(now), check_limit(limit))

        def run(conn: sqlite3.Connection) -> list[RequestRecord]:
            rows = conn.execute(
                "SELECT * FROM loopgate_requests WHERE status = 'pending' "
                "AND expires_at IS NOT NULL AND expires_at <= ? "
                "ORDER BY expires_at, created_at, seq LIMIT ?",
                params,
            ).fetchall()
            return [_request(r) for r in rows]

        return await self._run(run)

    async def next_expiry(self) -> datetime | None:
        def run(conn: sqlite3.Connection) -> datetime | None:
            row = conn.execute(
                "SELECT MIN(expires_at) FROM loopgate_requests WHERE status = 'pending'"
            ).fetchone()
            return _dt_or_none(row[0])

        return await self._run(run)

    async def set_message_ref(self, request_id: str, channel: str, ref: Any) -> None:
        clean = _loads(json_text(ref, what=f"message ref for channel {channel!r}"))

        def run(conn: sqlite3.Connection) -> None:
            # Read and write in one write transaction, so refs set by two notifiers at
            # once both survive.
            with self._write(conn):
                row = conn.execute(
                    "SELECT message_refs FROM loopgate_requests WHERE id = ?", (request_id,)
                ).fetchone()
                if row is None:
                    raise RequestNotFound(request_id)
                refs = {**_loads(row["message_refs"]), channel: clean}
                conn.execute(
                    "UPDATE loopgate_requests SET message_refs = ? WHERE id = ?",
                    (json_text(refs, what="message refs"), request_id),
                )

        await self._run(run)

    # callback keys -----------------------------------------------------------------------

    async def put_callback(self, key: str, request_id: str, action: dict[str, Any]) -> None:
        values = (key, request_id, json_text(action, what="callback action"), _ts(utcnow()))

        def run(conn: sqlite3.Connection) -> None:
            with self._write(conn):
                conn.execute(
                    "INSERT INTO loopgate_callbacks (key, request_id, action, created_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                    "request_id = excluded.request_id, action = excluded.action, "
                    "created_at = excluded.created_at",
                    values,
                )

        await self._run(run)

    async def get_callback(self, key: str) -> tuple[str, dict[str, Any]] | None:
        def run(conn: sqlite3.Connection) -> tuple[str, dict[str, Any]] | None:
            row = conn.execute(
                "SELECT request_id, action FROM loopgate_callbacks WHERE key = ?", (key,)
            ).fetchone()
            return None if row is None else (row["request_id"], _loads(row["action"]))

        return await self._run(run)

    # audit -------------------------------------------------------------------------------

    async def append_audit(self, event: AuditEvent) -> AuditEvent:
        values = (
            _ts(event.at),
            event.event,
            event.request_id,
            event.session_id,
            event.thread_id,
            event.actor,
            event.channel,
            event.args_hash,
            json_text(event.details, what="audit details"),
        )

        def run(conn: sqlite3.Connection) -> AuditEvent:
            with self._write(conn):
                cursor = conn.execute(
                    "INSERT INTO loopgate_audit (at, event, request_id, session_id, thread_id, "
                    "actor, channel, args_hash, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    values,
                )
                row = conn.execute(
                    "SELECT * FROM loopgate_audit WHERE id = ?", (cursor.lastrowid,)
                ).fetchone()
            return _audit(row)

        return await self._run(run)

    async def list_audit(
        self,
        *,
        request_id: str | None = None,
        session_id: str | None = None,
        thread_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[AuditEvent]:
        """See :meth:`Store.list_audit`; ``since`` is inclusive, ``until`` exclusive."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("request_id", request_id),
            ("session_id", session_id),
            ("thread_id", thread_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("at >= ?")
            params.append(_ts(since))
        if until is not None:
            where.append("at < ?")
            params.append(_ts(until))
        query = "SELECT * FROM loopgate_audit"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY id"
        if check_limit(limit) is not None:
            query += " LIMIT ?"
            params.append(limit)

        def run(conn: sqlite3.Connection) -> list[AuditEvent]:
            return [_audit(r) for r in conn.execute(query, params).fetchall()]

        return await self._run(run)

    # outbox ------------------------------------------------------------------------------

    async def enqueue_outbox(self, item: OutboxItem) -> OutboxItem:
        values = (
            item.request_id,
            item.notifier,
            item.kind,
            item.attempts,
            _ts(item.due_at),
            item.last_error,
            int(item.done),
        )

        def run(conn: sqlite3.Connection) -> OutboxItem:
            with self._write(conn):
                row = conn.execute(
                    "SELECT * FROM loopgate_outbox WHERE request_id = ? AND notifier = ? "
                    "AND kind = ? AND done = 0",
                    (item.request_id, item.notifier, item.kind),
                ).fetchone()
                if row is None:
                    cursor = conn.execute(
                        "INSERT INTO loopgate_outbox (request_id, notifier, kind, attempts, "
                        "due_at, last_error, done) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        values,
                    )
                    row = conn.execute(
                        "SELECT * FROM loopgate_outbox WHERE id = ?", (cursor.lastrowid,)
                    ).fetchone()
            return _outbox(row)

        return await self._run(run)

    async def claim_outbox(
        self, now: datetime, *, lease_seconds: float = 30.0, limit: int = 50,
        notifiers: Sequence[str] | None = None,
    ) -> list[OutboxItem]:
        at = _ts(now)
        lease_end = _ts(utc(now) + timedelta(seconds=lease_seconds))
        check_limit(limit)
        names = None if notifiers is None else list(notifiers)
        only = "" if names is None else f"AND notifier IN ({', '.join('?' * len(names))}) "

        def run(conn: sqlite3.Connection) -> list[OutboxItem]:
            with self._write(conn):
                rows = conn.execute(
                    "SELECT * FROM loopgate_outbox WHERE done = 0 AND due_at <= ? "
                    "AND (leased_until IS NULL OR leased_until <= ?) " + only +
                    "ORDER BY due_at, id LIMIT ?",
                    (at, at, *(names or ()), limit),
                ).fetchall()
                conn.executemany(
                    "UPDATE loopgate_outbox SET leased_until = ? WHERE id = ?",
                    [(lease_end, r["id"]) for r in rows],
                )
            return [_outbox(r) for r in rows]

        return await self._run(run)

    async def complete_outbox(self, item_id: int) -> None:
        def run(conn: sqlite3.Connection) -> None:
            with self._write(conn):
                changed = conn.execute(
                    "UPDATE loopgate_outbox SET done = 1, leased_until = NULL WHERE id = ?",
                    (item_id,),
                ).rowcount
            if changed != 1:
                raise outbox_not_found(item_id)

        await self._run(run)

    async def retry_outbox(self, item_id: int, *, due_at: datetime, error: str) -> OutboxItem:
        values = (_ts(due_at), error, item_id)

        def run(conn: sqlite3.Connection) -> OutboxItem:
            with self._write(conn):
                conn.execute(
                    "UPDATE loopgate_outbox SET attempts = attempts + 1, due_at = ?, "
                    "last_error = ?, leased_until = NULL WHERE id = ?",
                    values,
                )
                row = conn.execute(
                    "SELECT * FROM loopgate_outbox WHERE id = ?", (item_id,)
                ).fetchone()
            if row is None:
                raise outbox_not_found(item_id)
            return _outbox(row)

        return await self._run(run)

    async def list_outbox(self, *, request_id: str | None = None) -> list[OutboxItem]:
        def run(conn: sqlite3.Connection) -> list[OutboxItem]:
            if request_id is None:
                rows = conn.execute("SELECT * FROM loopgate_outbox ORDER BY id").fetchall()
            else:
                rows = conn.execute(
                    "SELECT * FROM loopgate_outbox WHERE request_id = ? ORDER BY id",
                    (request_id,),
                ).fetchall()
            return [_outbox(r) for r in rows]

        return await self._run(run)
