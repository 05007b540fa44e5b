"""The tool guard: a LangChain tool in, a gated tool out.

A guarded call is evaluated against the policies first (pure, cheap). Auto-approved calls
run the wrapped tool directly. Every other call pauses the run with ``interrupt()``
BEFORE the tool body, and the person's decision picks what happens: run it, run it with
edited arguments, tell the model it was rejected, or answer in the tool's place.

The gate itself (:class:`Gate`) knows nothing about ``BaseTool``; the agent middleware
uses the same gate on ``ToolCallRequest`` objects, so both paths carry the same payload
and accept the same decisions.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from langchain_core.messages import ToolCall, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.types import Command
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, create_model

from loopgate_lc._lru import LRU
from loopgate_lc.errors import ConfigurationError
from loopgate_lc.interrupts import ask, decision_schema, new_request_id, observer
from loopgate_lc.policy import ApprovalPolicy, PolicySet, RiskLevel, Verdict
from loopgate_lc.schema import (
    ALL_DECISIONS,
    ApprovalRequest,
    DecisionType,
    RequestKind,
    ShadowVerdict,
)

__all__ = [
    "CONFIDENCE_FIELD",
    "EDIT_NOTICE",
    "ConfidenceSpec",
    "Gate",
    "GuardedTool",
    "RiskSpec",
    "guard",
    "guard_tools",
]

CONFIDENCE_FIELD = "confidence"
"""The argument a model fills when a guard asks for ``confidence="self_reported"``."""

EDIT_NOTICE = (
    "Note: a person changed this tool call before it ran; it ran with the arguments "
    "below, not the ones you sent. This was intentional. Do not re-issue your original call."
)

_CONFIDENCE_DESCRIPTION = (
    "How sure you are, from 0 to 1, that this exact call is what the user wants. "
    "Calls below the approval threshold are shown to a person before they run; "
    "leaving it out counts as 0."
)

RiskSpec = RiskLevel | str | Callable[[dict[str, Any]], RiskLevel | str]
"""A fixed risk level, or a function of the call's arguments returning one."""

ConfidenceSpec = float | Callable[[dict[str, Any]], float] | Literal["self_reported"]
"""A fixed confidence, a function of the call's arguments, or ``"self_reported"``."""

class HasPolicies(Protocol):
    """Anything holding a live policy set, such as a ``Loopgate``."""

    @property
    def policies(self) -> PolicySet: ...


PoliciesSpec = PolicySet | Iterable[ApprovalPolicy] | HasPolicies | None


def _policy_set(policies: PoliciesSpec) -> PolicySet:
    if policies is None:
        return PolicySet()
    if isinstance(policies, PolicySet):
        return policies
    own = getattr(policies, "policies", None)  # a Loopgate: share its live set
    if isinstance(own, PolicySet):
        return own
    return PolicySet(policies)  # type: ignore[arg-type]


def _check_allowed(allowed: Sequence[str]) -> tuple[DecisionType, ...]:
    unknown = [d for d in allowed if d not in ALL_DECISIONS]
    if unknown or not allowed:
        raise ConfigurationError(
            f"allowed_decisions must be a non-empty subset of {list(ALL_DECISIONS)}, "
            f"got {list(allowed)!r}"
        )
    return tuple(dict.fromkeys(allowed))  # type: ignore[arg-type]


@dataclass
class Outcome:
    """What the gate decided for one call.

    Exactly one of ``run_args`` (run the tool with these model-visible arguments) and
    ``answer`` (return this message instead) is set.
    """

    run_args: dict[str, Any] | None = None
    edited: bool = False
    answer: str | None = None
    answer_status: Literal["success", "error"] = "error"
    verdict: Verdict | None = None


@dataclass
class Gate:
    """Policy evaluation plus the pause, for one tool (or one middleware setting)."""

    policies: PolicySet
    risk: RiskSpec = RiskLevel.IRREVERSIBLE
    confidence: ConfidenceSpec = 0.0
    allowed_decisions: tuple[DecisionType, ...] = ALL_DECISIONS
    description: str | Callable[[str, dict[str, Any]], str] | None = None
    timeout: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    session_id: str | None = None
    when: Callable[[dict[str, Any]], bool] | None = None
    # per tool name: bounded, the names are a model's to choose
    _schemas: LRU[str, object] = field(default_factory=LRU, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.allowed_decisions = _check_allowed(self.allowed_decisions)
        if isinstance(self.risk, str):
            self.risk = RiskLevel.parse(self.risk)
        if isinstance(self.confidence, str) and self.confidence != "self_reported":
            raise ConfigurationError(
                f"confidence must be a number, a callable or 'self_reported', "
                f"got {self.confidence!r}"
            )

    @property
    def self_reported(self) -> bool:
        return self.confidence == "self_reported"

    def _risk_of(self, args: dict[str, Any]) -> RiskLevel:
        spec = self.risk
        return RiskLevel.parse(spec(args) if callable(spec) else spec)

    def _confidence_of(self, args: dict[str, Any], reported: Any) -> float:
        spec = self.confidence
        if spec == "self_reported":
            value: Any = 0.0 if reported is None else reported
        elif callable(spec):
            value = spec(args)
        else:
            value = spec
        if isinstance(value, bool) or not isinstance(value, int | float):
            return math.nan  # not a number: evaluate() fails closed
        return float(value)

    def _describe(self, name: str, args: dict[str, Any]) -> str:
        if callable(self.description):
            return self.description(name, args)
        if self.description:
            return self.description
        shown = json.dumps(args, default=str, ensure_ascii=False, sort_keys=True)
        return f"Tool execution requires approval\n\nTool: {name}\nArgs: {shown}"

    def schema_for(self, name: str, args_schema: object) -> object:
        """The decision schema for this tool, built once."""
        return self._schemas.get_or_make(name, lambda: decision_schema(
            self.allowed_decisions, name=name, args_schema=args_schema))

    def evaluate(
        self,
        name: str,
        args: dict[str, Any],
        *,
        tool_call_id: str | None,
        reported_confidence: Any = None,
        audit: bool = True,
        position: int | None = None,
    ) -> tuple[Verdict | None, ApprovalRequest | None]:
        """The verdict for one call, and the request to put to a person (None when the
        call may run: ``when`` said not to ask, or a policy auto-approved it).

        ``audit=False`` leaves reporting an auto-approval to the caller (a node that
        pauses after evaluating runs again on resume, and must audit once). ``position``
        is the call's index in the model's message, when known: the order of a batch."""
        if self.when is not None and not self.when(args):
            return None, None
        confidence = self._confidence_of(args, reported_confidence)
        risk = self._risk_of(args)
        verdict = self.policies.evaluate(name, confidence=confidence, risk=risk)
        shown_confidence = None if math.isnan(confidence) else confidence
        if verdict.auto_approved:
            watcher = observer() if audit else None
            if watcher is not None:  # only runs driven by a Loopgate pay for the audit
                watcher.auto_approved(name, args, verdict, tool_call_id,
                                      risk=risk, confidence=shown_confidence)
            return verdict, None
        shadow = verdict.shadow
        return verdict, ApprovalRequest(
            type=RequestKind.TOOL_APPROVAL,
            request_id=new_request_id(f"tool:{tool_call_id or name}"),
            tool_call_id=tool_call_id,
            name=name,
            args=args,
            description=self._describe(name, args),
            risk_level=risk,
            confidence=shown_confidence,
            policy=verdict.policy,
            reason=verdict.reason,
            allowed_decisions=list(self.allowed_decisions),
            metadata=dict(self.metadata),
            approvers=list(verdict.approvers),
            require_explicit=verdict.explicit,
            quorum=verdict.quorum,
            rejections_needed=verdict.rejections_needed,
            session_id=self.session_id,
            timeout_seconds=self.timeout,
            shadow=None if shadow is None else ShadowVerdict(
                policy=shadow.policy or "", auto_approved=shadow.auto_approved,
                reason=shadow.reason),
            **({"position": position} if position is not None else {}),
        )

    def check(
        self,
        name: str,
        args: dict[str, Any],
        *,
        tool_call_id: str | None,
        args_schema: object,
        reported_confidence: Any = None,
        position: int | None = None,
    ) -> Outcome:
        """Evaluate one call and, when a person must decide, pause for them.

        ``args`` are the model-visible arguments only (no injected state, no confidence).
        """
        verdict, request = self.evaluate(name, args, tool_call_id=tool_call_id,
                                         reported_confidence=reported_confidence,
                                         position=position)
        if request is None:
            return Outcome(run_args=args, verdict=verdict)
        assert verdict is not None
        decision = ask(request, self.schema_for(name, args_schema))
        return outcome_of(name, tool_call_id, args, decision, verdict)


def outcome_of(
    name: str,
    tool_call_id: str | None,
    args: dict[str, Any],
    decision: dict[str, Any],
    verdict: Verdict | None,
) -> Outcome:
    """What a decision means for one call: run it (maybe with edited arguments), or
    answer the model in its place."""
    kind = decision["type"]
    if kind == "approve" or (kind == "timeout" and decision.get("outcome") == "approve"):
        return Outcome(run_args=args, verdict=verdict)
    if kind == "edit":
        return Outcome(run_args=dict(decision["edited_action"]["args"]), edited=True,
                       verdict=verdict)
    if kind == "respond":
        return Outcome(answer=str(decision["message"]), answer_status="success", verdict=verdict)
    ref = f"`{name}`" + (f" (call {tool_call_id})" if tool_call_id else "")
    if kind == "timeout":
        text = (
            f"The approval request for {ref} timed out before anyone answered, so the tool "
            "was not run. Do not retry it unless the user asks."
        )
    elif kind == "cancel":
        text = f"The approval request for {ref} was cancelled, so the tool was not run."
    elif reason := decision.get("message"):
        text = f"A person rejected the call to {ref} with this reason: {reason}"
    else:
        text = (
            f"A person rejected the call to {ref}. The tool was not run. Do not retry this "
            "call unless the user explicitly asks for it."
        )
    return Outcome(answer=text, verdict=verdict)


def edit_notice(args: dict[str, Any]) -> str:
    return f"{EDIT_NOTICE}\nExecuted with: {json.dumps(args, default=str, ensure_ascii=False)}"


def annotate_edit(result: Any, args: dict[str, Any], tool_call_id: str | None) -> Any:
    """Prepend the edit note to a tool result, whatever shape the tool returned."""
    notice = edit_notice(args)
    if isinstance(result, ToolMessage):
        if isinstance(result.content, str):
            content: Any = f"{notice}\n\n{result.content}" if result.content else notice
        else:
            content = [{"type": "text", "text": notice}, *result.content]
        return result.model_copy(update={"content": content})
    if isinstance(result, Command) and isinstance(result.update, dict):
        messages = result.update.get("messages")
        if isinstance(messages, list):
            patched = [
                annotate_edit(m, args, tool_call_id)
                if isinstance(m, ToolMessage) and m.tool_call_id == tool_call_id
                else m
                for m in messages
            ]
            return Command(
                graph=result.graph,
                update={**result.update, "messages": patched},
                resume=result.resume,
                goto=result.goto,
            )
        return result
    if isinstance(result, str):
        return f"{notice}\n\n{result}"
    return result


def visible_keys(schema: object) -> set[str] | None:
    """The argument names a model sees (None: cannot tell, treat every key as visible)."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        keys = set(schema.model_fields)
        keys.update(f.alias for f in schema.model_fields.values() if f.alias)
        return keys
    if isinstance(schema, dict) and isinstance(schema.get("properties"), dict):
        return set(schema["properties"])
    return None


def _with_confidence(schema: Any, name: str) -> Any:
    """The model-facing schema plus an optional ``confidence`` number."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        if CONFIDENCE_FIELD in schema.model_fields:
            raise ConfigurationError(
                f"tool {name!r} already has an argument named {CONFIDENCE_FIELD!r}; "
                "self-reported confidence needs that name"
            )
        # A fresh model, not a subclass: LangChain caches the JSON schema on the class.
        fields: dict[str, Any] = {
            key: (info.annotation, info) for key, info in schema.model_fields.items()
        }
        fields[CONFIDENCE_FIELD] = (
            float | None,
            Field(default=None, ge=0, le=1, description=_CONFIDENCE_DESCRIPTION),
        )
        return create_model(schema.__name__, __doc__=schema.__doc__, **fields)
    if isinstance(schema, dict):
        extended = copy.deepcopy(schema)
        props = extended.setdefault("properties", {})
        if CONFIDENCE_FIELD in props:
            raise ConfigurationError(
                f"tool {name!r} already has an argument named {CONFIDENCE_FIELD!r}"
            )
        props[CONFIDENCE_FIELD] = {
            "type": "number", "minimum": 0, "maximum": 1, "description": _CONFIDENCE_DESCRIPTION,
        }
        return extended
    raise ConfigurationError(f"tool {name!r} has no argument schema to add confidence to")


def _split_input(value: Any) -> tuple[dict[str, Any], str | None, bool]:
    """``(args, tool_call_id, was_tool_call)`` from whatever a tool was invoked with."""
    if isinstance(value, dict) and value.get("type") == "tool_call" and "args" in value:
        return dict(value["args"]), value.get("id"), True
    if isinstance(value, dict):
        return dict(value), None, False
    return {"input": value}, None, False


class GuardedTool(BaseTool):
    """A tool whose calls pass a :class:`Gate` first.

    It keeps the wrapped tool's name, description, model-facing schema, injected
    arguments and return semantics: the wrapped tool does the running, with its own
    callbacks and ``ToolMessage`` formatting.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: BaseTool
    gate: Gate
    _tool_schema: Any = PrivateAttr(default=None)
    _visible: set[str] | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        schema = self.inner.tool_call_schema
        self._visible = visible_keys(schema)
        self._tool_schema = _with_confidence(schema, self.name) if self.gate.self_reported else (
            schema
        )

    # the schema the model sees, and what ToolNode reads to inject state/runtime ------------

    @property
    def tool_call_schema(self) -> Any:
        return self._tool_schema

    def get_input_schema(self, config: RunnableConfig | None = None) -> Any:
        return self.inner.get_input_schema(config)

    @property
    def func(self) -> Any:
        return getattr(self.inner, "func", None)

    @property
    def coroutine(self) -> Any:
        return getattr(self.inner, "coroutine", None)

    @property
    def args(self) -> dict[str, Any]:
        schema = self._tool_schema
        if isinstance(schema, dict):
            return dict(schema.get("properties", {}))
        return dict(schema.model_json_schema().get("properties", {}))

    # running ---------------------------------------------------------------------------

    def _prepare(self, value: Any) -> tuple[Any, Outcome, str | None]:
        args, tool_call_id, is_call = _split_input(value)
        reported = args.pop(CONFIDENCE_FIELD, None) if self.gate.self_reported else None
        visible = self._visible
        shown = args if visible is None else {k: v for k, v in args.items() if k in visible}
        hidden = {k: v for k, v in args.items() if k not in shown}
        outcome = self.gate.check(
            self.name,
            shown,
            tool_call_id=tool_call_id,
            args_schema=self.inner.tool_call_schema,
            reported_confidence=reported,
        )
        run_input: Any = None
        if outcome.run_args is not None:
            merged = {**outcome.run_args, **hidden}
            if is_call:
                run_input = {**value, "args": merged}
            elif isinstance(value, dict) or outcome.edited:
                run_input = merged
            else:
                run_input = value
        return run_input, outcome, tool_call_id

    def _answer(self, outcome: Outcome, tool_call_id: str | None) -> Any:
        if tool_call_id is None:
            return outcome.answer
        return ToolMessage(
            content=outcome.answer or "",
            name=self.name,
            tool_call_id=tool_call_id,
            status=outcome.answer_status,
        )

    def invoke(
        self, input: str | dict[str, Any] | ToolCall, config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> Any:
        run_input, outcome, tool_call_id = self._prepare(input)
        if run_input is None:
            return self._answer(outcome, tool_call_id)
        result = self.inner.invoke(run_input, config, **kwargs)
        return annotate_edit(result, outcome.run_args or {}, tool_call_id) if outcome.edited \
            else result

    async def ainvoke(
        self, input: str | dict[str, Any] | ToolCall, config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> Any:
        run_input, outcome, tool_call_id = self._prepare(input)
        if run_input is None:
            return self._answer(outcome, tool_call_id)
        result = await self.inner.ainvoke(run_input, config, **kwargs)
        return annotate_edit(result, outcome.run_args or {}, tool_call_id) if outcome.edited \
            else result

    def _run(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - invoke overrides
        raise NotImplementedError("GuardedTool runs through invoke()/ainvoke()")


def guard(
    tool: BaseTool,
    *,
    policies: PoliciesSpec = None,
    risk: RiskSpec = RiskLevel.IRREVERSIBLE,
    confidence: ConfidenceSpec = 0.0,
    allowed_decisions: Sequence[DecisionType] = ALL_DECISIONS,
    description: str | Callable[[str, dict[str, Any]], str] | None = None,
    timeout: float | None = None,
    metadata: Mapping[str, Any] | None = None,
    session_id: str | None = None,
    when: Callable[[dict[str, Any]], bool] | None = None,
) -> GuardedTool:
    """Wrap a LangChain tool so that calls the policies do not auto-approve pause for a
    person.

    Defaults fail closed: an unstated risk is ``IRREVERSIBLE``, an unstated confidence
    is 0, and a tool no policy matches always asks.

    Args:
        tool: Any ``BaseTool`` (``@tool`` functions, ``StructuredTool``, subclasses,
            async-only tools, tools with injected arguments).
        policies: A ``PolicySet``, a list of policies, or a ``Loopgate`` (its live set).
        risk: A ``RiskLevel``, or a function of the call's arguments returning one.
        confidence: A number, a function of the arguments, or ``"self_reported"``: the
            model fills an optional ``confidence`` argument, stripped before the tool runs.
        allowed_decisions: Which of approve, edit, reject and respond a person may give.
        description: The text shown to the person (a string, or a function of the tool
            name and arguments).
        timeout: Seconds a person has to answer; the gateway's default applies if None.
        metadata: Extra context shown to the person and kept in the audit.
        session_id: The Loopgate session whose approvers receive this tool's requests.
        when: A predicate on the call's arguments, like LangChain's
            ``InterruptOnConfig.when``: False lets the call run without asking (and
            without policy evaluation); True (or no predicate) applies the policies.
            It runs again on resume, so it must answer the same for the same call.

    Raises:
        ConfigurationError: On an unknown decision type or a ``confidence`` name clash.
    """
    if isinstance(tool, GuardedTool):
        raise ConfigurationError(f"tool {tool.name!r} is already guarded")
    if not isinstance(tool, BaseTool):
        raise ConfigurationError(f"guard() takes a LangChain BaseTool, got {type(tool).__name__}")
    gate = Gate(
        policies=_policy_set(policies),
        risk=risk,
        confidence=confidence,
        allowed_decisions=tuple(allowed_decisions),
        description=description,
        timeout=timeout,
        metadata=dict(metadata or {}),
        session_id=session_id,
        when=when,
    )
    if gate.self_reported:  # raise the clash here, not wrapped in pydantic's error
        _with_confidence(tool.tool_call_schema, tool.name)
    return GuardedTool(
        name=tool.name,
        description=tool.description,
        args_schema=tool.args_schema,
        return_direct=tool.return_direct,
        response_format=tool.response_format,
        tags=tool.tags,
        metadata=tool.metadata,
        inner=tool,
        gate=gate,
    )


def guard_tools(tools: Iterable[BaseTool], **kwargs: Any) -> list[GuardedTool]:
    """:func:`guard` each tool with the same settings (``risk`` and ``confidence`` may be
    mappings from tool name to setting, for per-tool values)."""
    risk = kwargs.pop("risk", RiskLevel.IRREVERSIBLE)
    confidence = kwargs.pop("confidence", 0.0)
    guarded = []
    for tool in tools:
        tool_risk = risk.get(tool.name, RiskLevel.IRREVERSIBLE) if isinstance(risk, Mapping) \
            else risk
        tool_conf = confidence.get(tool.name, 0.0) if isinstance(confidence, Mapping) \
            else confidence
        guarded.append(guard(tool, risk=tool_risk, confidence=tool_conf, **kwargs))
    return guarded
