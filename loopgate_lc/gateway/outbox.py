"""The outbox: deliveries owed to notifiers, made from the store, retried with backoff.

A state change writes the deliveries it owes in its own transaction (see
:meth:`Outbox.deliveries`); this part only carries them out. A failed delivery never
changes a request's status; it is retried, and past its limits given up (``dead``),
with one audit event when it starts failing and one when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from loopgate_lc.errors import LoopgateError
from loopgate_lc.gateway.audit import Auditor, Clock
from loopgate_lc.gateway.tasks import Tasks
from loopgate_lc.notifiers.base import DeliveryError, Notifier, VoteNotifier
from loopgate_lc.schema import Status
from loopgate_lc.stores.base import OutboxItem, OutboxKind, RequestRecord, Store

__all__ = ["Outbox", "Retries"]

log = logging.getLogger("loopgate_lc")


@dataclass(frozen=True)
class Retries:
    """How long a failing delivery is retried (see ``Loopgate``'s arguments)."""

    backoff: float = 1.0
    max_backoff: float = 300.0
    max_attempts: int | None = 25
    max_age: float | None = 86_400.0


class Outbox:
    """Delivers what is owed to this gateway's notifiers."""

    def __init__(self, store: Store, notifiers: Sequence[Notifier], auditor: Auditor,
                 clock: Clock, tasks: Tasks, retries: Retries, poll_interval: float) -> None:
        self._store = store
        self._notifiers = {n.name: n for n in notifiers}
        self._auditor = auditor
        self._clock = clock
        self._tasks = tasks
        self._retries = retries
        self._poll = poll_interval
        self._kick = asyncio.Event()
        self._delivering: set[int] = set()
        self._adopted: set[str] = set()  # pending ids checked for our channels
        self.lock = asyncio.Lock()
        """Held by a pass; closing takes it so claimed deliveries are handed back."""

    def kick(self) -> None:
        """Deliver now rather than at the next poll."""
        self._kick.set()

    def accepting(self, record: RequestRecord) -> list[Notifier]:
        """The notifiers that want this request. A notifier may decline with an optional
        ``accepts(record) -> bool`` (a channel only some requests use, like the server's
        ``callback_url`` delivery) instead of being sent, and auditing, every request."""
        wanted = []
        for notifier in self._notifiers.values():
            accepts = getattr(notifier, "accepts", None)
            if accepts is None or accepts(record):
                wanted.append(notifier)
        return wanted

    def showing_votes(self, record: RequestRecord) -> list[str]:
        """The accepting channels that show a quorum request's count as votes arrive
        (:class:`VoteNotifier`); the others hear only of the decision."""
        return [n.name for n in self.accepting(record) if isinstance(n, VoteNotifier)]

    def deliveries(self, record: RequestRecord, kind: OutboxKind, now: datetime,
                   names: Iterable[str] | None = None) -> list[OutboxItem]:
        """The deliveries a state change owes: to ``names``, or every accepting notifier;
        the caller commits them with the change."""
        if names is None:
            names = [n.name for n in self.accepting(record)]
        return [OutboxItem(request_id=record.id, notifier=name, kind=kind, due_at=now,
                           created_at=now) for name in names]

    async def run(self) -> None:
        """Deliver what is owed, for the gateway's lifetime."""
        while not self._tasks.closing:
            self._kick.clear()
            try:
                async with self.lock:
                    await self._drain()
            except Exception as exc:
                await self._auditor.report(exc, {"task": "outbox"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self._poll)

    async def _drain(self) -> None:
        if not self._notifiers:
            return
        # only this gateway's channels: another process's deliveries stay its own
        items = await self._store.claim_outbox(self._clock(), lease_seconds=300.0,
                                               notifiers=sorted(self._notifiers))
        for item in items:
            if item.id is None or item.id in self._delivering:
                continue
            if self._tasks.closing:
                # the delivery would be cut off: give the lease back at once
                await self._store.retry_outbox(item.id, due_at=self._clock(),
                                               error="gateway closing")
                continue
            self._delivering.add(item.id)
            self._tasks.spawn(self._deliver(item, self._notifiers[item.notifier]))

    async def _deliver(self, item: OutboxItem, notifier: Notifier) -> None:
        assert item.id is not None
        try:
            record = await self._store.get_request(item.request_id)
            if item.kind in ("notify", "voted") and not record.pending:
                # decided meanwhile: its ``resolved`` delivery shows the outcome and count
                await self._store.complete_outbox(item.id)
                return
            ref = None
            try:
                if item.kind == "notify":
                    ref = await notifier.notify(record)
                elif item.kind == "voted":
                    if isinstance(notifier, VoteNotifier):
                        await self._show_votes(record, notifier)
                else:
                    await notifier.on_resolved(record)
            except Exception as exc:
                await self._failed(item, record, notifier, exc)
                return
            # done, where it was shown, and (for a notification) its audit: one commit
            await self._store.complete_outbox(
                item.id, message_ref=ref,
                audit=[self._auditor.event("notified", record, channel=notifier.name)]
                if item.kind == "notify" else ())
            if item.kind == "notify":
                await self._auditor.fire("on_notified", record, notifier.name)
        finally:
            self._delivering.discard(item.id)

    async def _show_votes(self, record: RequestRecord, notifier: VoteNotifier) -> None:
        """Show the latest count: a vote counted while its delivery was on its way shares
        that delivery (one open row per channel and kind), so look once more after it."""
        for _ in range(3):
            await notifier.on_vote(record)
            latest = await self._store.get_request(record.id)
            if not latest.pending or len(latest.votes) == len(record.votes):
                return
            record = latest

    async def _failed(self, item: OutboxItem, record: RequestRecord, notifier: Notifier,
                      exc: Exception) -> None:
        assert item.id is not None
        limits = self._retries
        retryable = getattr(exc, "retryable", True) and not isinstance(exc, LoopgateError)
        if isinstance(exc, DeliveryError):
            retryable = exc.retryable
        attempts = item.attempts + 1
        now = self._clock()
        age = (now - (item.created_at or item.due_at)).total_seconds()
        gave_up = retryable and (
            (limits.max_attempts is not None and attempts >= limits.max_attempts)
            or (limits.max_age is not None and age >= limits.max_age))
        if gave_up:
            retryable = False
        delay = min(limits.max_backoff, limits.backoff * 2 ** (attempts - 1))
        # one audit event per change of the delivery's state: when it starts failing and
        # when it ends, not for every retry in between
        failed = [] if retryable and attempts > 1 else [self._auditor.event(
            "delivery_failed", record, channel=notifier.name, details={
                "kind": item.kind, "attempt": attempts,
                "error": f"{type(exc).__name__}: {exc}",
                "retrying_in": delay if retryable else None,
                **({"gave_up_after_seconds": round(age, 3)} if gave_up else {})})]
        if retryable:
            await self._store.retry_outbox(item.id, due_at=now + timedelta(seconds=delay),
                                           error=str(exc), audit=failed)
        else:
            await self._store.complete_outbox(item.id, error=str(exc), audit=failed)
        await self._auditor.report(exc, {"notifier": notifier.name, "request_id": record.id},
                                   audit=False)

    async def adopt_loop(self) -> None:
        """Adopt other processes' pending requests, every poll, for the gateway's life."""
        while not self._tasks.closing and self._notifiers:
            try:
                await self.adopt()
            except Exception as exc:
                await self._auditor.report(exc, {"task": "adopt"})
            await asyncio.sleep(self._poll)

    async def adopt(self) -> None:
        """Queue this gateway's channels for pending requests filed by a process that
        lacks them (the CLI, ``loopgate-lc mcp`` without Telegram, a worker with other
        notifiers), so a request reaches a person whichever process filed it. Each
        pending id is checked once per process; the outbox is idempotent per channel."""
        kicked = False
        for record in await self._store.list_requests(status=Status.PENDING):
            if record.id in self._adopted:
                continue
            self._adopted.add(record.id)
            queued = {item.notifier for item in await self._store.list_outbox(
                request_id=record.id) if item.kind == "notify"}
            for notifier in self.accepting(record):
                if notifier.name not in queued:
                    await self._store.enqueue_outbox(OutboxItem(
                        request_id=record.id, notifier=notifier.name, kind="notify",
                        due_at=self._clock()))
                    kicked = True
        if kicked:
            self.kick()
