"""The tool guard in real LangGraph graphs, driven by a scripted chat model."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Annotated, Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, InjectedToolCallId, StructuredTool, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.prebuilt import InjectedState, ToolRuntime
from langgraph.types import Command
from pydantic import BaseModel, ValidationError

from loopgate_lc import (
    ApprovalPolicy,
    ConfigurationError,
    GuardedTool,
    PolicySet,
    RiskLevel,
    guard,
    guard_tools,
)
from loopgate_lc.testing import ScriptedChatModel, ai, call

POLICIES = PolicySet([
    ApprovalPolicy("reads", "get_*", 0.0, RiskLevel.READ_ONLY),
    ApprovalPolicy("payments", "transfer", 0.8, RiskLevel.DATA_MODIFICATION),
])


def make_tools(runs: Counter[str]) -> tuple[BaseTool, BaseTool]:
    @tool
    def get_status(service: str) -> str:
        """Read a service's status."""
        runs["get_status"] += 1
        return f"{service} is healthy"

    @tool
    def transfer(amount: int, to: str) -> str:
        """Send money to someone."""
        runs["transfer"] += 1
        return f"sent {amount} to {to}"

    return get_status, transfer


def transfer_risk(args: dict[str, Any]) -> RiskLevel:
    return RiskLevel.IRREVERSIBLE if args["amount"] > 1000 else RiskLevel.DATA_MODIFICATION


def agent_for(tools: list[BaseTool], *script: Any, **kwargs: Any) -> Any:
    return create_agent(
        ScriptedChatModel(script=list(script)), tools=tools, checkpointer=InMemorySaver(), **kwargs
    )


def start(agent: Any, config: dict[str, Any], text: str = "go") -> Any:
    return agent.invoke({"messages": [HumanMessage(text)]}, config, version="v2")


def tool_messages(result: Any) -> dict[str, ToolMessage]:
    return {m.tool_call_id: m for m in result.value["messages"] if isinstance(m, ToolMessage)}


def guarded_pair(runs: Counter[str], **kwargs: Any) -> list[BaseTool]:
    get_status, transfer = make_tools(runs)
    return [
        guard(get_status, policies=POLICIES, risk=RiskLevel.READ_ONLY),
        guard(transfer, policies=POLICIES, risk=transfer_risk, confidence=0.9, **kwargs),
    ]


def test_auto_approved_call_runs_without_interrupt(
    runs: Counter[str], config: dict[str, Any]
) -> None:
    agent = agent_for(guarded_pair(runs), ai("", call("get_status", service="db")), "ok")
    result = start(agent, config)
    assert result.interrupts == ()
    assert runs == Counter(get_status=1)
    assert tool_messages(result)["call_get_status"].content == "db is healthy"


def test_gated_call_interrupts_before_the_body_with_a_langchain_superset_payload(
    runs: Counter[str], config: dict[str, Any]
) -> None:
    agent = agent_for(guarded_pair(runs), ai("", call("transfer", amount=5000, to="bob")), "ok")
    result = start(agent, config)
    assert runs["transfer"] == 0
    (pause,) = result.interrupts
    value = pause.value
    # LangChain's ToolApprovalRequest fields, as they are
    assert value["type"] == "tool_approval"
    assert value["tool_call_id"] == "call_transfer"
    assert value["name"] == "transfer"
    assert value["args"] == {"amount": 5000, "to": "bob"}
    assert "transfer" in value["description"]
    # and what a person needs
    assert value["risk_level"] == "irreversible"
    assert value["confidence"] == 0.9
    assert value["policy"] == "payments"
    assert value["reason"] == (
        "risk irreversible is above data_modification allowed by policy 'payments'"
    )
    assert value["allowed_decisions"] == ["approve", "edit", "reject", "respond"]
    assert value["request_id"]
    # LangGraph publishes the decision schema to clients
    assert pause.response_schema["anyOf"][0]["discriminator"]["propertyName"] == "type"


def test_small_transfer_is_auto_approved_by_risk_callable(
    runs: Counter[str], config: dict[str, Any]
) -> None:
    agent = agent_for(guarded_pair(runs), ai("", call("transfer", amount=10, to="al")), "ok")
    assert start(agent, config).interrupts == ()
    assert runs["transfer"] == 1


def resume(agent: Any, config: dict[str, Any], answers: dict[str, Any]) -> Any:
    return agent.invoke(Command(resume=answers), config, version="v2")


@pytest.mark.parametrize(
    ("decision", "ran", "status", "content"),
    [
        ({"type": "approve"}, 1, "success", "sent 5000 to bob"),
        ({"type": "reject", "message": "too much"}, 0, "error",
         "A person rejected the call to `transfer` (call call_transfer) with this reason: "
         "too much"),
        ({"type": "reject"}, 0, "error", "The tool was not run. Do not retry"),
        ({"type": "respond", "message": "Use the corporate card instead."}, 0, "success",
         "Use the corporate card instead."),
        ({"type": "timeout"}, 0, "error", "timed out before anyone answered"),
        ({"type": "timeout", "outcome": "approve"}, 1, "success", "sent 5000 to bob"),
        ({"type": "cancel"}, 0, "error", "was cancelled"),
    ],
)
def test_every_decision_type(
    runs: Counter[str], config: dict[str, Any], decision: dict[str, Any], ran: int,
    status: str, content: str,
) -> None:
    agent = agent_for(guarded_pair(runs), ai("", call("transfer", amount=5000, to="bob")), "ok")
    (pause,) = start(agent, config).interrupts
    result = resume(agent, config, {pause.id: decision})
    assert result.interrupts == ()
    assert runs["transfer"] == ran
    message = tool_messages(result)["call_transfer"]
    assert message.status == status
    assert content in message.content


def test_edit_runs_the_edited_call_once_and_tells_the_model(
    runs: Counter[str], config: dict[str, Any]
) -> None:
    seen: list[dict[str, Any]] = []

    @tool
    def transfer(amount: int, to: str) -> str:
        """Send money."""
        seen.append({"amount": amount, "to": to})
        return f"sent {amount} to {to}"

    gated = guard(transfer, policies=POLICIES, risk=RiskLevel.IRREVERSIBLE)
    agent = agent_for([gated], ai("", call("transfer", amount=5000, to="bob")), "ok")
    (pause,) = start(agent, config).interrupts
    edit = {"type": "edit", "edited_action": {"name": "transfer", "args": {"amount": 900,
                                                                          "to": "bob"}}}
    result = resume(agent, config, {pause.id: edit})
    assert seen == [{"amount": 900, "to": "bob"}]
    content = tool_messages(result)["call_transfer"].content
    assert content.startswith("Note: a person changed this tool call before it ran")
    assert '"amount": 900' in content and content.endswith("sent 900 to bob")


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ({"type": "edit", "edited_action": {"name": "get_status", "args": {"service": "x"}}},
         "Input should be 'transfer'"),
        ({"type": "edit", "edited_action": {"name": "transfer", "args": {"amount": "lots",
                                                                          "to": "bob"}}},
         "amount"),
        ({"type": "edit", "edited_action": {"name": "transfer", "args": {"to": "bob"}}},
         "Field required"),
        ({"type": "respond"}, "message"),
        ({"type": "maybe"}, "does not match any of the expected tags"),
    ],
)
def test_invalid_answers_are_refused_and_the_interrupt_stays_pending(
    runs: Counter[str], config: dict[str, Any], answer: dict[str, Any], error: str
) -> None:
    agent = agent_for(guarded_pair(runs), ai("", call("transfer", amount=5000, to="bob")), "ok")
    (pause,) = start(agent, config).interrupts
    with pytest.raises(ValidationError, match=error):
        resume(agent, config, {pause.id: answer})
    state = agent.get_state(config)
    assert [i.id for i in state.interrupts] == [pause.id]
    assert runs["transfer"] == 0
    resume(agent, config, {pause.id: {"type": "approve"}})
    assert runs["transfer"] == 1


def test_a_decision_type_outside_allowed_decisions_is_refused(
    runs: Counter[str], config: dict[str, Any]
) -> None:
    tools = guarded_pair(runs, allowed_decisions=["approve", "reject"])
    agent = agent_for(tools, ai("", call("transfer", amount=5000, to="bob")), "ok")
    (pause,) = start(agent, config).interrupts
    assert pause.value["allowed_decisions"] == ["approve", "reject"]
    edit = {"type": "edit", "edited_action": {"name": "transfer", "args": {"amount": 1,
                                                                          "to": "bob"}}}
    with pytest.raises(ValidationError, match="expected tags: 'approve', 'reject'"):
        resume(agent, config, {pause.id: edit})
    assert [i.id for i in agent.get_state(config).interrupts] == [pause.id]
    assert runs["transfer"] == 0


def test_two_parallel_gated_calls_resolve_independently(
    runs: Counter[str], config: dict[str, Any]
) -> None:
    agent = agent_for(
        guarded_pair(runs),
        ai("", call("transfer", "a", amount=5000, to="bob"), call("transfer", "b", amount=7000,
                                                                  to="eve")),
        "ok",
    )
    first = start(agent, config)
    assert len(first.interrupts) == 2
    by_call = {i.value["tool_call_id"]: i for i in first.interrupts}
    assert len({i.id for i in first.interrupts}) == 2
    assert len({i.value["request_id"] for i in first.interrupts}) == 2
    middle = resume(agent, config, {by_call["a"].id: {"type": "approve"}})
    assert runs["transfer"] == 1
    assert [i.id for i in middle.interrupts] == [by_call["b"].id]
    # the still-pending sibling keeps the same request id when its node re-runs
    assert middle.interrupts[0].value["request_id"] == by_call["b"].value["request_id"]
    final = resume(agent, config, {by_call["b"].id: {"type": "reject", "message": "no"}})
    assert runs["transfer"] == 1  # the approved body ran once, the rejected never
    messages = tool_messages(final)
    assert messages["a"].content == "sent 5000 to bob"
    assert messages["b"].status == "error"


def test_self_reported_confidence_is_in_the_schema_and_stripped_before_the_tool(
    config: dict[str, Any],
) -> None:
    received: list[dict[str, Any]] = []

    @tool
    def transfer(amount: int, to: str) -> str:
        """Send money."""
        received.append({"amount": amount, "to": to})
        return "sent"

    gated = guard(transfer, policies=POLICIES, risk=RiskLevel.DATA_MODIFICATION,
                  confidence="self_reported")
    schema = gated.tool_call_schema.model_json_schema()
    assert schema["properties"]["confidence"]["anyOf"][0] == {"maximum": 1, "minimum": 0,
                                                             "type": "number"}
    assert "confidence" not in schema.get("required", [])
    assert "confidence" in gated.args
    model = ScriptedChatModel(script=[
        ai("", call("transfer", "sure", amount=10, to="al", confidence=0.95),
           call("transfer", "unsure", amount=10, to="al", confidence=0.5),
           call("transfer", "silent", amount=10, to="al")),
        "ok",
    ])
    agent = create_agent(model, tools=[gated], checkpointer=InMemorySaver())
    result = start(agent, config)
    assert received == [{"amount": 10, "to": "al"}]  # 0.95 >= 0.8: auto, stripped
    by_call = {i.value["tool_call_id"]: i.value for i in result.interrupts}
    assert by_call["unsure"]["confidence"] == 0.5
    assert by_call["silent"]["confidence"] == 0.0  # missing counts as 0: fail closed
    assert "confidence" not in by_call["unsure"]["args"]
    # the model was shown the confidence field through the bound tool
    assert "confidence" in model.bound_tools[0].tool_call_schema.model_fields


def test_a_tool_that_already_has_a_confidence_argument_is_refused() -> None:
    @tool
    def rate(confidence: float) -> str:
        """Rate."""
        return "ok"

    with pytest.raises(ConfigurationError, match="already has an argument named 'confidence'"):
        guard(rate, policies=POLICIES, confidence="self_reported")


async def test_async_only_tools(config: dict[str, Any]) -> None:
    calls: list[str] = []

    async def deploy(environment: str) -> str:
        await asyncio.sleep(0)
        calls.append(environment)
        return f"deployed to {environment}"

    async_tool = StructuredTool.from_function(coroutine=deploy, name="deploy",
                                              description="Deploy.")
    gated = guard(async_tool, policies=POLICIES)
    agent = agent_for([gated], ai("", call("deploy", environment="production")), "ok")
    first = await agent.ainvoke({"messages": [HumanMessage("ship it")]}, config, version="v2")
    (pause,) = first.interrupts
    assert calls == []
    final = await agent.ainvoke(Command(resume={pause.id: {"type": "approve"}}), config,
                                version="v2")
    assert calls == ["production"]
    assert tool_messages(final)["call_deploy"].content == "deployed to production"


def test_tools_with_injected_arguments_get_them_and_the_person_does_not_see_them(
    config: dict[str, Any],
) -> None:
    received: dict[str, Any] = {}

    @tool
    def refund(
        order: str,
        tool_call_id: Annotated[str, InjectedToolCallId],
        messages: Annotated[list[Any], InjectedState("messages")],
        runtime: ToolRuntime,
    ) -> str:
        """Refund an order."""
        received.update(order=order, tool_call_id=tool_call_id, n=len(messages),
                        runtime_call=runtime.tool_call_id)
        return "refunded"

    gated = guard(refund, policies=POLICIES)
    assert set(gated.tool_call_schema.model_fields) == {"order"}
    agent = agent_for([gated], ai("", call("refund", "r1", order="A-1")), "ok")
    (pause,) = start(agent, config).interrupts
    assert pause.value["args"] == {"order": "A-1"}
    result = resume(agent, config, {pause.id: {"type": "approve"}})
    assert received == {"order": "A-1", "tool_call_id": "r1", "n": 2, "runtime_call": "r1"}
    assert tool_messages(result)["r1"].content == "refunded"


def test_base_tool_subclass_and_artifacts_keep_their_return_semantics(
    config: dict[str, Any],
) -> None:
    class Args(BaseModel):
        path: str

    class Delete(BaseTool):
        name: str = "delete_file"
        description: str = "Delete a file."
        args_schema: type[BaseModel] = Args
        response_format: str = "content_and_artifact"  # type: ignore[assignment]

        def _run(self, path: str, **kwargs: Any) -> tuple[str, dict[str, str]]:
            return f"deleted {path}", {"path": path}

    gated = guard(Delete(), policies=POLICIES)
    assert isinstance(gated, GuardedTool)
    assert (gated.name, gated.description) == ("delete_file", "Delete a file.")
    assert gated.tool_call_schema.model_json_schema()["properties"] == {
        "path": {"title": "Path", "type": "string"}
    }
    agent = agent_for([gated], ai("", call("delete_file", path="/tmp/x")), "ok")
    (pause,) = start(agent, config).interrupts
    result = resume(agent, config, {pause.id: {"type": "approve"}})
    message = tool_messages(result)["call_delete_file"]
    assert (message.content, message.artifact) == ("deleted /tmp/x", {"path": "/tmp/x"})


def test_guard_tools_takes_per_tool_settings(runs: Counter[str], config: dict[str, Any]) -> None:
    get_status, transfer = make_tools(runs)
    tools = guard_tools(
        [get_status, transfer], policies=POLICIES,
        risk={"get_status": RiskLevel.READ_ONLY}, confidence={"transfer": 0.99},
    )
    agent = agent_for(tools, ai("", call("get_status", service="a"),
                                call("transfer", amount=5, to="b")), "ok")
    result = start(agent, config)
    assert runs["get_status"] == 1
    # transfer's risk defaults to irreversible (fail closed), so it waits
    assert [i.value["name"] for i in result.interrupts] == ["transfer"]


def test_guard_refuses_what_it_cannot_gate() -> None:
    @tool
    def noop() -> str:
        """Nothing."""
        return ""

    with pytest.raises(ConfigurationError, match="allowed_decisions"):
        guard(noop, policies=POLICIES, allowed_decisions=["approve", "shrug"])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="already guarded"):
        guard(guard(noop, policies=POLICIES), policies=POLICIES)
    with pytest.raises(ConfigurationError, match="takes a LangChain BaseTool"):
        guard(lambda: None, policies=POLICIES)  # type: ignore[arg-type]
