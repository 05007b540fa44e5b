"""Small rules every store backend applies the same way.

Keeping them in one place is what lets the one conformance suite pass unchanged against
memory, SQLite and Postgres: what a caller gets back must not depend on where it was kept.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from pydantic_core import PydanticSerializationError, to_jsonable_python

from loopgate_lc.errors import AlreadyDecided, DuplicateVote, StoreError
from loopgate_lc.schema import utcnow
from loopgate_lc.stores._values import check_limit, coerce_status, final_status, utc, utc_or_none
from loopgate_lc.stores.base import (
    AuditEvent,
    Ballot,
    Delivered,
    GrantRecord,
    OutboxItem,
    RequestRecord,
    Resolution,
    SessionRecord,
    Vote,
)

__all__ = [
    "already_decided",
    "check_limit",
    "coerce_status",
    "counted_ballot",
    "final_status",
    "json_text",
    "json_value",
    "normalized_audit",
    "normalized_delivered",
    "normalized_grant",
    "normalized_outbox",
    "normalized_request",
    "normalized_session",
    "outbox_not_found",
    "resolved_outbox",
    "utc",
    "utc_or_none",
]


def json_value(value: Any, *, what: str) -> Any:
    """``value`` as plain JSON data: exactly what a JSON column would hand back.

    The memory store applies this too, so a tuple stored anywhere comes back a list
    everywhere, and a value no database could store fails in every backend alike.

    Raises:
        StoreError: The value cannot be represented as JSON.
    """
    return json.loads(json_text(value, what=what))


#: One encoder for every call: ``json.dumps`` with any option set builds a new one each
#: time, which costs more than encoding a small value.
_ENCODER = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def json_text(value: Any, *, what: str) -> str:
    """``value`` as compact JSON text, for stores that keep JSON in text columns.

    Raises:
        StoreError: The value cannot be represented as JSON (NaN and infinities included,
            which JSON has no words for).
    """
    try:
        return _ENCODER.encode(to_jsonable_python(value))
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        raise StoreError(f"{what} is not JSON-serializable: {exc}") from exc


def already_decided(record: RequestRecord) -> AlreadyDecided:
    """The error the loser of a resolve race gets: who won, with what, when, where."""
    return AlreadyDecided(
        record.id,
        status=record.status.value,
        decided_by=record.decided_by,
        decided_at=record.decided_at,
        channel=record.channel,
    )


def counted_ballot(record: RequestRecord, ballot: Ballot
                   ) -> tuple[list[Vote], AuditEvent, Resolution | None]:
    """Count ``ballot`` on ``record`` as read under its row lock: the votes to store, the
    vote's audit event with the counts so far, and the resolution to commit when the vote
    reaches its threshold (None while the request stays pending).

    One rule for every backend, so memory, SQLite and PostgreSQL count alike.

    Raises:
        AlreadyDecided: The request left pending already.
        DuplicateVote: The voter voted on it before.
    """
    if not record.pending:
        raise already_decided(record)
    vote = ballot.vote
    for earlier in record.votes:
        if earlier.voter == vote.voter:
            raise DuplicateVote(record.id, voter=vote.voter, vote=earlier.vote,
                                approvals=record.counted("approve"),
                                approvals_needed=ballot.approvals_needed)
    votes = [*record.votes, vote]
    approvals = sum(v.vote == "approve" for v in votes)
    rejections = len(votes) - approvals
    audit = ballot.audit.model_copy(update={"details": {
        **ballot.audit.details, "voter": vote.voter, "vote": vote.vote,
        "approvals": approvals, "approvals_needed": ballot.approvals_needed,
        "rejections": rejections, "rejections_needed": ballot.rejections_needed}})
    count, needed = ((approvals, ballot.approvals_needed) if vote.vote == "approve"
                     else (rejections, ballot.rejections_needed))
    if count < needed:
        return votes, audit, None
    deciders = [v for v in votes if v.vote == vote.vote]
    resolution = replace(
        ballot.resolution,
        decided_by=", ".join(v.actor or v.voter for v in deciders),
        decision={**ballot.resolution.decision, "voters": [v.voter for v in deciders]},
    )
    return votes, audit, resolution


def resolved_outbox(record: RequestRecord, resolution: Resolution) -> list[OutboxItem]:
    """The deliveries a decision queues: the ones it names, plus (when asked) a
    ``resolved`` one for every channel the decided record has a message on."""
    items = list(resolution.outbox)
    if resolution.resolved_to_message_refs:
        named = {i.notifier for i in items if i.kind == "resolved"}
        items += [OutboxItem(request_id=record.id, notifier=channel, kind="resolved",
                             due_at=resolution.decided_at)
                  for channel in sorted(set(record.message_refs) - named)]
    return items


def outbox_not_found(item_id: int) -> StoreError:
    """Unknown outbox ids are errors, like unknown request ids."""
    return StoreError(f"no outbox item with id {item_id!r}")


def normalized_request(record: RequestRecord) -> RequestRecord:
    """A private copy of ``record`` with UTC times and JSON-only payloads."""
    return record.model_copy(
        update={
            "payload": json_value(record.payload, what="request payload"),
            "decision": None
            if record.decision is None
            else json_value(record.decision, what="decision"),
            "message_refs": json_value(record.message_refs, what="message refs"),
            "created_at": utc(record.created_at),
            "expires_at": utc_or_none(record.expires_at),
            "decided_at": utc_or_none(record.decided_at),
            "resumed_at": utc_or_none(record.resumed_at),
            "resume_done_at": utc_or_none(record.resume_done_at),
        },
        deep=True,
    )


def normalized_outbox(item: OutboxItem) -> OutboxItem:
    """A private copy of ``item`` with UTC times (first owed now, unless it says)."""
    return item.model_copy(update={"due_at": utc(item.due_at),
                                   "created_at": utc(item.created_at or utcnow()),
                                   "leased_until": utc_or_none(item.leased_until)}, deep=True)


def normalized_delivered(delivered: Sequence[Delivered]) -> list[Delivered]:
    """Finished deliveries checked before the transaction that records them: a UTC
    lease, a JSON-only message reference and audit. Sorted by request, so transactions
    recording several lock their requests in one order and never wait for each other.

    Raises:
        StoreError: A message reference or audit detail is not JSON.
    """
    return sorted((replace(
        d, leased_until=utc(d.leased_until),
        message_ref=None if d.message_ref is None
        else json_value(d.message_ref, what="message ref"),
        audit=tuple(normalized_audit(e) for e in d.audit)) for d in delivered),
        key=lambda d: (d.request_id, d.notifier, d.kind))


def normalized_session(session: SessionRecord) -> SessionRecord:
    """A private copy of ``session`` with a UTC time and JSON-only metadata."""
    return session.model_copy(
        update={
            "created_at": utc(session.created_at),
            "approvers": [str(a) for a in session.approvers],
            "metadata": json_value(session.metadata, what="session metadata"),
        },
        deep=True,
    )


def normalized_audit(event: AuditEvent) -> AuditEvent:
    """A private copy of ``event`` with a UTC time and JSON-only details."""
    # shallow: the details are a new object, and every other field is immutable
    return event.model_copy(
        update={"at": utc(event.at), "details": json_value(event.details, what="audit details")})


def normalized_grant(grant: GrantRecord) -> GrantRecord:
    """A private copy of ``grant`` with UTC times and JSON-only constraints."""
    return grant.model_copy(
        update={
            "args": json_value(grant.args, what="grant constraints"),
            "created_at": utc(grant.created_at),
            "expires_at": utc_or_none(grant.expires_at),
            "revoked_at": utc_or_none(grant.revoked_at),
        },
        deep=True,
    )
