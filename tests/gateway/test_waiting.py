"""A wait for a decision never misses one that commits while it reads the store.

The interleaving is forced with a store whose reads can be held after they have read: a
decision commits, and its wake-up runs, between a wait's read and what follows it. The
poll interval is a minute, so a lost wake-up would show as a wait that outlasts its
bound.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from loopgate_lc.gateway.waiting import Waiters
from loopgate_lc.schema import RequestKind, Status
from loopgate_lc.stores.base import RequestRecord
from loopgate_lc.stores.memory import MemoryStore

POLL = 60.0
BOUND = 20.0  # far below POLL: only a wake-up, never the poll, ends the wait in time


class HeldReads(MemoryStore):
    """A store whose next ``get_request`` reads, then waits to be let go."""

    def __init__(self) -> None:
        super().__init__()
        self.read = asyncio.Event()
        self.go = asyncio.Event()
        self.hold = True
        self.stale: RequestRecord | None = None  # answered instead of the row, once

    async def get_request(self, request_id: str) -> RequestRecord:
        record = await super().get_request(request_id)
        if self.stale is not None:
            record, self.stale = self.stale, None
        if self.hold:
            self.hold = False
            self.read.set()
            await self.go.wait()
        return record


async def _filed(store: MemoryStore) -> RequestRecord:
    record, _ = await store.create_request(RequestRecord(
        id="r-1", kind=RequestKind.TOOL_APPROVAL, payload={"name": "deploy"},
        created_at=datetime.now(UTC)))
    return record


async def _decide(store: MemoryStore, record: RequestRecord) -> RequestRecord:
    return await store.resolve(record.id, status=Status.APPROVED,
                               decision={"type": "approve"}, decided_by="someone",
                               channel="test")


async def test_a_decision_woken_while_the_wait_reads_is_not_lost() -> None:
    # the wait reads "pending"; before it goes on, the decision commits and its wake-up
    # runs (as the store's notification of another process's decision does)
    store = HeldReads()
    record = await _filed(store)
    waiters = Waiters(store, POLL)
    wait = asyncio.ensure_future(waiters.wait(record.id, None))
    await asyncio.wait_for(store.read.wait(), BOUND)
    decided = await _decide(store, record)
    waiters.wake(decided)
    store.go.set()
    got = await asyncio.wait_for(wait, BOUND)
    assert got.status is Status.APPROVED and got.decided_by == "someone"


async def test_a_wake_up_missed_here_costs_a_recheck_not_a_poll() -> None:
    # decided here and woken before the wait began, but the wait's read answers from
    # before the decision (a store that lags its own commits): the wait still sees the
    # decision made in this process at its next look, with no read
    store = HeldReads()
    record = await _filed(store)
    store.hold = False
    store.stale = record
    waiters = Waiters(store, POLL)
    decided = await _decide(store, record)
    waiters.wake(decided, here=True)
    got = await asyncio.wait_for(waiters.wait(record.id, None), BOUND)
    assert got.status is Status.APPROVED


async def test_a_wait_with_a_timeout_still_times_out() -> None:
    store = HeldReads()
    store.hold = False
    record = await _filed(store)
    waiters = Waiters(store, POLL)
    try:
        await asyncio.wait_for(waiters.wait(record.id, 0.05), BOUND)
    except TimeoutError as exc:
        assert str(exc) == record.id  # the wait's own, not the bound's
    else:  # pragma: no cover - the assertion is the point
        raise AssertionError("a pending request's wait returned")
    assert not waiters.waited_for(record.id)
