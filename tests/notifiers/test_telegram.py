"""TelegramNotifier end to end: the real gateway, real python-telegram-bot, and FakeBotAPI
acting as Telegram and as the people tapping buttons and replying."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from loopgate_lc.errors import ConfigurationError, SignatureError
from loopgate_lc.fake_telegram import FakeBotAPI, parse_html
from loopgate_lc.gateway import Escalation, Loopgate
from loopgate_lc.guard import guard
from loopgate_lc.notifiers.base import LifecycleNotifier, Notifier
from loopgate_lc.notifiers.telegram import SECRET_HEADER, InvalidUpdate, TelegramNotifier
from loopgate_lc.policy import ApprovalPolicy, RiskLevel
from loopgate_lc.schema import RequestKind, Status
from loopgate_lc.stores.base import RequestRecord
from loopgate_lc.telegram_render import CUT_MARKER, MESSAGE_LIMIT
from loopgate_lc.testing import ScriptedChatModel, ai, call

CHAT = 42  # a private chat: its id is its user's id
ANN = {"id": 42, "username": "ann"}
BOB = {"id": 43, "username": "bob"}
GROUP = -100123
BOUND = 30.0  # seconds to wait for an event before failing; only a failing test waits this long


@pytest.fixture
def fake() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as server:
        yield server


def _notifier(fake: FakeBotAPI, **kwargs: Any) -> TelegramNotifier:
    kwargs.setdefault("retry_backoff", 0.01)
    kwargs.setdefault("poll_timeout", 5)
    return TelegramNotifier(fake.token, base_url=fake.base_url, **kwargs)


@asynccontextmanager
async def _running(
    fake: FakeBotAPI,
    *,
    store: str = "memory://",
    notifier: TelegramNotifier | None = None,
    policies: list[ApprovalPolicy] | None = None,
    gateway_options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> AsyncIterator[tuple[Loopgate, TelegramNotifier]]:
    telegram = notifier or _notifier(fake, **kwargs)
    gateway = Loopgate(
        store=store,
        notifiers=[telegram],
        policies=policies,
        poll_interval=0.05,
        retry_backoff=0.05,
        **(gateway_options or {}),
    )
    async with gateway:
        yield gateway, telegram


async def _message(fake: FakeBotAPI, chat: int, contains: str = "") -> dict[str, Any]:
    """The newest bot message in ``chat`` whose text contains ``contains``."""
    found = await fake.await_for(
        lambda: [m for m in fake.messages(chat) if contains in m["plain_text"]]
    )
    return found[-1]


def _button(message: dict[str, Any], label: str) -> str:
    for row in message["reply_markup"]["inline_keyboard"]:
        for button in row:
            if label in button["text"]:
                return str(button["callback_data"])
    raise AssertionError(f"no button {label!r} in {message['reply_markup']}")


async def _decided(gateway: Loopgate, request_id: str) -> RequestRecord:
    async def check() -> RequestRecord | None:
        record = await gateway.aget(request_id)
        return None if record.pending else record

    return await asyncio.wait_for(_poll(check), BOUND)


async def _poll(check: Any) -> Any:
    for _ in range(int(BOUND / 0.01)):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.01)
    raise TimeoutError("condition not met")


async def _delivered(gateway: Loopgate, request_id: str) -> None:
    async def check() -> bool:
        return "telegram" in (await gateway.aget(request_id)).message_refs

    await asyncio.wait_for(_poll(check), BOUND)


async def _edited(fake: FakeBotAPI, chat: int, message_id: int) -> dict[str, Any]:
    """The message once an edit removed its buttons."""

    def done() -> dict[str, Any] | None:
        message = fake.message(chat, message_id)
        return message if message["edits"] and message["reply_markup"] is None else None

    found: dict[str, Any] = await fake.await_for(done)
    return found


async def _answer(fake: FakeBotAPI, query_id: str) -> str:
    answer: dict[str, Any] = await fake.await_for(lambda: fake.callback_answer(query_id))
    return str(answer["text"])


async def _approval(gateway: Loopgate, **kwargs: Any) -> RequestRecord:
    kwargs.setdefault("session_id", "ops")
    kwargs.setdefault("tool_name", "deploy")
    kwargs.setdefault("args", {"environment": "production"})
    kwargs.setdefault("risk", "irreversible")
    kwargs.setdefault("confidence", 0.4)
    return await gateway.asubmit(kwargs.pop("message", "Deploy the release?"), **kwargs)


# --- protocol and configuration --------------------------------------------------------------


def test_is_a_lifecycle_notifier(fake: FakeBotAPI) -> None:
    telegram = _notifier(fake)
    assert isinstance(telegram, Notifier)
    assert isinstance(telegram, LifecycleNotifier)
    assert telegram.name == "telegram"
    assert telegram.application.concurrent_updates > 1  # updates are handled concurrently


def test_token_and_base_url_from_the_environment(
    fake: FakeBotAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    with pytest.raises(ConfigurationError, match="TELEGRAM_BOT_TOKEN"):
        TelegramNotifier()
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", fake.token)
    monkeypatch.setenv("TELEGRAM_API_BASE_URL", fake.base_url)
    telegram = TelegramNotifier()
    assert telegram.base_url == fake.base_url
    assert telegram.application.bot.base_url == f"{fake.base_url}{fake.token}"


def test_configuration_errors(fake: FakeBotAPI) -> None:
    with pytest.raises(ConfigurationError, match="webhook_secret"):
        _notifier(fake, mode="webhook")
    with pytest.raises(ConfigurationError, match="mode"):
        _notifier(fake, mode="carrier-pigeon")
    with pytest.raises(ConfigurationError, match="max_attempts"):
        _notifier(fake, max_attempts=0)


async def test_a_refused_token_stops_the_gateway_from_opening(fake: FakeBotAPI) -> None:
    telegram = TelegramNotifier("999:refused", base_url=fake.base_url)
    gateway = Loopgate(store="memory://", notifiers=[telegram])
    with pytest.raises(ConfigurationError, match="refused the bot token"):
        await gateway.aopen()
    await gateway.aclose()


# --- 1, 2, 5: approve, message contents, buttons, resolution ---------------------------------


async def test_approve_by_tap(fake: FakeBotAPI) -> None:
    async with _running(fake) as (gateway, _):
        await gateway.aregister_session("ops", telegram_id=CHAT)
        record = await _approval(gateway, metadata={"ticket": "OPS-7"})
        message = await _message(fake, CHAT, "Deploy the release?")
        assert message["parse_mode"] == "HTML"
        for expected in ("deploy", '"environment": "production"', "irreversible", "40%", "OPS-7"):
            assert expected in message["plain_text"]
        keys = [
            b["callback_data"] for row in message["reply_markup"]["inline_keyboard"] for b in row
        ]
        assert all(len(k) == 12 and record.id not in k for k in keys)  # short server-side keys

        query = fake.tap(CHAT, message["message_id"], _button(message, "Approve"), ANN)
        assert await _answer(fake, query) == "✅ Approved"
        decided = await _decided(gateway, record.id)
        assert decided.status is Status.APPROVED
        assert decided.decided_by == "telegram:42 (@ann)"
        assert decided.channel == "telegram"
        edited = await _edited(fake, CHAT, message["message_id"])
        assert edited["plain_text"].startswith("✅ Approved by @ann at ")
        assert edited["plain_text"].split("\n")[0].endswith(" UTC")
        assert "Deploy the release?" in edited["plain_text"]
        refs = (await gateway.aget(record.id)).message_refs
        assert refs["telegram"] == {"chat_id": CHAT, "message_id": message["message_id"]}


async def test_default_chat_and_no_chat(fake: FakeBotAPI) -> None:
    async with _running(fake, default_chat_id=777) as (gateway, _):
        await gateway.aregister_session("nochat")  # a session without telegram_id
        record = await _approval(gateway, session_id="nochat")
        assert (await _message(fake, 777))["plain_text"]
        assert (await gateway.aget(record.id)).pending
    async with _running(fake) as (gateway, _):
        record = await _approval(gateway, session_id=None)

        async def failed() -> Any:
            events = await gateway.aaudit(request_id=record.id)
            return [e for e in events if e.event == "delivery_failed"]

        [event] = await _poll(failed)
        assert "no Telegram chat configured" in event.details["error"]
        assert event.details["retrying_in"] is None  # not retryable
        assert (await gateway.aget(record.id)).pending  # fail closed: never approved


async def test_blocked_bot_is_not_retried_and_stays_pending(fake: FakeBotAPI) -> None:
    fake.block_chat(CHAT)
    async with _running(fake) as (gateway, _):
        await gateway.aregister_session("ops", telegram_id=CHAT)
        record = await _approval(gateway)

        async def failed() -> Any:
            events = await gateway.aaudit(request_id=record.id)
            return [e for e in events if e.event == "delivery_failed"]

        [event] = await _poll(failed)
        assert "blocked" in event.details["error"]
        assert event.details["retrying_in"] is None
        assert (await gateway.aget(record.id)).pending


async def test_plain_reject_by_tap(fake: FakeBotAPI) -> None:
    async with _running(fake) as (gateway, _):
        await gateway.aregister_session("ops", telegram_id=CHAT)
        record = await _approval(gateway)
        message = await _message(fake, CHAT)
        query = fake.tap(CHAT, message["message_id"], _button(message, "❌ Reject"), ANN)
        assert await _answer(fake, query) == "❌ Rejected"
        decided = await _decided(gateway, record.id)
        assert decided.status is Status.REJECTED
        assert decided.decision is not None and "message" not in decided.decision
        assert (await _edited(fake, CHAT, message["message_id"]))["plain_text"].startswith(
            "❌ Rejected by @ann"
        )


async def test_resolution_from_another_channel_edits_the_message(fake: FakeBotAPI) -> None:
    async with _running(fake) as (gateway, _):
        await gateway.aregister_session("ops", telegram_id=CHAT)
        approved = await _approval(gateway)
        first = await _message(fake, CHAT, approved.id)
        await gateway.arespond(approved.id, {"type": "approve"}, actor="api:ci", channel="api")
        assert (await _edited(fake, CHAT, first["message_id"]))["plain_text"].startswith(
            "✅ Approved by api:ci via api at "
        )
        cancelled = await _approval(gateway)
        second = await _message(fake, CHAT, cancelled.id)
        await gateway.acancel(cancelled.id, actor="api:ci", reason="release pulled")
        text = (await _edited(fake, CHAT, second["message_id"]))["plain_text"]
        assert text.startswith("🚫 Cancelled") and "release pulled" in text


async def test_timeout_edits_the_message(fake: FakeBotAPI) -> None:
    async with _running(fake) as (gateway, _):
        await gateway.aregister_session("ops", telegram_id=CHAT)
        record = await _approval(gateway, timeout=0.3)
        message = await _message(fake, CHAT)
        assert "Expires:" in message["plain_text"]
        decided = await _decided(gateway, record.id)
        assert decided.status is Status.TIMEOUT
        text = (await _edited(fake, CHAT, message["message_id"]))["plain_text"]
        assert text.startswith("⌛ Timed out") and "Outcome: reject" in text
        query = fake.tap(CHAT, message["message_id"], _button(message, "Approve"), ANN)
        assert (await _answer(fake, query)).startswith("already timed out at ")


# --- 3: reject with a reason, free-form input ------------------------------------------------


async def test_reject_with_reason_via_force_reply(fake: FakeBotAPI) -> None:
    async with _running(fake) as (gateway, _):
        await gateway.aregister_session("ops", telegram_id=CHAT)
        record = await _approval(gateway)
        message = await _message(fake, CHAT)
        query = fake.tap(CHAT, message["message_id"], _button(message, "with reason"), ANN)
        assert await _answer(fake, query) == "Reply to the message below."
        prompt = await _message(fake, CHAT, "reason for rejecting")
        assert prompt["reply_markup"]["force_reply"] is True

        # Text that is not a reply to the prompt is ignored, even if it names the request.
        fake.send_text(CHAT, f"reject {record.id}", ANN)
        fake.send_text(CHAT, "a reply to the request itself", ANN, message["message_id"])
        fake.send_text(CHAT, "not <b>now</b> & not here", ANN, prompt["message_id"])
        decided = await _decided(gateway, record.id)
        assert decided.status is Status.REJECTED
        assert decided.decision is not None
        assert decided.decision["message"] == "not <b>now</b> & not here"
        edited = await _edited(fake, CHAT, message["message_id"])
        assert "Reason: not <b>now</b> & not here" in edited["plain_text"]
        await _message(fake, CHAT, "❌ Rejected.")  # the confirmation reply


@pytest.mark.parametrize("kind", [RequestKind.INPUT, RequestKind.FEEDBACK, RequestKind.ANNOTATION])
async def test_free_text_answer_by_reply(fake: FakeBotAPI, kind: RequestKind) -> None:
    async with _running(fake) as (gateway, _):
        await gateway.aregister_session("ops", telegram_id=CHAT)
        record = await gateway.asubmit("Which branch?", kind=kind, session_id="ops")
        message = await _message(fake, CHAT, "Which branch?")
        await _delivered(gateway, record.id)  # a person replies after delivery completes
        assert message["reply_markup"]["force_reply"] is True
        fake.send_text(CHAT, "release/2.0 <script>", ANN, message["message_id"])
        decided = await _decided(gateway, record.id)
        assert decided.status is Status.ANSWERED
        assert decided.decision is not None
        assert decided.decision["message"] == "release/2.0 <script>"
        edited = await fake.await_for(lambda: fake.message(CHAT, message["message_id"])["edits"])
        assert edited
        text = fake.message(CHAT, message["message_id"])["plain_text"]
        assert text.startswith("💬 Answered by @ann") and "Answer: release/2.0 <script>" in text


async def test_choice_buttons(fake: FakeBotAPI) -> None:
    async with _running(fake) as (gateway, _):
        await gateway.aregister_session("ops", telegram_id=CHAT)
        options = ["Production", "Staging <b>only</b>", {"label": "Cancel", "approved": False}]
        record = await gateway.asubmit(
            "Where to?", kind=RequestKind.CHOICE, options=options, session_id="ops"
        )
        message = await _message(fake, CHAT, "Where to?")
        labels = [b["text"] for row in message["reply_markup"]["inline_keyboard"] for b in row]
        assert labels == ["Production", "Staging <b>only</b>", "Cancel"]
        query = fake.tap(CHAT, message["message_id"], _button(message, "Staging"), ANN)
        await _answer(fake, query)
        decided = await _decided(gateway, record.id)
        assert decided.decision is not None
        assert decided.decision["type"] == "respond"
        assert decided.decision["message"] == "Staging <b>only</b>"
        text = (await _edited(fake, CHAT, message["message_id"]))["plain_text"]
        assert "Answer: Staging <b>only</b>" in text


# --- 4: edit with JSON arguments, validated against the tool's schema ------------------------


async def test_edit_with_invalid_then_valid_arguments(fake: FakeBotAPI) -> None:
    ran: list[tuple[str, int]] = []

    @tool
    def deploy(environment: str, replicas: int = 1) -> str:
        """Deploy the current build."""
        ran.append((environment, replicas))
        return f"deployed to {environment}"

    model = ScriptedChatModel(
        script=[ai("", call("deploy", "d1", environment="production")), "done"]
    )
    graph = create_agent(model, tools=[guard(deploy)], checkpointer=InMemorySaver())
    async with _running(fake, default_chat_id=CHAT) as (gateway, _):
        gateway.register_graph("deploy", graph)
        await gateway.astart("deploy", {"messages": [HumanMessage("ship it")]})
        message = await _message(fake, CHAT, "Approval needed")
        [record] = await gateway.apending()
        query = fake.tap(CHAT, message["message_id"], _button(message, "Edit"), ANN)
        await _answer(fake, query)
        prompt = await _message(fake, CHAT, "new arguments for deploy")
        assert '"environment": "production"' in prompt["plain_text"]

        fake.send_text(CHAT, "environment=staging", ANN, prompt["message_id"])
        await _message(fake, CHAT, "not valid JSON")
        fake.send_text(CHAT, '["staging"]', ANN, prompt["message_id"])
        await _message(fake, CHAT, "must be one JSON object")
        fake.send_text(CHAT, '{"environment": 5}', ANN, prompt["message_id"])
        explained = await _message(fake, CHAT, "Not accepted")
        assert "environment" in explained["plain_text"]
        assert "still pending" in explained["plain_text"]
        assert (await gateway.aget(record.id)).pending
        assert ran == []

        fake.send_text(CHAT, '{"environment": "staging", "replicas": 2}', ANN, prompt["message_id"])
        decided = await _decided(gateway, record.id)
        assert decided.status is Status.EDITED
        assert decided.decision is not None
        assert decided.decision["edited_action"] == {
            "name": "deploy",
            "args": {"environment": "staging", "replicas": 2},
        }
        text = (await _edited(fake, CHAT, message["message_id"]))["plain_text"]
        assert text.startswith("✏️ Approved with edits by @ann") and '"replicas": 2' in text
        await fake.await_for(lambda: ran)
        assert ran == [("staging", 2)]


# --- 6: authorization -----------------------------------------------------------------------


async def test_only_approvers_may_decide(fake: FakeBotAPI) -> None:
    async with _running(fake) as (gateway, _):
        await gateway.aregister_session("ops", telegram_id=GROUP, approvers=["42"])
        record = await _approval(gateway)
        message = await _message(fake, GROUP)
        query = fake.tap(GROUP, message["message_id"], _button(message, "Approve"), BOB)
        assert "not authorized" in await _answer(fake, query)
        assert (await gateway.aget(record.id)).pending
        events = [e.event for e in await gateway.aaudit(request_id=record.id)]
        assert "unauthorized" in events

        # "Reject with reason" from a non-approver used to make the bot post a prompt in
        # the group; now it is refused before anything is posted, and audited.
        posted = len(fake.messages(GROUP))
        query = fake.tap(GROUP, message["message_id"], _button(message, "with reason"), BOB)
        assert "not authorized" in await _answer(fake, query)
        assert len(fake.messages(GROUP)) == posted
        events = [e.event for e in await gateway.aaudit(request_id=record.id)]
        assert events.count("unauthorized") == 2

        # A reply from someone else to an approver's prompt is refused the same way.
        query = fake.tap(GROUP, message["message_id"], _button(message, "with reason"), ANN)
        await _answer(fake, query)
        prompt = await _message(fake, GROUP, "reason for rejecting")
        fake.send_text(GROUP, "because", BOB, prompt["message_id"])
        await _message(fake, GROUP, "not authorized")
        assert (await gateway.aget(record.id)).pending

        query = fake.tap(GROUP, message["message_id"], _button(message, "Approve"), ANN)
        assert await _answer(fake, query) == "✅ Approved"
        assert (await _decided(gateway, record.id)).decided_by == "telegram:42 (@ann)"


async def test_notifier_approver_list(fake: FakeBotAPI) -> None:
    async with _running(fake, approvers=["@Ann"]) as (gateway, _):
        await gateway.aregister_session("ops", telegram_id=GROUP, approvers=["42", "43"])
        record = await _approval(gateway)
        message = await _message(fake, GROUP)
        query = fake.tap(GROUP, message["message_id"], _button(message, "Approve"), BOB)
        assert "not authorized" in await _answer(fake, query)
        assert (await gateway.aget(record.id)).pending
        # refused by the notifier's own list: audited too (it used to leave no trace)
        refusals = [e for e in await gateway.aaudit(request_id=record.id)
                    if e.event == "unauthorized"]
        assert [(e.channel, e.details["reason"]) for e in refusals] == [
            ("telegram", "not in the Telegram notifier's approvers")]
        query = fake.tap(GROUP, message["message_id"], _button(message, "Approve"), ANN)
        assert await _answer(fake, query) == "✅ Approved"


async def test_double_tap_is_told_who_decided(fake: FakeBotAPI) -> None:
    async with _running(fake) as (gateway, _):
        await gateway.aregister_session("ops", telegram_id=GROUP, approvers=["42", "43"])
        record = await _approval(gateway)
        message = await _message(fake, GROUP)
        first = fake.tap(GROUP, message["message_id"], _button(message, "Approve"), ANN)
        await _answer(fake, first)
        decided = await _decided(gateway, record.id)
        assert decided.decided_at is not None
        hhmm = decided.decided_at.strftime("%H:%M")
        late = fake.tap(GROUP, message["message_id"], _button(message, "❌ Reject"), BOB)
        assert await _answer(fake, late) == f"already approved by @ann at {hhmm} UTC"
        prompt = fake.tap(GROUP, message["message_id"], _button(message, "with reason"), BOB)
        assert await _answer(fake, prompt) == f"already approved by @ann at {hhmm} UTC"
        assert (await gateway.aget(record.id)).status is Status.APPROVED


# --- escaping and limits ----------------------------------------------------------------------

HOSTILE = "<b>x</b> </pre><script>&amp; & < *bold* _i_ [l](http://e.x) `c` \"q\" 'a'"


async def test_injection_in_every_field_is_shown_verbatim(fake: FakeBotAPI) -> None:
    policy = ApprovalPolicy(f"policy {HOSTILE}", "*", 0.99, RiskLevel.READ_ONLY)
    async with _running(fake, policies=[policy]) as (gateway, _):
        await gateway.aregister_session("ops", telegram_id=CHAT)
        record = await _approval(
            gateway,
            message=f"message {HOSTILE}",
            tool_name=f"tool {HOSTILE}",
            args={f"key {HOSTILE}": f"value {HOSTILE}"},
            metadata={f"meta {HOSTILE}": f"data {HOSTILE}"},
        )
        message = await _message(fake, CHAT, "message")
        plain = message["plain_text"]
        assert f"message {HOSTILE}" in plain
        assert f"tool {HOSTILE}" in plain
        assert f"meta {HOSTILE}: data {HOSTILE}" in plain
        assert f"policy {HOSTILE}" in plain  # the policy name and its reason
        assert json.dumps(f"value {HOSTILE}") in plain

        choice = await gateway.asubmit(
            f"pick {HOSTILE}", kind=RequestKind.CHOICE, options=[f"opt {HOSTILE}"], session_id="ops"
        )
        shown = await _message(fake, CHAT, "pick")
        assert f"opt {HOSTILE}" in shown["plain_text"]
        label = shown["reply_markup"]["inline_keyboard"][0][0]["text"]
        assert f"opt {HOSTILE}".startswith(label.removesuffix(CUT_MARKER))  # plain, cut
        choice_tap = fake.tap(CHAT, shown["message_id"], _button(shown, "opt"), ANN)
        await _answer(fake, choice_tap)
        chosen = await _decided(gateway, choice.id)
        assert chosen.decision is not None
        assert chosen.decision["message"] == f"opt {HOSTILE}"  # the full label, kept server-side

        query = fake.tap(CHAT, message["message_id"], _button(message, "with reason"), ANN)
        await _answer(fake, query)
        prompt = await _message(fake, CHAT, "reason for rejecting")
        fake.send_text(CHAT, f"reason {HOSTILE}", ANN, prompt["message_id"])
        await _decided(gateway, record.id)
        edited = await _edited(fake, CHAT, message["message_id"])
        assert f"Reason: reason {HOSTILE}" in edited["plain_text"]
    # Every message the bot sent or edited parsed as Telegram HTML.
    rejected = [c for c in fake.calls if c["status_code"] == 400]
    assert rejected == []


async def test_long_requests_are_cut_never_rejected(fake: FakeBotAPI) -> None:
    async with _running(fake) as (gateway, _):
        await gateway.aregister_session("ops", telegram_id=CHAT)
        record = await _approval(
            gateway,
            message="<&>" * 3000,
            args={"script": "rm -rf <dir> && echo done\n" * 800},
            metadata={f"k{i}": "v" * 500 for i in range(40)},
        )
        message = await _message(fake, CHAT, "Approval needed")
        assert len(message["plain_text"]) <= MESSAGE_LIMIT  # Telegram counts visible text
        assert CUT_MARKER in message["plain_text"]
        parse_html(message["text"])
        query = fake.tap(CHAT, message["message_id"], _button(message, "Approve"), ANN)
        await _answer(fake, query)
        await _decided(gateway, record.id)
        edited = await _edited(fake, CHAT, message["message_id"])
        assert len(edited["plain_text"]) <= MESSAGE_LIMIT
        assert edited["plain_text"].startswith("✅ Approved by @ann")
    assert [c for c in fake.calls if c["status_code"] == 400] == []


async def test_a_long_question_is_cut_by_visible_text(fake: FakeBotAPI) -> None:
    """A 19k-character message of markup characters showed 1,991 characters: the cut
    counted HTML escapes. Now the person sees about 3,000 and the cut is shown."""
    async with _running(fake) as (gateway, _):
        await gateway.aregister_session("ops", telegram_id=CHAT)
        await gateway.asubmit("<b>&" * 4750, session_id="ops")
        message = await _message(fake, CHAT, "Approval needed")
        plain = message["plain_text"]
        assert 2_900 <= len(plain) <= MESSAGE_LIMIT
        assert plain.count("<b>&") >= 700 and CUT_MARKER in plain


# --- retries ----------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_429_and_network_errors_are_retried(fake: FakeBotAPI) -> None:
    fake.rate_limit("sendMessage", times=2, retry_after=0.05)
    fake.fail_next("sendMessage", 1)  # 502 Bad Gateway: a network error
    async with _running(fake) as (gateway, _):
        await gateway.aregister_session("ops", telegram_id=CHAT)
        record = await _approval(gateway)
        message = await _message(fake, CHAT, "Approval needed")
        statuses = [c["status_code"] for c in fake.calls if c["method"] == "sendMessage"]
        assert statuses == [429, 429, 502, 200]
        assert len(fake.messages(CHAT)) == 1  # delivered once

        fake.rate_limit("editMessageText", times=1, retry_after=0.05)
        await gateway.arespond(record.id, {"type": "approve"}, actor="api:ci")
        await _edited(fake, CHAT, message["message_id"])
        edits = [c["status_code"] for c in fake.calls if c["method"] == "editMessageText"]
        assert edits == [429, 200]


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_long_rate_limits_go_back_to_the_outbox(fake: FakeBotAPI) -> None:
    fake.rate_limit("sendMessage", times=1, retry_after=120)
    async with _running(fake) as (gateway, _):
        await gateway.aregister_session("ops", telegram_id=CHAT)
        record = await _approval(gateway)

        async def failed() -> Any:
            events = await gateway.aaudit(request_id=record.id)
            return [e for e in events if e.event == "delivery_failed"]

        [event] = await _poll(failed)
        assert "retry after 120" in event.details["error"]
        assert event.details["retrying_in"] is not None  # retryable: the outbox tries again
        await _message(fake, CHAT, "Approval needed")  # and the next attempt goes through


async def test_escalation_renotifies_and_every_message_is_resolved(fake: FakeBotAPI) -> None:
    options = {
        "on_timeout": "escalate",
        "escalation": [Escalation(timeout=30, notifiers=("telegram",))],
    }
    async with _running(fake, gateway_options=options) as (gateway, _):
        await gateway.aregister_session("ops", telegram_id=CHAT)
        record = await _approval(gateway, timeout=0.2)
        first = await _message(fake, CHAT, "Deploy the release?")
        await fake.await_for(lambda: len(fake.messages(CHAT)) == 2)  # reminded after 0.2 s
        second = fake.messages(CHAT)[1]
        assert second["message_id"] != first["message_id"]

        async def reminder_stored() -> Any:  # the message is sent before its ref is stored
            refs = (await gateway.aget(record.id)).message_refs.get("telegram") or {}
            return refs if refs.get("message_id") == second["message_id"] else None

        refs = await _poll(reminder_stored)
        assert refs["previous"] == [{"chat_id": CHAT, "message_id": first["message_id"]}]

        query = fake.tap(CHAT, first["message_id"], _button(first, "Approve"), ANN)  # old one
        assert await _answer(fake, query) == "✅ Approved"
        for message in (first, second):
            edited = await _edited(fake, CHAT, message["message_id"])
            assert edited["plain_text"].startswith("✅ Approved by @ann")


# --- restarts ---------------------------------------------------------------------------------


async def test_restart_while_pending(fake: FakeBotAPI, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'loopgate.db'}"
    async with _running(fake, store=store) as (gateway, _):
        await gateway.aregister_session("ops", telegram_id=CHAT)
        first = await _approval(gateway)
        second = await _approval(gateway, message="Second release?")
        message = await _message(fake, CHAT, "Deploy the release?")
        other = await _message(fake, CHAT, "Second release?")
        query = fake.tap(CHAT, other["message_id"], _button(other, "with reason"), ANN)
        await _answer(fake, query)
        prompt = await _message(fake, CHAT, "reason for rejecting")
    # Nobody is polling now; taps and replies wait at Telegram.
    tap = fake.tap(CHAT, message["message_id"], _button(message, "Approve"), ANN)
    fake.send_text(CHAT, "/tmp is full", ANN, prompt["message_id"])  # a reply, not a command
    async with _running(fake, store=store, notifier=_notifier(fake)) as (gateway, _):
        assert await _answer(fake, tap) == "✅ Approved"
        assert (await _decided(gateway, first.id)).status is Status.APPROVED
        rejected = await _decided(gateway, second.id)
        assert rejected.decision is not None and rejected.decision["message"] == "/tmp is full"
        await _edited(fake, CHAT, message["message_id"])
        await _edited(fake, CHAT, other["message_id"])


async def test_the_same_notifier_survives_a_gateway_reopen(fake: FakeBotAPI) -> None:
    telegram = _notifier(fake)
    for attempt in range(2):  # each gateway opening runs on a new event loop
        async with _running(fake, notifier=telegram) as (gateway, _):
            await gateway.aregister_session("ops", telegram_id=CHAT)
            record = await _approval(gateway, message=f"Attempt {attempt}?")
            message = await _message(fake, CHAT, f"Attempt {attempt}?")
            query = fake.tap(CHAT, message["message_id"], _button(message, "Approve"), ANN)
            assert await _answer(fake, query) == "✅ Approved"
            assert (await _decided(gateway, record.id)).status is Status.APPROVED


# --- 7: commands ------------------------------------------------------------------------------


async def test_commands(fake: FakeBotAPI) -> None:
    async with _running(fake) as (gateway, _):
        assert [c["command"] for c in fake.commands] == ["start", "pending", "status", "help"]
        await gateway.aregister_session("ops", telegram_id=CHAT)
        await gateway.aregister_session("elsewhere", telegram_id=GROUP)
        mine = await _approval(gateway)
        theirs = await _approval(gateway, session_id="elsewhere")
        done = await _approval(gateway)
        await gateway.arespond(done.id, {"type": "reject"}, actor="api:ci")

        fake.send_text(CHAT, "/start", ANN)
        reply = await _message(fake, CHAT, "Your Telegram id")
        assert "Your Telegram id is 42" in reply["plain_text"]
        assert "telegram_id=42" in reply["plain_text"]

        fake.send_text(CHAT, "/pending", ANN)
        listing = await _message(fake, CHAT, "pending")
        assert mine.id in listing["plain_text"]
        assert theirs.id not in listing["plain_text"] and done.id not in listing["plain_text"]
        assert "1 pending" in listing["plain_text"]

        fake.send_text(CHAT, "/status", ANN)
        status = await _message(fake, CHAT, "Requests in this chat")
        assert "pending: 1" in status["plain_text"] and "rejected: 1" in status["plain_text"]

        fake.send_text(CHAT, "/help@loopgate_test_bot", ANN)
        help_text = await _message(fake, CHAT, "/pending")
        assert "Approve" in help_text["plain_text"]

        fake.send_text(GROUP, "/pending", BOB)
        assert theirs.id in (await _message(fake, GROUP, "pending"))["plain_text"]
        fake.send_text(-5, "/pending", BOB)
        await _message(fake, -5, "Nothing is waiting")


# --- 8: webhook mode --------------------------------------------------------------------------


@contextmanager
def _webhook_receiver(telegram: TelegramNotifier) -> Iterator[str]:
    """A tiny ASGI app on 127.0.0.1 that hands Telegram's POSTs to the notifier."""

    async def hook(request: Request) -> Response:
        try:
            await telegram.process_webhook_update(
                await request.json(), request.headers.get(SECRET_HEADER)
            )
        except SignatureError:
            return Response(status_code=403)
        return Response(status_code=200)

    app = Starlette(routes=[Route("/telegram", hook, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        threading.Event().wait(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/telegram"
    finally:
        server.should_exit = True
        thread.join(5)


async def test_webhook_mode(fake: FakeBotAPI) -> None:
    telegram = _notifier(fake, mode="webhook", webhook_secret="s3cret-token")
    with _webhook_receiver(telegram) as url:
        telegram.webhook_url = url
        async with _running(fake, notifier=telegram) as (gateway, _):
            assert fake.webhook is not None
            assert fake.webhook["url"] == url
            assert fake.webhook["secret_token"] == "s3cret-token"
            assert fake.calls_to("getUpdates") == []  # no polling in webhook mode
            await gateway.aregister_session("ops", telegram_id=CHAT)
            record = await _approval(gateway)
            message = await _message(fake, CHAT)
            query = fake.tap(CHAT, message["message_id"], _button(message, "Approve"), ANN)
            assert await _answer(fake, query) == "✅ Approved"
            assert (await _decided(gateway, record.id)).status is Status.APPROVED

            body = {"update_id": 99_999, "message": {}}
            with pytest.raises(SignatureError):
                await telegram.process_webhook_update(body, "wrong")
            with pytest.raises(SignatureError):
                await telegram.process_webhook_update(body, None)
            with pytest.raises(InvalidUpdate):
                await telegram.process_webhook_update({"no": "update_id"}, "s3cret-token")


async def test_webhook_updates_need_a_started_notifier(fake: FakeBotAPI) -> None:
    telegram = _notifier(fake, mode="webhook", webhook_secret="abc")
    with pytest.raises(ConfigurationError, match="not started"):
        await telegram.process_webhook_update({"update_id": 1}, "abc")


# --- quorum -------------------------------------------------------------------------------------

CY = {"id": 44, "username": "cy"}


async def test_quorum_count_is_shown_and_updated_on_every_vote(fake: FakeBotAPI) -> None:
    two = ApprovalPolicy(name="two-people", tool_pattern="deploy", require_explicit=True,
                         quorum=2)
    async with _running(fake, policies=[two]) as (gateway, _):
        await gateway.aregister_session("ops", telegram_id=GROUP, approvers=["42", "43", "44"])
        record = await _approval(gateway)
        message = await _message(fake, GROUP, "Deploy the release?")
        assert "Approvals: 0 of 2" in message["plain_text"]
        labels = [b["text"] for row in message["reply_markup"]["inline_keyboard"] for b in row]
        assert not any("Edit" in label for label in labels)  # only votes are offered

        query = fake.tap(GROUP, message["message_id"], _button(message, "Approve"), ANN)
        assert await _answer(fake, query) == "🗳 Vote counted. Approvals: 1 of 2"

        def counted() -> dict[str, Any] | None:
            shown = fake.message(GROUP, message["message_id"])
            return shown if "Approvals: 1 of 2" in shown["plain_text"] else None

        shown: dict[str, Any] = await fake.await_for(counted)
        assert shown["reply_markup"] is not None  # the buttons stay until it is decided
        assert (await gateway.aget(record.id)).pending

        again = fake.tap(GROUP, message["message_id"], _button(shown, "Approve"), ANN)
        assert await _answer(fake, again) == "You already voted approve; a vote counts once."
        assert len((await gateway.aget(record.id)).votes) == 1

        query = fake.tap(GROUP, message["message_id"], _button(shown, "Approve"), BOB)
        assert await _answer(fake, query) == "✅ Approved"
        decided = await _decided(gateway, record.id)
        assert decided.decided_by == "telegram:42 (@ann), telegram:43 (@bob)"
        assert [v.voter for v in decided.votes] == ["42", "43"]
        edited = await _edited(fake, GROUP, message["message_id"])
        assert edited["plain_text"].startswith("✅ Approved by @ann, @bob at ")
        late = fake.tap(GROUP, message["message_id"], _button(shown, "Approve"), CY)
        assert (await _answer(fake, late)).startswith("already approved by")


async def test_a_rejection_with_reason_under_quorum_decides_at_once(fake: FakeBotAPI) -> None:
    two = ApprovalPolicy(name="two-people", tool_pattern="deploy", require_explicit=True,
                         quorum=2)
    async with _running(fake, policies=[two]) as (gateway, _):
        await gateway.aregister_session("ops", telegram_id=GROUP, approvers=["42", "43"])
        record = await _approval(gateway)
        message = await _message(fake, GROUP, "Deploy the release?")
        query = fake.tap(GROUP, message["message_id"], _button(message, "with reason"), BOB)
        await _answer(fake, query)
        prompt = await _message(fake, GROUP, "reason for rejecting")
        fake.send_text(GROUP, "not on a Friday", BOB, prompt["message_id"])
        decided = await _decided(gateway, record.id)
        assert decided.status is Status.REJECTED
        assert decided.decision is not None
        assert decided.decision["message"] == "not on a Friday"
        edited = await _edited(fake, GROUP, message["message_id"])
        assert "not on a Friday" in edited["plain_text"]
