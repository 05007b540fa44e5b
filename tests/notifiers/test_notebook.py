"""The notebook channel outside a kernel: plain-text fallback and escaping. The widgets
themselves are pressed from a real kernel in tests/test_notebooks.py (05_decide_in_jupyter)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from loopgate_lc import Loopgate, Status
from loopgate_lc.notifiers.console import ConsoleNotifier
from loopgate_lc.notifiers.notebook import NotebookNotifier, render_html
from loopgate_lc.schema import RequestKind
from loopgate_lc.stores.base import RequestRecord


def script(*lines: str) -> Any:
    answers: Iterator[str] = iter(lines)

    def read(prompt: str) -> str:
        return next(answers)

    return read


async def test_without_a_kernel_it_asks_in_plain_text() -> None:
    out = io.StringIO()
    inbox = NotebookNotifier(fallback=ConsoleNotifier(input_func=script("r", "too risky"),
                                                      output=out, name="notebook"))
    assert not inbox.widgets  # pytest is not a Jupyter kernel
    async with Loopgate("memory://", notifiers=[inbox]) as gate:
        record = await gate.asubmit("Drop the staging database?", timeout=30)
        decided = await gate.await_decision(record.id, timeout=10)
    assert decided.status is Status.REJECTED
    assert decided.channel == "notebook" and decided.decided_by == inbox.fallback.actor
    assert "Drop the staging database?" in out.getvalue()


def test_agent_and_user_text_is_escaped() -> None:
    record = RequestRecord(
        id="r-1", kind=RequestKind.TOOL_APPROVAL,
        payload={"name": "<b>rm</b>", "args": {"path": "<script>alert(1)</script>"},
                 "description": "Run <img src=x onerror=alert(1)>?", "reason": "a & b",
                 "policy": "p<1>"})
    shown = render_html(record)
    assert "<script>" not in shown and "<img" not in shown and "<b>rm</b>" not in shown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown
    assert "&lt;img src=x onerror=alert(1)&gt;" in shown and "a &amp; b" in shown


def test_long_arguments_are_cut_with_the_cut_shown() -> None:
    record = RequestRecord(id="r-2", kind=RequestKind.TOOL_APPROVAL,
                           payload={"name": "write", "args": {"text": "x" * 5000}})
    shown = render_html(record)
    assert "(cut," in shown and "x" * 5000 not in shown
