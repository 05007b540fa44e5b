"""Resuming: decided requests carried back into their runs, each exactly once.

A resume is claimed in the store (with its ``resumed`` audit event, one transaction)
before LangGraph sees it, and marked done once the graph's checkpoint holds it. A claim
whose process died before that is taken over after the driver's lease. Threads decided
while nobody here could resume them (a restart, another process's decision) are found
by :meth:`Resuming.recover`, at once where the store announces decisions, else at the
next poll.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from loopgate_lc.decisions import resume_value
from loopgate_lc.errors import LoopgateError, RequestNotFound, StaleDecision, ThreadBusy
from loopgate_lc.gateway.audit import Auditor, Clock
from loopgate_lc.gateway.drivers import GraphDriver, LocalDriver, interrupts_of
from loopgate_lc.gateway.filing import Filing
from loopgate_lc.gateway.outbox import Outbox
from loopgate_lc.gateway.tasks import Tasks
from loopgate_lc.gateway.waiting import Waiters
from loopgate_lc.stores.base import AuditEvent, RequestRecord, Store

#: Seconds after a run in another thread returns before its completion starts (see
#: :meth:`Resuming.hand`).
HAND_OVER_DELAY = 0.001

if TYPE_CHECKING:
    from langgraph.types import Interrupt

__all__ = ["Resuming"]


@dataclass
class _ThreadLock:
    """One thread's lock, and how many hold or wait for it (it goes when none do)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Resuming:
    """Claims, resumes, recovers; runs registered graphs in the background."""

    def __init__(self, store: Store, auditor: Auditor, filing: Filing, waiters: Waiters,
                 drivers: Mapping[str, GraphDriver], tasks: Tasks, clock: Clock, *,
                 resume_lease: float, poll_interval: float, outbox: Outbox) -> None:
        self._store = store
        self._auditor = auditor
        self._filing = filing
        self._waiters = waiters
        self._drivers = drivers  # the gateway's registry: graphs registered later count
        self._tasks = tasks
        self._clock = clock
        self._lease = resume_lease
        self._poll = poll_interval
        self._outbox = outbox
        # only threads being driven or resumed right now: an entry goes with its last user
        self._locks: dict[str, _ThreadLock] = {}
        # completions committing after their run returned (see ``complete_behind``)
        self._behind: set[asyncio.Task[None]] = set()
        # completions handed over by runs in other threads, not started yet (``hand``)
        self._handed: collections.deque[Callable[[], None]] = collections.deque()

    @contextlib.asynccontextmanager
    async def _lock(self, thread_id: str) -> AsyncIterator[None]:
        """Hold ``thread_id``'s lock: one step of a thread at a time in this process."""
        entry = self._locks.get(thread_id)
        if entry is None:
            entry = self._locks[thread_id] = _ThreadLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if not entry.users:
                del self._locks[thread_id]

    def busy(self, thread_id: str) -> bool:
        """Whether this process is stepping ``thread_id`` now (or about to)."""
        return thread_id in self._locks

    def decided(self, record: RequestRecord) -> None:
        """A decision was made (here or elsewhere): resume its thread if this gateway
        drives its graph."""
        if record.graph is not None and record.graph in self._drivers and record.thread_id:
            self._tasks.spawn(self.resume_thread(record.graph, record.thread_id))

    # claiming ----------------------------------------------------------------------------

    async def claim(self, thread_id: str, interrupt_ids: set[str],
                    stale_before: datetime | None = None, at: datetime | None = None,
                    ) -> tuple[dict[str, Any], list[RequestRecord]]:
        """Claim decided, not yet resumed requests of a thread whose interrupts are
        still pending; a decision for an interrupt that is gone is reported stale.

        With ``stale_before``, a resume claimed by then and never completed is taken
        over: the process that claimed it died before LangGraph saved the resume.
        ``at`` is the claims' time (what giving them back names).
        """
        at = at or self._clock()
        resume: dict[str, Any] = {}
        claimed: list[RequestRecord] = []
        for record in await self._store.list_requests(thread_id=thread_id):
            if record.pending or record.resume_done_at is not None or not record.interrupt_id:
                continue
            claimed_at = record.resumed_at
            retry = claimed_at is not None
            if claimed_at is not None and (stale_before is None or claimed_at > stale_before):
                continue  # someone is resuming it right now
            if record.interrupt_id not in interrupt_ids:
                if retry:  # the interrupt is gone: that resume did reach the checkpoint
                    await self._store.complete_resume(record.id, at=self._clock())
                else:  # claimed and done at once, with the reason, in one transaction
                    await self._store.mark_resumed(
                        record.id, at=self._clock(), done=True,
                        audit=[self._auditor.event("stale", record, details={
                            "error": str(StaleDecision(
                                f"interrupt {record.interrupt_id} is no longer pending"))})])
                continue
            # deliveries of this request made here and not yet recorded ride along
            with self._outbox.riding(record.id) as delivered:
                won = await self._store.mark_resumed(
                    record.id, stale_before=stale_before, at=at, delivered=delivered,
                    audit=[self._auditor.event("resume_retried" if retry else "resumed",
                                               record)])
            if won:
                resume[record.interrupt_id] = resume_value(record)
                claimed.append(record)
        return resume, claimed

    async def complete(self, request_ids: Sequence[str],
                       audit: Sequence[AuditEvent] = ()) -> None:
        """Mark claimed resumes done (the graph's checkpoint now holds them), with
        ``audit``, in one transaction; then ``on_resumed`` for each request this call
        completed (once each, whoever else tries)."""
        if not request_ids and not audit:
            return
        at = self._clock()
        # deliveries of these requests made here and not yet recorded ride along (the
        # ``resolved`` one, when it was quicker than the rest of the run)
        with self._outbox.riding(*request_ids) as delivered:
            await self._store.complete_resume(*request_ids, at=at, audit=audit,
                                              delivered=delivered)
        if request_ids and self._auditor.wants("on_resumed"):
            for request_id in request_ids:
                record = await self._store.get_request(request_id)
                if record.resume_done_at == at:  # this call completed it
                    await self._auditor.fire("on_resumed", record)

    def complete_behind(self, request_ids: Sequence[str],
                        audit: Sequence[AuditEvent] = ()) -> None:
        """:meth:`complete`, committed while the caller goes on: a run that finished
        returns its result without waiting for the commit that records it.

        The graph's checkpoint already holds the resumes, so nothing can resume them
        again meanwhile (their claims stand), and a crash before the commit leaves what
        a crash a moment earlier would: claims a lease later completes. Every later call
        to the gateway waits for these commits first (:meth:`caught_up`), so none can
        see the run unfinished; closing waits for them too, and so does the end of a
        process that never closed its gateway. A failure is reported, as a background
        task's is.
        """
        task = asyncio.get_running_loop().create_task(self._complete(request_ids, audit))
        self._behind.add(task)
        task.add_done_callback(self._behind.discard)

    def hand(self, work: Callable[[], None]) -> None:
        """From a run's own thread: ``work`` (which calls :meth:`complete_behind`) is
        started on the loop a moment later, by :meth:`start_handed_soon`, or at once by
        any call that needs it done first (:meth:`caught_up`).

        A moment later, not at once: a loop thread woken straight away takes the
        interpreter lock to start the commit while the run's thread is still returning
        its result (about 0.2 ms of the caller's time, measured).
        """
        self._handed.append(work)

    def start_handed_soon(self) -> None:
        """On the loop, after :meth:`hand`: start the handed completions shortly."""
        asyncio.get_running_loop().call_later(HAND_OVER_DELAY, self.start_handed)

    def start_handed(self) -> None:
        """Start the handed completions now."""
        while self._handed:
            self._handed.popleft()()

    async def _complete(self, request_ids: Sequence[str], audit: Sequence[AuditEvent]
                        ) -> None:
        try:
            await self.complete(request_ids, audit)
        except Exception as exc:
            await self._auditor.report(exc, {"task": "complete", "requests": list(request_ids)})

    @property
    def behind(self) -> bool:
        """Whether completions are still to commit (see :meth:`complete_behind`)."""
        return bool(self._behind or self._handed)

    async def caught_up(self) -> None:
        """Wait for the completions still to commit (handed ones start now), but the
        caller's own (a hook one of them fires may call the gateway)."""
        self.start_handed()
        waiting = self._behind - {asyncio.current_task()}
        if waiting:
            await asyncio.wait(waiting)

    async def next_resume(self, records: list[RequestRecord], pending_ids: set[str],
                          thread_id: str) -> tuple[dict[str, Any], list[RequestRecord]]:
        """Wait until at least one of the thread's requests is decided, then claim every
        decided one (each resumes exactly once). A decision made in this process while
        the run waits claims the resume in its own transaction and hands the record
        over; one made elsewhere is claimed here."""
        ids = [r.id for r in records]
        self._waiters.run_waits(records)
        # all pending as just filed or read: nothing to claim yet, and a decision made
        # since is seen by the waits below (each reads its request once registered)
        fresh = all(r.pending for r in records)
        try:
            for _ in range(1_000_000):
                handed = self._waiters.take_over(ids)
                resume: dict[str, Any] = {}
                claimed: list[RequestRecord] = []
                # a decision made here for every pending interrupt leaves nothing else
                # to claim: no read of the thread between the decision and the resume
                if not fresh and not pending_ids <= {r.interrupt_id for r in handed}:
                    resume, claimed = await self.claim(thread_id, pending_ids)
                    handed += self._waiters.take_over(ids)
                fresh = False
                for record in handed:
                    if record.interrupt_id in pending_ids:
                        resume[record.interrupt_id] = resume_value(record)
                        claimed.append(record)
                if resume:
                    return resume, claimed
                waiting = [r for r in records if r.pending]
                handovers = self._waiters.handovers(ids)
                if not waiting and not handovers:
                    waiting = [r for r in await self._store.list_requests(thread_id=thread_id)
                               if r.pending and r.interrupt_id in pending_ids]
                if not waiting and not handovers:
                    raise StaleDecision(
                        f"thread {thread_id} is paused but none of its requests can resume it")
                # a hand-over is looked for every RECHECK seconds (no store read),
                # should its wake-up ever be missed
                seen = await self._waiters.first([r.id for r in waiting], handovers, ids,
                                                 functools.partial(_parse, waiting))
                records = [seen.get(r.id, r) for r in records]
        finally:
            self._waiters.run_left(ids)
        raise LoopgateError("waiting for decisions did not converge")  # pragma: no cover

    # background runs ---------------------------------------------------------------------

    async def drive(self, name: str, value: Any, config: dict[str, Any]) -> None:
        """Run a registered local graph until it finishes or pauses (then file)."""
        thread_id = str(config["configurable"]["thread_id"])
        driver = self._drivers[name]
        assert isinstance(driver, LocalDriver)
        try:
            async with self._lock(thread_id):
                result = await driver.invoke(value, config)
                await self.after_step(name, thread_id, interrupts_of(result))
        except Exception as exc:
            await self._auditor.append("run_failed", thread_id=thread_id, details={
                "graph": name, "error": f"{type(exc).__name__}: {exc}"})
            await self._auditor.report(exc, {"graph": name, "thread_id": thread_id})

    async def after_step(self, name: str, thread_id: str,
                         interrupts: Sequence[Interrupt]) -> None:
        """File where a background step paused, or audit that the run finished."""
        if not interrupts:
            await self._auditor.append("finished", thread_id=thread_id, details={"graph": name})
            return
        records = await self._filing.file_interrupts(interrupts, thread_id, name)
        if any(not r.pending and r.resumed_at is None for r in records):
            self._tasks.spawn(self.resume_thread(name, thread_id))

    async def watch(self, name: str) -> None:
        """Run a driver's own discovery; what it reports is filed like a local pause."""
        driver = self._drivers[name]

        async def report(thread_id: str, interrupts: Sequence[Interrupt]) -> None:
            await self.after_step(name, thread_id, tuple(interrupts))

        try:
            await driver.watch(report)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._auditor.report(exc, {"task": "watch", "graph": name})

    async def resume_thread(self, name: str, thread_id: str,
                            stale_before: datetime | None = None) -> None:
        """Claim what is decided on a thread and resume it through its driver."""
        driver = self._drivers[name]
        try:
            async with self._lock(thread_id):
                pending_ids = await driver.pending(thread_id)
                if pending_ids is None:  # busy: the recovery poll comes back to it
                    return
                at = self._clock()
                resume, claimed = await self.claim(thread_id, pending_ids, stale_before, at)
                if not resume:
                    return
                try:
                    paused = await driver.resume(thread_id, resume, claimed)
                except ThreadBusy as exc:
                    # nothing was sent: give the claims back, so this process's recovery
                    # poll or any other process resumes the thread as soon as it is free
                    for record in claimed:
                        await self._store.release_resume(
                            record.id, claimed_at=at, audit=[self._auditor.event(
                                "resume_deferred", record, details={"reason": str(exc)})])
                    return
                await self.complete([r.id for r in claimed])
                if paused is not None:
                    await self.after_step(name, thread_id, tuple(paused))
        except Exception as exc:
            await self._auditor.append("resume_failed", thread_id=thread_id, details={
                "graph": name, "error": f"{type(exc).__name__}: {exc}"})
            await self._auditor.report(exc, {"graph": name, "thread_id": thread_id})

    # recovery ----------------------------------------------------------------------------

    async def recover(self, name: str | None = None) -> None:
        """Resume threads whose requests were decided while nobody could resume them
        (a restart, or a decision made in another process)."""
        names = [name] if name else list(self._drivers)
        now = self._clock()
        threads: dict[tuple[str, str], datetime] = {}
        for graph_name in names:
            lease = self._drivers[graph_name].lease or self._lease
            stale_before = now - timedelta(seconds=lease)
            for record in await self._store.list_requests(
                    graph=graph_name, unresumed=True, stale_before=stale_before):
                if record.thread_id:
                    threads[(graph_name, record.thread_id)] = stale_before
        for (graph_name, thread_id), stale_before in sorted(threads.items()):
            if not self.busy(thread_id):
                self._tasks.spawn(self.resume_thread(graph_name, thread_id, stale_before))

    async def recover_loop(self) -> None:
        """Recover every poll, for the gateway's lifetime (the safety net under
        :meth:`listen_loop`)."""
        while not self._tasks.closing:
            if self._drivers:
                try:
                    await self.recover()
                except Exception as exc:
                    await self._auditor.report(exc, {"task": "recover"})
            await asyncio.sleep(self._poll)

    async def listen_loop(self) -> None:
        """Wake waiters and resumers the moment another process decides, where the store
        can tell (PostgreSQL); the polls stay as the safety net, and are all there is
        elsewhere."""
        while not self._tasks.closing:
            stream = self._store.decisions()
            if stream is None:
                return
            try:
                async for request_id in stream:
                    await self._decided_elsewhere(request_id)
            except Exception as exc:
                await self._auditor.report(exc, {"task": "listen"})
            await asyncio.sleep(self._poll)

    async def _decided_elsewhere(self, request_id: str) -> None:
        if self._waiters.decided_here(request_id) or self._waiters.handovers([request_id]):
            return  # decided here (the announcement can beat the commit's return)
        if not self._waiters.waited_for(request_id) and not self._drivers:
            return  # nobody here cares
        try:
            record = await self._store.get_request(request_id)
        except RequestNotFound:
            return
        if record.pending:
            return
        self._waiters.wake(record)
        self.decided(record)


def _parse(records: Sequence[RequestRecord]) -> None:
    """Parse the requests a run waits for while a person decides, not after: the answer's
    checks read them (a notifier that showed them parsed them already). One that does
    not parse is left to fail where it is read."""
    for record in records:
        with contextlib.suppress(ValueError):
            record.request  # noqa: B018 - parsed once, kept with the record
