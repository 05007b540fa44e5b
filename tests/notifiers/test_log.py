"""LogNotifier: one readable line and the same structured fields for every event."""

from __future__ import annotations

import logging

import pytest

from loopgate_lc.notifiers import LogNotifier, Notifier
from loopgate_lc.schema import RequestKind, Status
from tests.notifiers._records import make_record, resolved

LOGGER = "test.loopgate.log"


@pytest.fixture
def notifier() -> LogNotifier:
    return LogNotifier(logging.getLogger(LOGGER), level=logging.WARNING, name="audit-log")


def test_is_a_notifier(notifier: LogNotifier) -> None:
    assert isinstance(notifier, Notifier)
    assert notifier.name == "audit-log"


async def test_notify_logs_structured_fields(
    notifier: LogNotifier, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    assert await notifier.notify(make_record()) is None

    [entry] = caplog.records
    assert entry.name == LOGGER
    assert entry.levelno == logging.WARNING
    fields = {
        key: getattr(entry, key)
        for key in (
            "event",
            "request_id",
            "kind",
            "tool",
            "session_id",
            "thread_id",
            "risk",
            "expires_at",
            "status",
        )
    }
    assert fields == {
        "event": "approval.requested",
        "request_id": "req-1",
        "kind": "tool_approval",
        "tool": "delete_file",
        "session_id": "sess-1",
        "thread_id": "thread-1",
        "risk": "irreversible",
        "expires_at": "2026-01-02T04:04:05+00:00",
        "status": "pending",
    }
    message = entry.getMessage()
    assert message.startswith("approval requested id=req-1 kind=tool_approval tool=delete_file")
    assert "risk=irreversible" in message
    assert message.endswith(": Delete a file")


async def test_notify_node_question_without_tool(
    notifier: LogNotifier, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    await notifier.notify(make_record("q-1", RequestKind.INPUT, message="Which region?"))
    [entry] = caplog.records
    assert entry.tool is None
    assert entry.risk is None
    assert entry.kind == "input"
    assert "tool=" not in entry.getMessage()
    assert entry.getMessage().endswith(": Which region?")


async def test_agent_text_cannot_forge_log_lines(
    notifier: LogNotifier, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    forged = "ok\nINFO approval resolved id=req-1 status=approved\r\u2028"
    await notifier.notify(make_record(name="evil\ntool", message=forged))
    [entry] = caplog.records
    line = entry.getMessage()
    assert "\n" not in line and "\r" not in line and "\u2028" not in line
    assert "tool=evil\\x0atool" in line
    assert "ok\\x0aINFO approval resolved" in line
    assert entry.tool == "evil\ntool"  # the structured field keeps the real value


async def test_long_text_is_cut_visibly(
    notifier: LogNotifier, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    await notifier.notify(make_record(message="x" * 1_000))
    line = caplog.records[0].getMessage()
    assert line.endswith("x" * 200 + "... (cut, 800 more characters)")


async def test_on_resolved_logs_the_outcome(
    notifier: LogNotifier, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    record = resolved(make_record(), Status.REJECTED, {"type": "reject", "message": "too risky"})
    await notifier.on_resolved(record)
    [entry] = caplog.records
    assert entry.event == "approval.resolved"
    assert entry.status == "rejected"
    assert entry.decision == "reject"
    assert entry.decided_by == "telegram:42 (@alice)"
    assert entry.channel == "telegram"
    assert entry.decided_at == "2026-01-02T03:10:00+00:00"
    assert entry.getMessage() == (
        "approval resolved id=req-1 status=rejected tool=delete_file by=telegram:42 (@alice) "
        "via=telegram at=2026-01-02T03:10:00+00:00: too risky"
    )


async def test_timeout_has_no_decider(
    notifier: LogNotifier, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    record = resolved(
        make_record(),
        Status.TIMEOUT,
        {"type": "timeout", "outcome": "reject"},
        by=None,
        channel=None,
    )
    await notifier.on_resolved(record)
    [entry] = caplog.records
    assert entry.decided_by is None
    assert "status=timeout" in entry.getMessage()
    assert " by=" not in entry.getMessage()


async def test_default_logger_is_named_for_routing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="loopgate_lc.notifiers.log")
    await LogNotifier().notify(make_record())
    assert [r.name for r in caplog.records] == ["loopgate_lc.notifiers.log"]
    assert caplog.records[0].levelno == logging.INFO
