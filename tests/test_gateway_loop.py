"""Where the gateway's work runs: the loop of whoever opens it asynchronously (an ASGI
server, a notebook, ``async with``), or a private loop thread when opened from sync code.

Each test records the running loop and thread where the gateway's own work happens (a
hook fires inside the deciding part, on the gateway's loop) and compares it with the
caller's."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
import pytest

from loopgate_lc.background import BackgroundServer
from loopgate_lc.gateway import Loopgate
from loopgate_lc.hooks import Hooks
from loopgate_lc.server import create_app
from loopgate_lc.stores.base import RequestRecord

Where = tuple[asyncio.AbstractEventLoop, threading.Thread]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def _here() -> Where:
    return asyncio.get_running_loop(), threading.current_thread()


def _recording_gateway(store: str = "memory://") -> tuple[Loopgate, list[Where]]:
    """A gateway whose approvals note the loop and thread the deciding part ran on."""
    seen: list[Where] = []

    async def on_approve(record: RequestRecord | None, auto: bool, policy: str | None) -> None:
        seen.append(_here())

    return Loopgate(store, hooks=Hooks(on_approve=on_approve)), seen


def test_the_servers_handlers_and_the_gateways_work_share_one_loop() -> None:
    gate, decided = _recording_gateway()
    inner = create_app(gate, mcp=False)
    handled: list[Where] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handled.append(_here())
        await inner(scope, receive, send)

    with BackgroundServer(app) as live:
        with httpx.Client(base_url=live.url, timeout=30) as client:
            assert client.post("/hitl/register", json={"session_id": "s1"}).status_code == 200
            filed = client.post("/hitl/request", json={"session_id": "s1",
                                                       "message": "Ship it?"})
            assert filed.status_code == 200, filed.text
            answer = client.post("/hitl/respond", json={
                "request_id": filed.json()["request_id"], "decision": {"type": "approve"}})
            assert answer.status_code == 200, answer.text
        assert decided, "the approval hook never ran"
        # the gateway's work ran where the handler did: no hop to another thread
        assert decided[-1] == handled[-1]
        assert not gate._portal.private
    # the app's lifespan opened the gateway on the server's loop, so it closed it there
    assert not gate.is_open


async def test_async_calls_on_the_home_loop_run_there_and_sync_callers_reach_it() -> None:
    gate, decided = _recording_gateway()
    async with gate:
        record = await gate.asubmit("Ship it?")
        await gate.arespond(record.id, {"type": "approve"}, actor="ana")
        assert decided[-1] == _here()

        # a sync caller on another thread submits to the home loop and blocks
        other = await asyncio.to_thread(gate.submit, "And this?")
        done = await asyncio.to_thread(gate.respond, other.id, {"type": "approve"},
                                       actor="bo")
        assert done.decided_by == "bo"
        assert decided[-1] == _here()
        assert not gate._portal.private


async def test_a_blocking_call_on_the_home_loop_names_its_async_twin() -> None:
    async with Loopgate(store="memory://") as gate:
        with pytest.raises(RuntimeError, match="async twin"):
            gate.pending()
        assert await gate.apending() == []


def test_a_gateway_opened_from_sync_code_keeps_its_private_thread() -> None:
    gate, decided = _recording_gateway()
    with gate:
        async def decide() -> Where:
            record = await gate.asubmit("Ship it?")
            await gate.arespond(record.id, {"type": "approve"}, actor="ana")
            return _here()

        caller = asyncio.run(decide())
        assert gate._portal.private
        loop, thread = decided[-1]
        assert loop is not caller[0]
        assert thread is not caller[1]
        assert thread is not threading.main_thread()


def test_a_gateway_left_open_on_a_loop_that_ended_opens_again(tmp_path: Any) -> None:
    gate, decided = _recording_gateway(f"sqlite:///{tmp_path / 'gate.db'}")

    async def file() -> str:
        await gate.aopen()  # and never closed: asyncio.run ends its loop
        return (await gate.asubmit("Ship it?")).id

    request_id = asyncio.run(file())
    try:
        # the next caller (sync, here) opens it again, on a private thread
        assert [r.id for r in gate.pending()] == [request_id]
        gate.respond(request_id, {"type": "approve"}, actor="ana")
        assert gate._portal.private
        assert decided[-1][1] is not threading.main_thread()
    finally:
        gate.close()


def test_a_gateway_closes_and_opens_again_on_another_loop() -> None:
    gate, decided = _recording_gateway()

    async def round_trip() -> Where:
        async with gate:
            record = await gate.asubmit("Ship it?")
            await gate.arespond(record.id, {"type": "approve"}, actor="ana")
        return _here()

    first = asyncio.run(round_trip())
    assert decided[-1] == first
    second = asyncio.run(round_trip())
    assert decided[-1] == second
    assert second[0] is not first[0]
