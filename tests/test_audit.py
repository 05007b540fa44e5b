"""The audit trail: every state change, who, which channel, when; filters; JSON lines."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any

from loopgate_lc.gateway import Loopgate, args_hash
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
