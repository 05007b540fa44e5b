"""Hand-built graphs: one task per tool call keeps every body exactly-once."""

from __future__ import annotations

from collections import Counter
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command

from loopgate_lc import ApprovalPolicy, PolicySet, RiskLevel, guard, route_tool_calls
from loopgate_lc.testing import ScriptedChatModel, ai, call

POLICIES = PolicySet([ApprovalPolicy("reads", "read_*", 0.0, RiskLevel.READ_ONLY)])


def build(runs: Counter[str], *, one_task_per_call: bool) -> Any:
    @tool
    def read_log(name: str) -> str:
        """Read a log."""
        runs["read_log"] += 1
        return f"log {name}"

    @tool
    def restart(service: str) -> str:
        """Restart a service."""
        runs["restart"] += 1
        return f"restarted {service}"

    tools: list[BaseTool] = [
        guard(read_log, policies=POLICIES, risk=RiskLevel.READ_ONLY),
        guard(restart, policies=POLICIES, risk=RiskLevel.IRREVERSIBLE),
    ]
    model = ScriptedChatModel(script=[
        ai("", call("read_log", "c1", name="api"), call("restart", "c2", service="api"),
           call("restart", "c3", service="db")),
        "all done",
    ])

    def agent(state: MessagesState) -> dict[str, list[AIMessage]]:
        return {"messages": [model.invoke(state["messages"])]}  # type: ignore[list-item]

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode(tools))
    builder.add_edge(START, "agent")
    if one_task_per_call:
        builder.add_conditional_edges("agent", route_tool_calls(), ["tools", END])
    else:
        builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=InMemorySaver())


def run_to_end(graph: Any, config: dict[str, Any]) -> tuple[Any, list[set[str]]]:
    """Approve whatever is pending, one resume per pending call, until the run ends."""
    result = graph.invoke({"messages": [HumanMessage("fix api")]}, config, version="v2")
    seen: list[set[str]] = []
    for _ in range(6):
        if not result.interrupts:
            return result, seen
        seen.append({i.value["tool_call_id"] for i in result.interrupts})
        # answer in call order: LangGraph lists parallel interrupts in no fixed order
        first = min(result.interrupts, key=lambda i: i.value["tool_call_id"])
        result = graph.invoke(Command(resume={first.id: {"type": "approve"}}), config,
                              version="v2")
    raise AssertionError("run did not finish")


def test_route_tool_calls_keeps_every_body_exactly_once(config: dict[str, Any]) -> None:
    runs: Counter[str] = Counter()
    final, seen = run_to_end(build(runs, one_task_per_call=True), config)
    assert seen == [{"c2", "c3"}, {"c3"}]  # both pause at once, each resolved alone
    assert runs == Counter(read_log=1, restart=2)
    contents = {m.tool_call_id: m.content for m in final.value["messages"]
                if isinstance(m, ToolMessage)}
    assert contents == {"c1": "log api", "c2": "restarted api", "c3": "restarted db"}
    assert final.value["messages"][-1].content == "all done"


def test_a_plain_tools_condition_pauses_before_any_gated_body(config: dict[str, Any]) -> None:
    """Wired with LangGraph's ``tools_condition`` (one task for all calls), the guards
    still pause before a restart runs. What happens on resume there (finished siblings
    re-run; which parallel call a resume reaches) follows LangGraph's task order, which
    changes between runs and releases: that is why ``route_tool_calls`` exists, and it is
    not asserted here."""
    runs: Counter[str] = Counter()
    graph = build(runs, one_task_per_call=False)
    first = graph.invoke({"messages": [HumanMessage("fix api")]}, config, version="v2")
    assert first.interrupts  # paused for a person ...
    assert runs["restart"] == 0  # ... before any restart ran
    assert {i.value["tool_call_id"] for i in first.interrupts} <= {"c2", "c3"}
    assert {i.value["name"] for i in first.interrupts} == {"restart"}


def test_route_tool_calls_ends_without_calls() -> None:
    route = route_tool_calls()
    assert route({"messages": [HumanMessage("hi"), AIMessage("hello")]}) == END
    done = [AIMessage("", tool_calls=[call("x", "1")]),
            ToolMessage("ok", tool_call_id="1")]
    assert route({"messages": done}) == END
