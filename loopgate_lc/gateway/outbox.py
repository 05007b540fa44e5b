"""The outbox: deliveries owed to notifiers, made from the store, retried with backoff.

A state change writes the deliveries it owes in its own transaction (see
:meth:`Outbox.deliveries`); this part only carries them out. A failed delivery never
changes a request's status; it is retried, and past its limits given up (``dead``),
with one audit event when it starts failing and one when it ends.

Filing and deciding write the deliveries this gateway's own notifiers owe already
leased to this process (for :data:`OWN_LEASE` seconds), and hand them here right after
the commit (:meth:`Outbox.deliver`): no claim, no read. Deliveries other processes owe
this gateway's channels, or whose lease passed, are claimed from the store as before.

A delivery that succeeded is recorded done (with where it was shown and its
``notified`` event) without a transaction of its own where it can: the next decision,
resume claim or finished resume of its request carries it (:meth:`Outbox.take`), and
what no such write takes within one poll interval is recorded in one batch
(:meth:`Outbox.flush`; at close too). Until then the delivery is only leased: a crash
before it is recorded means it is made again once the lease passes, the at-least-once
a crash between a delivery and its record always meant.

asyncio is imported by the first delivery, wait or pass: a process that only decides
(the CLI) owes its own channels nothing, and runs without an event loop (see
:mod:`loopgate_lc._inline`).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from loopgate_lc.errors import LoopgateError, StoreError
from loopgate_lc.gateway.audit import Auditor, Clock, log
from loopgate_lc.gateway.tasks import Tasks
from loopgate_lc.notifiers.base import DeliveryError, Notifier, VoteNotifier
from loopgate_lc.schema import Status
from loopgate_lc.stores._common import json_value
from loopgate_lc.stores.base import (
    AuditEvent,
    Delivered,
    OutboxItem,
    OutboxKind,
    RequestRecord,
    Store,
)

if TYPE_CHECKING:
    import asyncio

__all__ = ["CLAIM_LEASE", "OWN_LEASE", "Outbox", "Retries"]

CLAIM_LEASE = 300.0
"""Seconds a claimed delivery is this process's before anyone may claim it again."""

OWN_LEASE = 60.0
"""Seconds a delivery written by this process for its own notifiers is its own: it is
delivered at once, so the lease only matters when the process died first; then a
restart or another process with the channel takes it over within a minute."""

_Key = tuple[str, str, str]


def _key(item: OutboxItem | Delivered) -> _Key:
    return item.request_id, item.notifier, item.kind


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
        # how long a finished delivery waits for a write of its request to carry it
        self._window = poll_interval
        # deliveries on their way from here, and the lease each is held under now
        self._leases: dict[_Key, datetime] = {}
        self._running: set[asyncio.Task[Any]] = set()
        # delivered, not yet recorded: by request, for the next write of that request
        self._finished: dict[str, list[Delivered]] = {}
        # when the oldest of each request's finished deliveries was made (monotonic)
        self._since: dict[str, float] = {}
        self._adopted: set[str] = set()  # pending ids checked for our channels

    @functools.cached_property
    def lock(self) -> asyncio.Lock:
        """Held by a pass; closing takes it so claimed deliveries are handed back."""
        import asyncio

        return asyncio.Lock()

    @functools.cached_property
    def _flushing(self) -> asyncio.Lock:
        import asyncio

        return asyncio.Lock()

    @functools.cached_property
    def _kick(self) -> asyncio.Event:
        """Set to deliver now rather than at the next poll."""
        import asyncio

        return asyncio.Event()

    @functools.cached_property
    def _finished_kick(self) -> asyncio.Event:
        """Set when a delivery made here waits to be recorded."""
        import asyncio

        return asyncio.Event()

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
                   names: Iterable[str] | None = None, *, own: bool = False
                   ) -> list[OutboxItem]:
        """The deliveries a state change owes: to ``names``, or every accepting notifier;
        the caller commits them with the change.

        With ``own``, those to this gateway's notifiers are written leased to this
        process, for :meth:`deliver` to make right after the commit. Only for entries
        the change is sure to create (a new request, a decision): an entry that already
        exists keeps its own lease.
        """
        if names is None:
            names = [n.name for n in self.accepting(record)]
        lease = now + timedelta(seconds=OWN_LEASE) if own else None
        return [OutboxItem(request_id=record.id, notifier=name, kind=kind, due_at=now,
                           created_at=now,
                           leased_until=lease if name in self._notifiers else None)
                for name in names]

    def deliver(self, record: RequestRecord, items: Sequence[OutboxItem], *,
                shown: bool = False) -> None:
        """Make the deliveries of a committed change that it wrote leased to this process
        (:meth:`deliveries` with ``own``), now, with the record in hand; the others wait
        for the next claim. ``shown``: the store also owed a delivery to every channel
        the record has a message on (a decision's ``resolved_to_message_refs``)."""
        named = {item.notifier for item in items}
        rest = shown and any(name in self._notifiers and name not in named
                             for name in record.message_refs)
        for item in items:
            notifier = self._notifiers.get(item.notifier)
            if notifier is None:
                continue
            if item.leased_until is None:
                rest = True
            elif _key(item) not in self._leases:
                self._start(item, notifier, record)
        if rest:
            self.kick()

    def _start(self, item: OutboxItem, notifier: Notifier,
               record: RequestRecord | None = None) -> None:
        assert item.leased_until is not None
        self._leases[_key(item)] = item.leased_until
        task = self._tasks.spawn(self._deliver(item, notifier, record))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    # recording finished deliveries -------------------------------------------------------

    @contextlib.contextmanager
    def riding(self, *request_ids: str) -> Iterator[list[Delivered]]:
        """The deliveries of these requests made here and not yet recorded, for the write
        of those requests made in this block to record in its own transaction. A block
        that raises hands them back: the next write (or a flush) records them."""
        taken: list[Delivered] = []
        since: dict[str, float] = {}
        for request_id in request_ids:
            taken += self._finished.pop(request_id, ())
            if request_id in self._since:
                since[request_id] = self._since.pop(request_id)
        try:
            yield taken
        except BaseException:
            for done in taken:
                self._finished.setdefault(done.request_id, []).append(done)
            for request_id, at in since.items():
                self._since[request_id] = min(at, self._since.get(request_id, at))
            if taken:
                self._finished_kick.set()
            raise

    def _record(self, item: OutboxItem, ref: Any = None,
                audit: Sequence[AuditEvent] = ()) -> None:
        """A delivery was made (or is owed no more): record it with the next write of its
        request, or the next flush, under the lease it is held under now."""
        lease = self._leases.get(_key(item), item.leased_until)
        if lease is None:  # pragma: no cover - every delivery made here holds a lease
            return
        self._finished.setdefault(item.request_id, []).append(Delivered(
            request_id=item.request_id, notifier=item.notifier, kind=item.kind,
            leased_until=lease, message_ref=ref, audit=tuple(audit)))
        self._since.setdefault(item.request_id, time.monotonic())
        self._finished_kick.set()

    def _relet(self, key: _Key, lease: datetime) -> bool:
        """Whether ``key`` was delivered here and waits to be recorded; if so it will be,
        under ``lease`` (just claimed: its lease passed before it was recorded)."""
        finished = self._finished.get(key[0], [])
        for n, done in enumerate(finished):
            if _key(done) == key:
                finished[n] = replace(done, leased_until=lease)
                return True
        return False

    def _shown(self, record: RequestRecord) -> RequestRecord:
        """``record`` with the message references of deliveries made here and not yet
        recorded, so a later delivery finds where the request was shown."""
        refs = {d.notifier: d.message_ref for d in self._finished.get(record.id, ())
                if d.message_ref is not None}
        if not refs:
            return record
        return record.model_copy(update={"message_refs": {**record.message_refs, **refs}})

    async def flush(self, *, made_before: float | None = None) -> None:
        """Record every delivery made here that no write has carried (only those of
        requests whose deliveries were all made before ``made_before``, a
        ``time.monotonic()`` reading, when given), in one transaction."""
        async with self._flushing:
            due = [request_id for request_id, at in self._since.items()
                   if made_before is None or at <= made_before]
            with self.riding(*due) as batch:
                if batch:
                    await self._store.complete_deliveries(batch)

    async def flush_loop(self) -> None:
        """For the gateway's lifetime, record each delivery no write of its request
        carried within a window of it being made.

        Only deliveries a window old are flushed: one made a moment before the flush
        still has its window, so a request decided or resumed soon after it is shown
        records it in that write, never in a transaction of its own.
        """
        import asyncio

        while not self._tasks.closing:
            await self._finished_kick.wait()
            self._finished_kick.clear()
            while self._since and not self._tasks.closing:
                wait = min(self._since.values()) + self._window - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)  # time for a write of its request
                    continue
                try:
                    await self.flush(made_before=time.monotonic() - self._window)
                except Exception as exc:
                    await self._auditor.report(exc, {"task": "outbox flush"})
                    await asyncio.sleep(self._poll)

    async def close(self, timeout: float) -> None:
        """While the gateway closes: let a pass and the deliveries under way finish
        (within ``timeout``), give back the leases of those that did not, and record
        what was delivered."""
        import asyncio

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            # a pass in progress finishes first: deliveries it claimed are handed back,
            # not left leased for minutes after a short-lived process (the CLI) exits;
            # holding the lock keeps a new pass from starting
            async with asyncio.timeout(timeout):
                await self.lock.acquire()
        except TimeoutError:
            log().warning("loopgate_lc: the outbox pass did not finish while closing")
        running = [t for t in self._running if not t.done()]
        if running:
            await asyncio.wait(running, timeout=max(0.0, deadline - loop.time()))
        try:
            await self._give_back_leases()
            await self.flush()
        except Exception as exc:  # closing must finish; the leases pass by themselves
            await self._auditor.report(exc, {"task": "outbox close"})

    async def _give_back_leases(self) -> None:
        """Deliveries still under way here are cut off: due again for anyone now."""
        for key, lease in list(self._leases.items()):
            held = await self._held(key, lease)
            if held is not None and held.id is not None:
                await self._store.retry_outbox(held.id, due_at=self._clock(),
                                               error="gateway closing")

    async def _held(self, key: _Key, lease: datetime) -> OutboxItem | None:
        """The open entry of ``key`` still under ``lease`` (None: taken over or done)."""
        for item in await self._store.list_outbox(request_id=key[0]):
            if not item.done and _key(item) == key and item.leased_until == lease:
                return item
        return None

    # delivering --------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver what is owed, for the gateway's lifetime."""
        import asyncio

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
        items = await self._store.claim_outbox(self._clock(), lease_seconds=CLAIM_LEASE,
                                               notifiers=sorted(self._notifiers))
        for item in items:
            if item.id is None or item.leased_until is None:  # pragma: no cover
                continue
            if _key(item) in self._leases:
                # still on its way from here (slower than its lease): it is recorded
                # under the lease just claimed
                self._leases[_key(item)] = item.leased_until
                continue
            if self._relet(_key(item), item.leased_until):
                continue  # made here already, waiting to be recorded
            if self._tasks.closing:
                # the delivery would be cut off: give the lease back at once
                await self._store.retry_outbox(item.id, due_at=self._clock(),
                                               error="gateway closing")
                continue
            self._start(item, self._notifiers[item.notifier])

    async def _deliver(self, item: OutboxItem, notifier: Notifier,
                       record: RequestRecord | None) -> None:
        try:
            if record is None:
                record = await self._store.get_request(item.request_id)
            record = self._shown(record)
            if item.kind in ("notify", "voted") and not record.pending:
                # decided meanwhile: its ``resolved`` delivery shows the outcome and count
                self._record(item)
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
            if ref is not None:
                try:
                    ref = json_value(ref, what="message ref")
                except StoreError as exc:  # delivered all the same; only the ref is lost
                    await self._auditor.report(exc, {"notifier": notifier.name,
                                                     "request_id": record.id})
                    ref = None
            # done, where it was shown, and (for a notification) its audit: recorded
            # together, by the next write of this request or the next flush
            self._record(item, ref, [self._auditor.event(
                "notified", record, channel=notifier.name)] if item.kind == "notify" else ())
            if item.kind == "notify":
                await self._auditor.fire("on_notified", record, notifier.name)
        finally:
            self._leases.pop(_key(item), None)

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
        item_id = item.id
        if item_id is None:  # written leased to us: find it, unless it was taken over
            lease = self._leases.get(_key(item), item.leased_until)
            held = None if lease is None else await self._held(_key(item), lease)
            if held is None or held.id is None:
                await self._auditor.report(exc, {"notifier": notifier.name,
                                                 "request_id": record.id}, audit=False)
                return
            item, item_id = held, held.id
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
            await self._store.retry_outbox(item_id, due_at=now + timedelta(seconds=delay),
                                           error=str(exc), audit=failed)
        else:
            await self._store.complete_outbox(item_id, error=str(exc), audit=failed)
        await self._auditor.report(exc, {"notifier": notifier.name, "request_id": record.id},
                                   audit=False)

    # adopting ----------------------------------------------------------------------------

    async def adopt_loop(self) -> None:
        """Adopt other processes' pending requests, every poll, for the gateway's life."""
        import asyncio

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
        pending id is checked once per process (the ids remembered are the pending ones,
        so the memory this takes ends with them); the outbox is idempotent per channel."""
        kicked = False
        checked: set[str] = set()
        for record in await self._store.list_requests(status=Status.PENDING):
            checked.add(record.id)
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
        self._adopted &= checked  # decided ones need no checking again
        if kicked:
            self.kick()
