"""A notifier that writes to standard ``logging``: the channel that always works.

Useful on its own in development and as a second channel in production, where a log
pipeline (JSON formatter, Loki, CloudWatch, ...) turns the structured ``extra`` fields
into searchable columns. Every record carries the same field names, so one query finds a
request from ``approval.requested`` to ``approval.resolved``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from loopgate_lc.stores.base import RequestRecord

__all__ = ["LogNotifier"]

_TEXT_LIMIT = 200
"""Longest agent-provided value put into the message line; the full value stays in
``extra`` for structured handlers."""


def one_line(value: object, limit: int = _TEXT_LIMIT) -> str:
    """Make agent-provided text safe for a line-oriented log.

    Control characters (newlines above all) are shown escaped, so a tool argument or
    message cannot forge extra log lines; long text is cut with the cut shown.
    """
    text = str(value)
    cleaned = "".join(
        f"\\x{ord(ch):02x}"
        if ord(ch) < 0x20 or ord(ch) == 0x7F
        else f"\\u{ord(ch):04x}"
        if ch in "\u2028\u2029\x85"
        else ch
        for ch in text
    )
    if len(cleaned) > limit:
        return f"{cleaned[:limit]}... (cut, {len(cleaned) - limit} more characters)"
    return cleaned


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def request_fields(record: RequestRecord) -> dict[str, Any]:
    """The structured fields every log line about ``record`` carries.

    Read from :attr:`RequestRecord.shown`: a notifier must report a malformed request,
    never crash on one.
    """
    request = record.shown
    risk = request.risk_level
    return {
        "request_id": record.id,
        "kind": str(record.kind),
        "tool": request.name,
        "session_id": record.session_id,
        "thread_id": record.thread_id,
        "risk": risk.value if risk is not None else None,
        "expires_at": _iso(record.expires_at),
        "status": str(record.status),
    }


class LogNotifier:
    """Report requests and their outcomes through a ``logging.Logger``.

    Args:
        logger: Where to log; defaults to the ``loopgate_lc.notifiers.log`` logger so
            applications can route or silence it by name.
        level: Level for both events.
        name: The notifier's name in outbox rows and audit events.
    """

    def __init__(
        self,
        logger: logging.Logger | None = None,
        level: int = logging.INFO,
        name: str = "log",
    ) -> None:
        self.logger = logger if logger is not None else logging.getLogger(__name__)
        self.level = level
        self.name = name

    def __repr__(self) -> str:
        return f"LogNotifier(name={self.name!r}, logger={self.logger.name!r})"

    async def notify(self, request: RequestRecord) -> None:
        """Log a pending request. Returns None: a log line has no message to edit later."""
        fields = request_fields(request)
        fields["event"] = "approval.requested"
        shown = request.shown
        text = shown.message or shown.description
        parts = [f"id={one_line(request.id)}", f"kind={fields['kind']}"]
        if fields["tool"]:
            parts.append(f"tool={one_line(fields['tool'])}")
        if fields["risk"]:
            parts.append(f"risk={fields['risk']}")
        if request.session_id:
            parts.append(f"session={one_line(request.session_id)}")
        if request.thread_id:
            parts.append(f"thread={one_line(request.thread_id)}")
        if fields["expires_at"]:
            parts.append(f"expires={fields['expires_at']}")
        line = "approval requested " + " ".join(parts)
        if text:
            line += f": {one_line(text)}"
        self.logger.log(self.level, "%s", line, extra=fields)

    async def on_resolved(self, request: RequestRecord) -> None:
        """Log the outcome: status, who decided, through which channel, when."""
        fields = request_fields(request)
        decision = request.decision or {}
        fields.update(
            event="approval.resolved",
            decision=decision.get("type"),
            decided_by=request.decided_by,
            channel=request.channel,
            decided_at=_iso(request.decided_at),
            reason=decision.get("message"),
        )
        parts = [f"id={one_line(request.id)}", f"status={fields['status']}"]
        if fields["tool"]:
            parts.append(f"tool={one_line(fields['tool'])}")
        if request.decided_by:
            parts.append(f"by={one_line(request.decided_by)}")
        if request.channel:
            parts.append(f"via={one_line(request.channel)}")
        if fields["decided_at"]:
            parts.append(f"at={fields['decided_at']}")
        line = "approval resolved " + " ".join(parts)
        if fields["reason"]:
            line += f": {one_line(fields['reason'])}"
        self.logger.log(self.level, "%s", line, extra=fields)
