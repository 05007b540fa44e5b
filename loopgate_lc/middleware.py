"""``ApprovalMiddleware``: the same policies as the guard, over every tool call of a
``langchain.agents.create_agent`` agent.

It gates inside ``wrap_tool_call``, so each gated call pauses in its own tool task (one
interrupt per call, as LangChain's ``per_call`` mode) and an approved body runs exactly
once even when sibling calls are still waiting.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain.agents.middleware.types import AgentMiddleware
from langchain_core.messages import ToolMessage
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
    visible_keys,
)
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
    ) -> None:
        super().__init__()
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

    def _check(self, request: ToolCallRequest) -> tuple[Outcome, ToolCallRequest]:
        call = request.tool_call
        schema = request.tool.tool_call_schema if request.tool is not None else None
        keys = visible_keys(schema)
        args = dict(call["args"])
        shown = args if keys is None else {k: v for k, v in args.items() if k in keys}
        outcome = self._gate(call["name"]).check(
            call["name"], shown, tool_call_id=call.get("id"), args_schema=schema
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
