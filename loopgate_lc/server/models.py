"""The HTTP API's bodies and answers, as pydantic models.

They validate what clients send (unknown fields are ignored, so clients written for
Loopgate keep working) and feed ``/openapi.json``. :func:`poll_result` is the one view of
a request every route, the MCP tools and callbacks share, so ``approved`` means the same
thing everywhere.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, cast

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import to_jsonable_python

from loopgate_lc.quorum import tally, tally_text
from loopgate_lc.schema import decision_approves
from loopgate_lc.stores.base import AuditEvent, GrantRecord, RequestRecord, SessionRecord

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_PAGE",
    "MAX_TIMEOUT",
    "AuditOut",
    "CancelBody",
    "DeactivateBody",
    "ErrorBody",
    "ErrorDetail",
    "GrantsOut",
    "HealthOut",
    "OptionIn",
    "PendingOut",
    "PollResult",
    "RegisterBody",
    "RequestBody",
    "RequestType",
    "RespondBatchBody",
    "RespondBody",
    "RevokeGrantBody",
    "SessionOut",
    "WebhookDecisionBody",
    "check_json",
    "poll_result",
    "respond_result",
    "response_text",
    "session_out",
]

RequestType = Literal["approval", "confirmation", "input", "choice", "feedback", "annotation"]
"""Every kind a client can ask for over HTTP and MCP (Loopgate's four and Beluga's two)."""
Label = Annotated[str, StringConstraints(min_length=1, max_length=256)]

MAX_TIMEOUT = 30 * 24 * 3600.0
MAX_JSON_DEPTH = 32
"""Nesting deeper than this is refused: no real request needs it, and deep nesting is how
a small body makes recursive code fail."""

# The field limits, shared by the HTTP bodies and the MCP tools' signatures so both edges
# refuse the same inputs. Strict: a boolean is neither a number nor a string.
Message = Annotated[str, Field(min_length=1, max_length=20_000, strict=True)]
Timeout = Annotated[float, Field(gt=0, le=MAX_TIMEOUT, allow_inf_nan=False, strict=True)]
Metadata = dict[str, Any]
Ident = Annotated[str, Field(min_length=1, max_length=256, strict=True)]
OptionalIdent = Annotated[str, Field(max_length=256, strict=True)]


def check_json(value: Any, where: str = "body") -> None:
    """Refuse what JSON parsers accept but the rest of the system cannot hold.

    Nesting deeper than :data:`MAX_JSON_DEPTH`, and lone UTF-16 surrogates (``"\\ud800"``)
    in any string or object key: they cannot be encoded as UTF-8, so a store or a
    channel would fail (or mangle them) later instead of the caller hearing now.

    Raises:
        ValueError: Says where the first offending value is.
    """
    stack: list[tuple[Any, int, str]] = [(value, 1, where)]
    while stack:
        item, depth, path = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"{path}: nested more than {MAX_JSON_DEPTH} levels deep")
        if isinstance(item, str):
            _check_text(item, path)
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_text(str(key), f"{path}: a key")
                stack.append((child, depth + 1, f"{path}.{str(key)[:40]!r}"
                              if _encodable(str(key)) else path))
        elif isinstance(item, list):
            stack.extend((child, depth + 1, f"{path}[{i}]") for i, child in enumerate(item))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(text: str, path: str) -> None:
    if not _encodable(text):
        raise ValueError(f"{path}: contains a lone UTF-16 surrogate, which is not text")


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False, strict=True)


class OptionIn(BaseModel):
    """An option whose meaning is stated: choosing it approves, or it does not."""

    model_config = ConfigDict(extra="forbid", strict=True)

    label: str = Field(min_length=1, max_length=256)
    approved: bool | None = Field(
        default=None, description="Whether choosing this option counts as approval; "
                                  "omitted, the fail-closed rule for plain strings decides.")


Options = Annotated[list[Label | OptionIn], Field(max_length=50)]


class RegisterBody(_Body):
    """``POST /hitl/register``: route a session's requests to a Telegram chat."""

    session_id: Ident
    client_id: OptionalIdent = ""
    telegram_id: int | None = Field(
        default=None, description="The Telegram user or group chat that gets the requests.")
    approvers: list[Annotated[str, Field(min_length=1, max_length=256)] | int] = Field(
        default_factory=list, max_length=100,
        description="Telegram user ids or names allowed to decide; when given, nobody "
                    "else may.")
    metadata: Metadata = Field(default_factory=dict)


class RequestBody(_Body):
    """``POST /hitl/request``: ask a person."""

    session_id: Ident
    client_id: OptionalIdent = ""
    message: Message
    options: Options = Field(
        default_factory=list,
        description='Plain strings (meaning by the fail-closed rule) or {"label", "approved"}.')
    request_type: RequestType = "approval"
    metadata: Metadata = Field(default_factory=dict)
    timeout_seconds: Timeout | None = Field(
        default=None,
        description="After this many seconds the request ends as `timeout` (not approved).")
    callback_url: AnyHttpUrl | None = Field(
        default=None, strict=False, max_length=2_000,
        description="Where the final poll result is POSTed, signed. Internal addresses "
                    "are refused unless the server allows them.")


GRANT_DESCRIPTION = (
    'With an approve: "allow this again", e.g. {"scope": "session", "ttl_seconds": 3600, '
    '"args": {"path": {"prefix": "/srv/"}}}. scope: thread, session or everyone (the '
    "same client); args: omitted for the same arguments, \"any\", or per-argument "
    "equals/prefix/one_of/min/max/any; exactly one of ttl_seconds, expires_at or "
    "until_revoked: true. Refused where a require_explicit policy decides.")


class RespondBody(_Body):
    """``POST /hitl/respond``: decide a request over HTTP, for your own UI.

    Either ``decision`` (a LangChain decision dict) or the simple form ``approved`` /
    ``response``: for a request with options, ``response`` is the chosen label.
    """

    request_id: Ident
    decision: dict[str, Any] | None = Field(
        default=None, description='e.g. {"type": "approve"}, {"type": "respond", "message": ...}')
    approved: bool | None = None
    response: str | None = Field(default=None, max_length=20_000)
    actor: str | None = Field(
        default=None, max_length=256,
        description="Admin keys only: the person in your UI who decided, for the audit.")
    approver_id: str | None = Field(
        default=None, max_length=256,
        description="Admin keys only: the person who decides, checked against the "
                    "approvers; other keys decide as their own name.")
    grant: dict[str, Any] | None = Field(default=None, description=GRANT_DESCRIPTION)


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

    request_id: Ident
    reason: str | None = Field(default=None, max_length=2_000)


class DeactivateBody(_Body):
    """``POST /hitl/deactivate``."""

    session_id: Ident


class WebhookDecisionBody(_Body):
    """``POST /hitl/webhook/decision/{request_id}``: a decision from a webhook receiver.

    Authenticated by ``token`` (the ``decision_token`` of the ``approval.requested``
    delivery) or by a decision signature (``webhook-signature`` over method, path and
    raw body; see :mod:`loopgate_lc.signing`). The decision is
    ``decision``, or the decision fields inline (``type``, ``message``, ...), or the
    simple ``approved`` / ``response`` form.
    """

    model_config = ConfigDict(extra="allow")

    token: str | None = Field(default=None, max_length=512)
    decision: dict[str, Any] | None = None
    type: str | None = Field(default=None, max_length=64)
    approved: bool | None = None
    response: str | None = Field(default=None, max_length=20_000)
    actor: str | None = Field(default=None, max_length=256)
    approver_id: str | None = Field(default=None, max_length=256)
    grant: dict[str, Any] | None = Field(default=None, description=GRANT_DESCRIPTION)


class RevokeGrantBody(_Body):
    """``POST /hitl/grants/revoke``: stop a remembered permission from approving calls."""

    grant_id: Ident


class AuditOut(BaseModel):
    """``GET /hitl/audit``: the newest events in the key's scope, in the order they
    happened."""

    count: int
    events: list[AuditEvent]


class GrantsOut(BaseModel):
    """``GET /hitl/grants``: remembered permissions, oldest first."""

    count: int
    grants: list[GrantRecord]


class OptionOut(BaseModel):
    label: str
    approved: bool


class VotesOut(BaseModel):
    """The count of a request that needs a quorum (see ``loopgate_lc.quorum``)."""

    approvals: int
    approvals_needed: int
    rejections: int
    rejections_needed: int
    voters: list[dict[str, str]] = Field(
        default_factory=list, description='Who voted what, in order: {"voter", "vote"}.')


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
    votes: VotesOut | None = Field(
        default=None, description="Only on requests that need several approvals: the count "
                                  "so far.")
    note: str | None = Field(
        default=None, description="Only on an answer that was a vote and left the request "
                                  "pending: says so, with the count.")


MAX_PAGE = 1000
"""The most requests one listing page returns (HTTP and MCP ``limit``)."""


class PendingOut(BaseModel):
    """``GET /hitl/pending``: one page (``count`` is its length).

    ``next`` is the cursor of the next page (pass it as ``cursor``), None on the last.
    """

    count: int
    requests: list[PollResult]
    next: str | None = None


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
    reasons: list[str] = Field(default_factory=list,
                               description="Why the status is `degraded`.")
    dead_deliveries: int = Field(
        default=0, description="Deliveries given up on (counted up to 1,000); "
                               "`loopgate-lc deliveries` lists them.")


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
    """The JSON-safe view of one request (:class:`PollResult`'s fields, which document
    it); ``approved`` follows the options' meaning.

    Built as a plain dict: every answer to a decision is one, and validating the record's
    own, already typed values into a model only to dump them again cost as much as the
    rest of the answer.
    """
    request = record.request
    # what response_of(record).approved says, without building the typed answer
    approved = not record.pending and record.decision is not None \
        and decision_approves(record.decision, request)
    decision = None
    if record.decision is not None:
        decision = {k: v for k, v in record.decision.items() if k not in ("actor", "channel")}
    result: dict[str, Any] = {
        "request_id": record.id,
        "status": record.status.value,
        "completed": not record.pending,
        "approved": approved,
        "response": response_text(record),
        "responded_by": record.decided_by,
        "responded_at": _json_time(record.decided_at),
        "session_id": record.session_id,
        "client_id": record.client_id,
        "thread_id": record.thread_id,
        "request_type": record.kind.value,
        "message": request.text,
        "options": [{"label": o.label, "approved": o.approved} for o in request.options],
        "metadata": to_jsonable_python(request.metadata),
        "channel": record.channel,
        "decision": to_jsonable_python(decision),
        "created_at": _json_time(record.created_at),
        "expires_at": _json_time(record.expires_at),
    }
    if counts := tally(record):  # only requests that take votes carry a count
        result["votes"] = VotesOut.model_validate(counts).model_dump(mode="json")
    return result


def _json_time(value: datetime | None) -> str | None:
    """A time as the models write it in JSON (pydantic's form, ``Z`` for UTC)."""
    return None if value is None else cast(str, to_jsonable_python(value))


def respond_result(record: RequestRecord) -> dict[str, Any]:
    """What an answer gets back: the request as polled, and, when the answer was a vote
    that left it pending, a ``note`` saying so with the count."""
    result = poll_result(record)
    if record.pending and "votes" in result:
        result["note"] = f"vote counted; the request is still pending ({tally_text(record)})"
    return result


def session_out(session: SessionRecord, pending: int | None = None) -> dict[str, Any]:
    return SessionOut(
        session_id=session.session_id, client_id=session.client_id,
        telegram_id=session.telegram_id, approvers=session.approvers, active=session.active,
        created_at=session.created_at, pending_requests=pending,
    ).model_dump(mode="json")
