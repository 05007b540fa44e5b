"""``Loopgate``: the facade users hold.

It files every pause as a stored request, reaches people through notifiers (from a
durable outbox), takes their answers through ONE path (:meth:`Loopgate.arespond`),
fires timeouts, keeps the audit trail, and resumes LangGraph runs exactly once.

Everything stateful runs on the gateway's own event loop (see ``_portal``), so the same
object works from scripts, notebooks and ASGI servers; every public coroutine has a
blocking twin without the ``a`` prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, runtime_checkable

from pydantic import ValidationError

from loopgate_lc._lru import LRU
from loopgate_lc._portal import Portal
from loopgate_lc.decisions import (
    already_decided,
    public_decision,
    request_of,
    response_of,
    resume_value,
    validate_decision,
)
from loopgate_lc.errors import (
    AlreadyDecided,
    ApproverNotAllowed,
    ConfigurationError,
    InvalidDecision,
    LoopgateError,
    RequestNotFound,
    SessionNotFound,
    StaleDecision,
)
from loopgate_lc.grants import GRANT_CHANNEL, GrantDesk, grant_summary
from loopgate_lc.hooks import Hooks, Veto, compose_hooks, fire, parts_of
from loopgate_lc.locations import absolute_store_url, default_store_url, sqlite_file
from loopgate_lc.notifiers.base import DeliveryError, Notifier
from loopgate_lc.policy import ApprovalPolicy, PolicySet, RiskLevel, Verdict
from loopgate_lc.schema import (
    ApprovalRequest,
    HumanResponse,
    RequestKind,
    Status,
    decision_approves,
    decision_status,
    default_decisions,
    parse_options,
    utcnow,
)
from loopgate_lc.stores import open_store
from loopgate_lc.stores.base import (
    AuditEvent,
    GrantRecord,
    OutboxItem,
    OutboxKind,
    RequestRecord,
    RequestScope,
    SessionRecord,
    Store,
)

if TYPE_CHECKING:
    from langgraph.types import Command, Interrupt

__all__ = ["DEFAULT_TIMEOUT", "Escalation", "GraphDriver", "Loopgate", "PauseReport", "args_hash"]

DEFAULT_TIMEOUT = 3600.0
"""Seconds a request waits when neither it nor the gateway names a timeout. One hour,
not the original server's 300 s: runs are checkpointed, so a wait costs nothing, and a
person answering from a phone is often away for more than five minutes; yet a forgotten
request still ends as ``timeout`` (fail closed) within the same working session."""

log = logging.getLogger("loopgate_lc")

OnTimeout = Literal["reject", "approve", "escalate"]


def args_hash(args: Any) -> str | None:
    """A stable SHA-256 of a call's arguments, so the audit proves what ran without
    storing secrets twice."""
    if args is None:
        return None
    canonical = json.dumps(args, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def shadow_details(call: dict[str, Any], *, enforced_policy: str | None, enforced_auto: bool,
                   policy: str | None, would_auto: bool, reason: str) -> dict[str, Any]:
    """The audit details of a ``shadow`` event: the call, what the enforced policy did and
    what the shadow policy would have done (``agrees`` says whether they match)."""
    return {**call, "policy": policy, "would": "auto" if would_auto else "ask",
            "reason": reason, "enforced_policy": enforced_policy,
            "enforced": "auto" if enforced_auto else "ask",
            "agrees": would_auto == enforced_auto}


@dataclass(frozen=True)
class Escalation:
    """One step of ``on_timeout="escalate"``: when the deadline passes, tell these
    notifiers (by name) and let these approvers decide too, for ``timeout`` more seconds.
    """

    timeout: float
    notifiers: tuple[str, ...] = ()
    approvers: tuple[str, ...] = ()


@runtime_checkable
class GraphDriver(Protocol):
    """How the gateway reads and resumes the paused threads of one graph, wherever the
    graph runs: in this process (a compiled graph with a checkpointer) or on a LangGraph
    Server (``loopgate_lc.langgraph_server``). Filing, claiming, timeouts and recovery are
    the gateway's and the same for every driver; only these calls differ.
    """

    #: Seconds after which a resume that was claimed and never completed may be taken
    #: over; None means the gateway's ``resume_lease``.
    lease: float | None

    async def pending(self, thread_id: str) -> set[str] | None:
        """The ids of the thread's pending interrupts; None when that cannot be told now
        (a run is in progress), so nothing is claimed or called stale."""
        ...

    async def resume(self, thread_id: str, resume: dict[str, Any],
                     claimed: Sequence[RequestRecord]) -> Sequence[Interrupt] | None:
        """Resume the thread with ``{interrupt_id: value}``. Returns the interrupts the
        run paused at next, or None when the run goes on elsewhere (its next pauses are
        reported through ``watch``). Returning means the resume is saved where the graph
        lives; raising means it may not be."""
        ...

    async def watch(self, report: PauseReport) -> None:
        """Run for the gateway's lifetime, calling ``report`` for every paused thread it
        learns of (drivers that learn nothing on their own return at once)."""
        ...


PauseReport: TypeAlias = "Callable[[str, Sequence[Interrupt]], Awaitable[Any]]"
"""``report(thread_id, interrupts)``: file a paused thread's interrupts."""


class _LocalDriver:
    """A compiled graph in this process, resumed from its checkpointer."""

    lease: float | None = None

    def __init__(self, graph: Any, config: Callable[[str], dict[str, Any]]) -> None:
        self.graph = graph
        self.run_async = _supports_async(graph.checkpointer)
        self._config = config

    async def invoke(self, value: Any, config: dict[str, Any]) -> Any:
        if self.run_async:
            return await self.graph.ainvoke(value, config, version="v2")
        return await asyncio.to_thread(self.graph.invoke, value, config, version="v2")

    async def pending(self, thread_id: str) -> set[str] | None:
        config = self._config(thread_id)
        if self.run_async:
            state = await self.graph.aget_state(config)
        else:
            state = await asyncio.to_thread(self.graph.get_state, config)
        return {i.id for i in state.interrupts}

    async def resume(self, thread_id: str, resume: dict[str, Any],
                     claimed: Sequence[RequestRecord]) -> Sequence[Interrupt] | None:
        result = await self.invoke(_resume_command(resume), self._config(thread_id))
        return tuple(getattr(result, "interrupts", ()) or ())

    async def watch(self, report: PauseReport) -> None:
        return None


@dataclass
class _State:
    """Objects that must be created on the gateway's loop."""

    outbox_kick: asyncio.Event = field(default_factory=asyncio.Event)
    timer_kick: asyncio.Event = field(default_factory=asyncio.Event)
    timer_due: datetime | None = None  # when the timer wakes next; None while it computes
    waiters: dict[str, list[asyncio.Future[RequestRecord]]] = field(default_factory=dict)
    # decided in this process: their wake-ups ran already, an echo from the store is news
    # to no one here
    decided_here: LRU[str, bool] = field(default_factory=lambda: LRU(4096))
    thread_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    delivering: set[int] = field(default_factory=set)
    outbox_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    adopted: set[str] = field(default_factory=set)  # pending ids checked for our channels


def _resume_command(resume: dict[str, Any]) -> Command[Any]:
    """``Command(resume=...)``. LangGraph is imported where a graph runs, never at module
    level: the CLI's store commands use this module and start faster without it."""
    from langgraph.types import Command

    return Command(resume=resume)


def _supports_async(checkpointer: Any) -> bool:
    from langgraph.checkpoint.base import BaseCheckpointSaver

    if type(checkpointer).aget_tuple is BaseCheckpointSaver.aget_tuple:
        return False
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
    except ImportError:  # pragma: no cover - optional extra
        return True
    return not isinstance(checkpointer, SqliteSaver)


def _seconds(value: float | timedelta | None) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if math.isnan(seconds) or seconds <= 0:
        raise ConfigurationError(f"a timeout must be a positive number of seconds, got {value!r}")
    return seconds


class _Observer:
    """Handed to guards through the run's config, so auto-approvals reach the audit."""

    def __init__(self, gateway: Loopgate, thread_id: str | None) -> None:
        self._gateway = gateway
        self._thread_id = thread_id

    def auto_approved(
        self, name: str, args: dict[str, Any], verdict: Verdict, tool_call_id: str | None,
        *, risk: RiskLevel, confidence: float | None,
    ) -> None:
        self._gateway._portal.submit(self._gateway._record_auto(
            name, args, verdict, tool_call_id, self._thread_id, risk, confidence))



def _admits(allowed: set[str], named: bool, approver_id: str | None) -> bool:
    """The approver rule: where approvers are named, a decider must name itself and be
    one of them; where none are, anyone may decide (a named decider only if it is the
    session's chat, when the session has one)."""
    if approver_id is None:
        return not named
    return not allowed or str(approver_id) in allowed

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
            by other processes.
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
        clock: Any = utcnow,
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
            file = sqlite_file(store)
            if file is not None:
                file.parent.mkdir(parents=True, exist_ok=True)
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
        self.default_timeout = _seconds(default_timeout)
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
        self._portal = Portal()
        self._opened: asyncio.Future[None] | None = None
        self._state: _State | None = None
        self._drivers: dict[str, GraphDriver] = {}
        self._closing = False
        self._grants = GrantDesk(self.store, clock=lambda: self.clock(),
                                 policies=lambda: self.policies, approvers=self._approvers)

    # lifecycle ---------------------------------------------------------------------------

    def open(self) -> Loopgate:
        """Set up the store, start notifiers and the background timers. Idempotent."""
        self._portal.call(self._open())
        return self

    async def aopen(self) -> Loopgate:
        await self._portal.acall(self._open())
        return self

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

    @property
    def _s(self) -> _State:
        assert self._state is not None, "gateway not open"
        return self._state

    async def _open(self) -> None:
        if self._opened is None:
            self._opened = asyncio.get_running_loop().create_future()
            try:
                self._state = _State()
                self._closing = False
                await self.store.setup()
                for notifier in self.notifiers:
                    start = getattr(notifier, "start", None)
                    if start is not None:
                        await start(self)
                if self.timers:
                    self._spawn(self._timer_loop())
                self._spawn(self._outbox_loop())
                self._spawn(self._watch_loop())
                self._spawn(self._listen_loop())
                for name in self._drivers:
                    self._spawn(self._watch(name))
                self._opened.set_result(None)
            except BaseException as exc:
                self._opened.set_exception(exc)
                opened, self._opened = self._opened, None
                opened.exception()  # mark retrieved
                raise
        await asyncio.shield(self._opened)

    async def _close(self) -> None:
        if self._opened is None:
            return
        self._closing = True
        state = self._s
        try:
            # A pass of the outbox in progress finishes first: deliveries it claimed are
            # handed back, not left leased for minutes after a short-lived process (the
            # CLI) exits. Holding the lock keeps a new pass from starting.
            async with asyncio.timeout(5):
                await state.outbox_lock.acquire()
        except TimeoutError:
            log.warning("loopgate_lc: the outbox pass did not finish while closing")
        for task in list(state.tasks):
            task.cancel()
        await asyncio.gather(*state.tasks, return_exceptions=True)
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

    def _accepting(self, record: RequestRecord) -> list[Notifier]:
        """The notifiers that want this request. A notifier may decline with an optional
        ``accepts(record) -> bool`` (a channel only some requests use, like the server's
        ``callback_url`` delivery) instead of being sent, and auditing, every request."""
        wanted = []
        for notifier in self.notifiers:
            accepts = getattr(notifier, "accepts", None)
            if accepts is None or accepts(record):
                wanted.append(notifier)
        return wanted

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._s.tasks.add(task)
        task.add_done_callback(self._s.tasks.discard)
        return task

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

    async def _register_session(self, session: SessionRecord) -> SessionRecord:
        await self._open()
        stored = await self.store.create_session(session)
        await self._audit("session_registered", session_id=stored.session_id,
                          actor=stored.client_id or None,
                          details={"telegram_id": stored.telegram_id,
                                   "approvers": stored.approvers})
        return stored

    def register_session(
        self, session_id: str, client_id: str = "", telegram_id: int | None = None,
        approvers: Sequence[str | int] = (), metadata: Mapping[str, Any] | None = None,
    ) -> SessionRecord:
        """Register a Loopgate session: requests naming it go to its Telegram chat and
        may be decided by its approvers.

        Raises:
            SessionExists: An active session already has this id.
        """
        return self._portal.call(self._register_session(
            _session(session_id, client_id, telegram_id, approvers, metadata)))

    async def aregister_session(
        self, session_id: str, client_id: str = "", telegram_id: int | None = None,
        approvers: Sequence[str | int] = (), metadata: Mapping[str, Any] | None = None,
    ) -> SessionRecord:
        return await self._portal.acall(self._register_session(
            _session(session_id, client_id, telegram_id, approvers, metadata)))

    async def _deactivate(self, session_id: str) -> SessionRecord:
        await self._open()
        record = await self.store.deactivate_session(session_id)
        await self._audit("session_deactivated", session_id=session_id)
        return record

    def deactivate_session(self, session_id: str) -> SessionRecord:
        return self._portal.call(self._deactivate(session_id))

    async def adeactivate_session(self, session_id: str) -> SessionRecord:
        return await self._portal.acall(self._deactivate(session_id))

    async def _session(self, session_id: str) -> SessionRecord:
        await self._open()
        return await self.store.get_session(session_id)

    def session(self, session_id: str) -> SessionRecord:
        """Raises: SessionNotFound."""
        return self._portal.call(self._session(session_id))

    async def asession(self, session_id: str) -> SessionRecord:
        return await self._portal.acall(self._session(session_id))

    async def _sessions(self, active: bool | None) -> list[SessionRecord]:
        await self._open()
        return await self.store.list_sessions(active=active)

    def sessions(self, *, active: bool | None = None) -> list[SessionRecord]:
        return self._portal.call(self._sessions(active))

    async def asessions(self, *, active: bool | None = None) -> list[SessionRecord]:
        return await self._portal.acall(self._sessions(active))

    # reading -----------------------------------------------------------------------------

    async def _get(self, request_id: str) -> RequestRecord:
        await self._open()
        return await self.store.get_request(request_id)

    def get(self, request_id: str) -> RequestRecord:
        """Raises: RequestNotFound."""
        return self._portal.call(self._get(request_id))

    async def aget(self, request_id: str) -> RequestRecord:
        return await self._portal.acall(self._get(request_id))

    async def _pending(self, session_id: str | None, thread_id: str | None,
                       limit: int | None, after: str | None,
                       scope: RequestScope | None) -> list[RequestRecord]:
        await self._open()
        return await self.store.list_requests(status=Status.PENDING, session_id=session_id,
                                              thread_id=thread_id, scope=scope, limit=limit,
                                              after=after)

    def pending(self, *, session_id: str | None = None, thread_id: str | None = None,
                limit: int | None = None, after: str | None = None,
                scope: RequestScope | None = None) -> list[RequestRecord]:
        """Requests still waiting for a person, oldest first.

        Page through many with ``limit`` and ``after`` (the id of the last request of
        the previous page); without them, all of them. ``scope`` keeps one tenant's.

        Raises:
            RequestNotFound: ``after`` names no request.
        """
        return self._portal.call(self._pending(session_id, thread_id, limit, after, scope))

    async def apending(self, *, session_id: str | None = None, thread_id: str | None = None,
                       limit: int | None = None, after: str | None = None,
                       scope: RequestScope | None = None) -> list[RequestRecord]:
        return await self._portal.acall(
            self._pending(session_id, thread_id, limit, after, scope))

    async def _dead_deliveries(self, limit: int | None, after: int | None
                               ) -> list[OutboxItem]:
        await self._open()
        return await self.store.list_outbox(dead=True, limit=limit, after=after)

    def dead_deliveries(self, *, limit: int | None = 100, after: int | None = None
                        ) -> list[OutboxItem]:
        """Deliveries given up on after their last failure (a chat that no longer exists,
        a receiver that kept failing for a day), oldest first: requests nobody was told
        about through that channel. Page on with ``after``, the last item id seen."""
        return self._portal.call(self._dead_deliveries(limit, after))

    async def adead_deliveries(self, *, limit: int | None = 100, after: int | None = None
                               ) -> list[OutboxItem]:
        return await self._portal.acall(self._dead_deliveries(limit, after))

    async def _list_audit(self, filters: dict[str, Any]) -> list[AuditEvent]:
        await self._open()
        return await self.store.list_audit(**filters)

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
        return self._portal.call(self._list_audit(dict(
            request_id=request_id, thread_id=thread_id, session_id=session_id, since=since,
            until=until, limit=limit, after=after, before=before, newest=newest,
            event=event)))

    async def aaudit(
        self, *, request_id: str | None = None, thread_id: str | None = None,
        session_id: str | None = None, since: datetime | None = None,
        until: datetime | None = None, limit: int | None = None,
        after: int | None = None, before: int | None = None, newest: bool = False,
        event: str | None = None,
    ) -> list[AuditEvent]:
        return await self._portal.acall(self._list_audit(dict(
            request_id=request_id, thread_id=thread_id, session_id=session_id, since=since,
            until=until, limit=limit, after=after, before=before, newest=newest,
            event=event)))

    def export_audit(self, out: IO[str], **filters: Any) -> int:
        """Write the (filtered) audit trail as JSON lines; returns the number written."""
        events = self.audit(**filters)
        for event in events:
            out.write(event.model_dump_json() + "\n")
        return len(events)

    # filing ------------------------------------------------------------------------------

    def _expiry(self, request: ApprovalRequest, now: datetime) -> datetime | None:
        if request.expires_at is not None:
            return request.expires_at
        seconds = request.timeout_seconds or self.default_timeout
        return now + timedelta(seconds=seconds) if seconds else None

    async def _file(
        self,
        request: ApprovalRequest,
        *,
        thread_id: str | None = None,
        interrupt_id: str | None = None,
        graph: str | None = None,
        client_id: str | None = None,
        response_schema: Any = None,
        foreign: bool = False,
    ) -> RequestRecord:
        """Store one request (idempotent), run ``on_request``, queue notifications."""
        await self._open()
        if request.session_id is not None:
            session = await self.store.get_session(request.session_id)
            if not session.active:
                raise SessionNotFound(request.session_id)
        now = self.clock()
        payload = request.to_interrupt()
        if response_schema is not None:
            # kept as one string: stores copy it for free, and validators are cached by it
            payload["response_schema"] = json.dumps(response_schema, sort_keys=True)
        if foreign:
            payload["foreign"] = True
        record = RequestRecord(
            id=request.request_id,
            kind=request.type,
            session_id=request.session_id,
            client_id=client_id,
            thread_id=thread_id,
            interrupt_id=interrupt_id,
            graph=graph,
            payload=payload,
            created_at=now,
            expires_at=self._expiry(request, now),
        )
        filed = [self._event("requested", record, details={
            "kind": record.kind.value, "tool": request.name, "policy": request.policy,
            "reason": request.reason, "risk_level": request.risk_level,
            "confidence": request.confidence, "expires_at": record.expires_at,
        })]
        if request.shadow is not None:
            filed.append(self._event("shadow", record, channel="policy", details=shadow_details(
                {"tool": request.name, "tool_call_id": request.tool_call_id,
                 "risk_level": request.risk_level, "confidence": request.confidence},
                enforced_policy=request.policy, enforced_auto=False,
                policy=request.shadow.policy, would_auto=request.shadow.auto_approved,
                reason=request.shadow.reason)))
        if any(part.on_request is not None for part in parts_of(self.hooks)):
            # on_request runs before the request is stored, so a veto files it already
            # rejected, in the same one transaction, and no one is ever asked.
            existing = await self._filed(record)
            if existing is not None:
                return existing
            vetoes = [v for v in await self._fire("on_request", record) if isinstance(v, Veto)]
            if vetoes:
                return await self._decide(
                    record, {"type": "reject", "message": vetoes[0].reason},
                    actor="hook:on_request", channel="hook", event="vetoed", request=request,
                    filing=filed)
        grant = await self._grants.match(record, request)
        if grant is not None:  # remembered: approved now, filed decided, nobody notified
            return await self._decide(
                record, {"type": "approve", "granted_by": {
                    "grant_id": grant.id, "created_by": grant.created_by,
                    "request_id": grant.request_id}},
                actor=f"grant:{grant.id}", channel=GRANT_CHANNEL, request=request, filing=filed)
        stored, created = await self.store.create_request(
            record, audit=filed, outbox=self._deliveries(record, "notify", now))
        if not created:
            return stored
        self._s.outbox_kick.set()
        due = self._s.timer_due
        if stored.expires_at is not None and (due is None or stored.expires_at < due):
            # Only a deadline before the timer's next wake needs it early: every wake
            # re-reads the store, which with thousands pending cost more than the filing.
            self._s.timer_kick.set()
        return stored

    async def _filed(self, record: RequestRecord) -> RequestRecord | None:
        """The request already filed under ``record``'s id or interrupt, if any."""
        if record.thread_id is not None and record.interrupt_id is not None:
            found = await self.store.find_request(record.thread_id, record.interrupt_id)
            if found is not None:
                return found
        with contextlib.suppress(RequestNotFound):
            return await self.store.get_request(record.id)
        return None

    def _deliveries(self, record: RequestRecord, kind: OutboxKind, now: datetime,
                    names: Iterable[str] | None = None) -> list[OutboxItem]:
        """The deliveries a state change owes: to ``names``, or every accepting notifier."""
        if names is None:
            names = [n.name for n in self._accepting(record)]
        return [OutboxItem(request_id=record.id, notifier=name, kind=kind, due_at=now,
                           created_at=now) for name in names]

    async def _file_interrupts(
        self, interrupts: Sequence[Interrupt], thread_id: str, graph: str | None,
        done: Sequence[str] = (),
    ) -> list[RequestRecord]:
        await self._complete(done)  # the run got this far, so those resumes are saved
        records = []
        for intr in interrupts:
            request, foreign = request_of(intr, thread_id)
            existing = await self.store.find_request(thread_id, intr.id)
            if existing is not None:
                records.append(existing)
                continue
            records.append(await self._file(
                request, thread_id=thread_id, interrupt_id=intr.id, graph=graph,
                response_schema=intr.response_schema, foreign=foreign))
        return records

    def submit(self, message: str, **kwargs: Any) -> RequestRecord:
        """File a request outside any graph and return at once (see
        :meth:`request_interaction` for the blocking form)."""
        return self._portal.call(self._submit(message, **kwargs))

    async def asubmit(self, message: str, **kwargs: Any) -> RequestRecord:
        return await self._portal.acall(self._submit(message, **kwargs))

    async def _submit(
        self,
        message: str,
        *,
        kind: RequestKind | str = RequestKind.APPROVAL,
        options: Sequence[str | Mapping[str, Any]] = (),
        metadata: Mapping[str, Any] | None = None,
        session_id: str | None = None,
        client_id: str | None = None,
        timeout: float | timedelta | None = None,
        tool_name: str | None = None,
        args: Mapping[str, Any] | None = None,
        risk: RiskLevel | str | None = None,
        confidence: float | None = None,
        allowed_decisions: Sequence[str] | None = None,
        callback_url: str | None = None,
    ) -> RequestRecord:
        # callback_url is kept in the payload (ApprovalRequest allows extra fields), so
        # whichever process decides the request can still deliver the callback.
        request_kind = RequestKind(kind)
        try:
            parsed = parse_options(request_kind, options)
        except ValueError as exc:
            raise InvalidDecision(str(exc)) from exc
        verdict = None
        if tool_name is not None and confidence is not None and risk is not None:
            verdict = self.should_approve(tool_name, confidence, risk)
        allowed = list(allowed_decisions or default_decisions(request_kind, bool(parsed)))
        deciding = None if tool_name is None else self.policies.match(tool_name)
        request = ApprovalRequest(
            type=request_kind,
            request_id=str(uuid.uuid4()),
            name=tool_name,
            args=dict(args) if args is not None else None,
            message=message,
            description=message,
            risk_level=RiskLevel.parse(risk) if risk is not None else None,
            confidence=confidence,
            policy=verdict.policy if verdict else None,
            reason=verdict.reason if verdict else "",
            allowed_decisions=allowed,
            options=parsed,
            metadata=dict(metadata or {}),
            approvers=list(verdict.approvers) if verdict else [],
            require_explicit=verdict.explicit if verdict else bool(
                deciding is not None and deciding.require_explicit),
            session_id=session_id,
            timeout_seconds=_seconds(timeout),
            **({"callback_url": callback_url} if callback_url else {}),
        )
        return await self._file(request, client_id=client_id)

    def request_interaction(self, message: str, *, wait: float | None = None,
                            **kwargs: Any) -> HumanResponse:
        """File a request, notify, and block until it is decided, times out or is
        cancelled (Beluga's ``RequestInteraction``). ``wait`` bounds the wait in
        seconds; past it the request is cancelled."""
        return self._portal.call(self._request_interaction(message, wait, **kwargs))

    async def arequest_interaction(self, message: str, *, wait: float | None = None,
                                   **kwargs: Any) -> HumanResponse:
        return await self._portal.acall(self._request_interaction(message, wait, **kwargs))

    async def _request_interaction(self, message: str, wait: float | None,
                                   **kwargs: Any) -> HumanResponse:
        tool, confidence, risk = (kwargs.get(k) for k in ("tool_name", "confidence", "risk"))
        if tool is not None and confidence is not None and risk is not None:
            verdict = self.should_approve(tool, confidence, risk)
            if verdict.auto_approved:  # the policy lets it through: nobody is asked
                await self._record_auto(tool, dict(kwargs.get("args") or {}), verdict, None,
                                        None, RiskLevel.parse(risk), float(confidence))
                return HumanResponse(approved=True, status=Status.APPROVED,
                                     decided_by=f"policy:{verdict.policy}",
                                     decision={"type": "approve"})
        record = await self._submit(message, **kwargs)
        try:
            record = await self._wait_decided(record.id, wait)
        except TimeoutError:
            try:
                record = await self._cancel(record.id, actor="loopgate", reason="wait ended")
            except AlreadyDecided:
                record = await self.store.get_request(record.id)
        return response_of(record)

    # deciding ----------------------------------------------------------------------------

    def respond(self, request_id: str, decision: Mapping[str, Any], *, actor: str | None = None,
                channel: str = "api", approver_id: str | None = None) -> RequestRecord:
        """Decide a pending request: the ONLY way a request is decided.

        Args:
            request_id: The request.
            decision: A LangChain decision dict: ``{"type": "approve"}``,
                ``{"type": "edit", "edited_action": {"name", "args"}}``,
                ``{"type": "reject", "message"?}``, ``{"type": "respond", "message"}``.
                An approve may carry ``"grant": {...}``: remember the permission, so calls
                like this one are approved without asking (see :mod:`loopgate_lc.grants`).
            actor: Who decided, for the audit ("telegram:42 (@ana)", "api:key1", ...).
            channel: Through which channel.
            approver_id: The identity to check against the session's and policy's
                approvers (channels with their own identity pass it).

        Raises:
            RequestNotFound: Unknown id.
            AlreadyDecided: It was decided before; says who decided what, when.
            ApproverNotAllowed: ``approver_id`` may not decide this request.
            InvalidDecision: The decision does not fit (``DecisionNotAllowed`` for a
                type outside ``allowed_decisions``).
        """
        return self._portal.call(self._respond(request_id, decision, actor, channel,
                                               approver_id))

    async def arespond(self, request_id: str, decision: Mapping[str, Any], *,
                       actor: str | None = None, channel: str = "api",
                       approver_id: str | None = None) -> RequestRecord:
        return await self._portal.acall(self._respond(request_id, decision, actor, channel,
                                                      approver_id))

    async def _respond(self, request_id: str, decision: Mapping[str, Any], actor: str | None,
                       channel: str, approver_id: str | None) -> RequestRecord:
        await self._open()
        record = await self.store.get_request(request_id)
        if not record.pending:
            raise already_decided(record)
        await self._authorize(record, approver_id, actor, channel)
        request = ApprovalRequest.model_validate(record.payload)
        decision, spec = self._grants.read(decision, record, request)
        checked = validate_decision(record, request, decision)
        grant = None if spec is None else self._grants.issue(
            spec, record, request, actor=actor, approver_id=approver_id, channel=channel)
        return await self._decide(record, checked, actor=actor, channel=channel,
                                  request=request, grant=grant)

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
        return self._portal.call(self._respond_batch(thread_id, batch, actor, channel,
                                                     approver_id))

    async def arespond_batch(self, thread_id: str, batch: Mapping[str, Any], *,
                             actor: str | None = None, channel: str = "api",
                             approver_id: str | None = None) -> list[RequestRecord]:
        return await self._portal.acall(self._respond_batch(thread_id, batch, actor, channel,
                                                            approver_id))

    async def _respond_batch(self, thread_id: str, batch: Mapping[str, Any],
                             actor: str | None, channel: str, approver_id: str | None
                             ) -> list[RequestRecord]:
        records = sorted(await self._pending(None, thread_id, None, None, None), key=_call_order)
        decisions = batch.get("decisions") if isinstance(batch, Mapping) else None
        if not isinstance(decisions, list) or len(decisions) != len(records):
            got = len(decisions) if isinstance(decisions, list) else "no list"
            raise InvalidDecision(f"thread {thread_id!r} has {len(records)} pending requests; "
                                  f"'decisions' must list one per request, in order (got {got})")
        for record, decision in zip(records, decisions, strict=True):
            await self._authorize(record, approver_id, actor, channel)
            request = ApprovalRequest.model_validate(record.payload)
            validate_decision(record, request, self._grants.read(decision, record, request)[0])
        return [await self._respond(record.id, decision, actor, channel, approver_id)
                for record, decision in zip(records, decisions, strict=True)]

    def cancel(self, request_id: str, *, actor: str | None = None,
               reason: str | None = None) -> RequestRecord:
        """Withdraw a pending request; its tool call does not run.

        Raises:
            RequestNotFound, AlreadyDecided: as for :meth:`respond`.
        """
        return self._portal.call(self._cancel(request_id, actor=actor, reason=reason))

    async def acancel(self, request_id: str, *, actor: str | None = None,
                      reason: str | None = None) -> RequestRecord:
        return await self._portal.acall(self._cancel(request_id, actor=actor, reason=reason))

    async def _cancel(self, request_id: str, *, actor: str | None, reason: str | None
                      ) -> RequestRecord:
        await self._open()
        record = await self.store.get_request(request_id)
        if not record.pending:
            raise already_decided(record)
        decision: dict[str, Any] = {"type": "cancel"}
        if reason:
            decision["message"] = reason
        return await self._decide(record, decision, actor=actor, channel="cancel")

    async def _authorize(self, record: RequestRecord, approver_id: str | None,
                         actor: str | None, channel: str) -> None:
        """Refuse (and audit) a decider the request's approvers do not include.

        Where a session, policy or escalation step names approvers, a decider must name
        itself (``approver_id``): leaving it out is refused, never a way around the list.
        """
        if _admits(*await self._approvers(record), approver_id):
            return
        await self._audit("unauthorized", record, actor=actor, channel=channel,
                          details={"approver_id": None if approver_id is None
                                   else str(approver_id)})
        who = actor or approver_id or "an unnamed decider"
        raise ApproverNotAllowed(
            f"{who} is not an approver for request {record.id}"
            + ("" if approver_id is not None else ": name the approver who decides"))

    def authorize(self, request_id: str, approver_id: str | None, *, actor: str | None = None,
                  channel: str = "api") -> None:
        """Check that ``approver_id`` may decide ``request_id`` without deciding it (a
        channel asks before it prompts a person for a reason); refusals are audited.

        Raises:
            RequestNotFound: Unknown id.
            ApproverNotAllowed: Not one of the approvers the request names.
        """
        self._portal.call(self._authorize_id(request_id, approver_id, actor, channel))

    async def aauthorize(self, request_id: str, approver_id: str | None, *,
                         actor: str | None = None, channel: str = "api") -> None:
        await self._portal.acall(self._authorize_id(request_id, approver_id, actor, channel))

    async def _authorize_id(self, request_id: str, approver_id: str | None,
                            actor: str | None, channel: str) -> None:
        await self._open()
        await self._authorize(await self.store.get_request(request_id), approver_id, actor,
                              channel)

    def may_decide(self, records: Sequence[RequestRecord], approver_id: str | None
                   ) -> list[bool]:
        """For each record, whether ``approver_id`` may decide it: the check a decision
        gets, made without deciding or auditing anything, so a channel shows a person
        only what they may decide (the web inbox lists by it).

        Each session is read once per call, however many of its requests are asked about.
        """
        return self._portal.call(self._may_decide(records, approver_id))

    async def amay_decide(self, records: Sequence[RequestRecord], approver_id: str | None
                          ) -> list[bool]:
        return await self._portal.acall(self._may_decide(records, approver_id))

    async def _may_decide(self, records: Sequence[RequestRecord], approver_id: str | None
                          ) -> list[bool]:
        await self._open()
        sessions: dict[str, SessionRecord | None] = {}
        return [_admits(*await self._approvers(record, sessions), approver_id)
                for record in records]

    def refuse(self, request_id: str, *, actor: str | None, channel: str,
               reason: str) -> None:
        """Audit a decider a channel refused by its own rules (a notifier's approver
        list), so every refusal is on record whichever layer made it."""
        self._portal.call(self._refuse(request_id, actor, channel, reason))

    async def arefuse(self, request_id: str, *, actor: str | None, channel: str,
                      reason: str) -> None:
        await self._portal.acall(self._refuse(request_id, actor, channel, reason))

    async def _refuse(self, request_id: str, actor: str | None, channel: str,
                      reason: str) -> None:
        await self._open()
        record = await self.store.get_request(request_id)
        await self._audit("unauthorized", record, actor=actor, channel=channel,
                          details={"reason": reason})

    async def _approvers(self, record: RequestRecord,
                         sessions: dict[str, SessionRecord | None] | None = None
                         ) -> tuple[set[str], bool]:
        """Who may decide, and whether anyone names them: the policy's list if it names
        one, else the session's; plus the approvers of every escalation step reached.
        The session's chat counts as an approver, but does not by itself name any.
        ``sessions`` caches session reads across calls."""
        named = {str(a) for a in record.payload.get("approvers") or ()}
        allowed: set[str] = set()
        if not named and record.session_id:
            cache = {} if sessions is None else sessions
            if record.session_id not in cache:
                try:
                    cache[record.session_id] = await self.store.get_session(
                        record.session_id)
                except SessionNotFound:
                    cache[record.session_id] = None
            session = cache[record.session_id]
            if session is not None:
                named = {str(a) for a in session.approvers}
                if session.telegram_id is not None:
                    allowed.add(str(session.telegram_id))
        for step in self.escalation[: record.escalation_level]:
            named.update(str(a) for a in step.approvers)
        return allowed | named, bool(named)

    async def _decide(self, record: RequestRecord, decision: dict[str, Any], *,
                      actor: str | None, channel: str | None,
                      event: str | None = None,
                      request: ApprovalRequest | None = None,
                      filing: Sequence[AuditEvent] = (),
                      grant: GrantRecord | None = None) -> RequestRecord:
        """The single place a request leaves ``pending``: one transaction with the
        compare-and-set, its audit event and its ``resolved`` deliveries; then, after the
        commit, wake-ups, resume and hooks, which can no longer lose or change it.

        With ``filing`` (the ``requested`` event of a record not stored yet), the record
        is filed already decided, in the same one transaction. A ``grant`` the decision
        makes is stored in that transaction too, with its own audit event.
        """
        if grant is not None:
            decision = {**decision, "grant": grant_summary(grant)}
        decision = {**decision, "actor": actor, "channel": channel}
        status = decision_status(decision)
        now = self.clock()
        audit = [self._event(event or f"decided:{status.value}", record, actor=actor,
                             channel=channel, details={"decision": public_decision(decision)})]
        if grant is not None:
            audit.append(self._event("grant_created", record, actor=actor, channel=channel,
                                     details=grant_summary(grant)))
        outbox = self._deliveries(record, "resolved", now)
        if not filing:
            decided = await self.store.resolve(
                record.id, status=status, decision=decision, decided_by=actor,
                channel=channel, decided_at=now, audit=audit, outbox=outbox,
                resolved_to_message_refs=True, grants=[grant] if grant else ())
        else:
            decided, created = await self.store.create_request(
                record.model_copy(update={"status": status, "decision": decision,
                                          "decided_by": actor, "channel": channel,
                                          "decided_at": now}),
                audit=[*filing, *audit], outbox=outbox)
            if not created:  # filed meanwhile by someone else: theirs stands
                return decided
        self._s.decided_here.get_or_make(decided.id, lambda: True)
        # wake whoever waits to resume first: hooks and notifications are not on that path
        for waiter in self._s.waiters.pop(decided.id, []):
            if not waiter.done():
                waiter.set_result(decided)
        if decided.graph in self._drivers and decided.thread_id:
            self._spawn(self._resume_thread(decided.graph, decided.thread_id))
        request = request or ApprovalRequest.model_validate(decided.payload)
        if status is Status.TIMEOUT:
            await self._fire("on_timeout", decided)
        elif status is Status.CANCELLED:
            await self._fire("on_cancel", decided)
        elif decision_approves(decision, request):
            await self._fire("on_approve", decided, False, request.policy)
        elif status is Status.REJECTED:
            await self._fire("on_reject", decided)
        self._s.outbox_kick.set()
        return decided

    async def _wait_decided(self, request_id: str, timeout: float | None) -> RequestRecord:
        """Wait for a decision made here (woken at once) or by another process (seen at
        the next poll)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            record = await self.store.get_request(request_id)
            if not record.pending:
                return record
            waiter: asyncio.Future[RequestRecord] = loop.create_future()
            self._s.waiters.setdefault(request_id, []).append(waiter)
            step = self.poll_interval
            if deadline is not None:
                step = min(step, deadline - loop.time())
                if step <= 0:
                    raise TimeoutError(request_id)
            try:
                return await asyncio.wait_for(asyncio.shield(waiter), step)
            except TimeoutError:
                pass
            finally:
                waiters = self._s.waiters.get(request_id, [])
                if waiter in waiters:
                    waiters.remove(waiter)

    def wait(self, request_id: str, timeout: float | None = None) -> RequestRecord:
        """Block until a request leaves ``pending`` (TimeoutError after ``timeout``)."""
        return self._portal.call(self._wait_with_open(request_id, timeout))

    async def await_decision(self, request_id: str, timeout: float | None = None
                             ) -> RequestRecord:
        """Async twin of :meth:`wait`, for long polls."""
        return await self._portal.acall(self._wait_with_open(request_id, timeout))

    async def _wait_with_open(self, request_id: str, timeout: float | None) -> RequestRecord:
        await self._open()
        return await self._wait_decided(request_id, timeout)

    # grants (remembered permissions, see loopgate_lc.grants) -----------------------------

    async def _list_grants(self, filters: dict[str, Any]) -> list[GrantRecord]:
        await self._open()
        live = filters.pop("live")
        return await self.store.list_grants(live_at=self.clock() if live else None,
                                            **filters)

    def grants(self, *, tool: str | None = None, session_id: str | None = None,
               client_id: str | None = None, live: bool = True, limit: int | None = None
               ) -> list[GrantRecord]:
        """Remembered permissions, oldest first: the live ones (neither revoked nor
        expired), or with ``live=False`` every one ever made."""
        return self._portal.call(self._list_grants(dict(
            tool=tool, session_id=session_id, client_id=client_id, live=live, limit=limit)))

    async def agrants(self, *, tool: str | None = None, session_id: str | None = None,
                      client_id: str | None = None, live: bool = True,
                      limit: int | None = None) -> list[GrantRecord]:
        return await self._portal.acall(self._list_grants(dict(
            tool=tool, session_id=session_id, client_id=client_id, live=live, limit=limit)))

    async def _get_grant(self, grant_id: str) -> GrantRecord:
        await self._open()
        return await self.store.get_grant(grant_id)

    def get_grant(self, grant_id: str) -> GrantRecord:
        """Raises: GrantNotFound."""
        return self._portal.call(self._get_grant(grant_id))

    async def aget_grant(self, grant_id: str) -> GrantRecord:
        return await self._portal.acall(self._get_grant(grant_id))

    async def _revoke_grant(self, grant_id: str, actor: str | None, channel: str
                            ) -> GrantRecord:
        await self._open()
        return await self._grants.revoke(grant_id, actor=actor, channel=channel)

    def revoke_grant(self, grant_id: str, *, actor: str | None = None, channel: str = "api"
                     ) -> GrantRecord:
        """Revoke a grant: from now on it approves nothing (audited as ``grant_revoked``).
        Revoking again changes nothing and returns who revoked it first, and when.

        Raises:
            GrantNotFound: Unknown id.
        """
        return self._portal.call(self._revoke_grant(grant_id, actor, channel))

    async def arevoke_grant(self, grant_id: str, *, actor: str | None = None,
                            channel: str = "api") -> GrantRecord:
        return await self._portal.acall(self._revoke_grant(grant_id, actor, channel))

    # timeouts ----------------------------------------------------------------------------

    def expire_due(self, now: datetime | None = None) -> list[RequestRecord]:
        """Resolve every request whose deadline has passed; the timer calls this, tests
        may call it with an injected ``now``."""
        return self._portal.call(self._expire_due(now))

    async def aexpire_due(self, now: datetime | None = None) -> list[RequestRecord]:
        return await self._portal.acall(self._expire_due(now))

    async def _expire_due(self, now: datetime | None = None) -> list[RequestRecord]:
        await self._open()
        now = now or self.clock()
        done: list[RequestRecord] = []
        for record in await self.store.expired(now):
            try:
                result = await self._expire(record, now)
            except AlreadyDecided:
                continue  # a person answered just in time: their answer stands
            if result is not None:
                done.append(result)
        return done

    async def _expire(self, record: RequestRecord, now: datetime) -> RequestRecord | None:
        level = record.escalation_level
        if self.on_timeout == "escalate" and level < len(self.escalation):
            step = self.escalation[level]
            moved = await self.store.extend_expiry(
                record.id, expires_at=now + timedelta(seconds=step.timeout),
                escalation_level=level + 1,
                audit=[self._event("escalated", record, channel="timer", details={
                    "level": level + 1, "notifiers": list(step.notifiers),
                    "approvers": list(step.approvers)})],
                outbox=self._deliveries(record, "notify", now, step.notifiers or None))
            if moved:
                self._s.outbox_kick.set()
                return await self.store.get_request(record.id)
            return None
        outcome = "approve" if self.on_timeout == "approve" else "reject"
        waited = (record.expires_at or now) - record.created_at
        decision = {
            "type": "timeout",
            "outcome": outcome,
            "message": f"no answer within {int(waited.total_seconds())}s; "
                       f"the configured outcome is {outcome}",
        }
        return await self._decide(record, decision, actor=None, channel="timer",
                                  event="timed_out")

    async def _timer_loop(self) -> None:
        """Fire deadlines within a second: sleep until the next one (at most ``interval``
        so injected clocks and other processes' requests are seen), re-armed from the
        store after a restart."""
        interval = min(0.5, self.poll_interval)
        while not self._closing:
            try:
                await self._expire_due()
            except Exception as exc:
                await self._report(exc, {"task": "timeouts"})
            kick = self._s.timer_kick
            kick.clear()
            self._s.timer_due = None  # a request filed meanwhile kicks, whatever its deadline
            delay = interval
            nxt = await self.store.next_expiry()
            if nxt is not None:
                delay = max(0.0, min(interval, (nxt - self.clock()).total_seconds()))
            self._s.timer_due = self.clock() + timedelta(seconds=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(kick.wait(), delay)

    # outbox ------------------------------------------------------------------------------

    async def _outbox_loop(self) -> None:
        """Deliver what is owed to notifiers; failures are retried with backoff and never
        change a request's status."""
        while not self._closing:
            kick = self._s.outbox_kick
            kick.clear()
            try:
                async with self._s.outbox_lock:
                    await self._drain_outbox()
            except Exception as exc:
                await self._report(exc, {"task": "outbox"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(kick.wait(), self.poll_interval)

    async def _drain_outbox(self) -> None:
        names = {n.name: n for n in self.notifiers}
        if not names:
            return
        # only this gateway's channels: another process's deliveries stay its own
        items = await self.store.claim_outbox(self.clock(), lease_seconds=300.0,
                                              notifiers=sorted(names))
        for item in items:
            if item.id is None or item.id in self._s.delivering:
                continue
            if self._closing:
                # the delivery would be cut off: give the lease back at once
                await self.store.retry_outbox(item.id, due_at=self.clock(),
                                              error="gateway closing")
                continue
            self._s.delivering.add(item.id)
            self._spawn(self._deliver(item, names[item.notifier]))

    async def _deliver(self, item: OutboxItem, notifier: Notifier) -> None:
        assert item.id is not None
        try:
            record = await self.store.get_request(item.request_id)
            if item.kind == "notify" and not record.pending:
                await self.store.complete_outbox(item.id)
                return
            ref = None
            try:
                if item.kind == "notify":
                    ref = await notifier.notify(record)
                else:
                    await notifier.on_resolved(record)
            except Exception as exc:
                await self._delivery_failed(item, record, notifier, exc)
                return
            # done, where it was shown, and (for a notification) its audit: one commit
            await self.store.complete_outbox(
                item.id, message_ref=ref,
                audit=[self._event("notified", record, channel=notifier.name)]
                if item.kind == "notify" else ())
            if item.kind == "notify":
                await self._fire("on_notified", record, notifier.name)
        finally:
            self._s.delivering.discard(item.id)

    async def _delivery_failed(self, item: OutboxItem, record: RequestRecord,
                               notifier: Notifier, exc: Exception) -> None:
        assert item.id is not None
        retryable = getattr(exc, "retryable", True) and not isinstance(exc, LoopgateError)
        if isinstance(exc, DeliveryError):
            retryable = exc.retryable
        attempts = item.attempts + 1
        now = self.clock()
        age = (now - (item.created_at or item.due_at)).total_seconds()
        if retryable and (
            (self.max_delivery_attempts is not None and attempts >= self.max_delivery_attempts)
            or (self.max_delivery_age is not None and age >= self.max_delivery_age)
        ):
            retryable, gave_up = False, True
        else:
            gave_up = False
        delay = min(self.max_retry_backoff, self.retry_backoff * 2 ** (attempts - 1))
        # one audit event per change of the delivery's state: when it starts failing and
        # when it ends, not for every retry in between
        failed = [] if retryable and attempts > 1 else [self._event(
            "delivery_failed", record, channel=notifier.name, details={
                "kind": item.kind, "attempt": attempts,
                "error": f"{type(exc).__name__}: {exc}",
                "retrying_in": delay if retryable else None,
                **({"gave_up_after_seconds": round(age, 3)} if gave_up else {})})]
        if retryable:
            await self.store.retry_outbox(item.id, due_at=now + timedelta(seconds=delay),
                                          error=str(exc), audit=failed)
        else:
            await self.store.complete_outbox(item.id, error=str(exc), audit=failed)
        await self._report(exc, {"notifier": notifier.name, "request_id": record.id},
                           audit=False)

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
        if _is_remote(graph):
            from loopgate_lc.langgraph_server import Deployment, RemoteDriver

            http = graph.client.http.client
            headers = {k: v for k, v in http.headers.items()
                       if k.lower() in ("x-api-key", "authorization")}
            self.register_driver(name, RemoteDriver(Deployment(
                url=str(http.base_url), name=name, graphs=(graph.assistant_id,),
                headers=headers)))
            return
        _require_checkpointer(graph, name)
        self.register_driver(name, _LocalDriver(graph, self._thread_config))

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
        if self._portal.running and self._state is not None:
            self._portal.submit(self._recover(name))
            self._portal.submit(self._spawn_watch(name))

    async def _spawn_watch(self, name: str) -> None:
        self._spawn(self._watch(name))

    async def _watch(self, name: str) -> None:
        """Run a driver's own discovery; what it reports is filed like a local pause."""
        driver = self._drivers[name]

        async def report(thread_id: str, interrupts: Sequence[Interrupt]) -> None:
            await self._after_step(name, thread_id, _Step(None, tuple(interrupts)))

        try:
            await driver.watch(report)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._report(exc, {"task": "watch", "graph": name})

    def start(self, name: str, input: Any, config: Mapping[str, Any] | None = None) -> str:
        """Start a registered graph in the background; returns its thread id at once."""
        return self._portal.call(self._start(name, input, config))

    async def astart(self, name: str, input: Any, config: Mapping[str, Any] | None = None
                     ) -> str:
        return await self._portal.acall(self._start(name, input, config))

    async def _start(self, name: str, input: Any, config: Mapping[str, Any] | None) -> str:
        await self._open()
        if not isinstance(self._drivers.get(name), _LocalDriver):
            raise ConfigurationError(f"no graph registered as {name!r}")
        cfg = self._config(config)
        thread_id = cfg["configurable"]["thread_id"]
        self._spawn(self._drive(name, input, cfg))
        return str(thread_id)

    def _thread_config(self, thread_id: str) -> dict[str, Any]:
        return self._config({"configurable": {"thread_id": thread_id}})

    def _config(self, config: Mapping[str, Any] | None) -> dict[str, Any]:
        cfg = dict(config or {})
        configurable = dict(cfg.get("configurable") or {})
        configurable.setdefault("thread_id", str(uuid.uuid4()))
        from loopgate_lc.interrupts import OBSERVER_KEY

        configurable[OBSERVER_KEY] = _Observer(self, str(configurable["thread_id"]))
        cfg["configurable"] = configurable
        return cfg

    async def _drive(self, name: str, value: Any, config: dict[str, Any]) -> None:
        thread_id = str(config["configurable"]["thread_id"])
        driver = self._drivers[name]
        assert isinstance(driver, _LocalDriver)
        lock = self._s.thread_locks.setdefault(thread_id, asyncio.Lock())
        try:
            async with lock:
                result = await driver.invoke(value, config)
                await self._after_step(name, thread_id, result)
        except Exception as exc:
            await self._audit("run_failed", thread_id=thread_id,
                              details={"graph": name, "error": f"{type(exc).__name__}: {exc}"})
            await self._report(exc, {"graph": name, "thread_id": thread_id})

    async def _after_step(self, name: str, thread_id: str, result: Any) -> None:
        interrupts = tuple(getattr(result, "interrupts", ()) or ())
        if not interrupts:
            await self._audit("finished", thread_id=thread_id, details={"graph": name})
            return
        records = await self._file_interrupts(interrupts, thread_id, name)
        if any(not r.pending and r.resumed_at is None for r in records):
            self._spawn(self._resume_thread(name, thread_id))

    async def _claim(self, thread_id: str, interrupt_ids: set[str],
                     stale_before: datetime | None = None,
                     ) -> tuple[dict[str, Any], list[RequestRecord]]:
        """Claim decided, not yet resumed requests of a thread whose interrupts are
        still pending; a decision for an interrupt that is gone is reported stale.

        With ``stale_before``, a resume claimed by then and never completed is taken
        over: the process that claimed it died before LangGraph saved the resume.
        """
        resume: dict[str, Any] = {}
        claimed: list[RequestRecord] = []
        for record in await self.store.list_requests(thread_id=thread_id):
            if record.pending or record.resume_done_at is not None or not record.interrupt_id:
                continue
            claimed_at = record.resumed_at
            retry = claimed_at is not None
            if claimed_at is not None and (stale_before is None or claimed_at > stale_before):
                continue  # someone is resuming it right now
            if record.interrupt_id not in interrupt_ids:
                if retry:  # the interrupt is gone: that resume did reach the checkpoint
                    await self.store.complete_resume(record.id, at=self.clock())
                else:  # claimed and done at once, with the reason, in one transaction
                    await self.store.mark_resumed(
                        record.id, at=self.clock(), done=True,
                        audit=[self._event("stale", record, details={
                            "error": str(StaleDecision(
                                f"interrupt {record.interrupt_id} is no longer pending"))})])
                continue
            if await self.store.mark_resumed(
                    record.id, stale_before=stale_before, at=self.clock(),
                    audit=[self._event("resume_retried" if retry else "resumed", record)]):
                resume[record.interrupt_id] = resume_value(record)
                claimed.append(record)
        return resume, claimed

    async def _complete(self, request_ids: Sequence[str],
                        audit: Sequence[AuditEvent] = ()) -> None:
        """Mark claimed resumes done (the graph's checkpoint now holds them), with
        ``audit``, in one transaction."""
        if request_ids or audit:
            await self.store.complete_resume(*request_ids, at=self.clock(), audit=audit)

    async def _resume_thread(self, name: str, thread_id: str,
                             stale_before: datetime | None = None) -> None:
        driver = self._drivers[name]
        lock = self._s.thread_locks.setdefault(thread_id, asyncio.Lock())
        try:
            async with lock:
                pending_ids = await driver.pending(thread_id)
                if pending_ids is None:  # busy: the watch loop comes back to it
                    return
                resume, claimed = await self._claim(thread_id, pending_ids, stale_before)
                if not resume:
                    return
                paused = await driver.resume(thread_id, resume, claimed)
                await self._complete([r.id for r in claimed])
                if paused is not None:
                    await self._after_step(name, thread_id, _Step(None, tuple(paused)))
        except Exception as exc:
            await self._audit("resume_failed", thread_id=thread_id, details={
                "graph": name, "error": f"{type(exc).__name__}: {exc}"})
            await self._report(exc, {"graph": name, "thread_id": thread_id})

    async def _recover(self, name: str | None = None) -> None:
        """Resume threads whose requests were decided while nobody could resume them
        (a restart, or a decision made in another process)."""
        names = [name] if name else list(self._drivers)
        now = self.clock()
        threads: dict[tuple[str, str], datetime] = {}
        for graph_name in names:
            lease = self._drivers[graph_name].lease or self.resume_lease
            stale_before = now - timedelta(seconds=lease)
            for record in await self.store.list_requests(
                    graph=graph_name, unresumed=True, stale_before=stale_before):
                if record.thread_id:
                    threads[(graph_name, record.thread_id)] = stale_before
        for (graph_name, thread_id), stale_before in sorted(threads.items()):
            lock = self._s.thread_locks.get(thread_id)
            if lock is None or not lock.locked():
                self._spawn(self._resume_thread(graph_name, thread_id, stale_before))

    async def _listen_loop(self) -> None:
        """Wake waiters and resumers the moment another process decides, where the store
        can tell (PostgreSQL); the polls of ``_wait_decided`` and ``_watch_loop`` stay as
        the safety net, and are all there is elsewhere."""
        while not self._closing:
            stream = self.store.decisions()
            if stream is None:
                return
            try:
                async for request_id in stream:
                    await self._decided_elsewhere(request_id)
            except Exception as exc:
                await self._report(exc, {"task": "listen"})
            await asyncio.sleep(self.poll_interval)

    async def _decided_elsewhere(self, request_id: str) -> None:
        if request_id in self._s.decided_here:
            return
        if not self._s.waiters.get(request_id) and not self._drivers:
            return  # nobody here cares
        try:
            record = await self.store.get_request(request_id)
        except RequestNotFound:
            return
        if record.pending:
            return
        for waiter in self._s.waiters.pop(record.id, []):
            if not waiter.done():
                waiter.set_result(record)
        if record.graph in self._drivers and record.thread_id:
            self._spawn(self._resume_thread(record.graph, record.thread_id))

    async def _watch_loop(self) -> None:
        while not self._closing:
            if self._drivers:
                try:
                    await self._recover()
                except Exception as exc:
                    await self._report(exc, {"task": "recover"})
            if self.notifiers:
                try:
                    await self._adopt()
                except Exception as exc:
                    await self._report(exc, {"task": "adopt"})
            await asyncio.sleep(self.poll_interval)

    async def _adopt(self) -> None:
        """Queue this gateway's channels for pending requests filed by a process that
        lacks them (the CLI, ``loopgate-lc mcp`` without Telegram, a worker with other
        notifiers), so a request reaches a person whichever process filed it. Each
        pending id is checked once per process; the outbox is idempotent per channel."""
        kicked = False
        for record in await self.store.list_requests(status=Status.PENDING):
            if record.id in self._s.adopted:
                continue
            self._s.adopted.add(record.id)
            queued = {item.notifier for item in await self.store.list_outbox(
                request_id=record.id) if item.kind == "notify"}
            for notifier in self._accepting(record):
                if notifier.name not in queued:
                    await self.store.enqueue_outbox(OutboxItem(
                        request_id=record.id, notifier=notifier.name, kind="notify",
                        due_at=self.clock()))
                    kicked = True
        if kicked:
            self._s.outbox_kick.set()

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
        for kind, item in self._iterate(graph, input, config, name, max_pauses,
                                        stream_mode=None):
            if kind == "result":
                result = item
        return result

    async def arun(self, graph: Any, input: Any, config: Mapping[str, Any] | None = None, *,
                   name: str | None = None, max_pauses: int = 1000) -> Any:
        """Async twin of :meth:`run` (the graph runs on the caller's event loop)."""
        result = None
        async for kind, item in self._aiterate(graph, input, config, name, max_pauses,
                                               stream_mode=None):
            if kind == "result":
                result = item
        return result

    def stream(self, graph: Any, input: Any, config: Mapping[str, Any] | None = None, *,
               stream_mode: str | list[str] = "updates", name: str | None = None,
               max_pauses: int = 1000) -> Iterator[tuple[str, Any]]:
        """Like :meth:`run`, yielding ``("chunk", chunk)`` for the graph's stream and
        ``("requested", RequestRecord)`` / ``("decided", RequestRecord)`` between."""
        for kind, item in self._iterate(graph, input, config, name, max_pauses,
                                        stream_mode=stream_mode):
            if kind != "result":
                yield kind, item

    async def astream(self, graph: Any, input: Any, config: Mapping[str, Any] | None = None,
                      *, stream_mode: str | list[str] = "updates", name: str | None = None,
                      max_pauses: int = 1000) -> AsyncIterator[tuple[str, Any]]:
        async for kind, item in self._aiterate(graph, input, config, name, max_pauses,
                                               stream_mode=stream_mode):
            if kind != "result":
                yield kind, item

    def _iterate(self, graph: Any, value: Any, config: Mapping[str, Any] | None,
                 name: str | None, max_pauses: int, stream_mode: Any
                 ) -> Iterator[tuple[str, Any]]:
        _require_checkpointer(graph)
        cfg = self._portal.call(self._prepare(config))
        thread_id = str(cfg["configurable"]["thread_id"])
        done: list[str] = []  # resumes the last invoke carried into the checkpoint
        for _ in range(max_pauses + 1):
            if stream_mode is None:
                result = graph.invoke(value, cfg, version="v2")
            else:
                for chunk in graph.stream(value, cfg, stream_mode=stream_mode):
                    yield "chunk", chunk
                result = _final(graph.get_state(cfg))
            if not result.interrupts:
                self._portal.call(self._finish(thread_id, name, done))
                yield "result", result.value
                return
            pending = {i.id for i in result.interrupts}
            if stream_mode is None:  # nobody watches: file and wait in one trip
                records, resume, decided = self._portal.call(self._pause(
                    result.interrupts, thread_id, name, done))
                yield from (("requested", r) for r in records)
            else:  # show the requests before waiting for them
                records = self._portal.call(self._file_interrupts(
                    result.interrupts, thread_id, name, done))
                yield from (("requested", r) for r in records)
                resume, decided = self._portal.call(self._next_resume(
                    records, pending, thread_id))
            yield from (("decided", r) for r in decided)
            value, done = _resume_command(resume), [r.id for r in decided]
        raise LoopgateError(f"run paused more than {max_pauses} times; stopping")

    async def _aiterate(self, graph: Any, value: Any, config: Mapping[str, Any] | None,
                        name: str | None, max_pauses: int, stream_mode: Any
                        ) -> AsyncIterator[tuple[str, Any]]:
        _require_checkpointer(graph)
        cfg = await self._portal.acall(self._prepare(config))
        thread_id = str(cfg["configurable"]["thread_id"])
        done: list[str] = []  # resumes the last invoke carried into the checkpoint
        for _ in range(max_pauses + 1):
            if stream_mode is None:
                result = await graph.ainvoke(value, cfg, version="v2")
            else:
                async for chunk in graph.astream(value, cfg, stream_mode=stream_mode):
                    yield "chunk", chunk
                result = _final(await graph.aget_state(cfg))
            if not result.interrupts:
                await self._portal.acall(self._finish(thread_id, name, done))
                yield "result", result.value
                return
            pending = {i.id for i in result.interrupts}
            if stream_mode is None:
                records, resume, decided = await self._portal.acall(self._pause(
                    result.interrupts, thread_id, name, done))
                for record in records:
                    yield "requested", record
            else:
                records = await self._portal.acall(self._file_interrupts(
                    result.interrupts, thread_id, name, done))
                for record in records:
                    yield "requested", record
                resume, decided = await self._portal.acall(self._next_resume(
                    records, pending, thread_id))
            for record in decided:
                yield "decided", record
            value, done = _resume_command(resume), [r.id for r in decided]
        raise LoopgateError(f"run paused more than {max_pauses} times; stopping")

    async def _pause(self, interrupts: Sequence[Interrupt], thread_id: str, name: str | None,
                     done: Sequence[str] = (),
                     ) -> tuple[list[RequestRecord], dict[str, Any], list[RequestRecord]]:
        """File a paused run's interrupts and wait for what resumes it, in one trip to the
        gateway's loop."""
        records = await self._file_interrupts(interrupts, thread_id, name, done)
        resume, decided = await self._next_resume(records, {i.id for i in interrupts},
                                                  thread_id)
        return records, resume, decided

    async def _finish(self, thread_id: str, name: str | None, done: Sequence[str]) -> None:
        await self._complete(done, [self._event("finished", thread_id=thread_id,
                                                details={"graph": name})])

    async def _prepare(self, config: Mapping[str, Any] | None) -> dict[str, Any]:
        await self._open()
        return self._config(config)

    async def _next_resume(self, records: list[RequestRecord], pending_ids: set[str],
                           thread_id: str) -> tuple[dict[str, Any], list[RequestRecord]]:
        """Wait until at least one of the thread's requests is decided, then claim every
        decided one (each resumes exactly once)."""
        for _ in range(1_000_000):
            resume, claimed = await self._claim(thread_id, pending_ids)
            if resume:
                return resume, claimed
            waiting = [r for r in records if r.pending]
            if not waiting:
                waiting = [r for r in await self.store.list_requests(thread_id=thread_id)
                           if r.pending and r.interrupt_id in pending_ids]
            if not waiting:
                raise StaleDecision(
                    f"thread {thread_id} is paused but none of its requests can resume it")
            watchers = [asyncio.ensure_future(self._wait_decided(r.id, None)) for r in waiting]
            try:
                done, _ = await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for watcher in watchers:
                    watcher.cancel()
            for task in done:
                task.result()
            records = [await self.store.get_request(r.id) for r in records]
        raise LoopgateError("waiting for decisions did not converge")  # pragma: no cover

    # audit and errors --------------------------------------------------------------------

    def _event(self, event: str, record: RequestRecord | None = None, *,
               actor: str | None = None, channel: str | None = None,
               thread_id: str | None = None, session_id: str | None = None,
               details: dict[str, Any] | None = None) -> AuditEvent:
        """An audit event, to append on its own or to commit with a state change."""
        payload = record.payload if record else {}
        return AuditEvent(
            at=self.clock(),
            event=event,
            request_id=record.id if record else None,
            session_id=record.session_id if record else session_id,
            thread_id=record.thread_id if record else thread_id,
            actor=actor,
            channel=channel,
            args_hash=args_hash(payload.get("args")) if record else None,
            details=json.loads(json.dumps(details or {}, default=str)),
        )

    async def _audit(self, event: str, record: RequestRecord | None = None, *,
                     actor: str | None = None, channel: str | None = None,
                     thread_id: str | None = None, session_id: str | None = None,
                     details: dict[str, Any] | None = None) -> None:
        """Append an event that records no state change of its own."""
        await self.store.append_audit(self._event(
            event, record, actor=actor, channel=channel, thread_id=thread_id,
            session_id=session_id, details=details))

    async def _record_auto(self, name: str, args: dict[str, Any], verdict: Verdict,
                           tool_call_id: str | None, thread_id: str | None,
                           risk: RiskLevel, confidence: float | None) -> None:
        await self._open()
        call = {"tool": name, "tool_call_id": tool_call_id, "risk_level": risk.value,
                "confidence": confidence}
        await self.store.append_audit(AuditEvent(
            at=self.clock(), event="auto_approved", thread_id=thread_id,
            channel="policy", args_hash=args_hash(args),
            details={**call, "policy": verdict.policy, "reason": verdict.reason}))
        if verdict.shadow is not None:
            await self.store.append_audit(AuditEvent(
                at=self.clock(), event="shadow", thread_id=thread_id, channel="policy",
                args_hash=args_hash(args), details=shadow_details(
                    call, enforced_policy=verdict.policy, enforced_auto=True,
                    policy=verdict.shadow.policy, would_auto=verdict.shadow.auto_approved,
                    reason=verdict.shadow.reason)))
        await self._fire("on_approve", None, True, verdict.policy)

    async def _fire(self, name: str, *args: Any) -> list[Any]:
        return await fire(self.hooks, name, *args, report=self._report)

    async def _report(self, error: BaseException, context: dict[str, Any], *,
                      audit: bool = True) -> None:
        """Log, audit (unless the caller already did) and pass to ``on_error`` hooks;
        never raises, so a failure elsewhere cannot lose a decision."""
        log.warning("loopgate_lc: %s in %s", error, context)
        if audit:
            try:
                await self.store.append_audit(AuditEvent(
                    at=self.clock(), event="error", request_id=context.get("request_id"),
                    thread_id=context.get("thread_id"),
                    details={"error": f"{type(error).__name__}: {error}",
                             **{k: str(v) for k, v in context.items()}}))
            except Exception:  # the audit itself failing must not hide the first error
                log.exception("loopgate_lc: could not audit an error")
        if context.get("hook") == "on_error":
            return
        for part in parts_of(self.hooks):
            if part.on_error is None:
                continue
            try:
                result = part.on_error(error, context)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("loopgate_lc: on_error hook failed")


# helpers ------------------------------------------------------------------------------------


def _call_order(record: RequestRecord) -> tuple[bool, int, datetime, str]:
    """Where a request stands in its thread's batch: its tool call's position in the
    model's message when known, else when it was filed."""
    position = record.payload.get("position")
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


def _is_remote(graph: Any) -> bool:
    try:
        from langgraph.pregel.remote import RemoteGraph
    except ImportError:  # pragma: no cover - part of langgraph
        return False
    return isinstance(graph, RemoteGraph)


def _require_checkpointer(graph: Any, name: str | None = None) -> None:
    if _is_remote(graph):
        raise ConfigurationError(
            "a RemoteGraph runs on LangGraph Server, which keeps its state: let the gateway "
            "watch it with register_graph(name, remote_graph) (or a LangGraphBridge) and "
            "start runs through the server")
    if getattr(graph, "checkpointer", None) in (None, False, True):
        which = f"graph {name!r}" if name else "the graph"
        raise ConfigurationError(
            f"{which} has no checkpointer; compile it with one (e.g. InMemorySaver, "
            "SqliteSaver, PostgresSaver) so paused runs can resume")


@dataclass(frozen=True)
class _Step:
    """What a streamed step left behind, shaped like ``invoke(..., version="v2")``'s."""

    value: Any
    interrupts: tuple[Interrupt, ...]


def _final(state: Any) -> _Step:
    return _Step(state.values, tuple(state.interrupts))
