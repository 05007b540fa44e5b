"""The HTTP API's bodies and answers, as pydantic models.

They validate what clients send (unknown fields are ignored, so clients written for
Loopgate keep working) and feed ``/openapi.json``. :func:`poll_result` is the one view of
a request every route, the MCP tools and callbacks share, so ``approved`` means the same
thing everywhere.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints

from loopgate_lc.decisions import response_of
from loopgate_lc.schema import ApprovalRequest
from loopgate_lc.stores.base import RequestRecord, SessionRecord

__all__ = [
    "CancelBody",
    "DeactivateBody",
    "ErrorBody",
    "ErrorDetail",
    "HealthOut",
    "OptionIn",
    "PendingOut",
    "PollResult",
    "RegisterBody",
    "RequestBody",
    "RequestType",
    "RespondBatchBody",
    "RespondBody",
    "SessionOut",
    "WebhookDecisionBody",
    "poll_result",
    "response_text",
    "session_out",
]

RequestType = Literal["approval", "confirmation", "input", "choice", "feedback", "annotation"]
"""Every kind a client can ask for over HTTP and MCP (Loopgate's four and Beluga's two)."""
Label = Annotated[str, StringConstraints(min_length=1, max_length=256)]

_MAX_TIMEOUT = 30 * 24 * 3600.0


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)


class OptionIn(BaseModel):
    """An option whose meaning is stated: choosing it approves, or it does not."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=256)
    approved: bool | None = Field(
        default=None, description="Whether choosing this option counts as approval; "
                                  "omitted, the fail-closed rule for plain strings decides.")


class RegisterBody(_Body):
    """``POST /hitl/register``: route a session's requests to a Telegram chat."""

    session_id: str = Field(min_length=1, max_length=256)
    client_id: str = Field(default="", max_length=256)
    telegram_id: int | None = Field(
        default=None, description="The Telegram user or group chat that gets the requests.")
    approvers: list[str | int] = Field(
        default_factory=list, max_length=100,
        description="Further Telegram user ids or names allowed to decide.")
    metadata: dict[str, Any] = Field(default_factory=dict)


class RequestBody(_Body):
    """``POST /hitl/request``: ask a person."""

    session_id: str = Field(min_length=1, max_length=256)
    client_id: str = Field(default="", max_length=256)
    message: str = Field(min_length=1, max_length=20_000)
    options: list[Label | OptionIn] = Field(
        default_factory=list, max_length=50,
        description='Plain strings (meaning by the fail-closed rule) or {"label", "approved"}.')
    request_type: RequestType = "approval"
    metadata: dict[str, Any] = Field(default_factory=dict)
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=_MAX_TIMEOUT, allow_inf_nan=False,
        description="After this many seconds the request ends as `timeout` (not approved).")
    callback_url: AnyHttpUrl | None = Field(
        default=None, description="Where the final poll result is POSTed, signed.")


class RespondBody(_Body):
    """``POST /hitl/respond``: decide a request over HTTP, for your own UI.

    Either ``decision`` (a LangChain decision dict) or the simple form ``approved`` /
    ``response``: for a request with options, ``response`` is the chosen label.
    """

    request_id: str = Field(min_length=1, max_length=256)
    decision: dict[str, Any] | None = Field(
        default=None, description='e.g. {"type": "approve"}, {"type": "respond", "message": ...}')
    approved: bool | None = None
    response: str | None = Field(default=None, max_length=20_000)
    actor: str | None = Field(default=None, max_length=256,
                              description="Who decided, for the audit (the person in your UI).")
    approver_id: str | None = Field(
        default=None, max_length=256,
        description="Checked against the session's and policy's approvers when given.")


class RespondBatchBody(_Body):
    """``POST /hitl/respond/batch``: LangChain's batched resume for a paused run.

    ``decisions`` answers the thread's pending requests by position (the order of their
    tool calls in the model's message), one each; all are checked before any is kept.
    """

    thread_id: str = Field(min_length=1, max_length=256)
    decisions: list[dict[str, Any]] = Field(min_length=1, max_length=100)
    actor: str | None = Field(default=None, max_length=256)
    approver_id: str | None = Field(default=None, max_length=256)


class CancelBody(_Body):
    """``POST /hitl/cancel``."""

    request_id: str = Field(min_length=1, max_length=256)
    reason: str | None = Field(default=None, max_length=2_000)


class DeactivateBody(_Body):
    """``POST /hitl/deactivate``."""

    session_id: str = Field(min_length=1, max_length=256)


class WebhookDecisionBody(_Body):
    """``POST /hitl/webhook/decision/{request_id}``: a decision from a webhook receiver.

    Authenticated by ``token`` (the ``decision_token`` of the ``approval.requested``
    delivery) or by an ``X-Loopgate-Signature`` over the raw body. The decision is
    ``decision``, or the decision fields inline (``type``, ``message``, ...), or the
    simple ``approved`` / ``response`` form.
    """

    model_config = ConfigDict(extra="allow")

    token: str | None = Field(default=None, max_length=512)
    decision: dict[str, Any] | None = None
    type: str | None = None
    approved: bool | None = None
    response: str | None = Field(default=None, max_length=20_000)
    actor: str | None = Field(default=None, max_length=256)
    approver_id: str | None = Field(default=None, max_length=256)


class OptionOut(BaseModel):
    label: str
    approved: bool


class PollResult(BaseModel):
    """A request as every client sees it (``/hitl/poll``, MCP, callbacks)."""

    request_id: str
    status: str = Field(description="pending, approved, rejected, answered, edited, timeout, "
                                    "cancelled or failed.")
    completed: bool = Field(description="True once the request left `pending`.")
    approved: bool = Field(description="True only when the answer lets the action go ahead; "
                                       "never for timeout, cancel, reject or a negative option.")
    response: str | None = Field(description="The chosen option's label, the input text, the "
                                             "rejection reason, or the final status.")
    responded_by: str | None
    responded_at: datetime | None
    session_id: str | None = None
    client_id: str | None = None
    thread_id: str | None = Field(default=None, description="The paused run's thread, for "
                                  "requests filed from a graph (see /hitl/respond/batch).")
    request_type: str
    message: str
    options: list[OptionOut] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    channel: str | None = None
    decision: dict[str, Any] | None = None
    created_at: datetime
    expires_at: datetime | None = None


class PendingOut(BaseModel):
    """``GET /hitl/pending``."""

    count: int
    requests: list[PollResult]


class SessionOut(BaseModel):
    """A session (``/hitl/register``, ``/hitl/status``, ``/hitl/deactivate``)."""

    session_id: str
    client_id: str
    telegram_id: int | None
    approvers: list[str]
    active: bool
    created_at: datetime
    pending_requests: int | None = None


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    store: str
    telegram: bool
    mcp: bool
    auth: bool
    channels: list[str] = Field(description="Notifiers that reach a person (e.g. telegram).")
    warnings: list[str] = Field(description="Set-up problems, e.g. no channel configured.")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. `already_decided`.")
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    """Every error, whatever the route."""

    error: ErrorDetail


def response_text(record: RequestRecord) -> str | None:
    """What the seed's clients print as ``response``: the person's words when there are
    some (a label, an input, a reason), else the final status."""
    if record.pending:
        return None
    decision = record.decision or {}
    message = decision.get("message")
    kind = decision.get("type")
    if kind in ("respond", "reject", "cancel") and isinstance(message, str) and message:
        return message
    return record.status.value


def poll_result(record: RequestRecord) -> dict[str, Any]:
    """The JSON-safe view of one request; ``approved`` follows the options' meaning."""
    request = ApprovalRequest.model_validate(record.payload)
    approved = False if record.pending else response_of(record).approved
    decision = None
    if record.decision is not None:
        decision = {k: v for k, v in record.decision.items() if k not in ("actor", "channel")}
    return PollResult(
        request_id=record.id,
        status=record.status.value,
        completed=not record.pending,
        approved=approved,
        response=response_text(record),
        responded_by=record.decided_by,
        responded_at=record.decided_at,
        session_id=record.session_id,
        client_id=record.client_id,
        thread_id=record.thread_id,
        request_type=record.kind.value,
        message=request.text,
        options=[OptionOut(label=o.label, approved=o.approved) for o in request.options],
        metadata=request.metadata,
        channel=record.channel,
        decision=decision,
        created_at=record.created_at,
        expires_at=record.expires_at,
    ).model_dump(mode="json")


def session_out(session: SessionRecord, pending: int | None = None) -> dict[str, Any]:
    return SessionOut(
        session_id=session.session_id, client_id=session.client_id,
        telegram_id=session.telegram_id, approvers=session.approvers, active=session.active,
        created_at=session.created_at, pending_requests=pending,
    ).model_dump(mode="json")
