"""Timers: deadlines fire within a second, from a heap, not from scans.

Deadlines filed or moved in this process go on a heap the moment they are known; the
timer sleeps until the earliest one and then asks the store for everything due (which
also covers requests other processes filed). Deadlines it cannot know of by itself
(filed elsewhere, or before a restart) come from the store's ``next_expiry`` once per
poll. Between those, an idle wake costs a comparison, not a query.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import Sequence
from datetime import datetime, timedelta

from loopgate_lc.errors import AlreadyDecided
from loopgate_lc.gateway.audit import Auditor, Clock
from loopgate_lc.gateway.deciding import Deciding
from loopgate_lc.gateway.outbox import Outbox
from loopgate_lc.gateway.settings import Escalation, OnTimeout
from loopgate_lc.gateway.tasks import Tasks
from loopgate_lc.stores.base import RequestRecord, Store

__all__ = ["Timers"]

_FROM_STORE = ""  # the heap entry of a deadline learned from the store, not one request


class Timers:
    """Fires timeouts and escalations."""

    def __init__(self, store: Store, auditor: Auditor, deciding: Deciding, outbox: Outbox,
                 clock: Clock, tasks: Tasks, *, on_timeout: OnTimeout,
                 escalation: Sequence[Escalation], poll_interval: float) -> None:
        self._store = store
        self._auditor = auditor
        self._deciding = deciding
        self._outbox = outbox
        self._clock = clock
        self._tasks = tasks
        self._on_timeout = on_timeout
        self._escalation = tuple(escalation)
        self._poll = poll_interval
        self._heap: list[tuple[datetime, str]] = []
        self._armed: dict[str, datetime] = {}  # the live entry of each id on the heap
        self._kick = asyncio.Event()

    def arm(self, record: RequestRecord) -> None:
        """Fire ``record``'s deadline when it comes (wakes the timer if it is sooner
        than anything it waits for)."""
        if record.expires_at is not None and record.pending:
            self._push(record.expires_at, record.id)

    def disarm(self, record: RequestRecord) -> None:
        """``record`` was decided: its deadline needs nobody."""
        self._armed.pop(record.id, None)

    def _push(self, at: datetime, key: str) -> None:
        if self._armed.get(key) == at:
            return
        sooner = not self._heap or at < self._heap[0][0]
        self._armed[key] = at
        heapq.heappush(self._heap, (at, key))
        if len(self._heap) > 2 * len(self._armed) + 64:  # mostly decided: drop the dead
            self._heap = [(t, k) for t, k in self._heap if self._armed.get(k) == t]
            heapq.heapify(self._heap)
        if sooner:
            self._kick.set()

    def _next(self) -> datetime | None:
        """The earliest live deadline on the heap."""
        while self._heap:
            at, key = self._heap[0]
            if self._armed.get(key) == at:
                return at
            heapq.heappop(self._heap)
        return None

    def _pop_due(self, now: datetime) -> None:
        while self._heap and self._heap[0][0] <= now:
            at, key = heapq.heappop(self._heap)
            if self._armed.get(key) == at:
                del self._armed[key]

    async def run(self) -> None:
        """Fire deadlines for the gateway's lifetime. Wakes at the next deadline, at
        most every half second (injected clocks move without telling anyone), and asks
        the store for deadlines it did not file once per poll."""
        loop = asyncio.get_running_loop()
        interval = min(0.5, self._poll)
        ask_store_at = loop.time()
        while not self._tasks.closing:
            self._kick.clear()
            try:
                nxt = self._next()
                if nxt is not None and nxt <= self._clock():
                    await self.expire_due()
                    ask_store_at = loop.time()  # the store knows what is due next
                if loop.time() >= ask_store_at:
                    found = await self._store.next_expiry()
                    if found is not None:
                        self._push(found, _FROM_STORE)
                    ask_store_at = loop.time() + self._poll
            except Exception as exc:
                await self._auditor.report(exc, {"task": "timeouts"})
            self._kick.clear()
            delay = min(interval, max(0.0, ask_store_at - loop.time()))
            nxt = self._next()
            if nxt is not None:
                delay = max(0.0, min(delay, (nxt - self._clock()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), delay)

    async def expire_due(self, now: datetime | None = None) -> list[RequestRecord]:
        """Resolve (or escalate) every request whose deadline has passed."""
        now = now or self._clock()
        self._pop_due(now)
        done: list[RequestRecord] = []
        for record in await self._store.expired(now):
            try:
                result = await self._expire(record, now)
            except AlreadyDecided:
                continue  # a person answered just in time: their answer stands
            if result is not None:
                done.append(result)
        return done

    async def _expire(self, record: RequestRecord, now: datetime) -> RequestRecord | None:
        level = record.escalation_level
        if self._on_timeout == "escalate" and level < len(self._escalation):
            step = self._escalation[level]
            # deliveries of this request made here and not yet recorded go first: an
            # open notification would otherwise stand in for the escalation's own
            with self._outbox.riding(record.id) as delivered:
                moved = await self._store.extend_expiry(
                    record.id, expires_at=now + timedelta(seconds=step.timeout),
                    escalation_level=level + 1,
                    audit=[self._auditor.event("escalated", record, channel="timer",
                                               details={
                        "level": level + 1, "notifiers": list(step.notifiers),
                        "approvers": list(step.approvers)})],
                    outbox=self._outbox.deliveries(record, "notify", now,
                                                   step.notifiers or None),
                    delivered=delivered)
            if not moved:
                return None
            self._outbox.kick()
            escalated = await self._store.get_request(record.id)
            self.arm(escalated)
            return escalated
        outcome = "approve" if self._on_timeout == "approve" else "reject"
        waited = (record.expires_at or now) - record.created_at
        decision = {
            "type": "timeout",
            "outcome": outcome,
            "message": f"no answer within {int(waited.total_seconds())}s; "
                       f"the configured outcome is {outcome}",
        }
        return await self._deciding.decide(record, decision, actor=None, channel="timer",
                                           event="timed_out")
