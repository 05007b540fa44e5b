"""Remembered permissions through the public API: a person approves with "allow this
again", and calls like it are approved without asking, within the grant's tool,
arguments, scope and time; never where a policy wants a person every time."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from loopgate_lc import (
    ApprovalPolicy,
    ApproverNotAllowed,
    GrantNotFound,
    InvalidDecision,
    Loopgate,
    Status,
    guard,
)
from loopgate_lc.testing import RecordingNotifier, ScriptedApprover, ScriptedChatModel, ai, call

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
HOUR = {"ttl_seconds": 3600}


class Clock:
    """Time that moves only when the test says."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def gateway(store: Any = "memory://", **kwargs: Any) -> Loopgate:
    gate = Loopgate(store, timers=False, **kwargs)
    await gate.aopen()
    for session, client, approvers in (("s1", "acme", ()), ("s2", "acme", ()),
                                       ("s3", "globex", ()), ("ana-only", "acme", ("ana",)),
                                       ("bob-only", "acme", ("bob",))):
        await gate.aregister_session(session, client, approvers=approvers)
    return gate


async def ask(gate: Loopgate, *, tool_name: str = "deploy", session: str = "s1",
              client: str | None = "acme", **args: Any) -> Any:
    return await gate.asubmit("deploy?", tool_name=tool_name, args=args or {"env": "staging"},
                              session_id=session, client_id=client)


async def approve_with(gate: Loopgate, record: Any, grant: dict[str, Any] | None,
                       actor: str = "cli:ana", approver_id: str | None = None) -> Any:
    return await gate.arespond(record.id, {"type": "approve", "grant": grant}, actor=actor,
                               approver_id=approver_id)


async def test_an_approval_with_a_grant_approves_the_same_call_again(any_store: Any) -> None:
    gate = await gateway(any_store)
    try:
        first = await ask(gate)
        decided = await approve_with(gate, first, {"scope": "session", **HOUR})
        made = decided.decision["grant"]
        assert (made["tool"], made["scope"], made["args"]) == (
            "deploy", "session", {"env": {"equals": "staging"}})
        [grant] = await gate.agrants()
        assert (grant.id, grant.created_by, grant.request_id) == (
            made["id"], "cli:ana", first.id)
        again = await ask(gate)
        assert again.status is Status.APPROVED
        assert (again.decided_by, again.channel) == (f"grant:{grant.id}", "grant")
        assert again.decision["granted_by"] == {
            "grant_id": grant.id, "created_by": "cli:ana", "request_id": first.id}
        events = [(e.event, e.actor) for e in await gate.aaudit(request_id=again.id)]
        assert events == [("requested", None), ("decided:approved", f"grant:{grant.id}")]
        created = [e for e in await gate.aaudit(request_id=first.id)
                   if e.event == "grant_created"]
        assert [(e.actor, e.details["id"], e.details["scope"]) for e in created] == [
            ("cli:ana", grant.id, "session")]
        assert created[0].details["expires_at"].startswith(
            str(grant.expires_at.date() if grant.expires_at else None))
        # other arguments, another tool: a person is asked
        assert (await ask(gate, env="production")).pending
        assert (await ask(gate, tool_name="destroy")).pending
    finally:
        await gate.aclose()


async def test_nobody_is_notified_of_a_call_a_grant_approves() -> None:
    seen = RecordingNotifier()
    gate = await gateway(notifiers=[seen])
    try:
        first = await ask(gate)
        await approve_with(gate, first, {"scope": "session", **HOUR})
        again = await ask(gate)
        assert not again.pending
        outbox = await gate.store.list_outbox(request_id=again.id)
        assert [i.kind for i in outbox] == ["resolved"]  # told the outcome, never asked
    finally:
        await gate.aclose()


async def test_expired_grants_never_match() -> None:
    clock = Clock()
    gate = await gateway(clock=clock)
    try:
        await approve_with(gate, await ask(gate), {"scope": "session", "ttl_seconds": 60})
        clock.advance(59)
        assert not (await ask(gate)).pending
        clock.advance(1)  # at expires_at: over
        assert (await ask(gate)).pending
        assert await gate.agrants() == []
        assert len(await gate.agrants(live=False)) == 1
        # expires_at as a time works the same way
        until = (clock.now + timedelta(seconds=30)).isoformat()
        await approve_with(gate, await ask(gate, env="dev"),
                           {"scope": "session", "expires_at": until})
        assert not (await ask(gate, env="dev")).pending
        clock.advance(31)
        assert (await ask(gate, env="dev")).pending
    finally:
        await gate.aclose()


async def test_revoked_grants_never_match(any_store: Any) -> None:
    gate = await gateway(any_store)
    try:
        decided = await approve_with(gate, await ask(gate), {"scope": "session",
                                                             "until_revoked": True})
        grant_id = decided.decision["grant"]["id"]
        assert (await gate.aget_grant(grant_id)).expires_at is None
        assert not (await ask(gate)).pending
        revoked = await gate.arevoke_grant(grant_id, actor="cli:bob", channel="cli")
        assert revoked.revoked_by == "cli:bob" and revoked.revoked_at is not None
        assert (await ask(gate)).pending
        again = await gate.arevoke_grant(grant_id, actor="cli:eve")  # changes nothing
        assert (again.revoked_by, again.revoked_at) == ("cli:bob", revoked.revoked_at)
        events = [(e.event, e.actor) for e in await gate.aaudit()
                  if e.event == "grant_revoked"]
        assert events == [("grant_revoked", "cli:bob")]
        with pytest.raises(GrantNotFound, match="no grant with id 'g_nope'"):
            await gate.arevoke_grant("g_nope")
    finally:
        await gate.aclose()


async def test_session_and_everyone_scopes() -> None:
    gate = await gateway()
    try:
        await approve_with(gate, await ask(gate, env="a"), {"scope": "session", **HOUR})
        assert not (await ask(gate, env="a")).pending
        assert (await ask(gate, env="a", session="s2")).pending  # another session
        await approve_with(gate, await ask(gate, env="b"), {"scope": "everyone", **HOUR})
        assert not (await ask(gate, env="b", session="s2")).pending  # the same client
        assert (await ask(gate, env="b", session="s3", client="globex")).pending
    finally:
        await gate.aclose()


async def test_a_grant_applies_only_where_its_maker_may_decide() -> None:
    gate = await gateway()
    try:
        first = await ask(gate, session="ana-only")
        await approve_with(gate, first, {"scope": "everyone", **HOUR}, approver_id="ana")
        assert not (await ask(gate, session="ana-only")).pending
        # the same client, but only bob decides there: ana's grant does not answer for him
        assert (await ask(gate, session="bob-only")).pending
        with pytest.raises(ApproverNotAllowed):  # and approver checks come first
            await approve_with(gate, await ask(gate, session="bob-only", env="x"),
                               {"scope": "session", **HOUR}, approver_id="ana")
        assert await gate.agrants(session_id="bob-only") == []
    finally:
        await gate.aclose()


@pytest.mark.parametrize(("approved", "constraints", "matching", "not_matching"), [
    ({"path": "/srv/app/x"}, {"path": {"prefix": "/srv/app/"}}, {"path": "/srv/app/logs"},
     {"path": "/etc/passwd"}),
    ({"env": "staging"}, {"env": {"one_of": ["staging", "dev"]}}, {"env": "dev"},
     {"env": "production"}),
    ({"amount": 10}, {"amount": {"min": 0, "max": 100}}, {"amount": 99.5}, {"amount": 101}),
    ({"amount": 10}, {"amount": {"max": 100}}, {"amount": 100}, {"amount": True}),
    ({"env": "dev"}, {"env": {"equals": "dev"}}, {"env": "dev"}, {"env": "dev", "x": 1}),
    ({"note": "n"}, {"note": {"any": True}}, {"note": ["a"]}, {"note": "x", "extra": 1}),
    ({"note": "n"}, "any", {"whatever": [1, 2]}, None),
    ({"n": 1}, {"*": {"one_of": [1, 2]}}, {"n": 2, "m": 1}, {"n": 3}),
])
async def test_argument_constraints(approved: dict[str, Any], constraints: Any,
                                    matching: dict[str, Any],
                                    not_matching: dict[str, Any] | None) -> None:
    gate = await gateway()
    try:
        await approve_with(gate, await ask(gate, tool_name="op", **approved),
                           {"scope": "session", "args": constraints, **HOUR})
        assert not (await ask(gate, tool_name="op", **matching)).pending
        if not_matching is not None:
            assert (await ask(gate, tool_name="op", **not_matching)).pending
    finally:
        await gate.aclose()


async def test_unnamed_arguments_must_equal_the_approved_call() -> None:
    gate = await gateway()
    try:
        await approve_with(gate, await ask(gate, env="staging", branch="main"),
                           {"scope": "session", "args": {"branch": {"one_of": ["main", "dev"]}},
                            **HOUR})
        assert not (await ask(gate, env="staging", branch="dev")).pending
        assert (await ask(gate, env="production", branch="dev")).pending
        assert (await ask(gate, env="staging", branch="dev", force=True)).pending
        assert (await ask(gate, branch="dev")).pending  # env left out: not the same call
    finally:
        await gate.aclose()


@pytest.mark.parametrize(("grant", "message"), [
    ("forever", "grant must be an object"),
    ({"scope": "session"}, "exactly one of ttl_seconds, expires_at or until_revoked"),
    ({"scope": "session", "ttl_seconds": 60, "until_revoked": True}, "exactly one of"),
    ({"scope": "session", "ttl_seconds": 0}, "ttl_seconds must be a number"),
    ({"scope": "session", "ttl_seconds": float("inf")}, "ttl_seconds must be a number"),
    ({"scope": "session", "ttl_seconds": 400 * 86400}, "366 days"),
    ({"scope": "session", "until_revoked": False}, "until_revoked must be true"),
    ({"scope": "session", "expires_at": "2030-01-01T12:00:00"}, "with a time zone"),
    ({"scope": "session", "expires_at": "1999-01-01T00:00:00+00:00"}, "in the future"),
    ({"scope": "world", **HOUR}, "grant.scope must be one of"),
    ({"scope": "thread", **HOUR}, "belongs to no thread"),
    ({"scope": "session", "who": "me", **HOUR}, "unknown field(s) who"),
    ({"args": {"env": {"prefix": ""}}, **HOUR}, "prefix must be a non-empty string"),
    ({"args": {"env": {"regex": ".*"}}, **HOUR}, "unknown constraint 'regex'"),
    ({"args": {"env": {"equals": 1, "any": True}}, **HOUR}, "must name ONE of"),
    ({"args": {"env": {"one_of": []}}, **HOUR}, "one_of must list 1 to 100"),
    ({"args": {"env": {"min": 5, "max": 1}}, **HOUR}, "min is above max"),
    ({"args": {"env": {"any": "yes"}}, **HOUR}, "any must be true"),
    ({"args": "all", **HOUR}, 'grant.args must be "exact", "any" or an object'),
    ({"args": {"env": {"equals": "production"}}, **HOUR}, "approved call itself"),
])
async def test_bad_grants_are_refused_and_leave_the_request_pending(
        grant: Any, message: str) -> None:
    gate = await gateway()
    try:
        record = await ask(gate)
        with pytest.raises(InvalidDecision, match=message.replace("(", r"\(")
                           .replace(")", r"\)")):
            await approve_with(gate, record, grant)
        assert (await gate.aget(record.id)).pending
        assert await gate.agrants(live=False) == []
    finally:
        await gate.aclose()


async def test_only_an_approve_of_a_tool_call_can_be_remembered() -> None:
    gate = await gateway()
    try:
        record = await ask(gate)
        with pytest.raises(InvalidDecision, match="only an approve decision"):
            await gate.arespond(record.id, {"type": "reject", "grant": HOUR})
        question = await gate.asubmit("lunch?", session_id="s1")
        with pytest.raises(InvalidDecision, match="only a tool call"):
            await gate.arespond(question.id, {"type": "approve", "grant": HOUR})
        assert (await gate.aget(record.id)).pending and (await gate.aget(question.id)).pending
    finally:
        await gate.aclose()


async def test_require_explicit_is_never_widened() -> None:
    gate = await gateway()
    try:
        made = await approve_with(gate, await ask(gate), {"scope": "everyone", **HOUR})
        assert not (await ask(gate)).pending
        # the policy tightens: the grant made before stands for nothing now
        gate.add_policy(ApprovalPolicy("deploys", "deploy", require_explicit=True))
        record = await ask(gate)
        assert record.pending
        with pytest.raises(InvalidDecision, match="requires a person to approve every call"):
            await approve_with(gate, record, {"scope": "session", **HOUR})
        assert [g.id for g in await gate.agrants()] == [made.decision["grant"]["id"]]
    finally:
        await gate.aclose()


def agent(runs: Counter[str], *, explicit: bool) -> Any:
    @tool("deploy")
    def counted(env: str) -> str:
        """Deploy to an environment."""
        runs[env] += 1
        return f"deployed {env}"

    policies = [ApprovalPolicy("deploys", "deploy", require_explicit=explicit)]
    return create_agent(
        ScriptedChatModel(script=[ai("", call("deploy", "c1", env="staging")),
                                  ai("", call("deploy", "c2", env="staging")), "done"]),
        tools=[guard(counted, policies=policies, risk="irreversible")],
        checkpointer=InMemorySaver())


async def test_a_thread_grant_in_a_real_run(config: dict[str, Any], runs: Counter[str]
                                            ) -> None:
    person = ScriptedApprover({"type": "approve", "grant": {"scope": "thread", **HOUR}},
                              actor="ana")
    async with Loopgate("memory://", notifiers=[person]) as gate:
        await gate.arun(agent(runs, explicit=False), {"messages": [("user", "deploy")]},
                        config)
        assert runs == Counter({"staging": 2})  # both calls ran, each once
        assert len(person.answered) == 1  # and the person was asked once
        decided = [e for e in await gate.aaudit() if e.event == "decided:approved"]
        assert [e.channel for e in decided] == ["scripted", "grant"]
        [grant] = await gate.agrants()
        assert grant.thread_id == config["configurable"]["thread_id"]
        # another run (another thread) is asked again
        other = {"configurable": {"thread_id": f"{grant.thread_id}-other"}}
        await gate.arun(agent(runs, explicit=False), {"messages": [("user", "deploy")]},
                        other)
        assert len(person.answered) == 2


async def test_a_require_explicit_guard_asks_every_time(config: dict[str, Any],
                                                        runs: Counter[str]) -> None:
    async with Loopgate("memory://", poll_interval=0.05) as gate:
        task = asyncio.ensure_future(gate.arun(agent(runs, explicit=True),
                                               {"messages": [("user", "deploy")]}, config))
        for call_id in ("c1", "c2"):
            waiting = await pending_call(gate, call_id)
            assert waiting.payload["require_explicit"] is True
            with pytest.raises(InvalidDecision, match="requires a person"):
                await gate.arespond(waiting.id, {"type": "approve",
                                                 "grant": {"scope": "thread", **HOUR}})
            await gate.arespond(waiting.id, {"type": "approve"}, actor="ana")
        await asyncio.wait_for(task, 10)
        assert runs == Counter({"staging": 2})
        assert await gate.agrants(live=False) == []


async def pending_call(gate: Loopgate, call_id: str) -> Any:
    """The pending request of one tool call, once the run has filed it (bounded at 30 s;
    only a failing test waits that long)."""
    for _ in range(3000):
        found = [r for r in await gate.apending() if r.payload.get("tool_call_id") == call_id]
        if found:
            return found[0]
        await asyncio.sleep(0.01)
    raise AssertionError(f"call {call_id} was never filed")


async def test_arguments_that_are_not_plain_json_never_match() -> None:
    gate = await gateway()
    try:
        await approve_with(gate, await ask(gate, tool_name="op", x=1.5),
                           {"scope": "session", "args": {"x": {"one_of": [1.5, 2.5]}},
                            **HOUR})
        assert not (await ask(gate, tool_name="op", x=2.5)).pending
        assert (await ask(gate, tool_name="op", x=float("nan"))).pending
    finally:
        await gate.aclose()


async def test_the_gateways_own_require_explicit_policy_stops_a_guards_grant(
        config: dict[str, Any], runs: Counter[str]) -> None:
    answers: list[str] = []

    def decide(record: Any) -> dict[str, Any]:
        answers.append(record.id)
        if len(answers) == 1:
            return {"type": "approve", "grant": {"scope": "everyone", **HOUR}}
        return {"type": "approve"}

    person = ScriptedApprover(decide, actor="ana")
    async with Loopgate("memory://", notifiers=[person]) as gate:
        await gate.arun(agent(runs, explicit=False), {"messages": [("user", "deploy")]},
                        config)
        assert len(answers) == 1  # the second call ran on the grant
        # the guard's own policies still allow it; the gateway's now want a person
        gate.add_policy(ApprovalPolicy("deploys", "deploy", require_explicit=True))
        other = {"configurable": {"thread_id": f"{config['configurable']['thread_id']}-2"}}
        await gate.arun(agent(runs, explicit=False), {"messages": [("user", "deploy")]},
                        other)
        assert len(answers) == 3
        assert runs == Counter({"staging": 4})


async def test_a_grant_never_approves_a_call_under_a_quorum() -> None:
    gate = await gateway()
    try:
        await gate.aregister_session("ops", "acme", approvers=["ana", "bob", "cy"])
        first = await ask(gate, session="ops")
        made = await approve_with(gate, first, {"scope": "everyone", **HOUR},
                                  approver_id="ana")
        assert not (await ask(gate, session="ops")).pending  # the grant works...
        # ...until a quorum decides the tool: N people approve each call, a grant none
        gate.add_policy(ApprovalPolicy("two", "deploy", require_explicit=True, quorum=2))
        record = await gate.asubmit("deploy?", tool_name="deploy", args={"env": "staging"},
                                    session_id="ops", client_id="acme", risk="irreversible",
                                    confidence=1.0)
        assert record.pending and record.request.quorum == 2
        # a grant on a vote is refused before the vote counts: no vote, no grant
        with pytest.raises(InvalidDecision, match="quorum"):
            await approve_with(gate, record, {"scope": "session", **HOUR}, approver_id="ana")
        assert (await gate.aget(record.id)).votes == []
        assert [g.id for g in await gate.agrants()] == [made.decision["grant"]["id"]]
        voted = await gate.arespond(record.id, {"type": "approve"}, actor="ana",
                                    approver_id="ana")
        assert voted.pending
        decided = await gate.arespond(record.id, {"type": "approve"}, actor="bob",
                                      approver_id="bob")
        assert decided.status is Status.APPROVED and decided.decided_by == "ana, bob"
    finally:
        await gate.aclose()


async def test_a_quorum_policy_stops_a_grant_even_where_the_request_takes_one_answer(
        ) -> None:
    gate = await gateway(policies=[ApprovalPolicy("two", "deploy", quorum=2)])
    try:
        # filed without a verdict (no risk or confidence), the request itself asks for one
        # answer; the gateway's quorum policy for the tool still forbids remembering it
        record = await ask(gate)
        assert record.pending
        with pytest.raises(InvalidDecision, match="quorum"):
            await approve_with(gate, record, {"scope": "everyone", **HOUR})
        assert (await gate.aget(record.id)).pending and await gate.agrants() == []
    finally:
        await gate.aclose()
