"""Decide in Jupyter: each pending request as a widget with the same controls as every
other channel.

Display the notifier once (``display(inbox)`` or leave it last in a cell); each request the
gateway files appears in it as a panel: the question or tool call (arguments as formatted
JSON), risk, confidence, policy, reason and deadline, and buttons to approve, reject with a
reason, edit the arguments (checked against the request's published schema, errors shown
beside the editor), respond, or choose an option. A request decided anywhere else (Telegram,
the CLI, another notebook) greys out with who decided what.

A notebook cell that blocks (a synchronous ``gate.run``) keeps the kernel from handling
clicks, so drive graphs in the background (``gate.register_graph`` + ``gate.start``, or
``asyncio.create_task(gate.arun(...))``) and let the cell finish. Where ipywidgets is not
installed or the code is not running in a kernel, the notifier falls back to the console
notifier's plain-text prompt.
"""

from __future__ import annotations

import asyncio
import getpass
import html
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC
from typing import Any

from loopgate_lc.errors import LoopgateError
from loopgate_lc.notifiers.console import ConsoleNotifier, Responder, cut, describe_outcome
from loopgate_lc.schema import RequestKind
from loopgate_lc.stores.base import RequestRecord

__all__ = ["NotebookNotifier", "RequestPanel"]

logger = logging.getLogger(__name__)

_TEXT_KINDS = frozenset({RequestKind.INPUT, RequestKind.FEEDBACK, RequestKind.ANNOTATION})


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return "unknown"


def widgets_available() -> bool:
    """True inside a Jupyter kernel with ipywidgets installed."""
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _row(name: str, value: str) -> str:
    return f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(name)}</th>" \
           f"<td>{html.escape(value)}</td></tr>"


def render_html(record: RequestRecord) -> str:
    """The panel's header: every piece of agent or user text escaped, long values cut."""
    request = record.shown
    rows = [_row("request", record.id), _row("kind", record.kind.value)]
    if request.name:
        rows.append(_row("tool", cut(request.name)))
    if request.risk_level is not None:
        rows.append(_row("risk", request.risk_level.value))
    if request.confidence is not None:
        rows.append(_row("confidence", f"{request.confidence:.2f}"))
    if request.policy:
        rows.append(_row("policy", cut(request.policy)))
    if request.reason:
        rows.append(_row("reason", cut(request.reason)))
    if record.expires_at is not None:
        rows.append(_row("deadline", record.expires_at.astimezone(UTC).strftime(
            "%Y-%m-%d %H:%M:%S UTC")))
    text = request.message or request.description
    parts = [f"<b>{html.escape(cut(text))}</b>" if text else "",
             f"<table>{''.join(rows)}</table>"]
    if request.args is not None:
        args = json.dumps(request.args, indent=2, ensure_ascii=False, default=str)
        parts.append(f"<pre>{html.escape(cut(args))}</pre>")
    return "".join(parts)


class RequestPanel:
    """The widget of one request; its controls are attributes so code (and tests) can
    press them: ``panel.approve.click()``, ``panel.reason.value = "..."``."""

    def __init__(self, record: RequestRecord, decide: Callable[[RequestPanel, dict[str, Any]],
                                                                None]) -> None:
        import ipywidgets as w

        self.record = record
        self._decide = decide
        request = record.shown
        allowed = set(request.allowed_decisions or ("approve", "reject", "respond"))
        self.header = w.HTML(render_html(record))
        self.error = w.HTML("")
        self.outcome = w.HTML("")
        self.reason = w.Text(placeholder="reason (the agent is told)")
        self.approve = w.Button(description="Approve", button_style="success")
        self.reject = w.Button(description="Reject", button_style="danger")
        self.edit_args = w.Textarea(
            value=json.dumps(request.args or {}, indent=2, ensure_ascii=False,
                             default=str),
            layout=w.Layout(width="100%", height="8em"))
        self.edit = w.Button(description="Run edited")
        self.answer = w.Text(placeholder="your answer")
        self.respond = w.Button(description="Respond")
        self.choices = [w.Button(description=o.label[:60], tooltip=o.label)
                        for o in request.options]
        self.approve.on_click(lambda _b: self._send({"type": "approve"}))
        self.reject.on_click(lambda _b: self._send(
            {"type": "reject", **({"message": self.reason.value} if self.reason.value else {})}))
        self.edit.on_click(lambda _b: self._send_edit())
        self.respond.on_click(lambda _b: self._send(
            {"type": "respond", "message": self.answer.value}))
        for button, option in zip(self.choices, request.options, strict=True):
            button.on_click(lambda _b, label=option.label: self._send(
                {"type": "respond", "message": label}))
        rows: list[Any] = [self.header]
        if self.choices:
            rows.append(w.HBox(self.choices))
        elif record.kind in _TEXT_KINDS:
            rows.append(w.HBox([self.answer, self.respond]))
        else:
            buttons = [b for b, kind in ((self.approve, "approve"), (self.reject, "reject"))
                       if kind in allowed]
            rows.append(w.HBox([*buttons, self.reason] if "reject" in allowed else buttons))
            if "edit" in allowed and request.args is not None:
                rows.append(w.VBox([self.edit_args, self.edit]))
            if "respond" in allowed:
                rows.append(w.HBox([self.answer, self.respond]))
        rows += [self.error, self.outcome]
        self.widget = w.VBox(rows, layout=w.Layout(border="1px solid #ccc", padding="6px",
                                                   margin="4px 0"))
        self.controls = [self.approve, self.reject, self.edit, self.respond, *self.choices,
                         self.reason, self.edit_args, self.answer]

    def _send_edit(self) -> None:
        try:
            args = json.loads(self.edit_args.value)
        except json.JSONDecodeError as exc:
            self.show_error(f"not valid JSON: {exc}")
            return
        self._send({"type": "edit", "edited_action": {
            "name": self.record.shown.name, "args": args}})

    def _send(self, decision: dict[str, Any]) -> None:
        self.error.value = ""
        self._decide(self, decision)

    def show_error(self, message: str) -> None:
        self.error.value = f"<span style='color:#b00'>{html.escape(message)}</span>"

    def show_decided(self, record: RequestRecord) -> None:
        self.outcome.value = f"<b>{html.escape(describe_outcome(record))}</b>"
        for control in self.controls:
            control.disabled = True
        self.record = record  # last: `decided` turns true once the panel shows it all

    @property
    def decided(self) -> bool:
        return not self.record.pending


class NotebookNotifier:
    """Shows requests as widgets in a notebook and takes decisions from them.

    Args:
        name: The notifier's name in outbox rows and audit events.
        actor: Recorded as the decider (default ``notebook:<login name>``).
        fallback: Used where widgets cannot render (no ipywidgets, no kernel); defaults
            to a :class:`~loopgate_lc.notifiers.console.ConsoleNotifier`.
    """

    def __init__(self, name: str = "notebook", *, actor: str | None = None,
                 fallback: ConsoleNotifier | None = None) -> None:
        self.name = name
        self.widgets = widgets_available()
        self.actor = actor or f"notebook:{_login()}"
        self.fallback = fallback or ConsoleNotifier(name=name, actor=self.actor)
        self.panels: dict[str, RequestPanel] = {}
        self._gateway: Responder | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self.box: Any = None
        if self.widgets:
            import ipywidgets as w

            self.box = w.VBox([w.HTML("<i>loopgate: no requests yet</i>")])

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.box if self.widgets else repr(self))

    def __repr__(self) -> str:
        pending = sum(not p.decided for p in self.panels.values())
        return f"<NotebookNotifier {self.name!r}: {pending} pending>"

    async def start(self, gateway: Responder) -> None:
        self._gateway = gateway
        self._loop = asyncio.get_running_loop()
        if not self.widgets:
            await self.fallback.start(gateway)

    async def stop(self) -> None:
        if not self.widgets:
            await self.fallback.stop()

    async def notify(self, request: RequestRecord) -> None:
        if not self.widgets:
            await self.fallback.notify(request)
            return
        with self._lock:
            if request.id in self.panels:
                return
            panel = RequestPanel(request, self._decide)
            self.panels[request.id] = panel
            shown = [p.widget for p in self.panels.values()]
        self.box.children = tuple(reversed(shown))  # newest first

    async def on_resolved(self, request: RequestRecord) -> None:
        if not self.widgets:
            await self.fallback.on_resolved(request)
            return
        panel = self.panels.get(request.id)
        if panel is not None:
            panel.show_decided(request)

    def panel(self, request_id: str) -> RequestPanel:
        """The widget of one request (KeyError until it was delivered here)."""
        return self.panels[request_id]

    def _decide(self, panel: RequestPanel, decision: dict[str, Any]) -> None:
        """Hand a click to the gateway without blocking the kernel; the panel shows the
        outcome or the gateway's error (a schema error for a bad edit) when it answers."""
        if self._gateway is None or self._loop is None:
            panel.show_error("this notifier is not attached to a running gateway")
            return
        coro = self._gateway.arespond(panel.record.id, decision, actor=self.actor,
                                      channel=self.name)
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)

        def settled(done: Future[Any]) -> None:
            error = done.exception()
            if error is None:
                result = done.result()
                if isinstance(result, RequestRecord):
                    panel.show_decided(result)
            elif isinstance(error, LoopgateError):
                panel.show_error(str(error))
            else:
                logger.warning("loopgate_lc: notebook decision failed: %r", error)
                panel.show_error(f"{type(error).__name__}: {error}")

        future.add_done_callback(settled)

    def wait_for_panel(self, request_id: str | None = None, timeout: float = 10.0
                       ) -> RequestPanel:
        """Block (bounded) until a request's panel exists: the newest undecided one, or
        ``request_id``'s. Meant for scripts and tests; a person just looks."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if request_id is not None and request_id in self.panels:
                    return self.panels[request_id]
                open_panels = [p for p in self.panels.values() if not p.decided]
            if request_id is None and open_panels:
                return open_panels[-1]
            time.sleep(0.02)
        raise TimeoutError(f"no request panel appeared within {timeout} s")

