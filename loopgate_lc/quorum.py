"""Quorum: a request that needs several people's approval before its action runs.

A policy sets ``quorum=N`` (and optionally ``rejections_needed=M``); every request it sends
to people carries both. Then a person's answer is a *vote*, not the decision:

- Only ``approve`` and ``reject`` are votes. An edit or a free-text answer would make
  voters agree on different actions, so under a quorum they are refused with
  :class:`~loopgate_lc.errors.InvalidDecision` (and the request offers only approve and
  reject on every channel). Reject with what should change instead.
- Each vote names its voter: the ``approver_id`` a channel passes (a Telegram user id, the
  CLI's ``--as``, the HTTP API's ``approver_id``). Votes from distinct identities count
  once each; a second vote by the same identity is refused with
  :class:`~loopgate_lc.errors.DuplicateVote` and changes nothing (a vote cannot be
  changed either). Where the session or policy names approvers, only they may vote.
- The requester never votes: :func:`requesters` says who asked (the request's
  ``requester``, its ``client_id``, and the ``client_id`` of its session), and a vote by
  any of them is refused with :class:`~loopgate_lc.errors.SelfApproval`.
- N approvals approve; M rejections reject (M is 1 by default: the first rejection
  decides at once). The deciding vote commits the decision in its own transaction,
  through the same compare-and-set as any other decision, so racing votes decide once.
- A timeout or a cancel decides as always; the votes so far stay on the record.

Each vote is audited as ``voted`` (who, what, and the counts so far) in the transaction
that counts it. The pure rules live here; the counting itself is the store's
(:meth:`~loopgate_lc.stores.base.Store.vote`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from loopgate_lc.errors import ApproverNotAllowed, InvalidDecision, SelfApproval, SessionNotFound
from loopgate_lc.schema import ApprovalRequest
from loopgate_lc.stores.base import (
    AuditEvent,
    Ballot,
    OutboxItem,
    RequestRecord,
    Resolution,
    Store,
    Vote,
)

__all__ = [
    "MAX_VOTER",
    "VOTES",
    "ballot",
    "needs_votes",
    "refuse_requester",
    "requesters",
    "tally",
    "tally_text",
    "vote_of",
    "voter_of",
    "votes_only",
]

MAX_VOTER = 256
"""The longest identity a vote may name (the HTTP API's limit for ``approver_id``)."""

VOTES: tuple[Literal["approve"], Literal["reject"]] = ("approve", "reject")
"""The decisions that are votes under a quorum."""


def needs_votes(request: ApprovalRequest | Mapping[str, Any]) -> bool:
    """Whether answers to ``request`` are votes: it needs more than one approval, or more
    than one rejection."""
    if isinstance(request, ApprovalRequest):
        return request.quorum > 1 or request.rejections_needed > 1
    return int(request.get("quorum") or 1) > 1 or int(request.get("rejections_needed") or 1) > 1


def votes_only(payload: dict[str, Any]) -> dict[str, Any]:
    """A filed request's payload with ``allowed_decisions`` narrowed to the votes, when it
    needs votes, so every channel offers only what counts."""
    if not needs_votes(payload):
        return payload
    allowed = [d for d in payload.get("allowed_decisions") or () if d in VOTES]
    return {**payload, "allowed_decisions": allowed}


def vote_of(record: RequestRecord, decision: Mapping[str, Any]) -> Literal["approve", "reject"]:
    """The vote a checked decision casts.

    A batch decision (one answer per call of a batched pause) is a vote when every call
    gets the same plain answer.

    Raises:
        InvalidDecision: The decision is not a plain approve or reject.
    """
    kind = decision.get("type")
    parts = decision.get("decisions")
    if isinstance(parts, list):
        kinds = {p.get("type") if isinstance(p, Mapping) else None for p in parts}
        kind = kinds.pop() if len(kinds) == 1 and kind in (None, *kinds) else None
    if kind in VOTES:
        return "approve" if kind == "approve" else "reject"
    needed = record.request.quorum
    raise InvalidDecision(
        f"request {record.id} needs {needed} approval{'s' if needed != 1 else ''}: only "
        "approve and reject are votes (voters could not agree on an edit or an answer); "
        "reject with what should change instead")


def voter_of(record: RequestRecord, approver_id: str | None) -> str:
    """The identity a vote counts for.

    Raises:
        ApproverNotAllowed: The vote names nobody: a quorum counts people, so every vote
            must say whose it is.
    """
    voter = (approver_id or "").strip()
    if not voter:
        raise ApproverNotAllowed(
            f"request {record.id} needs votes from distinct approvers: name the approver "
            "who votes (approver_id)")
    if len(voter) > MAX_VOTER:
        raise InvalidDecision(f"approver_id is longer than {MAX_VOTER} characters")
    return voter


async def requesters(store: Store, record: RequestRecord) -> set[str]:
    """Who asked for ``record``: its ``requester`` (named when it was filed), its
    ``client_id``, and its session's ``client_id`` (the session's owner). None of them
    may vote on it."""
    found = {record.request.requester, record.client_id}
    if record.session_id:
        with contextlib.suppress(SessionNotFound):
            found.add((await store.get_session(record.session_id)).client_id)
    return {str(who) for who in found if who}


def refuse_requester(record: RequestRecord, voter: str, asked_by: set[str]) -> None:
    """Raises :class:`SelfApproval` when ``voter`` is who asked."""
    if voter in asked_by:
        raise SelfApproval(f"{voter} asked for request {record.id}, so their vote cannot "
                           "count toward it")


def tally(record: RequestRecord) -> dict[str, Any]:
    """The counts a channel shows: approvals and rejections so far, what each needs, and
    who voted (empty for a request that takes a single decision)."""
    request = record.shown  # for people: a malformed payload shows, never crashes
    if not needs_votes(request):
        return {}
    return {
        "approvals": record.counted("approve"),
        "approvals_needed": request.quorum,
        "rejections": record.counted("reject"),
        "rejections_needed": request.rejections_needed,
        "voters": [{"voter": v.voter, "vote": v.vote} for v in record.votes],
    }


def tally_text(record: RequestRecord) -> str:
    """One line for people: ``Approvals: 1 of 2`` (and the rejections, when more than one
    is needed); empty for a request that takes a single decision."""
    counts = tally(record)
    if not counts:
        return ""
    text = f"Approvals: {counts['approvals']} of {counts['approvals_needed']}"
    if counts["rejections_needed"] > 1:
        text += f"; rejections: {counts['rejections']} of {counts['rejections_needed']}"
    return text


def ballot(
    record: RequestRecord,
    decision: dict[str, Any],
    *,
    voter: str,
    now: datetime,
    audit: AuditEvent,
    outbox: Sequence[OutboxItem],
    resolution: Resolution,
) -> Ballot:
    """The ballot for one checked vote on ``record``: the vote, its audit event, what a
    channel is owed while the request stays pending, and the decision to commit if this
    vote decides.

    Args:
        decision: The checked decision, with its ``actor`` and ``channel``.
        audit: The vote's ``voted`` event (the store adds the counts).
        outbox: The deliveries that show the new count.
        resolution: What commits when this vote reaches its threshold.
    """
    request = record.request
    return Ballot(
        request_id=record.id,
        vote=Vote(voter=voter, vote=vote_of(record, decision), actor=decision.get("actor"),
                  channel=decision.get("channel"), at=now, message=decision.get("message")),
        approvals_needed=request.quorum,
        rejections_needed=request.rejections_needed,
        audit=audit,
        outbox=outbox,
        resolution=resolution,
    )
