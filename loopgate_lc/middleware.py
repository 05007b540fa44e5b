"""``ApprovalMiddleware``: the same policies as the guard, over every tool call of a
``langchain.agents.create_agent`` agent.

By default it gates inside ``wrap_tool_call``, so each gated call pauses in its own tool
task (one interrupt per call, as LangChain's ``per_call`` mode) and an approved body runs
exactly once even when sibling calls are still waiting. With
``interrupt_mode="batched"`` it pauses once per model turn in ``after_model`` with
LangChain's ``HITLRequest`` (``action_requests``, ``review_configs``) and resumes from
``{"decisions": [...]}`` by position, so tools built for LangChain's
``HumanInTheLoopMiddleware`` answer it unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from langchain.agents.middleware.types import AgentMiddleware
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command

from loopgate_lc._lru import LRU
from loopgate_lc.errors import ConfigurationError
from loopgate_lc.guard import (
    ConfidenceSpec,
    Gate,
    Outcome,
    RiskSpec,
    annotate_edit,
    outcome_of,
    visible_keys,
)
from loopgate_lc.interrupts import new_request_id, observer
from loopgate_lc.policy import ApprovalPolicy, PolicySet, RiskLevel
from loopgate_lc.schema import ALL_DECISIONS, DecisionType

__all__ = ["ApprovalMiddleware", "ToolSettings"]

ToolResult = ToolMessage | Command[Any]


@dataclass(frozen=True)
class ToolSettings:
    """Per-tool overrides for :class:`ApprovalMiddleware`; ``None`` keeps the default."""

    risk: RiskSpec | None = None
    confidence: float | Callable[[dict[str, Any]], float] | None = None
    allowed_decisions: Sequence[DecisionType] | None = None
    description: str | Callable[[str, dict[str, Any]], str] | None = None
    timeout: float | None = None
    metadata: Mapping[str, Any] | None = None
    when: Callable[[ToolCallRequest], bool] | None = None
    """LangChain's ``InterruptOnConfig.when``: False lets the call run without asking
    (no policy evaluation); it gets the ``ToolCallRequest`` (``tool=None`` in batched
    mode) and runs again on resume, so it must answer the same for the same call."""


def _position(state: Any, tool_call_id: str | None) -> int | None:
    """The call's index in the model message that made it: the order LangChain's
    batched decisions follow."""
    messages = state.get("messages") if isinstance(state, Mapping) else None
    for message in reversed(messages or []):
        if isinstance(message, AIMessage):
            ids = [c.get("id") for c in message.tool_calls]
            if tool_call_id in ids:
                return ids.index(tool_call_id)
    return None


class ApprovalMiddleware(AgentMiddleware):
    """Gate every tool call of an agent through loopgate_lc policies.

    Args:
        policies: A ``PolicySet``, a list of policies, or a ``Loopgate`` (its live set).
        risk: The default risk for tools without settings (fail closed: irreversible).
        confidence: The default confidence, a number or a function of the arguments.
        tools: Per-tool :class:`ToolSettings` (or dicts of the same fields).
        allowed_decisions: The decisions a person may give by default.
        timeout: Seconds a person has to answer by default.
        session_id: The Loopgate session whose approvers receive the requests.
        interrupt_mode: ``"per_call"`` (default): one interrupt per gated call, in its
            own tool task. ``"batched"``: one LangChain ``HITLRequest`` interrupt per
            model turn, resumed with ``{"decisions": [...]}`` by position.
    """

    def __init__(
        self,
        policies: PolicySet | Iterable[ApprovalPolicy] | Any,
        *,
        risk: RiskSpec = RiskLevel.IRREVERSIBLE,
        confidence: ConfidenceSpec = 0.0,
        tools: Mapping[str, ToolSettings | Mapping[str, Any]] | None = None,
        allowed_decisions: Sequence[DecisionType] = ALL_DECISIONS,
        description: str | Callable[[str, dict[str, Any]], str] | None = None,
        timeout: float | None = None,
        session_id: str | None = None,
        interrupt_mode: Literal["per_call", "batched"] = "per_call",
    ) -> None:
        super().__init__()
        if interrupt_mode not in ("per_call", "batched"):
            raise ConfigurationError(
                f"interrupt_mode must be 'per_call' or 'batched', got {interrupt_mode!r}")
        self.interrupt_mode = interrupt_mode
        from loopgate_lc.guard import _policy_set

        if confidence == "self_reported":
            raise ConfigurationError(
                "self-reported confidence changes the tool's schema; wrap the tool with "
                "guard(tool, confidence='self_reported') instead"
            )
        self.policies = _policy_set(policies)
        self._defaults = Gate(
            policies=self.policies,
            risk=risk,
            confidence=confidence,
            allowed_decisions=tuple(allowed_decisions),
            description=description,
            timeout=timeout,
            session_id=session_id,
        )
        self._settings = {
            name: s if isinstance(s, ToolSettings) else ToolSettings(**s)
            for name, s in (tools or {}).items()
        }
        # per tool name a model may call: bounded, the names are not ours to choose
        self._gates: LRU[str, Gate] = LRU(4096)

    def _gate(self, name: str) -> Gate:
        return self._gates.get_or_make(name, lambda: self._new_gate(name))

    def _new_gate(self, name: str) -> Gate:
        base, own = self._defaults, self._settings.get(name, ToolSettings())
        confidence: ConfidenceSpec = base.confidence if own.confidence is None \
            else own.confidence
        return Gate(
            policies=self.policies,
            risk=base.risk if own.risk is None else own.risk,
            confidence=confidence,
            allowed_decisions=tuple(own.allowed_decisions or base.allowed_decisions),
            description=own.description or base.description,
            timeout=base.timeout if own.timeout is None else own.timeout,
            metadata=dict(own.metadata or {}),
            session_id=base.session_id,
        )

    def _asks(self, request: ToolCallRequest) -> bool:
        """Whether this call goes to the policies at all (a tool's ``when``)."""
        own = self._settings.get(request.tool_call["name"])
        return own is None or own.when is None or own.when(request)

    def _check(self, request: ToolCallRequest) -> tuple[Outcome, ToolCallRequest]:
        call = request.tool_call
        if self.interrupt_mode == "batched" or not self._asks(request):
            # batched: after_model already asked and rewrote this turn's calls
            return Outcome(run_args=dict(call["args"])), request
        schema = request.tool.tool_call_schema if request.tool is not None else None
        keys = visible_keys(schema)
        args = dict(call["args"])
        shown = args if keys is None else {k: v for k, v in args.items() if k in keys}
        outcome = self._gate(call["name"]).check(
            call["name"], shown, tool_call_id=call.get("id"), args_schema=schema,
            position=_position(request.state, call.get("id")),
        )
        if outcome.run_args is None:
            return outcome, request
        hidden = {k: v for k, v in args.items() if k not in shown}
        new_call = call.copy()
        new_call["args"] = {**outcome.run_args, **hidden}
        return outcome, request.override(tool_call=new_call)

    @staticmethod
    def _answer(outcome: Outcome, request: ToolCallRequest) -> ToolMessage:
        call = request.tool_call
        return ToolMessage(
            content=outcome.answer or "",
            name=call["name"],
            tool_call_id=call.get("id") or "",
            status=outcome.answer_status,
        )

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolResult],
    ) -> ToolResult:
        """Evaluate, pause when a person must decide, then run (or answer) the call."""
        outcome, to_run = self._check(request)
        if outcome.run_args is None:
            return self._answer(outcome, request)
        result = handler(to_run)
        if outcome.edited:
            return annotate_edit(result, outcome.run_args, request.tool_call.get("id"))  # type: ignore[no-any-return]
        return result

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolResult]],
    ) -> ToolResult:
        """Async twin of :meth:`wrap_tool_call`."""
        outcome, to_run = self._check(request)
        if outcome.run_args is None:
            return self._answer(outcome, request)
        result = await handler(to_run)
        if outcome.edited:
            return annotate_edit(result, outcome.run_args, request.tool_call.get("id"))  # type: ignore[no-any-return]
        return result

    # -- batched mode: one HITLRequest per model turn ---------------------------------------

    def after_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        """In batched mode, ask about every gated call of the last model turn at once."""
        if self.interrupt_mode != "batched":
            return None
        last = next((m for m in reversed(state.get("messages") or [])
                     if isinstance(m, AIMessage)), None)
        if last is None or not last.tool_calls:
            return None
        asked: list[tuple[int, Any, Any]] = []  # (index, verdict, request)
        autos = []
        for index, call in enumerate(last.tool_calls):
            probe = ToolCallRequest(tool_call=call, tool=None, state=state,
                                    runtime=cast(Any, None))
            if not self._asks(probe):
                continue
            gate = self._gate(call["name"])
            verdict, request = gate.evaluate(call["name"], dict(call["args"]),
                                             tool_call_id=call.get("id"), audit=False)
            if request is None:
                if verdict is not None:
                    args = dict(call["args"])
                    score = gate._confidence_of(args, None)
                    autos.append((call, verdict, gate._risk_of(args),
                                  None if math.isnan(score) else score))
                continue
            asked.append((index, verdict, request))
        decisions: list[dict[str, Any]] = []
        if asked:
            requests = [r for _, _, r in asked]
            value = {
                "action_requests": [
                    {"name": r.name, "args": r.args, "description": r.description,
                     "tool_call_id": r.tool_call_id, "risk_level": r.risk_level,
                     "confidence": r.confidence, "policy": r.policy, "reason": r.reason}
                    for r in requests],
                "review_configs": [{"action_name": r.name,
                                    "allowed_decisions": list(r.allowed_decisions)}
                                   for r in requests],
                "request_id": new_request_id(
                    "batch:" + ",".join(str(r.tool_call_id) for r in requests)),
                "session_id": self._defaults.session_id,
                "timeout_seconds": min((r.timeout_seconds for r in requests
                                        if r.timeout_seconds is not None), default=None),
                "approvers": sorted({a for r in requests for a in r.approvers}),
                # one answer covers every call, so it takes the strictest call's votes
                "quorum": max(r.quorum for r in requests),
                "rejections_needed": min(r.rejections_needed for r in requests),
            }
            from langgraph.types import interrupt

            answer = interrupt(value)
            decisions = list(answer["decisions"]) if isinstance(answer, Mapping) else []
            if len(decisions) != len(asked):
                raise ValueError(
                    f"Number of human decisions ({len(decisions)}) does not match number "
                    f"of hanging tool calls ({len(asked)}).")
        watcher = observer()
        if watcher is not None:  # once: the node got past its pause
            for call, verdict, risk, shown in autos:
                watcher.auto_approved(call["name"], dict(call["args"]), verdict,
                                      call.get("id"), risk=risk, confidence=shown)
        if not asked:
            return None
        calls = list(last.tool_calls)
        answers: list[ToolMessage] = []
        for (index, verdict, request), decision in zip(asked, decisions, strict=True):
            allowed = request.allowed_decisions
            if decision.get("type") not in (*allowed, "timeout", "cancel"):
                raise ValueError(f"decision {decision.get('type')!r} is not allowed for "
                                 f"tool {request.name!r}; allowed: {', '.join(allowed)}")
            call = calls[index]
            outcome = outcome_of(call["name"], call.get("id"), dict(call["args"]),
                                 dict(decision), verdict)
            if outcome.run_args is not None:
                calls[index] = {**call, "args": outcome.run_args}
            else:
                answers.append(ToolMessage(content=outcome.answer or "", name=call["name"],
                                           tool_call_id=call.get("id") or "",
                                           status=outcome.answer_status))
        revised = last.model_copy(update={"tool_calls": calls})
        return {"messages": [revised, *answers]}

    async def aafter_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        """Async twin of :meth:`after_model`."""
        return self.after_model(state, runtime)
