"""1. What an auto-approved gate costs an agent run.

The same ``create_agent`` run (a scripted model, so no network and no model time) with
N tool calls, four ways: the tools as they are (the anchor), each tool wrapped by
``guard()`` under a policy that auto-approves it, the tools under loopgate_lc's
``ApprovalMiddleware`` with the same policy, and under LangChain's
``HumanInTheLoopMiddleware`` with every tool ungated. A fifth row drives the guarded
agent through ``Loopgate.run``, where each auto-approval is also written to the audit.

Two shapes: N calls in one model turn (run in parallel by the tool node) and N turns
of one call each (N + 1 model calls). Goal: guarded / unguarded at most 1.05.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.tools import BaseTool, tool
from langgraph.checkpoint.memory import InMemorySaver

from bench._harness import Config, Section, interleave, ms, paired_ratio, timed_rows
from loopgate_lc import ApprovalPolicy, RiskLevel, guard
from loopgate_lc.gateway import Loopgate
from loopgate_lc.middleware import ApprovalMiddleware
from loopgate_lc.testing import ScriptedChatModel, ai, call

GOAL = 1.05
POLICIES = [ApprovalPolicy("lookups", "lookup_*", 0.5, RiskLevel.READ_ONLY)]
LABELS = {
    "plain": "unguarded tools",
    "guarded": "guard() on every tool, auto-approved",
    "middleware": "ApprovalMiddleware, auto-approved",
    "hitl": "HumanInTheLoopMiddleware, tools ungated",
    "gateway": "guard(), driven by Loopgate.run (auto-approvals audited)",
}


def _tools(n: int) -> list[BaseTool]:
    def make(i: int) -> BaseTool:
        def lookup(key: str) -> str:
            return f"{i}:{key}"

        return tool(f"lookup_{i}", description=f"Look a key up in table {i}.")(lookup)

    return [make(i) for i in range(n)]


def _script(n: int, shape: str) -> list[Any]:
    calls = [call(f"lookup_{i}", f"c{i}", key=f"k{i}") for i in range(n)]
    if shape == "parallel":
        return [ai("", *calls), "done"]
    return [*(ai("", c) for c in calls), "done"]


def _agent(kind: str, n: int, shape: str) -> Any:
    tools = _tools(n)
    middleware: list[Any] = []
    if kind in ("guarded", "gateway"):
        tools = [guard(t, policies=POLICIES, risk="read_only", confidence=0.9) for t in tools]
    elif kind == "middleware":
        middleware = [ApprovalMiddleware(POLICIES, risk="read_only", confidence=0.9)]
    elif kind == "hitl":
        middleware = [HumanInTheLoopMiddleware(interrupt_on={t.name: False for t in tools})]
    return create_agent(ScriptedChatModel(script=_script(n, shape)), tools=tools,
                        middleware=middleware, checkpointer=InMemorySaver())


def _check(result: Any, n: int) -> None:
    messages = result["messages"]
    if messages[-1].content != "done" or sum(m.type == "tool" for m in messages) != n:
        raise RuntimeError(f"the benchmark agent did not finish as scripted: {messages[-3:]}")


def _variants(n: int, shape: str, gate: Loopgate) -> dict[str, Callable[[], None]]:
    agents = {kind: _agent(kind, n, shape) for kind in LABELS}
    user = {"messages": [("user", "look them up")]}

    def direct(agent: Any) -> Callable[[], None]:
        def once() -> None:
            config = {"configurable": {"thread_id": str(uuid.uuid4())}}
            _check(agent.invoke(user, config), n)
        return once

    def through_gate() -> None:
        _check(gate.run(agents["gateway"], user), n)

    out = {kind: direct(agent) for kind, agent in agents.items() if kind != "gateway"}
    out["gateway"] = through_gate
    return out


def run(config: Config) -> Section:
    began = time.perf_counter()
    n = config.size(10, 3)
    section = Section(
        key="overhead",
        title="1. Auto-approved overhead (create_agent run)",
        goal=f"guarded / unguarded at most {GOAL}",
    )
    met = []
    with Loopgate(store="memory://") as gate:
        for shape in ("parallel", "sequential"):
            samples = interleave(
                _variants(n, shape, gate),
                reps=config.reps(60),
                warmup=config.reps(5, 0),
                budget_s=config.reps(25, 10),
                between=gate.pending,  # lets the gateway's background audits land, untimed
            )
            rows = timed_rows({k: ms(v) for k, v in samples.items()}, "plain", "ms",
                              labels=LABELS)
            what = (f"{n} calls in one turn" if shape == "parallel"
                    else f"{n} turns of one call")
            for row in rows:
                row.label = f"{what}: {row.label}"
            guarded = rows[1]
            paired = paired_ratio(samples, "guarded", "plain")
            guarded.note = f"paired ratio {paired:.3f}"
            met.append(max(guarded.ratio or 0.0, paired) <= GOAL)
            section.rows.extend(rows)
    section.verdict = "met" if all(met) else "not met"
    section.notes.append(
        "Median wall time of one whole run (scripted model, InMemorySaver, a fresh thread "
        "each run); ratio = median / median of the unguarded run in the same shape. The "
        "paired ratio is the median of per-repetition ratios (both timed back to back).")
    section.seconds = time.perf_counter() - began
    return section
