"""Quorum through the public API: a policy that needs several people's approval, votes from
distinct approvers, the requester never counting, rejections, and racing voters in
several OS processes on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from loopgate_lc import (
    AlreadyDecided,
    ApprovalPolicy,
    ApproverNotAllowed,
    DuplicateVote,
    InvalidDecision,
    InvalidPolicy,
    Loopgate,
    PolicySet,
    SelfApproval,
    Status,
    guard,
)
from loopgate_lc.stores import Store
from loopgate_lc.testing import RecordingNotifier, ScriptedChatModel, ai, call
from tests.conftest import FakeClock
from tests.test_timeouts import wait_for

REPO_ROOT = Path(__file__).resolve().parents[1]
APPROVERS = ["ana", "bob", "cy", "dan", "eve"]


def policy(quorum: int = 2, **fields: Any) -> ApprovalPolicy:
    return ApprovalPolicy(name="people", tool_pattern="deploy", require_explicit=True,
                          quorum=quorum, **fields)


def gateway(*policies: ApprovalPolicy, store: str | Store = "memory://", **options: Any
            ) -> Loopgate:
    gate = Loopgate(store, policies=list(policies) or [policy()], **options)
    gate.register_session("ops", client_id="deploy-bot", approvers=APPROVERS)
    return gate


def ask(gate: Loopgate, **fields: Any) -> Any:
    return gate.submit("Deploy v2?", session_id="ops", tool_name="deploy",
                       args={"env": "prod"}, risk="irreversible", confidence=1.0, **fields)


def vote(gate: Loopgate, request_id: str, voter: str, kind: str = "approve",
         **decision: Any) -> Any:
    return gate.respond(request_id, {"type": kind, **decision}, actor=f"api:{voter}",
                        approver_id=voter)


# --- policies --------------------------------------------------------------------------------


def test_a_policy_states_its_quorum_and_rejections() -> None:
    verdict = PolicySet([policy(3, rejections_needed=2)]).evaluate(
        "deploy", confidence=1.0, risk="irreversible")
    assert (verdict.quorum, verdict.rejections_needed) == (3, 2)
    loaded = PolicySet.from_dict({"policies": [
        {"name": "p", "tool_pattern": "deploy", "quorum": 2, "rejections_needed": 2}]})
    assert (loaded.policies[0].quorum, loaded.policies[0].rejections_needed) == (2, 2)
    assert PolicySet([ApprovalPolicy("p", "x")]).evaluate(
        "x", confidence=0.0, risk="read_only").quorum == 1


@pytest.mark.parametrize("fields", [
    {"quorum": 0}, {"quorum": True}, {"quorum": 1.5}, {"rejections_needed": 0},
    {"quorum": 3, "approvers": ("ana", "bob")},  # two people can never make three
    {"quorum": 2, "approvers": ("ana", "ana")},
])
def test_a_quorum_that_cannot_be_met_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidPolicy):
        ApprovalPolicy("p", "deploy", **fields)


def test_policy_file_errors_name_the_quorum_field() -> None:
    with pytest.raises(InvalidPolicy, match=r"policies\[0\]\.quorum"):
        PolicySet.from_dict({"policies": [{"name": "p", "tool_pattern": "x", "quorum": 0}]})


# --- votes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("quorum", [2, 3])
def test_distinct_approvals_decide_at_the_quorum(quorum: int) -> None:
    with gateway(policy(quorum)) as gate:
        record = ask(gate)
        assert record.payload["allowed_decisions"] == ["approve", "reject"]
        voters = APPROVERS[:quorum]
        for count, voter in enumerate(voters[:-1], start=1):
            voted = vote(gate, record.id, voter)
            assert voted.pending and voted.counted("approve") == count
        decided = vote(gate, record.id, voters[-1])
        assert decided.status is Status.APPROVED
        assert decided.decided_by == ", ".join(f"api:{v}" for v in voters)
        assert [v.voter for v in decided.votes] == voters
        with pytest.raises(AlreadyDecided):
            vote(gate, record.id, "dan")
        trail = gate.audit(request_id=record.id)
        voted_events = [e for e in trail if e.event == "voted"]
        assert [(e.actor, e.details["vote"], e.details["approvals"]) for e in voted_events] == [
            (f"api:{v}", "approve", n) for n, v in enumerate(voters, start=1)]
        assert [e.event for e in trail][-1] == "decided:approved"


def test_the_requester_never_counts() -> None:
    with gateway() as gate:
        named = ask(gate, requester="ana")
        with pytest.raises(SelfApproval):
            vote(gate, named.id, "ana")
        assert gate.get(named.id).votes == []
        refused = [e for e in gate.audit(request_id=named.id) if e.event == "unauthorized"]
        assert [e.details["approver_id"] for e in refused] == ["ana"]
        # the session's owner (its client) asked too, and so did the filing client
        gate.register_session("bots", client_id="bob", approvers=APPROVERS)
        owned = gate.submit("Deploy?", session_id="bots", tool_name="deploy",
                            risk="irreversible", confidence=1.0)
        with pytest.raises(SelfApproval):
            vote(gate, owned.id, "bob")
        filed = ask(gate, client_id="cy")
        with pytest.raises(SelfApproval):
            vote(gate, filed.id, "cy")
        assert vote(gate, filed.id, "ana").pending
        assert vote(gate, filed.id, "bob").status is Status.APPROVED


def test_a_second_vote_by_the_same_person_is_refused_not_counted() -> None:
    with gateway() as gate:
        record = ask(gate)
        vote(gate, record.id, "ana")
        with pytest.raises(DuplicateVote, match="already voted approve"):
            vote(gate, record.id, "ana")
        with pytest.raises(DuplicateVote):  # nor can a vote be changed
            vote(gate, record.id, "ana", "reject")
        stored = gate.get(record.id)
        assert stored.pending and len(stored.votes) == 1


def test_one_rejection_decides_at_once() -> None:
    with gateway(policy(3)) as gate:
        record = ask(gate)
        vote(gate, record.id, "ana")
        vote(gate, record.id, "bob")
        decided = vote(gate, record.id, "cy", "reject", message="not today")
        assert decided.status is Status.REJECTED
        assert decided.decided_by == "api:cy"
        assert decided.decision is not None and decided.decision["message"] == "not today"
        assert (decided.counted("approve"), decided.counted("reject")) == (2, 1)


def test_a_configured_number_of_rejections_decides() -> None:
    with gateway(policy(2, rejections_needed=2)) as gate:
        record = ask(gate)
        assert vote(gate, record.id, "ana", "reject").pending
        assert vote(gate, record.id, "bob").pending  # 1 of 2 approvals, 1 of 2 rejections
        decided = vote(gate, record.id, "cy", "reject")
        assert decided.status is Status.REJECTED
        assert decided.decided_by == "api:ana, api:cy"
        # and the other way: approvals reach their quorum first
        other = ask(gate)
        vote(gate, other.id, "ana", "reject")
        vote(gate, other.id, "bob")
        assert vote(gate, other.id, "cy").status is Status.APPROVED


def test_edits_answers_and_unnamed_votes_are_refused_and_change_nothing() -> None:
    with gateway() as gate:
        record = ask(gate)
        with pytest.raises(InvalidDecision, match="only approve and reject are votes"):
            gate.respond(record.id, {"type": "edit", "edited_action": {
                "name": "deploy", "args": {"env": "staging"}}}, approver_id="ana")
        with pytest.raises(InvalidDecision, match="only approve and reject are votes"):
            gate.respond(record.id, {"type": "respond", "message": "done by hand"},
                         approver_id="ana")
        with pytest.raises(InvalidDecision):
            gate.respond(record.id, "approve", approver_id="ana")  # type: ignore[arg-type]
        with pytest.raises(ApproverNotAllowed):  # named approvers: a vote must name one
            gate.respond(record.id, {"type": "approve"}, actor="someone")
        with pytest.raises(ApproverNotAllowed):
            vote(gate, record.id, "mallory")
        stored = gate.get(record.id)
        assert stored.pending and stored.votes == []
        assert "voted" not in [e.event for e in gate.audit(request_id=record.id)]


def test_without_named_approvers_a_vote_still_names_its_voter() -> None:
    with Loopgate("memory://", policies=[policy()]) as gate:
        record = gate.submit("Deploy?", tool_name="deploy", risk="irreversible",
                             confidence=1.0)
        with pytest.raises(ApproverNotAllowed, match="name the approver who votes"):
            gate.respond(record.id, {"type": "approve"}, actor="api")
        with pytest.raises(InvalidDecision, match="longer than 256"):
            vote(gate, record.id, "x" * 257)
        assert vote(gate, record.id, "ana").pending


def test_a_timeout_decides_as_always_and_keeps_the_votes() -> None:
    clock = FakeClock()
    with gateway(clock=clock, default_timeout=60, timers=False) as gate:
        record = ask(gate)
        vote(gate, record.id, "ana")
        clock.advance(61)
        (expired,) = gate.expire_due()
        assert expired.status is Status.TIMEOUT
        assert [v.voter for v in expired.votes] == ["ana"]


def test_a_paused_run_resumes_once_when_the_quorum_is_reached(config: dict[str, Any]
                                                                ) -> None:
    runs: Counter[str] = Counter()

    @tool
    def deploy(env: str) -> str:
        """Deploy the build."""
        runs[env] += 1
        return f"deployed to {env}"

    graph = create_agent(
        ScriptedChatModel(script=[ai("", call("deploy", "c1", env="prod")), "done"]),
        tools=[guard(deploy, policies=[policy()], session_id="ops")],
        checkpointer=InMemorySaver())
    notifier = RecordingNotifier()

    async def scenario() -> None:
        async with Loopgate("memory://", notifiers=[notifier]) as gate:
            await gate.aregister_session("ops", approvers=APPROVERS)
            gate.register_graph("deployer", graph)
            thread_id = await gate.astart("deployer", {"messages": [("user", "ship")]},
                                          config)
            await wait_for(lambda: len(notifier.notified) == 1)
            (record,) = await gate.apending(thread_id=thread_id)
            assert record.payload["quorum"] == 2
            first = await gate.arespond(record.id, {"type": "approve"}, approver_id="ana")
            assert first.pending
            assert graph.get_state(config).next  # still paused: one vote is not enough
            assert runs["prod"] == 0
            await gate.arespond(record.id, {"type": "approve"}, approver_id="bob")
            await wait_for(lambda: not graph.get_state(config).next)
            assert runs["prod"] == 1
            trail = [e.event for e in await gate.aaudit(thread_id=thread_id)]
            assert trail.count("voted") == 2 and trail.count("resumed") == 1

    asyncio.run(scenario())


def test_a_batched_pause_takes_votes_that_answer_every_call_alike(config: dict[str, Any]
                                                                   ) -> None:
    from loopgate_lc.middleware import ApprovalMiddleware

    runs: Counter[str] = Counter()

    @tool
    def deploy(env: str) -> str:
        """Deploy the build."""
        runs[env] += 1
        return f"deployed to {env}"

    graph = create_agent(
        ScriptedChatModel(script=[ai("", call("deploy", "c1", env="eu"),
                                     call("deploy", "c2", env="us")), "done"]),
        tools=[deploy], checkpointer=InMemorySaver(),
        middleware=[ApprovalMiddleware([policy()], interrupt_mode="batched")])
    notifier = RecordingNotifier()

    async def scenario() -> None:
        async with Loopgate("memory://", notifiers=[notifier]) as gate:
            gate.register_graph("deployer", graph)
            thread_id = await gate.astart("deployer", {"messages": [("user", "ship")]},
                                          config)
            await wait_for(lambda: len(notifier.notified) == 1)
            (record,) = await gate.apending(thread_id=thread_id)
            assert record.payload["quorum"] == 2
            both = {"decisions": [{"type": "approve"}, {"type": "approve"}]}
            assert (await gate.arespond(record.id, both, approver_id="ana")).pending
            mixed = {"decisions": [{"type": "approve"}, {"type": "reject"}]}
            with pytest.raises(InvalidDecision, match="only approve and reject are votes"):
                await gate.arespond(record.id, mixed, approver_id="bob")
            decided = await gate.arespond(record.id, {"type": "approve"}, approver_id="bob")
            assert decided.status is Status.APPROVED
            await wait_for(lambda: not graph.get_state(config).next)
            assert runs == Counter(eu=1, us=1)

    asyncio.run(scenario())


def test_a_threads_batch_of_answers_is_a_vote_on_each_of_its_requests(
        config: dict[str, Any]) -> None:
    runs: Counter[str] = Counter()

    @tool
    def deploy(env: str) -> str:
        """Deploy the build."""
        runs[env] += 1
        return f"deployed to {env}"

    graph = create_agent(
        ScriptedChatModel(script=[ai("", call("deploy", "c1", env="eu"),
                                     call("deploy", "c2", env="us")), "done"]),
        tools=[guard(deploy, policies=[policy()], session_id="ops")],
        checkpointer=InMemorySaver())
    notifier = RecordingNotifier()

    async def scenario() -> None:
        async with Loopgate("memory://", notifiers=[notifier]) as gate:
            await gate.aregister_session("ops", approvers=APPROVERS)
            gate.register_graph("deployer", graph)
            thread_id = await gate.astart("deployer", {"messages": [("user", "ship")]},
                                          config)
            await wait_for(lambda: len(notifier.notified) == 2)
            edit = {"type": "edit", "edited_action": {"name": "deploy",
                                                      "args": {"env": "dev"}}}
            with pytest.raises(InvalidDecision, match="only approve and reject are votes"):
                await gate.arespond_batch(thread_id, {"decisions": [{"type": "approve"},
                                                                    edit]},
                                          approver_id="ana")
            both = {"decisions": [{"type": "approve"}, {"type": "approve"}]}
            first = await gate.arespond_batch(thread_id, both, approver_id="ana")
            assert [r.pending for r in first] == [True, True]
            assert [[v.voter for v in r.votes] for r in first] == [["ana"], ["ana"]]
            with pytest.raises(DuplicateVote):
                await gate.arespond_batch(thread_id, both, approver_id="ana")
            second = await gate.arespond_batch(thread_id, both, approver_id="bob")
            assert [r.status for r in second] == [Status.APPROVED, Status.APPROVED]
            await wait_for(lambda: not graph.get_state(config).next)
            assert runs == Counter(eu=1, us=1)

    asyncio.run(scenario())


# --- racing voters in several processes --------------------------------------------------------

VOTERS = ["ana", "bob", "cy", "dan", "eve"]
RACED = 12


def _race(url: str, ids: list[str], schema: str | None = None) -> dict[str, dict[str, str]]:
    """Every voter in its own OS process, released together; what each one was told."""
    procs = {}
    for voter in VOTERS:
        args = [sys.executable, "-m", "tests.support.vote_child", url, voter, ",".join(ids)]
        procs[voter] = subprocess.Popen([*args, *([schema] if schema else [])], cwd=REPO_ROOT,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
    try:
        for proc in procs.values():
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.strip() == "READY", proc.communicate(timeout=30)[1]
        for proc in procs.values():
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        told = {}
        for voter, proc in procs.items():
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            told[voter] = json.loads(out.strip().splitlines()[-1])
        return told
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)


def _check_race(gate: Loopgate, ids: list[str], told: dict[str, dict[str, str]],
                quorum: int) -> None:
    for request_id in ids:
        answers = Counter(told[voter][request_id] for voter in VOTERS)
        assert answers == Counter({"decided": 1, "pending": quorum - 1,
                                   "late": len(VOTERS) - quorum})
        record = gate.get(request_id)
        assert record.status is Status.APPROVED
        counted = [v.voter for v in record.votes]
        assert len(counted) == len(set(counted)) == quorum
        assert set(counted) == {v for v in VOTERS if told[v][request_id] != "late"}
        events = [e.event for e in gate.audit(request_id=request_id)]
        assert events.count("voted") == quorum and events.count("decided:approved") == 1


def test_voters_racing_in_processes_on_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'votes.db'}"
    with gateway(policy(3), store=url) as gate:
        ids = [ask(gate).id for _ in range(RACED)]
        told = _race(url, ids)
        _check_race(gate, ids, told, quorum=3)


def test_voters_racing_in_processes_on_postgres(postgres_dsn: str, pg_schema: str) -> None:
    pytest.importorskip("psycopg")
    from loopgate_lc.stores import PostgresStore

    with gateway(policy(3), store=PostgresStore(postgres_dsn, schema=pg_schema)) as gate:
        ids = [ask(gate).id for _ in range(RACED)]
        told = _race(postgres_dsn, ids, pg_schema)
        _check_race(gate, ids, told, quorum=3)
