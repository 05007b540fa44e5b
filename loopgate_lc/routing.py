"""Wiring for hand-built graphs that keeps every tool body exactly-once.

LangGraph's plain ``ToolNode`` behind ``tools_condition`` runs all of a message's tool
calls in ONE task. When one of them pauses, the whole task re-runs on resume, so an
already-finished sibling runs again. ``route_tool_calls`` sends each pending call to the
tool node as its own task (what ``create_agent`` does), so a finished call's result is
saved and never re-run.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langgraph.graph import END
from langgraph.types import Send

__all__ = ["route_tool_calls"]


def route_tool_calls(
    tools_node: str = "tools",
    *,
    end: str = END,
    messages_key: str = "messages",
) -> Callable[[Any], list[Send] | Hashable]:
    """A conditional-edge function: one ``Send`` per pending tool call, else ``end``.

    Example:
        >>> builder.add_conditional_edges("agent", route_tool_calls(), ["tools", END])
    """

    def route(state: Any) -> list[Send] | Hashable:
        messages: list[AnyMessage] = (
            state.get(messages_key, []) if isinstance(state, dict)
            else getattr(state, messages_key, state)
        )
        last = next((m for m in reversed(messages) if isinstance(m, AIMessage)), None)
        if last is None or not last.tool_calls:
            return end
        done = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
        pending = [call for call in last.tool_calls if call["id"] not in done]
        if not pending:
            return end
        return [Send(tools_node, [call]) for call in pending]

    return route
