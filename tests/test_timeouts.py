"""Timeouts that fire: injected clock, restart re-arms, escalation, the model is told."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from loopgate_lc import ApproverNotAllowed, ConfigurationError, Status, guard
from loopgate_lc.gateway import Escalation, Loopgate
from loopgate_lc.testing import RecordingNotifier, ScriptedChatModel, ai, call
from tests.conftest import FakeClock


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    """Poll (bounded) until ``predicate()`` is true."""
    for _ in range(int(timeout / 0.02)):
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_a_deadline_resolves_as_timeout_never_as_a_human_rejection(clock: FakeClock
                                                                        ) -> None:
    fired: list[str] = []
    from loopgate_lc.hooks import Hooks

    async with Loopgate(store="memory://", clock=clock, default_timeout=300, timers=False,
                        hooks=Hooks(on_timeout=lambda r: fired.append(r.id),
                                    on_reject=lambda r: fired.append("reject"))) as gate:
        record = await gate.asubmit("deploy?")
        assert record.expires_at == clock.now.replace() + (record.expires_at - clock.now)
        assert await gate.aexpire_due() == []  # not yet
        clock.advance(299.9)
        assert await gate.aexpire_due() == []
        clock.advance(0.2)
        (expired,) = await gate.aexpire_due()
        assert expired.status is Status.TIMEOUT
        assert expired.decided_by is None and expired.channel == "timer"
        assert expired.decision is not None
        assert expired.decision["type"] == "timeout"
        assert expired.decision["outcome"] == "reject"
        assert expired.decided_at == clock.now
        assert fired == [record.id]  # on_timeout once, on_reject never
        events = [e.event for e in await gate.aaudit(request_id=record.id)]
        assert events == ["requested", "timed_out"]


async def test_the_timer_fires_by_itself_within_a_second_of_expiry(clock: FakeClock) -> None:
    async with Loopgate(store="memory://", clock=clock) as gate:
        record = await gate.asubmit("deploy?", timeout=60)
        clock.advance(61)  # no call to expire_due: the background timer must see it

        async def timed_out() -> bool:
            return (await gate.aget(record.id)).status is Status.TIMEOUT

        await wait_for(timed_out)


async def test_a_person_answering_first_wins_over_the_timer(clock: FakeClock) -> None:
    async with Loopgate(store="memory://", clock=clock, timers=False) as gate:
        record = await gate.asubmit("deploy?", timeout=10)
        await gate.arespond(record.id, {"type": "approve"}, actor="ana")
        clock.advance(20)
        assert await gate.aexpire_due() == []
        assert (await gate.aget(record.id)).status is Status.APPROVED


async def test_a_restart_re_arms_timers(tmp_path: Any, clock: FakeClock) -> None:
    url = f"sqlite:///{tmp_path / 'gate.db'}"
    async with Loopgate(store=url, clock=clock) as first:
        record = await first.asubmit("deploy?", timeout=30)
    clock.advance(31)  # expired while nothing ran
    async with Loopgate(store=url, clock=clock) as second:
        async def timed_out() -> bool:
            return (await second.aget(record.id)).status is Status.TIMEOUT

        await wait_for(timed_out)


async def test_on_timeout_approve(clock: FakeClock) -> None:
    async with Loopgate(store="memory://", clock=clock, on_timeout="approve",
                        timers=False) as gate:
        record = await gate.asubmit("rotate logs?", timeout=5)
        clock.advance(6)
        (expired,) = await gate.aexpire_due()
        assert expired.status is Status.TIMEOUT  # still recorded as a timeout
        assert expired.decision is not None and expired.decision["outcome"] == "approve"
        from loopgate_lc.decisions import response_of

        assert response_of(expired).approved
        assert record.id == expired.id


async def test_escalation_notifies_the_next_approver_then_rejects(clock: FakeClock) -> None:
    primary, pager = RecordingNotifier("primary"), RecordingNotifier("pager")
    async with Loopgate(
        store="memory://", clock=clock, notifiers=[primary, pager], on_timeout="escalate",
        escalation=[Escalation(timeout=600, notifiers=("pager",), approvers=("boss",))],
        timers=False,
    ) as gate:
        await gate.aregister_session("ops", "bot", telegram_id=1)
        record = await gate.asubmit("restart prod db?", session_id="ops", timeout=60)
        await wait_for(lambda: len(pager.notified) == 1)
        with pytest.raises(ApproverNotAllowed):
            await gate.arespond(record.id, {"type": "approve"}, approver_id="boss")
        clock.advance(61)
        (escalated,) = await gate.aexpire_due()
        assert (escalated.status, escalated.escalation_level) == (Status.PENDING, 1)
        await wait_for(lambda: len(pager.notified) == 2)  # the pager heard about it again
        assert len(primary.notified) == 1
        clock.advance(601)
        (final,) = await gate.aexpire_due()
        assert final.status is Status.TIMEOUT
        assert final.decision is not None and final.decision["outcome"] == "reject"
        events = [e.event for e in await gate.aaudit(request_id=record.id)]
        assert events.count("escalated") == 1 and events[-1] != "escalated"

        second = await gate.asubmit("again?", session_id="ops", timeout=60)
        clock.advance(61)
        await gate.aexpire_due()
        # once escalated, the escalation's approvers may decide
        decided = await gate.arespond(second.id, {"type": "approve"}, approver_id="boss")
        assert decided.status is Status.APPROVED


def test_escalate_needs_steps_and_timeouts_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="Escalation step"):
        Loopgate(store="memory://", on_timeout="escalate")
    with pytest.raises(ConfigurationError, match="positive"):
        Loopgate(store="memory://", default_timeout=0)


async def test_the_model_is_told_the_request_timed_out(clock: FakeClock, config: dict[str, Any]
                                                      ) -> None:
    ran: list[str] = []

    @tool
    def deploy(environment: str) -> str:
        """Deploy."""
        ran.append(environment)
        return "deployed"

    agent = create_agent(
        ScriptedChatModel(script=[ai("", call("deploy", environment="prod")), "ok"]),
        tools=[guard(deploy, timeout=120)], checkpointer=InMemorySaver())
    async with Loopgate(store="memory://", clock=clock) as gate:
        run = asyncio.ensure_future(gate.arun(agent, {"messages": [("user", "ship")]}, config))
        await wait_for(lambda: gate.apending())
        (record,) = await gate.apending()
        # the pause stamped its deadline with the real clock (the graph has no other), so
        # move the gateway's clock past that deadline, not 121 s past the test's start
        assert record.expires_at is not None
        clock.now = record.expires_at + timedelta(seconds=1)
        final = await asyncio.wait_for(run, 10)
    (message,) = [m for m in final["messages"] if isinstance(m, ToolMessage)]
    assert message.status == "error"
    assert "timed out before anyone answered" in message.content
    assert ran == []
