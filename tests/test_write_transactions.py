"""How many write transactions one approval round trip through ``Loopgate.run`` costs.

Each state change is one transaction with its audit and deliveries, so the count is
small and fixed: filing, deciding (which also claims the resume for the run waiting in
the same process) and finishing the run. Deliveries to this gateway's own notifiers
cost none of their own: they are written leased to this process with the change that
owes them, made at once, and recorded by the next write of their request (the decision
records the notification, the end of the run the outcome's delivery), or, when none
comes within a short window, in one batch.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from loopgate_lc import ApprovalPolicy, guard
from loopgate_lc.gateway import Loopgate
from loopgate_lc.stores import SQLiteStore
from loopgate_lc.testing import (
    RecordingNotifier,
    ScriptedApprover,
    ScriptedChatModel,
    ai,
    call,
)
from tests.support.counting import CountingStore
from tests.support.waiting import until


@tool
def deploy(environment: str) -> str:
    """Deploy."""
    return f"deployed {environment}"


def _agent(policies: list[ApprovalPolicy] | None = None) -> Any:
    model = ScriptedChatModel(script=[ai("", call("deploy", environment="prod")), "done"])
    return create_agent(model, tools=[guard(deploy, policies=policies)],
                        checkpointer=InMemorySaver())


def _answer_first_pending(gate: Loopgate, voters: tuple[str, ...]) -> None:
    """People at other desks: approve the first request they see (one person, or each
    of ``voters`` in turn)."""
    for _ in range(2_000):
        pending = gate.pending()
        if pending:
            if not voters:
                gate.respond(pending[0].id, {"type": "approve"}, actor="ana")
            for voter in voters:
                gate.respond(pending[0].id, {"type": "approve"}, actor=voter,
                             approver_id=voter)
            return
        time.sleep(0.005)


def _round_trip(store: CountingStore, notifiers: list[Any],
                policies: list[ApprovalPolicy] | None = None,
                voters: tuple[str, ...] = ()) -> Counter[str]:
    with Loopgate(store=store, notifiers=notifiers) as gate:
        gate.open()
        store.writes.clear()
        person = None
        if not notifiers:
            person = threading.Thread(target=_answer_first_pending, args=(gate, voters))
            person.start()
        gate.run(_agent(policies), {"messages": [("user", "ship it")]})
        if person is not None:
            person.join(10)
        # the run is over; what may still be owed is the `resolved` delivery
        for _ in range(1_000):
            if all(i.done for i in asyncio.run(store.list_outbox())):
                break
            time.sleep(0.005)
        return store.writes


def test_a_round_trip_with_one_notifier_writes_three_transactions(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "gate.db")
    writes = _round_trip(store, [ScriptedApprover({"type": "approve"})])
    assert writes == Counter(create_request_unless_granted=1, commit_resolution=1,
                             complete_resume=1)
    # both deliveries were made and recorded: by the decision and by the end of the run
    (record,) = asyncio.run(store.list_requests())
    items = asyncio.run(store.list_outbox())
    assert sorted((i.kind, i.done, i.attempts) for i in items) == [
        ("notify", True, 0), ("resolved", True, 0)]
    events = [e.event for e in asyncio.run(store.list_audit(request_id=record.id))]
    assert events == ["requested", "notified", "decided:approved", "resumed"]


def test_a_round_trip_decided_by_hand_writes_three_transactions(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "gate.db")
    writes = _round_trip(store, [])
    assert writes == Counter(create_request_unless_granted=1, commit_resolution=1,
                             complete_resume=1)


def test_each_vote_is_one_transaction_and_the_deciding_one_decides_in_it(
        tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "gate.db")
    two = ApprovalPolicy("two", "deploy", require_explicit=True, quorum=2)
    with Loopgate(store=store, policies=[two]) as gate:
        record = gate.submit("Deploy?", tool_name="deploy", risk="irreversible",
                             confidence=1.0)
        store.writes.clear()
        gate.respond(record.id, {"type": "approve"}, approver_id="ana")
        assert store.writes == Counter(commit_vote=1)
        gate.respond(record.id, {"type": "approve"}, approver_id="bob")
        assert store.writes == Counter(commit_vote=2)  # no separate decision write
        assert gate.get(record.id).status.value == "approved"


def test_a_round_trip_decided_by_a_quorum_claims_the_resume_in_the_deciding_vote(
        tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "gate.db")
    two = ApprovalPolicy("two", "deploy", require_explicit=True, quorum=2)
    writes = _round_trip(store, [], policies=[two], voters=("ana", "bob"))
    assert writes == Counter(create_request=1, commit_vote=2, complete_resume=1)
    (record,) = asyncio.run(store.list_requests())
    assert record.status.value == "approved" and record.resume_done_at is not None
    assert [v.voter for v in record.votes] == ["ana", "bob"]


def test_a_delivery_is_recorded_by_the_decision_that_follows_it(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "gate.db")
    shown = RecordingNotifier("shown")
    # the window a delivery waits for a write of its request is the poll interval
    with Loopgate(store=store, notifiers=[shown], poll_interval=60) as gate:
        record = gate.submit("Deploy?")
        until(lambda: bool(shown.notified))
        (item,) = asyncio.run(store.list_outbox(request_id=record.id))
        assert not item.done and item.leased_until is not None  # made, not yet recorded
        store.writes.clear()
        decided = gate.respond(record.id, {"type": "approve"}, actor="ana")
        assert store.writes == Counter(commit_resolution=1)
        # recorded in the decision, before its compare-and-set: the `resolved`
        # delivery it owes the channel knows the message to update
        assert decided.message_refs == {"shown": {"seen": 1}}
        events = [e.event for e in gate.audit(request_id=record.id)]
        assert events == ["requested", "notified", "decided:approved"]
        until(lambda: bool(shown.resolved))
        assert shown.resolved[0].message_refs == {"shown": {"seen": 1}}
    # closing recorded the outcome's delivery, which no later write of its request took
    assert store.writes == Counter(commit_resolution=1, complete_deliveries=1)
    assert [(i.kind, i.done) for i in asyncio.run(store.list_outbox())] == [
        ("notify", True), ("resolved", True)]


def test_deliveries_nobody_carries_are_recorded_in_a_batch_within_a_poll(
        tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "gate.db")
    shown = RecordingNotifier("shown")
    with Loopgate(store=store, notifiers=[shown], poll_interval=0.05) as gate:
        gate.open()
        store.writes.clear()
        records = [gate.submit(f"Deploy {n}?") for n in range(3)]
        until(lambda: all(i.done for i in asyncio.run(store.list_outbox())))
        assert {r.id for r in shown.notified} == {r.id for r in records}
        # no claims and no completion per delivery: each filing, then batches
        assert set(store.writes) == {"create_request", "complete_deliveries"}
        assert store.writes["create_request"] == 3
        assert 1 <= store.writes["complete_deliveries"] <= 3
        for record in records:
            events = [e.event for e in gate.audit(request_id=record.id)]
            assert events == ["requested", "notified"]
            assert gate.get(record.id).message_refs["shown"]["seen"] in (1, 2, 3)


class BatchStore(SQLiteStore):
    """A SQLite store that keeps, for each batch of finished deliveries, when it was
    written and the requests in it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[tuple[float, list[str]]] = []

    async def complete_deliveries(self, delivered: Any) -> None:
        at = time.monotonic()
        await super().complete_deliveries(delivered)
        self.batches.append((at, sorted(d.request_id for d in delivered)))


class TimedNotifier(RecordingNotifier):
    """Keeps when each request was shown."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.shown_at: dict[str, float] = {}

    async def notify(self, request: Any) -> Any:
        self.shown_at[request.id] = time.monotonic()
        return await super().notify(request)


def test_a_batch_records_only_deliveries_a_window_old(tmp_path: Path) -> None:
    store = BatchStore(tmp_path / "gate.db")
    shown = TimedNotifier("shown")
    window = 0.3  # the poll interval
    with Loopgate(store=store, notifiers=[shown], poll_interval=window) as gate:
        first = gate.submit("Deploy 1?")
        until(lambda: len(shown.notified) == 1)
        second = gate.submit("Deploy 2?")  # made while the first waits for its batch
        until(lambda: sum(len(ids) for _, ids in store.batches) == 2)
        # a delivery younger than the window is left for a write of its own request
        for at, ids in store.batches:
            for request_id in ids:
                assert shown.shown_at[request_id] <= at - window
        assert sorted(i for _, ids in store.batches for i in ids) == sorted(
            [first.id, second.id])
        assert all(i.done for i in asyncio.run(store.list_outbox()))
