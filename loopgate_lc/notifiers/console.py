"""A notifier for the person at the terminal: prints each request and reads the answer.

Meant for local runs, demos and notebooks. It shows everything and escapes nothing (a
terminal renders no markup), but cuts very long values so one huge argument cannot push
the question off the screen.

Reading stdin blocks, so it happens in a worker thread while the event loop keeps
serving other requests; prompts are taken one at a time so two requests never fight over
the same keyboard. When there is no terminal (CI, a service), the notifier says how to
answer instead, and the request stays pending: an unreadable stdin never approves.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from loopgate_lc.errors import InvalidDecision, LoopgateError
from loopgate_lc.locations import answer_hint
from loopgate_lc.schema import ApprovalRequest, Option, RequestKind
from loopgate_lc.stores.base import RequestRecord

__all__ = ["ConsoleNotifier", "Responder", "has_terminal"]

logger = logging.getLogger(__name__)

VALUE_LIMIT = 2_000
"""Longest value printed in full; the rest is cut with the cut shown."""

_TEXT_KINDS = frozenset({RequestKind.INPUT, RequestKind.FEEDBACK, RequestKind.ANNOTATION})
_SHORTCUTS = {"a": "approve", "r": "reject", "e": "edit", "s": "respond"}
_LABELS = {"approve": "[a]pprove", "reject": "[r]eject", "edit": "[e]dit", "respond": "re[s]pond"}


class Responder(Protocol):
    """The part of the gateway the console needs: a way to hand a decision back."""

    async def arespond(
        self,
        request_id: str,
        decision: dict[str, Any],
        *,
        actor: str | None = None,
        channel: str = "api",
    ) -> Any: ...


class _BadAnswer(Exception):
    """What the person typed cannot become a decision; they are asked again."""


def has_terminal() -> bool:
    """Whether someone can type answers here: stdin is an open terminal. Scripts check it
    before choosing this notifier, so without one they can explain and exit instead of
    waiting for a prompt nobody sees."""
    stdin = sys.stdin
    try:
        return stdin is not None and stdin.isatty()
    except (ValueError, OSError):  # closed or detached stdin
        return False


def cut(text: str, limit: int = VALUE_LIMIT) -> str:
    """``text`` up to ``limit`` characters, with a visible note of how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... (cut, {len(text) - limit} more characters)"


def _default_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        user = "unknown"
    return f"console:{user}"


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_request(record: RequestRecord) -> str:
    """The block printed for a pending request."""
    request = record.shown
    tool = request.name
    lines = [f"=== loopgate: {record.kind} needs a person ===", f"request:    {record.id}"]
    if tool:
        lines.append(f"tool:       {cut(tool)}")
    if request.args is not None:
        args = json.dumps(request.args, indent=2, ensure_ascii=False, default=str)
        lines.append("arguments:  " + cut(args).replace("\n", "\n            "))
    if request.risk_level is not None:
        lines.append(f"risk:       {request.risk_level.value}")
    if request.confidence is not None:
        lines.append(f"confidence: {request.confidence:.2f}")
    if request.reason:
        lines.append(f"reason:     {cut(request.reason)}")
    message = request.message or request.description
    if message:
        lines.append(f"message:    {cut(message)}")
    options = request.options
    if options:
        lines.append(
            "options:    " + "   ".join(f"{i}) {cut(o.label)}" for i, o in enumerate(options, 1))
        )
    if record.expires_at is not None:
        lines.append(f"expires at: {_utc(record.expires_at)}")
    if record.session_id:
        lines.append(f"session:    {record.session_id}")
    return "\n".join(lines)


def describe_outcome(record: RequestRecord) -> str:
    """Who decided what, where and when (every channel that shows an outcome says it so)."""
    line = str(record.status)
    if record.decided_by:
        line += f" by {record.decided_by}"
    if record.channel:
        line += f" via {record.channel}"
    if record.decided_at is not None:
        line += f" at {_utc(record.decided_at)}"
    message = (record.decision or {}).get("message")
    if message:
        line += f": {cut(str(message))}"
    return line


def render_outcome(record: RequestRecord) -> str:
    """The line printed once a request is decided, whoever decided it."""
    return f"loopgate: request {record.id} {describe_outcome(record)}"




class ConsoleNotifier:
    """Show requests on a terminal and, once started with a gateway, take decisions there.

    Args:
        input_func: Reads one line after showing a prompt (``input`` by default; tests
            pass a script). Raising ``EOFError`` means there is no one to ask.
        output: Where to print (``sys.stdout`` at the time of printing by default).
        name: The notifier's name in outbox rows and audit events.
        max_attempts: Answers asked for per request when they cannot be used (unknown
            letter, bad JSON, a decision the gateway refuses) before giving up; the
            request then stays pending.
        actor: Recorded as the decider; defaults to ``console:<login name>``.
    """

    def __init__(
        self,
        input_func: Callable[[str], str] | None = None,
        output: TextIO | None = None,
        name: str = "console",
        *,
        max_attempts: int = 3,
        actor: str | None = None,
    ) -> None:
        self.name = name
        self.max_attempts = max(1, max_attempts)
        self.actor = actor or _default_actor()
        self._input: Callable[[str], str] = input_func if input_func is not None else input
        self._output = output
        self._gateway: Responder | None = None
        self._store_url: str | None = None
        self._lock = asyncio.Lock()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._prompting: str | None = None

    def __repr__(self) -> str:
        return f"ConsoleNotifier(name={self.name!r})"

    def _hint(self, request_id: str) -> str:
        """How to answer from another terminal, naming the gateway's own store."""
        return answer_hint(request_id, self._store_url)

    # -- the LifecycleNotifier protocol -----------------------------------------------------

    async def start(self, gateway: Responder) -> None:
        """Take decisions from now on, handing them to ``gateway.arespond``."""
        self._gateway = gateway
        self._store_url = getattr(gateway, "store_url", None)

    async def stop(self) -> None:
        """Stop asking. A line already being read is abandoned, never turned into a decision."""
        self._gateway = None
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def notify(self, request: RequestRecord) -> None:
        """Print the request and, with a gateway, start asking for the decision.

        Returns at once: the answer may take minutes, and the gateway's delivery must not
        wait for it (nor redeliver because it took long).
        """
        if request.id in self._tasks:  # a redelivery: one screen and conversation per request
            return
        self._write(render_request(request))
        if self._gateway is None:
            self._write(f"(no one is reading answers here; {self._hint(request.id)})")
            return
        task = asyncio.create_task(self._converse(request), name=f"loopgate-console-{request.id}")
        self._tasks[request.id] = task
        task.add_done_callback(lambda _done: self._forget(request.id, task))

    def _forget(self, request_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(request_id) is task:
            del self._tasks[request_id]

    async def on_resolved(self, request: RequestRecord) -> None:
        """Print the outcome and drop a question that was still waiting its turn."""
        self._write(render_outcome(request))
        task = self._tasks.get(request.id)
        if task is not None and self._prompting != request.id:
            task.cancel()

    async def join(self) -> None:
        """Wait until every open question has been answered or given up on."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    # -- the conversation -------------------------------------------------------------------

    async def _converse(self, record: RequestRecord) -> None:
        async with self._lock:
            self._prompting = record.id
            try:
                await self._ask_until_recorded(record)
            except Exception as exc:  # a notifier must never take the gateway down
                logger.exception("console prompt for %r failed", record.id)
                self._write(f"console prompt failed ({exc}); {self._hint(record.id)}")
            finally:
                self._prompting = None

    async def _ask_until_recorded(self, record: RequestRecord) -> None:
        request = record.shown
        tool = request.name
        self._write(
            f"--- decide request {record.id}" + (f" ({cut(tool, 200)})" if tool else "")
        )
        for _ in range(self.max_attempts):
            try:
                decision = await self._read_decision(record, request)
            except (EOFError, OSError):
                self._write(f"no terminal input; {self._hint(record.id)}. It stays pending.")
                return
            except _BadAnswer as exc:
                self._write(str(exc))
                continue
            gateway = self._gateway
            if gateway is None:  # stopped while the person was typing
                return
            try:
                await gateway.arespond(record.id, decision, actor=self.actor, channel=self.name)
            except InvalidDecision as exc:
                self._write(f"not accepted: {exc}")
                continue
            except LoopgateError as exc:  # AlreadyDecided, RequestNotFound, ApproverNotAllowed
                self._write(f"not recorded: {exc}")
                return
            self._write(f"recorded: {decision['type']} for request {record.id}")
            return
        self._write(
            f"no usable answer after {self.max_attempts} tries; request {record.id} stays "
            f"pending; {self._hint(record.id)}"
        )

    async def _read_decision(
        self, record: RequestRecord, request: ApprovalRequest
    ) -> dict[str, Any]:
        kind = record.kind
        options = request.options
        if kind is RequestKind.CHOICE and options:
            return await self._read_choice(options)
        if kind is RequestKind.CHOICE or kind in _TEXT_KINDS:
            text = await self._read("your answer: ")
            if not text.strip():
                raise _BadAnswer("an empty answer does not count; type your answer")
            return {"type": "respond", "message": text}
        return await self._read_approval(record, request)

    async def _read_choice(self, options: list[Option]) -> dict[str, Any]:
        answer = (await self._read(f"choose 1-{len(options)}: ")).strip()
        chosen: Option | None = None
        if answer.isdigit() and 1 <= int(answer) <= len(options):
            chosen = options[int(answer) - 1]
        else:
            chosen = next((o for o in options if o.label.casefold() == answer.casefold()), None)
        if chosen is None:
            raise _BadAnswer(
                f"{cut(answer, 80)!r} is not an option; type a number from 1 to {len(options)}"
            )
        return {"type": "respond", "message": chosen.label}

    async def _read_approval(
        self, record: RequestRecord, request: ApprovalRequest
    ) -> dict[str, Any]:
        tool = request.name
        allowed = [d for d in request.allowed_decisions or _LABELS if d in _LABELS]
        if record.kind is not RequestKind.TOOL_APPROVAL or not tool:
            allowed = [d for d in allowed if d != "edit"]  # edit needs a tool to re-call
        if not allowed:
            allowed = ["approve", "reject"]
        prompt = " / ".join(_LABELS[d] for d in allowed) + ": "
        answer = (await self._read(prompt)).strip().lower()
        choice = _SHORTCUTS.get(answer, answer)
        if choice not in allowed:
            raise _BadAnswer(f"{cut(answer, 80)!r} is not one of: {', '.join(allowed)}")
        if choice == "approve":
            return {"type": "approve"}
        if choice == "reject":
            reason = (await self._read("reason (optional): ")).strip()
            return {"type": "reject", "message": reason} if reason else {"type": "reject"}
        if choice == "edit":
            raw = await self._read("new arguments as JSON: ")
            try:
                args = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise _BadAnswer(f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(args, dict):
                raise _BadAnswer('the arguments must be a JSON object, like {"path": "/tmp/x"}')
            return {"type": "edit", "edited_action": {"name": str(tool), "args": args}}
        text = await self._read("message: ")
        if not text.strip():
            raise _BadAnswer("an empty message does not count")
        return {"type": "respond", "message": text}

    # -- terminal I/O -----------------------------------------------------------------------

    async def _read(self, prompt: str) -> str:
        """One line from ``input_func`` in a daemon thread.

        Not ``asyncio.to_thread``: the default executor's threads are joined when the
        loop and the interpreter shut down, so a prompt nobody answers would hang the
        exit. A daemon thread is simply left behind.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        read = self._input

        def settle_result(line: str) -> None:
            if not future.done():
                future.set_result(line)

        def settle_error(exc: Exception) -> None:
            if not future.done():
                future.set_exception(exc)

        def run() -> None:
            try:
                line = read(prompt)
            except Exception as exc:
                hand_back(settle_error, exc)
            else:
                hand_back(settle_result, line)

        def hand_back(settle: Callable[[Any], None], value: Any) -> None:
            # RuntimeError: the loop closed while we waited for the person.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, value)

        threading.Thread(target=run, name="loopgate-console-input", daemon=True).start()
        return await future

    def _write(self, text: str) -> None:
        out = self._output if self._output is not None else sys.stdout
        out.write(text + "\n")
        out.flush()
