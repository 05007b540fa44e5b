"""Databases written by every earlier schema version upgrade in place, on SQLite and
PostgreSQL, and keep working: old rows read back, and every write path runs on them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from loopgate_lc.errors import SessionExists
from loopgate_lc.schema import RequestKind, Status
from loopgate_lc.stores import SQLiteStore, Store
from loopgate_lc.stores.base import (
    AuditEvent,
    GrantRecord,
    OutboxItem,
    RequestRecord,
    SessionRecord,
)
from loopgate_lc.testing.stores import at, ballot
from tests.stores import legacy_schema

VERSIONS = [1, 2, 3, 4, 5, 6, 7]  # every version before the current one


def ts(seconds: float) -> str:
    """A time as the SQLite store has always written it: fixed-width UTC text."""
    return at(seconds).isoformat(timespec="microseconds")

OLD_SCHEMA_PAYLOAD = json.dumps({"message": "old", "response_schema": '{"type": "object"}'})
#: Rows as the oldest schema (version 1) has them; later versions only add columns.
ROWS = [
    ("INSERT INTO {sessions} (session_id, {seq_column}client_id, approvers, active, "
     "created_at, metadata) VALUES (?, {seq_value}?, ?, {true}, ?, ?)",
     ("old-session", "client", '["7"]', ts(0), "{}")),
    ("INSERT INTO {requests} (id, kind, payload, status, created_at) "
     "VALUES (?, ?, ?, 'pending', ?)",
     ("old-pending", RequestKind.APPROVAL.value, '{"message": "old"}', ts(0))),
    ("INSERT INTO {requests} (id, kind, thread_id, interrupt_id, graph, status, decision, "
     "created_at, decided_at, resumed_at) VALUES (?, ?, 't', 'i', 'g', 'approved', ?, ?, ?, ?)",
     ("old-resumed", RequestKind.APPROVAL.value, '{"type": "approve"}', ts(0),
      ts(1), ts(2))),
    # a pause's response schema, kept in the payload before version 8
    ("INSERT INTO {requests} (id, kind, payload, status, created_at) "
     "VALUES (?, ?, ?, 'pending', ?)",
     ("old-schema", RequestKind.TOOL_APPROVAL.value, OLD_SCHEMA_PAYLOAD, ts(0))),
    ("INSERT INTO {audit} (at, event, request_id, details) VALUES (?, 'requested', ?, '{{}}')",
     (ts(0), "old-pending")),
    ("INSERT INTO {outbox} (request_id, notifier, kind, due_at) VALUES (?, 'log', 'notify', ?)",
     ("old-pending", ts(0))),
]


async def check_upgraded(store: Store, version: int) -> None:
    """What every upgraded database must do."""
    await store.setup()
    await store.setup()  # idempotent once upgraded
    assert await store.schema_version() == store.SCHEMA_VERSION  # type: ignore[attr-defined]
    old = await store.get_request("old-pending")
    assert old.pending and old.payload == {"message": "old"}
    assert (await store.get_request("old-schema")).payload == json.loads(OLD_SCHEMA_PAYLOAD)
    resumed = await store.get_request("old-resumed")
    unresumed = await store.list_requests(unresumed=True, stale_before=at(3600))
    if version < 3:  # resumes claimed before version 3 count as done
        assert resumed.resume_done_at == resumed.resumed_at
        assert unresumed == []
    else:  # a claim never completed: a stale resume to take over
        assert resumed.resume_done_at is None
        assert [r.id for r in unresumed] == ["old-resumed"]
    # every write path works on the old tables
    decided = await store.resolve(
        "old-pending", status=Status.APPROVED, decision={"type": "approve"}, decided_by="ana",
        channel="api", decided_at=at(5),
        audit=[AuditEvent(at=at(5), event="decided:approved", request_id="old-pending")],
        outbox=[OutboxItem(request_id="old-pending", notifier="log", kind="resolved",
                           due_at=at(5))])
    assert decided.status is Status.APPROVED
    assert [e.event for e in await store.list_audit(request_id="old-pending")] == [
        "requested", "decided:approved"]
    items = await store.list_outbox(request_id="old-pending")
    assert [(i.kind, i.done, i.dead) for i in items] == [
        ("notify", False, False), ("resolved", False, False)]
    assert items[0].created_at == items[0].due_at == at(0)  # owed before it was recorded
    await store.complete_outbox(items[0].id or 0, message_ref={"chat": 1})
    assert (await store.get_request("old-pending")).message_refs == {"log": {"chat": 1}}
    _, created = await store.create_request(RequestRecord(
        id="new", kind=RequestKind.APPROVAL, thread_id="t", interrupt_id="i2", created_at=at(6)))
    assert created
    assert [r.id for r in await store.list_requests(after="old-schema")] == ["new"]
    # version 8: a response schema kept once, named by its requests
    paused = {"message": "new", "response_schema": '{"type": "object", "title": "v8"}'}
    await store.create_request(RequestRecord(
        id="new-schema", kind=RequestKind.TOOL_APPROVAL, payload=paused, created_at=at(6)))
    assert (await store.get_request("new-schema")).payload == paused
    with pytest.raises(SessionExists):
        await store.create_session(SessionRecord(session_id="old-session"))
    await store.deactivate_session("old-session")
    again = await store.create_session(SessionRecord(session_id="old-session", created_at=at(7)))
    assert again.active
    await store.create_session(SessionRecord(session_id="second", created_at=at(7)))
    assert [s.session_id for s in await store.list_sessions()] == ["old-session", "second"]
    await store.put_callback("k", "new", {"type": "approve"})
    assert await store.get_callback("k") == ("new", {"type": "approve"})
    assert (await store.get_request("old-resumed")).votes == []  # version 6 added votes
    voted = await store.vote(ballot("new", "ana", "approve", approvals_needed=2))
    assert voted.pending and [v.voter for v in voted.votes] == ["ana"]
    # version 7: remembered permissions, written with the decision that makes them
    grant = GrantRecord(id="g1", tool="deploy", args={"env": {"equals": "staging"}},
                        scope="session", session_id="old-session", request_id="new",
                        created_by="ana", created_at=at(8), expires_at=at(3600))
    await store.resolve("new", status=Status.APPROVED, decision={"type": "approve"},
                        decided_by="ana", channel="api", decided_at=at(8), grants=[grant])
    assert await store.list_grants(tool="deploy", live_at=at(9)) == [grant]
    revoked, changed = await store.revoke_grant("g1", revoked_by="bob", at=at(10))
    assert changed and revoked.revoked_by == "bob"
    assert await store.list_grants(live_at=at(11)) == []


@pytest.mark.parametrize("version", VERSIONS)
async def test_sqlite_upgrades_in_place_from(version: int, tmp_path: Path) -> None:
    path = tmp_path / f"v{version}.db"
    names = {"sessions": "loopgate_sessions", "requests": "loopgate_requests",
             "audit": "loopgate_audit", "outbox": "loopgate_outbox", "true": "1",
             "seq_column": "seq, ", "seq_value": "1, "}
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE loopgate_schema_version ("
                     "version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
        for number, statements in legacy_schema.SQLITE[:version]:
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO loopgate_schema_version VALUES (?, ?)",
                         (number, ts(0)))
        for text, params in ROWS:
            conn.execute(text.format(**names), params)
    store = SQLiteStore(path)
    try:
        await check_upgraded(store, version)
    finally:
        await store.close()


@pytest.fixture
async def postgres_at(postgres_dsn: str, pg_schema: str
                      ) -> AsyncIterator[Callable[[int], Any]]:
    psycopg = pytest.importorskip("psycopg")
    from loopgate_lc.stores.postgres import PostgresStore

    stores: list[Store] = []

    async def build(version: int) -> Store:
        q = {name: f'"{pg_schema}"."loopgate_{name}"'
             for name in ("sessions", "requests", "callbacks", "audit", "outbox",
                          "requests_unresumed", "grants")}
        async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
            await conn.execute(f'CREATE SCHEMA "{pg_schema}"')
            await conn.execute(f'CREATE TABLE "{pg_schema}".loopgate_schema_version ('
                               "version INTEGER PRIMARY KEY, "
                               "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            for number, statements in legacy_schema.POSTGRES[:version]:
                for statement in statements:
                    await conn.execute(statement.format(**q))
                await conn.execute(f'INSERT INTO "{pg_schema}".loopgate_schema_version '
                                   "(version) VALUES (%s)", (number,))
            for text, params in ROWS:
                sql = text.format(**q, true="TRUE", seq_column="", seq_value="")
                await conn.execute(sql.replace("?", "%s"), params)
        store = PostgresStore(postgres_dsn, schema=pg_schema, max_size=2)
        stores.append(store)
        return store

    yield build
    for store in stores:
        await store.close()


@pytest.mark.parametrize("version", VERSIONS)
async def test_postgres_upgrades_in_place_from(version: int, postgres_at: Any) -> None:
    await check_upgraded(await postgres_at(version), version)
