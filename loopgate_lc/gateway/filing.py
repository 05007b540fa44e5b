"""Filing: a pause or a question becomes a stored request, and people are told.

The only place a deadline is computed. A request is stored with its ``requested`` audit
event and its ``notify`` deliveries in one transaction; those to this gateway's own
notifiers are written leased to this process and made right after the commit. Before that, in
:meth:`Filing.file`, is where a rule that answers a request without asking anyone plugs
in: an ``on_request`` hook's veto today (the request is filed already decided, through
:meth:`Deciding.decide`, so no one is ever notified); a remembered permission would
answer the same way, at the same point.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Container, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict

from pydantic_core import to_json

from loopgate_lc import quorum
from loopgate_lc.decisions import request_of
from loopgate_lc.errors import InvalidDecision, RequestNotFound, SessionNotFound
from loopgate_lc.gateway.audit import Auditor, Clock, shadow_details
from loopgate_lc.gateway.deciding import Deciding
from loopgate_lc.gateway.outbox import Outbox
from loopgate_lc.gateway.settings import seconds
from loopgate_lc.gateway.timers import Timers
from loopgate_lc.grants import GRANT_CHANNEL
from loopgate_lc.hooks import Veto
from loopgate_lc.policy import PolicySet, RiskLevel
from loopgate_lc.schema import (
    ApprovalRequest,
    RequestKind,
    default_decisions,
    parse_options,
)
from loopgate_lc.stores.base import AuditEvent, RequestRecord, Store

if TYPE_CHECKING:
    from langgraph.types import Interrupt

__all__ = ["Filing", "Question"]


class QuestionFields(TypedDict, total=False):
    """The keyword arguments of :meth:`Loopgate.submit` and ``request_interaction``
    (documented there), typed once for all four of their sync and async forms."""

    kind: RequestKind | str
    options: Sequence[str | Mapping[str, Any]]
    metadata: Mapping[str, Any] | None
    session_id: str | None
    client_id: str | None
    timeout: float | timedelta | None
    tool_name: str | None
    args: Mapping[str, Any] | None
    risk: RiskLevel | str | None
    confidence: float | None
    allowed_decisions: Sequence[str] | None
    callback_url: str | None
    requester: str | None


@dataclass(frozen=True)
class Question:
    """A request filed outside any graph (:meth:`Loopgate.submit`), as typed arguments."""

    message: str
    _: KW_ONLY
    kind: RequestKind | str = RequestKind.APPROVAL
    options: Sequence[str | Mapping[str, Any]] = ()
    metadata: Mapping[str, Any] | None = None
    session_id: str | None = None
    client_id: str | None = None
    timeout: float | timedelta | None = None
    tool_name: str | None = None
    args: Mapping[str, Any] | None = None
    risk: RiskLevel | str | None = None
    confidence: float | None = None
    allowed_decisions: Sequence[str] | None = None
    callback_url: str | None = None
    requester: str | None = None


class Filing:
    """Stores requests, with their deadline, audit and deliveries."""

    def __init__(self, store: Store, auditor: Auditor, deciding: Deciding, outbox: Outbox,
                 timers: Timers, policies: PolicySet, clock: Clock,
                 default_timeout: float | None) -> None:
        self._store = store
        self._auditor = auditor
        self._deciding = deciding
        self._outbox = outbox
        self._timers = timers
        self._policies = policies
        self._clock = clock
        self._default_timeout = default_timeout

    def expiry(self, request: ApprovalRequest, now: datetime) -> datetime | None:
        """When ``request`` times out: its own deadline or timeout, else the gateway's."""
        if request.expires_at is not None:
            return request.expires_at
        timeout = request.timeout_seconds or self._default_timeout
        return now + timedelta(seconds=timeout) if timeout else None

    async def file(self, request: ApprovalRequest, *, thread_id: str | None = None,
                   interrupt_id: str | None = None, graph: str | None = None,
                   client_id: str | None = None, response_schema: Any = None,
                   foreign: bool = False) -> RequestRecord:
        """Store one request (idempotent on its id and on thread + interrupt), run
        ``on_request``, queue its notifications.

        Raises:
            SessionNotFound: It names a session that is unknown or inactive.
        """
        if request.session_id is not None:
            session = await self._store.get_session(request.session_id)
            if not session.active:
                raise SessionNotFound(request.session_id)
        now = self._clock()
        # under a quorum every channel offers only the decisions that are votes
        payload = quorum.votes_only(request.to_interrupt())
        if response_schema is not None:
            # kept as one string: stores copy it for free, and validators are cached by
            # it. Encoded in pydantic's Rust (a tool's schema is often 10 kB, which the
            # json module takes about 0.1 ms for, with sorted keys): LangGraph hands the
            # same schema over in the same order every time, so the text is stable.
            payload["response_schema"] = to_json(response_schema).decode()
        if foreign:
            payload["foreign"] = True
        record = RequestRecord(
            id=request.request_id, kind=request.type, session_id=request.session_id,
            client_id=client_id, thread_id=thread_id, interrupt_id=interrupt_id, graph=graph,
            payload=payload, created_at=now, expires_at=self.expiry(request, now))
        filed = self._filed_events(record, request)
        # answered without asking anyone: an on_request veto files it already rejected,
        # in the same one transaction
        if self._auditor.wants("on_request"):
            existing = await self._existing(record)
            if existing is not None:
                return existing
            vetoes = [v for v in await self._auditor.fire("on_request", record)
                      if isinstance(v, Veto)]
            if vetoes:
                return await self._deciding.decide(
                    record, {"type": "reject", "message": vetoes[0].reason},
                    actor="hook:on_request", channel="hook", event="vetoed", filing=filed)
        # this gateway's own channels are told by this process, right after the commit
        owed = self._outbox.deliveries(record, "notify", now, own=True)
        grants = self._deciding.grants
        query = grants.query(record, request)
        if query is not None:  # filed unless a grant may approve it, in one transaction
            found = await self._store.create_request_unless_granted(
                record, query, audit=filed, outbox=owed)
            grant = await grants.pick(found.grants, record, request)
            if grant is not None:  # remembered: approved now, filed decided, nobody told
                return await self._deciding.decide(
                    record, {"type": "approve", "granted_by": {
                        "grant_id": grant.id, "created_by": grant.created_by,
                        "request_id": grant.request_id}},
                    actor=f"grant:{grant.id}", channel=GRANT_CHANNEL, filing=filed)
        if query is None or found.record is None:
            stored, created = await self._store.create_request(record, audit=filed,
                                                               outbox=owed)
        else:
            stored, created = found.record, found.created
        if created:
            self._outbox.deliver(stored, owed)
            self._timers.arm(stored)
            await self._auditor.filed(stored)
        return stored

    def _filed_events(self, record: RequestRecord, request: ApprovalRequest
                      ) -> list[AuditEvent]:
        """``requested`` (and ``shadow``, when a shadow policy watched): the audit a
        filing commits."""
        filed = [self._auditor.event("requested", record, details={
            "kind": record.kind.value, "tool": request.name, "policy": request.policy,
            "reason": request.reason, "risk_level": request.risk_level,
            "confidence": request.confidence, "expires_at": record.expires_at,
        })]
        if request.shadow is not None:
            filed.append(self._auditor.event(
                "shadow", record, channel="policy", details=shadow_details(
                    {"tool": request.name, "tool_call_id": request.tool_call_id,
                     "risk_level": request.risk_level, "confidence": request.confidence},
                    enforced_policy=request.policy, enforced_auto=False,
                    policy=request.shadow.policy, would_auto=request.shadow.auto_approved,
                    reason=request.shadow.reason)))
        return filed

    async def _existing(self, record: RequestRecord) -> RequestRecord | None:
        """The request already filed under ``record``'s id or interrupt, if any."""
        if record.thread_id is not None and record.interrupt_id is not None:
            found = await self._store.find_request(record.thread_id, record.interrupt_id)
            if found is not None:
                return found
        with contextlib.suppress(RequestNotFound):
            return await self._store.get_request(record.id)
        return None

    async def file_interrupts(self, interrupts: Sequence[Interrupt], thread_id: str,
                              graph: str | None, *, new: Container[str] = ()
                              ) -> list[RequestRecord]:
        """File a paused run's interrupts (each once, however often it is reported).

        An interrupt is looked up before it is filed, unless ``new`` names it (its run
        has not reported it before) and it names no session: the store's insert then
        finds one filed before (by another process, or before a crash) in its own
        transaction and returns that instead, so the common pause reads nothing first.
        A re-reported interrupt (often already filed) and a session's (whose check would
        refuse a request filed before the session closed) keep the read.
        """
        records = []
        for intr in interrupts:
            request, foreign = request_of(intr, thread_id)
            if intr.id not in new or request.session_id is not None:
                existing = await self._store.find_request(thread_id, intr.id)
                if existing is not None:
                    records.append(existing)
                    continue
            records.append(await self.file(
                request, thread_id=thread_id, interrupt_id=intr.id, graph=graph,
                response_schema=intr.response_schema, foreign=foreign))
        return records

    async def submit(self, question: Question) -> RequestRecord:
        """File a request outside any graph."""
        kind = RequestKind(question.kind)
        try:
            parsed = parse_options(kind, question.options)
        except ValueError as exc:
            raise InvalidDecision(str(exc)) from exc
        verdict = None
        if (question.tool_name is not None and question.confidence is not None
                and question.risk is not None):
            verdict = self._policies.evaluate(question.tool_name, confidence=question.confidence,
                                              risk=question.risk)
        allowed = list(question.allowed_decisions or default_decisions(kind, bool(parsed)))
        deciding = (None if question.tool_name is None
                    else self._policies.match(question.tool_name))
        # callback_url is kept in the payload (ApprovalRequest allows extra fields), so
        # whichever process decides the request can still deliver the callback.
        extra = {"callback_url": question.callback_url} if question.callback_url else {}
        request = ApprovalRequest(
            type=kind,
            request_id=str(uuid.uuid4()),
            name=question.tool_name,
            args=dict(question.args) if question.args is not None else None,
            message=question.message,
            description=question.message,
            risk_level=RiskLevel.parse(question.risk) if question.risk is not None else None,
            confidence=question.confidence,
            policy=verdict.policy if verdict else None,
            reason=verdict.reason if verdict else "",
            allowed_decisions=allowed,
            options=parsed,
            metadata=dict(question.metadata or {}),
            approvers=list(verdict.approvers) if verdict else [],
            require_explicit=verdict.explicit if verdict else bool(
                deciding is not None and deciding.require_explicit),
            quorum=verdict.quorum if verdict else 1,
            rejections_needed=verdict.rejections_needed if verdict else 1,
            requester=question.requester,
            session_id=question.session_id,
            timeout_seconds=seconds(question.timeout),
            **extra,
        )
        return await self.file(request, client_id=question.client_id)
