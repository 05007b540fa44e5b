"""The store contract: where every pending approval, every answer and every audit event
lives.

Every backend (memory, SQLite, Postgres) implements :class:`Store` and passes the one
conformance suite, :mod:`loopgate_lc.testing.stores` (third-party stores run it too).
The contract's central promises:

- leaving ``pending`` is one atomic compare-and-set (:meth:`Store.resolve`), so of any
  number of concurrent answers exactly one wins and the others get :class:`AlreadyDecided`;
- every state change commits together with its audit events and outbox entries, or not
  at all: filing, deciding, escalating, claiming and finishing a resume, and finishing a
  delivery each take the ``audit``/``outbox`` they cause and write them in the same
  transaction. A crash at any instant leaves the whole change or none of it;
- a delivery can be owed and leased in one write: an outbox entry written with
  ``leased_until`` belongs to the writing process until then (it delivers it itself, no
  claim needed), and once delivered it is recorded by :class:`Delivered`, which a
  decision or a finished resume of the same request carries in its own transaction
  (:meth:`Store.complete_deliveries` records the rest).

All methods are async (servers and graphs run on event loops); timestamps are
timezone-aware UTC ``datetime`` objects; JSON-ish fields are plain ``dict``/``list``.
The records build their validators on first use (``defer_build``), as the wire types of
:mod:`loopgate_lc.schema` do: a command that reads audit events builds no request record.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from loopgate_lc.schema import ApprovalRequest, RequestKind, Status, utcnow
from loopgate_lc.stores._values import check_limit, coerce_status, final_status, utc, utc_or_none

__all__ = [
    "AuditEvent",
    "AuditQuery",
    "Ballot",
    "Delivered",
    "Filed",
    "GrantQuery",
    "GrantRecord",
    "GrantScope",
    "GrantTarget",
    "OutboxItem",
    "RequestQuery",
    "RequestRecord",
    "RequestScope",
    "Resolution",
    "SessionRecord",
    "Store",
    "Vote",
]


class SessionRecord(BaseModel):
    """A Loopgate session: requests are routed by session, not by client.

    Attributes:
        session_id: The routing key clients send with every request.
        client_id: Who registered it (informational, as in Loopgate).
        telegram_id: The Telegram chat (user or group) that receives its requests.
        approvers: Further approver ids (Telegram user ids or names) allowed to decide;
            the ``telegram_id`` user is always allowed.
        active: False after ``deactivate``; an inactive session takes no new requests.
    """

    model_config = ConfigDict(extra="forbid", defer_build=True)

    session_id: str
    client_id: str = ""
    #: a 64-bit integer, as Telegram's chat ids and every database column are
    telegram_id: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    approvers: list[str] = Field(default_factory=list)
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    metadata: dict[str, Any] = Field(default_factory=dict)


class Vote(BaseModel):
    """One person's vote on a request that needs a quorum (see :mod:`loopgate_lc.quorum`).

    Attributes:
        voter: The identity that voted (its approver id); counts once per request.
        vote: ``approve`` or ``reject``.
        actor: Who voted, as the audit names them ("telegram:42 (@ana)", "api:key1").
        channel: Through which channel.
        message: A rejection's reason, if given.
    """

    model_config = ConfigDict(extra="forbid", defer_build=True)

    voter: str = Field(min_length=1, max_length=256)
    vote: Literal["approve", "reject"]
    actor: str | None = None
    channel: str | None = None
    at: datetime = Field(default_factory=utcnow)
    message: str | None = None


class RequestRecord(BaseModel):
    """One approval request and, once decided, its answer.

    ``payload`` is the full :class:`~loopgate_lc.schema.ApprovalRequest` as JSON.
    ``(thread_id, interrupt_id)`` is unique when both are set: filing the same interrupt
    twice returns the first record.
    """

    model_config = ConfigDict(extra="forbid", defer_build=True)

    id: str
    kind: RequestKind
    session_id: str | None = None
    client_id: str | None = None
    thread_id: str | None = None
    interrupt_id: str | None = None
    graph: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    status: Status = Status.PENDING
    decision: dict[str, Any] | None = None
    decided_by: str | None = None
    channel: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    decided_at: datetime | None = None
    escalation_level: int = 0
    resumed_at: datetime | None = None
    resume_done_at: datetime | None = None
    message_refs: dict[str, Any] = Field(default_factory=dict)
    #: the votes counted so far, in the order they were cast (quorum requests only)
    votes: list[Vote] = Field(default_factory=list)
    # the payload last parsed, and what it parsed to (see ``request``)
    _parsed: tuple[dict[str, Any], ApprovalRequest] | None = PrivateAttr(default=None)

    @property
    def pending(self) -> bool:
        return self.status is Status.PENDING

    def counted(self, vote: Literal["approve", "reject"]) -> int:
        """How many votes of one kind the request has."""
        return sum(v.vote == vote for v in self.votes)

    @property
    def request(self) -> ApprovalRequest:
        """The parsed request the payload holds, typed.

        Parsed on first use and kept while ``payload`` is the same object, so deciding,
        auditing and resuming one record parse it once. Read this instead of string
        keys of ``payload``; the payload stays the stored, wire form.
        """
        # read from pydantic's private dict directly: ``self._parsed`` goes through
        # ``BaseModel.__getattr__``, which costs more than the rest of this property
        private = self.__pydantic_private__
        parsed = None if private is None else private.get("_parsed")
        if parsed is None or parsed[0] is not self.payload:
            parsed = (self.payload, ApprovalRequest.model_validate(self.payload))
            self._parsed = parsed
        return parsed[1]

    def sharing_request(self, other: RequestRecord) -> RequestRecord:
        """This record, told ``other``'s parsed request when both hold the same payload
        (a decision's record read back from the store), so it is not parsed again."""
        if other.payload == self.payload:
            self._parsed = (self.payload, other.request)
        return self

    @property
    def shown(self) -> ApprovalRequest:
        """:attr:`request` for showing to people, which never raises.

        A channel must report a malformed request, never crash on one (a row edited by
        hand, a third-party store): a payload that does not parse still shows what of it
        does, under the record's own id and kind.
        """
        try:
            return self.request
        except ValidationError:
            pass
        data = {**self.payload, "type": self.kind, "request_id": self.id}
        for _ in range(len(data)):
            try:
                return ApprovalRequest.model_validate(data)
            except ValidationError as exc:  # drop the fields that do not parse, then retry
                bad = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
                if not bad - {"type", "request_id"}:
                    break
                data = {k: v for k, v in data.items() if k not in bad - {"type", "request_id"}}
        return ApprovalRequest(type=self.kind, request_id=self.id)


class AuditEvent(BaseModel):
    """One append-only line of the audit trail: who, through which channel, when, what."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    id: int | None = None
    at: datetime = Field(default_factory=utcnow)
    event: str
    request_id: str | None = None
    session_id: str | None = None
    thread_id: str | None = None
    actor: str | None = None
    channel: str | None = None
    args_hash: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


OutboxKind = Literal["notify", "resolved", "callback", "voted"]

GrantScope = Literal["thread", "session", "everyone"]
"""Where a grant applies: the thread or the session of the decision that made it, or
every request of the same client (tenant)."""


@dataclass(frozen=True, slots=True)
class GrantTarget:
    """Where a request stands, as grant scopes see it: its thread, session and client."""

    thread_id: str | None = None
    session_id: str | None = None
    client_id: str | None = None


class GrantRecord(BaseModel):
    """A remembered permission: a person approved a call and asked for calls like it to
    be approved without asking again (see :mod:`loopgate_lc.grants`).

    Attributes:
        id: ``g_`` and random characters.
        tool: The tool name calls must have, exactly.
        args: Argument name -> constraint (``{"equals": v}``, ``{"prefix": "..."}``,
            ``{"one_of": [...]}``, ``{"min": n, "max": n}``, ``{"any": true}``); a call
            with an argument not named here never matches.
        scope: ``thread``, ``session`` or ``everyone`` (see :data:`GrantScope`).
        session_id, thread_id, client_id: Of the decision that made it: what ``scope``
            compares with, and the tenant an API key must own to see or revoke it.
        request_id: The request whose decision made it.
        created_by: Who decided (the audit's actor); ``approver_id`` the identity
            checked against approvers, which must still be allowed where it is used.
        expires_at: When it stops matching; None lasts until revoked.
        revoked_at, revoked_by: Set once, by the first revocation.
    """

    model_config = ConfigDict(extra="forbid", defer_build=True)

    id: str
    tool: str
    args: dict[str, dict[str, Any]] = Field(default_factory=dict)
    scope: GrantScope
    session_id: str | None = None
    thread_id: str | None = None
    client_id: str | None = None
    request_id: str
    created_by: str | None = None
    approver_id: str | None = None
    channel: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None

    def live(self, now: datetime) -> bool:
        """Not revoked, and not expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def covers(self, target: GrantTarget) -> bool:
        """Whether a request at ``target`` is in this grant's scope: its thread, its
        session, or (``everyone``) its client, requests without one counting as one."""
        if self.scope == "thread":
            return target.thread_id is not None and target.thread_id == self.thread_id
        if self.scope == "session":
            return target.session_id is not None and target.session_id == self.session_id
        return target.client_id == self.client_id


class OutboxItem(BaseModel):
    """A delivery owed to a notifier, kept until it succeeds so a crash loses nothing.

    ``voted`` deliveries show a quorum request's new count on a channel that can.
    It ends ``done``: delivered, or (``dead``) given up on after its last failure.
    ``created_at`` is when it was first owed (the age a gateway gives up at).
    ``leased_until``: given to a write, the item is stored already leased until then, to
    the writing process, which delivers it itself without a claim (anyone may claim it
    once the lease has passed: the writer died); read back, the lease it is under now.
    """

    model_config = ConfigDict(extra="forbid", defer_build=True)

    id: int | None = None
    request_id: str
    notifier: str
    kind: OutboxKind = "notify"
    attempts: int = 0
    due_at: datetime = Field(default_factory=utcnow)
    last_error: str | None = None
    done: bool = False
    dead: bool = False
    created_at: datetime | None = None
    leased_until: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Delivered:
    """A delivery carried out under a lease, to record as done.

    The lease identifies the item: the open ``(request_id, notifier, kind)`` entry still
    leased until exactly ``leased_until`` (the lease it was written or claimed with).
    Recording it marks the entry done, stores ``message_ref`` (when not None) as the
    request's reference on that channel and appends ``audit``, all in one transaction.
    When the entry is no longer held under that lease (the lease passed and another
    worker took it over, or it is done already) nothing is written: whoever holds it now
    delivers and records it, so a delivery is made at least once, never lost.

    Stores record these inside a decision (:attr:`Resolution.delivered`), a vote, an
    escalation, a resume claim or completion, or on their own
    (:meth:`Store.complete_deliveries`), so a delivery finished just before the next
    change of its request costs no transaction of its own. A change that owes a channel a
    new delivery must carry the finished ones of its request: an open entry of the same
    channel and kind would otherwise absorb the new one.

    Recording a notification's ``message_ref`` on a request decided meanwhile also owes
    that channel a ``resolved`` delivery (unless it has one), as the decision would have
    owed it had the reference been recorded before.
    """

    request_id: str
    notifier: str
    kind: OutboxKind
    leased_until: datetime
    message_ref: Any = None
    audit: Sequence[AuditEvent] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestScope:
    """A tenant's share of the requests: those of these sessions or these clients.

    What a scoped API key may see (:meth:`ApiKey.may_use`), as a filter a store applies
    in its query, so a listing pages over the tenant's requests only.
    """

    sessions: frozenset[str] = frozenset()
    clients: frozenset[str] = frozenset()

    def holds(self, session_id: str | None, client_id: str | None) -> bool:
        """Whether a request with these ids is inside the scope."""
        return (session_id is not None and session_id in self.sessions) or (
            client_id is not None and client_id in self.clients)


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestQuery:
    """Which requests :meth:`Store.list_requests` returns: every given filter holds.

    Built (and checked) once by :meth:`Store.list_requests`, so backends only answer it.
    ``after`` is a paging cursor: the id of the last request of the previous page.
    ``tool`` and ``risk`` match the request payload's ``name`` and ``risk_level``.
    """

    status: Status | None = None
    decided: bool = False
    session_id: str | None = None
    thread_id: str | None = None
    graph: str | None = None
    tool: str | None = None
    risk: str | None = None
    scope: RequestScope | None = None
    unresumed: bool = False
    stale_before: datetime | None = None
    newest_first: bool = False
    limit: int | None = None
    after: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditQuery:
    """Which events :meth:`Store.list_audit` returns; ``since`` inclusive, ``until`` not.

    ``after`` and ``before`` are event ids (paging cursors, both exclusive); ``newest``
    keeps the last ``limit`` matches instead of the first (still returned in order).
    """

    request_id: str | None = None
    session_id: str | None = None
    thread_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None
    after: int | None = None
    before: int | None = None
    newest: bool = False
    event: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class GrantQuery:
    """Which grants :meth:`Store.list_grants` returns, oldest first; ``live_at`` keeps
    those neither revoked nor expired at that time, ``covering`` those whose scope
    covers a request there (see :meth:`GrantRecord.covers`)."""

    tool: str | None = None
    session_id: str | None = None
    client_id: str | None = None
    request_id: str | None = None
    live_at: datetime | None = None
    covering: GrantTarget | None = None
    limit: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Filed:
    """What :meth:`Store.create_request_unless_granted` did: filed ``record``
    (``created`` as :meth:`Store.create_request` says), or wrote nothing because the
    grants it looked up first (``grants``, oldest first) may approve the request."""

    record: RequestRecord | None = None
    created: bool = False
    grants: list[GrantRecord] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True, slots=True)
class Resolution:
    """A decision to commit: the compare-and-set plus what it causes.

    Attributes:
        resolved_to_message_refs: Also queue a ``resolved`` delivery to every channel
            the request has a message reference on when it is decided (read inside the
            transaction, so a message shown a moment before is updated too).
        resumed_at: Also claim the resume (as :meth:`Store.mark_resumed` would), in the
            same transaction: the deciding process resumes the run itself, so a separate
            claim would only cost another commit.
        grants: Remembered permissions the decision creates, stored with it.
        delivered: Deliveries of this request finished under their lease, recorded
            before the compare-and-set in the same transaction (a message reference they
            store is one ``resolved_to_message_refs`` sees); if the decision is refused,
            nothing of them is written either.
        seen: The request as the decider last read it, if it has it. A store may build
            the decided record from it: the fields a request is filed with and never
            changes (its payload first) taken from ``seen`` (shared, not copied, as is
            its parsed request), the rest as stored, instead of reading the whole row
            back and parsing its payload again. Ignored unless its id is
            ``request_id``; never decided against (the compare-and-set reads the
            stored status).
    """

    request_id: str
    status: Status
    decision: dict[str, Any]
    decided_by: str | None
    channel: str | None
    decided_at: datetime
    audit: Sequence[AuditEvent] = ()
    outbox: Sequence[OutboxItem] = ()
    resolved_to_message_refs: bool = False
    resumed_at: datetime | None = None
    grants: Sequence[GrantRecord] = ()
    delivered: Sequence[Delivered] = ()
    seen: RequestRecord | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Ballot:
    """A vote to commit: appended under the request's row lock, and, when it reaches its
    threshold, followed by the one compare-and-set every decision is, in the same
    transaction.

    Attributes:
        vote: The vote; its ``voter`` must not have voted on the request before.
        approvals_needed: Approvals that decide ``approve``.
        rejections_needed: Rejections that decide ``reject``.
        audit: The vote's own event; the store adds the counts so far to its details
            (``approvals``, ``rejections`` and both thresholds), read in the transaction.
        outbox: Deliveries owed when the vote leaves the request pending (a channel
            shows the new count).
        resolution: What to commit when this vote reaches its threshold; the store fills
            in ``decided_by`` (the counted voters) and the decision's ``voters``.
        delivered: Deliveries of this request finished under their lease, recorded in
            the vote's transaction (before its ``outbox``, whose entries they would
            otherwise stand in for) whether or not the vote decides.
    """

    request_id: str
    vote: Vote
    approvals_needed: int
    rejections_needed: int
    audit: AuditEvent
    outbox: Sequence[OutboxItem] = ()
    resolution: Resolution
    delivered: Sequence[Delivered] = ()


class Store(abc.ABC):
    """The persistence contract every backend implements.

    Implementations must make every write atomic across tasks, threads and (for SQLite
    and Postgres) processes, and commit the ``audit`` events and ``outbox`` entries a
    write is given in the same transaction.
    """

    #: Schema version :meth:`setup` migrates to.
    SCHEMA_VERSION = 7

    async def setup(self) -> None:  # noqa: B027 - optional hook
        """Create or migrate the schema. Idempotent: safe to call on every start."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def decisions(self) -> AsyncIterator[str] | None:
        """The ids of requests as any process decides them, where the backend can push
        them (PostgreSQL's ``LISTEN/NOTIFY``); None where waiters must poll.

        The iterator runs until cancelled; a gateway uses it to wake its waiters and
        resumers at once, and keeps polling as a safety net.
        """
        return None

    async def __aenter__(self) -> Store:
        await self.setup()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # sessions ----------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_session(self, session: SessionRecord) -> SessionRecord:
        """Register a session.

        Raises:
            SessionExists: An ACTIVE session already has this id. Registering over an
                inactive one reactivates it with the new fields.
        """

    @abc.abstractmethod
    async def get_session(self, session_id: str) -> SessionRecord:
        """Raises: SessionNotFound."""

    @abc.abstractmethod
    async def deactivate_session(self, session_id: str) -> SessionRecord:
        """Mark a session inactive. Raises: SessionNotFound."""

    @abc.abstractmethod
    async def list_sessions(self, *, active: bool | None = None) -> list[SessionRecord]:
        """Sessions, oldest first."""

    # requests ----------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_request(
        self, record: RequestRecord, *, audit: Sequence[AuditEvent] = (),
        outbox: Sequence[OutboxItem] = (),
    ) -> tuple[RequestRecord, bool]:
        """File a request with its audit events and deliveries; idempotent.

        Returns ``(stored, created)``. When a record with the same ``id``, or the same
        ``(thread_id, interrupt_id)``, exists, it is returned unchanged with
        ``created=False`` and nothing else is written.
        """

    async def create_request_unless_granted(
        self, record: RequestRecord, grants: GrantQuery, *,
        audit: Sequence[AuditEvent] = (), outbox: Sequence[OutboxItem] = (),
    ) -> Filed:
        """:meth:`create_request`, unless :meth:`query_grants` finds a grant for
        ``grants`` first: then nothing is written (whether or not the request was filed
        before), and the grants found are handed back for the caller to match against
        the request (a grant that approves it files it decided instead; none that fits
        means filing with :meth:`create_request`).

        A filing that could be remembered looks for grants on every tool call, and
        almost always finds none: a store that can (the SQL stores) looks in the
        filing's own transaction, which saves a trip to the database. This default
        makes the two calls.
        """
        found = await self.query_grants(grants)
        if found:
            return Filed(grants=found)
        stored, created = await self.create_request(record, audit=audit, outbox=outbox)
        return Filed(record=stored, created=created)

    @abc.abstractmethod
    async def get_request(self, request_id: str) -> RequestRecord:
        """Raises: RequestNotFound."""

    @abc.abstractmethod
    async def find_request(self, thread_id: str, interrupt_id: str) -> RequestRecord | None:
        """The request filed for one interrupt of one thread, if any."""

    async def list_requests(
        self,
        *,
        status: Status | str | None = None,
        decided: bool = False,
        session_id: str | None = None,
        thread_id: str | None = None,
        graph: str | None = None,
        tool: str | None = None,
        risk: str | None = None,
        scope: RequestScope | None = None,
        unresumed: bool = False,
        stale_before: datetime | None = None,
        newest_first: bool = False,
        limit: int | None = None,
        after: str | None = None,
    ) -> list[RequestRecord]:
        """Requests matching every given filter, oldest first (``newest_first``: the
        other way round).

        ``decided=True`` keeps only requests no longer pending. ``tool`` and ``risk``
        match the payload's tool ``name`` and ``risk_level``; ``scope`` keeps one
        tenant's requests. Every filter is applied by the backend's own query, so a
        page costs the page, not every match.

        ``unresumed=True`` keeps only decided requests whose run has not been resumed
        yet (``resumed_at`` unset): what a restarted gateway must pick up. With
        ``stale_before`` it also keeps resumes claimed at or before that time and never
        completed (``resume_done_at`` unset): their process died mid-resume.

        Page with ``limit`` and ``after`` (the id of the last request of the previous
        page): the next page starts right after it in the same order. The cursor is a
        position, not a filter: the request it names need not match the filters.

        Raises:
            RequestNotFound: ``after`` names no request.
            ValueError: A negative limit or an unknown status.
        """
        return await self.query_requests(RequestQuery(
            status=None if status is None else coerce_status(status), decided=decided,
            session_id=session_id, thread_id=thread_id, graph=graph, tool=tool, risk=risk,
            scope=scope, unresumed=unresumed, stale_before=utc_or_none(stale_before),
            newest_first=newest_first, limit=check_limit(limit), after=after,
        ))

    @abc.abstractmethod
    async def query_requests(self, query: RequestQuery) -> list[RequestRecord]:
        """What :meth:`list_requests` returns, for an already checked query."""

    async def resolve(
        self,
        request_id: str,
        *,
        status: Status,
        decision: dict[str, Any],
        decided_by: str | None,
        channel: str | None,
        decided_at: datetime | None = None,
        audit: Sequence[AuditEvent] = (),
        outbox: Sequence[OutboxItem] = (),
        resolved_to_message_refs: bool = False,
        resumed_at: datetime | None = None,
        grants: Sequence[GrantRecord] = (),
        delivered: Sequence[Delivered] = (),
        seen: RequestRecord | None = None,
    ) -> RequestRecord:
        """Move a request from ``pending`` to ``status``: one atomic compare-and-set,
        committed with ``audit``, ``outbox``, ``grants`` and ``delivered`` (see
        :class:`Resolution`; with ``resumed_at`` the resume is claimed in the same
        transaction; ``seen`` is the request as the caller read it, which spares the
        store reading it back whole).

        Raises:
            RequestNotFound: No such request.
            AlreadyDecided: It is no longer pending; the error says who decided what, when.
                Nothing is written.
            ValueError: ``status`` is ``pending``.
        """
        return await self.commit_resolution(Resolution(
            request_id=request_id, status=final_status(status), decision=decision,
            decided_by=decided_by, channel=channel, decided_at=utc(decided_at or utcnow()),
            audit=audit, outbox=outbox, resolved_to_message_refs=resolved_to_message_refs,
            resumed_at=utc_or_none(resumed_at), grants=grants, delivered=delivered,
            seen=seen,
        ))

    @abc.abstractmethod
    async def commit_resolution(self, resolution: Resolution) -> RequestRecord:
        """What :meth:`resolve` does, for an already checked resolution."""

    async def vote(self, ballot: Ballot) -> RequestRecord:
        """Count one vote on a pending request, atomically, with its audit event; when it
        reaches its threshold, decide the request in the same transaction through the
        same compare-and-set as :meth:`resolve`.

        Of any number of concurrent votes, each is counted at most once, the request is
        decided exactly once, and no vote is counted after the decision.

        Returns:
            The request: still pending (with the vote in :attr:`RequestRecord.votes`) or
            decided by this vote.

        Raises:
            RequestNotFound: No such request.
            AlreadyDecided: It is no longer pending; nothing is written.
            DuplicateVote: ``ballot.vote.voter`` already voted on it; nothing is written.
            ValueError: A threshold below 1, or a resolution for another request.
        """
        if ballot.approvals_needed < 1 or ballot.rejections_needed < 1:
            raise ValueError("a ballot's thresholds must be at least 1")
        if ballot.resolution.request_id != ballot.request_id:
            raise ValueError("a ballot's resolution must decide the request voted on")
        final_status(ballot.resolution.status)
        return await self.commit_vote(ballot)

    @abc.abstractmethod
    async def commit_vote(self, ballot: Ballot) -> RequestRecord:
        """What :meth:`vote` does, for an already checked ballot."""

    @abc.abstractmethod
    async def mark_resumed(
        self, request_id: str, *, stale_before: datetime | None = None,
        at: datetime | None = None, done: bool = False, audit: Sequence[AuditEvent] = (),
        delivered: Sequence[Delivered] = (),
    ) -> bool:
        """Claim the right to resume the graph for a decided request.

        True for exactly one caller; False when someone already claimed it, or the
        request is still pending. With ``stale_before``, a claim made at or before that
        time and never completed may be taken over (its process died mid-resume).
        ``at`` is the claim's time (default: now). ``done`` completes the claim at once
        (a decision that can resume nothing any more). ``audit`` is written only when
        the claim is won, in its transaction; ``delivered`` (see :class:`Delivered`) in
        the same transaction either way.

        Raises: RequestNotFound.
        """

    @abc.abstractmethod
    async def complete_resume(
        self, *request_ids: str, at: datetime | None = None, audit: Sequence[AuditEvent] = (),
        delivered: Sequence[Delivered] = (),
    ) -> None:
        """Record that the claimed resumes reached the graph's checkpoint, together with
        ``audit`` and ``delivered`` (see :class:`Delivered`). Idempotent per request.

        Raises: RequestNotFound (and nothing is written).
        """

    @abc.abstractmethod
    async def release_resume(
        self, request_id: str, *, claimed_at: datetime, audit: Sequence[AuditEvent] = (),
    ) -> bool:
        """Give back a claim whose resume sent nothing (the graph refused it before
        running anything: its thread was busy), so any process may claim it again.

        Only the claim made at ``claimed_at`` and never completed is given back: one
        taken over since belongs to its new owner. True when given back, and then
        ``audit`` is written in the same transaction.

        Raises: RequestNotFound.
        """

    @abc.abstractmethod
    async def extend_expiry(
        self, request_id: str, *, expires_at: datetime, escalation_level: int,
        audit: Sequence[AuditEvent] = (), outbox: Sequence[OutboxItem] = (),
        delivered: Sequence[Delivered] = (),
    ) -> bool:
        """Push a pending request's deadline out (escalation), only if still pending and
        still at ``escalation_level - 1``. True when this call moved it, and then
        ``audit`` and ``outbox`` are written with it; ``delivered`` (see
        :class:`Delivered`) is recorded first either way, so an entry it finishes never
        stands in for a new one of the same channel and kind."""

    @abc.abstractmethod
    async def expired(self, now: datetime, *, limit: int = 100) -> list[RequestRecord]:
        """Pending requests whose ``expires_at`` is at or before ``now``, soonest first."""

    @abc.abstractmethod
    async def next_expiry(self) -> datetime | None:
        """The earliest ``expires_at`` among pending requests."""

    @abc.abstractmethod
    async def set_message_ref(self, request_id: str, channel: str, ref: Any) -> None:
        """Remember where a notifier showed a request (chat and message ids, ...).

        Raises: RequestNotFound.
        """

    # callback keys (short server-side keys for chat buttons) -----------------------------

    @abc.abstractmethod
    async def put_callback(self, key: str, request_id: str, action: dict[str, Any]) -> None:
        """Map a short key (Telegram allows 64 bytes of callback data) to an action."""

    @abc.abstractmethod
    async def get_callback(self, key: str) -> tuple[str, dict[str, Any]] | None:
        """``(request_id, action)`` for a key, or None."""

    @abc.abstractmethod
    async def remember_once(self, key: str, *, expires_at: datetime) -> bool:
        """Record ``key`` as used: True for exactly one caller, across tasks, threads and
        (for SQLite and PostgreSQL) processes; False for every later one.

        What signed decisions and one-time sign-in links need to be accepted once by any
        number of server processes sharing a store. ``expires_at`` says when the key's
        signature or link stops being valid anyway; a key is never forgotten before then.
        """

    # grants (remembered permissions) ----------------------------------------------------

    @abc.abstractmethod
    async def get_grant(self, grant_id: str) -> GrantRecord:
        """Raises: GrantNotFound."""

    async def list_grants(
        self, *, tool: str | None = None, session_id: str | None = None,
        client_id: str | None = None, request_id: str | None = None,
        live_at: datetime | None = None, covering: GrantTarget | None = None,
        limit: int | None = None,
    ) -> list[GrantRecord]:
        """Grants matching every given filter, oldest first. ``live_at`` keeps only
        those not revoked and not expired at that time, ``covering`` those whose scope
        covers a request at that place: together, what may approve a call there then."""
        return await self.query_grants(GrantQuery(
            tool=tool, session_id=session_id, client_id=client_id, request_id=request_id,
            live_at=utc_or_none(live_at), covering=covering, limit=check_limit(limit)))

    @abc.abstractmethod
    async def query_grants(self, query: GrantQuery) -> list[GrantRecord]:
        """What :meth:`list_grants` returns, for an already checked query."""

    @abc.abstractmethod
    async def revoke_grant(
        self, grant_id: str, *, revoked_by: str | None, at: datetime | None = None,
        audit: Sequence[AuditEvent] = (),
    ) -> tuple[GrantRecord, bool]:
        """Revoke a grant once: ``(grant, True)`` for the call that revoked it, with
        ``audit`` written in its transaction; ``(grant, False)`` (nothing written) when
        it was revoked already, the grant saying by whom and when.

        Raises: GrantNotFound.
        """

    # audit -------------------------------------------------------------------------------

    @abc.abstractmethod
    async def append_audit(self, event: AuditEvent) -> AuditEvent:
        """Append one event; returns it with its ``id``. Never updates or deletes."""

    async def list_audit(
        self,
        *,
        request_id: str | None = None,
        session_id: str | None = None,
        thread_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        after: int | None = None,
        before: int | None = None,
        newest: bool = False,
        event: str | None = None,
    ) -> list[AuditEvent]:
        """Events matching every given filter, in the order they were appended;
        ``since`` is inclusive, ``until`` exclusive; ``event`` is one kind
        (``"shadow"``, ``"decided:approved"``, ...).

        Page with event ids: ``after`` the last one seen reads on, ``before`` the first
        one seen reads back; ``newest=True`` takes the last ``limit`` matches (a tail).
        """
        return await self.query_audit(AuditQuery(
            request_id=request_id, session_id=session_id, thread_id=thread_id,
            since=utc_or_none(since), until=utc_or_none(until), limit=check_limit(limit),
            after=after, before=before, newest=newest, event=event,
        ))

    @abc.abstractmethod
    async def query_audit(self, query: AuditQuery) -> list[AuditEvent]:
        """What :meth:`list_audit` returns, for an already checked query."""

    # outbox ------------------------------------------------------------------------------

    @abc.abstractmethod
    async def enqueue_outbox(self, item: OutboxItem) -> OutboxItem:
        """Add a delivery; idempotent on ``(request_id, notifier, kind)`` while not done."""

    @abc.abstractmethod
    async def claim_outbox(
        self, now: datetime, *, lease_seconds: float = 30.0, limit: int = 50,
        notifiers: Sequence[str] | None = None,
    ) -> list[OutboxItem]:
        """Atomically lease due, undone items (``due_at <= now``) so that one worker
        delivers each; a leased item becomes due again after ``lease_seconds``.

        ``notifiers`` limits the claim to the channels this worker has, so a process
        without, say, Telegram never takes Telegram's deliveries.
        """

    @abc.abstractmethod
    async def complete_outbox(
        self, item_id: int, *, message_ref: Any = None, error: str | None = None,
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        """Mark a delivery done, with ``audit``; a ``message_ref`` (not None) is stored
        as the request's reference on the item's channel in the same transaction. With
        ``error`` the delivery ends failed: ``dead``, its last attempt counted."""

    @abc.abstractmethod
    async def complete_deliveries(self, delivered: Sequence[Delivered]) -> int:
        """Record deliveries finished under their lease (see :class:`Delivered`) in one
        transaction: the ones no other write carried. Returns how many were recorded;
        the others were no longer held under their lease, and nothing of them is
        written."""

    @abc.abstractmethod
    async def retry_outbox(
        self, item_id: int, *, due_at: datetime, error: str, audit: Sequence[AuditEvent] = (),
    ) -> OutboxItem:
        """Record a failed attempt (``attempts += 1``) and when to try again, with
        ``audit``."""

    @abc.abstractmethod
    async def list_outbox(self, *, request_id: str | None = None, dead: bool | None = None,
                          limit: int | None = None, after: int | None = None
                          ) -> list[OutboxItem]:
        """Deliveries, done or not, oldest first; ``dead=True`` keeps those given up on
        (what ``/health`` and ``loopgate-lc deliveries`` show), at most ``limit``, from
        the one after item id ``after`` on."""
