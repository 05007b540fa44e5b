"""ApprovalMiddleware on create_agent: same policies, payload and decisions as the guard."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from loopgate_lc import ApprovalPolicy, ConfigurationError, PolicySet, RiskLevel
from loopgate_lc.middleware import ApprovalMiddleware, ToolSettings
from loopgate_lc.testing import ScriptedChatModel, ai, call

POLICIES = PolicySet([
    ApprovalPolicy("reads", "get_*", 0.0, RiskLevel.READ_ONLY),
    ApprovalPolicy("writes", "*", 0.9, RiskLevel.DATA_MODIFICATION),
])


def make_agent(runs: Counter[str], middleware: ApprovalMiddleware, *script: Any) -> Any:
    @tool
    def get_user(user_id: str) -> str:
        """Look a user up."""
        runs["get_user"] += 1
        return f"user {user_id}"

    @tool
    def delete_user(user_id: str) -> str:
        """Delete a user."""
        runs["delete_user"] += 1
        return f"deleted {user_id}"

    @tool
    def rename_user(user_id: str, name: str) -> str:
        """Rename a user."""
        runs["rename_user"] += 1
        return f"renamed {user_id} to {name}"

    return create_agent(
        ScriptedChatModel(script=list(script)),
        tools=[get_user, delete_user, rename_user],
        middleware=[middleware],
        checkpointer=InMemorySaver(),
    )


def middleware() -> ApprovalMiddleware:
    return ApprovalMiddleware(
        POLICIES,
        tools={
            "get_user": ToolSettings(risk=RiskLevel.READ_ONLY),
            "rename_user": {"risk": RiskLevel.DATA_MODIFICATION, "confidence": 0.95},
            "delete_user": ToolSettings(allowed_decisions=["approve", "reject"], timeout=60),
        },
    )


def test_one_interrupt_per_gated_call_with_the_guard_payload(
    runs: Counter[str], config: dict[str, Any]
) -> None:
    agent = make_agent(runs, middleware(), ai(
        "", call("get_user", "g", user_id="1"), call("rename_user", "r", user_id="1", name="A"),
        call("delete_user", "d1", user_id="1"), call("delete_user", "d2", user_id="2"),
    ), "ok")
    result = agent.invoke({"messages": [HumanMessage("clean up")]}, config, version="v2")
    assert runs == Counter(get_user=1, rename_user=1)  # per-tool risk/confidence auto-approve
    values = {i.value["tool_call_id"]: i.value for i in result.interrupts}
    assert set(values) == {"d1", "d2"}
    d1 = values["d1"]
    assert (d1["type"], d1["name"], d1["args"]) == ("tool_approval", "delete_user",
                                                   {"user_id": "1"})
    assert d1["allowed_decisions"] == ["approve", "reject"]
    assert d1["risk_level"] == "irreversible"  # the default fails closed
    assert d1["timeout_seconds"] == 60 and d1["expires_at"]
    assert d1["reason"] == (
        "confidence 0.00 is below 0.90 required by policy 'writes'; risk irreversible is "
        "above data_modification allowed by policy 'writes'"
    )
    ids = {i.value["tool_call_id"]: i.id for i in result.interrupts}
    agent.invoke(Command(resume={ids["d1"]: {"type": "approve"}}), config, version="v2")
    final = agent.invoke(Command(resume={ids["d2"]: {"type": "reject", "message": "keep"}}),
                         config, version="v2")
    assert runs == Counter(get_user=1, rename_user=1, delete_user=1)
    messages = {m.tool_call_id: m for m in final.value["messages"]
                if isinstance(m, ToolMessage)}
    assert messages["d1"].content == "deleted 1"
    assert messages["d2"].status == "error" and "keep" in messages["d2"].content


def test_edit_and_respond_through_the_middleware(
    runs: Counter[str], config: dict[str, Any]
) -> None:
    agent = make_agent(runs, ApprovalMiddleware(POLICIES), ai(
        "", call("rename_user", "r", user_id="1", name="Bob"),
        call("delete_user", "d", user_id="9"),
    ), "ok")
    result = agent.invoke({"messages": [HumanMessage("x")]}, config, version="v2")
    ids = {i.value["tool_call_id"]: i.id for i in result.interrupts}
    edit = {"type": "edit", "edited_action": {"name": "rename_user",
                                              "args": {"user_id": "1", "name": "Robert"}}}
    final = agent.invoke(
        Command(resume={ids["r"]: edit, ids["d"]: {"type": "respond", "message": "later"}}),
        config, version="v2",
    )
    messages = {m.tool_call_id: m for m in final.value["messages"]
                if isinstance(m, ToolMessage)}
    assert messages["r"].content.endswith("renamed 1 to Robert")
    assert messages["r"].content.startswith("Note: a person changed this tool call")
    assert (messages["d"].content, messages["d"].status) == ("later", "success")
    assert runs == Counter(rename_user=1)


def test_an_edit_cannot_switch_tools(runs: Counter[str], config: dict[str, Any]) -> None:
    from pydantic import ValidationError

    agent = make_agent(runs, ApprovalMiddleware(POLICIES),
                       ai("", call("delete_user", "d", user_id="9")), "ok")
    (pause,) = agent.invoke({"messages": [HumanMessage("x")]}, config, version="v2").interrupts
    bad = {"type": "edit", "edited_action": {"name": "get_user", "args": {"user_id": "9"}}}
    with pytest.raises(ValidationError, match="Input should be 'delete_user'"):
        agent.invoke(Command(resume={pause.id: bad}), config, version="v2")
    assert runs == Counter()


def test_self_reported_confidence_needs_the_guard() -> None:
    with pytest.raises(ConfigurationError, match="guard"):
        ApprovalMiddleware(POLICIES, confidence="self_reported")
