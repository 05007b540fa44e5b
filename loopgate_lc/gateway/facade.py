"""``Loopgate``: the small typed facade users hold.

It owns configuration and lifecycle and nothing else: every operation is one coroutine
of one part (see the package's docstring), and each public method is a shell that runs
it on the gateway's loop, blocking (``respond``) or awaited (``arespond``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import weakref
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any, TypeVar, Unpack

from pydantic import ValidationError

from loopgate_lc._portal import Portal
from loopgate_lc.errors import ConfigurationError, InvalidDecision
from loopgate_lc.gateway.asking import ask
from loopgate_lc.gateway.audit import Auditor, Clock
from loopgate_lc.gateway.deciding import Deciding
from loopgate_lc.gateway.desk import GatewayDesk
from loopgate_lc.gateway.drivers import GraphDriver, LocalDriver, is_remote, require_checkpointer
from loopgate_lc.gateway.filing import Filing, Question, QuestionFields
from loopgate_lc.gateway.outbox import Outbox, Retries
from loopgate_lc.gateway.resuming import Resuming
from loopgate_lc.gateway.running import Observer, Runner, adrive, configure, drive
from loopgate_lc.gateway.settings import DEFAULT_TIMEOUT, Escalation, OnTimeout, seconds
from loopgate_lc.gateway.tasks import Tasks
from loopgate_lc.gateway.timers import Timers
from loopgate_lc.gateway.validation import Schemas
from loopgate_lc.gateway.waiting import Waiters
from loopgate_lc.hooks import Hooks, compose_hooks
from loopgate_lc.locations import absolute_store_url, default_store_url, make_room_for
from loopgate_lc.notifiers.base import Notifier
from loopgate_lc.policy import ApprovalPolicy, PolicySet, RiskLevel, Verdict
from loopgate_lc.schema import HumanResponse, Status, utcnow
from loopgate_lc.stores import open_store
from loopgate_lc.stores.base import (
    AuditEvent,
    GrantRecord,
    OutboxItem,
    RequestRecord,
    RequestScope,
    SessionRecord,
    Store,
)

__all__ = ["Loopgate"]

log = logging.getLogger("loopgate_lc")

T = TypeVar("T")


@dataclass(frozen=True)
class _Parts:
    """The parts of an open gateway, made on its loop, each handed its collaborators."""

    auditor: Auditor
    tasks: Tasks
    waiters: Waiters
    outbox: Outbox
    deciding: Deciding
    timers: Timers
    filing: Filing
    resuming: Resuming
    runner: Runner
    desk: GatewayDesk


class Loopgate:
    """Files pauses, reaches people, takes answers once, resumes runs.

    Args:
        store: A :class:`~loopgate_lc.stores.base.Store` or a URL for ``open_store``
            (``"memory://"``, ``"sqlite:///loopgate.db"``, ``"postgresql://..."``);
            default ``$LOOPGATE_STORE``, else one SQLite file per user (see
            :mod:`loopgate_lc.locations`), the same one ``loopgate-lc`` uses.
        notifiers: Channels that show pending requests to people.
        policies: The policy set guards and :meth:`should_approve` evaluate.
        default_timeout: Seconds (or a ``timedelta``) a request waits when it does not
            say; default :data:`DEFAULT_TIMEOUT` (one hour). None waits forever, and only
            when asked for.
        on_timeout: ``"reject"`` (default, fail closed), ``"approve"``, or
            ``"escalate"`` through ``escalation`` and then reject.
        escalation: The steps of ``on_timeout="escalate"``.
        hooks: Lifecycle hooks (several are composed in order).
        clock: Returns "now" (UTC); tests inject one to move time.
        poll_interval: How often waiting code re-reads the store, to see decisions made
            by other processes; also how long a delivery made waits to be recorded with
            the next change of its request before it is recorded on its own.
        retry_backoff: First delay before a failed delivery is retried (doubling, up to
            ``max_retry_backoff``).
        max_delivery_attempts: A delivery that failed this many times is given up
            (``dead``, one ``delivery_failed`` audit event says so); None never gives up.
        max_delivery_age: Seconds after which a failing delivery is given up the same
            way; None never.
        timers: Run the background deadline timer (tests that step time by hand with
            :meth:`expire_due` turn it off).
        resume_lease: Seconds after which a resume that was claimed but never reached
            the graph's checkpoint (its process died mid-resume) is taken over by a
            gateway that has the graph registered. Longer than your slowest tool.

    The settings are read when the gateway opens; change them before that.
    """

    def __init__(
        self,
        store: Store | str | None = None,
        notifiers: Sequence[Notifier] = (),
        policies: PolicySet | Iterable[ApprovalPolicy] | None = None,
        *,
        default_timeout: float | timedelta | None = DEFAULT_TIMEOUT,
        on_timeout: OnTimeout = "reject",
        escalation: Sequence[Escalation] = (),
        hooks: Hooks | Sequence[Hooks] | None = None,
        clock: Clock = utcnow,
        poll_interval: float = 1.0,
        retry_backoff: float = 1.0,
        max_retry_backoff: float = 300.0,
        max_delivery_attempts: int | None = 25,
        max_delivery_age: float | None = 86_400.0,
        timers: bool = True,
        resume_lease: float = 600.0,
    ) -> None:
        if on_timeout not in ("reject", "approve", "escalate"):
            raise ConfigurationError(
                f"on_timeout must be 'reject', 'approve' or 'escalate', got {on_timeout!r}"
            )
        if on_timeout == "escalate" and not escalation:
            raise ConfigurationError("on_timeout='escalate' needs at least one Escalation step")
        if store is None:  # one store per user, the one the CLI uses too
            store = default_store_url()
        if isinstance(store, str | os.PathLike):
            make_room_for(os.fspath(store))
        self.store_url: str | None = (
            absolute_store_url(os.fspath(store)) if isinstance(store, str | os.PathLike)
            else None)
        """The store's URL with SQLite paths made absolute (None for a Store object): what
        hints tell another process to open."""
        self.store: Store = open_store(store)
        self.notifiers: list[Notifier] = list(notifiers)
        names = [n.name for n in self.notifiers]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"notifier names must be unique, got {names}")
        self.policies = policies if isinstance(policies, PolicySet) else PolicySet(policies or ())
        self.default_timeout = seconds(default_timeout)
        self.on_timeout: OnTimeout = on_timeout
        self.escalation = tuple(escalation)
        self.hooks = compose_hooks(*(hooks if isinstance(hooks, Sequence) else [hooks]))
        self.clock = clock
        self.poll_interval = poll_interval
        self.retry_backoff = retry_backoff
        self.max_retry_backoff = max_retry_backoff
        self.max_delivery_attempts = max_delivery_attempts
        self.max_delivery_age = max_delivery_age
        self.timers = timers
        self.resume_lease = resume_lease
        self._portal = Portal(on_lost=self._lost)
        self._opened: asyncio.Future[None] | None = None
        self._parts: _Parts | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._drivers: dict[str, GraphDriver] = {}
        self._schemas = Schemas()  # compiled validators outlive a close and reopen

    # running operations ------------------------------------------------------------------

    def _call(self, op: Callable[[_Parts], Coroutine[Any, Any, T]]) -> T:
        """Run a part's operation on the gateway's loop and block for its result."""
        return self._portal.call(self._opened_then(op))

    async def _acall(self, op: Callable[[_Parts], Coroutine[Any, Any, T]]) -> T:
        """Run a part's operation on the gateway's loop and await it from any loop."""
        return await self._portal.acall(self._opened_then(op))

    async def _opened_then(self, op: Callable[[_Parts], Coroutine[Any, Any, T]]) -> T:
        opened, parts = self._opened, self._parts
        if opened is None or not opened.done() or parts is None:  # else open: go straight on
            await self._open()
            parts = self._parts
        assert parts is not None
        if parts.resuming.behind:  # runs that returned are recorded finished first
            await parts.resuming.caught_up()
        return await op(parts)

    def _ready(self) -> bool:
        """Whether the gateway is open on its own loop thread, as seen from another
        thread: a sync caller then skips a trip to the loop that would only find it open.
        (On a loop someone else runs, the trip also checks that loop can take work.)"""
        opened, portal = self._opened, self._portal
        return (opened is not None and opened.done() and not opened.cancelled()
                and opened.exception() is None and self._parts is not None
                and portal.private and portal.running and not portal.on_home())

    @property
    def _p(self) -> _Parts:
        assert self._parts is not None, "gateway not open"
        return self._parts

    # lifecycle ---------------------------------------------------------------------------

    def open(self) -> Loopgate:
        """Set up the store, start notifiers and the background timers. Idempotent.

        Opened from sync code, the gateway runs on a private loop thread of its own;
        opened with :meth:`aopen` (or ``async with``, or first used from a coroutine), it
        lives on that caller's loop (see ``loopgate_lc._portal``).
        """
        self._portal.call(self._open())
        return self

    async def aopen(self) -> Loopgate:
        """Open on the running loop, which becomes the gateway's home: its async methods
        called on that loop then run there directly, and sync callers on other threads
        reach it through it."""
        await self._portal.acall(self._open())
        return self

    @property
    def is_open(self) -> bool:
        """True between opening and closing (an ASGI app's lifespan closes a gateway it
        opened on its own loop, since nothing can run there once the server stops)."""
        return self._opened is not None and self._portal.running

    def _lost(self) -> None:
        """The home loop has ended. It closed the gateway on its way out when it shut
        down like ``asyncio.run`` does (see ``_keep``); closed bluntly, it took what ran
        on it along. Either way the next caller opens anew."""
        if self._opened is not None:
            log.warning("loopgate_lc: the gateway's event loop ended while it was open; "
                        "opening it again (close it with 'async with' or aclose())")
        self._opened = None
        self._parts = None
        self._keeper = None

    def close(self) -> None:
        """Stop timers and notifiers, close the store, stop the gateway's loop."""
        if self._portal.running:
            self._portal.call(self._close())
        self._portal.close()

    async def aclose(self) -> None:
        if self._portal.running:
            await self._portal.acall(self._close())
        self._portal.close()

    def __enter__(self) -> Loopgate:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Loopgate:
        return await self.aopen()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _build(self) -> _Parts:
        store, clock = self.store, self.clock
        tasks = Tasks()
        auditor = Auditor(store, self.hooks, clock)
        waiters = Waiters(store, self.poll_interval)
        outbox = Outbox(store, self.notifiers, auditor, clock, tasks, Retries(
            self.retry_backoff, self.max_retry_backoff, self.max_delivery_attempts,
            self.max_delivery_age), self.poll_interval)
        deciding = Deciding(store, auditor, outbox, waiters, clock, self.escalation,
                            self._schemas, self.policies)
        timers = Timers(store, auditor, deciding, outbox, clock, tasks,
                        on_timeout=self.on_timeout, escalation=self.escalation,
                        poll_interval=self.poll_interval)
        filing = Filing(store, auditor, deciding, outbox, timers, self.policies, clock,
                        self.default_timeout)
        resuming = Resuming(store, auditor, filing, waiters, self._drivers, tasks, clock,
                            resume_lease=self.resume_lease, poll_interval=self.poll_interval,
                            outbox=outbox)
        # after each commit, once whoever waits is woken: the resume, then timers
        deciding.on_decided(resuming.decided)
        deciding.on_decided(timers.disarm)
        return _Parts(auditor=auditor, tasks=tasks, waiters=waiters, outbox=outbox,
                      deciding=deciding, timers=timers, filing=filing, resuming=resuming,
                      runner=Runner(filing, resuming, auditor),
                      desk=GatewayDesk(store, deciding, self.store_url))

    async def _open(self) -> None:
        if self._opened is None:
            self._opened = asyncio.get_running_loop().create_future()
            try:
                self._parts = parts = self._build()
                await self.store.setup()
                for notifier in self.notifiers:
                    start = getattr(notifier, "start", None)
                    if start is not None:
                        await start(parts.desk)
                spawn = parts.tasks.spawn
                if self.timers:
                    spawn(parts.timers.run())
                spawn(parts.outbox.run())
                spawn(parts.outbox.flush_loop())
                spawn(parts.outbox.adopt_loop())
                spawn(parts.resuming.recover_loop())
                spawn(parts.resuming.listen_loop())
                for name in self._drivers:
                    spawn(parts.resuming.watch(name))
                if not self._portal.private:  # a loop someone else runs, and ends
                    self._keeper = asyncio.get_running_loop().create_task(self._keep())
                _OPENED.add(self)
                self._opened.set_result(None)
            except BaseException as exc:
                self._opened.set_exception(exc)
                opened, self._opened = self._opened, None
                opened.exception()  # mark retrieved
                raise
        await asyncio.shield(self._opened)

    def _catch_up(self) -> None:
        """At the end of the process (see ``_at_exit``): a gateway on its own loop thread
        that nobody closed records the runs that returned while that was under way."""
        parts = self._parts
        if parts is not None and parts.resuming.behind and self._ready():
            with contextlib.suppress(Exception):  # the process is ending all the same
                self._portal.call(parts.resuming.caught_up(), timeout=10)

    async def _keep(self) -> None:
        """Wait, on an adopted loop, for that loop to shut down with the gateway still
        open (``asyncio.run`` returning before ``aclose``): it cancels every task, this
        one too, and the gateway is then closed there while the loop still runs."""
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            if self._parts is not None and not self._parts.tasks.closing:
                await self._close()
            raise

    async def _close(self) -> None:
        if self._opened is None:
            return
        parts = self._p
        parts.tasks.closing = True
        keeper, self._keeper = self._keeper, None
        if keeper is not None and keeper is not asyncio.current_task():
            keeper.cancel()
        await parts.resuming.caught_up()  # finished runs are recorded so
        # deliveries under way finish, and what was delivered is recorded (see Outbox)
        await parts.outbox.close(timeout=5)
        await parts.tasks.cancel()
        for driver in self._drivers.values():
            close = getattr(driver, "aclose", None)
            if close is not None:
                await close()
        for notifier in self.notifiers:
            stop = getattr(notifier, "stop", None)
            if stop is not None:
                try:
                    await stop()
                except Exception as exc:  # closing must finish
                    log.warning("notifier %s failed to stop: %s", notifier.name, exc)
            aclose = getattr(notifier, "aclose", None)
            if aclose is not None:
                await aclose()
        await self.store.close()
        self._opened = None

    # policies ----------------------------------------------------------------------------

    def add_policy(self, policy: ApprovalPolicy) -> None:
        """Append a policy; guards created with this gateway's set see it at once."""
        self.policies.add(policy)

    def should_approve(
        self, tool_name: str, confidence: float, risk: RiskLevel | str
    ) -> Verdict:
        """Evaluate a call against the policies without pausing anything (Beluga's
        ``ShouldApprove``)."""
        return self.policies.evaluate(tool_name, confidence=confidence, risk=risk)

    # sessions ----------------------------------------------------------------------------

    def register_session(
        self, session_id: str, client_id: str = "", telegram_id: int | None = None,
        approvers: Sequence[str | int] = (), metadata: Mapping[str, Any] | None = None,
    ) -> SessionRecord:
        """Register a Loopgate session: requests naming it go to its Telegram chat and
        may be decided by its approvers.

        Raises:
            SessionExists: An active session already has this id.
        """
        session = _session(session_id, client_id, telegram_id, approvers, metadata)
        return self._call(lambda p: _register(p, self.store, session))

    async def aregister_session(
        self, session_id: str, client_id: str = "", telegram_id: int | None = None,
        approvers: Sequence[str | int] = (), metadata: Mapping[str, Any] | None = None,
    ) -> SessionRecord:
        session = _session(session_id, client_id, telegram_id, approvers, metadata)
        return await self._acall(lambda p: _register(p, self.store, session))

    def deactivate_session(self, session_id: str) -> SessionRecord:
        return self._call(lambda p: _deactivate(p, self.store, session_id))

    async def adeactivate_session(self, session_id: str) -> SessionRecord:
        return await self._acall(lambda p: _deactivate(p, self.store, session_id))

    def session(self, session_id: str) -> SessionRecord:
        """Raises: SessionNotFound."""
        return self._call(lambda p: self.store.get_session(session_id))

    async def asession(self, session_id: str) -> SessionRecord:
        return await self._acall(lambda p: self.store.get_session(session_id))

    def sessions(self, *, active: bool | None = None) -> list[SessionRecord]:
        return self._call(lambda p: self.store.list_sessions(active=active))

    async def asessions(self, *, active: bool | None = None) -> list[SessionRecord]:
        return await self._acall(lambda p: self.store.list_sessions(active=active))

    # reading -----------------------------------------------------------------------------

    def get(self, request_id: str) -> RequestRecord:
        """Raises: RequestNotFound."""
        return self._call(lambda p: self.store.get_request(request_id))

    async def aget(self, request_id: str) -> RequestRecord:
        return await self._acall(lambda p: self.store.get_request(request_id))

    def pending(self, *, session_id: str | None = None, thread_id: str | None = None,
                limit: int | None = None, after: str | None = None,
                scope: RequestScope | None = None) -> list[RequestRecord]:
        """Requests still waiting for a person, oldest first.

        Page through many with ``limit`` and ``after`` (the id of the last request of
        the previous page); without them, all of them. ``scope`` keeps one tenant's.

        Raises:
            RequestNotFound: ``after`` names no request.
        """
        return self._call(lambda p: self.store.list_requests(
            status=Status.PENDING, session_id=session_id, thread_id=thread_id, scope=scope,
            limit=limit, after=after))

    async def apending(self, *, session_id: str | None = None, thread_id: str | None = None,
                       limit: int | None = None, after: str | None = None,
                       scope: RequestScope | None = None) -> list[RequestRecord]:
        return await self._acall(lambda p: self.store.list_requests(
            status=Status.PENDING, session_id=session_id, thread_id=thread_id, scope=scope,
            limit=limit, after=after))

    def dead_deliveries(self, *, limit: int | None = 100, after: int | None = None
                        ) -> list[OutboxItem]:
        """Deliveries given up on after their last failure (a chat that no longer exists,
        a receiver that kept failing for a day), oldest first: requests nobody was told
        about through that channel. Page on with ``after``, the last item id seen."""
        return self._call(lambda p: self.store.list_outbox(dead=True, limit=limit, after=after))

    async def adead_deliveries(self, *, limit: int | None = 100, after: int | None = None
                               ) -> list[OutboxItem]:
        return await self._acall(
            lambda p: self.store.list_outbox(dead=True, limit=limit, after=after))

    def audit(
        self, *, request_id: str | None = None, thread_id: str | None = None,
        session_id: str | None = None, since: datetime | None = None,
        until: datetime | None = None, limit: int | None = None,
        after: int | None = None, before: int | None = None, newest: bool = False,
        event: str | None = None,
    ) -> list[AuditEvent]:
        """The audit trail, filtered, in the order events happened; ``event`` keeps one
        kind (``"shadow"`` for what shadow policies would have decided).

        Page with event ids: ``after`` the last one seen reads on, ``before`` the first
        one seen reads back; ``newest=True`` takes the last ``limit`` events (a tail).
        """
        return self._call(lambda p: self.store.list_audit(
            request_id=request_id, thread_id=thread_id, session_id=session_id, since=since,
            until=until, limit=limit, after=after, before=before, newest=newest,
            event=event))

    async def aaudit(
        self, *, request_id: str | None = None, thread_id: str | None = None,
        session_id: str | None = None, since: datetime | None = None,
        until: datetime | None = None, limit: int | None = None,
        after: int | None = None, before: int | None = None, newest: bool = False,
        event: str | None = None,
    ) -> list[AuditEvent]:
        return await self._acall(lambda p: self.store.list_audit(
            request_id=request_id, thread_id=thread_id, session_id=session_id, since=since,
            until=until, limit=limit, after=after, before=before, newest=newest,
            event=event))

    # grants (remembered permissions, see loopgate_lc.grants) -----------------------------

    def grants(self, *, tool: str | None = None, session_id: str | None = None,
               client_id: str | None = None, live: bool = True, limit: int | None = None
               ) -> list[GrantRecord]:
        """Remembered permissions, oldest first: the live ones (neither revoked nor
        expired), or with ``live=False`` every one ever made."""
        return self._call(lambda p: self.store.list_grants(
            tool=tool, session_id=session_id, client_id=client_id,
            live_at=self.clock() if live else None, limit=limit))

    async def agrants(self, *, tool: str | None = None, session_id: str | None = None,
                      client_id: str | None = None, live: bool = True,
                      limit: int | None = None) -> list[GrantRecord]:
        return await self._acall(lambda p: self.store.list_grants(
            tool=tool, session_id=session_id, client_id=client_id,
            live_at=self.clock() if live else None, limit=limit))

    def get_grant(self, grant_id: str) -> GrantRecord:
        """Raises: GrantNotFound."""
        return self._call(lambda p: self.store.get_grant(grant_id))

    async def aget_grant(self, grant_id: str) -> GrantRecord:
        return await self._acall(lambda p: self.store.get_grant(grant_id))

    def revoke_grant(self, grant_id: str, *, actor: str | None = None, channel: str = "api"
                     ) -> GrantRecord:
        """Revoke a grant: from now on it approves nothing (audited as ``grant_revoked``).
        Revoking again changes nothing and returns who revoked it first, and when.

        Raises:
            GrantNotFound: Unknown id.
        """
        return self._call(lambda p: p.deciding.grants.revoke(grant_id, actor=actor,
                                                             channel=channel))

    async def arevoke_grant(self, grant_id: str, *, actor: str | None = None,
                            channel: str = "api") -> GrantRecord:
        return await self._acall(lambda p: p.deciding.grants.revoke(
            grant_id, actor=actor, channel=channel))

    def export_audit(
        self, out: IO[str], *, request_id: str | None = None, thread_id: str | None = None,
        session_id: str | None = None, since: datetime | None = None,
        until: datetime | None = None, limit: int | None = None,
    ) -> int:
        """Write the (filtered) audit trail as JSON lines; returns the number written."""
        events = self.audit(request_id=request_id, thread_id=thread_id, session_id=session_id,
                            since=since, until=until, limit=limit)
        for event in events:
            out.write(event.model_dump_json() + "\n")
        return len(events)

    # filing ------------------------------------------------------------------------------

    def submit(self, message: str, **fields: Unpack[QuestionFields]) -> RequestRecord:
        """File a request outside any graph and return at once (see
        :meth:`request_interaction` for the blocking form).

        Args:
            message: What to ask.
            kind: The request's kind (approval, confirmation, input, choice, ...).
            options: The choices of a ``choice`` (labels, or ``{"label", "approved"}``).
            metadata: Shown with the request and kept with it.
            session_id: Route to this session's chat and approvers.
            client_id: Who filed it (informational).
            timeout: Seconds (or a ``timedelta``) it waits; default the gateway's.
            tool_name, args, risk, confidence: The call it is about; with all of
                ``tool_name``, ``risk`` and ``confidence`` the policies name its policy
                and approvers.
            allowed_decisions: The decision types a person may give.
            callback_url: Called with the outcome (the HTTP API's ``callback_url``).
            requester: Who asks, when that is a person rather than the client: under a
                quorum (:mod:`loopgate_lc.quorum`) their own vote never counts.
        """
        question = Question(message, **fields)
        return self._call(lambda p: p.filing.submit(question))

    async def asubmit(self, message: str, **fields: Unpack[QuestionFields]) -> RequestRecord:
        question = Question(message, **fields)
        return await self._acall(lambda p: p.filing.submit(question))

    def request_interaction(
        self, message: str, *, wait: float | None = None, **fields: Unpack[QuestionFields]
    ) -> HumanResponse:
        """File a request, notify, and block until it is decided, times out or is
        cancelled (Beluga's ``RequestInteraction``). ``wait`` bounds the wait in
        seconds; past it the request is cancelled. The other arguments are
        :meth:`submit`'s."""
        question = Question(message, **fields)
        return self._call(lambda p: self._ask(p, question, wait))

    async def arequest_interaction(
        self, message: str, *, wait: float | None = None, **fields: Unpack[QuestionFields]
    ) -> HumanResponse:
        question = Question(message, **fields)
        return await self._acall(lambda p: self._ask(p, question, wait))

    def _ask(self, p: _Parts, question: Question, wait: float | None
             ) -> Coroutine[Any, Any, HumanResponse]:
        return ask(question, wait, store=self.store, policies=self.policies,
                   auditor=p.auditor, filing=p.filing, deciding=p.deciding, waiters=p.waiters)

    # deciding ----------------------------------------------------------------------------

    def respond(self, request_id: str, decision: Mapping[str, Any], *, actor: str | None = None,
                channel: str = "api", approver_id: str | None = None,
                record: RequestRecord | None = None) -> RequestRecord:
        """Decide a pending request: the ONLY way a request is decided.

        Args:
            request_id: The request.
            decision: A LangChain decision dict: ``{"type": "approve"}``,
                ``{"type": "edit", "edited_action": {"name", "args"}}``,
                ``{"type": "reject", "message"?}``, ``{"type": "respond", "message"}``.
            actor: Who decided, for the audit ("telegram:42 (@ana)", "api:key1", ...).
            channel: Through which channel.
            approver_id: The identity to check against the session's and policy's
                approvers (channels with their own identity pass it).
            record: The request as the caller has just read it (a channel that looks
                at it before answering), so it is not read again; the decision is
                still a compare-and-set against what is stored.

        Raises:
            RequestNotFound: Unknown id.
            AlreadyDecided: It was decided before; says who decided what, when.
            ApproverNotAllowed: ``approver_id`` may not decide this request.
            InvalidDecision: The decision does not fit (``DecisionNotAllowed`` for a
                type outside ``allowed_decisions``).
        """
        return self._call(lambda p: p.deciding.respond(request_id, decision, actor, channel,
                                                       approver_id, record))

    async def arespond(self, request_id: str, decision: Mapping[str, Any], *,
                       actor: str | None = None, channel: str = "api",
                       approver_id: str | None = None,
                       record: RequestRecord | None = None) -> RequestRecord:
        return await self._acall(lambda p: p.deciding.respond(
            request_id, decision, actor, channel, approver_id, record))

    def respond_batch(self, thread_id: str, batch: Mapping[str, Any], *,
                      actor: str | None = None, channel: str = "api",
                      approver_id: str | None = None) -> list[RequestRecord]:
        """Decide every pending request of a thread from LangChain's batched resume,
        ``{"decisions": [...]}``, by position: the requests in the order of their tool
        calls in the model's message (``position``), else in the order they were filed.

        Every decision is checked before any is recorded, so a bad one leaves all
        pending. Raises what :meth:`respond` raises, and ``InvalidDecision`` when the
        count does not match.
        """
        return self._call(lambda p: self._batch(p, thread_id, batch, actor, channel,
                                                approver_id))

    async def arespond_batch(self, thread_id: str, batch: Mapping[str, Any], *,
                             actor: str | None = None, channel: str = "api",
                             approver_id: str | None = None) -> list[RequestRecord]:
        return await self._acall(lambda p: self._batch(p, thread_id, batch, actor, channel,
                                                       approver_id))

    async def _batch(self, p: _Parts, thread_id: str, batch: Mapping[str, Any],
                     actor: str | None, channel: str, approver_id: str | None
                     ) -> list[RequestRecord]:
        records = sorted(await self.store.list_requests(status=Status.PENDING,
                                                        thread_id=thread_id), key=_call_order)
        decisions = batch.get("decisions") if isinstance(batch, Mapping) else None
        return await p.deciding.respond_batch(records, decisions, thread_id, actor, channel,
                                              approver_id)

    def cancel(self, request_id: str, *, actor: str | None = None,
               reason: str | None = None) -> RequestRecord:
        """Withdraw a pending request; its tool call does not run.

        Raises:
            RequestNotFound, AlreadyDecided: as for :meth:`respond`.
        """
        return self._call(lambda p: p.deciding.cancel(request_id, actor, reason))

    async def acancel(self, request_id: str, *, actor: str | None = None,
                      reason: str | None = None) -> RequestRecord:
        return await self._acall(lambda p: p.deciding.cancel(request_id, actor, reason))

    def authorize(self, request_id: str, approver_id: str | None, *, actor: str | None = None,
                  channel: str = "api") -> None:
        """Check that ``approver_id`` may decide ``request_id`` without deciding it (a
        channel asks before it prompts a person for a reason); refusals are audited.

        Raises:
            RequestNotFound: Unknown id.
            ApproverNotAllowed: Not one of the approvers the request names.
        """
        self._call(lambda p: p.desk.aauthorize(request_id, approver_id, actor=actor,
                                               channel=channel))

    async def aauthorize(self, request_id: str, approver_id: str | None, *,
                         actor: str | None = None, channel: str = "api") -> None:
        await self._acall(lambda p: p.desk.aauthorize(request_id, approver_id, actor=actor,
                                                      channel=channel))

    def may_decide(self, records: Sequence[RequestRecord], approver_id: str | None
                   ) -> list[bool]:
        """For each record, whether ``approver_id`` may decide it: the check a decision
        gets, made without deciding or auditing anything, so a channel shows a person
        only what they may decide (the web inbox lists by it).

        Each session is read once per call, however many of its requests are asked about.
        """
        return self._call(lambda p: p.deciding.may_decide(records, approver_id))

    async def amay_decide(self, records: Sequence[RequestRecord], approver_id: str | None
                          ) -> list[bool]:
        return await self._acall(lambda p: p.deciding.may_decide(records, approver_id))

    def refuse(self, request_id: str, *, actor: str | None, channel: str,
               reason: str) -> None:
        """Audit a decider a channel refused by its own rules (a notifier's approver
        list), so every refusal is on record whichever layer made it."""
        self._call(lambda p: p.deciding.refuse(request_id, actor, channel, reason))

    async def arefuse(self, request_id: str, *, actor: str | None, channel: str,
                      reason: str) -> None:
        await self._acall(lambda p: p.deciding.refuse(request_id, actor, channel, reason))

    def wait(self, request_id: str, timeout: float | None = None) -> RequestRecord:
        """Block until a request leaves ``pending`` (TimeoutError after ``timeout``)."""
        return self._call(lambda p: p.waiters.wait(request_id, timeout))

    async def await_decision(self, request_id: str, timeout: float | None = None
                             ) -> RequestRecord:
        """Async twin of :meth:`wait`, for long polls."""
        return await self._acall(lambda p: p.waiters.wait(request_id, timeout))

    # timeouts ----------------------------------------------------------------------------

    def expire_due(self, now: datetime | None = None) -> list[RequestRecord]:
        """Resolve every request whose deadline has passed; the timer calls this, tests
        may call it with an injected ``now``."""
        return self._call(lambda p: p.timers.expire_due(now))

    async def aexpire_due(self, now: datetime | None = None) -> list[RequestRecord]:
        return await self._acall(lambda p: p.timers.expire_due(now))

    # graphs ------------------------------------------------------------------------------

    def register_graph(self, name: str, graph: Any) -> None:
        """Let the gateway resume ``graph`` in the background when its requests are
        decided, also after a restart.

        A ``RemoteGraph`` (a graph on LangGraph Server) is watched through its
        deployment instead (see ``loopgate_lc.langgraph_server``): its pauses are filed
        and its threads resumed through the server's API.

        Raises:
            ConfigurationError: The graph has no checkpointer (nothing to resume from).
        """
        if is_remote(graph):
            from loopgate_lc.langgraph_server import Deployment, RemoteDriver

            http = graph.client.http.client
            headers = {k: v for k, v in http.headers.items()
                       if k.lower() in ("x-api-key", "authorization")}
            self.register_driver(name, RemoteDriver(Deployment(
                url=str(http.base_url), name=name, graphs=(graph.assistant_id,),
                headers=headers)))
            return
        require_checkpointer(graph, name)
        self.register_driver(name, LocalDriver(graph, self._thread_config))

    def register_driver(self, name: str, driver: GraphDriver) -> None:
        """Let the gateway file, resume and recover the paused threads of a graph that
        ``driver`` reaches (see :class:`GraphDriver`); :meth:`register_graph` does this
        for a compiled graph, ``loopgate_lc.langgraph_server`` for a deployment.

        Raises:
            ConfigurationError: ``name`` is taken by another driver.
        """
        if self._drivers.get(name, driver) is not driver:
            raise ConfigurationError(f"a graph is already registered as {name!r}")
        self._drivers[name] = driver
        if self._portal.running and self._opened is not None and self._parts is not None:
            resuming, tasks = self._parts.resuming, self._parts.tasks
            self._portal.submit(resuming.recover(name))
            self._portal.submit(_spawn(tasks, resuming.watch(name)))

    def start(self, name: str, input: Any, config: Mapping[str, Any] | None = None) -> str:
        """Start a registered graph in the background; returns its thread id at once."""
        return self._call(lambda p: self._start(p, name, input, config))

    async def astart(self, name: str, input: Any, config: Mapping[str, Any] | None = None
                     ) -> str:
        return await self._acall(lambda p: self._start(p, name, input, config))

    async def _start(self, p: _Parts, name: str, input: Any,
                     config: Mapping[str, Any] | None) -> str:
        if not isinstance(self._drivers.get(name), LocalDriver):
            raise ConfigurationError(f"no graph registered as {name!r}")
        cfg = self._config(config)
        p.tasks.spawn(p.resuming.drive(name, input, cfg))
        return str(cfg["configurable"]["thread_id"])

    def _thread_config(self, thread_id: str) -> dict[str, Any]:
        return self._config({"configurable": {"thread_id": thread_id}})

    def _config(self, config: Mapping[str, Any] | None) -> dict[str, Any]:
        auditor = self._p.auditor
        return configure(config, lambda thread_id: Observer(
            self._portal.submit, auditor, thread_id))

    async def _prepare(self, config: Mapping[str, Any] | None) -> dict[str, Any]:
        await self._open()
        return self._config(config)

    # driving a graph from the caller -----------------------------------------------------

    def run(self, graph: Any, input: Any, config: Mapping[str, Any] | None = None, *,
            name: str | None = None, max_pauses: int = 1000) -> Any:
        """Run a graph until it finishes, pausing for people as its guards ask.

        The graph runs in the calling thread; each interrupt becomes a stored request,
        notifiers are called, and the graph resumes with
        ``Command(resume={interrupt_id: decision})`` as decisions arrive (parallel
        interrupts independently). Returns the final state.
        """
        result = None
        for kind, item in self._iterate(graph, input, config, name, max_pauses, None):
            if kind == "result":
                result = item
        return result

    async def arun(self, graph: Any, input: Any, config: Mapping[str, Any] | None = None, *,
                   name: str | None = None, max_pauses: int = 1000) -> Any:
        """Async twin of :meth:`run` (the graph runs on the caller's event loop)."""
        result = None
        async for kind, item in self._aiterate(graph, input, config, name, max_pauses, None):
            if kind == "result":
                result = item
        return result

    def stream(self, graph: Any, input: Any, config: Mapping[str, Any] | None = None, *,
               stream_mode: str | list[str] = "updates", name: str | None = None,
               max_pauses: int = 1000) -> Iterator[tuple[str, Any]]:
        """Like :meth:`run`, yielding ``("chunk", chunk)`` for the graph's stream and
        ``("requested", RequestRecord)`` / ``("decided", RequestRecord)`` between."""
        for kind, item in self._iterate(graph, input, config, name, max_pauses, stream_mode):
            if kind != "result":
                yield kind, item

    async def astream(self, graph: Any, input: Any, config: Mapping[str, Any] | None = None,
                      *, stream_mode: str | list[str] = "updates", name: str | None = None,
                      max_pauses: int = 1000) -> AsyncIterator[tuple[str, Any]]:
        async for kind, item in self._aiterate(graph, input, config, name, max_pauses,
                                               stream_mode):
            if kind != "result":
                yield kind, item

    def _iterate(self, graph: Any, value: Any, config: Mapping[str, Any] | None,
                 name: str | None, max_pauses: int, stream_mode: Any
                 ) -> Iterator[tuple[str, Any]]:
        require_checkpointer(graph)
        # open already (the usual case): the config needs nothing from the gateway's loop,
        # and work the run need not wait for is handed to it without waiting
        ready = self._ready()
        cfg = self._config(config) if ready else self._portal.call(self._prepare(config))
        rounds = self._p.runner.rounds(value, str(cfg["configurable"]["thread_id"]), name,
                                       max_pauses, streaming=stream_mode is not None)
        yield from drive(rounds, graph, cfg, stream_mode, self._portal.call,
                         self._hand_behind if ready else None)

    def _hand_behind(self, work: Callable[[], None]) -> None:
        """Work a sync run's caller need not wait for, handed to the gateway's loop."""
        resuming = self._p.resuming
        resuming.hand(work)
        self._portal.soon(resuming.start_handed_soon)

    async def _aiterate(self, graph: Any, value: Any, config: Mapping[str, Any] | None,
                        name: str | None, max_pauses: int, stream_mode: Any
                        ) -> AsyncIterator[tuple[str, Any]]:
        require_checkpointer(graph)
        cfg = await self._portal.acall(self._prepare(config))
        rounds = self._p.runner.rounds(value, str(cfg["configurable"]["thread_id"]), name,
                                       max_pauses, streaming=stream_mode is not None)
        async for item in adrive(rounds, graph, cfg, stream_mode, self._portal.acall):
            yield item


# helpers ------------------------------------------------------------------------------------

#: Gateways opened in this process (weakly held), for ``_at_exit``.
_OPENED: weakref.WeakSet[Loopgate] = weakref.WeakSet()


@atexit.register
def _at_exit() -> None:
    """Before the interpreter stops its daemon threads: finished runs are recorded so
    (their commit follows the run's return; see ``Resuming.complete_behind``)."""
    for gate in list(_OPENED):
        gate._catch_up()


async def _spawn(tasks: Tasks, coro: Coroutine[Any, Any, Any]) -> None:
    tasks.spawn(coro)


async def _register(p: _Parts, store: Store, session: SessionRecord) -> SessionRecord:
    stored = await store.create_session(session)
    await p.auditor.append("session_registered", session_id=stored.session_id,
                           actor=stored.client_id or None,
                           details={"telegram_id": stored.telegram_id,
                                    "approvers": stored.approvers})
    return stored


async def _deactivate(p: _Parts, store: Store, session_id: str) -> SessionRecord:
    record = await store.deactivate_session(session_id)
    await p.auditor.append("session_deactivated", session_id=session_id)
    return record


def _call_order(record: RequestRecord) -> tuple[bool, int, datetime, str]:
    """Where a request stands in its thread's batch: its tool call's position in the
    model's message when known, else when it was filed."""
    position = (record.request.model_extra or {}).get("position")
    if isinstance(position, int):
        return (False, position, record.created_at, record.id)
    return (True, 0, record.created_at, record.id)


def _session(session_id: str, client_id: str, telegram_id: int | None,
             approvers: Sequence[str | int], metadata: Mapping[str, Any] | None
             ) -> SessionRecord:
    if not isinstance(session_id, str) or not session_id.strip():
        raise InvalidDecision("session_id must be a non-empty string")
    try:
        return SessionRecord(session_id=session_id, client_id=client_id or "",
                             telegram_id=telegram_id, approvers=[str(a) for a in approvers],
                             metadata=dict(metadata or {}))
    except ValidationError as exc:
        raise InvalidDecision(f"invalid session: {exc.errors()[0]['msg']}",
                              errors=[dict(e) for e in exc.errors()]) from exc
