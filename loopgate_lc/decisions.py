"""Checking and reading decisions: what a person's answer must look like before it is
stored, and what a stored answer means to a run or a caller.

Kept apart from the gateway because every channel's answer meets these rules at one
edge (``Loopgate.arespond``), and the rules are pure: no store, no loop.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from loopgate_lc.errors import AlreadyDecided, DecisionNotAllowed, InvalidDecision
from loopgate_lc.schema import (
    ApprovalRequest,
    Decision,
    HumanResponse,
    RequestKind,
    human_response,
)
from loopgate_lc.stores.base import RequestRecord

if TYPE_CHECKING:
    from langgraph.types import Interrupt

__all__ = [
    "already_decided",
    "public_decision",
    "request_of",
    "response_of",
    "resume_value",
    "validate_decision",
]

_DECISION = TypeAdapter(Decision)
_SYSTEM_DECISIONS = ("timeout", "cancel")
_NAMESPACE = uuid.UUID("0b9a1c52-27d1-4d0e-a1f4-3f0a7d5f2a90")


def request_of(intr: Interrupt, thread_id: str) -> tuple[ApprovalRequest, bool]:
    """Read an interrupt's value as a request; values loopgate_lc did not raise become
    free-text questions whose answer is resumed as plain text."""
    value = intr.value
    derived = str(uuid.uuid5(_NAMESPACE, f"{thread_id}\x1f{intr.id}"))
    kinds = {k.value for k in RequestKind}
    if isinstance(value, Mapping) and value.get("type") in kinds:
        data = dict(value)
        data.setdefault("request_id", derived)
        try:
            return ApprovalRequest.model_validate(data), False
        except ValidationError:
            pass
    text = value if isinstance(value, str) else json.dumps(value, default=str, indent=2)
    return ApprovalRequest(type=RequestKind.INPUT, request_id=derived, message=text,
                           description=text, allowed_decisions=["respond"],
                           metadata={"interrupt_value": value} if not isinstance(value, str)
                           else {}), True


def already_decided(record: RequestRecord) -> AlreadyDecided:
    """The error a late answer gets: who decided what, when, through which channel."""
    return AlreadyDecided(record.id, status=record.status.value, decided_by=record.decided_by,
                          decided_at=record.decided_at, channel=record.channel)


def public_decision(decision: Mapping[str, Any]) -> dict[str, Any]:
    """A decision without who/where (the audit records those in their own fields)."""
    return {k: v for k, v in decision.items() if k not in ("actor", "channel")}


def validate_decision(record: RequestRecord, request: ApprovalRequest,
                      decision: Mapping[str, Any]) -> dict[str, Any]:
    """Check a person's decision against its request before anything is stored."""
    if not isinstance(decision, Mapping):
        raise InvalidDecision(f"a decision must be an object, got {type(decision).__name__}")
    raw = dict(decision)
    raw.pop("actor", None)
    raw.pop("channel", None)
    try:
        parsed = _DECISION.validate_python(raw)
    except ValidationError as exc:
        raise InvalidDecision(f"invalid decision: {_first_error(exc)}",
                              errors=json.loads(exc.json())) from exc
    kind = parsed.type
    if kind in _SYSTEM_DECISIONS:
        raise DecisionNotAllowed(f"{kind!r} is decided by loopgate_lc itself, not by a person")
    if kind not in request.allowed_decisions:
        raise DecisionNotAllowed(
            f"decision {kind!r} is not allowed for this request; allowed: "
            f"{', '.join(request.allowed_decisions)}")
    checked = parsed.model_dump(mode="json", exclude_none=True)
    checked.pop("actor", None)
    checked.pop("channel", None)
    if kind == "edit":
        checked["edited_action"] = dict(raw["edited_action"])  # as sent, for the tool
        if request.name and checked["edited_action"].get("name") != request.name:
            raise InvalidDecision(
                f"an edit cannot switch tools: this request is for {request.name!r}, the "
                f"edit names {checked['edited_action'].get('name')!r}")
    if kind == "respond" and request.options:
        labels = [o.label for o in request.options]
        if checked.get("message") not in labels:
            raise InvalidDecision(
                f"choose one of the options: {', '.join(repr(x) for x in labels)}")
    schema = record.payload.get("response_schema")
    if isinstance(schema, dict):  # requests filed before the schema was kept as text
        schema = json.dumps(schema, sort_keys=True)
    if isinstance(schema, str):
        from jsonschema.exceptions import best_match

        error = best_match(_validator(schema).iter_errors(checked))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path)
            raise InvalidDecision(f"invalid decision{' at ' + where if where else ''}: "
                                  f"{error.message}")
    return checked


@functools.lru_cache(maxsize=256)
def _validator(schema: str) -> Any:
    """A compiled validator per decision schema (one per tool, in practice)."""
    # imported here: jsonschema pulls in format checkers that slow every CLI start
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads(schema))


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err['msg']}" if where else str(err["msg"])


def resume_value(record: RequestRecord) -> Any:
    """What ``Command(resume=...)`` carries for a decided request: the decision dict, or
    the plain text answer for interrupts loopgate_lc did not raise."""
    decision = dict(record.decision or {})
    if record.payload.get("foreign"):
        return decision.get("message")
    return decision


def response_of(record: RequestRecord) -> HumanResponse:
    """A decided record as the typed answer ``request_approval`` would return."""
    return human_response(dict(record.decision or {}),
                          ApprovalRequest.model_validate(record.payload),
                          status=record.status, decided_by=record.decided_by)
