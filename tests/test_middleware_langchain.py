"""LangChain's own ``HumanInTheLoopMiddleware`` and ``ApprovalMiddleware`` side by side:
the same scripted model, the same batched ``HITLRequest``, the same ``{"decisions": [...]}``
from the same reviewer code, the same tools run; and the gateway (and HTTP) answering
both middlewares' batched pauses."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import httpx
import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.messages import ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, interrupt

from loopgate_lc import ApprovalPolicy, Loopgate, PolicySet, RiskLevel
from loopgate_lc.middleware import ApprovalMiddleware, ToolSettings
from loopgate_lc.testing import ScriptedApprover, ScriptedChatModel, ai, call

POLICIES = PolicySet([
    ApprovalPolicy("reads", "get_*", max_risk_level=RiskLevel.READ_ONLY),
    ApprovalPolicy("writes", "*", min_confidence=0.9,
                   max_risk_level=RiskLevel.DATA_MODIFICATION),
])
DECISIONS = ["approve", "edit", "reject"]


def agent(runs: Counter[str], middleware: Any, *, user: str = "7") -> Any:
    @tool
    def get_user(user_id: str) -> str:
        """Look a user up."""
        runs["get_user"] += 1
        return f"user {user_id}"

    @tool
    def delete_user(user_id: str) -> str:
        """Delete a user."""
        runs[f"delete_user:{user_id}"] += 1
        return f"deleted {user_id}"

    @tool
    def send_email(to: str, body: str) -> str:
        """Send an email."""
        runs[f"send_email:{body}"] += 1
        return f"sent to {to}"

    model = ScriptedChatModel(script=[
        ai("", call("get_user", "c1", user_id=user), call("delete_user", "c2", user_id=user),
           call("send_email", "c3", to="ann@example.com", body="bye")),
        "Done."])
    return create_agent(model, tools=[get_user, delete_user, send_email],
                        middleware=[middleware], checkpointer=InMemorySaver())


def theirs(when: Any = None) -> HumanInTheLoopMiddleware:
    config: dict[str, Any] = {"allowed_decisions": DECISIONS}
    if when is not None:
        config["when"] = when
    return HumanInTheLoopMiddleware(interrupt_on={"delete_user": config,
                                                  "send_email": config})


def ours(when: Any = None) -> ApprovalMiddleware:
    return ApprovalMiddleware(POLICIES, allowed_decisions=DECISIONS, interrupt_mode="batched",
                              tools={"get_user": ToolSettings(risk=RiskLevel.READ_ONLY),
                                     "delete_user": ToolSettings(when=when)})


def reviewer(value: dict[str, Any]) -> dict[str, Any]:
    """A UI written for HumanInTheLoopMiddleware: reads action_requests and
    review_configs, answers by position."""
    decisions = []
    for action, config in zip(value["action_requests"], value["review_configs"], strict=True):
        assert action["name"] == config["action_name"]
        assert set(config["allowed_decisions"]) == set(DECISIONS)
        if action["name"] == "delete_user":
            decisions.append({"type": "reject", "message": "keep the account"})
        else:
            decisions.append({"type": "edit", "edited_action": {
                "name": "send_email", "args": {**action["args"], "body": "see you"}}})
    return {"decisions": decisions}


def run_reviewed(middleware: Any, config: dict[str, Any]) -> tuple[Counter[str], list[Any]]:
    runs: Counter[str] = Counter()
    graph = agent(runs, middleware)
    paused = graph.invoke({"messages": [("user", "clean up user 7")]}, config, version="v2")
    [pause] = paused.interrupts
    assert [a["name"] for a in pause.value["action_requests"]] == ["delete_user",
                                                                    "send_email"]
    done = graph.invoke(Command(resume=reviewer(pause.value)), config, version="v2")
    tool_messages = [m for m in done.value["messages"] if isinstance(m, ToolMessage)]
    return runs, sorted((m.tool_call_id, m.status) for m in tool_messages)


def test_the_same_reviewer_answers_both_middlewares_the_same_way(config: dict[str, Any]
                                                                  ) -> None:
    other = {"configurable": {"thread_id": config["configurable"]["thread_id"] + "-lc"}}
    assert run_reviewed(ours(), config) == run_reviewed(theirs(), other)
    runs, messages = run_reviewed(ours(), {"configurable": {"thread_id": "again"}})
    assert runs == Counter({"get_user": 1, "send_email:see you": 1})
    assert messages == [("c1", "success"), ("c2", "error"), ("c3", "success")]


@pytest.mark.parametrize("user", ["7", "0"])
def test_a_when_predicate_behaves_like_langchains(config: dict[str, Any], user: str) -> None:
    """``when`` False: the call runs without asking, in both middlewares."""
    def only_real_users(request: Any) -> bool:
        return bool(request.tool_call["args"].get("user_id") != "0")

    asked = []
    for middleware in (ours(only_real_users), theirs(only_real_users)):
        runs: Counter[str] = Counter()
        graph = agent(runs, middleware, user=user)
        thread = {"configurable": {"thread_id": f"{config['configurable']['thread_id']}-"
                                                f"{type(middleware).__name__}"}}
        paused = graph.invoke({"messages": [("user", "go")]}, thread, version="v2")
        [pause] = paused.interrupts
        asked.append([a["name"] for a in pause.value["action_requests"]])
    assert asked[0] == asked[1]
    assert ("delete_user" in asked[0]) is (user == "7")


def test_a_per_call_pause_takes_a_batch_of_one(config: dict[str, Any]) -> None:
    runs: Counter[str] = Counter()
    graph = agent(runs, ApprovalMiddleware(POLICIES, tools={
        "get_user": ToolSettings(risk=RiskLevel.READ_ONLY)}))
    paused = graph.invoke({"messages": [("user", "go")]}, config, version="v2")
    answers = {p.id: {"decisions": [{"type": "approve"}]} for p in paused.interrupts}
    graph.invoke(Command(resume=answers), config, version="v2")
    assert runs == Counter({"get_user": 1, "delete_user:7": 1, "send_email:bye": 1})


@pytest.mark.parametrize("which", ["ours", "theirs"])
def test_the_gateway_files_and_resumes_either_batched_pause(which: str) -> None:
    runs: Counter[str] = Counter()
    middleware = ours() if which == "ours" else theirs()
    person = ScriptedApprover(lambda record: reviewer(record.payload), actor="ann")
    with Loopgate("memory://", notifiers=[person]) as gate:
        gate.run(agent(runs, middleware), {"messages": [("user", "clean up user 7")]})
        [requested] = [e for e in gate.audit() if e.event == "requested"]
        record = gate.get(str(requested.request_id))
    assert runs == Counter({"get_user": 1, "send_email:see you": 1})
    assert (record.status.value, record.decided_by) == ("rejected", "ann")
    assert [d["type"] for d in record.decision["decisions"]] == ["reject", "edit"]  # type: ignore[index]


def test_http_respond_takes_langchains_decisions(tmp_path: Any) -> None:
    from loopgate_lc.background import BackgroundServer
    from loopgate_lc.server import create_app

    runs: Counter[str] = Counter()
    graph = agent(runs, ours())
    gate = Loopgate(f"sqlite:///{tmp_path / 'http.db'}", poll_interval=0.05)
    gate.register_graph("cleaner", graph)
    with BackgroundServer(create_app(gate, close_gateway=True)) as live:
        thread = gate.start("cleaner", {"messages": [("user", "clean up user 7")]})
        tick = threading.Event()
        pending: list[Any] = []
        for _ in range(400):  # bounded: the run files its pause in the gateway's loop
            pending = gate.pending(thread_id=thread)
            if pending:
                break
            tick.wait(0.05)
        [record] = pending
        with httpx.Client(base_url=live.url, timeout=10) as client:
            short = client.post("/hitl/respond", json={
                "request_id": record.id, "decision": {"decisions": [{"type": "approve"}]}})
            assert short.status_code == 422
            assert "one per call" in short.json()["error"]["message"]
            answer = client.post("/hitl/respond", json={
                "request_id": record.id, "decision": reviewer(record.payload)})
            assert answer.status_code == 200, answer.text
            assert (answer.json()["status"], answer.json()["approved"]) == ("rejected", False)
        for _ in range(400):  # bounded: the resume runs in the gateway's loop
            if runs["send_email:see you"]:
                break
            tick.wait(0.05)
    assert runs == Counter({"get_user": 1, "send_email:see you": 1})


def _pending(gate: Loopgate, thread: str, count: int) -> list[Any]:
    tick = threading.Event()
    for _ in range(400):  # bounded: the run files its pauses in the gateway's loop
        pending = gate.pending(thread_id=thread)
        if len(pending) == count:
            return pending
        tick.wait(0.05)
    raise TimeoutError(f"{count} pending requests on {thread}")


def _until_ran(runs: Counter[str], key: str) -> None:
    tick = threading.Event()
    for _ in range(400):  # bounded: resumes run in the gateway's loop
        if runs[key]:
            return
        tick.wait(0.05)


def per_call() -> ApprovalMiddleware:
    return ApprovalMiddleware(POLICIES, allowed_decisions=DECISIONS,
                              tools={"get_user": ToolSettings(risk=RiskLevel.READ_ONLY)})


def test_the_gateway_answers_per_call_pauses_by_position(tmp_path: Any) -> None:
    runs: Counter[str] = Counter()
    with Loopgate(f"sqlite:///{tmp_path / 'batch.db'}", poll_interval=0.05) as gate:
        gate.register_graph("cleaner", agent(runs, per_call()))
        thread = gate.start("cleaner", {"messages": [("user", "clean up user 7")]})
        pending = _pending(gate, thread, 2)
        with pytest.raises(ValueError, match="one per request"):
            gate.respond_batch(thread, {"decisions": [{"type": "approve"}]})
        assert len(gate.pending(thread_id=thread)) == 2  # nothing was kept
        value = {"action_requests": [r.payload for r in sorted(
            pending, key=lambda r: r.payload["position"])],
            "review_configs": [{"action_name": r.payload["name"],
                                "allowed_decisions": DECISIONS}
                               for r in sorted(pending, key=lambda r: r.payload["position"])]}
        decided = gate.respond_batch(thread, reviewer(value), actor="ann")
        assert [r.payload["name"] for r in decided] == ["delete_user", "send_email"]
        _until_ran(runs, "send_email:see you")
    assert runs == Counter({"get_user": 1, "send_email:see you": 1})


def test_http_respond_batch_answers_a_runs_pauses(tmp_path: Any) -> None:
    from loopgate_lc.background import BackgroundServer
    from loopgate_lc.server import create_app

    runs: Counter[str] = Counter()
    gate = Loopgate(f"sqlite:///{tmp_path / 'http-batch.db'}", poll_interval=0.05)
    gate.register_graph("cleaner", agent(runs, per_call()))
    with BackgroundServer(create_app(gate, close_gateway=True)) as live:
        thread = gate.start("cleaner", {"messages": [("user", "clean up user 7")]})
        _pending(gate, thread, 2)
        with httpx.Client(base_url=live.url, timeout=10) as client:
            listed = client.get("/hitl/pending").json()["requests"]
            assert {r["thread_id"] for r in listed} == {thread}
            answer = client.post("/hitl/respond/batch", json={
                "thread_id": thread, "decisions": [{"type": "approve"}, {"type": "approve"}]})
            assert answer.status_code == 200, answer.text
            assert [r["status"] for r in answer.json()["requests"]] == ["approved", "approved"]
        _until_ran(runs, "send_email:bye")
    assert runs == Counter({"get_user": 1, "delete_user:7": 1, "send_email:bye": 1})


def theirs_per_call() -> HumanInTheLoopMiddleware:
    return HumanInTheLoopMiddleware(interrupt_on={
        "delete_user": {"allowed_decisions": ["approve", "reject"]},
        "send_email": True}, interrupt_mode="per_call")


def test_the_gateway_answers_langchains_per_call_pauses_in_their_own_terms(
        tmp_path: Any) -> None:
    """LangChain's ``ToolApprovalRequest``: the decisions offered are the ones its response
    schema lists, an edit is checked against the tool's schema before anything is kept, and
    a timeout resumes as the rejection it stands for (LangChain's schema has no
    ``timeout``)."""
    from loopgate_lc import DecisionNotAllowed, InvalidDecision

    runs: Counter[str] = Counter()
    with Loopgate(f"sqlite:///{tmp_path / 'per-call.db'}", poll_interval=0.05,
                  default_timeout=60) as gate:
        gate.register_graph("cleaner", agent(runs, theirs_per_call()))
        thread = gate.start("cleaner", {"messages": [("user", "clean up user 7")]})
        by_name = {r.payload["name"]: r for r in _pending(gate, thread, 2)}
        delete, email = by_name["delete_user"], by_name["send_email"]
        assert delete.payload["allowed_decisions"] == ["approve", "reject"]
        assert email.payload["allowed_decisions"] == ["approve", "edit", "reject", "respond"]
        with pytest.raises(DecisionNotAllowed, match="allowed: approve, reject"):
            gate.respond(delete.id, {"type": "respond", "message": "no"})
        with pytest.raises(InvalidDecision, match="switch tools"):
            gate.respond(email.id, {"type": "edit", "edited_action": {
                "name": "delete_user", "args": {"user_id": "8"}}})
        with pytest.raises(InvalidDecision, match="body"):
            gate.respond(email.id, {"type": "edit", "edited_action": {
                "name": "send_email", "args": {"to": "ann@example.com", "body": 3}}})
        assert len(gate.pending(thread_id=thread)) == 2  # nothing was kept
        gate.respond(email.id, {"type": "edit", "edited_action": {
            "name": "send_email", "args": {"to": "ann@example.com", "body": "see you"}}})
        _until_ran(runs, "send_email:see you")
        # nobody answers the other one: the timer rejects it in LangChain's words
        gate.expire_due(now=delete.expires_at)  # type: ignore[arg-type]
        tick = threading.Event()
        for _ in range(400):  # bounded: the resume runs in the gateway's loop
            if any(e.event == "finished" for e in gate.audit(thread_id=thread)):
                break
            tick.wait(0.05)
        state = gate.audit(thread_id=thread)
        assert [e.event for e in state if e.event in ("resume_failed", "error")] == []
        assert gate.get(delete.id).status.value == "timeout"
    assert runs == Counter({"get_user": 1, "send_email:see you": 1})


def test_a_batched_edit_is_checked_against_an_args_schema_in_its_review_config() -> None:
    """``ReviewConfig.args_schema`` (LangChain's field; its middleware leaves it out, other
    code may fill it): an edit's arguments must match it before anything is kept."""
    from langgraph.graph import START, StateGraph
    from typing_extensions import TypedDict

    from loopgate_lc import InvalidDecision

    class State(TypedDict, total=False):
        answer: Any

    def review(state: State) -> State:
        return {"answer": interrupt({
            "action_requests": [{"name": "scale", "args": {"replicas": 2}}],
            "review_configs": [{"action_name": "scale", "allowed_decisions": ["approve", "edit"],
                                "args_schema": {"type": "object", "required": ["replicas"],
                                                "properties": {"replicas": {
                                                    "type": "integer", "maximum": 10}}}}]})}

    builder = StateGraph(State)
    builder.add_node("review", review)
    builder.add_edge(START, "review")
    graph = builder.compile(checkpointer=InMemorySaver())
    with Loopgate("memory://", poll_interval=0.05) as gate:
        gate.register_graph("scaler", graph)
        thread = gate.start("scaler", {})
        [record] = _pending(gate, thread, 1)
        with pytest.raises(InvalidDecision, match="replicas"):
            gate.respond(record.id, {"decisions": [{"type": "edit", "edited_action": {
                "name": "scale", "args": {"replicas": 50}}}]})
        assert gate.get(record.id).pending
        gate.respond(record.id, {"decisions": [{"type": "edit", "edited_action": {
            "name": "scale", "args": {"replicas": 3}}}]})
        tick = threading.Event()
        for _ in range(400):  # bounded: the resume runs in the gateway's loop
            if any(e.event == "finished" for e in gate.audit(thread_id=thread)):
                break
            tick.wait(0.05)
        state = graph.get_state({"configurable": {"thread_id": thread}})
    assert state.values["answer"]["decisions"][0]["edited_action"]["args"] == {"replicas": 3}
