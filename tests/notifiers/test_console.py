"""ConsoleNotifier: what it prints, and how typed answers become decisions.

The gateway here is a test double that records ``arespond`` calls (and can be told to
refuse them); answers come from scripted ``input_func``s run in the notifier's real
worker threads.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from loopgate_lc.errors import AlreadyDecided, InvalidDecision
from loopgate_lc.locations import cli_command
from loopgate_lc.notifiers import ConsoleNotifier, LifecycleNotifier
from loopgate_lc.schema import RequestKind, Status
from tests.notifiers._records import make_record, resolved


class RecordingGateway:
    """Records decisions; raises the scripted errors first, one per call."""

    def __init__(self, *errors: Exception) -> None:
        self.calls: list[tuple[str, dict[str, Any], str | None, str]] = []
        self.errors = list(errors)

    async def arespond(
        self,
        request_id: str,
        decision: dict[str, Any],
        *,
        actor: str | None = None,
        channel: str = "api",
    ) -> None:
        self.calls.append((request_id, decision, actor, channel))
        if self.errors:
            raise self.errors.pop(0)


class Script:
    """An input function answering from a list, then EOF (no one at the terminal)."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if not self.answers:
            raise EOFError
        return self.answers.pop(0)


async def run(
    script: Callable[[str], str],
    *records: Any,
    gateway: RecordingGateway | None = None,
) -> tuple[RecordingGateway, str]:
    gateway = gateway or RecordingGateway()
    out = io.StringIO()
    notifier = ConsoleNotifier(script, out, actor="console:tester")
    await notifier.start(gateway)
    for record in records or (make_record(),):
        await notifier.notify(record)
    await notifier.join()
    await notifier.stop()
    return gateway, out.getvalue()


def test_is_a_lifecycle_notifier() -> None:
    notifier = ConsoleNotifier()
    assert isinstance(notifier, LifecycleNotifier)
    assert notifier.name == "console"
    assert notifier.actor.startswith("console:")


async def test_prints_the_request_readably() -> None:
    record = make_record(message="Clean up the old report?")
    _, out = await run(Script("a"), record)
    assert "request:    req-1" in out
    assert "tool:       delete_file" in out
    assert 'arguments:  {\n              "path": "/tmp/report.txt"\n            }' in out
    assert "risk:       irreversible" in out
    assert "confidence: 0.42" in out
    assert "reason:     irreversible tools need a person" in out
    assert "message:    Clean up the old report?" in out
    assert "expires at: 2026-01-02 04:04:05 UTC" in out


async def test_approve() -> None:
    gateway, out = await run(Script("a"))
    assert gateway.calls == [("req-1", {"type": "approve"}, "console:tester", "console")]
    assert "recorded: approve for request req-1" in out


async def test_full_words_work_too() -> None:
    gateway, _ = await run(Script("Approve"))
    assert gateway.calls[0][1] == {"type": "approve"}


async def test_reject_asks_for_a_reason() -> None:
    script = Script("r", "too risky")
    gateway, _ = await run(script)
    assert gateway.calls[0][1] == {"type": "reject", "message": "too risky"}
    assert script.prompts[1] == "reason (optional): "


async def test_reject_without_a_reason() -> None:
    gateway, _ = await run(Script("r", ""))
    assert gateway.calls[0][1] == {"type": "reject"}


async def test_edit_reads_json_arguments() -> None:
    gateway, _ = await run(Script("e", '{"path": "/tmp/other.txt"}'))
    assert gateway.calls[0][1] == {
        "type": "edit",
        "edited_action": {"name": "delete_file", "args": {"path": "/tmp/other.txt"}},
    }


async def test_bad_json_is_explained_and_asked_again() -> None:
    gateway, out = await run(Script("e", "{bad", "e", "[1, 2]", "e", '{"path": "x"}'))
    assert "not valid JSON" in out
    assert "must be a JSON object" in out
    assert [c[1]["type"] for c in gateway.calls] == ["edit"]


async def test_respond_sends_the_text() -> None:
    gateway, _ = await run(Script("s", "use the archive instead"))
    assert gateway.calls[0][1] == {"type": "respond", "message": "use the archive instead"}


async def test_unknown_letter_then_approve() -> None:
    gateway, out = await run(Script("x", "a"))
    assert "'x' is not one of: approve, edit, reject, respond" in out
    assert gateway.calls[0][1] == {"type": "approve"}


async def test_only_allowed_decisions_are_offered() -> None:
    record = make_record(allowed_decisions=["approve", "reject"])
    script = Script("e", "r", "no")
    gateway, out = await run(script, record)
    assert script.prompts[0] == "[a]pprove / [r]eject: "
    assert "'e' is not one of: approve, reject" in out
    assert gateway.calls[0][1] == {"type": "reject", "message": "no"}


async def test_empty_answers_never_approve() -> None:
    gateway, out = await run(Script("", " ", ""))
    assert gateway.calls == []
    assert "no usable answer after 3 tries; request req-1 stays pending" in out
    assert f"{cli_command()} approve req-1" in out


async def test_no_terminal_input_leaves_the_request_pending() -> None:
    gateway, out = await run(Script())
    assert gateway.calls == []
    assert f"no terminal input; answer with `{cli_command()} approve req-1 --store " in out


async def test_eof_while_asking_a_reason_does_not_reject() -> None:
    gateway, out = await run(Script("r"))
    assert gateway.calls == []
    assert "no terminal input" in out


async def test_choice_by_number() -> None:
    record = make_record("c-1", RequestKind.CHOICE, message="Where?", options=["Staging", "Prod"])
    script = Script("7", "2")
    gateway, out = await run(script, record)
    assert "options:    1) Staging   2) Prod" in out
    assert script.prompts[0] == "choose 1-2: "
    assert "'7' is not an option" in out
    assert gateway.calls == [
        ("c-1", {"type": "respond", "message": "Prod"}, "console:tester", "console")
    ]


async def test_choice_by_label() -> None:
    record = make_record("c-1", RequestKind.CHOICE, options=["Staging", "Prod"])
    gateway, _ = await run(Script("staging"), record)
    assert gateway.calls[0][1] == {"type": "respond", "message": "Staging"}


@pytest.mark.parametrize("kind", [RequestKind.INPUT, RequestKind.FEEDBACK, RequestKind.ANNOTATION])
async def test_text_kinds_send_the_text(kind: RequestKind) -> None:
    record = make_record("i-1", kind, message="Which region?")
    gateway, _ = await run(Script("", "eu-west-1"), record)
    assert gateway.calls == [
        ("i-1", {"type": "respond", "message": "eu-west-1"}, "console:tester", "console")
    ]


async def test_plain_approval_kind_offers_no_edit() -> None:
    record = make_record("p-1", RequestKind.CONFIRMATION, message="Ship it?")
    script = Script("a")
    gateway, _ = await run(script, record)
    assert script.prompts[0] == "[a]pprove / [r]eject / re[s]pond: "
    assert gateway.calls[0][1] == {"type": "approve"}


async def test_invalid_decision_is_shown_and_asked_again() -> None:
    gateway = RecordingGateway(InvalidDecision("args do not fit delete_file: path is required"))
    _, out = await run(Script("e", '{"p": 1}', "e", '{"path": "/x"}'), gateway=gateway)
    assert "not accepted: args do not fit delete_file: path is required" in out
    assert len(gateway.calls) == 2
    assert gateway.calls[1][1]["edited_action"]["args"] == {"path": "/x"}


async def test_invalid_decision_gives_up_after_three_tries() -> None:
    gateway = RecordingGateway(*(InvalidDecision("nope") for _ in range(5)))
    _, out = await run(Script("a", "a", "a", "a"), gateway=gateway)
    assert len(gateway.calls) == 3
    assert "stays pending" in out


async def test_already_decided_is_reported_once() -> None:
    error = AlreadyDecided(
        "req-1",
        status="approved",
        decided_by="telegram:42 (@alice)",
        decided_at=datetime(2026, 1, 2, 3, 10, tzinfo=UTC),
        channel="telegram",
    )
    gateway = RecordingGateway(error)
    _, out = await run(Script("r", "late", "a"), gateway=gateway)
    assert len(gateway.calls) == 1
    assert "not recorded: request 'req-1' was already approved by telegram:42 (@alice)" in out


async def test_long_arguments_are_cut_visibly() -> None:
    record = make_record(args={"body": "x" * 5_000})
    _, out = await run(Script("a"), record)
    full = json.dumps({"body": "x" * 5_000}, indent=2)
    assert f"... (cut, {len(full) - 2_000} more characters)" in out
    assert "x" * 4_000 not in out


async def test_questions_are_asked_one_at_a_time() -> None:
    script = Script("a", "r", "because")
    gateway, out = await run(script, make_record("one"), make_record("two"))
    assert [c[:2] for c in gateway.calls] == [
        ("one", {"type": "approve"}),
        ("two", {"type": "reject", "message": "because"}),
    ]
    assert out.index("--- decide request one") < out.index("--- decide request two")


async def test_without_a_gateway_it_only_shows() -> None:
    script = Script("a")
    out = io.StringIO()
    notifier = ConsoleNotifier(script, out)
    assert await notifier.notify(make_record()) is None
    await notifier.join()
    assert script.prompts == []
    assert f"{cli_command()} approve req-1" in out.getvalue()


async def test_the_loop_runs_while_waiting_and_resolution_elsewhere_drops_the_queue() -> None:
    gate = threading.Event()
    prompts: list[str] = []

    def blocking_input(prompt: str) -> str:
        prompts.append(prompt)
        if not gate.wait(5):  # bounded: the test opens the gate
            raise EOFError
        return "a"

    gateway = RecordingGateway()
    out = io.StringIO()
    notifier = ConsoleNotifier(blocking_input, out, actor="console:tester")
    await notifier.start(gateway)
    first, second = make_record("one"), make_record("two")
    await notifier.notify(first)
    await notifier.notify(second)  # returned although the first question is open
    await notifier.notify(second)  # an outbox redelivery: not shown or asked twice

    # "two" is decided in another channel while "one" is still being asked.
    await notifier.on_resolved(resolved(second, Status.APPROVED, {"type": "approve"}))
    gate.set()
    await notifier.join()
    await notifier.stop()

    assert [c[0] for c in gateway.calls] == ["one"]
    assert len(prompts) == 1
    assert out.getvalue().count("request:    two") == 1
    assert (
        "request two approved by telegram:42 (@alice) via telegram at 2026-01-02 03:10:00 UTC"
        in (out.getvalue())
    )


async def test_stop_abandons_an_open_question() -> None:
    gate = threading.Event()
    asked = threading.Event()

    def blocking_input(prompt: str) -> str:
        asked.set()
        gate.wait(5)
        return "a"

    gateway = RecordingGateway()
    notifier = ConsoleNotifier(blocking_input, io.StringIO())
    await notifier.start(gateway)
    await notifier.notify(make_record())
    for _ in range(3000):  # bounded: until the question is being read
        if asked.is_set():
            break
        await asyncio.sleep(0.01)
    assert asked.is_set()
    await notifier.stop()
    gate.set()
    await notifier.join()
    assert gateway.calls == []


async def test_on_resolved_prints_the_outcome_with_reason() -> None:
    out = io.StringIO()
    record = resolved(
        make_record(),
        Status.REJECTED,
        {"type": "reject", "message": "too risky"},
        by="console:bob",
        channel="console",
    )
    await ConsoleNotifier(output=out).on_resolved(record)
    assert out.getvalue() == (
        "loopgate: request req-1 rejected by console:bob via console at 2026-01-02 03:10:00 UTC: "
        "too risky\n"
    )
