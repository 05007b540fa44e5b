"""Replay recorded tool calls against a policy file before switching it on.

The audit log already holds, for every guarded call a gateway saw, the tool, its risk and
confidence, and what happened: run automatically under a policy, or asked and then decided
by someone. :func:`simulate` re-evaluates each of those calls under a new
:class:`~loopgate_lc.policy.PolicySet`, so a team can see how many calls would be asked or
automatic, which policy would decide, and above all which calls a person rejected that the
new policies would have let run unseen (those come first, because they are what a looser
policy costs).

Pure on purpose: it reads audit events and evaluates policies, nothing else, so a notebook
can call it on any list of events (``gateway.audit()``) and the CLI on a whole store.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from loopgate_lc.errors import InvalidPolicy
from loopgate_lc.policy import PolicySet, RiskLevel, Verdict
from loopgate_lc.stores.base import AuditEvent

__all__ = ["SimulatedCall", "Simulation", "ToolSummary", "simulate"]

Route = Literal["auto", "ask"]



@dataclass(frozen=True)
class SimulatedCall:
    """One recorded call and what the new policies would do with it.

    Attributes:
        tool: The tool's name.
        risk_level: The call's risk as recorded.
        confidence: The call's confidence as recorded (None: it had none, which never
            auto-approves).
        before: ``"auto"`` if it ran without a person, ``"ask"`` if one was asked.
        outcome: ``"auto_approved"``, or the request's final status (``"approved"``,
            ``"rejected"``, ``"edited"``, ``"answered"``, ``"timeout"``, ``"cancelled"``),
            or ``"pending"`` while undecided.
        decided_by: Who decided, for asked calls.
        verdict: The new policies' verdict.
        request_id: The request, for asked calls.
        at: When the call was recorded.
    """

    tool: str
    risk_level: RiskLevel
    confidence: float | None
    before: Route
    outcome: str
    decided_by: str | None
    verdict: Verdict
    request_id: str | None
    at: datetime

    @property
    def after(self) -> Route:
        """``"auto"`` or ``"ask"`` under the new policies."""
        return "auto" if self.verdict.auto_approved else "ask"

    @property
    def rejection_would_run(self) -> bool:
        """A person rejected this call, and the new policies would run it unseen."""
        return self.outcome == "rejected" and self.after == "auto"


@dataclass(frozen=True)
class ToolSummary:
    """The simulation's counts for one tool."""

    tool: str
    calls: int
    asked_before: int
    auto_before: int
    would_ask: int
    would_auto: int
    rejections_would_run: int
    policies: dict[str, int] = field(default_factory=dict)
    """The deciding policy under the new set (``"(none)"``: no policy matched) -> calls."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool, "calls": self.calls, "asked_before": self.asked_before,
            "auto_before": self.auto_before, "would_ask": self.would_ask,
            "would_auto": self.would_auto, "rejections_would_run": self.rejections_would_run,
            "policies": dict(self.policies),
        }


@dataclass(frozen=True)
class Simulation:
    """The result of :func:`simulate`.

    Attributes:
        calls: Every replayed call, oldest first.
        tools: One summary per tool: tools with past rejections that would now run first
            (most first), then by name.
        skipped: Recorded calls that could not be replayed (older audit rows that lack the
            call's risk level).
    """

    calls: tuple[SimulatedCall, ...]
    tools: tuple[ToolSummary, ...]
    skipped: int = 0

    @property
    def flagged(self) -> list[SimulatedCall]:
        """Past human rejections the new policies would have run automatically."""
        return [call for call in self.calls if call.rejection_would_run]

    def rows(self) -> list[dict[str, Any]]:
        """The per-tool table as plain dicts (``pandas.DataFrame(sim.rows())``)."""
        return [summary.as_dict() for summary in self.tools]

    def table(self) -> str:
        """The per-tool table as aligned text, with the flagged rejections listed first."""
        lines: list[str] = []
        flagged = self.flagged
        if flagged:
            lines.append(f"!! {len(flagged)} call(s) a person rejected would run automatically:")
            for call in flagged:
                lines.append(
                    f"!!   {call.at.isoformat(timespec='seconds')}  {call.tool}  "
                    f"request={call.request_id}  rejected by {call.decided_by or '-'}  "
                    f"-> policy {call.verdict.policy!r}"
                )
            lines.append("")
        header = ("tool", "calls", "asked", "auto", "would ask", "would auto",
                  "rejected->auto", "deciding policy")
        body = [
            (s.tool, str(s.calls), str(s.asked_before), str(s.auto_before), str(s.would_ask),
             str(s.would_auto), str(s.rejections_would_run),
             ", ".join(f"{name} ({n})" for name, n in sorted(s.policies.items())))
            for s in self.tools
        ]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        for row in [header, *body]:
            lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if not body:
            lines.append("(no recorded tool calls to replay)")
        if self.skipped:
            lines.append(f"({self.skipped} recorded call(s) lack a risk level and were skipped)")
        return "\n".join(lines)


def simulate(events: Iterable[AuditEvent], policies: PolicySet) -> Simulation:
    """Replay the tool calls recorded in ``events`` against ``policies``.

    A call is either an ``auto_approved`` event or a ``requested`` event of a tool-approval
    request (whose ``decided:*`` event, if any, says who decided what). Events of other
    requests (questions filed from nodes or the HTTP API) are not tool calls and are left
    out.

    Raises:
        InvalidPolicy: ``policies`` is not a :class:`PolicySet`.
    """
    if not isinstance(policies, PolicySet):
        raise InvalidPolicy(f"expected a PolicySet, got {type(policies).__name__}")
    recorded: list[tuple[AuditEvent, Route]] = []
    outcomes: dict[str, tuple[str, str | None]] = {}
    for event in events:
        if event.event == "auto_approved":
            recorded.append((event, "auto"))
        elif event.event == "requested" and event.details.get("kind") == "tool_approval":
            recorded.append((event, "ask"))
        elif event.event.startswith("decided:") and event.request_id:
            outcomes[event.request_id] = (event.event.partition(":")[2], event.actor)
        elif event.event == "vetoed" and event.request_id:
            outcomes[event.request_id] = ("vetoed", event.actor)
    calls: list[SimulatedCall] = []
    skipped = 0
    for event, before in recorded:
        details = event.details
        tool = details.get("tool")
        risk = details.get("risk_level")
        if not isinstance(tool, str) or risk is None:
            skipped += 1
            continue
        try:
            level = RiskLevel.parse(risk)
        except InvalidPolicy:
            skipped += 1
            continue
        confidence = _confidence(details.get("confidence"))
        if before == "auto":
            outcome, decided_by = "auto_approved", None
        else:
            outcome, decided_by = outcomes.get(event.request_id or "", ("pending", None))
        verdict = policies.evaluate(
            tool, confidence=math.nan if confidence is None else confidence, risk=level)
        calls.append(SimulatedCall(
            tool=tool, risk_level=level, confidence=confidence, before=before,
            outcome=outcome, decided_by=decided_by, verdict=verdict,
            request_id=event.request_id, at=event.at))
    return Simulation(calls=tuple(calls), tools=_summaries(calls), skipped=skipped)


def _confidence(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _summaries(calls: list[SimulatedCall]) -> tuple[ToolSummary, ...]:
    by_tool: dict[str, list[SimulatedCall]] = {}
    for call in calls:
        by_tool.setdefault(call.tool, []).append(call)
    summaries = []
    for tool, group in by_tool.items():
        policies = Counter(call.verdict.policy or "(none)" for call in group)
        summaries.append(ToolSummary(
            tool=tool,
            calls=len(group),
            asked_before=sum(call.before == "ask" for call in group),
            auto_before=sum(call.before == "auto" for call in group),
            would_ask=sum(call.after == "ask" for call in group),
            would_auto=sum(call.after == "auto" for call in group),
            rejections_would_run=sum(call.rejection_would_run for call in group),
            policies=dict(policies),
        ))
    summaries.sort(key=lambda s: (-s.rejections_would_run, s.tool))
    return tuple(summaries)
