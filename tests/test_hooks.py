"""Hooks fire exactly once per event, in order; a raising hook loses nothing."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from langchain.agents import create_agent
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from loopgate_lc import ApprovalPolicy, RiskLevel, Status, guard
from loopgate_lc.gateway import Loopgate
from loopgate_lc.hooks import Hooks, Veto, compose_hooks
from loopgate_lc.testing import RecordingNotifier, ScriptedApprover, ScriptedChatModel, ai, call
from tests.conftest import FakeClock
from tests.test_timeouts import wait_for


def counting(counts: Counter[str], tag: str = "") -> Hooks:
    def hit(name: str) -> Any:
        def hook(*args: Any) -> None:
            counts[f"{tag}{name}"] += 1
        return hook

    return Hooks(on_request=hit("request"), on_filed=hit("filed"), on_notified=hit("notified"),
                 on_approve=hit("approve"), on_reject=hit("reject"), on_timeout=hit("timeout"),
                 on_cancel=hit("cancel"), on_error=hit("error"))


async def test_each_hook_fires_exactly_once_per_event(clock: FakeClock) -> None:
    counts: Counter[str] = Counter()
    notifier = RecordingNotifier()
    async with Loopgate(store="memory://", notifiers=[notifier], hooks=counting(counts),
                        clock=clock, timers=False) as gate:
        a = await gate.asubmit("a?")
        b = await gate.asubmit("b?")
        c = await gate.asubmit("c?")
        d = await gate.asubmit("d?", timeout=5)
        await wait_for(lambda: len(notifier.notified) == 4)
        await gate.arespond(a.id, {"type": "approve"})
        await gate.arespond(b.id, {"type": "reject"})
        await gate.acancel(c.id)
        clock.advance(6)
        await gate.aexpire_due()
        await wait_for(lambda: len(notifier.resolved) == 4)
        assert d.id in {r.id for r in notifier.resolved}
    assert counts == Counter(request=4, filed=4, notified=4, approve=1, reject=1, cancel=1,
                             timeout=1)


async def test_on_request_may_veto_with_a_reason() -> None:
    def no_fridays(record: Any) -> Veto | None:
        return Veto("change freeze") if "prod" in record.payload["message"] else None

    notifier = RecordingNotifier()
    async with Loopgate(store="memory://", notifiers=[notifier],
                        hooks=Hooks(on_request=no_fridays)) as gate:
        vetoed = await gate.asubmit("deploy prod?")
        assert vetoed.status is Status.REJECTED
        assert vetoed.decision is not None and vetoed.decision["message"] == "change freeze"
        assert vetoed.decided_by == "hook:on_request"
        fine = await gate.asubmit("deploy staging?")
        assert fine.pending
        await wait_for(lambda: [r.id for r in notifier.notified] == [fine.id])
        events = [e.event for e in await gate.aaudit(request_id=vetoed.id)]
        assert events == ["requested", "vetoed"]


async def test_on_filed_runs_after_the_commit_once_per_request(config: dict[str, Any]) -> None:
    from tests.test_gateway_graphs import agent

    seen: list[tuple[str, str]] = []
    gate = Loopgate(store="memory://", notifiers=[ScriptedApprover(
        lambda r: {"type": "approve"} if r.payload.get("tool_call_id") != "c-eu" else None)],
        hooks=compose_hooks(
            Hooks(on_request=lambda r: Veto("freeze") if "prod" in r.payload["message"]
                  else None),
            Hooks(on_filed=lambda r: filed(r), on_reject=lambda r: seen.append(("reject", r.id)))))

    async def filed(record: Any) -> None:
        stored = await gate.aget(record.id)  # committed before the hook runs
        seen.append((f"filed {stored.status.value}", record.id))

    async with gate:
        vetoed = await gate.asubmit("deploy prod?")
        # two pauses at once; the approved one's resume re-runs the node, which reports the
        # other pause again: it is found filed, not filed twice
        run = asyncio.ensure_future(gate.arun(
            agent(Counter(), "us", "eu"), {"messages": [("user", "ship")]}, config))
        async def us_resumed() -> bool:
            for event in await gate.aaudit():
                if event.event == "requested" and event.request_id != vetoed.id:
                    record = await gate.aget(event.request_id)
                    if record.payload["tool_call_id"] == "c-us":
                        return record.resume_done_at is not None
            return False

        await wait_for(us_resumed)
        (eu,) = await gate.apending()
        await gate.arespond(eu.id, {"type": "approve"}, actor="ana")
        await asyncio.wait_for(run, 10)
        requested = [e for e in await gate.aaudit() if e.event == "requested"]
    assert seen[:2] == [("filed rejected", vetoed.id), ("reject", vetoed.id)]
    assert sorted(seen[2:]) == sorted(("filed pending", e.request_id) for e in requested
                                      if e.request_id != vetoed.id)
    assert len(seen) == 4


async def test_a_hook_that_raises_is_reported_and_loses_no_decision() -> None:
    errors: list[tuple[str, dict[str, Any]]] = []
    after: list[str] = []

    def broken(record: Any, auto: bool, policy: str | None) -> None:
        raise RuntimeError("audit sink down")

    hooks = compose_hooks(
        Hooks(on_approve=lambda *a: after.append("first")),
        Hooks(on_approve=broken, on_error=lambda e, ctx: errors.append((str(e), ctx))),
        Hooks(on_approve=lambda *a: after.append("third")),
    )
    async with Loopgate(store="memory://", hooks=hooks) as gate:
        record = await gate.asubmit("ok?")
        decided = await gate.arespond(record.id, {"type": "approve"}, actor="ana")
        assert decided.status is Status.APPROVED
        assert (await gate.aget(record.id)).status is Status.APPROVED
        assert after == ["first", "third"]  # order kept, the failure skipped only itself
        assert errors == [("audit sink down", {"hook": "on_approve"})]
        assert any(e.event == "error" for e in await gate.aaudit())


async def test_async_hooks_and_auto_approvals_through_a_run(config: dict[str, Any]) -> None:
    approvals: list[tuple[bool, str | None]] = []

    async def on_approve(record: Any, auto: bool, policy: str | None) -> None:
        await asyncio.sleep(0)
        approvals.append((auto, policy))

    @tool
    def status() -> str:
        """Status."""
        return "green"

    @tool
    def deploy(environment: str) -> str:
        """Deploy."""
        return "done"

    async with Loopgate(store="memory://", notifiers=[ScriptedApprover()],
                        policies=[ApprovalPolicy("reads", "status", 0, RiskLevel.READ_ONLY),
                                  ApprovalPolicy("deploys", "deploy", require_explicit=True)],
                        hooks=Hooks(on_approve=on_approve)) as gate:
        agent = create_agent(
            ScriptedChatModel(script=[ai("", call("status"), call("deploy", environment="p")),
                                      "ok"]),
            tools=[guard(status, policies=gate, risk="read_only"), guard(deploy, policies=gate)],
            checkpointer=InMemorySaver())
        await gate.arun(agent, {"messages": [("user", "go")]}, config)
        await wait_for(lambda: len(approvals) == 2)
    assert sorted(approvals, key=str) == [(False, "deploys"), (True, "reads")]
