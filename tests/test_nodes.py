"""request_approval() from a plain LangGraph node, for every kind."""

from __future__ import annotations

from typing import Any, TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.types import Command
from pydantic import ValidationError

from loopgate_lc import ConfigurationError, HumanResponse, Status, request_approval


class State(TypedDict, total=False):
    answer: HumanResponse
    after: int


def graph_asking(**kwargs: Any) -> tuple[Any, list[int]]:
    effects: list[int] = []

    def ask(state: State) -> State:
        answer = request_approval(**kwargs)
        effects.append(1)  # a side effect after the pause runs once, on resume
        return {"answer": answer}

    builder = StateGraph(State)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    return builder.compile(checkpointer=InMemorySaver()), effects


def ask_and_answer(config: dict[str, Any], decision: dict[str, Any], **kwargs: Any) -> Any:
    graph, effects = graph_asking(**kwargs)
    (pause,) = graph.invoke({}, config, version="v2").interrupts
    assert effects == []
    result = graph.invoke(Command(resume={pause.id: decision}), config, version="v2")
    assert effects == [1]
    return pause, result.value["answer"]


def test_approval(config: dict[str, Any]) -> None:
    pause, answer = ask_and_answer(
        config, {"type": "approve", "actor": "telegram:1 (@ana)"},
        message="Deploy v2.1.0 to production?", metadata={"version": "v2.1.0"}, timeout=300,
    )
    value = pause.value
    assert (value["type"], value["message"], value["metadata"]) == (
        "approval", "Deploy v2.1.0 to production?", {"version": "v2.1.0"})
    assert value["allowed_decisions"] == ["approve", "reject"] and value["expires_at"]
    assert (answer.approved, answer.status, answer.decided_by) == (
        True, Status.APPROVED, "telegram:1 (@ana)")


def test_rejection_carries_the_reason(config: dict[str, Any]) -> None:
    _, answer = ask_and_answer(config, {"type": "reject", "message": "freeze week"},
                               message="Deploy?", kind="confirmation")
    assert (answer.approved, answer.status, answer.text) == (False, Status.REJECTED,
                                                            "freeze week")


@pytest.mark.parametrize(("choice", "approved"), [("Deploy", True), ("Cancel", False),
                                                  ("Review", False)])
def test_choice(config: dict[str, Any], choice: str, approved: bool) -> None:
    pause, answer = ask_and_answer(config, {"type": "respond", "message": choice},
                                   message="Deploy?", kind="choice",
                                   options=["Deploy", "Cancel", "Review"])
    assert [o["label"] for o in pause.value["options"]] == ["Deploy", "Cancel", "Review"]
    assert (answer.choice, answer.approved, answer.status) == (choice, approved,
                                                              Status.ANSWERED)


def test_choice_with_explicit_meanings(config: dict[str, Any]) -> None:
    _, answer = ask_and_answer(
        config, {"type": "respond", "message": "Staging first"}, message="Where?", kind="choice",
        options=[{"label": "Staging first", "approved": True}, "Abort"],
    )
    assert answer.approved and answer.choice == "Staging first"


def test_a_choice_must_name_an_option(config: dict[str, Any]) -> None:
    graph, _ = graph_asking(message="Env?", kind="choice", options=["Dev", "Prod"])
    (pause,) = graph.invoke({}, config, version="v2").interrupts
    with pytest.raises(ValidationError, match="'Dev' or 'Prod'"):
        graph.invoke(Command(resume={pause.id: {"type": "respond", "message": "QA"}}), config,
                     version="v2")
    assert [i.id for i in graph.get_state(config).interrupts] == [pause.id]


@pytest.mark.parametrize("kind", ["input", "feedback"])
def test_free_text(config: dict[str, Any], kind: str) -> None:
    _, answer = ask_and_answer(config, {"type": "respond", "message": "use <b>v2</b>"},
                               message="Context?", kind=kind)
    assert (answer.text, answer.approved, answer.status) == ("use <b>v2</b>", True,
                                                            Status.ANSWERED)


def test_annotation_returns_edited_data(config: dict[str, Any]) -> None:
    edit = {"type": "edit", "edited_action": {"name": "annotation",
                                              "args": {"label": "spam", "score": 0.2}}}
    pause, answer = ask_and_answer(config, edit, message="Label this", kind="annotation",
                                   data={"label": "ham", "score": 0.9})
    assert pause.value["args"] == {"label": "ham", "score": 0.9}
    assert (answer.status, answer.data, answer.approved) == (
        Status.EDITED, {"label": "spam", "score": 0.2}, True)


def test_timeout_and_cancel_are_not_approvals(config: dict[str, Any]) -> None:
    _, answer = ask_and_answer(config, {"type": "timeout", "message": "no answer in 300s"},
                               message="Deploy?")
    assert (answer.approved, answer.status) == (False, Status.TIMEOUT)


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="at least one option"):
        graph_asking(message="x", kind="choice")[0].invoke({}, {"configurable": {
            "thread_id": "cfg"}})
