"""Deciding: the one path by which a request leaves ``pending``.

Every channel's answer (HTTP, Telegram, CLI, notebook, a timeout, a cancel, a vetoing
hook) ends in :meth:`Deciding.decide`: one transaction with the store's compare-and-set,
the ``decided:*`` audit event and the ``resolved`` deliveries. What happens after the
commit (wake-ups, resumes, hooks) can no longer lose or change the decision.

A person's answer first passes :meth:`Deciding.respond`'s stages, in order: the request
is pending, the decider is an approver, the decision fits the request. Under a quorum
(see :mod:`loopgate_lc.quorum`) it is then a vote, between the last stage and the
compare-and-set: :meth:`Deciding.vote` counts it in one transaction, and the vote that
reaches its threshold commits the same compare-and-set in that transaction; what follows
a commit is the same whichever way it came.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from loopgate_lc import quorum
from loopgate_lc.decisions import already_decided, public_decision
from loopgate_lc.errors import ApproverNotAllowed, InvalidDecision, SessionNotFound
from loopgate_lc.gateway.audit import Auditor, Clock
from loopgate_lc.gateway.outbox import Outbox
from loopgate_lc.gateway.settings import Escalation
from loopgate_lc.gateway.validation import Schemas
from loopgate_lc.gateway.waiting import Waiters
from loopgate_lc.grants import GrantDesk, GrantSpec, grant_summary
from loopgate_lc.policy import PolicySet
from loopgate_lc.schema import ApprovalRequest, Status, decision_approves, decision_status
from loopgate_lc.stores.base import (
    AuditEvent,
    GrantRecord,
    OutboxItem,
    RequestRecord,
    Resolution,
    SessionRecord,
    Store,
)

__all__ = ["Deciding"]

Decided = Callable[[RequestRecord], None]
"""Told of every decision made here, right after its commit (wake a waiter, resume)."""


class Deciding:
    """Checks answers and records decisions."""

    def __init__(self, store: Store, auditor: Auditor, outbox: Outbox, waiters: Waiters,
                 clock: Clock, escalation: Sequence[Escalation], schemas: Schemas,
                 policies: PolicySet | None = None) -> None:
        self._store = store
        # remembered permissions: read from decisions here, matched by Filing
        live = policies if policies is not None else PolicySet()  # the gateway's own set
        self.grants = GrantDesk(store, clock=clock, policies=lambda: live,
                                approvers=self.approvers)
        self._waiters = waiters
        self._auditor = auditor
        self._outbox = outbox
        self._clock = clock
        self._escalation = tuple(escalation)
        self._schemas = schemas
        self._listeners: list[Decided] = []

    def on_decided(self, listener: Decided) -> None:
        """Call ``listener`` after every decision this process commits, first thing."""
        self._listeners.append(listener)

    async def respond(self, request_id: str, decision: Mapping[str, Any], actor: str | None,
                      channel: str, approver_id: str | None,
                      record: RequestRecord | None = None) -> RequestRecord:
        """A person's answer: checked, then decided (see the module's docstring).

        ``record`` is the request as the caller has just read it (a channel looks at it
        before it answers), so it is not read twice; the compare-and-set still decides
        against what is stored. Without one, a request a run here waits for is taken as
        the run holds it (see ``_held``), else read.
        """
        if record is None or record.id != request_id:
            record = self._held(request_id) or await self._store.get_request(request_id)
        if not record.pending:
            raise already_decided(record)
        await self.authorize(record, approver_id, actor, channel)
        checked, spec = await self._checked(record, decision)
        voter = await self.voter(record, approver_id, actor, channel)
        return await self._answer(record, checked, voter, actor, channel,
                                  self._issue(spec, record, actor, approver_id, channel))

    def _held(self, request_id: str) -> RequestRecord | None:
        """The request as a run waiting here holds it, when nothing the answer's checks
        read can have changed since it was filed: who may decide (escalation widens it
        step by step, so a gateway with escalation steps reads) and the votes (a quorum
        request's, counted by every vote). Whether it is still pending, the one thing
        left that can change, the compare-and-set checks; one decided here is read, so
        its answer is refused as before, first thing."""
        held = self._waiters.run_holds(request_id)
        if (held is None or self._escalation or quorum.needs_votes(held.request)
                or self._waiters.decided_here(request_id)):
            return None
        return held

    async def _checked(self, record: RequestRecord, decision: Mapping[str, Any]
                       ) -> tuple[dict[str, Any], GrantSpec | None]:
        """The decision checked, and the grant it carries (checked too), if any. A
        request under a quorum never takes one (see ``grant_refusal``)."""
        plain, spec = self.grants.read(decision, record, record.request)
        return await self.check(record, plain), spec

    def _issue(self, spec: GrantSpec | None, record: RequestRecord, actor: str | None,
               approver_id: str | None, channel: str) -> GrantRecord | None:
        return None if spec is None else self.grants.issue(
            spec, record, record.request, actor=actor, approver_id=approver_id,
            channel=channel)

    async def check(self, record: RequestRecord, decision: Mapping[str, Any]
                    ) -> dict[str, Any]:
        """The decision, validated once against its request (see ``Schemas``)."""
        if isinstance(decision, Mapping) and quorum.needs_votes(record.request):
            quorum.vote_of(record, decision)  # the clear refusal of an edit comes first
        return await self._schemas.check(record.request, decision)

    async def voter(self, record: RequestRecord, approver_id: str | None,
                    actor: str | None, channel: str) -> str | None:
        """Whose vote an answer is, when ``record`` needs a quorum (None when it takes a
        single decision): a named approver who did not ask for it.

        Raises:
            ApproverNotAllowed: The answer names nobody.
            SelfApproval: The voter asked for the request (audited).
        """
        if not quorum.needs_votes(record.request):
            return None
        voter = quorum.voter_of(record, approver_id)
        try:
            quorum.refuse_requester(record, voter,
                                    await quorum.requesters(self._store, record))
        except ApproverNotAllowed as exc:
            await self._auditor.append("unauthorized", record, actor=actor, channel=channel,
                                       details={"approver_id": voter, "reason": str(exc)})
            raise
        return voter

    async def _answer(self, record: RequestRecord, checked: dict[str, Any],
                      voter: str | None, actor: str | None, channel: str,
                      grant: GrantRecord | None = None) -> RequestRecord:
        """A checked answer: a vote when it has a voter, else the decision (with the
        grant it makes, if any: only a single decision makes one)."""
        if voter is None:
            return await self.decide(record, checked, actor=actor, channel=channel,
                                     grant=grant)
        if grant is not None:  # grants.read refuses these first; never let one through
            raise InvalidDecision("a vote cannot carry a grant: calls under a quorum "
                                  "cannot be remembered")
        return await self.vote(record, checked, voter, actor=actor, channel=channel)

    async def respond_batch(self, records: Sequence[RequestRecord], decisions: Any,
                            thread_id: str, actor: str | None, channel: str,
                            approver_id: str | None) -> list[RequestRecord]:
        """Decide ``records`` (a thread's pending requests in call order) by position.
        Every decision is checked before any is recorded, so a bad one leaves all
        pending."""
        if not isinstance(decisions, list) or len(decisions) != len(records):
            got = len(decisions) if isinstance(decisions, list) else "no list"
            raise InvalidDecision(f"thread {thread_id!r} has {len(records)} pending requests; "
                                  f"'decisions' must list one per request, in order (got {got})")
        checked = []
        for record, decision in zip(records, decisions, strict=True):
            await self.authorize(record, approver_id, actor, channel)
            plain, spec = await self._checked(record, decision)
            checked.append((plain, spec,
                            await self.voter(record, approver_id, actor, channel)))
        return [await self._answer(record, decision, voter, actor, channel,
                                   self._issue(spec, record, actor, approver_id, channel))
                for record, (decision, spec, voter) in zip(records, checked, strict=True)]

    async def cancel(self, request_id: str, actor: str | None, reason: str | None
                     ) -> RequestRecord:
        """Withdraw a pending request (its tool call does not run)."""
        record = await self._store.get_request(request_id)
        if not record.pending:
            raise already_decided(record)
        decision: dict[str, Any] = {"type": "cancel"}
        if reason:
            decision["message"] = reason
        return await self.decide(record, decision, actor=actor, channel="cancel")

    async def authorize(self, record: RequestRecord, approver_id: str | None,
                        actor: str | None, channel: str) -> None:
        """Refuse (and audit) a decider the request's approvers do not include.

        Where a session, policy or escalation step names approvers, a decider must name
        itself (``approver_id``): leaving it out is refused, never a way around the list.
        """
        if admits(*await self.approvers(record), approver_id):
            return
        await self._auditor.append("unauthorized", record, actor=actor, channel=channel,
                                   details={"approver_id": None if approver_id is None
                                            else str(approver_id)})
        who = actor or approver_id or "an unnamed decider"
        raise ApproverNotAllowed(
            f"{who} is not an approver for request {record.id}"
            + ("" if approver_id is not None else ": name the approver who decides"))

    async def refuse(self, request_id: str, actor: str | None, channel: str,
                     reason: str) -> None:
        """Audit a decider a channel refused by its own rules."""
        record = await self._store.get_request(request_id)
        await self._auditor.append("unauthorized", record, actor=actor, channel=channel,
                                   details={"reason": reason})

    async def may_decide(self, records: Sequence[RequestRecord], approver_id: str | None
                         ) -> list[bool]:
        """For each record, whether ``approver_id`` passes :meth:`authorize`, deciding and
        auditing nothing; each session is read once however many of its requests come."""
        sessions: dict[str, SessionRecord | None] = {}
        return [admits(*await self.approvers(record, sessions), approver_id)
                for record in records]

    async def approvers(self, record: RequestRecord,
                        sessions: dict[str, SessionRecord | None] | None = None
                        ) -> tuple[set[str], bool]:
        """Who may decide, and whether anyone names them: the policy's list if it names
        one, else the session's; plus the approvers of every escalation step reached.
        The session's chat counts as an approver, but does not by itself name any.
        ``sessions`` keeps session reads across calls."""
        named = {str(a) for a in record.request.approvers}
        allowed: set[str] = set()
        if not named and record.session_id:
            cache = {} if sessions is None else sessions
            if record.session_id not in cache:
                try:
                    cache[record.session_id] = await self._store.get_session(
                        record.session_id)
                except SessionNotFound:
                    cache[record.session_id] = None
            session = cache[record.session_id]
            if session is not None:
                named = {str(a) for a in session.approvers}
                if session.telegram_id is not None:
                    allowed.add(str(session.telegram_id))
        for step in self._escalation[: record.escalation_level]:
            named.update(str(a) for a in step.approvers)
        return allowed | named, bool(named)

    async def decide(self, record: RequestRecord, decision: dict[str, Any], *,
                     actor: str | None, channel: str | None, event: str | None = None,
                     filing: Sequence[AuditEvent] = (),
                     grant: GrantRecord | None = None) -> RequestRecord:
        """The single place a request leaves ``pending``: one transaction with the
        compare-and-set, its audit event and its ``resolved`` deliveries; then, after the
        commit, listeners and hooks, which can no longer lose or change it. (A deciding
        vote commits the same, inside its own transaction: see :meth:`vote`.)

        With ``filing`` (the ``requested`` event of a record not stored yet), the record
        is filed already decided, in the same one transaction. A ``grant`` the decision
        makes is stored in that transaction too, with its own audit event.

        Raises:
            AlreadyDecided: Someone else's decision won the compare-and-set.
        """
        if grant is not None:
            decision = {**decision, "grant": grant_summary(grant)}
        decision = {**decision, "actor": actor, "channel": channel}
        status = decision_status(decision)
        now = self._clock()
        # a run waits here to resume it: claim the resume in this same transaction
        handing = not filing and self._hands_over(record)
        try:
            audit, outbox = self._effects(record, decision, now, event=event,
                                          handing=handing, grant=grant)
        except BaseException:
            if handing:  # the run waits for this hand-over: it ends, with nothing
                self._waiters.hand_over(record.id, None)
            raise
        if not filing:
            # deliveries of this request made here and not yet recorded ride along
            try:
                with self._outbox.riding(record.id) as delivered:
                    decided = await self._store.resolve(
                        record.id, status=status, decision=decision, decided_by=actor,
                        channel=channel, decided_at=now, audit=audit, outbox=outbox,
                        resolved_to_message_refs=True, resumed_at=now if handing else None,
                        grants=[grant] if grant else (), delivered=delivered, seen=record)
            except BaseException:
                if handing:
                    self._waiters.hand_over(record.id, None)
                raise
            decided = decided.sharing_request(record)  # a decision leaves the payload be
        else:
            decided, created = await self._store.create_request(
                _decided(record, status, decision, actor, channel, now),
                audit=[*filing, *audit], outbox=outbox)
            if not created:  # filed meanwhile by someone else: theirs stands
                return decided
            await self._auditor.filed(decided)
        await self._settled(decided, decision, record.request, handing=handing, owed=outbox)
        return decided

    async def vote(self, record: RequestRecord, decision: dict[str, Any], voter: str, *,
                   actor: str | None, channel: str) -> RequestRecord:
        """Count ``voter``'s checked vote on ``record`` (see :mod:`loopgate_lc.quorum`):
        one transaction with its ``voted`` audit event and the deliveries that show the
        new count. The vote that reaches its threshold decides in that same transaction,
        through the compare-and-set :meth:`decide` commits, with the same audit,
        deliveries and resume claim; what follows is what follows every decision.

        Raises:
            AlreadyDecided: The request was decided before this vote counted.
            DuplicateVote: ``voter`` voted on it before; nothing changes.
        """
        decision = {**decision, "actor": actor, "channel": channel}
        now = self._clock()
        handing = self._hands_over(record)
        try:
            audit, outbox = self._effects(record, decision, now, handing=handing)
            # deliveries of this request made here and not yet recorded ride along
            # (before the vote's own: an open one would otherwise stand in for the new
            # count's)
            with self._outbox.riding(record.id) as delivered:
                ballot = quorum.ballot(
                    record, decision, voter=voter, now=now,
                    audit=self._auditor.event("voted", record, actor=actor, channel=channel),
                    outbox=self._outbox.deliveries(record, "voted", now,
                                                   self._outbox.showing_votes(record)),
                    resolution=Resolution(
                        request_id=record.id, status=decision_status(decision), decision=decision,
                        decided_by=actor, channel=channel, decided_at=now, audit=audit,
                        outbox=outbox, resolved_to_message_refs=True,
                        resumed_at=now if handing else None))
                voted = await self._store.vote(replace(ballot, delivered=delivered))
        except BaseException:
            if handing:
                self._waiters.hand_over(record.id, None)
            raise
        if voted.pending:  # counted; the request waits for more votes
            if handing:
                self._waiters.hand_over(record.id, None)
            self._outbox.kick()
            return voted
        await self._settled(voted, voted.decision or decision, record.request,
                            handing=handing, owed=outbox)
        return voted

    def _hands_over(self, record: RequestRecord) -> bool:
        """Whether a decision of ``record`` claims its resume for a run waiting here, in
        its own transaction; if so the run waits for that commit (``Waiters.handing``)."""
        if record.interrupt_id is None or not self._waiters.resumed_here(record.id):
            return False
        self._waiters.handing(record.id)
        return True

    def _effects(self, record: RequestRecord, decision: dict[str, Any], now: datetime, *,
                 event: str | None = None, handing: bool, grant: GrantRecord | None = None
                 ) -> tuple[list[AuditEvent], list[OutboxItem]]:
        """What a decision commits with it: its ``decided:*`` audit event (then
        ``grant_created`` for the grant it makes, and ``resumed`` when it claims the
        resume) and its ``resolved`` deliveries (leased to this process, which makes
        them after the commit)."""
        status = decision_status(decision)
        actor, channel = decision.get("actor"), decision.get("channel")
        audit = [self._auditor.event(event or f"decided:{status.value}", record, actor=actor,
                                     channel=channel,
                                     details={"decision": public_decision(decision)})]
        if grant is not None:
            audit.append(self._auditor.event("grant_created", record, actor=actor,
                                             channel=channel, details=grant_summary(grant)))
        if handing:
            audit.append(self._auditor.event("resumed", record))
        return audit, self._outbox.deliveries(record, "resolved", now, own=True)

    async def _settled(self, decided: RequestRecord, decision: dict[str, Any],
                       request: ApprovalRequest, *, handing: bool,
                       owed: Sequence[OutboxItem]) -> None:
        """What follows a committed decision, whatever committed it (an answer, a timeout,
        a cancel, a veto, or the vote that reached its quorum): wake-ups, listeners,
        hooks and its ``owed`` deliveries, which can no longer lose or change it."""
        # whoever waits to resume comes first: hooks and notifications are not on that path
        if handing:
            self._waiters.hand_over(decided.id, decided)
        self._waiters.wake(decided, here=True)
        for listener in self._listeners:
            listener(decided)
        await self._fire(decided, decided.status, decision, request)
        self._outbox.deliver(decided, owed, shown=True)

    async def _fire(self, decided: RequestRecord, status: Status, decision: dict[str, Any],
                    request: ApprovalRequest) -> None:
        if status is Status.TIMEOUT:
            await self._auditor.fire("on_timeout", decided)
        elif status is Status.CANCELLED:
            await self._auditor.fire("on_cancel", decided)
        elif decision_approves(decision, request):
            await self._auditor.fire("on_approve", decided, False, request.policy)
        elif status is Status.REJECTED:
            await self._auditor.fire("on_reject", decided)


def admits(allowed: set[str], named: bool, approver_id: str | None) -> bool:
    """The approver rule: where approvers are named, a decider must name itself and be
    one of them; where none are, anyone may decide (a named decider only if it is the
    session's chat, when the session has one)."""
    if approver_id is None:
        return not named
    return not allowed or str(approver_id) in allowed


def _decided(record: RequestRecord, status: Status, decision: dict[str, Any],
             actor: str | None, channel: str | None, now: datetime) -> RequestRecord:
    return record.model_copy(update={"status": status, "decision": decision,
                                     "decided_by": actor, "channel": channel,
                                     "decided_at": now})
