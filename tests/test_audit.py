"""The audit trail: every state change, who, which channel, when; filters; JSON lines."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import IntEnum
from typing import Any

import pytest

from loopgate_lc.gateway import Loopgate, args_hash
from loopgate_lc.gateway.audit import plain_details
from loopgate_lc.policy import RiskLevel
from loopgate_lc.testing import RecordingNotifier
from tests.conftest import FakeClock
from tests.test_timeouts import wait_for


async def test_every_event_is_recorded_with_actor_channel_and_args_hash(clock: FakeClock
                                                                       ) -> None:
    notifier = RecordingNotifier(fail_times=1)
    async with Loopgate(store="memory://", notifiers=[notifier], clock=clock,
                        retry_backoff=0.0, timers=False) as gate:
        await gate.aregister_session("ops", "bot", telegram_id=7)
        record = await gate.asubmit("deploy?", session_id="ops", tool_name="deploy",
                                    args={"env": "prod", "token": "s3cret"})
        await wait_for(lambda: len(notifier.notified) == 1)
        clock.advance(1)
        await gate.arespond(record.id, {"type": "approve"}, actor="telegram:7 (@ana)",
                            channel="telegram", approver_id="7")
        trail = await gate.aaudit(request_id=record.id)
        assert [e.event for e in trail] == ["requested", "delivery_failed", "notified",
                                            "decided:approved"]
        decided = trail[-1]
        assert (decided.actor, decided.channel, decided.session_id) == (
            "telegram:7 (@ana)", "telegram", "ops")
        assert decided.args_hash == args_hash({"env": "prod", "token": "s3cret"})
        assert "s3cret" not in json.dumps([e.model_dump(mode="json") for e in trail])
        assert trail[1].details["error"].startswith("DeliveryError")
        assert decided.at == clock.now

        other = await gate.asubmit("other?")
        assert [e.event for e in await gate.aaudit(session_id="ops")][:1] == [
            "session_registered"]
        assert {e.request_id for e in await gate.aaudit(since=clock.now)} >= {record.id,
                                                                               other.id}
        assert await gate.aaudit(until=clock.now - timedelta(days=1)) == []
        assert len(await gate.aaudit(limit=2)) == 2


def test_export_as_json_lines() -> None:
    with Loopgate(store="memory://") as gate:
        record = gate.submit("x?")
        gate.respond(record.id, {"type": "reject", "message": "no"}, actor="cli:ana",
                     channel="cli")
        out = io.StringIO()
        assert gate.export_audit(out, request_id=record.id) == 2
        lines: list[dict[str, Any]] = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [line["event"] for line in lines] == ["requested", "decided:rejected"]
        assert lines[1]["details"]["decision"] == {"type": "reject", "message": "no"}


class _Count(IntEnum):
    ONE = 1


class _Text(str):
    def __str__(self) -> str:
        return "not what JSON writes"


class _Shown:
    def __str__(self) -> str:
        return "shown"


class _Mapping(dict[str, Any]):
    pass


@pytest.mark.parametrize("details", [
    None, {}, {"graph": None},
    {"a": True, "b": None, "c": 1.5, "d": "x", "e": [1, (2, 3)], "f": {"g": []}},
    {"expires_at": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)},
    {"day": date(2026, 1, 2), "took": timedelta(seconds=3), "id": uuid.UUID(int=7)},
    {"risk": RiskLevel.IRREVERSIBLE, "count": _Count.ONE, "text": _Text("content")},
    {"amount": Decimal("1.10"), "other": _Shown(), "set": {1}, "raw": b"x"},
    {"inf": float("inf"), "mapping": _Mapping(a=1), 1: "int key", "nested": {2.5: "y"}},
    {"deep": [[[[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]]]},
])
def test_event_details_are_what_a_json_round_trip_makes_them(details: Any) -> None:
    # copied directly where they can be; the same values, types and order either way
    want = json.loads(json.dumps(details or {}, default=str))
    got = plain_details(details)
    assert json.dumps(got) == json.dumps(want)
    assert got == want
    if details:
        assert got is not details
