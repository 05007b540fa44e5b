"""The CLI's store commands run the store's and the deciding part's coroutines inline, on
a SQLite file, without an event loop: the same operations and transactions as on one."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from loopgate_lc._inline import loop_running, run_inline
from loopgate_lc.errors import AlreadyDecided, InvalidDecision
from loopgate_lc.gateway.oneshot import deciding
from loopgate_lc.gateway.validation import Schemas
from loopgate_lc.schema import ApprovalRequest, RequestKind, Status
from loopgate_lc.stores import SQLiteStore
from loopgate_lc.stores.base import RequestRecord
from loopgate_lc.stores.sqlite import DirectSQLiteStore


def test_a_direct_store_decides_without_an_event_loop_as_the_threaded_one_reads_it(
        tmp_path: Path) -> None:
    path = tmp_path / "loopgate.db"
    store = DirectSQLiteStore(path)
    run_inline(store.setup())
    run_inline(store.create_request(RequestRecord(
        id="r1", kind=RequestKind.APPROVAL, payload={"type": "approval", "request_id": "r1"})))

    async def approve() -> RequestRecord:
        async with deciding(DirectSQLiteStore(path)) as desk:
            return await desk.respond("r1", {"type": "approve"}, actor="cli:ann",
                                      channel="cli", approver_id=None)

    assert not loop_running()
    assert run_inline(approve()).status is Status.APPROVED
    with pytest.raises(AlreadyDecided):  # decided once: refused, nothing more written
        run_inline(approve())
    run_inline(store.close())

    async def read() -> tuple[RequestRecord, list[str]]:
        async with SQLiteStore(path) as threaded:
            return (await threaded.get_request("r1"),
                    [e.event for e in await threaded.list_audit(request_id="r1")])

    record, events = asyncio.run(read())
    assert (record.status, record.decided_by, record.channel) == (
        Status.APPROVED, "cli:ann", "cli")
    assert events == ["decided:approved"]  # with its audit event, in one transaction


def test_a_coroutine_that_waits_for_a_loop_is_refused_and_closed() -> None:
    closed = []

    async def sleeps() -> None:
        try:
            await asyncio.sleep(0)
        finally:
            closed.append(True)

    with pytest.raises(RuntimeError, match="waited for an event loop"):
        run_inline(sleeps())
    assert closed == [True]


def test_a_decision_schema_is_compiled_here_without_a_loop_and_on_a_thread_with_one(
) -> None:
    request = ApprovalRequest(type=RequestKind.INPUT, request_id="r1", response_schema=json.dumps(
        {"properties": {"message": {"pattern": "^[a-z]{2}-[a-z]+-[0-9]$"}}}))
    schemas = Schemas()
    answer = {"type": "respond", "message": "eu-west-1"}
    assert run_inline(schemas.check(request, answer))["message"] == "eu-west-1"
    with pytest.raises(InvalidDecision, match="does not match"):
        run_inline(schemas.check(request, {"type": "respond", "message": "Mars"}))
    with pytest.raises(InvalidDecision, match="does not match"):  # on a loop: a thread
        asyncio.run(Schemas().check(request, {"type": "respond", "message": "Mars"}))
