"""``request_approval()``: ask a person from inside any LangGraph node.

It interrupts with the same request shape as the tool guard (its ``type`` names the
kind) and returns a typed :class:`~loopgate_lc.schema.HumanResponse`. It covers
Loopgate's request types (approval, confirmation, input, choice) and Beluga's
(approval, feedback, input, annotation). Like any ``interrupt()``, everything before the
call re-runs on resume, so do side effects after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from loopgate_lc.errors import ConfigurationError
from loopgate_lc.interrupts import ask, new_request_id, question_schema
from loopgate_lc.policy import RiskLevel
from loopgate_lc.schema import (
    ApprovalRequest,
    DecisionType,
    HumanResponse,
    RequestKind,
    default_decisions,
    human_response,
    parse_options,
)

__all__ = ["request_approval"]

Kind = Literal["approval", "confirmation", "choice", "input", "feedback", "annotation"]

def request_approval(
    message: str,
    *,
    kind: Kind = "approval",
    options: Sequence[str | Mapping[str, Any]] | None = None,
    metadata: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    data: Mapping[str, Any] | None = None,
    allowed_decisions: Sequence[DecisionType] | None = None,
    risk: RiskLevel | str | None = None,
    session_id: str | None = None,
) -> HumanResponse:
    """Pause the node until a person answers, then return their answer.

    Args:
        message: The question, shown as is (channels escape it).
        kind: ``approval``/``confirmation`` (approve or reject), ``choice`` (pick one of
            ``options``), ``input``/``feedback`` (free text), ``annotation`` (free text,
            or edited ``data``).
        options: For choices: labels, or ``{"label", "approved"}`` objects. A plain
            label's meaning follows :func:`loopgate_lc.schema.option_approves`.
        metadata: Context shown to the person and kept in the audit.
        timeout: Seconds to answer; the gateway's default applies if None.
        data: For annotation: the data a person may edit (returned in ``data``).
        allowed_decisions: Override the kind's default decisions.
        risk: Shown to the person; informative only here.
        session_id: The Loopgate session whose approvers receive it.

    Raises:
        ConfigurationError: A choice without options, or two options with one label.
    """
    request_kind = RequestKind(kind)
    try:
        parsed = parse_options(request_kind, options)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    allowed = tuple(allowed_decisions or default_decisions(request_kind, bool(parsed)))
    labels = tuple(o.label for o in parsed)
    request = ApprovalRequest(
        type=request_kind,
        request_id=new_request_id(f"{kind}:{message}"),
        name=kind,
        args=dict(data) if data is not None else None,
        message=message,
        description=message,
        risk_level=RiskLevel.parse(risk) if risk is not None else None,
        allowed_decisions=list(allowed),
        options=parsed,
        metadata=dict(metadata or {}),
        session_id=session_id,
        timeout_seconds=timeout,
    )
    return human_response(ask(request, question_schema(allowed, kind, labels)), request)
