"""Value rules every store applies the same way, with no dependency on the records.

Kept apart from ``_common`` so the :class:`~loopgate_lc.stores.base.Store` contract can
check its arguments once, before any backend sees them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from loopgate_lc.schema import Status

__all__ = ["check_limit", "coerce_status", "final_status", "utc", "utc_or_none"]


def utc(value: datetime) -> datetime:
    """The same instant in UTC.

    A naive datetime is taken to be UTC already (the convention of ``datetime.utcnow``
    and LangGraph), because SQLite and Postgres would otherwise read it in different
    zones and the backends would disagree about deadlines.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def utc_or_none(value: datetime | None) -> datetime | None:
    """:func:`utc` that lets a missing time stay missing."""
    return None if value is None else utc(value)


def coerce_status(status: Status | str) -> Status:
    """Accept a status or its string value; anything else is a ``ValueError``."""
    try:
        return Status(status)
    except ValueError:
        allowed = ", ".join(s.value for s in Status)
        raise ValueError(f"unknown status {status!r}; expected one of: {allowed}") from None


def final_status(status: Status | str) -> Status:
    """The status a request may be resolved to: any but ``pending``.

    Raises:
        ValueError: ``status`` is ``pending`` or not a status at all.
    """
    coerced = coerce_status(status)
    if coerced is Status.PENDING:
        raise ValueError("a request can only be resolved to a final status, not 'pending'")
    return coerced


def check_limit(limit: int | None) -> int | None:
    """Reject negative limits early instead of letting each database read them its way."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be zero or positive, got {limit}")
    return limit
