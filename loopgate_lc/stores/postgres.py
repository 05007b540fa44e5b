"""The scale-out store: PostgreSQL through psycopg 3 and its async connection pool.

Any number of gateway processes on any number of machines can share it. Every
compare-and-set is one ``UPDATE ... WHERE ... RETURNING`` statement, which Postgres runs
atomically under row locks: a concurrent second update waits, re-checks its ``WHERE``
against the winner's row and changes nothing. The outbox is claimed with
``FOR UPDATE SKIP LOCKED`` plus a lease column, so workers never block on, nor both take,
one delivery.

Needs the ``postgres`` extra (``pip install 'loopgate-lc[postgres]'``).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from loopgate_lc.errors import (
    ConfigurationError,
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
    json_value,
    outbox_not_found,
    utc,
    utc_or_none,
)
from loopgate_lc.stores.base import (
    AuditEvent,
    OutboxItem,
    RequestRecord,
    SessionRecord,
    Store,
)

__all__ = ["PostgresStore"]

_Row = dict[str, Any]
_Params = Sequence[Any] | Mapping[str, Any]

#: Ordered migrations: (version, statements). ``{name}`` placeholders are this store's
#: (possibly schema-qualified) tables; literal braces are doubled. Never edit a released
#: entry, append a new one.
_MIGRATIONS: tuple[tuple[int, tuple[LiteralString, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE {sessions} (
                session_id TEXT PRIMARY KEY,
                seq BIGINT GENERATED ALWAYS AS IDENTITY,
                client_id TEXT NOT NULL DEFAULT '',
                telegram_id BIGINT,
                approvers JSONB NOT NULL DEFAULT '[]',
                active BOOLEAN NOT NULL DEFAULT TRUE,
                created_at TIMESTAMPTZ NOT NULL,
                metadata JSONB NOT NULL DEFAULT '{{}}'
            )""",
            """CREATE TABLE {requests} (
                seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                id TEXT NOT NULL UNIQUE,
                kind TEXT NOT NULL,
                session_id TEXT,
                client_id TEXT,
                thread_id TEXT,
                interrupt_id TEXT,
                graph TEXT,
                payload JSONB NOT NULL DEFAULT '{{}}',
                status TEXT NOT NULL,
                decision JSONB,
                decided_by TEXT,
                channel TEXT,
                created_at TIMESTAMPTZ NOT NULL,
                expires_at TIMESTAMPTZ,
                decided_at TIMESTAMPTZ,
                escalation_level INTEGER NOT NULL DEFAULT 0,
                resumed_at TIMESTAMPTZ,
                message_refs JSONB NOT NULL DEFAULT '{{}}'
            )""",
            """CREATE UNIQUE INDEX loopgate_requests_interrupt
                ON {requests} (thread_id, interrupt_id)
                WHERE thread_id IS NOT NULL AND interrupt_id IS NOT NULL""",
            "CREATE INDEX loopgate_requests_created ON {requests} (created_at, seq)",
            "CREATE INDEX loopgate_requests_thread ON {requests} (thread_id)",
            "CREATE INDEX loopgate_requests_session ON {requests} (session_id)",
            """CREATE INDEX loopgate_requests_expiry ON {requests} (expires_at)
                WHERE status = 'pending'""",
            """CREATE TABLE {callbacks} (
                key TEXT PRIMARY KEY,
                request_id TEXT NOT NULL,
                action JSONB NOT NULL,
                created_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )""",
            """CREATE TABLE {audit} (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                at TIMESTAMPTZ NOT NULL,
                event TEXT NOT NULL,
                request_id TEXT,
                session_id TEXT,
                thread_id TEXT,
                actor TEXT,
                channel TEXT,
                args_hash TEXT,
                details JSONB NOT NULL DEFAULT '{{}}'
            )""",
            "CREATE INDEX loopgate_audit_request ON {audit} (request_id)",
            "CREATE INDEX loopgate_audit_session ON {audit} (session_id)",
            "CREATE INDEX loopgate_audit_thread ON {audit} (thread_id)",
            "CREATE INDEX loopgate_audit_at ON {audit} (at)",
            """CREATE TABLE {outbox} (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                request_id TEXT NOT NULL,
                notifier TEXT NOT NULL,
                kind TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                due_at TIMESTAMPTZ NOT NULL,
                last_error TEXT,
                done BOOLEAN NOT NULL DEFAULT FALSE,
                leased_until TIMESTAMPTZ
            )""",
            """CREATE UNIQUE INDEX loopgate_outbox_open
                ON {outbox} (request_id, notifier, kind) WHERE NOT done""",
            "CREATE INDEX loopgate_outbox_due ON {outbox} (due_at) WHERE NOT done",
        ),
    ),
    (
        2,
        (
            # what a restarted gateway looks for every poll: decided, not yet resumed
            """CREATE INDEX loopgate_requests_unresumed ON {requests} (graph)
                WHERE status <> 'pending' AND resumed_at IS NULL""",
        ),
    ),
    (
        3,
        (
            # a claimed resume is done once the graph's checkpoint has it; a claim that
            # never completes belongs to a process that died mid-resume
            "ALTER TABLE {requests} ADD COLUMN resume_done_at TIMESTAMPTZ",
            "UPDATE {requests} SET resume_done_at = resumed_at WHERE resumed_at IS NOT NULL",
            "DROP INDEX {requests_unresumed}",
            """CREATE INDEX loopgate_requests_unresumed ON {requests} (graph)
                WHERE status <> 'pending' AND resume_done_at IS NULL""",
        ),
    ),
)

_TABLES = ("sessions", "requests", "callbacks", "audit", "outbox", "schema_version")


def _request(row: _Row) -> RequestRecord:
    return RequestRecord(
        id=row["id"],
        kind=RequestKind(row["kind"]),
        session_id=row["session_id"],
        client_id=row["client_id"],
        thread_id=row["thread_id"],
        interrupt_id=row["interrupt_id"],
        graph=row["graph"],
        payload=row["payload"],
        status=Status(row["status"]),
        decision=row["decision"],
        decided_by=row["decided_by"],
        channel=row["channel"],
        created_at=utc(row["created_at"]),
        expires_at=utc_or_none(row["expires_at"]),
        decided_at=utc_or_none(row["decided_at"]),
        escalation_level=row["escalation_level"],
        resumed_at=utc_or_none(row["resumed_at"]),
        resume_done_at=utc_or_none(row["resume_done_at"]),
        message_refs=row["message_refs"],
    )


def _session(row: _Row) -> SessionRecord:
    return SessionRecord(
        session_id=row["session_id"],
        client_id=row["client_id"],
        telegram_id=row["telegram_id"],
        approvers=row["approvers"],
        active=row["active"],
        created_at=utc(row["created_at"]),
        metadata=row["metadata"],
    )


def _audit(row: _Row) -> AuditEvent:
    return AuditEvent(
        id=row["id"],
        at=utc(row["at"]),
        event=row["event"],
        request_id=row["request_id"],
        session_id=row["session_id"],
        thread_id=row["thread_id"],
        actor=row["actor"],
        channel=row["channel"],
        args_hash=row["args_hash"],
        details=row["details"],
    )


def _outbox(row: _Row) -> OutboxItem:
    return OutboxItem(
        id=row["id"],
        request_id=row["request_id"],
        notifier=row["notifier"],
        kind=row["kind"],
        attempts=row["attempts"],
        due_at=utc(row["due_at"]),
        last_error=row["last_error"],
        done=row["done"],
    )


def _jsonb(value: Any, *, what: str) -> Jsonb:
    return Jsonb(json_value(value, what=what))


class PostgresStore(Store):
    """A :class:`Store` in PostgreSQL.

    Args:
        conn: A connection string (``postgresql://user@host:5432/db``) for a pool this
            store opens on first use and closes in :meth:`close`, or an
            ``AsyncConnectionPool`` the caller owns (it is left open).
        schema: A Postgres schema to keep the tables in, created by :meth:`setup`.
            Without one the tables go where the connection's ``search_path`` points.
            Tables are prefixed ``loopgate_`` either way, so a database shared with
            LangGraph's Postgres checkpointer is fine.
        min_size: Smallest number of pooled connections (own pool only).
        max_size: Largest number of pooled connections (own pool only).
        timeout: Seconds to wait for a free pooled connection (own pool only) before
            giving up with :class:`~loopgate_lc.errors.StoreError`.

    The pool belongs to the event loop it was opened on; use one store per loop.

    Raises:
        ConfigurationError: No connection string or pool, or an empty schema name.
    """

    def __init__(
        self,
        conn: str | AsyncConnectionPool,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
    ) -> None:
        if isinstance(conn, str):
            if not conn.strip():
                raise ConfigurationError("PostgresStore needs a connection string or a pool")
            self._dsn: str | None = conn
            self._pool: AsyncConnectionPool | None = None
            self._owns_pool = True
        else:
            self._dsn = None
            self._pool = conn
            self._owns_pool = False
        if schema is not None and not schema.strip():
            raise ConfigurationError("schema must be a non-empty Postgres schema name")
        self.schema = schema
        self._min_size = min_size
        self.timeout = timeout
        self._max_size = max_size
        self._pool_lock: asyncio.Lock | None = None
        self._pool_lock_loop: asyncio.AbstractEventLoop | None = None
        self._tables: dict[str, sql.Identifier] = {
            name: sql.Identifier(schema, f"loopgate_{name}")
            if schema
            else sql.Identifier(f"loopgate_{name}")
            for name in (*_TABLES, "requests_unresumed")  # tables, and an index migrations drop
        }
        self._queries: dict[str, sql.Composed] = {}

    @classmethod
    def from_conn_string(cls, conn_string: str, **kwargs: Any) -> PostgresStore:
        """A store on ``postgresql://...`` (or ``postgres://...``) with its own pool.

        Raises:
            ConfigurationError: The string is not a PostgreSQL URL or key=value DSN.
        """
        if "://" in conn_string and not conn_string.startswith(("postgresql://", "postgres://")):
            raise ConfigurationError(
                f"expected a 'postgresql://' or 'postgres://' URL, got {conn_string!r}"
            )
        return cls(conn_string, **kwargs)

    def __repr__(self) -> str:
        where = f", schema={self.schema!r}" if self.schema else ""
        return f"{type(self).__name__}(<{'dsn' if self._dsn else 'pool'}>{where})"

    # plumbing ----------------------------------------------------------------------------

    def _q(self, text: LiteralString) -> sql.Composed:
        """``text`` with its ``{table}`` placeholders bound to this store's tables."""
        query = self._queries.get(text)
        if query is None:
            query = sql.SQL(text).format(**self._tables)
            self._queries[text] = query
        return query

    async def _get_pool(self) -> AsyncConnectionPool:
        if self._pool is not None:
            return self._pool
        loop = asyncio.get_running_loop()
        if self._pool_lock is None or self._pool_lock_loop is not loop:
            # Created here, not in __init__: the store may be built outside any loop.
            self._pool_lock, self._pool_lock_loop = asyncio.Lock(), loop
        async with self._pool_lock:
            if self._pool is None:
                if self._dsn is None:  # pragma: no cover - a pool passed in is never dropped
                    raise StoreError("PostgresStore has neither a pool nor a connection string")
                # One plain connection first: a wrong address or password fails here at
                # once, where the pool would keep retrying until its timeout.
                try:
                    probe = await psycopg.AsyncConnection.connect(self._dsn)
                except psycopg.Error as exc:
                    raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc
                await probe.close()
                pool = AsyncConnectionPool(
                    self._dsn,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    timeout=self.timeout,
                    kwargs={"autocommit": True},
                    open=False,
                )
                await pool.open()
                self._pool = pool
            return self._pool

    @asynccontextmanager
    async def _cursor(self, *, transaction: bool) -> AsyncIterator[psycopg.AsyncCursor[_Row]]:
        """A pooled cursor; database errors leave as :class:`StoreError`.

        Single statements need no explicit transaction (each one is atomic, and a pool
        passed in without autocommit commits when the connection goes back), which
        saves two round trips per call.
        """
        pool = await self._get_pool()
        try:
            async with pool.connection() as conn:
                if transaction:
                    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                        yield cur
                else:
                    async with conn.cursor(row_factory=dict_row) as cur:
                        yield cur
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL store failed: {exc}") from exc

    async def _all(self, text: LiteralString, params: _Params = ()) -> list[_Row]:
        async with self._cursor(transaction=False) as cur:
            await cur.execute(self._q(text), params)
            return await cur.fetchall()

    async def _one(self, text: LiteralString, params: _Params = ()) -> _Row | None:
        async with self._cursor(transaction=False) as cur:
            await cur.execute(self._q(text), params)
            return await cur.fetchone()

    # lifecycle ---------------------------------------------------------------------------

    async def setup(self) -> None:
        """Create the schema and apply pending migrations.

        Runs under a transaction-scoped advisory lock, so processes starting together
        migrate one after the other instead of racing on ``CREATE TABLE``.
        """
        digest = hashlib.blake2b(
            f"loopgate_lc.setup:{self.schema or ''}".encode(), digest_size=8
        ).digest()
        lock_key = int.from_bytes(digest, "big", signed=True)
        async with self._cursor(transaction=True) as cur:
            await cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
            if self.schema:
                await cur.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
                )
            await cur.execute(
                self._q(
                    "CREATE TABLE IF NOT EXISTS {schema_version} ("
                    "version INTEGER PRIMARY KEY, "
                    "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
            )
            await cur.execute(
                self._q("SELECT COALESCE(MAX(version), 0) AS v FROM {schema_version}")
            )
            row = await cur.fetchone()
            current = int(row["v"]) if row else 0
            if current > self.SCHEMA_VERSION:
                raise StoreError(
                    f"the database has loopgate schema version {current}, newer than this "
                    f"loopgate_lc supports ({self.SCHEMA_VERSION}); upgrade loopgate_lc"
                )
            for version, statements in _MIGRATIONS:
                if version <= current:
                    continue
                for statement in statements:
                    await cur.execute(self._q(statement))
                await cur.execute(
                    self._q("INSERT INTO {schema_version} (version) VALUES (%s)"), (version,)
                )

    async def schema_version(self) -> int:
        """The schema version the database is at (0 before :meth:`setup`)."""
        async with self._cursor(transaction=False) as cur:
            await cur.execute(
                "SELECT to_regclass(%s) IS NOT NULL AS present",
                (self._tables["schema_version"].as_string(cur),),
            )
            row = await cur.fetchone()
            if not row or not row["present"]:
                return 0
            await cur.execute(
                self._q("SELECT COALESCE(MAX(version), 0) AS v FROM {schema_version}")
            )
            row = await cur.fetchone()
            return int(row["v"]) if row else 0

    async def close(self) -> None:
        """Close the pool this store opened; a pool passed in stays open."""
        if self._owns_pool and self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    # sessions ----------------------------------------------------------------------------

    async def create_session(self, session: SessionRecord) -> SessionRecord:
        row = await self._one(
            "INSERT INTO {sessions} AS s (session_id, client_id, telegram_id, approvers, "
            "active, created_at, metadata) VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (session_id) DO UPDATE SET client_id = EXCLUDED.client_id, "
            "telegram_id = EXCLUDED.telegram_id, approvers = EXCLUDED.approvers, "
            "active = EXCLUDED.active, created_at = EXCLUDED.created_at, "
            "metadata = EXCLUDED.metadata WHERE NOT s.active RETURNING *",
            (
                session.session_id,
                session.client_id,
                session.telegram_id,
                _jsonb([str(a) for a in session.approvers], what="session approvers"),
                session.active,
                utc(session.created_at),
                _jsonb(session.metadata, what="session metadata"),
            ),
        )
        if row is None:
            raise SessionExists(session.session_id)
        return _session(row)

    async def get_session(self, session_id: str) -> SessionRecord:
        row = await self._one("SELECT * FROM {sessions} WHERE session_id = %s", (session_id,))
        if row is None:
            raise SessionNotFound(session_id)
        return _session(row)

    async def deactivate_session(self, session_id: str) -> SessionRecord:
        row = await self._one(
            "UPDATE {sessions} SET active = FALSE WHERE session_id = %s RETURNING *",
            (session_id,),
        )
        if row is None:
            raise SessionNotFound(session_id)
        return _session(row)

    async def list_sessions(self, *, active: bool | None = None) -> list[SessionRecord]:
        if active is None:
            rows = await self._all("SELECT * FROM {sessions} ORDER BY created_at, seq")
        else:
            rows = await self._all(
                "SELECT * FROM {sessions} WHERE active = %s ORDER BY created_at, seq", (active,)
            )
        return [_session(r) for r in rows]

    # requests ----------------------------------------------------------------------------

    async def create_request(self, record: RequestRecord) -> tuple[RequestRecord, bool]:
        params = (
            record.id,
            RequestKind(record.kind).value,
            record.session_id,
            record.client_id,
            record.thread_id,
            record.interrupt_id,
            record.graph,
            _jsonb(record.payload, what="request payload"),
            coerce_status(record.status).value,
            None if record.decision is None else _jsonb(record.decision, what="decision"),
            record.decided_by,
            record.channel,
            utc(record.created_at),
            utc_or_none(record.expires_at),
            utc_or_none(record.decided_at),
            record.escalation_level,
            utc_or_none(record.resumed_at),
            _jsonb(record.message_refs, what="message refs"),
            utc_or_none(record.resume_done_at),
        )
        # DO NOTHING covers both the id and the (thread_id, interrupt_id) uniqueness; it
        # waits for a concurrent insert of the same key to commit, so the read below
        # finds the first record.
        row = await self._one(
            "INSERT INTO {requests} (id, kind, session_id, client_id, thread_id, "
            "interrupt_id, graph, payload, status, decision, decided_by, channel, "
            "created_at, expires_at, decided_at, escalation_level, resumed_at, "
            "message_refs, resume_done_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING *",
            params,
        )
        if row is not None:
            return _request(row), True
        existing = await self._one(
            "SELECT * FROM {requests} WHERE id = %s "
            "OR (thread_id = %s AND interrupt_id = %s) ORDER BY (id = %s) DESC LIMIT 1",
            (record.id, record.thread_id, record.interrupt_id, record.id),
        )
        if existing is None:  # pragma: no cover - rows are never deleted
            raise StoreError(f"request {record.id!r} conflicted but cannot be read back")
        return _request(existing), False

    async def get_request(self, request_id: str) -> RequestRecord:
        row = await self._one("SELECT * FROM {requests} WHERE id = %s", (request_id,))
        if row is None:
            raise RequestNotFound(request_id)
        return _request(row)

    async def find_request(self, thread_id: str, interrupt_id: str) -> RequestRecord | None:
        row = await self._one(
            "SELECT * FROM {requests} WHERE thread_id = %s AND interrupt_id = %s",
            (thread_id, interrupt_id),
        )
        return None if row is None else _request(row)

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
        # NULL parameters switch a filter off, so one static statement covers every mix.
        rows = await self._all(
            "SELECT * FROM {requests} WHERE (%(status)s::text IS NULL OR status = %(status)s) "
            "AND (%(session)s::text IS NULL OR session_id = %(session)s) "
            "AND (%(thread)s::text IS NULL OR thread_id = %(thread)s) "
            "AND (%(graph)s::text IS NULL OR graph = %(graph)s) "
            "AND (NOT %(unresumed)s OR (status <> 'pending' AND resume_done_at IS NULL "
            "AND (resumed_at IS NULL OR resumed_at <= %(stale)s::timestamptz))) "
            "ORDER BY created_at, seq LIMIT %(limit)s",
            {
                "status": None if status is None else coerce_status(status).value,
                "session": session_id,
                "thread": thread_id,
                "graph": graph,
                "unresumed": unresumed,
                "stale": utc_or_none(stale_before),
                "limit": check_limit(limit),
            },
        )
        return [_request(r) for r in rows]

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
        row = await self._one(
            "UPDATE {requests} SET status = %s, decision = %s, decided_by = %s, channel = %s, "
            "decided_at = %s WHERE id = %s AND status = 'pending' RETURNING *",
            (
                final.value,
                _jsonb(decision, what="decision"),
                decided_by,
                channel,
                utc(decided_at or utcnow()),
                request_id,
            ),
        )
        if row is not None:
            return _request(row)
        # Lost the race (or never pending): the winner has committed, so this sees it.
        current = await self._one("SELECT * FROM {requests} WHERE id = %s", (request_id,))
        if current is None:
            raise RequestNotFound(request_id)
        raise already_decided(_request(current))

    async def mark_resumed(
        self, request_id: str, *, stale_before: datetime | None = None,
        at: datetime | None = None,
    ) -> bool:
        """See :meth:`Store.mark_resumed`; a still-pending request cannot be claimed."""
        row = await self._one(
            "UPDATE {requests} SET resumed_at = %s WHERE id = %s AND status <> 'pending' "
            "AND resume_done_at IS NULL "
            "AND (resumed_at IS NULL OR resumed_at <= %s::timestamptz) RETURNING id",
            (utc(at or utcnow()), request_id, utc_or_none(stale_before)),
        )
        if row is not None:
            return True
        if await self._one("SELECT 1 FROM {requests} WHERE id = %s", (request_id,)) is None:
            raise RequestNotFound(request_id)
        return False

    async def complete_resume(self, request_id: str, *, at: datetime | None = None) -> None:
        """See :meth:`Store.complete_resume`."""
        row = await self._one(
            "UPDATE {requests} SET resume_done_at = COALESCE(resume_done_at, %s) "
            "WHERE id = %s RETURNING id",
            (utc(at or utcnow()), request_id),
        )
        if row is None:
            raise RequestNotFound(request_id)

    async def extend_expiry(
        self, request_id: str, *, expires_at: datetime, escalation_level: int
    ) -> bool:
        """See :meth:`Store.extend_expiry`. Raises: RequestNotFound."""
        row = await self._one(
            "UPDATE {requests} SET expires_at = %s, escalation_level = %s WHERE id = %s "
            "AND status = 'pending' AND escalation_level = %s RETURNING id",
            (utc(expires_at), escalation_level, request_id, escalation_level - 1),
        )
        if row is not None:
            return True
        if await self._one("SELECT 1 FROM {requests} WHERE id = %s", (request_id,)) is None:
            raise RequestNotFound(request_id)
        return False

    async def expired(self, now: datetime, *, limit: int = 100) -> list[RequestRecord]:
        rows = await self._all(
            "SELECT * FROM {requests} WHERE status = 'pending' AND expires_at IS NOT NULL "
            "AND expires_at <= %s ORDER BY expires_at, created_at, seq LIMIT %s",
            (utc(now), check_limit(limit)),
        )
        return [_request(r) for r in rows]

    async def next_expiry(self) -> datetime | None:
        row = await self._one(
            "SELECT MIN(expires_at) AS soonest FROM {requests} WHERE status = 'pending'"
        )
        return None if row is None else utc_or_none(row["soonest"])

    async def set_message_ref(self, request_id: str, channel: str, ref: Any) -> None:
        row = await self._one(
            "UPDATE {requests} SET message_refs = message_refs || "
            "jsonb_build_object(%s::text, %s::jsonb) WHERE id = %s RETURNING id",
            (channel, _jsonb(ref, what=f"message ref for channel {channel!r}"), request_id),
        )
        if row is None:
            raise RequestNotFound(request_id)

    # callback keys -----------------------------------------------------------------------

    async def put_callback(self, key: str, request_id: str, action: dict[str, Any]) -> None:
        await self._all(
            "INSERT INTO {callbacks} (key, request_id, action) VALUES (%s, %s, %s) "
            "ON CONFLICT (key) DO UPDATE SET request_id = EXCLUDED.request_id, "
            "action = EXCLUDED.action, created_at = now() RETURNING key",
            (key, request_id, _jsonb(action, what="callback action")),
        )

    async def get_callback(self, key: str) -> tuple[str, dict[str, Any]] | None:
        row = await self._one("SELECT request_id, action FROM {callbacks} WHERE key = %s", (key,))
        return None if row is None else (row["request_id"], row["action"])

    # audit -------------------------------------------------------------------------------

    async def append_audit(self, event: AuditEvent) -> AuditEvent:
        row = await self._one(
            "INSERT INTO {audit} (at, event, request_id, session_id, thread_id, actor, "
            "channel, args_hash, details) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "RETURNING *",
            (
                utc(event.at),
                event.event,
                event.request_id,
                event.session_id,
                event.thread_id,
                event.actor,
                event.channel,
                event.args_hash,
                _jsonb(event.details, what="audit details"),
            ),
        )
        assert row is not None  # INSERT ... RETURNING always yields the row
        return _audit(row)

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
        rows = await self._all(
            "SELECT * FROM {audit} WHERE (%(request)s::text IS NULL OR request_id = %(request)s) "
            "AND (%(session)s::text IS NULL OR session_id = %(session)s) "
            "AND (%(thread)s::text IS NULL OR thread_id = %(thread)s) "
            "AND (%(since)s::timestamptz IS NULL OR at >= %(since)s) "
            "AND (%(until)s::timestamptz IS NULL OR at < %(until)s) "
            "ORDER BY id LIMIT %(limit)s",
            {
                "request": request_id,
                "session": session_id,
                "thread": thread_id,
                "since": utc_or_none(since),
                "until": utc_or_none(until),
                "limit": check_limit(limit),
            },
        )
        return [_audit(r) for r in rows]

    # outbox ------------------------------------------------------------------------------

    async def enqueue_outbox(self, item: OutboxItem) -> OutboxItem:
        # Bounded: a retry is only needed when the open item we collided with was
        # completed between our insert and our read.
        for _ in range(5):
            row = await self._one(
                "INSERT INTO {outbox} (request_id, notifier, kind, attempts, due_at, "
                "last_error, done) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING RETURNING *",
                (
                    item.request_id,
                    item.notifier,
                    item.kind,
                    item.attempts,
                    utc(item.due_at),
                    item.last_error,
                    item.done,
                ),
            )
            if row is None:
                row = await self._one(
                    "SELECT * FROM {outbox} WHERE request_id = %s AND notifier = %s "
                    "AND kind = %s AND NOT done",
                    (item.request_id, item.notifier, item.kind),
                )
            if row is not None:
                return _outbox(row)
        raise StoreError(
            f"could not enqueue {item.kind} delivery of {item.request_id!r} to {item.notifier!r}"
        )

    async def claim_outbox(
        self, now: datetime, *, lease_seconds: float = 30.0, limit: int = 50,
        notifiers: Sequence[str] | None = None,
    ) -> list[OutboxItem]:
        at = utc(now)
        rows = await self._all(
            "UPDATE {outbox} SET leased_until = %s WHERE id IN ("
            "SELECT id FROM {outbox} WHERE NOT done AND due_at <= %s "
            "AND (leased_until IS NULL OR leased_until <= %s) "
            "AND (%s::text[] IS NULL OR notifier = ANY(%s::text[])) "
            "ORDER BY due_at, id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING *",
            (at + timedelta(seconds=lease_seconds), at, at,
             None if notifiers is None else list(notifiers),
             None if notifiers is None else list(notifiers), check_limit(limit)),
        )
        items = [_outbox(r) for r in rows]
        items.sort(key=lambda it: (it.due_at, it.id or 0))
        return items

    async def complete_outbox(self, item_id: int) -> None:
        row = await self._one(
            "UPDATE {outbox} SET done = TRUE, leased_until = NULL WHERE id = %s RETURNING id",
            (item_id,),
        )
        if row is None:
            raise outbox_not_found(item_id)

    async def retry_outbox(self, item_id: int, *, due_at: datetime, error: str) -> OutboxItem:
        row = await self._one(
            "UPDATE {outbox} SET attempts = attempts + 1, due_at = %s, last_error = %s, "
            "leased_until = NULL WHERE id = %s RETURNING *",
            (utc(due_at), error, item_id),
        )
        if row is None:
            raise outbox_not_found(item_id)
        return _outbox(row)

    async def list_outbox(self, *, request_id: str | None = None) -> list[OutboxItem]:
        rows = await self._all(
            "SELECT * FROM {outbox} WHERE (%s::text IS NULL OR request_id = %s) ORDER BY id",
            (request_id, request_id),
        )
        return [_outbox(r) for r in rows]
