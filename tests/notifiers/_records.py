"""Request records as the gateway hands them to notifiers, shared by the notifier tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from loopgate_lc.policy import RiskLevel
from loopgate_lc.schema import ApprovalRequest, RequestKind, Status
from loopgate_lc.stores.base import RequestRecord

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
EXPIRES = datetime(2026, 1, 2, 4, 4, 5, tzinfo=UTC)


def make_record(
    request_id: str = "req-1",
    kind: RequestKind = RequestKind.TOOL_APPROVAL,
    **payload: Any,
) -> RequestRecord:
    """A pending record whose payload is a real ``ApprovalRequest``."""
    fields: dict[str, Any] = {"type": kind, "request_id": request_id}
    if kind is RequestKind.TOOL_APPROVAL:
        fields.update(
            name="delete_file",
            args={"path": "/tmp/report.txt"},
            tool_call_id="call-1",
            risk_level=RiskLevel.IRREVERSIBLE,
            confidence=0.42,
            reason="irreversible tools need a person",
            description="Delete a file",
        )
    fields.update(payload)
    request = ApprovalRequest.model_validate(fields)
    return RequestRecord(
        id=request_id,
        kind=kind,
        session_id="sess-1",
        thread_id="thread-1",
        interrupt_id="int-1",
        payload=request.to_interrupt(),
        created_at=CREATED,
        expires_at=EXPIRES,
    )


def resolved(
    record: RequestRecord,
    status: Status,
    decision: dict[str, Any],
    *,
    by: str | None = "telegram:42 (@alice)",
    channel: str | None = "telegram",
) -> RequestRecord:
    """``record`` after the gateway resolved it."""
    return record.model_copy(
        update={
            "status": status,
            "decision": decision,
            "decided_by": by,
            "channel": channel,
            "decided_at": datetime(2026, 1, 2, 3, 10, 0, tzinfo=UTC),
        }
    )
