"""Waiting for decisions: woken at once by a decision made here, by another process's
decision at the next poll (or sooner, where the store announces decisions).

A waiter is registered before the store is read, never after: a decision that commits
while the read is under way wakes it, and one whose wake-up ran before it registered
committed before the read began, so the read returns it. (Read first, register second
lost exactly that decision until the next poll.) A wait also looks every
:data:`RECHECK` seconds at what this process has decided, which costs no read, so a
wake-up missed all the same costs that long, not a poll interval.

asyncio is imported by the first wait: a process that only decides (the CLI) waits for
nothing, and runs without an event loop (see :mod:`loopgate_lc._inline`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loopgate_lc._lru import LRU
from loopgate_lc.stores.base import RequestRecord, Store

if TYPE_CHECKING:
    import asyncio

__all__ = ["RECHECK", "Waiters"]

RECHECK = 1.0
"""Seconds between a wait's looks at the decisions made in this process (no store read):
the most a missed in-process wake-up can cost."""


class Waiters:
    """Futures of callers waiting for a request to leave ``pending``."""

    def __init__(self, store: Store, poll_interval: float) -> None:
        self._store = store
        self._poll = poll_interval
        self._waiting: dict[str, list[asyncio.Future[Any]]] = {}
        # decided in this process: their wake-ups ran already, so an echo from the store
        # is news to no one here; kept as decided, for a wait to look at (``RECHECK``)
        self._decided_here: LRU[str, RequestRecord] = LRU(4096)
        # requests a run driven from this process waits to resume (how many runs, and the
        # record as the run holds it), and those decided here with their resume claimed
        # for it (see ``resumed_here``)
        self._runs: dict[str, tuple[int, RequestRecord]] = {}
        self._handed: LRU[str, RequestRecord] = LRU(4096)
        self._handing: dict[str, asyncio.Future[None]] = {}  # committing right now

    def decided_here(self, request_id: str) -> bool:
        """Whether this process decided ``request_id`` (and so woke its waiters)."""
        return request_id in self._decided_here

    def waited_for(self, request_id: str) -> bool:
        """Whether anyone here waits for ``request_id``."""
        return bool(self._waiting.get(request_id))

    def run_waits(self, records: list[RequestRecord]) -> None:
        """A run driven from this process waits to resume these requests itself."""
        for record in records:
            runs, _ = self._runs.get(record.id, (0, record))
            self._runs[record.id] = (runs + 1, record)

    def run_left(self, request_ids: list[str]) -> None:
        """The run no longer waits for these requests."""
        for request_id in request_ids:
            runs, record = self._runs.get(request_id, (0, None))
            if runs > 1 and record is not None:
                self._runs[request_id] = (runs - 1, record)
            else:
                self._runs.pop(request_id, None)

    def run_holds(self, request_id: str) -> RequestRecord | None:
        """The request as a run waiting for it here holds it (as this process filed or
        last read it), if one does: an answer to it then needs no read of its own. It
        may be stale (decided, or escalated, by another process since); the store's
        compare-and-set still decides."""
        held = self._runs.get(request_id)
        return None if held is None else held[1]

    def resumed_here(self, request_id: str) -> bool:
        """Whether a decision made here may claim the request's resume for a waiting run
        in the same transaction (one commit fewer than claiming it afterwards)."""
        return request_id in self._runs

    def handing(self, request_id: str) -> None:
        """A decision that claims ``request_id``'s resume for the waiting run is being
        committed. Until :meth:`hand_over` the run must wait for it, not read the claim
        (which another path may show it first, a store notification or a poll) as
        someone else's."""
        import asyncio

        self._handing.setdefault(request_id, asyncio.get_running_loop().create_future())

    def hand_over(self, request_id: str, record: RequestRecord | None) -> None:
        """The decision committed (``record``, its resume claimed for the run waiting
        here) or failed (None)."""
        if record is not None:
            self._handed.get_or_make(record.id, lambda: record)
        done = self._handing.pop(request_id, None)
        if done is not None and not done.done():
            done.set_result(None)

    def handovers(self, request_ids: list[str]) -> list[asyncio.Future[None]]:
        """The hand-overs to these requests' run still being committed."""
        return [self._handing[i] for i in request_ids if i in self._handing]

    def handed(self, request_ids: list[str]) -> bool:
        """Whether a record decided for these requests' run waits to be taken over."""
        return any(i in self._handed for i in request_ids)

    def take_over(self, request_ids: list[str]) -> list[RequestRecord]:
        """The records decided for a waiting run, each given out once."""
        taken = []
        for request_id in request_ids:
            record = self._handed.pop(request_id)
            if record is not None:
                taken.append(record)
        return taken

    def wake(self, record: RequestRecord, *, here: bool = False) -> None:
        """Hand a decided record to everyone waiting for it."""
        if here:
            self._decided_here.get_or_make(record.id, lambda: record)
        for waiter in self._waiting.pop(record.id, []):
            if not waiter.done():
                waiter.set_result(record)

    async def wait(self, request_id: str, timeout: float | None) -> RequestRecord:
        """The request once it has left ``pending``.

        Raises:
            TimeoutError: Still pending after ``timeout`` seconds.
            RequestNotFound: Unknown id.
        """
        found = await self.first([request_id], [], [], timeout=timeout)
        return found[request_id]

    async def first(self, request_ids: list[str], handovers: list[asyncio.Future[None]],
                    run_ids: list[str], meanwhile: Callable[[], object] | None = None,
                    *, timeout: float | None = None) -> dict[str, RequestRecord]:
        """What a run waits for (see ``Resuming.next_resume``): until one of
        ``request_ids`` leaves ``pending``, one of ``handovers`` ends, or a record decided
        for the requests of ``run_ids`` waits to be taken over; the decided records seen.

        :meth:`wait`'s rules for all of them on one future, which a decision made here
        sets directly: the run goes on in the loop's next pass, not after a task per
        request has woken and ended. Registered before every read; the store is read
        once, after the loop's other ready work (a notification on its way), then every
        poll interval; what this process decided is looked at every :data:`RECHECK`
        seconds. ``meanwhile`` is called once, when the loop's ready work is done: work
        the run will need after the decision, done while a person decides.

        Raises:
            TimeoutError: Nothing of that came within ``timeout`` seconds.
            RequestNotFound: An id is unknown.
        """
        import asyncio

        loop = asyncio.get_running_loop()
        found: dict[str, RequestRecord] = {}
        read_at = loop.time()
        deadline = None if timeout is None else read_at + timeout
        while True:
            woken: asyncio.Future[RequestRecord | None] = loop.create_future()

            def nudge(_: object = None, woken: asyncio.Future[RequestRecord | None] = woken
                      ) -> None:
                if not woken.done():
                    woken.set_result(None)

            for request_id in request_ids:
                self._waiting.setdefault(request_id, []).append(woken)
            for handover in handovers:
                handover.add_done_callback(nudge)
            try:
                if meanwhile is not None or (request_ids and loop.time() >= read_at):
                    await asyncio.sleep(0)  # what is ready goes first (see above)
                    if meanwhile is not None:
                        meanwhile()
                        meanwhile = None
                if request_ids and loop.time() >= read_at:
                    for request_id in request_ids:
                        record = await self._store.get_request(request_id)
                        if not record.pending:
                            found[request_id] = record
                    read_at = loop.time() + self._poll
                if not found and not woken.done():
                    step = min(RECHECK, read_at - loop.time()) if request_ids else RECHECK
                    if deadline is not None:
                        step = min(step, deadline - loop.time())
                    timer = loop.call_later(max(step, 0.0), nudge)
                    try:
                        await woken
                    finally:
                        timer.cancel()
            finally:
                for request_id in request_ids:
                    self._forget(request_id, woken)
                for handover in handovers:
                    handover.remove_done_callback(nudge)
            woke = woken.result() if woken.done() and not woken.cancelled() else None
            if woke is not None:
                found[woke.id] = woke
            for request_id in request_ids:
                decided = self._decided_here.get(request_id)
                if decided is not None:
                    found.setdefault(request_id, decided)
            if found or any(h.done() for h in handovers) or self.handed(run_ids):
                return found
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(*request_ids[:1])

    def _forget(self, request_id: str, waiter: asyncio.Future[Any]) -> None:
        waiters = self._waiting.get(request_id)
        if waiters is None:
            return
        if waiter in waiters:
            waiters.remove(waiter)
        if not waiters:
            del self._waiting[request_id]
