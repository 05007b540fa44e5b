"""The scale-out store: PostgreSQL through psycopg 3 and its async connection pool.

Any number of gateway processes on any number of machines can share it. Every
compare-and-set is one ``UPDATE ... WHERE ... RETURNING`` statement, which Postgres runs
atomically under row locks: a concurrent second update waits, re-checks its ``WHERE``
against the winner's row and changes nothing. The outbox is claimed with
``FOR UPDATE SKIP LOCKED`` plus a lease column, so workers never block on, nor both take,
one delivery.

The queries, schema and migrations are the shared SQL layer's (``stores/_sql.py``); this
module only drives them, awaiting each statement inside one transaction per change, or
sending a change made one statement (a filing, a decision, a finished resume) alone.

Needs the ``postgres`` extra (``pip install 'loopgate-lc[postgres]'``).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import psycopg
from psycopg.pq import ExecStatus
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from loopgate_lc.errors import ConfigurationError, StoreError
from loopgate_lc.stores._common import json_text, utc
from loopgate_lc.stores._sql import TABLES, Dialect, Op, Row, SQLStore, Stmt

__all__ = ["PostgresStore"]

_T = TypeVar("_T")
_TUPLES_OK = ExecStatus.TUPLES_OK


def _jsonb(value: Any, what: str) -> Jsonb:
    # the checked text itself travels: psycopg would otherwise encode the value again,
    # after it was encoded and parsed back to check it (~35 us for a 10 kB payload)
    return Jsonb(json_text(value, what=what), dumps=_identity)


def _identity(value: Any) -> Any:
    return value


def _quoted(*parts: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in parts)


DIALECT = Dialect(
    placeholder="$",
    types={"pk": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
           "seq": "BIGINT GENERATED ALWAYS AS IDENTITY", "ts": "TIMESTAMPTZ", "json": "JSONB"},
    for_update=" FOR UPDATE",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    session_seq=None,  # an identity column
    table_exists="SELECT 1 WHERE to_regclass(?) IS NOT NULL",
    json_field="({column} ->> '{key}')",
    json_keys="jsonb_object_keys({column}) AS key",
    fuse=True,
    ts=utc,
    read_ts=utc,
    json=_jsonb,
    read_json=_identity,
)


class PostgresStore(SQLStore):
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

    dialect = DIALECT

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
        # a channel name is an identifier (at most 63 bytes): the schema's, hashed
        digest = hashlib.blake2b((schema or "").encode(), digest_size=6).hexdigest()
        self._channel = self._decided_channel = f"loopgate_decided_{digest}"
        super().__init__({
            name: _quoted(schema, f"loopgate_{name}") if schema else _quoted(f"loopgate_{name}")
            for name in TABLES
        })

    @classmethod
    def from_conn_string(cls, conn_string: str, **kwargs: Any) -> PostgresStore:
        """A store on ``postgresql://...`` (or ``postgres://...``) with its own pool.

        Raises:
            ConfigurationError: The string is not a PostgreSQL URL or key=value DSN.
        """
        if "://" in conn_string and not conn_string.startswith(("postgresql://", "postgres://")):
            from loopgate_lc.locations import printable_store_url  # a leaf: no cycle

            raise ConfigurationError("expected a 'postgresql://' or 'postgres://' URL, got "
                                     f"{printable_store_url(conn_string)!r}")
        return cls(conn_string, **kwargs)

    def __repr__(self) -> str:
        where = f", schema={self.schema!r}" if self.schema else ""
        return f"{type(self).__name__}(<{'dsn' if self._dsn else 'pool'}>{where})"

    # plumbing ----------------------------------------------------------------------------

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

    async def _listen(self, conninfo: str) -> AsyncIterator[str]:
        """Decided request ids, from a connection of its own that LISTENs on this
        store's channel (a pooled connection cannot be held open for this)."""
        try:
            conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL to listen: {exc}") from exc
        try:
            await conn.execute(f"LISTEN {_quoted(self._channel)}".encode())
            async for note in conn.notifies():
                yield note.payload
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL stopped telling decisions: {exc}") from exc
        finally:
            await conn.close()

    def decisions(self) -> AsyncIterator[str] | None:
        """See :meth:`Store.decisions`: a ``LISTEN`` on a channel per schema, fed by a
        ``pg_notify`` in the transaction of every decision. None for a pool passed in
        whose connection string is computed (there is nothing to open a listener with)."""
        conninfo = self._dsn if self._pool is None or self._owns_pool else self._pool.conninfo
        return self._listen(conninfo) if isinstance(conninfo, str) else None

    async def _run(self, op: Op[_T], *, write: bool) -> _T:
        """Drive ``op`` on one pooled connection; with ``write``, in one transaction.

        Reads need no explicit transaction (each statement is atomic, and a pool passed
        in without autocommit commits when the connection goes back), which saves two
        round trips per call. Nor does a write made whole in its first statement (a
        fused :class:`~loopgate_lc.stores._sql.Guarded`), after which the operation
        only reads. Database errors leave as :class:`StoreError`.
        """
        try:
            first = next(op)
        except StopIteration as stop:
            result: _T = stop.value
            return result
        pool = await self._get_pool()
        try:
            async with pool.connection() as conn:
                if write and not first.whole:
                    # pipelined: BEGIN, and every statement whose rows the operation does
                    # not read, travel with the next one it waits for (or the COMMIT)
                    async with conn.pipeline() as pipe, conn.transaction():
                        return await self._drive(conn, op, first, pipe)
                return await self._drive(conn, op, first, None)
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL store failed: {exc}") from exc

    async def _drive(self, conn: psycopg.AsyncConnection[Any], op: Op[_T], stmt: Stmt,
                     pipe: psycopg.AsyncPipeline | None) -> _T:
        # a raw cursor: the statements come numbered ($1...), and psycopg parses none
        async with psycopg.AsyncRawCursor(conn, row_factory=dict_row) as cur:
            try:
                while True:
                    # bytes: psycopg takes them as a query that needs no LiteralString
                    await cur.execute(self._sql(stmt.text).encode(), stmt.params)
                    rows: list[Row] = []
                    if stmt.rows:
                        if pipe is not None:
                            await pipe.sync()
                        # the result's status, not ``cur.description``: that builds a
                        # column object (with its type looked up) per column, every time
                        done = cur.pgresult
                        if done is not None and done.status == _TUPLES_OK:
                            rows.extend(await cur.fetchall())
                    stmt = op.send(rows)
            except StopIteration as stop:
                result: _T = stop.value
                return result

    # lifecycle ---------------------------------------------------------------------------

    async def setup(self) -> None:
        """Create the schema and apply pending migrations.

        Runs under a transaction-scoped advisory lock, so processes starting together
        migrate one after the other instead of racing on ``CREATE TABLE``.
        """
        digest = hashlib.blake2b(
            f"loopgate_lc.setup:{self.schema or ''}".encode(), digest_size=8
        ).digest()
        prelude = [Stmt("SELECT pg_advisory_xact_lock(?)",
                        (int.from_bytes(digest, "big", signed=True),))]
        if self.schema:
            prelude.append(Stmt(f"CREATE SCHEMA IF NOT EXISTS {_quoted(self.schema)}"))
        await self._run(self._migrate(prelude), write=True)

    async def close(self) -> None:
        """Close the pool this store opened; a pool passed in stays open."""
        if self._owns_pool and self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
