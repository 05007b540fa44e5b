"""The agent this folder deploys with ``langgraph dev``: ``create_agent`` with a guarded
``deploy`` tool. Swap ``ScriptedChatModel`` for your real chat model; nothing else changes.

A call pauses with the full loopgate_lc request in the thread state; the bridge (its own
process, or the app inside this deployment) files it, tells a person, and resumes the run
with their decision.
"""

from __future__ import annotations

from langchain.agents import create_agent
from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

from loopgate_lc import guard
from loopgate_lc.testing import ScriptedChatModel, ai, call


@tool
def deploy(version: str, environment: str = "production") -> str:
    """Deploy a version of the service."""
    return f"{version} is live on {environment}"


def _plan(messages: list[BaseMessage]) -> object:
    wish = next(str(m.content) for m in messages if isinstance(m, HumanMessage))
    return ai("", call("deploy", version=wish.split()[-1]))


def _report(messages: list[BaseMessage]) -> object:
    return ai(str([m.content for m in messages if isinstance(m, ToolMessage)][-1]))


graph = create_agent(ScriptedChatModel(script=[_plan, _report]), tools=[guard(deploy)])
