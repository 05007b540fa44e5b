"""The one SQL layer behind :class:`~loopgate_lc.stores.SQLiteStore` and
:class:`~loopgate_lc.stores.PostgresStore`: one schema, one ordered migration list, one
set of queries and row mappers.

Every store operation is written once, as a generator that yields :class:`Stmt` and
receives each statement's rows back (sans-I/O). A backend only drives those generators:
SQLite runs one to completion in a worker thread inside ``BEGIN IMMEDIATE``, PostgreSQL
awaits each statement inside ``conn.transaction()``, or runs a change that is one
statement (a fused :class:`Guarded`) as that statement alone. So a state change and its
audit event and outbox entries are one transaction on both, and no query exists twice.

What the databases really do differently lives in :class:`Dialect`: placeholders, column
types, how JSON and times travel, row locks (``FOR UPDATE``, ``SKIP LOCKED``), how a
session gets its ordering number, and whether a write and the writes it causes travel as
one statement (PostgreSQL's data-modifying ``WITH``; see :class:`Guarded`). Statements
are written with ``?`` placeholders and ``{table}`` names; a store compiles each text
once for its dialect and tables.
"""

from __future__ import annotations

import abc
import functools
import hashlib
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from loopgate_lc._lru import LRU
from loopgate_lc.errors import (
    GrantNotFound,
    RequestNotFound,
    SessionExists,
    SessionNotFound,
    StoreError,
)
from loopgate_lc.schema import RequestKind, utcnow
from loopgate_lc.stores._common import (
    already_decided,
    check_limit,
    coerce_status,
    counted_ballot,
    json_value,
    normalized_delivered,
    outbox_not_found,
    utc,
)
from loopgate_lc.stores.base import (
    AuditEvent,
    Delivered,
    Filed,
    GrantRecord,
    GrantTarget,
    OutboxItem,
    RequestRecord,
    SessionRecord,
    Store,
    Vote,
)

if TYPE_CHECKING:  # queries and resolutions arrive built; this module only reads them
    from loopgate_lc.stores.base import (
        AuditQuery,
        Ballot,
        GrantQuery,
        RequestQuery,
        RequestScope,
        Resolution,
    )

__all__ = ["MIGRATIONS", "TABLES", "Dialect", "Guarded", "Op", "Row", "SQLStore", "Stmt",
           "drive"]

_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)


class Row(Protocol):
    """A result row read by column name (``sqlite3.Row`` or a psycopg dict row)."""

    def __getitem__(self, key: str, /) -> Any: ...

    def keys(self) -> Iterable[str]: ...


@dataclass(frozen=True, slots=True)
class Stmt:
    """One statement of an operation: ``?`` placeholders, ``{table}`` names.

    ``rows=False``: the operation does not read this statement's rows (an audit line, a
    delivery owed), so a driver may send it without waiting for it and hand back no rows;
    PostgreSQL pipelines such statements with the next one that is waited for, or with
    the commit, which saves a round trip each. A failure still fails the transaction.
    """

    text: str
    params: Sequence[Any] = ()
    rows: bool = True
    #: The whole of a write in this one statement (see :class:`Guarded`): when it is an
    #: operation's first statement, a driver may run it as its own transaction, without
    #: opening one; the operation only reads after it.
    whole: bool = False


@dataclass(frozen=True, slots=True)
class Guarded:
    """A write and the writes it causes (``then``), made only when it returns a row.

    On a dialect that fuses (:attr:`Dialect.fuse`) it travels as one statement: the
    write in a data-modifying ``WITH``, each of ``then`` selecting from its
    ``RETURNING``. PostgreSQL runs a statement atomically, so the change and its audit
    and deliveries are still all or nothing, without the round trips and the client's
    work of a ``BEGIN`` ... ``COMMIT``. Elsewhere the write is one statement and ``then``
    the next ones, in the caller's transaction.

    ``then`` holds ``INSERT ... VALUES`` statements, ``SELECT`` statements without ``FROM``,
    ``UPDATE ... WHERE`` statements, nested :class:`Guarded` (whose own ``then`` waits
    for them), and statements that read the write's row as ``{guard}``: fused, that is
    the ``RETURNING`` of the write; otherwise it is the write's table, which such a
    statement narrows to the row by its key itself. Their rows are never read.
    """

    stmt: Stmt
    then: Sequence[Stmt | Guarded] = ()


#: An operation: yields statements, gets each one's rows, returns its result.
Op = Generator[Stmt, list[Row], _T]

#: Table names, each ``loopgate_<name>``; ``requests_unresumed`` is an index a
#: migration drops (PostgreSQL needs it schema-qualified too).
TABLES = ("sessions", "requests", "callbacks", "audit", "outbox", "schema_version",
          "requests_unresumed", "grants", "response_schemas")

#: Ordered migrations: (version, statements). ``{pk}``, ``{seq}``, ``{ts}`` and
#: ``{json}`` are the dialect's column types, other ``{names}`` its tables; literal
#: braces are doubled. Applied once each; never edit a released entry, append one.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE {sessions} (
                session_id TEXT PRIMARY KEY,
                seq {seq},
                client_id TEXT NOT NULL DEFAULT '',
                telegram_id BIGINT,
                approvers {json} NOT NULL DEFAULT '[]',
                active BOOLEAN NOT NULL DEFAULT TRUE,
                created_at {ts} NOT NULL,
                metadata {json} NOT NULL DEFAULT '{{}}'
            )""",
            """CREATE TABLE {requests} (
                seq {pk},
                id TEXT NOT NULL UNIQUE,
                kind TEXT NOT NULL,
                session_id TEXT,
                client_id TEXT,
                thread_id TEXT,
                interrupt_id TEXT,
                graph TEXT,
                payload {json} NOT NULL DEFAULT '{{}}',
                status TEXT NOT NULL,
                decision {json},
                decided_by TEXT,
                channel TEXT,
                created_at {ts} NOT NULL,
                expires_at {ts},
                decided_at {ts},
                escalation_level INTEGER NOT NULL DEFAULT 0,
                resumed_at {ts},
                message_refs {json} NOT NULL DEFAULT '{{}}'
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
                action {json} NOT NULL,
                created_at {ts} NOT NULL
            )""",
            """CREATE TABLE {audit} (
                id {pk},
                at {ts} NOT NULL,
                event TEXT NOT NULL,
                request_id TEXT,
                session_id TEXT,
                thread_id TEXT,
                actor TEXT,
                channel TEXT,
                args_hash TEXT,
                details {json} NOT NULL DEFAULT '{{}}'
            )""",
            "CREATE INDEX loopgate_audit_request ON {audit} (request_id)",
            "CREATE INDEX loopgate_audit_session ON {audit} (session_id)",
            "CREATE INDEX loopgate_audit_thread ON {audit} (thread_id)",
            "CREATE INDEX loopgate_audit_at ON {audit} (at)",
            """CREATE TABLE {outbox} (
                id {pk},
                request_id TEXT NOT NULL,
                notifier TEXT NOT NULL,
                kind TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                due_at {ts} NOT NULL,
                last_error TEXT,
                done BOOLEAN NOT NULL DEFAULT FALSE,
                leased_until {ts}
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
            "ALTER TABLE {requests} ADD COLUMN resume_done_at {ts}",
            "UPDATE {requests} SET resume_done_at = resumed_at WHERE resumed_at IS NOT NULL",
            "DROP INDEX {requests_unresumed}",
            """CREATE INDEX loopgate_requests_unresumed ON {requests} (graph)
                WHERE status <> 'pending' AND resume_done_at IS NULL""",
        ),
    ),
    (
        4,
        (
            # a delivery ends: delivered, or dead after bounded attempts or age
            "ALTER TABLE {outbox} ADD COLUMN dead BOOLEAN NOT NULL DEFAULT FALSE",
            "ALTER TABLE {outbox} ADD COLUMN created_at {ts}",
        ),
    ),
    (
        5,
        (
            # /health and the CLI count dead deliveries on every probe
            "CREATE INDEX loopgate_outbox_dead ON {outbox} (id) WHERE dead",
        ),
    ),
    (
        6,
        (
            # the votes a quorum request has counted, read and written under its row lock
            "ALTER TABLE {requests} ADD COLUMN votes {json} NOT NULL DEFAULT '[]'",
        ),
    ),
    (
        7,
        (
            # remembered permissions: written with the decision that makes them, looked
            # up by tool on every filing that would otherwise ask a person
            """CREATE TABLE {grants} (
                seq {pk},
                id TEXT NOT NULL UNIQUE,
                tool TEXT NOT NULL,
                args {json} NOT NULL DEFAULT '{{}}',
                scope TEXT NOT NULL,
                session_id TEXT,
                thread_id TEXT,
                client_id TEXT,
                request_id TEXT NOT NULL,
                created_by TEXT,
                approver_id TEXT,
                channel TEXT,
                created_at {ts} NOT NULL,
                expires_at {ts},
                revoked_at {ts},
                revoked_by TEXT
            )""",
            "CREATE INDEX loopgate_grants_live ON {grants} (tool) WHERE revoked_at IS NULL",
            "CREATE INDEX loopgate_grants_created ON {grants} (created_at, seq)",
        ),
    ),
    (
        8,
        (
            # a pause's response schema (often 10 kB, the same for every call of a tool)
            # is kept once, under its digest; a request names it. Rows filed before
            # keep theirs in the payload, where readers still find it.
            """CREATE TABLE {response_schemas} (
                digest TEXT PRIMARY KEY,
                body TEXT NOT NULL
            )""",
            "ALTER TABLE {requests} ADD COLUMN schema_digest TEXT",
        ),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1][0]

_REQUEST_COLUMNS = (
    "id", "kind", "session_id", "client_id", "thread_id", "interrupt_id", "graph", "payload",
    "status", "decision", "decided_by", "channel", "created_at", "expires_at", "decided_at",
    "escalation_level", "resumed_at", "message_refs", "resume_done_at", "votes",
    "schema_digest",
)
#: A request's columns that never change once it is filed (see ``Resolution.seen``).
_FILED_COLUMNS = ("id", "kind", "session_id", "client_id", "thread_id", "interrupt_id", "graph",
                  "payload", "created_at", "schema_digest")
#: The rest: what deciding sets, and what may change while a request is pending.
_LIVE_COLUMNS = tuple(c for c in _REQUEST_COLUMNS if c not in _FILED_COLUMNS)
_AUDIT_COLUMNS = ("at", "event", "request_id", "session_id", "thread_id", "actor", "channel",
                  "args_hash", "details")
_GRANT_COLUMNS = ("id", "tool", "args", "scope", "session_id", "thread_id", "client_id",
                  "request_id", "created_by", "approver_id", "channel", "created_at",
                  "expires_at", "revoked_at", "revoked_by")
_OUTBOX_COLUMNS = ("request_id", "notifier", "kind", "attempts", "due_at", "last_error", "done",
                   "dead", "created_at", "leased_until")


def _insert(table: str, columns: Sequence[str], suffix: str = "") -> str:
    return (f"INSERT INTO {{{table}}} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))}){suffix}")


#: What a filing reads back: all but the payload, which the filer holds as written (see
#: ``SQLStore._filed``).
_FILING_RETURNS = (*_LIVE_COLUMNS, "created_at")
_INSERT_REQUEST = _insert("requests", _REQUEST_COLUMNS,
                          f" ON CONFLICT DO NOTHING RETURNING {', '.join(_FILING_RETURNS)}")
#: The same, unless a grant of the filing's query is there ({where}: its clauses, on the
#: grants' columns; their parameters follow the request's).
_INSERT_REQUEST_UNLESS = (
    f"INSERT INTO {{{{requests}}}} ({', '.join(_REQUEST_COLUMNS)}) "
    f"SELECT {', '.join('?' * len(_REQUEST_COLUMNS))} WHERE NOT EXISTS "
    "(SELECT 1 FROM {{grants}} WHERE {where}) ON CONFLICT DO NOTHING RETURNING "
    + ", ".join(_FILING_RETURNS))
_INSERT_AUDIT = _insert("audit", _AUDIT_COLUMNS, " RETURNING *")
#: The same, for a line nobody reads back: no row is made, sent or fetched for it.
_WRITE_AUDIT = _insert("audit", _AUDIT_COLUMNS)
_INSERT_GRANT = _insert("grants", _GRANT_COLUMNS)
#: A response schema, kept once however many requests name it.
_INSERT_SCHEMA = _insert("response_schemas", ("digest", "body"), " ON CONFLICT DO NOTHING")
_WRITE_OUTBOX = _insert("outbox", _OUTBOX_COLUMNS, " ON CONFLICT DO NOTHING")
_INSERT_OUTBOX = _WRITE_OUTBOX + " RETURNING *"
#: The compare-and-set every decision is: only a pending request moves.
_DECIDE = ("UPDATE {requests} SET status = ?, decision = ?, decided_by = ?, channel = ?, "
           "decided_at = ?, resumed_at = ? WHERE id = ? AND status = 'pending' RETURNING *")
#: The same, for a decider that holds the request as filed: only what can have changed.
#: (``id`` too, which a write it causes may read back: see ``_owed_to_refs``)
_DECIDE_LIVE = _DECIDE.removesuffix("*") + ", ".join(("id", *_LIVE_COLUMNS))
#: Escalation moves a deadline only from the level the escalator saw.
_ESCALATE = ("UPDATE {requests} SET expires_at = ?, escalation_level = ? WHERE id = ? "
             "AND status = 'pending' AND escalation_level = ? RETURNING id")
#: A claimed resume reached the graph's checkpoint (idempotent).
_RESUME_DONE = ("UPDATE {requests} SET resume_done_at = COALESCE(resume_done_at, ?) "
                "WHERE id = ? RETURNING id")
_RETRY = ("UPDATE {outbox} SET attempts = attempts + 1, due_at = ?, last_error = ?, "
          "leased_until = NULL WHERE id = ? RETURNING *")
#: A delivery finished under its lease: only the open item still held under that lease.
_DELIVERED = ("UPDATE {outbox} SET done = TRUE, leased_until = NULL WHERE request_id = ? "
              "AND notifier = ? AND kind = ? AND NOT done AND leased_until = ? RETURNING id")


@dataclass(frozen=True)
class Dialect:
    """Where SQLite and PostgreSQL really differ.

    Attributes:
        placeholder: The driver's parameter marker: ``?``, or ``$`` for PostgreSQL's own
            numbered ``$1``, ``$2``... A driver that took ``%s`` would parse every
            statement to number them itself, and psycopg does not keep that work for a
            statement of more than 50 parameters (a decision's has more).
        types: Column types for the DDL tokens ``pk``, ``seq``, ``ts`` and ``json``.
        for_update: Appended to a read that is followed by a write of the same row
            (SQLite's file lock already serialises writers).
        skip_locked: Appended to the outbox claim's inner select, so workers skip rows
            another worker is leasing instead of waiting for them.
        session_seq: How a new session's ordering number is computed, or None when the
            column numbers itself.
        table_exists: A query with one parameter (the table) returning a row if it exists.
        json_field: An expression reading one top-level text field of a JSON column,
            formatted with ``column`` and ``key`` (both fixed by this module, never input).
        json_keys: A table function of a JSON object column's keys, as a column ``key``,
            formatted with ``column``.
        fuse: Whether a :class:`Guarded` write travels as one statement: on PostgreSQL
            the client's share of a transaction (``BEGIN``, ``COMMIT`` and the pipeline
            that carries a statement per effect) costs several times one statement's,
            and its data-modifying ``WITH`` makes one statement of them; SQLite has no
            such statement, and runs in-process, where a statement costs little.
        ts, read_ts, json, read_json: How times and JSON travel to and from the driver.
    """

    placeholder: str
    types: Mapping[str, str]
    for_update: str
    skip_locked: str
    session_seq: str | None
    table_exists: str
    json_field: str
    json_keys: str
    fuse: bool
    ts: Callable[[datetime], Any]
    read_ts: Callable[[Any], datetime]
    json: Callable[[Any, str], Any]
    read_json: Callable[[Any], Any]

    def ts_or_none(self, value: datetime | None) -> Any:
        return None if value is None else self.ts(value)

    def read_ts_or_none(self, value: Any) -> datetime | None:
        return None if value is None else self.read_ts(value)


def _fused(stmt: Stmt, then: Sequence[Stmt | Guarded]) -> Stmt:
    """``stmt`` with ``then`` as one statement: ``stmt`` and each of ``then`` a ``WITH``
    query, each of ``then`` reading its guard's ``RETURNING``; the statement returns
    ``stmt``'s rows. PostgreSQL always runs a data-modifying ``WITH`` query, a plain
    ``SELECT`` one only when read: the final ``SELECT`` reads each of those (all rows).

    ``then`` is listed last first: PostgreSQL runs the data-modifying queries nobody
    reads after the main query, the last listed first (each one reading its guard runs
    that first), so ids are handed out in ``then``'s order, as the same writes made one
    by one get them; audit events and deliveries keep their order."""
    queries = [f"w0 AS ({stmt.text})"]
    params = list(stmt.params)
    selects: list[str] = []

    def add(effects: Sequence[Stmt | Guarded], guard: str) -> None:
        for effect in reversed(effects):
            inner = effect.stmt if isinstance(effect, Guarded) else effect
            name = f"w{len(queries)}"
            queries.append(f"{name} AS ({_guarded_by(inner.text, guard)})")
            params.extend(inner.params)
            if inner.text.startswith("SELECT"):
                selects.append(name)
            if isinstance(effect, Guarded):
                add(effect.then, name)

    add(then, "w0")
    read = "".join(f" AND (SELECT count(*) FROM {name}) >= 0" for name in selects)
    return Stmt(f"WITH {', '.join(queries)} SELECT * FROM w0"
                + (f" WHERE {read.removeprefix(' AND ')}" if read else ""), params, whole=True)


@functools.cache
def _guarded_by(text: str, guard: str) -> str:
    """``text`` (one of :class:`Guarded`'s ``then``) made only for the rows of the
    ``WITH`` query ``guard``."""
    if "{guard}" in text:
        return text.replace("{guard}", guard)
    if text.startswith("INSERT ") and " VALUES (" in text:
        # INSERT ... SELECT types its parameters by the target columns, as VALUES does
        head, _, rest = text.partition(" VALUES (")
        values, _, tail = rest.partition(")")
        return f"{head} SELECT {values} FROM {guard}{tail}"
    if text.startswith("SELECT ") and " FROM " not in text:
        return f"{text} FROM {guard}"
    if text.startswith("UPDATE ") and " WHERE " in text:
        head, _, rest = text.partition(" WHERE ")
        where, returning, columns = rest.partition(" RETURNING ")
        return f"{head} WHERE ({where}) AND EXISTS (SELECT FROM {guard}){returning}{columns}"
    raise ValueError(f"cannot make this statement depend on another: {text!r}")


def _target(text: str) -> str:
    """The table an ``INSERT INTO {t}`` or ``UPDATE {t}`` statement writes (as ``{t}``)."""
    words = text.split(None, 3)
    return words[2] if words[0] == "INSERT" else words[1]


@functools.lru_cache(maxsize=64)
def _owed_to_refs_text(json_keys: str, named: int) -> str:
    """The statement of :meth:`SQLStore._owed_to_refs` skipping ``named`` channels: one
    text per dialect and count, built once (every decision makes one), so the compiled
    form is found by a string whose hash is already known."""
    skip = f" AND key NOT IN ({', '.join('?' * named)})" if named else ""
    return (f"INSERT INTO {{outbox}} ({', '.join(_OUTBOX_COLUMNS)}) SELECT r.id, key, "
            "'resolved', 0, ?, NULL, FALSE, FALSE, ?, NULL FROM {guard} AS r, "
            + json_keys.format(column="r.message_refs")
            + f" WHERE r.id = ?{skip} ORDER BY key ON CONFLICT DO NOTHING")


def _has_refs(row: Row) -> bool:
    """Whether a request row may hold a message reference: anything but the empty
    object its column starts as (as the driver hands it back, text or decoded)."""
    refs = row["message_refs"]
    return bool(refs != "{}" and refs != {})


def _covering(target: GrantTarget) -> tuple[str, Sequence[Any]]:
    """The SQL of :meth:`GrantRecord.covers`: one clause and its parameters."""
    clauses, params = [], []
    if target.thread_id is not None:
        clauses.append("(scope = 'thread' AND thread_id = ?)")
        params.append(target.thread_id)
    if target.session_id is not None:
        clauses.append("(scope = 'session' AND session_id = ?)")
        params.append(target.session_id)
    if target.client_id is None:
        clauses.append("(scope = 'everyone' AND client_id IS NULL)")
    else:
        clauses.append("(scope = 'everyone' AND client_id = ?)")
        params.append(target.client_id)
    return f"({' OR '.join(clauses)})", params


_REQUEST_TIMES = ("created_at", "expires_at", "decided_at", "resumed_at", "resume_done_at")
#: Response schemas a store remembers as stored (one per tool, so a bounded few).
_KNOWN_SCHEMAS = 256


def _kept_schema(record: RequestRecord) -> tuple[str, str] | None:
    """The digest and text of ``record``'s response schema, which is stored once for
    every request that names it; None when it has none."""
    body = record.payload.get("response_schema")
    if not isinstance(body, str):
        return None
    return hashlib.blake2b(body.encode(), digest_size=16).hexdigest(), body
_REQUEST_JSONS = ("payload", "decision", "message_refs", "votes")


@functools.cache
def _field_names(model: type[BaseModel]) -> tuple[str, ...]:
    """A record model's field names, which are its table's column names."""
    return tuple(model.model_fields)


def drive(op: Op[_T], execute: Callable[[Stmt], list[Row]]) -> _T:
    """Run an operation to its end with a blocking ``execute``."""
    try:
        stmt = next(op)
        while True:
            stmt = op.send(execute(stmt))
    except StopIteration as stop:
        result: _T = stop.value
        return result


class SQLStore(Store):
    """A :class:`Store` over SQL; subclasses say how statements reach the database.

    Subclasses set :attr:`dialect`, pass their rendered table names to ``__init__``,
    and implement :meth:`_run` (one operation, in one transaction when ``write``).
    """

    dialect: Dialect
    SCHEMA_VERSION = SCHEMA_VERSION
    #: Where a decision is announced to other processes, on databases that can.
    _decided_channel: str | None = None

    def __init__(self, tables: Mapping[str, str]) -> None:
        self._names = {**tables, **self.dialect.types}
        self._compiled: dict[str, str] = {}
        #: Response schemas known to be stored, by digest (read, or committed by this
        #: store): a filing naming one writes only its digest, a read finds it here.
        self._schemas: LRU[str, str] = LRU(_KNOWN_SCHEMAS)

    def _sql(self, text: str) -> str:
        """``text`` for this store's dialect and tables, compiled once."""
        compiled = self._compiled.get(text)
        if compiled is None:
            compiled = text.format(**self._names)
            if self.dialect.placeholder == "$":
                first, *rest = compiled.split("?")
                compiled = first + "".join(f"${n}{part}" for n, part in enumerate(rest, 1))
            self._compiled[text] = compiled
        return compiled

    @abc.abstractmethod
    async def _run(self, op: Op[_T], *, write: bool) -> _T:
        """Drive ``op``; with ``write``, inside one transaction that holds the locks a
        compare-and-set needs."""

    # row mappers -------------------------------------------------------------------------

    def _model(self, model: type[_M], row: Row, *, times: tuple[str, ...] = (),
               jsons: tuple[str, ...] = (), flags: tuple[str, ...] = ()) -> _M:
        """One record from one row: columns are named as the model's fields; times, JSON
        and booleans come back in the dialect's way (NULL stays None)."""
        return model(**self._values(row, _field_names(model), times=times, jsons=jsons,
                                    flags=flags))

    def _values(self, row: Row, names: Iterable[str], *, times: tuple[str, ...] = (),
                jsons: tuple[str, ...] = (), flags: tuple[str, ...] = ()) -> dict[str, Any]:
        """The columns ``names`` of ``row``, read back the dialect's way (times, JSON and
        booleans among them only when the row has them)."""
        d = self.dialect
        # a SQLite row reads a column by name slowly: take them all at once as a dict
        columns = row if isinstance(row, dict) else dict(
            zip(row.keys(), cast("Iterable[Any]", row), strict=True))
        values = {name: columns[name] for name in names}
        for name in times:
            if name in values:
                values[name] = d.read_ts_or_none(values[name])
        for name in jsons:
            if name in values:
                values[name] = None if values[name] is None else d.read_json(values[name])
        for name in flags:
            if name in values:
                values[name] = bool(values[name])
        return values

    def _request(self, row: Row, schemas: Mapping[str, str]) -> RequestRecord:
        """One request from its row; the response schema it names from ``schemas``."""
        values = self._values(row, _field_names(RequestRecord), times=_REQUEST_TIMES,
                              jsons=_REQUEST_JSONS)
        digest = row["schema_digest"]
        if digest is not None:
            values["payload"]["response_schema"] = schemas[digest]
        return RequestRecord(**values)

    def _requests(self, rows: Sequence[Row]) -> Op[list[RequestRecord]]:
        """The requests of ``rows``, with the response schemas they name: from memory,
        or read in one statement for those not seen before."""
        schemas: dict[str, str] = {}
        missing: list[str] = []
        for row in rows:
            digest = row["schema_digest"]
            if digest is not None and digest not in schemas:
                body = self._schemas.get(digest)
                if body is None:
                    missing.append(digest)
                else:
                    schemas[digest] = body
        if missing:
            found = yield Stmt("SELECT digest, body FROM {response_schemas} WHERE digest IN "
                               f"({', '.join('?' * len(missing))})", missing)
            for row in found:
                schemas[row["digest"]] = row["body"]
                self._schemas.put(row["digest"], row["body"])
            lost = set(missing) - schemas.keys()
            if lost:  # pragma: no cover - a schema row is written with its first request
                raise StoreError(f"response schema {sorted(lost)[0]!r} is missing")
        return [self._request(row, schemas) for row in rows]

    def _request_of(self, row: Row) -> Op[RequestRecord]:
        """:meth:`_requests` of one row."""
        return (yield from self._requests([row]))[0]

    def _decided(self, seen: RequestRecord, row: Row,
                 columns: Sequence[str] = _LIVE_COLUMNS) -> RequestRecord:
        """The decided record: ``seen`` (the request as filed) with the stored values of
        the columns that change after filing (``row`` holds those), so the payload is
        neither read back nor parsed again. Nothing is validated again: every value is
        the database's, read back as :meth:`_request` reads it."""
        values = self._values(row, columns, times=_REQUEST_TIMES, jsons=_REQUEST_JSONS)
        values["status"] = coerce_status(values["status"])
        values["votes"] = [Vote.model_validate(v) for v in values["votes"]]
        return seen.model_copy(update=values)

    def _filed(self, record: RequestRecord, row: Row) -> RequestRecord:
        """The record ``record``'s insert stored, from ``row`` (the columns in
        ``_FILING_RETURNS``) and the payload as written, so a ~10 kB payload is neither
        read back nor parsed again: its JSON-ready form is exactly what its column holds
        (the text the dialect writes is that form encoded), as a copy of the filer's."""
        seen = record.model_copy(update={
            "kind": RequestKind(record.kind),
            "payload": to_jsonable_python(record.payload),
        })
        return self._decided(seen, row, _FILING_RETURNS)

    def _session(self, row: Row) -> SessionRecord:
        return self._model(SessionRecord, row, times=("created_at",),
                           jsons=("approvers", "metadata"), flags=("active",))

    def _audit(self, row: Row) -> AuditEvent:
        return self._model(AuditEvent, row, times=("at",), jsons=("details",))

    def _grant(self, row: Row) -> GrantRecord:
        return self._model(GrantRecord, row, times=("created_at", "expires_at", "revoked_at"),
                           jsons=("args",))

    def _outbox(self, row: Row) -> OutboxItem:
        item = self._model(OutboxItem, row, times=("due_at", "created_at", "leased_until"),
                           flags=("done", "dead"))
        if item.created_at is None:  # owed before version 4 recorded it: the best guess
            item.created_at = item.due_at
        return item

    # statements shared by several operations ---------------------------------------------

    def _request_values(self, record: RequestRecord, kept: tuple[str, str] | None
                        ) -> tuple[Any, ...]:
        """``record``'s row; with ``kept`` (its response schema's digest and text, see
        :func:`_kept_schema`), the payload without the schema, which the row names."""
        d = self.dialect
        payload = record.payload
        if kept is not None:
            payload = {k: v for k, v in payload.items() if k != "response_schema"}
        return (
            record.id,
            RequestKind(record.kind).value,
            record.session_id,
            record.client_id,
            record.thread_id,
            record.interrupt_id,
            record.graph,
            d.json(payload, "request payload"),
            coerce_status(record.status).value,
            None if record.decision is None else d.json(record.decision, "decision"),
            record.decided_by,
            record.channel,
            d.ts(record.created_at),
            d.ts_or_none(record.expires_at),
            d.ts_or_none(record.decided_at),
            record.escalation_level,
            d.ts_or_none(record.resumed_at),
            d.json(record.message_refs, "message refs"),
            d.ts_or_none(record.resume_done_at),
            d.json(record.votes, "votes"),
            None if kept is None else kept[0],
        )

    def _audit_values(self, event: AuditEvent) -> tuple[Any, ...]:
        return (
            self.dialect.ts(event.at), event.event, event.request_id, event.session_id,
            event.thread_id, event.actor, event.channel, event.args_hash,
            self.dialect.json(event.details, "audit details"),
        )

    def _grant_values(self, grant: GrantRecord) -> tuple[Any, ...]:
        d = self.dialect
        return (grant.id, grant.tool, d.json(grant.args, "grant constraints"), grant.scope,
                grant.session_id, grant.thread_id, grant.client_id, grant.request_id,
                grant.created_by, grant.approver_id, grant.channel, d.ts(grant.created_at),
                d.ts_or_none(grant.expires_at), d.ts_or_none(grant.revoked_at),
                grant.revoked_by)

    def _outbox_values(self, item: OutboxItem) -> tuple[Any, ...]:
        return (item.request_id, item.notifier, item.kind, item.attempts,
                self.dialect.ts(item.due_at), item.last_error, item.done, item.dead,
                self.dialect.ts(item.created_at or utcnow()),
                self.dialect.ts_or_none(item.leased_until))

    def _get_row(self, request_id: str, *, lock: bool = False) -> Op[Row]:
        rows = yield Stmt("SELECT * FROM {requests} WHERE id = ?"
                          + (self.dialect.for_update if lock else ""), (request_id,))
        if not rows:
            raise RequestNotFound(request_id)
        return rows[0]

    def _append_audit(self, events: Iterable[AuditEvent]) -> Op[list[AuditEvent]]:
        stored = []
        for event in events:
            rows = yield Stmt(_INSERT_AUDIT, self._audit_values(event))
            stored.append(self._audit(rows[0]))
        return stored

    def _write_audit(self, events: Iterable[AuditEvent]) -> Op[None]:
        """Append events whose stored form nobody reads back (sent without waiting)."""
        for stmt in self._caused(events, ()):  # noqa: UP028 - a list cannot take rows
            yield stmt

    def _caused(self, audit: Iterable[AuditEvent], outbox: Iterable[OutboxItem]
                ) -> list[Stmt]:
        """The statements writing a change's audit events and outbox entries, none read
        back: an entry that is open already (same request, channel and kind) stands, as
        with :meth:`Store.enqueue_outbox`."""
        return [*(Stmt(_WRITE_AUDIT, self._audit_values(event), rows=False)
                  for event in audit),
                *(Stmt(_WRITE_OUTBOX, self._outbox_values(item), rows=False)
                  for item in outbox)]

    def _write(self, stmt: Stmt, then: Sequence[Stmt | Guarded]) -> Op[list[Row]]:
        """``stmt``, and when it returns a row, the writes it causes (see
        :class:`Guarded`: one statement where the dialect fuses); ``stmt``'s rows."""
        if self.dialect.fuse:
            return (yield _fused(stmt, then))
        rows = yield stmt
        if rows:
            yield from self._then(then, _target(stmt.text))
        return rows

    def _then(self, effects: Sequence[Stmt | Guarded], table: str) -> Op[None]:
        """``effects`` one by one, after the write to ``table`` that causes them."""
        for effect in effects:
            inner = effect.stmt if isinstance(effect, Guarded) else effect
            if "{guard}" in inner.text:
                inner = Stmt(_guarded_by(inner.text, table), inner.params, inner.rows,
                             inner.whole)
            rows = yield inner
            if isinstance(effect, Guarded) and rows:
                yield from self._then(effect.then, _target(inner.text))

    @staticmethod
    def _plain(delivered: Sequence[Delivered], owed: Iterable[OutboxItem] = (),
               refs_of: str | None = None) -> bool:
        """Whether finished deliveries can be recorded as writes a change causes (see
        :meth:`_recorded`): none stores a message reference (a read and write of its
        request under the row's lock), and none closes an entry the change owes anew
        (``owed``, and with ``refs_of`` the ``resolved`` ones of that request): in one
        statement, the new entry would meet the open one the delivery closes."""
        keys = {(i.request_id, i.notifier, i.kind) for i in owed}
        return all(d.message_ref is None and (d.request_id, d.notifier, d.kind) not in keys
                   and not (d.kind == "resolved" and d.request_id == refs_of)
                   for d in delivered)

    def _recorded(self, delivered: Sequence[Delivered]) -> list[Guarded]:
        """Finished deliveries (already normalized, none with a message reference) as
        writes a change causes: each one's audit only when it is still held under its
        lease, as :meth:`_delivered` records them."""
        d = self.dialect
        return [Guarded(Stmt(_DELIVERED, (done.request_id, done.notifier, done.kind,
                                          d.ts(done.leased_until))),
                        self._caused(done.audit, ()))
                for done in delivered]

    def _enqueue(self, item: OutboxItem) -> Op[OutboxItem]:
        # Bounded: a retry is only needed when the open item we collided with was
        # completed (by another transaction) between our insert and our read.
        for _ in range(5):
            rows = yield Stmt(_INSERT_OUTBOX, self._outbox_values(item))
            if not rows:
                rows = yield Stmt(
                    "SELECT * FROM {outbox} WHERE request_id = ? AND notifier = ? "
                    "AND kind = ? AND NOT done",
                    (item.request_id, item.notifier, item.kind),
                )
            if rows:
                return self._outbox(rows[0])
        raise StoreError(
            f"could not enqueue {item.kind} delivery of {item.request_id!r} to {item.notifier!r}"
        )

    def _delivered(self, delivered: Sequence[Delivered]) -> Op[int]:
        """Record deliveries finished under their lease (already normalized), in the
        caller's transaction; those no longer held under it write nothing."""
        d = self.dialect
        recorded = 0
        for done in delivered:
            rows = yield Stmt(_DELIVERED, (done.request_id, done.notifier, done.kind,
                                           d.ts(done.leased_until)))
            if not rows:
                continue  # taken over (or done): its holder records it
            recorded += 1
            yield from self._write_audit(done.audit)
            if done.message_ref is None:
                continue
            row = yield from self._set_ref(done.request_id, done.notifier, done.message_ref)
            if row["status"] != "pending":
                yield from self._owe_resolved(row, done.notifier)
        return recorded

    def _owe_resolved(self, row: Row, channel: str) -> Op[None]:
        """A request decided before its message on ``channel`` was recorded: that
        channel is owed the outcome, as a decision owes every channel it was shown on
        (unless it was given its ``resolved`` delivery already)."""
        owed = yield Stmt("SELECT id FROM {outbox} WHERE request_id = ? AND notifier = ? "
                          "AND kind = 'resolved'", (row["id"], channel))
        if not owed:
            yield from self._enqueue(OutboxItem(
                request_id=row["id"], notifier=channel, kind="resolved",
                due_at=self.dialect.read_ts(row["decided_at"])))

    def _effects(self, audit: Iterable[AuditEvent], outbox: Iterable[OutboxItem]) -> Op[None]:
        """Write a state change's audit events and outbox entries (see :meth:`_caused`),
        in its transaction. Nothing here is read back, so PostgreSQL sends it all with the
        commit."""
        for stmt in self._caused(audit, outbox):  # noqa: UP028 - a list cannot take rows
            yield stmt

    @staticmethod
    def _select(table: str, where: Sequence[tuple[str, Sequence[Any]]], order: str,
                limit: int | None) -> Stmt:
        """``SELECT *`` from one table where every clause holds, in order, maybe limited."""
        text = f"SELECT * FROM {{{table}}}"
        params: list[Any] = [p for _, clause_params in where for p in clause_params]
        if where:
            text += " WHERE " + " AND ".join(clause for clause, _ in where)
        text += f" ORDER BY {order}"
        if limit is not None:
            text += " LIMIT ?"
            params.append(limit)
        return Stmt(text, params)

    # lifecycle ---------------------------------------------------------------------------

    def _migrate(self, prelude: Sequence[Stmt] = ()) -> Op[None]:
        """Apply pending migrations; the caller runs this as one write transaction."""
        for stmt in prelude:  # noqa: UP028 - a list cannot take the rows sent back
            yield stmt
        yield Stmt("CREATE TABLE IF NOT EXISTS {schema_version} (version INTEGER PRIMARY KEY, "
                   "applied_at {ts} NOT NULL DEFAULT CURRENT_TIMESTAMP)")
        rows = yield Stmt("SELECT COALESCE(MAX(version), 0) AS v FROM {schema_version}")
        current = int(rows[0]["v"])
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self!r} has loopgate schema version {current}, newer than this "
                f"loopgate_lc supports ({SCHEMA_VERSION}); upgrade loopgate_lc"
            )
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            for statement in statements:
                yield Stmt(statement)
            yield Stmt("INSERT INTO {schema_version} (version, applied_at) VALUES (?, ?)",
                       (version, self.dialect.ts(utcnow())))

    async def schema_version(self) -> int:
        """The schema version the database is at (0 before :meth:`setup`)."""

        def op() -> Op[int]:
            exists = yield Stmt(self.dialect.table_exists, (self._names["schema_version"],))
            if not exists:
                return 0
            rows = yield Stmt("SELECT COALESCE(MAX(version), 0) AS v FROM {schema_version}")
            return int(rows[0]["v"])

        return await self._run(op(), write=False)

    # sessions ----------------------------------------------------------------------------

    async def create_session(self, session: SessionRecord) -> SessionRecord:
        d = self.dialect
        columns = ["session_id", "client_id", "telegram_id", "approvers", "active",
                   "created_at", "metadata"]
        values = [
            session.session_id, session.client_id, session.telegram_id,
            d.json([str(a) for a in session.approvers], "session approvers"),
            session.active, d.ts(session.created_at), d.json(session.metadata, "session metadata"),
        ]
        marks = ", ".join("?" * len(columns))
        if d.session_seq is not None:
            columns.append("seq")
            marks += f", {d.session_seq}"
        text = (
            f"INSERT INTO {{sessions}} AS s ({', '.join(columns)}) VALUES ({marks}) "
            "ON CONFLICT (session_id) DO UPDATE SET client_id = excluded.client_id, "
            "telegram_id = excluded.telegram_id, approvers = excluded.approvers, "
            "active = excluded.active, created_at = excluded.created_at, "
            "metadata = excluded.metadata WHERE NOT s.active RETURNING *"
        )

        def op() -> Op[SessionRecord]:
            rows = yield Stmt(text, values)
            if not rows:
                raise SessionExists(session.session_id)
            return self._session(rows[0])

        return await self._run(op(), write=True)

    async def get_session(self, session_id: str) -> SessionRecord:
        def op() -> Op[SessionRecord]:
            rows = yield Stmt("SELECT * FROM {sessions} WHERE session_id = ?", (session_id,))
            if not rows:
                raise SessionNotFound(session_id)
            return self._session(rows[0])

        return await self._run(op(), write=False)

    async def deactivate_session(self, session_id: str) -> SessionRecord:
        def op() -> Op[SessionRecord]:
            rows = yield Stmt("UPDATE {sessions} SET active = FALSE WHERE session_id = ? "
                              "RETURNING *", (session_id,))
            if not rows:
                raise SessionNotFound(session_id)
            return self._session(rows[0])

        return await self._run(op(), write=True)

    async def list_sessions(self, *, active: bool | None = None) -> list[SessionRecord]:
        where, params = ("", ()) if active is None else (" WHERE active = ?", (active,))

        def op() -> Op[list[SessionRecord]]:
            rows = yield Stmt(f"SELECT * FROM {{sessions}}{where} ORDER BY created_at, seq",
                              params)
            return [self._session(r) for r in rows]

        return await self._run(op(), write=False)

    # requests ----------------------------------------------------------------------------

    async def create_request(
        self, record: RequestRecord, *, audit: Sequence[AuditEvent] = (),
        outbox: Sequence[OutboxItem] = (),
    ) -> tuple[RequestRecord, bool]:
        kept = _kept_schema(record)
        values = self._request_values(record, kept)

        def op() -> Op[tuple[RequestRecord, bool]]:
            # DO NOTHING covers both the id and the (thread_id, interrupt_id) uniqueness;
            # on PostgreSQL it waits for a concurrent insert of the same key to commit,
            # so the read below finds the first record.
            rows = yield from self._write(Stmt(_INSERT_REQUEST, values),
                                          self._filing_writes(kept, audit, outbox))
            if rows:
                return self._filed(record, rows[0]), True
            return (yield from self._filed_before(record)), False

        stored, created = await self._run(op(), write=True)
        self._known(kept, created)
        return stored, created

    async def create_request_unless_granted(
        self, record: RequestRecord, grants: GrantQuery, *,
        audit: Sequence[AuditEvent] = (), outbox: Sequence[OutboxItem] = (),
    ) -> Filed:
        where, params = self._grants_where(grants)
        kept = _kept_schema(record)
        # one statement in the common case: inserted unless a grant is there (or the
        # request is: DO NOTHING as in create_request)
        insert = Stmt(_INSERT_REQUEST_UNLESS.format(where=" AND ".join(where) or "TRUE"),
                      (*self._request_values(record, kept), *params))

        def op() -> Op[Filed]:
            rows = yield from self._write(insert, self._filing_writes(kept, audit, outbox))
            if rows:
                return Filed(record=self._filed(record, rows[0]), created=True)
            # not filed (rarely): a grant is there, or the request was
            rows = yield self._grants_select(grants)
            if rows:
                return Filed(grants=[self._grant(r) for r in rows])
            return Filed(record=(yield from self._filed_before(record)))

        filed = await self._run(op(), write=True)
        self._known(kept, filed.created)
        return filed

    def _filing_writes(self, kept: tuple[str, str] | None, audit: Sequence[AuditEvent],
                       outbox: Sequence[OutboxItem]) -> list[Stmt]:
        """What a filing's insert causes: its response schema, unless known to be
        stored already (the usual case: one per tool), then its audit and deliveries."""
        schema = ([] if kept is None or kept[0] in self._schemas
                  else [Stmt(_INSERT_SCHEMA, kept, rows=False)])
        return [*schema, *self._caused(audit, outbox)]

    def _known(self, kept: tuple[str, str] | None, created: bool) -> None:
        """After a filing committed: its response schema is stored if its request was
        (a filing that found its request there, or a grant, wrote neither)."""
        if kept is not None and created:
            self._schemas.put(*kept)

    def _filed_before(self, record: RequestRecord) -> Op[RequestRecord]:
        """The request an insert of ``record`` conflicted with."""
        rows = yield Stmt(
            "SELECT * FROM {requests} WHERE id = ? OR (thread_id = ? AND interrupt_id = ?) "
            "ORDER BY CASE WHEN id = ? THEN 0 ELSE 1 END LIMIT 1",
            (record.id, record.thread_id, record.interrupt_id, record.id),
        )
        if not rows:  # pragma: no cover - rows are never deleted
            raise StoreError(f"request {record.id!r} conflicted but cannot be read back")
        return (yield from self._request_of(rows[0]))

    async def get_request(self, request_id: str) -> RequestRecord:
        def op() -> Op[RequestRecord]:
            return (yield from self._request_of((yield from self._get_row(request_id))))

        return await self._run(op(), write=False)

    async def find_request(self, thread_id: str, interrupt_id: str) -> RequestRecord | None:
        def op() -> Op[RequestRecord | None]:
            rows = yield Stmt("SELECT * FROM {requests} WHERE thread_id = ? AND interrupt_id = ?",
                              (thread_id, interrupt_id))
            return (yield from self._request_of(rows[0])) if rows else None

        return await self._run(op(), write=False)

    async def query_requests(self, query: RequestQuery) -> list[RequestRecord]:
        d = self.dialect
        where: list[tuple[str, Sequence[Any]]] = [
            (f"{column} = ?", (value,))
            for column, value in (
                ("status", None if query.status is None else query.status.value),
                ("session_id", query.session_id),
                ("thread_id", query.thread_id),
                ("graph", query.graph),
                (d.json_field.format(column="payload", key="name"), query.tool),
                (d.json_field.format(column="payload", key="risk_level"), query.risk),
            )
            if value is not None
        ]
        if query.decided:
            where.append(("status <> 'pending'", ()))
        if query.scope is not None:
            where.append(self._scope_clause(query.scope))
        if query.unresumed:
            where.append(("status <> 'pending' AND resume_done_at IS NULL", ()))
            if query.stale_before is None:
                where.append(("resumed_at IS NULL", ()))
            else:
                where.append(("(resumed_at IS NULL OR resumed_at <= ?)",
                              (d.ts(query.stale_before),)))
        way, order = ("<", "created_at DESC, seq DESC") if query.newest_first \
            else (">", "created_at, seq")

        def op() -> Op[list[RequestRecord]]:
            if query.after is not None:
                last = yield from self._get_row(query.after)
                where.append((f"(created_at {way} ? OR (created_at = ? AND seq {way} ?))",
                              (last["created_at"], last["created_at"], last["seq"])))
            rows = yield self._select("requests", where, order, query.limit)
            return (yield from self._requests(rows))

        return await self._run(op(), write=False)

    @staticmethod
    def _scope_clause(scope: RequestScope) -> tuple[str, Sequence[Any]]:
        """``session_id IN (...) OR client_id IN (...)``; an empty scope matches nothing."""
        parts: list[str] = []
        params: list[Any] = []
        for column, values in (("session_id", scope.sessions), ("client_id", scope.clients)):
            if values:
                parts.append(f"{column} IN ({', '.join('?' * len(values))})")
                params.extend(sorted(values))
        return (f"({' OR '.join(parts)})" if parts else "1 = 0"), params

    async def commit_resolution(self, resolution: Resolution) -> RequestRecord:
        # bad data fails before the transaction, and is encoded once
        decision = self.dialect.json(resolution.decision, "decision")
        grants = [self._grant_values(g) for g in resolution.grants]
        delivered = normalized_delivered(resolution.delivered)

        def op() -> Op[RequestRecord]:
            return (yield from self._resolve(resolution, decision, grants, delivered))

        return await self._run(op(), write=True)

    def _resolve(self, r: Resolution, decision: Any,
                 grants: Sequence[tuple[Any, ...]] = (),
                 delivered: Sequence[Delivered] = ()) -> Op[RequestRecord]:
        """The compare-and-set every decision is, with what it causes (``decision``:
        ``r.decision`` encoded for the database; ``grants``: ``r.grants`` as rows;
        ``delivered``: ``r.delivered`` normalized, recorded with it, or first when one
        stores a message reference the decision's owed deliveries must see)."""
        d = self.dialect
        # deliveries that only close their entry are written as the decision's effects
        # (all in its one statement, where the dialect fuses); the others first
        plain = self._plain(delivered, r.outbox,
                            r.request_id if r.resolved_to_message_refs else None)
        if not plain:
            yield from self._delivered(delivered)
        seen = r.seen if r.seen is not None and r.seen.id == r.request_id else None
        then: list[Stmt | Guarded] = [*self._recorded(delivered)] if plain else []
        # grants are remembered with the decision that makes them
        then += [Stmt(_INSERT_GRANT, grant, rows=False) for grant in grants]
        then += self._caused(r.audit, r.outbox)
        notify = [] if self._decided_channel is None else [  # sent when the decision commits
            Stmt("SELECT pg_notify(?, ?)", (self._decided_channel, r.request_id), rows=False)]
        decide = Stmt(_DECIDE if seen is None else _DECIDE_LIVE, (
            r.status.value, decision, r.decided_by, r.channel, d.ts(r.decided_at),
            None if r.resumed_at is None else d.ts(r.resumed_at), r.request_id))
        if d.fuse or not r.resolved_to_message_refs:
            rows = yield from self._write(decide, [*then, *self._owed_to_refs(r), *notify])
        else:
            # Unfused, the decided row is in hand before what it causes runs: a request
            # with a message on no channel (most, where nobody is notified) owes no
            # delivery to one, and the statement that would find none costs the store as
            # much as the audit line. The row is read under the write's lock, so a
            # message reference stored since ``seen`` was read is seen here.
            rows = yield decide
            if rows:
                owed = self._owed_to_refs(r) if _has_refs(rows[0]) else []
                yield from self._then([*then, *owed, *notify], _target(decide.text))
        if not rows:
            # Lost the race (or never pending): the winner has committed, so this sees it.
            raise already_decided((yield from self._request_of(
                (yield from self._get_row(r.request_id)))))
        if seen is None:
            return (yield from self._request_of(rows[0]))
        return self._decided(seen, rows[0])

    def _owed_to_refs(self, r: Resolution) -> list[Stmt]:
        """With ``r.resolved_to_message_refs``, the statement owing a ``resolved``
        delivery to every channel the decided request has a message on that ``r.outbox``
        names none for (see :func:`resolved_outbox`): read from the decided row, in SQL,
        so it travels with the decision."""
        if not r.resolved_to_message_refs:
            return []
        d = self.dialect
        named = tuple(sorted({i.notifier for i in r.outbox if i.kind == "resolved"}))
        return [Stmt(_owed_to_refs_text(d.json_keys, len(named)),
                     (d.ts(r.decided_at), d.ts(utcnow()), r.request_id, *named), rows=False)]

    async def commit_vote(self, ballot: Ballot) -> RequestRecord:
        d = self.dialect
        d.json(ballot.resolution.decision, "decision")  # bad data fails before the lock
        delivered = normalized_delivered(ballot.delivered)
        also = normalized_delivered(ballot.resolution.delivered)

        def op() -> Op[RequestRecord]:
            # the row lock orders racing votes: each one reads the votes the ones before
            # it committed, so none is lost or counted twice
            current = yield from self._request_of(
                (yield from self._get_row(ballot.request_id, lock=True)))
            votes, audit, resolution = counted_ballot(current, ballot)
            yield from self._delivered(delivered)
            rows = yield Stmt("UPDATE {requests} SET votes = ? WHERE id = ? RETURNING *",
                              (d.json(votes, "votes"), ballot.request_id))
            if resolution is None:
                yield from self._effects((audit,), ballot.outbox)
                return (yield from self._request_of(rows[0]))
            yield from self._effects((audit,), ())
            return (yield from self._resolve(replace(resolution, seen=current),
                                             d.json(resolution.decision, "decision"),
                                             delivered=also))

        return await self._run(op(), write=True)

    async def mark_resumed(
        self, request_id: str, *, stale_before: datetime | None = None,
        at: datetime | None = None, done: bool = False, audit: Sequence[AuditEvent] = (),
        delivered: Sequence[Delivered] = (),
    ) -> bool:
        """See :meth:`Store.mark_resumed`; a still-pending request cannot be claimed."""
        d = self.dialect
        finished = normalized_delivered(delivered)
        now = d.ts(at or utcnow())
        stale = "" if stale_before is None else " OR resumed_at <= ?"
        params = (now, now if done else None, request_id,
                  *(() if stale_before is None else (d.ts(stale_before),)))

        def op() -> Op[bool]:
            rows = yield Stmt(
                "UPDATE {requests} SET resumed_at = ?, resume_done_at = ? WHERE id = ? "
                "AND status <> 'pending' AND resume_done_at IS NULL "
                f"AND (resumed_at IS NULL{stale}) RETURNING id",
                params,
            )
            yield from self._delivered(finished)
            if rows:
                yield from self._effects(audit, ())
                return True
            yield from self._get_row(request_id)  # raises RequestNotFound
            return False

        return await self._run(op(), write=True)

    async def complete_resume(
        self, *request_ids: str, at: datetime | None = None, audit: Sequence[AuditEvent] = (),
        delivered: Sequence[Delivered] = (),
    ) -> None:
        """See :meth:`Store.complete_resume`."""
        now = self.dialect.ts(at or utcnow())
        finished = normalized_delivered(delivered)

        def op() -> Op[None]:
            if len(request_ids) == 1 and self._plain(finished):
                # the common case, one request: one statement where the dialect fuses
                rows = yield from self._write(Stmt(_RESUME_DONE, (now, request_ids[0])),
                                              [*self._recorded(finished),
                                               *self._caused(audit, ())])
                if not rows:
                    raise RequestNotFound(request_ids[0])
                return
            yield from self._delivered(finished)
            for request_id in request_ids:
                rows = yield Stmt(_RESUME_DONE, (now, request_id))
                if not rows:
                    raise RequestNotFound(request_id)
            yield from self._effects(audit, ())

        await self._run(op(), write=True)

    async def release_resume(
        self, request_id: str, *, claimed_at: datetime, audit: Sequence[AuditEvent] = (),
    ) -> bool:
        """See :meth:`Store.release_resume`."""
        params = (request_id, self.dialect.ts(claimed_at))

        def op() -> Op[bool]:
            rows = yield Stmt(
                "UPDATE {requests} SET resumed_at = NULL WHERE id = ? AND resumed_at = ? "
                "AND resume_done_at IS NULL RETURNING id", params)
            if rows:
                yield from self._effects(audit, ())
                return True
            yield from self._get_row(request_id)  # raises RequestNotFound
            return False

        return await self._run(op(), write=True)

    async def extend_expiry(
        self, request_id: str, *, expires_at: datetime, escalation_level: int,
        audit: Sequence[AuditEvent] = (), outbox: Sequence[OutboxItem] = (),
        delivered: Sequence[Delivered] = (),
    ) -> bool:
        """See :meth:`Store.extend_expiry`. Raises: RequestNotFound."""
        params = (self.dialect.ts(expires_at), escalation_level, request_id,
                  escalation_level - 1)
        finished = normalized_delivered(delivered)

        def op() -> Op[bool]:
            yield from self._delivered(finished)
            rows = yield Stmt(_ESCALATE, params)
            if rows:
                yield from self._effects(audit, outbox)
                return True
            yield from self._get_row(request_id)  # raises RequestNotFound
            return False

        return await self._run(op(), write=True)

    async def expired(self, now: datetime, *, limit: int = 100) -> list[RequestRecord]:
        params = (self.dialect.ts(now), check_limit(limit))

        def op() -> Op[list[RequestRecord]]:
            rows = yield Stmt(
                "SELECT * FROM {requests} WHERE status = 'pending' AND expires_at IS NOT NULL "
                "AND expires_at <= ? ORDER BY expires_at, created_at, seq LIMIT ?",
                params,
            )
            return (yield from self._requests(rows))

        return await self._run(op(), write=False)

    async def next_expiry(self) -> datetime | None:
        def op() -> Op[datetime | None]:
            rows = yield Stmt(
                "SELECT MIN(expires_at) AS soonest FROM {requests} WHERE status = 'pending'"
            )
            return self.dialect.read_ts_or_none(rows[0]["soonest"]) if rows else None

        return await self._run(op(), write=False)

    async def set_message_ref(self, request_id: str, channel: str, ref: Any) -> None:
        clean = json_value(ref, what=f"message ref for channel {channel!r}")
        def op() -> Op[None]:
            yield from self._set_ref(request_id, channel, clean)

        await self._run(op(), write=True)

    def _set_ref(self, request_id: str, channel: str, ref: Any) -> Op[Row]:
        """Store one channel's reference; returns the request's row as it was read."""
        # Read and write under the row's lock, so refs set by two notifiers at once both
        # survive.
        d = self.dialect
        row = yield from self._get_row(request_id, lock=True)
        refs = {**d.read_json(row["message_refs"]), channel: ref}
        yield Stmt("UPDATE {requests} SET message_refs = ? WHERE id = ?",
                   (d.json(refs, "message refs"), request_id), rows=False)
        return row

    # callback keys -----------------------------------------------------------------------

    async def put_callback(self, key: str, request_id: str, action: dict[str, Any]) -> None:
        d = self.dialect
        params = (key, request_id, d.json(action, "callback action"), d.ts(utcnow()))

        def op() -> Op[None]:
            yield Stmt(
                "INSERT INTO {callbacks} (key, request_id, action, created_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                "request_id = excluded.request_id, action = excluded.action, "
                "created_at = excluded.created_at RETURNING key",
                params,
            )

        await self._run(op(), write=True)

    async def remember_once(self, key: str, *, expires_at: datetime) -> bool:
        d = self.dialect
        # kept beside the callback keys (one short-key table), namespaced apart from them
        params = (f"once:{key}", "", d.json({"expires_at": expires_at.isoformat()},
                                            "once key"), d.ts(utcnow()))

        def op() -> Op[bool]:
            rows = yield Stmt(
                "INSERT INTO {callbacks} (key, request_id, action, created_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (key) DO NOTHING RETURNING key",
                params,
            )
            return bool(rows)

        return await self._run(op(), write=True)

    async def get_callback(self, key: str) -> tuple[str, dict[str, Any]] | None:
        def op() -> Op[tuple[str, dict[str, Any]] | None]:
            rows = yield Stmt("SELECT request_id, action FROM {callbacks} WHERE key = ?", (key,))
            if not rows:
                return None
            return rows[0]["request_id"], self.dialect.read_json(rows[0]["action"])

        return await self._run(op(), write=False)

    # grants ------------------------------------------------------------------------------

    async def get_grant(self, grant_id: str) -> GrantRecord:
        def op() -> Op[GrantRecord]:
            rows = yield Stmt("SELECT * FROM {grants} WHERE id = ?", (grant_id,))
            if not rows:
                raise GrantNotFound(grant_id)
            return self._grant(rows[0])

        return await self._run(op(), write=False)

    async def query_grants(self, query: GrantQuery) -> list[GrantRecord]:
        select = self._grants_select(query)

        def op() -> Op[list[GrantRecord]]:
            rows = yield select
            return [self._grant(r) for r in rows]

        return await self._run(op(), write=False)

    def _grants_select(self, query: GrantQuery) -> Stmt:
        where, params = self._grants_where(query)
        return self._select("grants", [(" AND ".join(where), params)] if where else [],
                            "created_at, seq", query.limit)

    def _grants_where(self, query: GrantQuery) -> tuple[list[str], list[Any]]:
        """The clauses (each on the grants' columns) and parameters of ``query``."""
        d = self.dialect
        where: list[tuple[str, Sequence[Any]]] = [
            (f"{column} = ?", (value,))
            for column, value in (
                ("tool", query.tool),
                ("session_id", query.session_id),
                ("client_id", query.client_id),
                ("request_id", query.request_id),
            )
            if value is not None
        ]
        if query.live_at is not None:
            where.append(("revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
                          (d.ts(query.live_at),)))
        if query.covering is not None:
            where.append(_covering(query.covering))
        return [clause for clause, _ in where], [p for _, ps in where for p in ps]

    async def revoke_grant(
        self, grant_id: str, *, revoked_by: str | None, at: datetime | None = None,
        audit: Sequence[AuditEvent] = (),
    ) -> tuple[GrantRecord, bool]:
        params = (self.dialect.ts(at or utcnow()), revoked_by, grant_id)

        def op() -> Op[tuple[GrantRecord, bool]]:
            rows = yield Stmt("UPDATE {grants} SET revoked_at = ?, revoked_by = ? "
                              "WHERE id = ? AND revoked_at IS NULL RETURNING *", params)
            if rows:
                yield from self._effects(audit, ())
                return self._grant(rows[0]), True
            rows = yield Stmt("SELECT * FROM {grants} WHERE id = ?", (grant_id,))
            if not rows:
                raise GrantNotFound(grant_id)
            return self._grant(rows[0]), False

        return await self._run(op(), write=True)

    # audit -------------------------------------------------------------------------------

    async def append_audit(self, event: AuditEvent) -> AuditEvent:
        def op() -> Op[AuditEvent]:
            return (yield from self._append_audit([event]))[0]

        return await self._run(op(), write=True)

    async def query_audit(self, query: AuditQuery) -> list[AuditEvent]:
        d = self.dialect
        where: list[tuple[str, Sequence[Any]]] = [
            (clause, (value,))
            for clause, value in (
                ("request_id = ?", query.request_id),
                ("session_id = ?", query.session_id),
                ("thread_id = ?", query.thread_id),
                ("event = ?", query.event),
                ("at >= ?", None if query.since is None else d.ts(query.since)),
                ("at < ?", None if query.until is None else d.ts(query.until)),
                ("id > ?", query.after),
                ("id < ?", query.before),
            )
            if value is not None
        ]
        tail = query.newest and query.limit is not None

        def op() -> Op[list[AuditEvent]]:
            rows = yield self._select("audit", where, "id DESC" if tail else "id", query.limit)
            events = [self._audit(r) for r in rows]
            return events[::-1] if tail else events

        return await self._run(op(), write=False)

    # outbox ------------------------------------------------------------------------------

    async def enqueue_outbox(self, item: OutboxItem) -> OutboxItem:
        return await self._run(self._enqueue(item), write=True)

    async def claim_outbox(
        self, now: datetime, *, lease_seconds: float = 30.0, limit: int = 50,
        notifiers: Sequence[str] | None = None,
    ) -> list[OutboxItem]:
        d = self.dialect
        names = None if notifiers is None else list(notifiers)
        if names == []:
            return []
        only = "" if names is None else f"AND notifier IN ({', '.join('?' * len(names))}) "
        params = (d.ts(utc(now) + timedelta(seconds=lease_seconds)), d.ts(now), d.ts(now),
                  *(names or ()), check_limit(limit))

        due = ("SELECT id FROM {outbox} WHERE NOT done AND due_at <= ? "
               "AND (leased_until IS NULL OR leased_until <= ?) " + only + "ORDER BY due_at, id")

        def peek() -> Op[bool]:
            return bool((yield Stmt(due + " LIMIT 1", params[1:-1])))

        def op() -> Op[list[OutboxItem]]:
            rows = yield Stmt(
                f"UPDATE {{outbox}} SET leased_until = ? WHERE id IN ({due} "
                f"LIMIT ?{d.skip_locked}) RETURNING *",
                params,
            )
            items = [self._outbox(r) for r in rows]
            items.sort(key=lambda it: (it.due_at, it.id or 0))
            return items

        # an idle poll reads, and takes no write lock
        if not await self._run(peek(), write=False):
            return []
        return await self._run(op(), write=True)

    async def complete_outbox(
        self, item_id: int, *, message_ref: Any = None, error: str | None = None,
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        ref = None if message_ref is None else json_value(message_ref, what="message ref")
        failed = ("" if error is None else
                  ", dead = TRUE, attempts = attempts + 1, last_error = ?")
        params = (item_id,) if error is None else (error, item_id)

        def op() -> Op[None]:
            rows = yield Stmt(f"UPDATE {{outbox}} SET done = TRUE, leased_until = NULL{failed} "
                              "WHERE id = ? RETURNING request_id, notifier", params)
            if not rows:
                raise outbox_not_found(item_id)
            if ref is not None:
                yield from self._set_ref(rows[0]["request_id"], rows[0]["notifier"], ref)
            yield from self._effects(audit, ())

        await self._run(op(), write=True)

    async def complete_deliveries(self, delivered: Sequence[Delivered]) -> int:
        finished = normalized_delivered(delivered)
        if not finished:
            return 0

        def op() -> Op[int]:
            return (yield from self._delivered(finished))

        return await self._run(op(), write=True)

    async def retry_outbox(
        self, item_id: int, *, due_at: datetime, error: str, audit: Sequence[AuditEvent] = (),
    ) -> OutboxItem:
        params = (self.dialect.ts(due_at), error, item_id)

        def op() -> Op[OutboxItem]:
            rows = yield Stmt(_RETRY, params)
            if not rows:
                raise outbox_not_found(item_id)
            yield from self._effects(audit, ())
            return self._outbox(rows[0])

        return await self._run(op(), write=True)

    async def list_outbox(self, *, request_id: str | None = None, dead: bool | None = None,
                          limit: int | None = None, after: int | None = None
                          ) -> list[OutboxItem]:
        check_limit(limit)
        conditions: list[str] = []
        params: list[Any] = []
        if request_id is not None:
            conditions.append("request_id = ?")
            params.append(request_id)
        if after is not None:
            conditions.append("id > ?")
            params.append(after)
        if dead is not None:
            conditions.append("dead" if dead else "NOT dead")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        if limit is not None:
            where += " ORDER BY id LIMIT ?"
            params.append(limit)
        else:
            where += " ORDER BY id"

        def op() -> Op[list[OutboxItem]]:
            rows = yield Stmt(f"SELECT * FROM {{outbox}}{where}", tuple(params))
            return [self._outbox(r) for r in rows]

        return await self._run(op(), write=False)
