"""The reference store: everything in dicts, gone when the process ends.

It defines what the other backends must behave like, so it is deliberately plain. One
``threading.Lock`` guards all state: no method awaits while holding it, so it is safe from
any number of tasks, event loops and worker threads (the gateway calls stores from
threads), and every compare-and-set is trivially atomic.
"""

from __future__ import annotations

import pickle
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel

from loopgate_lc.errors import (
    GrantNotFound,
    RequestNotFound,
    SessionExists,
    SessionNotFound,
    StoreError,
)
from loopgate_lc.schema import Status, utcnow
from loopgate_lc.stores._common import (
    already_decided,
    check_limit,
    counted_ballot,
    json_value,
    normalized_audit,
    normalized_delivered,
    normalized_grant,
    normalized_outbox,
    normalized_request,
    normalized_session,
    outbox_not_found,
    resolved_outbox,
    utc,
    utc_or_none,
)
from loopgate_lc.stores.base import (
    AuditEvent,
    AuditQuery,
    Ballot,
    Delivered,
    GrantQuery,
    GrantRecord,
    OutboxItem,
    RequestQuery,
    RequestRecord,
    Resolution,
    SessionRecord,
    Store,
)

__all__ = ["MemoryStore"]

_ONCE_PRUNE_AT = 10_000
"""Once-keys kept before expired ones are swept out (a sweep is one pass)."""

_Record = TypeVar("_Record", bound=BaseModel)
_IMMUTABLE = (str, int, float, bool, type(None), datetime, Enum)


def _copy(record: _Record) -> _Record:
    """A deep copy of a record, made for the JSON data records hold.

    ``json_value`` turned every stored payload into plain dicts, lists and scalars, and a
    pickle round trip copies such data exactly, in C. ``model_copy(deep=True)`` walked
    the same data through ``copy.deepcopy`` in Python at several times the cost: with a
    tool's decision schema in every payload, that was most of the memory store's share
    of a round trip.
    """
    mutable = {k: pickle.loads(pickle.dumps(v, pickle.HIGHEST_PROTOCOL))
               for k, v in record.__dict__.items() if not isinstance(v, _IMMUTABLE)}
    return record.model_copy(update=mutable)


def _resumable(record: RequestRecord, stale_before: datetime | None) -> bool:
    """Decided, and either never claimed or claimed long ago and never completed."""
    if record.pending or record.resume_done_at is not None:
        return False
    if record.resumed_at is None:
        return True
    return stale_before is not None and record.resumed_at <= stale_before


def _matches(q: RequestQuery, r: RequestRecord) -> bool:
    """Whether a request passes every filter of a query (the cursor aside)."""
    return ((q.status is None or r.status is q.status)
            and (not q.decided or not r.pending)
            and (q.session_id is None or r.session_id == q.session_id)
            and (q.thread_id is None or r.thread_id == q.thread_id)
            and (q.graph is None or r.graph == q.graph)
            and (q.tool is None or r.payload.get("name") == q.tool)
            and (q.risk is None or r.payload.get("risk_level") == q.risk)
            and (q.scope is None or q.scope.holds(r.session_id, r.client_id))
            and (not q.unresumed or _resumable(r, q.stale_before)))


def _clean(audit: Sequence[AuditEvent], outbox: Sequence[OutboxItem]
           ) -> tuple[list[AuditEvent], list[OutboxItem]]:
    """A change's audit events and deliveries, checked and copied before it commits."""
    return [normalized_audit(e) for e in audit], [normalized_outbox(i) for i in outbox]


@dataclass
class _OutboxRow:
    item: OutboxItem  # its ``leased_until`` is the lease it is under


class MemoryStore(Store):
    """A :class:`Store` kept in process memory, for tests, notebooks and demos.

    Records handed in and out are copies, so callers cannot change stored state by
    mutating what they hold, just as with a database.

    Memory stays bounded: pending requests are indexed apart, so timers and listings of
    pending work never walk the history, and at most ``max_decided`` finished requests
    are kept (decided, resumed if they belong to a run, every delivery done): past
    that the oldest are forgotten, with their deliveries and chat-button keys, and a
    late answer to one is told its id is unknown. The audit trail is kept whole.

    Args:
        max_decided: How many finished requests to keep; None keeps them all.

    Raises:
        ValueError: ``max_decided`` is negative.
    """

    def __init__(self, *, max_decided: int | None = 10_000) -> None:
        if max_decided is not None and max_decided < 0:
            raise ValueError(f"max_decided must be zero or positive, got {max_decided}")
        self.max_decided = max_decided
        self._lock = threading.Lock()
        self._seq = 0
        self._outbox_seq = 0
        self._sessions: dict[str, tuple[int, SessionRecord]] = {}
        self._requests: dict[str, tuple[int, RequestRecord]] = {}
        self._by_interrupt: dict[tuple[str, str], str] = {}
        self._callbacks: dict[str, tuple[str, dict[str, Any]]] = {}
        self._once: dict[str, datetime] = {}
        self._audit: list[AuditEvent] = []
        self._outbox: dict[int, _OutboxRow] = {}
        # undone deliveries only, so enqueueing and claiming do not scan the history
        self._open: dict[int, _OutboxRow] = {}
        self._open_keys: dict[tuple[str, str, str], int] = {}
        self._pending: set[str] = set()
        # each thread's requests: a run's claims and filings read its thread, not the
        # whole history
        self._by_thread: dict[str, set[str]] = {}
        # decided requests, in the order they were decided: candidates to forget
        self._decided: OrderedDict[str, None] = OrderedDict()
        self._outbox_of: dict[str, list[int]] = {}
        self._callbacks_of: dict[str, set[str]] = {}
        self._grants: dict[str, GrantRecord] = {}  # kept whole, like the audit

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _request(self, request_id: str) -> RequestRecord:
        try:
            return self._requests[request_id][1]
        except KeyError:
            raise RequestNotFound(request_id) from None

    def _replace(self, record: RequestRecord) -> None:
        seq = self._requests[record.id][0]
        self._put(seq, record)

    def _put(self, seq: int, record: RequestRecord) -> None:
        """Store a record and keep the pending, thread and decided indexes with it."""
        self._requests[record.id] = (seq, record)
        if record.thread_id is not None:
            self._by_thread.setdefault(record.thread_id, set()).add(record.id)
        if record.pending:
            self._pending.add(record.id)
            return
        self._pending.discard(record.id)
        if record.id not in self._decided:
            self._decided[record.id] = None

    def _finished(self, record: RequestRecord) -> bool:
        waits_for_resume = record.interrupt_id is not None and record.resume_done_at is None
        return not waits_for_resume and not any(
            not self._outbox[i].item.done for i in self._outbox_of.get(record.id, ()))

    def _forget_finished(self) -> None:
        """Drop the oldest finished requests past ``max_decided``; unfinished ones go to
        the back of the line and are looked at again later (a bounded number per call,
        so a backlog of unresumed decisions cannot make every change slow)."""
        if self.max_decided is None:
            return
        for _ in range(min(len(self._decided), 64)):
            if len(self._decided) <= self.max_decided:
                return
            request_id = next(iter(self._decided))
            record = self._requests[request_id][1]
            if not self._finished(record):
                self._decided.move_to_end(request_id)
                continue
            del self._decided[request_id]
            del self._requests[request_id]
            if record.thread_id is not None:
                if record.interrupt_id is not None:
                    self._by_interrupt.pop((record.thread_id, record.interrupt_id), None)
                same = self._by_thread.get(record.thread_id, set())
                same.discard(request_id)
                if not same:
                    self._by_thread.pop(record.thread_id, None)
            for item_id in self._outbox_of.pop(request_id, ()):
                del self._outbox[item_id]
            for key in self._callbacks_of.pop(request_id, ()):
                self._callbacks.pop(key, None)

    # sessions ----------------------------------------------------------------------------

    async def create_session(self, session: SessionRecord) -> SessionRecord:
        stored = normalized_session(session)
        with self._lock:
            existing = self._sessions.get(stored.session_id)
            if existing is not None and existing[1].active:
                raise SessionExists(stored.session_id)
            seq = existing[0] if existing is not None else self._next_seq()
            self._sessions[stored.session_id] = (seq, stored)
            return _copy(stored)

    async def get_session(self, session_id: str) -> SessionRecord:
        with self._lock:
            try:
                return _copy(self._sessions[session_id][1])
            except KeyError:
                raise SessionNotFound(session_id) from None

    async def deactivate_session(self, session_id: str) -> SessionRecord:
        with self._lock:
            try:
                seq, session = self._sessions[session_id]
            except KeyError:
                raise SessionNotFound(session_id) from None
            updated = session.model_copy(update={"active": False})
            self._sessions[session_id] = (seq, updated)
            return _copy(updated)

    async def list_sessions(self, *, active: bool | None = None) -> list[SessionRecord]:
        with self._lock:
            rows = sorted(self._sessions.values(), key=lambda r: (r[1].created_at, r[0]))
            return [
                _copy(s) for _, s in rows if active is None or s.active == active
            ]

    # requests ----------------------------------------------------------------------------

    async def create_request(
        self, record: RequestRecord, *, audit: Sequence[AuditEvent] = (),
        outbox: Sequence[OutboxItem] = (),
    ) -> tuple[RequestRecord, bool]:
        stored = normalized_request(record)
        events, items = _clean(audit, outbox)
        with self._lock:
            if stored.id in self._requests:
                return _copy(self._requests[stored.id][1]), False
            key = None
            if stored.thread_id is not None and stored.interrupt_id is not None:
                key = (stored.thread_id, stored.interrupt_id)
                first = self._by_interrupt.get(key)
                if first is not None:
                    return _copy(self._requests[first][1]), False
                self._by_interrupt[key] = stored.id
            self._put(self._next_seq(), stored)
            self._effects(events, items)
            return _copy(stored), True

    async def get_request(self, request_id: str) -> RequestRecord:
        with self._lock:
            return _copy(self._request(request_id))

    async def find_request(self, thread_id: str, interrupt_id: str) -> RequestRecord | None:
        with self._lock:
            request_id = self._by_interrupt.get((thread_id, interrupt_id))
            if request_id is None:
                return None
            return _copy(self._requests[request_id][1])

    async def query_requests(self, query: RequestQuery) -> list[RequestRecord]:
        q = query
        with self._lock:
            start = None
            if q.after is not None:
                seq, last = self._requests.get(q.after) or (None, None)
                if last is None or seq is None:
                    raise RequestNotFound(q.after)
                start = (last.created_at, seq)
            # filter first, then sort and copy only what matched
            rows = (map(self._requests.__getitem__, self._by_thread.get(q.thread_id, ()))
                    if q.thread_id is not None
                    else map(self._requests.__getitem__, self._pending)
                    if q.status is Status.PENDING else self._requests.values())
            matched = sorted(
                (
                    (r.created_at, seq, r)
                    for seq, r in rows
                    if _matches(q, r)
                    and (start is None or ((r.created_at, seq) < start if q.newest_first
                                           else (r.created_at, seq) > start))
                ),
                key=lambda t: (t[0], t[1]),
                reverse=q.newest_first,
            )
            return [_copy(r) for _, _, r in matched[:q.limit]]

    async def commit_resolution(self, resolution: Resolution) -> RequestRecord:
        # fails before anything changes
        clean = json_value(resolution.decision, what="decision")
        grants = [normalized_grant(g) for g in resolution.grants]
        delivered = normalized_delivered(resolution.delivered)
        with self._lock:
            return _copy(self._resolve(resolution, clean, grants, delivered))

    def _resolve(self, r: Resolution, clean: Any, grants: Sequence[GrantRecord] = (),
                 delivered: Sequence[Delivered] = ()) -> RequestRecord:
        """The compare-and-set every decision is, under the lock (``clean``: the
        decision as stored; ``grants``: ``r.grants`` as stored; ``delivered``:
        ``r.delivered`` normalized, recorded first once nothing can refuse it)."""
        events, _ = _clean(r.audit, ())
        current = self._request(r.request_id)
        if not current.pending:
            raise already_decided(current)
        if any(g.id in self._grants for g in grants):
            raise StoreError("a grant with this id exists already")
        if delivered:
            self._delivered(delivered)
            current = self._request(r.request_id)  # with the references they stored
        for grant in grants:  # remembered with the decision that makes them
            self._grants[grant.id] = grant
        updated = current.model_copy(update={
            "status": r.status, "decision": clean, "decided_by": r.decided_by,
            "channel": r.channel, "decided_at": r.decided_at, "resumed_at": r.resumed_at,
        })
        self._replace(updated)
        self._effects(events, _clean((), resolved_outbox(updated, r))[1])
        return updated

    async def commit_vote(self, ballot: Ballot) -> RequestRecord:
        # bad data fails before anything changes
        _clean((ballot.audit,), ballot.outbox)
        json_value(ballot.resolution.decision, what="decision")
        delivered = normalized_delivered(ballot.delivered)
        also = normalized_delivered(ballot.resolution.delivered)
        with self._lock:
            current = self._request(ballot.request_id)
            votes, audit, resolution = counted_ballot(current, ballot)
            self._delivered(delivered)
            current = self._request(ballot.request_id)
            self._replace(current.model_copy(update={"votes": votes}))
            if resolution is None:
                self._effects(*_clean((audit,), ballot.outbox))
                return _copy(self._request(ballot.request_id))
            self._effects(*_clean((audit,), ()))
            return _copy(self._resolve(
                resolution, json_value(resolution.decision, what="decision"),
                delivered=also))

    async def mark_resumed(
        self, request_id: str, *, stale_before: datetime | None = None,
        at: datetime | None = None, done: bool = False, audit: Sequence[AuditEvent] = (),
        delivered: Sequence[Delivered] = (),
    ) -> bool:
        """See :meth:`Store.mark_resumed`; a still-pending request cannot be claimed."""
        stale = utc_or_none(stale_before)
        now = utc(at or utcnow())
        events, _ = _clean(audit, ())
        finished = normalized_delivered(delivered)
        with self._lock:
            self._request(request_id)  # raises RequestNotFound before anything is written
            self._delivered(finished)
            current = self._request(request_id)
            if not _resumable(current, stale):
                self._forget_finished()
                return False
            self._replace(current.model_copy(
                update={"resumed_at": now, "resume_done_at": now if done else None}))
            self._effects(events, [])
            return True

    async def complete_resume(
        self, *request_ids: str, at: datetime | None = None, audit: Sequence[AuditEvent] = (),
        delivered: Sequence[Delivered] = (),
    ) -> None:
        now = utc(at or utcnow())
        events, _ = _clean(audit, ())
        finished = normalized_delivered(delivered)
        with self._lock:
            for request_id in request_ids:  # raises RequestNotFound before any write
                self._request(request_id)
            self._delivered(finished)
            records = [self._request(request_id) for request_id in request_ids]
            for current in records:
                if current.resume_done_at is None:
                    self._replace(current.model_copy(update={"resume_done_at": now}))
            self._effects(events, [])

    async def release_resume(
        self, request_id: str, *, claimed_at: datetime, audit: Sequence[AuditEvent] = (),
    ) -> bool:
        """See :meth:`Store.release_resume`."""
        at = utc(claimed_at)
        events, _ = _clean(audit, ())
        with self._lock:
            current = self._request(request_id)
            if current.resumed_at != at or current.resume_done_at is not None:
                return False
            self._replace(current.model_copy(update={"resumed_at": None}))
            self._effects(events, [])
            return True

    async def extend_expiry(
        self, request_id: str, *, expires_at: datetime, escalation_level: int,
        audit: Sequence[AuditEvent] = (), outbox: Sequence[OutboxItem] = (),
        delivered: Sequence[Delivered] = (),
    ) -> bool:
        """See :meth:`Store.extend_expiry`. Raises: RequestNotFound."""
        new_expiry = utc(expires_at)
        events, items = _clean(audit, outbox)
        finished = normalized_delivered(delivered)
        with self._lock:
            self._request(request_id)  # raises RequestNotFound before anything is written
            self._delivered(finished)
            current = self._request(request_id)
            if not current.pending or current.escalation_level != escalation_level - 1:
                self._forget_finished()
                return False
            self._replace(
                current.model_copy(
                    update={"expires_at": new_expiry, "escalation_level": escalation_level}
                )
            )
            self._effects(events, items)
            return True

    async def expired(self, now: datetime, *, limit: int = 100) -> list[RequestRecord]:
        cutoff = utc(now)
        check_limit(limit)
        with self._lock:
            due = [
                (r.expires_at, r.created_at, seq, r)
                for seq, r in map(self._requests.__getitem__, self._pending)
                if r.expires_at is not None and r.expires_at <= cutoff
            ]
            due.sort(key=lambda t: (t[0], t[1], t[2]))
            return [_copy(t[3]) for t in due[:limit]]

    async def next_expiry(self) -> datetime | None:
        with self._lock:
            times = [
                r.expires_at
                for _, r in map(self._requests.__getitem__, self._pending)
                if r.expires_at is not None
            ]
        return min(times, default=None)

    async def set_message_ref(self, request_id: str, channel: str, ref: Any) -> None:
        clean = json_value(ref, what=f"message ref for channel {channel!r}")
        with self._lock:
            self._set_ref(request_id, channel, clean)

    def _set_ref(self, request_id: str, channel: str, ref: Any) -> None:
        current = self._request(request_id)
        refs = {**current.message_refs, channel: ref}
        self._replace(current.model_copy(update={"message_refs": refs}))

    # callback keys -----------------------------------------------------------------------

    async def put_callback(self, key: str, request_id: str, action: dict[str, Any]) -> None:
        clean = json_value(action, what="callback action")
        with self._lock:
            self._callbacks[key] = (request_id, clean)
            self._callbacks_of.setdefault(request_id, set()).add(key)

    async def remember_once(self, key: str, *, expires_at: datetime) -> bool:
        with self._lock:
            if key in self._once:
                return False
            if len(self._once) >= _ONCE_PRUNE_AT:  # forget keys whose validity ended
                now = utcnow()
                self._once = {k: until for k, until in self._once.items() if until > now}
            self._once[key] = expires_at
            return True

    async def get_callback(self, key: str) -> tuple[str, dict[str, Any]] | None:
        with self._lock:
            found = self._callbacks.get(key)
            if found is None:
                return None
            request_id, action = found
            return request_id, json_value(action, what="callback action")

    # grants ------------------------------------------------------------------------------

    async def get_grant(self, grant_id: str) -> GrantRecord:
        with self._lock:
            try:
                return _copy(self._grants[grant_id])
            except KeyError:
                raise GrantNotFound(grant_id) from None

    async def query_grants(self, query: GrantQuery) -> list[GrantRecord]:
        q = query
        with self._lock:
            found = [
                _copy(g)
                for g in self._grants.values()  # insertion order: oldest first
                if (q.tool is None or g.tool == q.tool)
                and (q.session_id is None or g.session_id == q.session_id)
                and (q.client_id is None or g.client_id == q.client_id)
                and (q.request_id is None or g.request_id == q.request_id)
                and (q.live_at is None or g.live(q.live_at))
                and (q.covering is None or g.covers(q.covering))
            ]
        return found if q.limit is None else found[:q.limit]

    async def revoke_grant(
        self, grant_id: str, *, revoked_by: str | None, at: datetime | None = None,
        audit: Sequence[AuditEvent] = (),
    ) -> tuple[GrantRecord, bool]:
        when = utc(at or utcnow())
        events, _ = _clean(audit, ())
        with self._lock:
            current = self._grants.get(grant_id)
            if current is None:
                raise GrantNotFound(grant_id)
            if current.revoked_at is not None:
                return _copy(current), False
            revoked = current.model_copy(update={"revoked_at": when, "revoked_by": revoked_by})
            self._grants[grant_id] = revoked
            self._effects(events, [])
            return _copy(revoked), True

    # audit -------------------------------------------------------------------------------

    async def append_audit(self, event: AuditEvent) -> AuditEvent:
        clean = normalized_audit(event)
        with self._lock:
            return _copy(self._append(clean))

    def _append(self, event: AuditEvent) -> AuditEvent:
        stored = event.model_copy(update={"id": len(self._audit) + 1})
        self._audit.append(stored)
        return stored

    def _effects(self, audit: Sequence[AuditEvent], outbox: Sequence[OutboxItem]) -> None:
        """Write a change's (normalized) audit events and deliveries; under the lock.
        Every state change ends here, so this is where finished requests are let go."""
        for event in audit:
            self._append(event)
        for item in outbox:
            self._enqueue(item)
        self._forget_finished()

    async def query_audit(self, query: AuditQuery) -> list[AuditEvent]:
        q = query
        with self._lock:
            # ids are positions in the list (1-based), so a cursor is a slice bound
            low = 0 if q.after is None else max(0, q.after)
            high = len(self._audit) if q.before is None else max(0, q.before - 1)
            found = [
                e
                for e in self._audit[low:high]
                if (q.request_id is None or e.request_id == q.request_id)
                and (q.session_id is None or e.session_id == q.session_id)
                and (q.thread_id is None or e.thread_id == q.thread_id)
                and (q.event is None or e.event == q.event)
                and (q.since is None or e.at >= q.since)
                and (q.until is None or e.at < q.until)
            ]
        if q.limit is not None:
            found = found[max(0, len(found) - q.limit):] if q.newest else found[:q.limit]
        return [_copy(e) for e in found]

    # outbox ------------------------------------------------------------------------------

    async def enqueue_outbox(self, item: OutboxItem) -> OutboxItem:
        clean = normalized_outbox(item)
        with self._lock:
            return _copy(self._enqueue(clean))

    def _enqueue(self, clean: OutboxItem) -> OutboxItem:
        key = (clean.request_id, clean.notifier, clean.kind)
        open_id = self._open_keys.get(key)
        if open_id is not None:
            return self._outbox[open_id].item
        self._outbox_seq += 1
        item_id = self._outbox_seq
        stored = clean.model_copy(update={"id": item_id})
        self._outbox[item_id] = _OutboxRow(stored)
        self._open[item_id] = self._outbox[item_id]
        self._open_keys[key] = item_id
        self._outbox_of.setdefault(clean.request_id, []).append(item_id)
        return stored

    async def claim_outbox(
        self, now: datetime, *, lease_seconds: float = 30.0, limit: int = 50,
        notifiers: Sequence[str] | None = None,
    ) -> list[OutboxItem]:
        at = utc(now)
        check_limit(limit)
        lease_end = at + timedelta(seconds=lease_seconds)
        with self._lock:
            due = sorted(
                (
                    row
                    for row in self._open.values()
                    if not row.item.done
                    and (notifiers is None or row.item.notifier in notifiers)
                    and row.item.due_at <= at
                    and (row.item.leased_until is None or row.item.leased_until <= at)
                ),
                key=lambda row: (row.item.due_at, row.item.id or 0),
            )[:limit]
            for row in due:
                row.item = row.item.model_copy(update={"leased_until": lease_end})
            return [_copy(row.item) for row in due]

    async def complete_outbox(
        self, item_id: int, *, message_ref: Any = None, error: str | None = None,
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        ref = None if message_ref is None else json_value(message_ref, what="message ref")
        events, _ = _clean(audit, ())
        with self._lock:
            row = self._outbox.get(item_id)
            if row is None:
                raise outbox_not_found(item_id)
            if ref is not None:
                self._set_ref(row.item.request_id, row.item.notifier, ref)
            ended: dict[str, Any] = {"done": True}
            if error is not None:
                ended.update(dead=True, attempts=row.item.attempts + 1, last_error=error)
            self._end(item_id, row, ended)
            self._effects(events, [])

    def _end(self, item_id: int, row: _OutboxRow, update: dict[str, Any]) -> None:
        """Mark one delivery done (``update``), leaving the open index; under the lock."""
        row.item = row.item.model_copy(update={**update, "leased_until": None})
        self._open.pop(item_id, None)
        key = (row.item.request_id, row.item.notifier, row.item.kind)
        if self._open_keys.get(key) == item_id:
            del self._open_keys[key]

    async def complete_deliveries(self, delivered: Sequence[Delivered]) -> int:
        finished = normalized_delivered(delivered)
        if not finished:
            return 0
        with self._lock:
            recorded = self._delivered(finished)
            self._forget_finished()
            return recorded

    def _delivered(self, delivered: Sequence[Delivered]) -> int:
        """Record deliveries finished under their lease (normalized), under the lock;
        those no longer held under it write nothing."""
        recorded = 0
        for done in delivered:
            item_id = self._open_keys.get((done.request_id, done.notifier, done.kind))
            row = None if item_id is None else self._outbox.get(item_id)
            if item_id is None or row is None or row.item.leased_until != done.leased_until:
                continue  # taken over (or done): its holder records it
            recorded += 1
            self._end(item_id, row, {"done": True})
            for event in done.audit:
                self._append(event)
            if done.message_ref is None:
                continue
            self._set_ref(done.request_id, done.notifier, done.message_ref)
            record = self._request(done.request_id)
            # decided before this message was recorded: the channel is owed the outcome
            if not record.pending and not any(
                    self._outbox[i].item.notifier == done.notifier
                    and self._outbox[i].item.kind == "resolved"
                    for i in self._outbox_of.get(record.id, ())):
                self._enqueue(OutboxItem(request_id=record.id, notifier=done.notifier,
                                         kind="resolved",
                                         due_at=record.decided_at or utcnow(),
                                         created_at=utcnow()))
        return recorded

    async def retry_outbox(
        self, item_id: int, *, due_at: datetime, error: str, audit: Sequence[AuditEvent] = (),
    ) -> OutboxItem:
        when = utc(due_at)
        events, _ = _clean(audit, ())
        with self._lock:
            row = self._outbox.get(item_id)
            if row is None:
                raise outbox_not_found(item_id)
            row.item = row.item.model_copy(update={
                "attempts": row.item.attempts + 1, "due_at": when, "last_error": error,
                "leased_until": None})
            self._effects(events, [])
            return _copy(row.item)

    async def list_outbox(self, *, request_id: str | None = None, dead: bool | None = None,
                          limit: int | None = None, after: int | None = None
                          ) -> list[OutboxItem]:
        check_limit(limit)
        with self._lock:
            found = [
                _copy(row.item)
                for row in sorted(self._outbox.values(), key=lambda r: r.item.id or 0)
                if (request_id is None or row.item.request_id == request_id)
                and (dead is None or row.item.dead == dead)
                and (after is None or (row.item.id or 0) > after)
            ]
        return found if limit is None else found[:limit]
