"""Helpers for testing code that uses loopgate_lc: a scripted chat model, and (with the
gateway) scripted approvers and a recording notifier.

The scripted model picks its reply from the conversation itself (the number of AI
messages so far), not from an iterator, so a run resumed in another process gets the
same replies. No network, no provider.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import Field

__all__ = ["ScriptedChatModel", "ai", "call"]

Reply = AIMessage | str | Callable[[list[BaseMessage]], AIMessage | str]


def call(tool: str, call_id: str | None = None, /, **args: Any) -> dict[str, Any]:
    """A tool call for :func:`ai`: ``call("deploy", environment="production")``; the id
    defaults to ``call_<tool>``."""
    return {"name": tool, "args": args, "id": call_id or f"call_{tool}", "type": "tool_call"}


def ai(content: str = "", *calls: dict[str, Any]) -> AIMessage:
    """An AI message with tool calls: ``ai("", call("a", x=1), call("b", id="c2"))``."""
    return AIMessage(content=content, tool_calls=list(calls))


class ScriptedChatModel(BaseChatModel):
    """A chat model that replies from a script, by turn.

    Turn N (N = AI messages already in the conversation) gets ``script[N]``; past the
    end it repeats the last reply. A reply may be an ``AIMessage``, a string, or a
    function of the messages.
    """

    script: list[Any] = Field(default_factory=list)
    """Replies by turn: ``AIMessage``, ``str``, or ``f(messages) -> AIMessage | str``."""
    bound_tools: list[Any] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "loopgate-scripted"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Remember the tools the agent bound (tests read their schemas) and reply as
        scripted, whatever they are."""
        self.bound_tools = list(tools)
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if not self.script:
            reply: Reply = "done"
        else:
            turn = sum(isinstance(m, AIMessage) for m in messages)
            reply = self.script[min(turn, len(self.script) - 1)]
        if callable(reply):
            reply = reply(messages)
        message = AIMessage(content=reply) if isinstance(reply, str) else reply
        return ChatResult(generations=[ChatGeneration(message=message)])
