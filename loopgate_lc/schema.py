"""The wire types: what an interrupt carries, what a decision looks like, what a request's
status can be.

The interrupt value for a tool call is a superset of LangChain's per-call
``ToolApprovalRequest``, and decisions are LangChain's decision dicts as they are, so a
client written for ``HumanInTheLoopMiddleware(interrupt_mode="per_call")`` can answer a
loopgate_lc interrupt unchanged. Everything here is plain data: it crosses checkpoints,
stores, HTTP and Telegram as JSON.

Every model here defers building its validator to its first use (``defer_build``): a
process uses a few of them, and building the rest when this module is imported cost a
command of the CLI more than its own work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, field_validator

from loopgate_lc.policy import RiskLevel

__all__ = [
    "AFFIRMATIVE_OPTIONS",
    "ApprovalRequest",
    "ApproveDecision",
    "CancelDecision",
    "Decision",
    "DecisionType",
    "EditDecision",
    "EditedAction",
    "HumanResponse",
    "Option",
    "RejectDecision",
    "RequestKind",
    "RespondDecision",
    "ShadowVerdict",
    "Status",
    "TimeoutDecision",
    "decision_approves",
    "decision_status",
    "default_decisions",
    "human_response",
    "normalise_label",
    "option_approves",
    "parse_options",
    "utcnow",
]

DecisionType = Literal["approve", "edit", "reject", "respond"]
"""The decisions a person can make, as LangChain names them."""

ALL_DECISIONS: tuple[DecisionType, ...] = ("approve", "edit", "reject", "respond")


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (every stored timestamp is)."""
    return datetime.now(UTC)


class RequestKind(StrEnum):
    """What is asked of the person.

    ``tool_approval`` is a guarded tool call; the others cover Loopgate's request types
    (approval, confirmation, input, choice) and Beluga's (feedback, annotation).
    """

    TOOL_APPROVAL = "tool_approval"
    APPROVAL = "approval"
    CONFIRMATION = "confirmation"
    CHOICE = "choice"
    INPUT = "input"
    FEEDBACK = "feedback"
    ANNOTATION = "annotation"


class Status(StrEnum):
    """A request's life: ``pending`` leaves exactly once, to one final status."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EDITED = "edited"
    ANSWERED = "answered"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return self is not Status.PENDING


# --- options -----------------------------------------------------------------------------

AFFIRMATIVE_OPTIONS: frozenset[str] = frozenset({
    "yes", "y", "yep", "yeah", "yes please", "ok", "okay", "sure", "lgtm",
    "approve", "approved", "approve it", "accept", "allow", "confirm", "confirmed", "agree",
    "proceed", "continue", "go", "go ahead", "do it",
    "deploy", "deploy now", "deploy immediately", "deploy it",
    "execute", "execute now", "run", "run it", "run now", "apply", "apply now",
    "ship", "ship it", "merge", "merge it", "publish", "release", "send", "send it", "grant",
})
"""Plain-string option labels that mean approval, compared as whole labels after
:func:`normalise_label`. Anything else (a label with words added, such as "Deploy to
Staging First" or "Run rm -rf") is not an approval."""


def normalise_label(label: str) -> str:
    """A label as compared with :data:`AFFIRMATIVE_OPTIONS`: case-folded, runs of white
    space made one space, and a trailing ``.`` or ``!`` dropped."""
    return " ".join(label.casefold().split()).rstrip(".!").rstrip()


def option_approves(label: str) -> bool:
    """The one fail-closed rule that gives a plain-string option its meaning.

    A label approves only when the WHOLE label (case and spacing ignored) is one of the
    affirmative phrases in :data:`AFFIRMATIVE_OPTIONS` ("Yes", "Approve", "Deploy",
    "Deploy Immediately", "Proceed", ...). A word list would guess: "Deploy to Staging
    First" or "Run rm -rf" start like an approval but ask for something else, so they
    are not one; nor are "Cancel", "No", "Review" or "Staging". The client always gets
    the chosen label in ``response`` and can branch on it. Give options as
    ``{"label": ..., "approved": ...}`` to state the meaning explicitly.
    """
    return normalise_label(label) in AFFIRMATIVE_OPTIONS


class Option(BaseModel):
    """A choice offered to the person, with what choosing it means."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    label: str = Field(min_length=1, max_length=256)
    approved: bool

    @classmethod
    def parse(cls, value: str | dict[str, Any] | Option) -> Option:
        """Accept the seed's plain strings or explicit ``{"label", "approved"}`` objects."""
        if isinstance(value, Option):
            return value
        if isinstance(value, str):
            return cls(label=value, approved=option_approves(value))
        if isinstance(value, dict) and "approved" not in value and "label" in value:
            return cls(label=value["label"], approved=option_approves(str(value["label"])))
        return cls.model_validate(value)


def parse_options(kind: RequestKind, options: Sequence[str | Mapping[str, Any]] | None
                  ) -> list[Option]:
    """Options as :class:`Option` objects, checked the same way for every caller.

    Raises:
        ValueError: A choice without options, or two options with the same label.
    """
    parsed = [Option.parse(dict(o) if isinstance(o, Mapping) else o) for o in options or ()]
    if kind is RequestKind.CHOICE and not parsed:
        raise ValueError("a choice request needs at least one option")
    if len({o.label for o in parsed}) != len(parsed):
        raise ValueError("option labels must be unique")
    return parsed


def default_decisions(kind: RequestKind, has_options: bool) -> tuple[DecisionType, ...]:
    """What a person may answer when the asker does not say: pick an option, or say no
    with a reason, when there are options; otherwise what the kind asks for."""
    if has_options:
        return ("respond", "reject")
    if kind is RequestKind.TOOL_APPROVAL:
        return ALL_DECISIONS
    if kind is RequestKind.ANNOTATION:
        return ("respond", "edit", "reject")
    if kind in (RequestKind.INPUT, RequestKind.FEEDBACK):
        return ("respond", "reject")
    return ("approve", "reject")


# --- the interrupt value ------------------------------------------------------------------


class ShadowVerdict(BaseModel):
    """What a shadow policy would have decided for a call it does not enforce."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    policy: str
    auto_approved: bool
    reason: str = ""


class ApprovalRequest(BaseModel):
    """The value every loopgate_lc ``interrupt()`` carries.

    For tool calls the first five fields are LangChain's ``ToolApprovalRequest``
    (``type="tool_approval"``, ``tool_call_id``, ``name``, ``args``, ``description``);
    the rest is what a person and an audit need. For node requests ``type`` names the
    kind and ``message``/``options`` say what is asked.
    """

    model_config = ConfigDict(extra="allow", use_enum_values=False, defer_build=True)

    type: RequestKind
    request_id: str
    tool_call_id: str | None = None
    name: str | None = None
    args: dict[str, Any] | None = None
    description: str = ""
    message: str = ""
    risk_level: RiskLevel | None = None
    confidence: float | None = None
    policy: str | None = None
    reason: str = ""
    allowed_decisions: list[DecisionType] = Field(default_factory=lambda: list(ALL_DECISIONS))
    options: list[Option] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    approvers: list[str] = Field(default_factory=list)
    session_id: str | None = None
    timeout_seconds: float | None = None
    expires_at: datetime | None = None
    shadow: ShadowVerdict | None = None
    #: the deciding policy asks a person for every call: no grant may answer for them
    require_explicit: bool = False
    #: approvals from distinct approvers needed before the action runs (see
    #: :mod:`loopgate_lc.quorum`); 1 is a plain single decision
    quorum: int = Field(default=1, ge=1, le=1000)
    #: rejections that end the request under a quorum (1: the first one decides)
    rejections_needed: int = Field(default=1, ge=1, le=1000)
    #: who asked, when known beyond the request's client and session: never a voter
    requester: str | None = Field(default=None, max_length=256)

    @field_validator("options", mode="before")
    @classmethod
    def _parse_options(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [Option.parse(v) for v in value]
        return value

    @property
    def kind(self) -> RequestKind:
        return self.type

    @property
    def text(self) -> str:
        """What to show a person first: the message, else the tool description."""
        return self.message or self.description or (f"Run tool {self.name}?" if self.name else "")

    # What the gateway marks a request with, beyond its fields (kept as extra keys of the
    # stored payload, so the wire form stays LangChain's): read here, typed, not by key.

    @property
    def is_batch(self) -> bool:
        """One request for a batched LangChain pause: ``action_requests`` answered by
        position (see :func:`loopgate_lc.decisions.batch_request`)."""
        return bool(self._extra("batch"))

    @property
    def batch_calls(self) -> list[dict[str, Any]]:
        """The calls of a batched pause, in order (empty for any other request)."""
        calls = self._extra("action_requests")
        return [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []

    @property
    def is_foreign(self) -> bool:
        """An interrupt loopgate_lc did not raise: its answer resumes as plain text."""
        return bool(self._extra("foreign"))

    @property
    def is_langchain(self) -> bool:
        """LangChain's per-call pause: its answer resumes as one LangChain decision."""
        return bool(self._extra("langchain"))

    @property
    def callback_url(self) -> str | None:
        """Where the seed's HTTP API was asked to post the decision, if anywhere."""
        url = self._extra("callback_url")
        return url if isinstance(url, str) and url else None

    def _extra(self, key: str) -> Any:
        return (self.model_extra or {}).get(key)

    def to_interrupt(self) -> dict[str, Any]:
        """The JSON-safe dict placed in ``interrupt()`` (and in stores and webhooks)."""
        return self.model_dump(mode="json", exclude_none=False)


# --- decisions ----------------------------------------------------------------------------


class _DecisionBase(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    actor: str | None = Field(default=None, description="Who decided (filled by loopgate_lc).")
    channel: str | None = Field(default=None, description="Where the decision came from.")


class ApproveDecision(_DecisionBase):
    """Run the call as the model asked."""

    type: Literal["approve"] = "approve"


class EditedAction(BaseModel):
    """The call a person wants run instead: the same tool, other arguments."""

    model_config = ConfigDict(defer_build=True)

    name: str
    args: dict[str, Any]


class EditDecision(_DecisionBase):
    """Run the call with the person's arguments (validated against the tool's schema)."""

    type: Literal["edit"] = "edit"
    edited_action: EditedAction


class RejectDecision(_DecisionBase):
    """Do not run the call; the model is told so, with the reason if given."""

    type: Literal["reject"] = "reject"
    message: str | None = None


class RespondDecision(_DecisionBase):
    """Do not run the call; the person's message is the result (or the node's answer)."""

    type: Literal["respond"] = "respond"
    message: str


class TimeoutDecision(_DecisionBase):
    """Nobody answered in time; ``outcome`` is what the configuration says happens then.

    Always accepted, whatever ``allowed_decisions`` says: it is the system's answer, not
    a person's, and it is recorded as ``timeout``, never as a human rejection.
    """

    type: Literal["timeout"] = "timeout"
    outcome: Literal["approve", "reject"] = "reject"
    message: str | None = None


class CancelDecision(_DecisionBase):
    """The request was withdrawn; the call does not run."""

    type: Literal["cancel"] = "cancel"
    message: str | None = None


Decision = Annotated[
    ApproveDecision
    | EditDecision
    | RejectDecision
    | RespondDecision
    | TimeoutDecision
    | CancelDecision,
    Discriminator("type"),
]
"""Every resume value loopgate_lc understands, discriminated by ``type``."""


class HumanResponse(BaseModel):
    """What ``request_approval()`` returns to a node: the person's answer, typed.

    Attributes:
        approved: Whether the answer lets the node go ahead.
        status: The request's final status (approved, rejected, answered, edited,
            timeout, cancelled).
        text: The person's free text (a reason, an input, feedback), if any.
        choice: The chosen option's label, for choice requests.
        data: Edited data, for an ``edit`` answer.
        decided_by: Who answered, when known.
    """

    model_config = ConfigDict(defer_build=True)

    approved: bool
    status: Status
    text: str | None = None
    choice: str | None = None
    data: dict[str, Any] | None = None
    decided_by: str | None = None
    decision: dict[str, Any] = Field(default_factory=dict)


# --- what a decision means ----------------------------------------------------------------


def decision_status(decision: dict[str, Any]) -> Status:
    """The final status a decision gives its request (one mapping for every channel)."""
    kind = decision.get("type")
    if kind == "approve":
        return Status.APPROVED
    if kind == "edit":
        return Status.EDITED
    if kind == "reject":
        return Status.REJECTED
    if kind == "respond":
        return Status.ANSWERED
    if kind == "timeout":
        return Status.TIMEOUT
    if kind == "cancel":
        return Status.CANCELLED
    raise ValueError(f"unknown decision type {kind!r}")


def decision_approves(decision: dict[str, Any], request: ApprovalRequest) -> bool:
    """Whether a decision lets the action go ahead.

    ``respond`` approves only for a choice whose option means approval (see
    :func:`option_approves`) and for input kinds (the answer is what was asked for);
    a ``respond`` to a tool approval answers in the tool's place, so nothing ran.
    """
    kind = decision.get("type")
    if kind in ("approve", "edit"):
        return True
    if kind == "timeout":
        return decision.get("outcome") == "approve"
    if kind == "respond":
        if request.options:
            label = decision.get("message")
            return any(o.label == label and o.approved for o in request.options)
        return request.type in (RequestKind.INPUT, RequestKind.FEEDBACK, RequestKind.ANNOTATION)
    return False


def human_response(
    decision: dict[str, Any], request: ApprovalRequest, *, status: Status | None = None,
    decided_by: str | None = None,
) -> HumanResponse:
    """The typed answer for a decision: what ``request_approval`` returns in a node and
    what ``Loopgate.request_interaction`` returns outside one."""
    kind = decision.get("type")
    text = decision.get("message") if kind in ("reject", "respond", "timeout", "cancel") \
        else None
    chose = bool(request.options) and kind == "respond"
    return HumanResponse(
        approved=decision_approves(decision, request) if decision else False,
        status=status or decision_status(decision),
        text=None if chose else text,
        choice=text if chose else None,
        data=dict(decision["edited_action"]["args"]) if kind == "edit" else None,
        decided_by=decided_by if decided_by is not None else decision.get("actor"),
        decision=decision,
    )
