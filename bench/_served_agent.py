"""The agent the LangGraph Server benchmark deploys: one guarded tool; the server process
notes (wall clock, this machine) when a run starts and when the tool body runs."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.tools import tool

from loopgate_lc.guard import guard
from loopgate_lc.testing import ScriptedChatModel, ai, call


def _note(kind: str, ticket: str) -> None:
    with Path(os.environ["LOOPGATE_BENCH_LOG"]).open("a", encoding="utf-8") as out:
        out.write(f"{kind} {ticket} {time.time_ns()}\n")


@tool
def deploy(ticket: str) -> str:
    """Deploy the build named by the ticket."""
    _note("ran", ticket)
    return f"deployed {ticket}"


def _plan(messages: list[BaseMessage]) -> Any:
    ticket = next(str(m.content) for m in messages if isinstance(m, HumanMessage))
    _note("started", ticket)
    return ai("", call("deploy", f"c-{ticket}", ticket=ticket))


graph = create_agent(ScriptedChatModel(script=[_plan, "done"]), tools=[guard(deploy)])
