"""The agent the LangGraph Server tests deploy with ``langgraph dev``.

A ``create_agent`` whose tools are guarded by loopgate_lc, driven by a scripted model
that reads its orders from the user's message (so any number of threads can run at
once): ``deploy:ENV`` calls ``deploy``, ``both:A,B`` calls ``deploy`` twice in one turn,
``ask:TEXT`` asks a person with plain ``interrupt()`` (a foreign interrupt). Every tool
body appends one line to the file named by ``SERVED_AGENT_LOG``, so tests count how
often each really ran. A deploy to an environment named ``hold-...`` keeps its run busy:
it says so with a ``started-ENV`` file beside the log and waits (bounded) for a
``release-ENV`` file.

``hitl`` and ``hitl_per_call`` are the same agent gated by LangChain's own
``HumanInTheLoopMiddleware`` (batched ``HITLRequest`` and per-call
``ToolApprovalRequest``) instead of loopgate_lc's guard.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.types import interrupt

from loopgate_lc.guard import guard
from loopgate_lc.testing import ScriptedChatModel, ai, call


def _ran(line: str) -> None:
    with Path(os.environ["SERVED_AGENT_LOG"]).open("a", encoding="utf-8") as out:
        out.write(line + "\n")


def _hold(environment: str) -> None:
    folder = Path(os.environ["SERVED_AGENT_LOG"]).parent
    (folder / f"started-{environment}").touch()
    deadline = time.monotonic() + 60
    while not (folder / f"release-{environment}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)


@tool
def deploy(environment: str, replicas: int = 1) -> str:
    """Deploy the release to an environment."""
    if environment.startswith("hold-"):
        _hold(environment)
    _ran(f"deploy {environment} {replicas}")
    return f"deployed to {environment} x{replicas}"


@tool
def ask_human(question: str) -> str:
    """Ask a person (with LangGraph's own interrupt, not loopgate_lc's)."""
    answer = interrupt(question)
    _ran(f"asked {question} -> {answer}")
    return str(answer)


def _first_turn(messages: list[BaseMessage]) -> AIMessage:
    order = next(str(m.content) for m in messages if isinstance(m, HumanMessage))
    verb, _, rest = order.partition(":")
    if verb == "deploy":
        return ai("", call("deploy", environment=rest))
    if verb == "both":
        first, second = rest.split(",")
        return ai("", call("deploy", "call_a", environment=first),
                  call("deploy", "call_b", environment=second))
    if verb == "ask":
        return ai("", call("ask_human", question=rest))
    return ai(f"nothing to do for {order!r}")


def _last_turn(messages: list[BaseMessage]) -> AIMessage:
    results = [str(m.content) for m in messages if isinstance(m, ToolMessage)]
    return ai("done: " + " | ".join(results))


def _model() -> Any:
    return ScriptedChatModel(script=[_first_turn, _last_turn])


graph = create_agent(_model(), tools=[guard(deploy, timeout=None), ask_human])
hitl = create_agent(_model(), tools=[deploy, ask_human], middleware=[
    HumanInTheLoopMiddleware(interrupt_on={"deploy": True})])
hitl_per_call = create_agent(_model(), tools=[deploy, ask_human], middleware=[
    HumanInTheLoopMiddleware(interrupt_on={"deploy": True}, interrupt_mode="per_call")])
