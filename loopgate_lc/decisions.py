"""Checking and reading decisions: what a person's answer must look like before it is
stored, and what a stored answer means to a run or a caller.

Kept apart from the gateway because every channel's answer meets these rules at one
edge (``Loopgate.arespond``), and the rules are pure: no store, no loop.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from loopgate_lc.errors import AlreadyDecided, DecisionNotAllowed, InvalidDecision
from loopgate_lc.policy import RiskLevel
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
    "SCHEMA_CHECKED",
    "already_decided",
    "approval_of",
    "batch_request",
    "is_batch",
    "is_tool_approval",
    "langchain_decision",
    "public_decision",
    "request_of",
    "response_of",
    "response_schema",
    "resume_value",
    "schema_decisions",
    "schema_error",
    "schemas_of_edited_args",
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
    if is_batch(value):
        return batch_request(value, derived), False
    kinds = {k.value for k in RequestKind}
    if isinstance(value, Mapping) and value.get("type") in kinds:
        data = dict(value)
        if is_tool_approval(value):
            # LangChain's per-call pause: its answer is one plain LangChain decision, and
            # the decisions the tool allows are the ones its response schema lists
            data["langchain"] = True
            allowed = schema_decisions(intr.response_schema)
            if allowed:
                data.setdefault("allowed_decisions", allowed)
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


def is_tool_approval(value: Any) -> bool:
    """Whether an interrupt value is LangChain's per-call ``ToolApprovalRequest``
    (``HumanInTheLoopMiddleware(interrupt_mode="per_call")``): a tool approval that
    loopgate_lc did not raise, so it carries no ``request_id``."""
    return (isinstance(value, Mapping) and value.get("type") == RequestKind.TOOL_APPROVAL.value
            and "request_id" not in value and isinstance(value.get("tool_call_id"), str)
            and isinstance(value.get("name"), str))


def schema_decisions(schema: Any) -> list[str]:
    """The decision types a published response schema accepts (LangChain's per-call
    schema: a union discriminated by ``type``, or one decision's object), so a person is
    offered only those; empty when the schema does not say."""
    if not isinstance(schema, Mapping):
        return []
    mapping = (schema.get("discriminator") or {}).get("mapping")
    if isinstance(mapping, Mapping):
        named = list(mapping)
    else:
        const = ((schema.get("properties") or {}).get("type") or {}).get("const")
        named = [const] if isinstance(const, str) else []
    return [kind for kind in named if kind in _HUMAN_DECISIONS]


_HUMAN_DECISIONS = ("approve", "edit", "reject", "respond")


def is_batch(value: Any) -> bool:
    """Whether an interrupt value is LangChain's batched ``HITLRequest``
    (``action_requests`` + ``review_configs``), from ``HumanInTheLoopMiddleware`` or
    ``ApprovalMiddleware(interrupt_mode="batched")``."""
    return (isinstance(value, Mapping) and isinstance(value.get("action_requests"), list)
            and isinstance(value.get("review_configs"), list)
            and len(value["action_requests"]) == len(value["review_configs"]) > 0)


def batch_request(value: Mapping[str, Any], derived: str) -> ApprovalRequest:
    """One stored request for a batched pause: the person answers every call at once
    (``{"decisions": [...]}``, by position) or gives one answer for all of them."""
    actions = [dict(a) for a in value["action_requests"]]
    configs = [dict(c) for c in value["review_configs"]]
    names = ", ".join(str(a.get("name")) for a in actions)
    common = [d for d in ("approve", "reject", "respond")
              if all(d in c.get("allowed_decisions", ()) for c in configs)]
    risks = [RiskLevel.parse(a["risk_level"]) for a in actions if a.get("risk_level")]
    extra = {k: v for k, v in value.items() if k not in _BATCH_OWN}
    return ApprovalRequest(
        type=RequestKind.TOOL_APPROVAL,
        request_id=str(value.get("request_id") or derived),
        message=f"{len(actions)} tool call{'s' if len(actions) > 1 else ''} need approval: "
                f"{names}",
        description="\n\n".join(str(a.get("description") or a.get("name")) for a in actions),
        risk_level=max(risks) if risks else None,
        policy=next((a["policy"] for a in actions if a.get("policy")), None),
        reason="; ".join(str(a["reason"]) for a in actions if a.get("reason")),
        allowed_decisions=common or ["reject"],
        session_id=value.get("session_id"),
        timeout_seconds=value.get("timeout_seconds"),
        approvers=list(value.get("approvers") or []),
        **{**extra, "action_requests": actions, "review_configs": configs, "batch": True},
    )


_BATCH_OWN = frozenset({"request_id", "session_id", "timeout_seconds", "approvers",
                        "action_requests", "review_configs"})


def _batch_decision(request: ApprovalRequest, raw: dict[str, Any]) -> dict[str, Any]:
    """Check ``{"decisions": [...]}`` (by position) or one decision for every call."""
    extra = request.model_extra or {}
    actions, configs = extra["action_requests"], extra["review_configs"]
    items = raw.get("decisions") if "type" not in raw else [raw] * len(actions)
    if not isinstance(items, list) or len(items) != len(actions):
        got = len(items) if isinstance(items, list) else "no list"
        raise InvalidDecision(f"{len(actions)} calls wait for a decision; 'decisions' must "
                              f"list one per call, in order (got {got})")
    checked = []
    for index, (item, action, config) in enumerate(zip(items, actions, configs, strict=True)):
        if "type" in raw and raw.get("type") == "edit":
            raise InvalidDecision("an edit names one call; send 'decisions' with one per call")
        where = f"decisions[{index}] ({action.get('name')})"
        one = _one_decision(item, config.get("allowed_decisions") or [], action.get("name"),
                            where=where)
        checked.append(one)
    ran = sum(d["type"] in ("approve", "edit") for d in checked)
    if ran == len(checked):
        return {"type": "approve", "decisions": checked}
    return {"type": "reject", "decisions": checked,
            "message": f"{len(checked) - ran} of {len(checked)} calls not approved"}


def _one_decision(raw: Any, allowed: Any, name: Any, *, where: str = "") -> dict[str, Any]:
    prefix = f"{where}: " if where else ""
    if not isinstance(raw, Mapping):
        raise InvalidDecision(f"{prefix}a decision must be an object, got "
                              f"{type(raw).__name__}")
    data = {k: v for k, v in raw.items() if k not in ("actor", "channel")}
    try:
        parsed = _DECISION.validate_python(data)
    except ValidationError as exc:
        raise InvalidDecision(f"{prefix}invalid decision: {_first_error(exc)}",
                              errors=json.loads(exc.json())) from exc
    kind = parsed.type
    if kind in _SYSTEM_DECISIONS:
        raise DecisionNotAllowed(f"{prefix}{kind!r} is decided by loopgate_lc itself, not by "
                                 "a person")
    if kind not in allowed:
        raise DecisionNotAllowed(
            f"{prefix}decision {kind!r} is not allowed for this request; allowed: "
            f"{', '.join(allowed)}")
    checked = parsed.model_dump(mode="json", exclude_none=True)
    checked.pop("actor", None)
    checked.pop("channel", None)
    if kind == "edit":
        checked["edited_action"] = dict(data["edited_action"])  # as sent, for the tool
        if name and checked["edited_action"].get("name") != name:
            raise InvalidDecision(
                f"{prefix}an edit cannot switch tools: this request is for {name!r}, the "
                f"edit names {checked['edited_action'].get('name')!r}")
    return checked


def already_decided(record: RequestRecord) -> AlreadyDecided:
    """The error a late answer gets: who decided what, when, through which channel."""
    return AlreadyDecided(record.id, status=record.status.value, decided_by=record.decided_by,
                          decided_at=record.decided_at, channel=record.channel)


def approval_of(request: ApprovalRequest) -> dict[str, Any]:
    """The decision that says "yes" to a request, whatever its kind: ``approve``, or for a
    request with options the ONE option that means approval. Every channel's plain
    "approve" (the CLI's ``approve ID``, HTTP's ``{"approved": true}``) goes through here.

    Raises:
        InvalidDecision: No option approves, several do (the person must choose one),
            or the request asks for text rather than a yes.
    """
    if request.options:
        approving = [o.label for o in request.options if o.approved]
        labels = ", ".join(repr(o.label) for o in request.options)
        if len(approving) == 1:
            return {"type": "respond", "message": approving[0]}
        if not approving:
            raise InvalidDecision(f"no option of this request means approval; choose one of "
                                  f"{labels}", options=[o.label for o in request.options])
        raise InvalidDecision(
            f"several options mean approval ({', '.join(repr(x) for x in approving)}); "
            f"choose one", options=approving)
    if "approve" not in request.allowed_decisions and "respond" in request.allowed_decisions:
        raise InvalidDecision("this request asks for an answer in words, not a yes",
                              options=[])
    return {"type": "approve"}


def public_decision(decision: Mapping[str, Any]) -> dict[str, Any]:
    """A decision without who/where (the audit records those in their own fields)."""
    return {k: v for k, v in decision.items() if k not in ("actor", "channel")}


def validate_decision(request: ApprovalRequest, decision: Mapping[str, Any]) -> dict[str, Any]:
    """Check a person's decision against its request before anything is stored: its
    shape (one pydantic pass) and the request's rules (allowed types, options, no
    switching tools). Pure; the request's ``response_schema``, where it can add
    anything, is :func:`schema_error`'s."""
    if not isinstance(decision, Mapping):
        raise InvalidDecision(f"a decision must be an object, got {type(decision).__name__}")
    raw = dict(decision)
    raw.pop("actor", None)
    raw.pop("channel", None)
    if request.is_batch:
        return _batch_decision(request, raw)
    if "type" not in raw and isinstance(raw.get("decisions"), list):
        if len(raw["decisions"]) != 1:  # LangChain's batched form, for this one call
            raise InvalidDecision(f"this request is one call; 'decisions' must hold exactly "
                                  f"one decision (got {len(raw['decisions'])})")
        raw = raw["decisions"][0]
    checked = _one_decision(raw, request.allowed_decisions, request.name)
    kind = checked["type"]
    if kind == "respond" and request.options:
        labels = [o.label for o in request.options]
        if checked.get("message") not in labels:
            raise InvalidDecision(
                f"choose one of the options: {', '.join(repr(x) for x in labels)}")
    return checked


SCHEMA_CHECKED = frozenset({"edit", "respond"})
"""The decisions a ``response_schema`` says more about than :func:`validate_decision`
does: an edit's arguments (the tool's own schema) and an answer's shape. An approve or
reject is fully checked by the first pass; its schema branch is the same model."""


def response_schema(request: ApprovalRequest) -> str | None:
    """The request's decision schema as canonical JSON text, or None."""
    schema = (request.model_extra or {}).get("response_schema")
    if isinstance(schema, dict):  # requests filed before the schema was kept as text
        schema = json.dumps(schema, sort_keys=True)
    return schema if isinstance(schema, str) else None


def schemas_of_edited_args(request: ApprovalRequest, checked: Mapping[str, Any]
                           ) -> list[tuple[str, str, Any]]:
    """For a checked batch decision, each edit whose call's ``review_configs`` entry
    carries the tool's ``args_schema`` (LangChain's ``ReviewConfig`` may): what to call
    it in an error, the schema as canonical JSON text, and the edited arguments."""
    if not request.is_batch:
        return []
    extra = request.model_extra or {}
    found = []
    for index, (one, action, config) in enumerate(zip(
            checked.get("decisions") or (), extra["action_requests"], extra["review_configs"],
            strict=False)):
        schema = config.get("args_schema") if isinstance(config, Mapping) else None
        if one["type"] == "edit" and isinstance(schema, Mapping):
            found.append((f"decisions[{index}] ({action.get('name')}): invalid edited args",
                          json.dumps(schema, sort_keys=True),
                          one["edited_action"].get("args")))
    return found


def schema_error(validator: Any, value: Any, what: str = "invalid decision"
                 ) -> InvalidDecision | None:
    """What is wrong with ``value`` by a compiled JSON Schema ``validator``
    (``jsonschema``): its most telling error, or None."""
    from jsonschema.exceptions import best_match

    error = best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return InvalidDecision(f"{what}{' at ' + where if where else ''}: {error.message}")


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err['msg']}" if where else str(err["msg"])


def resume_value(record: RequestRecord) -> Any:
    """What ``Command(resume=...)`` carries for a decided request: the decision dict,
    ``{"decisions": [...]}`` for a batched pause, or the plain text answer for
    interrupts loopgate_lc did not raise."""
    decision = dict(record.decision or {})
    request = record.request
    if request.is_foreign:
        return decision.get("message")
    if request.is_batch:
        if isinstance(decision.get("decisions"), list):
            return {"decisions": decision["decisions"]}
        # a timeout or cancel answers every call the same way
        count = len(request.batch_calls)
        return {"decisions": [langchain_decision(decision)] * count}
    if request.is_langchain:
        return langchain_decision(decision)
    return decision


def langchain_decision(decision: Mapping[str, Any]) -> dict[str, Any]:
    """A stored decision in the words LangChain's ``HumanInTheLoopMiddleware`` accepts
    (its per-call response schema has no ``timeout`` or ``cancel``): a timeout or cancel
    becomes the approve or reject it stands for, with the reason; who decided and where
    stay in the audit."""
    kind = decision.get("type")
    if kind in _SYSTEM_DECISIONS:
        if decision.get("outcome") == "approve":
            return {"type": "approve"}
        reason = decision.get("message") or (
            "the approval request timed out" if kind == "timeout"
            else "the approval request was cancelled")
        return {"type": "reject", "message": str(reason)}
    return {k: v for k, v in decision.items() if k in ("type", "message", "edited_action")}


def response_of(record: RequestRecord) -> HumanResponse:
    """A decided record as the typed answer ``request_approval`` would return."""
    return human_response(dict(record.decision or {}), record.request,
                          status=record.status, decided_by=record.decided_by)
