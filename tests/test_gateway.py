"""Loopgate.respond: one path, exactly once, on every store backend."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

import pytest

from loopgate_lc import (
    AlreadyDecided,
    ApprovalPolicy,
    ApproverNotAllowed,
    DecisionNotAllowed,
    InvalidDecision,
    LoopgateError,
    RequestNotFound,
    RiskLevel,
    SessionExists,
    SessionNotFound,
    Status,
)
from loopgate_lc.gateway import Loopgate


async def test_two_hundred_concurrent_answers_on_twenty_requests(any_store: Any) -> None:
    async with Loopgate(store=any_store) as gate:
        records = [await gate.asubmit(f"deploy build {i}?") for i in range(20)]
        jobs = [
            gate.arespond(r.id, {"type": "approve" if n % 2 else "reject"}, actor=f"user{n}")
            for r in records for n in range(10)
        ]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        wins = [r for r in results if not isinstance(r, BaseException)]
        losses = [r for r in results if isinstance(r, BaseException)]
        assert len(wins) == 20
        assert len(losses) == 180
        assert all(isinstance(e, AlreadyDecided) for e in losses)
        assert Counter(w.id for w in wins) == Counter({r.id: 1 for r in records})
        for win in wins:  # every winner's answer is the stored one; nothing lost
            stored = await gate.aget(win.id)
            assert (stored.status, stored.decided_by) == (win.status, win.decided_by)
        loser = next(e for e in losses if isinstance(e, AlreadyDecided))
        stored = await gate.aget(loser.request_id)
        assert (loser.status, loser.decided_by, loser.decided_at) == (
            stored.status.value, stored.decided_by, stored.decided_at)


def test_threads_racing_through_the_blocking_api(tmp_path: Any) -> None:
    with Loopgate(store=f"sqlite:///{tmp_path / 'gate.db'}") as gate:
        record = gate.submit("rotate keys?")
        outcomes: list[str] = []

        def answer(n: int) -> None:
            try:
                gate.respond(record.id, {"type": "approve"}, actor=f"t{n}")
                outcomes.append("won")
            except AlreadyDecided as exc:
                outcomes.append(f"lost to {exc.decided_by}")

        threads = [threading.Thread(target=answer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert outcomes.count("won") == 1
        winner = gate.get(record.id).decided_by
        assert outcomes.count(f"lost to {winner}") == 7


async def test_unknown_ids_and_second_answers_are_errors_never_ignored() -> None:
    async with Loopgate(store="memory://") as gate:
        with pytest.raises(RequestNotFound, match="no approval request with id 'nope'"):
            await gate.arespond("nope", {"type": "approve"})
        with pytest.raises(RequestNotFound):
            await gate.acancel("nope")
        record = await gate.asubmit("ok?")
        await gate.arespond(record.id, {"type": "approve"}, actor="@ana", channel="telegram")
        with pytest.raises(AlreadyDecided) as info:
            await gate.arespond(record.id, {"type": "reject"}, actor="@bob")
        err = info.value
        assert (err.status, err.decided_by, err.channel) == ("approved", "@ana", "telegram")
        assert f"request '{record.id}' was already approved by @ana via telegram at" in str(err)
        assert isinstance(err, LoopgateError)


async def test_a_cancelled_request_cannot_be_approved_and_vice_versa() -> None:
    async with Loopgate(store="memory://") as gate:
        first = await gate.asubmit("a?")
        await gate.acancel(first.id, actor="ci", reason="pipeline aborted")
        with pytest.raises(AlreadyDecided, match="already cancelled by ci"):
            await gate.arespond(first.id, {"type": "approve"})
        assert (await gate.aget(first.id)).decision == {
            "type": "cancel", "message": "pipeline aborted", "actor": "ci", "channel": "cancel"}
        second = await gate.asubmit("b?")
        await gate.arespond(second.id, {"type": "approve"}, actor="ana")
        with pytest.raises(AlreadyDecided, match="already approved by ana"):
            await gate.acancel(second.id)


@pytest.mark.parametrize(
    ("submit", "decision", "error", "message"),
    [
        ({}, {"type": "edit", "edited_action": {"name": "x", "args": {}}}, DecisionNotAllowed,
         "decision 'edit' is not allowed for this request; allowed: approve, reject"),
        ({}, {"type": "timeout"}, DecisionNotAllowed, "decided by loopgate_lc itself"),
        ({}, {"type": "approve!"}, InvalidDecision, "does not match any of the expected tags"),
        ({}, {"kind": "approve"}, InvalidDecision, "Unable to extract tag using discriminator"),
        ({}, "approve", InvalidDecision, "a decision must be an object"),
        ({"kind": "choice", "options": ["Dev", "Prod"]}, {"type": "respond", "message": "QA"},
         InvalidDecision, "choose one of the options: 'Dev', 'Prod'"),
        ({"tool_name": "deploy", "args": {"env": "prod"},
          "allowed_decisions": ["approve", "edit"]},
         {"type": "edit", "edited_action": {"name": "rm_rf", "args": {}}}, InvalidDecision,
         "an edit cannot switch tools: this request is for 'deploy', the edit names 'rm_rf'"),
    ],
)
async def test_bad_decisions_get_a_clear_error_and_leave_the_request_pending(
    submit: dict[str, Any], decision: Any, error: type[Exception], message: str
) -> None:
    async with Loopgate(store="memory://") as gate:
        record = await gate.asubmit("question?", **submit)
        with pytest.raises(error) as info:
            await gate.arespond(record.id, decision)
        assert message in str(info.value)
        assert (await gate.aget(record.id)).status is Status.PENDING


async def test_sessions_follow_loopgate_semantics() -> None:
    async with Loopgate(store="memory://") as gate:
        session = await gate.aregister_session("deploy", "ci-cd", 123456789, approvers=[42])
        assert (session.active, session.approvers) == (True, ["42"])
        with pytest.raises(SessionExists):
            await gate.aregister_session("deploy", "other", 1)
        with pytest.raises(SessionNotFound):
            await gate.asession("nope")
        with pytest.raises(SessionNotFound):
            await gate.asubmit("x?", session_id="nope")
        record = await gate.asubmit("deploy?", session_id="deploy", client_id="ci-cd")
        assert [r.id for r in await gate.apending(session_id="deploy")] == [record.id]
        await gate.adeactivate_session("deploy")
        assert not (await gate.asession("deploy")).active
        with pytest.raises(SessionNotFound):
            await gate.asubmit("more?", session_id="deploy")
        # registering again over an inactive session reactivates it
        assert (await gate.aregister_session("deploy", "ci-cd", 5)).active


async def test_only_the_sessions_or_policys_approvers_decide() -> None:
    async with Loopgate(store="memory://") as gate:
        await gate.aregister_session("finance", "bot", telegram_id=1001, approvers=["1002"])
        record = await gate.asubmit("pay $9,000?", session_id="finance")
        with pytest.raises(ApproverNotAllowed):
            await gate.arespond(record.id, {"type": "approve"}, actor="telegram:666",
                                channel="telegram", approver_id="666")
        assert (await gate.aget(record.id)).pending
        events = [e for e in await gate.aaudit(request_id=record.id)
                  if e.event == "unauthorized"]
        assert [(e.actor, e.details["approver_id"]) for e in events] == [("telegram:666", "666")]
        decided = await gate.arespond(record.id, {"type": "approve"}, actor="telegram:1002",
                                      channel="telegram", approver_id="1002")
        assert decided.status is Status.APPROVED

        gate.add_policy(ApprovalPolicy("big", "wire", require_explicit=True, approvers=("cfo",)))
        verdict = gate.should_approve("wire", 1.0, RiskLevel.READ_ONLY)
        assert (verdict.auto_approved, verdict.approvers) == (False, ("cfo",))
        wire = await gate.asubmit("wire?", session_id="finance", tool_name="wire", args={},
                                  confidence=1.0, risk="read_only")
        with pytest.raises(ApproverNotAllowed):  # the policy's list replaces the session's
            await gate.arespond(wire.id, {"type": "approve"}, approver_id="1001")
        await gate.arespond(wire.id, {"type": "approve"}, approver_id="cfo")


def test_request_interaction_blocks_until_a_person_answers() -> None:
    with Loopgate(store="memory://") as gate:

        def person() -> None:
            for _ in range(200):
                pending = gate.pending()
                if pending:
                    gate.respond(pending[0].id, {"type": "respond", "message": "Staging"},
                                 actor="ana")
                    return
                time.sleep(0.01)

        threading.Thread(target=person).start()
        answer = gate.request_interaction("Where to?", kind="choice",
                                          options=["Staging", "Production", "Cancel"], wait=10)
        assert (answer.choice, answer.approved, answer.decided_by) == ("Staging", False, "ana")
        assert answer.status is Status.ANSWERED


async def test_arequest_interaction_cancels_when_the_wait_ends() -> None:
    async with Loopgate(store="memory://") as gate:
        answer = await gate.arequest_interaction("Approve?", wait=0.05)
        assert (answer.status, answer.approved) == (Status.CANCELLED, False)
        (record,) = await gate.store.list_requests()
        assert record.status is Status.CANCELLED


def test_blocking_calls_from_the_gateways_own_loop_are_refused() -> None:
    with Loopgate(store="memory://") as gate:
        async def inside() -> None:
            gate.pending()

        with pytest.raises(RuntimeError, match="use the async twin"):
            gate._portal.call(inside())


async def test_a_request_filed_without_channels_is_delivered_by_a_process_with_them(
        tmp_path: Any) -> None:
    from loopgate_lc.testing import RecordingNotifier

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    async with Loopgate(url) as filer:  # e.g. `loopgate-lc mcp` without Telegram
        record = await filer.asubmit("Rotate the keys?")
        phone = RecordingNotifier("phone")
        async with Loopgate(url, notifiers=[phone], poll_interval=0.05):
            for _ in range(400):  # bounded: 20 s
                if phone.notified:
                    break
                await asyncio.sleep(0.05)
            assert [r.id for r in phone.notified] == [record.id]
            # a later watch pass delivers a later request, and does not send the first again
            second = await filer.asubmit("Rotate the certificates?")
            for _ in range(400):  # bounded: 20 s
                if len(phone.notified) >= 2:
                    break
                await asyncio.sleep(0.05)
            assert [r.id for r in phone.notified] == [record.id, second.id]


async def test_policy_auto_approval_returns_at_once_and_is_audited() -> None:
    from loopgate_lc.testing import RecordingNotifier

    person = RecordingNotifier()
    policies = [ApprovalPolicy("reads", "get_*", max_risk_level=RiskLevel.READ_ONLY)]
    async with Loopgate("memory://", notifiers=[person], policies=policies) as gate:
        answer = await gate.arequest_interaction(
            "Read the user?", tool_name="get_user", confidence=0.9,
            risk=RiskLevel.READ_ONLY, wait=5)
        assert (answer.approved, answer.status, answer.decided_by) == (
            True, Status.APPROVED, "policy:reads")
        assert await gate.apending() == [] and person.notified == []
        [event] = await gate.aaudit()
        assert (event.event, event.channel, event.details["policy"]) == (
            "auto_approved", "policy", "reads")


async def test_requests_without_a_timeout_get_the_default_one() -> None:
    from loopgate_lc.gateway import DEFAULT_TIMEOUT

    async with Loopgate("memory://") as gate:
        record = await gate.asubmit("Ship it?")
        assert record.expires_at is not None
        waited = (record.expires_at - record.created_at).total_seconds()
        assert waited == DEFAULT_TIMEOUT == gate.default_timeout
    async with Loopgate("memory://", default_timeout=30) as gate:
        record = await gate.asubmit("Ship it?")
        assert record.expires_at is not None
        assert (record.expires_at - record.created_at).total_seconds() == 30


async def test_an_interrupt_filed_before_is_returned_when_a_run_first_reports_it(
    any_store: Any,
) -> None:
    """A run files an interrupt it has not reported before without looking it up first;
    the store's insert must still find the one filed earlier (by another process, or
    before a crash) and return it, filing nothing twice."""
    from langgraph.types import Interrupt

    intr = Interrupt(value="which environment?", id="interrupt-1")
    async with Loopgate(store=any_store) as gate:
        filing = gate._p.filing
        (first,) = await filing.file_interrupts([intr], "thread-1", None)
        (again,) = await filing.file_interrupts([intr], "thread-1", None, new={intr.id})
        assert again.id == first.id and again.pending
        assert [r.id for r in await gate.apending(thread_id="thread-1")] == [first.id]
        requested = [e for e in await any_store.list_audit(request_id=first.id)
                     if e.event == "requested"]
        assert len(requested) == 1
