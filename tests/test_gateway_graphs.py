"""The gateway drives graphs: file on interrupt, notify, resume on decision, exactly once."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import START, StateGraph
from langgraph.types import Command, interrupt

from loopgate_lc import (
    AlreadyDecided,
    ApprovalPolicy,
    ConfigurationError,
    RiskLevel,
    Status,
    ThreadBusy,
    guard,
)
from loopgate_lc.gateway import Loopgate
from loopgate_lc.stores import RequestRecord, SQLiteStore
from loopgate_lc.testing import RecordingNotifier, ScriptedApprover, ScriptedChatModel, ai, call
from tests.conftest import FakeClock
from tests.test_timeouts import wait_for

POLICIES = [ApprovalPolicy("reads", "status", 0, RiskLevel.READ_ONLY)]


def deploy_tools(runs: Counter[str]) -> list[BaseTool]:
    @tool
    def status() -> str:
        """Status of the fleet."""
        runs["status"] += 1
        return "green"

    @tool
    def deploy(environment: str) -> str:
        """Deploy the build."""
        runs[environment] += 1
        return f"deployed to {environment}"

    return [guard(status, policies=POLICIES, risk="read_only"), guard(deploy, policies=POLICIES)]


def agent(runs: Counter[str], *envs: str, checkpointer: Any = None) -> Any:
    calls = [call("deploy", f"c-{env}", environment=env) for env in envs]
    return create_agent(
        ScriptedChatModel(script=[ai("", call("status"), *calls), "all done"]),
        tools=deploy_tools(runs), checkpointer=checkpointer or InMemorySaver(),
    )


def approve_in_background(gate: Loopgate, notifier: RecordingNotifier, decide: Any,
                          count: int) -> threading.Thread:
    """A person answering from another thread, as the blocking API's user would see: each
    request once the notifier has delivered it to them."""
    def person() -> None:
        answered: set[str] = set()
        for _ in range(3000):
            delivered = {r.id for r in notifier.notified}
            for record in gate.pending():
                if record.id in delivered and record.id not in answered:
                    gate.respond(record.id, decide(record), actor="ana", channel="test")
                    answered.add(record.id)
            if len(answered) >= count:
                return
            time.sleep(0.01)

    thread = threading.Thread(target=person, daemon=True)
    thread.start()
    return thread


def test_run_drives_a_graph_through_its_approvals(config: dict[str, Any]) -> None:
    runs: Counter[str] = Counter()
    notifier = RecordingNotifier()
    with Loopgate(store="memory://", notifiers=[notifier]) as gate:
        decide = {"c-prod": {"type": "approve"}, "c-eu": {"type": "reject", "message": "freeze"}}
        person = approve_in_background(
            gate, notifier, lambda r: decide[r.payload["tool_call_id"]], count=2)
        final = gate.run(agent(runs, "prod", "eu"), {"messages": [("user", "ship")]}, config)
        person.join(5)
        assert final["messages"][-1].content == "all done"
        assert runs == Counter(status=1, prod=1)
        tools = {m.tool_call_id: m for m in final["messages"] if isinstance(m, ToolMessage)}
        assert tools["c-eu"].status == "error" and "freeze" in tools["c-eu"].content
        # each request was filed once, although the sibling's node re-ran on resume
        trail = [e.event for e in gate.audit(thread_id=config["configurable"]["thread_id"])]
        assert trail.count("requested") == 2 and trail.count("auto_approved") == 1
        # both resumes reached the checkpoint, so no later gateway takes them over
        assert all(gate.get(r.id).resume_done_at is not None for r in notifier.notified)
    # closed: every delivery has finished, so the count below is final
    assert Counter(r.payload["tool_call_id"] for r in notifier.notified) == Counter(
        {"c-prod": 1, "c-eu": 1})


async def test_astream_shows_progress_and_approvals(config: dict[str, Any]) -> None:
    runs: Counter[str] = Counter()
    async with Loopgate(store="memory://", notifiers=[ScriptedApprover()]) as gate:
        kinds = [kind async for kind, _ in gate.astream(
            agent(runs, "prod"), {"messages": [("user", "ship")]}, config)]
    assert kinds.count("requested") == 1 and kinds.count("decided") == 1
    assert kinds.index("requested") < kinds.index("decided")
    assert kinds.count("chunk") >= 3
    assert runs["prod"] == 1


def test_stream_sync_twin(config: dict[str, Any]) -> None:
    runs: Counter[str] = Counter()
    with Loopgate(store="memory://", notifiers=[ScriptedApprover()]) as gate:
        items = list(gate.stream(agent(runs, "prod"), {"messages": [("user", "go")]}, config,
                                 stream_mode="values"))
    assert [k for k, _ in items if k != "chunk"] == ["requested", "decided"]
    assert runs["prod"] == 1


async def test_background_mode_resumes_when_a_decision_arrives(config: dict[str, Any]) -> None:
    runs: Counter[str] = Counter()
    notifier = RecordingNotifier()
    async with Loopgate(store="memory://", notifiers=[notifier]) as gate:
        graph = agent(runs, "prod")
        gate.register_graph("deployer", graph)
        thread_id = await gate.astart("deployer", {"messages": [("user", "ship")]}, config)
        await wait_for(lambda: len(notifier.notified) == 1)
        (record,) = await gate.apending(thread_id=thread_id)
        assert (record.graph, record.thread_id) == ("deployer", thread_id)
        await gate.arespond(record.id, {"type": "approve"}, actor="ana")
        await wait_for(lambda: not graph.get_state(config).next)
        assert runs["prod"] == 1
        assert graph.get_state(config).values["messages"][-1].content == "all done"

        async def trail() -> list[str]:
            return [e.event for e in await gate.aaudit(thread_id=thread_id)]

        # the run's end is audited just after its last checkpoint is saved
        await wait_for(lambda: _ends_with(trail(), "finished"))
        assert (await trail())[-3:] == ["decided:approved", "resumed", "finished"]


def test_a_graph_without_a_checkpointer_is_refused() -> None:
    runs: Counter[str] = Counter()
    graph = create_agent(ScriptedChatModel(script=["hi"]), tools=deploy_tools(runs))
    gate = Loopgate(store="memory://")
    with pytest.raises(ConfigurationError, match="has no checkpointer"):
        gate.register_graph("x", graph)
    with pytest.raises(ConfigurationError, match="no checkpointer"):
        gate.run(graph, {"messages": [("user", "hi")]})
    gate.close()


async def test_duplicate_and_concurrent_answers_resume_once(config: dict[str, Any]) -> None:
    runs: Counter[str] = Counter()
    notifier = RecordingNotifier()
    async with Loopgate(store="memory://", notifiers=[notifier]) as gate:
        graph = agent(runs, "prod")
        gate.register_graph("deployer", graph)
        thread_id = await gate.astart("deployer", {"messages": [("user", "ship")]}, config)
        await wait_for(lambda: len(notifier.notified) == 1)
        (record,) = await gate.apending(thread_id=thread_id)
        answers = await asyncio.gather(
            *(gate.arespond(record.id, {"type": "approve"}, actor=f"chan{i}",
                            channel=f"chan{i}") for i in range(6)),
            return_exceptions=True)
        assert sum(not isinstance(a, BaseException) for a in answers) == 1
        assert sum(isinstance(a, AlreadyDecided) for a in answers) == 5
        await wait_for(lambda: not graph.get_state(config).next)
        with pytest.raises(AlreadyDecided):  # delivered again later: still nothing
            await gate.arespond(record.id, {"type": "approve"})

        async def finished() -> list[str]:
            trail = [e.event for e in await gate.aaudit(thread_id=thread_id)]
            return trail if "finished" in trail else []

        await wait_for(finished)  # the run is over: nothing is left that could resume it
        assert runs["prod"] == 1
        assert (await finished()).count("resumed") == 1


async def test_a_decision_whose_interrupt_is_gone_is_reported_stale(config: dict[str, Any]
                                                                   ) -> None:
    runs: Counter[str] = Counter()
    notifier = RecordingNotifier()
    async with Loopgate(store="memory://", notifiers=[notifier]) as gate:
        graph = agent(runs, "prod")
        gate.register_graph("deployer", graph)
        await gate.astart("deployer", {"messages": [("user", "ship")]}, config)
        await wait_for(lambda: len(notifier.notified) == 1)
        (record,) = await gate.apending()
        # someone resumed the thread behind the gateway's back
        graph.invoke(Command(resume={record.interrupt_id: {"type": "reject"}}), config)
        await gate.arespond(record.id, {"type": "approve"}, actor="ana")

        async def stale() -> bool:
            return "stale" in [e.event for e in await gate.aaudit(request_id=record.id)]

        await wait_for(stale)
        assert runs["prod"] == 0


def test_plain_interrupts_become_free_text_questions(config: dict[str, Any]) -> None:
    def ask(state: dict[str, Any]) -> dict[str, Any]:
        return {"answer": interrupt("What is the release name?")}

    builder: StateGraph[Any] = StateGraph(dict)  # type: ignore[arg-type]
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    graph = builder.compile(checkpointer=InMemorySaver())
    answer = ScriptedApprover({"type": "respond", "message": "Bluefin"})
    with Loopgate(store="memory://", notifiers=[answer]) as gate:
        final = gate.run(graph, {}, config)
        (filed,) = [e for e in gate.audit() if e.event == "requested"]
        assert filed.request_id is not None
        record = gate.get(filed.request_id)
    assert final == {"answer": "Bluefin"}  # resumed with the plain text, as asked
    assert (record.kind.value, record.payload["message"]) == ("input",
                                                              "What is the release name?")
    assert record.status is Status.ANSWERED


def test_notifier_failures_are_retried_and_never_approve(config: dict[str, Any]) -> None:
    flaky = RecordingNotifier("flaky", fail_times=3)
    with Loopgate(store="memory://", notifiers=[flaky], retry_backoff=0.01) as gate:
        record = gate.submit("deploy?")
        events: list[str] = []
        for _ in range(500):  # the delivery is recorded within a poll of being made
            events = [e.event for e in gate.audit(request_id=record.id)]
            if "notified" in events:
                break
            time.sleep(0.01)
        assert flaky.attempts == 4 and len(flaky.notified) == 1
        assert gate.get(record.id).status is Status.PENDING
        # one audit event when it starts failing, none for every retry after that
        assert events == ["requested", "delivery_failed", "notified"]


async def test_a_failure_not_worth_retrying_is_given_up_and_approves_nothing(
        clock: FakeClock) -> None:
    broken = RecordingNotifier("broken", fail_times=10**6, retryable=False)
    # the clock stands still: a retry, had one been scheduled, would never fall due, so
    # its delivery would stay open and `settled` below would time out
    async with Loopgate(store="memory://", notifiers=[broken], clock=clock,
                        retry_backoff=0.01) as gate:
        record = await gate.asubmit("deploy?")

        async def settled() -> bool:
            items = await gate.store.list_outbox(request_id=record.id)
            return bool(items) and all(item.done for item in items)

        await wait_for(settled)
        assert broken.attempts == 1  # a 4xx-like failure is not retried ...
        assert (await gate.aget(record.id)).status is Status.PENDING  # ... nor approves
        failures = [e.details for e in await gate.aaudit(request_id=record.id)
                    if e.event == "delivery_failed"]
        assert [f["retrying_in"] for f in failures] == [None]


def test_a_restart_finds_pending_threads_and_resumes_them(tmp_path: Path) -> None:
    runs: Counter[str] = Counter()
    store = f"sqlite:///{tmp_path / 'gate.db'}"
    checkpoints = str(tmp_path / "checkpoints.db")
    config = {"configurable": {"thread_id": "t-restart"}}

    def saver() -> SqliteSaver:
        return SqliteSaver(sqlite3.connect(checkpoints, check_same_thread=False))

    with Loopgate(store=store) as first:
        first.register_graph("deployer", agent(runs, "prod", checkpointer=saver()))
        first.start("deployer", {"messages": [("user", "ship")]}, config)
        for _ in range(300):
            if first.pending():
                break
            time.sleep(0.01)
        (record,) = first.pending()
    # the first process is gone; a second one answers and the run finishes there
    graph = agent(runs, "prod", checkpointer=saver())
    with Loopgate(store=store) as second:
        second.register_graph("deployer", graph)
        second.respond(record.id, {"type": "approve"}, actor="ana")
        for _ in range(3000):
            if not graph.get_state(config).next:
                break
            time.sleep(0.01)
    assert runs["prod"] == 1
    assert graph.get_state(config).values["messages"][-1].content == "all done"


def test_a_decision_made_by_another_process_resumes_a_registered_graph(tmp_path: Path) -> None:
    runs: Counter[str] = Counter()
    store = f"sqlite:///{tmp_path / 'gate.db'}"
    config = {"configurable": {"thread_id": "t-elsewhere"}}
    graph = agent(runs, "prod")
    with Loopgate(store=store, poll_interval=0.05) as server:
        server.register_graph("deployer", graph)
        server.start("deployer", {"messages": [("user", "ship")]}, config)
        for _ in range(300):
            if server.pending():
                break
            time.sleep(0.01)
        (record,) = server.pending()
        with Loopgate(store=store) as cli:  # e.g. `loopgate-lc approve ID` elsewhere
            cli.respond(record.id, {"type": "approve"}, actor="cli:ana", channel="cli")
        for _ in range(3000):
            if not graph.get_state(config).next:
                break
            time.sleep(0.01)
    assert runs["prod"] == 1


class RecoveryPasses(SQLiteStore):
    """A SQLite store that counts the gateway's recovery passes (each one asks for the
    decided requests whose runs were not resumed), so a test can wait for passes to have
    happened instead of sleeping."""

    passes = 0

    async def list_requests(self, **filters: Any) -> list[RequestRecord]:
        found = await super().list_requests(**filters)
        if filters.get("unresumed"):
            self.passes += 1
        return found


async def test_a_resume_whose_process_died_is_taken_over_after_the_lease(
        tmp_path: Path, clock: FakeClock) -> None:
    """A process claimed the resume (mark_resumed) and died before LangGraph saved it:
    after ``resume_lease`` a gateway with the graph registered resumes the run; before,
    it leaves the claim alone (the claimant may still be running the tool)."""
    runs: Counter[str] = Counter()
    checkpoints = str(tmp_path / "checkpoints.db")
    config = {"configurable": {"thread_id": "t-died"}}

    def graph() -> Any:
        return agent(runs, "prod",
                     checkpointer=SqliteSaver(sqlite3.connect(checkpoints,
                                                              check_same_thread=False)))

    # no recovery polls here: only the dying process's own claim touches the request
    async with Loopgate(store=SQLiteStore(tmp_path / "gate.db"), poll_interval=3600) as first:
        first.register_graph("deployer", graph())
        await first.astart("deployer", {"messages": [("user", "ship")]}, config)
        await wait_for(lambda: first.apending())
        (record,) = await first.apending()
        # the dying process: it decided and claimed the resume, then nothing more
        await first.store.resolve(record.id, status=Status.APPROVED,
                                  decision={"type": "approve"}, decided_by="ana",
                                  channel="test")
        assert await first.store.mark_resumed(record.id, at=clock.now)

    store = RecoveryPasses(tmp_path / "gate.db")
    taker = graph()
    async with Loopgate(store=store, clock=clock, poll_interval=0.02,
                        resume_lease=600) as second:
        second.register_graph("deployer", taker)
        await wait_for(lambda: store.passes >= 3)  # passes on a clock inside the lease
        events = [e.event for e in await second.aaudit(request_id=record.id)]
        assert "resume_retried" not in events  # the claim was left alone ...
        assert taker.get_state(config).next and runs["prod"] == 0  # ... and nothing ran
        clock.advance(601)  # the lease is over: the next pass takes the resume over

        async def completed() -> bool:
            return (await second.aget(record.id)).resume_done_at is not None

        await wait_for(completed)
        assert not taker.get_state(config).next
        events = [e.event for e in await second.aaudit(request_id=record.id)]
    assert runs["prod"] == 1
    assert events.count("resume_retried") == 1


class BusyDriver:
    """A graph driver whose runtime refuses the first resume: the thread runs another
    run (as LangGraph Server answers 409). Its lease is long: a claim held after the
    refusal would keep the thread waiting that long."""

    lease = 600.0

    def __init__(self, graph: Any, refusals: int) -> None:
        self.graph = graph
        self.refusals = refusals
        self.resumes: list[dict[str, Any]] = []

    def _config(self, thread_id: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": thread_id}}

    async def pending(self, thread_id: str) -> set[str] | None:
        state = await self.graph.aget_state(self._config(thread_id))
        return {i.id for i in state.interrupts}

    async def resume(self, thread_id: str, resume: dict[str, Any],
                     claimed: Any) -> Any:
        if self.refusals:
            self.refusals -= 1
            raise ThreadBusy(f"thread {thread_id} is running")
        self.resumes.append(resume)
        result = await self.graph.ainvoke(Command(resume=resume), self._config(thread_id),
                                          version="v2")
        return tuple(result.interrupts)

    async def watch(self, report: Any) -> None:
        paused = await self.graph.ainvoke({"messages": [("user", "go")]},
                                          self._config("busy-1"), version="v2")
        await report("busy-1", paused.interrupts)


async def test_a_resume_refused_because_the_thread_is_busy_gives_its_claim_back(
        runs: Counter[str]) -> None:
    driver = BusyDriver(agent(runs, "prod"), refusals=2)
    async with Loopgate("memory://", poll_interval=0.05) as gate:
        gate.register_driver("busy", driver)

        async def filed() -> bool:
            return bool(await gate.apending(thread_id="busy-1"))

        await wait_for(filed)
        [record] = await gate.apending(thread_id="busy-1")
        await gate.arespond(record.id, {"type": "approve"}, actor="ann")

        async def finished() -> bool:
            return any(e.event == "finished" for e in await gate.aaudit(thread_id="busy-1"))

        await wait_for(finished)  # long before the 600 s lease
        seen = [e.event for e in await gate.aaudit(request_id=record.id)]
    assert seen.count("resume_deferred") == 2
    assert seen[-1] == "resumed" and seen.count("resumed") == 3  # two claims given back
    assert len(driver.resumes) == 1 and runs["prod"] == 1


async def _ends_with(events: Any, last: str) -> bool:
    """Whether the awaited list of audit events ends with ``last``."""
    found = await events
    return bool(found) and found[-1] == last
