"""Helpers for testing code that uses loopgate_lc: a scripted chat model, and (with the
gateway) scripted approvers and a recording notifier.

The scripted model picks its reply from the conversation itself (the number of AI
messages so far), not from an iterator, so a run resumed in another process gets the
same replies. No network, no provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import Field

from loopgate_lc.notifiers.base import Desk

__all__ = ["RecordingNotifier", "ScriptedApprover", "ScriptedChatModel", "ai", "call"]

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


class RecordingNotifier:
    """A notifier that remembers what it was asked to deliver.

    Args:
        name: Its name in the outbox and audit.
        fail_times: Fail this many deliveries first (with ``DeliveryError``), to test
            retries.
        retryable: Whether those failures are worth retrying.
    """

    def __init__(self, name: str = "recording", *, fail_times: int = 0,
                 retryable: bool = True) -> None:
        self.name = name
        self.fail_times = fail_times
        self.retryable = retryable
        self.notified: list[Any] = []
        self.resolved: list[Any] = []
        self.attempts = 0

    async def notify(self, request: Any) -> Any:
        from loopgate_lc.notifiers.base import DeliveryError

        self.attempts += 1
        if self.attempts <= self.fail_times:
            raise DeliveryError(f"{self.name}: failure {self.attempts} of {self.fail_times}",
                                retryable=self.retryable)
        self.notified.append(request)
        return {"seen": len(self.notified)}

    async def on_resolved(self, request: Any) -> None:
        self.resolved.append(request)


Script = Callable[[Any], Mapping[str, Any] | None]


class ScriptedApprover:
    """A notifier that answers every request itself, as a person would.

    ``decide`` gets the pending record and returns a decision dict (or None to leave
    it pending). Handy in tests, CI smoke runs and demos without a human.
    """

    def __init__(self, decide: Script | Mapping[str, Any] | None = None, *,
                 name: str = "scripted", actor: str = "scripted-approver") -> None:
        self.name = name
        self.actor = actor
        fixed = dict(decide) if isinstance(decide, Mapping) else {"type": "approve"}
        self._decide: Script = decide if callable(decide) else (lambda _record: fixed)
        self._desk: Desk | None = None
        self.answered: list[tuple[str, Mapping[str, Any]]] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, desk: Desk) -> None:
        self._desk = desk

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def notify(self, request: Any) -> Any:
        decision = self._decide(request)
        if decision is not None and self._desk is not None:
            task = asyncio.get_running_loop().create_task(self._answer(request.id, decision))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return None

    async def _answer(self, request_id: str, decision: Mapping[str, Any]) -> None:
        from loopgate_lc.errors import AlreadyDecided

        desk = self._desk
        if desk is None:  # stopped meanwhile
            return
        try:
            await desk.arespond(request_id, dict(decision), actor=self.actor,
                                channel=self.name)
        except AlreadyDecided:
            return
        self.answered.append((request_id, decision))

    async def on_resolved(self, request: Any) -> None:
        return None
