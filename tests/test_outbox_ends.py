"""A delivery that keeps failing ends: after a bounded number of attempts or a bounded
age it is given up (``dead``), with one audit event when it starts failing and one when
it ends, and the request stays pending: failing to reach a person never approves."""

from __future__ import annotations

from typing import Any

from loopgate_lc.gateway import Loopgate
from loopgate_lc.schema import Status
from loopgate_lc.testing import RecordingNotifier
from tests.conftest import FakeClock
from tests.test_timeouts import wait_for


async def _ended(gate: Loopgate, request_id: str) -> Any:
    [item] = await gate.store.list_outbox(request_id=request_id)
    return item if item.done else None


async def test_a_delivery_is_given_up_after_its_attempts() -> None:
    down = RecordingNotifier("down", fail_times=10**6)
    async with Loopgate(store="memory://", notifiers=[down], retry_backoff=0.0,
                        max_delivery_attempts=4) as gate:
        record = await gate.asubmit("deploy?")
        await wait_for(lambda: _ended(gate, record.id))
        item = await _ended(gate, record.id)
        assert item.dead and item.attempts == 4
        assert down.attempts == 4  # nothing after it was given up
        failed = [e for e in await gate.aaudit(request_id=record.id)
                  if e.event == "delivery_failed"]
        assert [(e.details["attempt"], e.details["retrying_in"] is None) for e in failed] == [
            (1, False), (4, True)]
        assert (await gate.aget(record.id)).status is Status.PENDING


async def test_a_delivery_is_given_up_once_too_old(clock: FakeClock) -> None:
    down = RecordingNotifier("down", fail_times=10**6)
    async with Loopgate(store="memory://", notifiers=[down], clock=clock, retry_backoff=1.0,
                        max_delivery_age=60, timers=False) as gate:
        record = await gate.asubmit("deploy?")
        await wait_for(lambda: down.attempts == 1)
        clock.advance(61)  # the retry is due, and the delivery is a minute old
        await wait_for(lambda: _ended(gate, record.id), timeout=10)
        item = await _ended(gate, record.id)
        assert item.dead and item.last_error and down.attempts == 2
        [*_, last] = [e for e in await gate.aaudit(request_id=record.id)
                      if e.event == "delivery_failed"]
        assert last.details["gave_up_after_seconds"] >= 60
        assert (await gate.aget(record.id)).pending
