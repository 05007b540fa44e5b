"""MCP: a real client session over stdio (``loopgate-lc mcp`` in a subprocess) calling
every tool, answered by a person through a second gateway on the same SQLite file; and
the streamable HTTP endpoint at /mcp."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from loopgate_lc.gateway import Loopgate
from tests.support.live import LiveServer

TOOLS = {"request_human_input", "check_request_status", "list_pending_requests",
         "cancel_request"}


@pytest.fixture
async def person(tmp_path: Path) -> AsyncIterator[tuple[Loopgate, str]]:
    """The other side: a gateway on the MCP server's store, where a person decides."""
    url = f"sqlite:///{tmp_path / 'mcp.db'}"
    gateway = Loopgate(url, poll_interval=0.05)
    await gateway.aopen()
    await gateway.aregister_session("mcp-session", client_id="agent")
    yield gateway, url
    await gateway.aclose()


async def _until(check: Any, what: str) -> Any:
    for _ in range(1000):  # bounded: 10 s at most
        value = await check() if asyncio.iscoroutinefunction(check) else check()
        if value:
            return value
        await asyncio.sleep(0.01)
    raise TimeoutError(what)


def _structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    data: dict[str, Any] = result.structured_content
    return data


async def test_stdio_session_calls_every_tool(person: tuple[Loopgate, str],
                                              tmp_path: Path) -> None:
    gateway, url = person
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "loopgate_lc.cli", "mcp", "--store", url, "--poll-interval", "0.05",
              "--progress-interval", "0.05"],
        cwd=str(tmp_path))
    async with Client(params, read_timeout_seconds=30) as client:
        listed = await client.list_tools()
        assert {tool.name for tool in listed.tools} == TOOLS
        ask = next(t for t in listed.tools if t.name == "request_human_input")
        assert "message" in ask.input_schema["required"]

        progress: list[tuple[float, str | None]] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append((value, message))

        call = asyncio.create_task(client.call_tool(
            "request_human_input",
            {"message": "Deploy v2.1.0 to production?", "session_id": "mcp-session",
             "options": ["Deploy", "Cancel"], "metadata": {"version": "v2.1.0"}},
            progress_callback=on_progress))
        pending = await _until(gateway.apending, "the request to be filed")
        listed_pending = _structured(await client.call_tool("list_pending_requests", {}))
        assert [r["request_id"] for r in listed_pending["requests"]] == [pending[0].id]
        await _until(lambda: progress, "a progress notification")
        assert "waiting for a person" in (progress[0][1] or "")
        await gateway.arespond(pending[0].id, {"type": "respond", "message": "Deploy"},
                               actor="telegram:42 (@ann)", channel="telegram")
        answered = _structured(await asyncio.wait_for(call, 20))
        assert (answered["status"], answered["approved"], answered["response"]) == (
            "answered", True, "Deploy")
        assert answered["responded_by"] == "telegram:42 (@ann)"

        status = _structured(await client.call_tool("check_request_status",
                                                    {"request_id": pending[0].id}))
        assert status == answered

        other = await gateway.asubmit("Rotate the keys?", session_id="mcp-session")
        cancelled = _structured(await client.call_tool(
            "cancel_request", {"request_id": other.id, "reason": "agent gave up"}))
        assert (cancelled["status"], cancelled["approved"], cancelled["response"]) == (
            "cancelled", False, "agent gave up")
        assert (await gateway.aget(other.id)).decided_by == "mcp"

        again = await client.call_tool("cancel_request", {"request_id": other.id})
        assert again.is_error
        assert "already cancelled" in again.content[0].text
        unknown = await client.call_tool("check_request_status", {"request_id": "nope"})
        assert unknown.is_error
        assert "no approval request with id 'nope'" in unknown.content[0].text
        ghost = await client.call_tool("request_human_input",
                                       {"message": "hi", "session_id": "ghost"})
        assert ghost.is_error


async def test_request_human_input_times_out_not_approved(person: tuple[Loopgate, str],
                                                          tmp_path: Path) -> None:
    _, url = person
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "loopgate_lc.cli", "mcp", "--store", url, "--poll-interval", "0.05"],
        cwd=str(tmp_path))
    async with Client(params, read_timeout_seconds=30) as client:
        result = _structured(await client.call_tool(
            "request_human_input", {"message": "Anyone there?", "timeout_seconds": 0.2}))
    assert (result["status"], result["completed"], result["approved"]) == (
        "timeout", True, False)


async def test_streamable_http_endpoint(live: LiveServer, shared_gateway: Loopgate) -> None:
    record = await shared_gateway.asubmit("Over HTTP?")
    async with Client(f"{live.url}/mcp", read_timeout_seconds=30) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS
        listed = _structured(await client.call_tool("list_pending_requests", {}))
        assert record.id in [r["request_id"] for r in listed["requests"]]
        cancelled = _structured(await client.call_tool("cancel_request",
                                                       {"request_id": record.id}))
    assert cancelled["status"] == "cancelled"


def test_building_the_server_leaves_logging_alone(gateway: Loopgate) -> None:
    import logging

    from loopgate_lc.server.mcp import create_mcp_server

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    root.handlers.clear()  # as in an application that has not configured logging yet
    root.setLevel(logging.ERROR)
    try:
        create_mcp_server(gateway)
        assert (root.handlers, root.level) == ([], logging.ERROR)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


@pytest.mark.parametrize("kind", ["feedback", "annotation"])
async def test_stdio_mcp_reaches_telegram_configured_in_the_environment(
        person: tuple[Loopgate, str], tmp_path: Path, kind: str) -> None:
    from loopgate_lc.fake_telegram import FakeBotAPI

    gateway, url = person
    with FakeBotAPI() as fake:
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "loopgate_lc.cli", "mcp", "--store", url, "--poll-interval", "0.05"],
            env={**os.environ, "TELEGRAM_BOT_TOKEN": fake.token,
                 "TELEGRAM_API_BASE_URL": fake.base_url, "TELEGRAM_DEFAULT_CHAT_ID": "42"},
            cwd=str(tmp_path))
        async with Client(params, read_timeout_seconds=30) as client:
            call = asyncio.create_task(client.call_tool(
                "request_human_input", {"message": "How did the rollout go?",
                                        "request_type": kind}))
            [message] = await _until(lambda: fake.messages(42), "the Telegram message")
            assert "How did the rollout go?" in message["text"]
            [pending] = await gateway.apending()
            await gateway.arespond(pending.id, {"type": "respond", "message": "smooth"},
                                   actor="ann")
            answered = _structured(await asyncio.wait_for(call, 20))
    assert (answered["request_type"], answered["status"], answered["approved"],
            answered["response"]) == (kind, "answered", True, "smooth")
