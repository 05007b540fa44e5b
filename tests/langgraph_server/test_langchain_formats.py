"""Pauses in LangChain's own formats, on a real ``langgraph dev``: a ``create_agent``
gated by LangChain's ``HumanInTheLoopMiddleware`` (no loopgate_lc code in the graph),
filed by a bridge that watches with ``include_foreign=True`` and answered through the
gateway. Batched pauses (one ``HITLRequest`` per model turn) resume with
``{"decisions": [...]}``, per-call pauses (``ToolApprovalRequest``) with one decision
each; bad decisions are refused before anything reaches the server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from langgraph_sdk import get_client

from loopgate_lc import DecisionNotAllowed, InvalidDecision, Status
from loopgate_lc.testing.langgraph_dev import LangGraphDev
from tests.langgraph_server.test_bridge import (
    bridged,
    events,
    filed,
    finished,
    start,
    tool_runs,
    until,
)
from tests.support.langgraph_dev import served


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LangGraphDev]:
    with served(tmp_path_factory.mktemp("langgraph-formats")) as srv:
        yield srv


async def assistant_of(server: LangGraphDev, graph_id: str) -> str:
    """A fresh assistant of one served graph: the threads of one test."""
    created = await get_client(url=server.url, api_key=None).assistants.create(
        graph_id=graph_id)
    return str(created["assistant_id"])


def tool_messages(thread: dict[str, object]) -> list[str]:
    values = thread["values"]
    assert isinstance(values, dict)
    return [str(m["content"]) for m in values["messages"] if m["type"] == "tool"]


# --- batched: one HITLRequest per model turn ------------------------------------------------


async def test_a_batched_pause_is_filed_only_by_option(server: LangGraphDev) -> None:
    assistant = await assistant_of(server, "hitl")
    env = f"opt-{uuid.uuid4().hex[:8]}"
    async with bridged(server, assistant) as (gateway, bridge):
        thread_id = await start(server, assistant, f"deploy:{env}")
        client = get_client(url=server.url, api_key=None)
        driver = bridge.drivers["prod"]

        async def paused() -> bool:
            return (await client.threads.get(thread_id))["status"] == "interrupted"

        await until(paused)
        polls = driver.polls

        async def searched_twice() -> bool:
            return driver.polls >= polls + 2

        await until(searched_twice)
        assert await gateway.apending(thread_id=thread_id) == []  # not filed: not ours
    async with bridged(server, assistant, include_foreign=True) as (gateway, _):
        [record] = await filed(gateway, thread_id)
        assert record.payload["action_requests"][0]["args"] == {"environment": env}
        await gateway.arespond(record.id, {"type": "approve"}, actor="ann")
        assert tool_messages(await finished(server, thread_id)) == [f"deployed to {env} x1"]
    assert tool_runs(server, env) == [f"deploy {env} 1"]


async def test_a_batched_pause_takes_edit_and_reject_by_position(server: LangGraphDev) -> None:
    assistant = await assistant_of(server, "hitl")
    a, b = (f"{k}-{uuid.uuid4().hex[:8]}" for k in ("ba", "bb"))
    client = get_client(url=server.url, api_key=None)
    async with bridged(server, assistant, include_foreign=True) as (gateway, _):
        thread_id = await start(server, assistant, f"both:{a},{b}")
        [record] = await filed(gateway, thread_id)
        assert [x["args"]["environment"] for x in record.payload["action_requests"]] == [a, b]
        edit = {"type": "edit", "edited_action": {
            "name": "deploy", "args": {"environment": a, "replicas": 2}}}
        reject = {"type": "reject", "message": f"not {b} today"}
        with pytest.raises(InvalidDecision, match="one per call"):
            await gateway.arespond(record.id, {"decisions": [edit]})
        with pytest.raises(InvalidDecision, match="switch tools"):
            await gateway.arespond(record.id, {"decisions": [
                {"type": "edit", "edited_action": {"name": "ask_human",
                                                   "args": {"question": "?"}}}, reject]})
        assert (await gateway.aget(record.id)).pending
        assert len(await client.runs.list(thread_id)) == 1  # nothing was sent

        await gateway.arespond(record.id, {"decisions": [edit, reject]}, actor="ann")
        thread = await finished(server, thread_id)
        contents = tool_messages(thread)
        assert any(c.endswith(f"deployed to {a} x2") for c in contents)
        assert any(f"not {b} today" in c for c in contents)
        decided = await gateway.aget(record.id)
        assert (decided.status, decided.decided_by) == (Status.REJECTED, "ann")
        assert "resumed" in await events(gateway, record.id)
    assert tool_runs(server, a) == [f"deploy {a} 2"] and tool_runs(server, b) == []


# --- per call: one ToolApprovalRequest per gated call -----------------------------------------


async def test_per_call_pauses_are_decided_separately_and_edits_are_schema_checked(
        server: LangGraphDev) -> None:
    assistant = await assistant_of(server, "hitl_per_call")
    a, b = (f"{k}-{uuid.uuid4().hex[:8]}" for k in ("ca", "cb"))
    client = get_client(url=server.url, api_key=None)
    async with bridged(server, assistant, include_foreign=True) as (gateway, _):
        thread_id = await start(server, assistant, f"both:{a},{b}")
        records = await filed(gateway, thread_id, 2)
        by_env = {r.payload["args"]["environment"]: r for r in records}
        assert by_env[a].payload["allowed_decisions"] == ["approve", "edit", "reject",
                                                          "respond"]
        assert "response_schema" in by_env[a].payload  # LangChain's, kept and checked
        with pytest.raises(InvalidDecision, match="replicas"):
            await gateway.arespond(by_env[a].id, {"type": "edit", "edited_action": {
                "name": "deploy", "args": {"environment": a, "replicas": "many"}}})
        with pytest.raises(DecisionNotAllowed):
            await gateway.arespond(by_env[a].id, {"type": "timeout"})
        assert len(await client.runs.list(thread_id)) == 1  # nothing was sent

        await gateway.arespond(by_env[a].id, {"type": "edit", "edited_action": {
            "name": "deploy", "args": {"environment": a, "replicas": 3}}}, actor="ann")
        await gateway.arespond(by_env[b].id, {"type": "reject", "message": "one is enough"},
                               actor="bob")
        contents = tool_messages(await finished(server, thread_id))
        assert any(c.endswith(f"deployed to {a} x3") for c in contents)
        assert any("one is enough" in c for c in contents)
    assert tool_runs(server, a) == [f"deploy {a} 3"] and tool_runs(server, b) == []


async def test_a_per_call_timeout_resumes_as_a_rejection_langchain_accepts(
        server: LangGraphDev) -> None:
    assistant = await assistant_of(server, "hitl_per_call")
    env = f"clate-{uuid.uuid4().hex[:8]}"
    async with bridged(server, assistant, include_foreign=True,
                       default_timeout=0.5) as (gateway, _):
        thread_id = await start(server, assistant, f"deploy:{env}")
        [record] = await filed(gateway, thread_id)
        [content] = tool_messages(await finished(server, thread_id))
        assert "rejected" in content and "no answer" in content
        decided = await gateway.aget(record.id)
        assert decided.status is Status.TIMEOUT
        seen = await events(gateway, record.id)
        assert "timed_out" in seen and "resumed" in seen
        audit = await gateway.aaudit(thread_id=thread_id)
        assert [e.event for e in audit if e.event in ("resume_failed", "error")] == []
    assert tool_runs(server, env) == []
