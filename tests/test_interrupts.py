"""The decision schema a pause publishes: generated once, inlined, judged as before."""

from __future__ import annotations

import json
import typing
from typing import Annotated, Any

import pytest
from jsonschema import Draft202012Validator
from langchain.agents import create_agent
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from pydantic import BaseModel, TypeAdapter, ValidationError, WithJsonSchema
from pydantic_core import to_json

from loopgate_lc import guard
from loopgate_lc.interrupts import decision_schema, published_text
from loopgate_lc.testing import ScriptedChatModel, ai, call


class Transfer(BaseModel):
    amount: int
    to: str


class Node(BaseModel):
    name: str
    children: list[Node] = []


def unpublished(schema: Any) -> Any:
    """The same type without the attached JSON schema: what pydantic would generate."""
    base, *meta = typing.get_args(schema)
    kept = [m for m in meta if not isinstance(m, WithJsonSchema)]
    return Annotated[(base, *kept)] if kept else base  # type: ignore[valid-type]


ANSWERS: list[dict[str, Any]] = [
    {"type": "approve"},
    {"type": "approve", "actor": "ana", "channel": "telegram"},
    {"type": "reject"},
    {"type": "reject", "message": "not today"},
    {"type": "respond", "message": "use the staging account"},
    {"type": "respond"},
    {"type": "edit", "edited_action": {"name": "transfer", "args": {"amount": 5, "to": "b"}}},
    {"type": "edit", "edited_action": {"name": "other", "args": {"amount": 5, "to": "b"}}},
    {"type": "edit", "edited_action": {"name": "transfer", "args": {"amount": "x"}}},
    {"type": "timeout", "outcome": "approve"},
    {"type": "cancel"},
    {"type": "maybe"},
    {},
]


def test_the_published_schema_has_no_refs_and_judges_answers_as_pydantics_own() -> None:
    schema = decision_schema(("approve", "edit", "reject", "respond"), name="transfer",
                             args_schema=Transfer)
    published = TypeAdapter(schema).json_schema()
    text = json.dumps(published)
    assert "$ref" not in text and "$defs" not in text
    one, batch = published["anyOf"]  # one decision, or LangChain's {"decisions": [one]}
    assert one["discriminator"] == {"propertyName": "type"}
    assert batch["properties"]["decisions"]["maxItems"] == 1
    original = TypeAdapter(unpublished(schema)).json_schema()
    assert "$ref" in json.dumps(original)  # the slow path it replaces
    fast, slow = Draft202012Validator(published), Draft202012Validator(original)
    verdicts = [fast.is_valid(answer) for answer in ANSWERS]
    assert verdicts == [slow.is_valid(answer) for answer in ANSWERS]
    assert True in verdicts and False in verdicts


def test_validation_is_unchanged() -> None:
    schema = decision_schema(("approve", "edit"), name="transfer", args_schema=Transfer)
    fast, slow = TypeAdapter(schema), TypeAdapter(unpublished(schema))
    for answer in ANSWERS:
        outcomes = []
        for adapter in (fast, slow):
            try:
                outcomes.append(("ok", repr(adapter.validate_python(answer))))
            except ValidationError as exc:
                outcomes.append(("error", str(exc.error_count())))
        assert outcomes[0] == outcomes[1], answer


@pytest.mark.parametrize("args_schema", [Transfer, Node])
def test_adapting_the_schema_again_reuses_its_compiled_validator(args_schema: Any) -> None:
    schema = decision_schema(("approve", "edit"), name="transfer", args_schema=args_schema)
    first, again = TypeAdapter(schema), TypeAdapter(schema)
    assert again.validator is first.validator  # not compiled again on every interrupt()
    assert again.json_schema() == first.json_schema()
    with pytest.raises(ValidationError):
        again.validate_python({"type": "maybe"})


def test_a_recursive_argument_type_keeps_the_slow_path_and_works() -> None:
    schema = decision_schema(("approve", "edit"), name="tree", args_schema=Node)
    assert not any(isinstance(m, WithJsonSchema) for m in typing.get_args(schema)[1:])
    adapter = TypeAdapter(schema)
    assert "$ref" in json.dumps(adapter.json_schema())
    edit = {"type": "edit", "edited_action": {
        "name": "tree", "args": {"name": "a", "children": [{"name": "b"}]}}}
    assert adapter.validate_python(edit) == edit


def test_a_guarded_pause_publishes_the_inlined_schema_and_resumes(
    config: dict[str, Any],
) -> None:
    ran: list[int] = []

    @tool(args_schema=Transfer)
    def transfer(amount: int, to: str) -> str:
        """Move money."""
        ran.append(amount)
        return "sent"

    guarded = guard(transfer)
    agent = create_agent(
        ScriptedChatModel(script=[ai("", call("transfer", amount=7, to="bo")), "ok"]),
        tools=[guarded], checkpointer=InMemorySaver())
    paused = agent.invoke({"messages": [("user", "pay")]}, config, version="v2")
    (pause,) = paused.interrupts
    # handed over as text parsed anew, it is what pydantic would publish, in its order
    expected = TypeAdapter(guarded.gate.schema_for("transfer", Transfer)).json_schema()
    assert json.dumps(pause.response_schema) == json.dumps(expected)
    assert "$ref" not in json.dumps(pause.response_schema)
    assert pause.response_schema["anyOf"][0]["discriminator"]["propertyName"] == "type"
    with pytest.raises(ValidationError):  # LangGraph still checks answers before saving
        agent.invoke(Command(resume={pause.id: {
            "type": "edit", "edited_action": {"name": "other", "args": {}}}}),
            config, version="v2")
    assert ran == []
    agent.invoke(Command(resume={pause.id: {"type": "approve"}}), config, version="v2")
    assert ran == [7]


def test_every_pause_publishes_a_schema_of_its_own() -> None:
    @tool(args_schema=Transfer)
    def transfer(amount: int, to: str) -> str:
        """Move money."""
        return "sent"

    guarded = guard(transfer)
    expected = TypeAdapter(guarded.gate.schema_for("transfer", Transfer)).json_schema()
    published = []
    for thread in ("mine-1", "mine-2"):
        agent = create_agent(
            ScriptedChatModel(script=[ai("", call("transfer", amount=7, to="bo")), "ok"]),
            tools=[guarded], checkpointer=InMemorySaver())
        (pause,) = agent.invoke({"messages": [("user", "pay")]},
                                {"configurable": {"thread_id": thread}},
                                version="v2").interrupts
        assert pause.response_schema == expected  # the first one's change did not leak
        published.append(pause.response_schema)
        pause.response_schema["anyOf"].clear()  # a caller's change stays its own
    assert published[0] is not published[1]


def test_a_pause_keeps_the_text_its_schema_was_published_from() -> None:
    @tool(args_schema=Transfer)
    def transfer(amount: int, to: str) -> str:
        """Move money."""
        return "sent"

    agent = create_agent(
        ScriptedChatModel(script=[ai("", call("transfer", amount=7, to="bo")), "ok"]),
        tools=[guard(transfer)], checkpointer=InMemorySaver())
    (pause,) = agent.invoke({"messages": [("user", "pay")]},
                            {"configurable": {"thread_id": "texts"}}, version="v2").interrupts
    # what a gateway files for this pause: the very text pydantic encodes the dict to
    assert published_text(pause.response_schema) == to_json(pause.response_schema).decode()
    # an equal dict that is not the published one is the filer's to encode
    assert published_text(json.loads(json.dumps(pause.response_schema))) is None
