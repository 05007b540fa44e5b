""""Approve & allow 1h" on Telegram, end to end: the real gateway, real
python-telegram-bot, and FakeBotAPI as Telegram and as the people tapping."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from loopgate_lc.errors import ConfigurationError
from loopgate_lc.fake_telegram import FakeBotAPI
from loopgate_lc.gateway import Loopgate
from loopgate_lc.notifiers.telegram import TelegramNotifier
from loopgate_lc.policy import ApprovalPolicy

CHAT = -100777  # a group: ann and bob see the same message
ANN = {"id": 42, "username": "ann"}
BOB = {"id": 43, "username": "bob"}
BOUND = 30.0  # seconds to wait for an event before failing; only a failing test waits this long


@pytest.fixture
def fake() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as server:
        yield server


@asynccontextmanager
async def running(fake: FakeBotAPI, *, policies: list[ApprovalPolicy] | None = None,
                  **options: Any) -> AsyncIterator[Loopgate]:
    telegram = TelegramNotifier(fake.token, base_url=fake.base_url, retry_backoff=0.01,
                                poll_timeout=5, **options)
    async with Loopgate("memory://", notifiers=[telegram], policies=policies,
                        poll_interval=0.05, retry_backoff=0.05) as gateway:
        await gateway.aregister_session("ops", telegram_id=CHAT, approvers=["42"])
        yield gateway


async def shown(fake: FakeBotAPI, contains: str = "staging") -> dict[str, Any]:
    """The newest request message (with buttons) mentioning ``contains``, once it is
    there."""
    found = await fake.await_for(lambda: [
        m for m in fake.messages(CHAT) if contains in m["plain_text"]
        and m.get("reply_markup") is not None], timeout=BOUND)
    return dict(found[-1])


def button(message: dict[str, Any], label: str) -> str:
    for row in message["reply_markup"]["inline_keyboard"]:
        for b in row:
            if b["text"] == label:
                return str(b["callback_data"])
    raise AssertionError(f"no button {label!r} in {message['reply_markup']}")


def labels(message: dict[str, Any]) -> list[str]:
    return [b["text"] for row in message["reply_markup"]["inline_keyboard"] for b in row]


async def answer(fake: FakeBotAPI, query_id: str) -> str:
    found: dict[str, Any] = await fake.await_for(lambda: fake.callback_answer(query_id),
                                                 timeout=BOUND)
    return str(found["text"])


async def deploy(gateway: Loopgate, env: str = "staging") -> Any:
    return await gateway.asubmit("deploy?", tool_name="deploy", args={"env": env},
                                 session_id="ops")


async def test_a_tap_on_approve_and_allow_remembers_the_call(fake: FakeBotAPI) -> None:
    async with running(fake) as gateway:
        first = await deploy(gateway)
        message = await shown(fake)
        assert "✅ Approve & allow 1h" in labels(message)
        # bob is not an approver of this session: his tap makes nothing
        refused = fake.tap(CHAT, message["message_id"],
                           button(message, "✅ Approve & allow 1h"), BOB)
        assert "not authorized" in await answer(fake, refused)
        assert await gateway.agrants() == []
        query = fake.tap(CHAT, message["message_id"],
                         button(message, "✅ Approve & allow 1h"), ANN)
        assert "Approved" in await answer(fake, query)
        [grant] = await gateway.agrants()
        assert (grant.created_by, grant.approver_id, grant.scope, grant.session_id) == (
            "telegram:42 (@ann)", "42", "session", "ops")
        assert grant.args == {"env": {"equals": "staging"}}
        assert grant.expires_at is not None and grant.request_id == first.id
        edited = await fake.await_for(lambda: (
            m if "Allowed again" in m["plain_text"] else None)
            if (m := fake.message(CHAT, message["message_id"]))["edits"] else None,
            timeout=BOUND)
        assert "in this session until" in edited["plain_text"]

        again = await deploy(gateway)
        assert again.decided_by == f"grant:{grant.id}"
        other = await deploy(gateway, "production")  # other arguments: asked
        assert other.pending
        await shown(fake, "production")
        # the approved-by-grant call was never shown: two request messages in all
        assert len([m for m in fake.messages(CHAT) if "deploy" in m["plain_text"]]) == 2


async def test_no_button_where_a_policy_wants_a_person_every_time(fake: FakeBotAPI) -> None:
    strict = [ApprovalPolicy("deploys", "deploy", require_explicit=True)]
    async with running(fake, policies=strict) as gateway:
        await deploy(gateway)
        message = await shown(fake)
        assert labels(message) == ["✅ Approve", "❌ Reject", "💬 Reject with reason"]


async def test_no_button_under_a_quorum(fake: FakeBotAPI) -> None:
    two = [ApprovalPolicy("two", "deploy", require_explicit=True, quorum=2)]
    async with running(fake, policies=two) as gateway:
        record = await gateway.asubmit("deploy?", tool_name="deploy", args={"env": "staging"},
                                       session_id="ops", risk="irreversible", confidence=1.0)
        assert record.request.quorum == 2
        message = await shown(fake)
        assert "✅ Approve" in labels(message)
        assert not [label for label in labels(message) if "allow" in label]


async def test_offers_are_configurable(fake: FakeBotAPI) -> None:
    async with running(fake, grant_offers=(900, 86_400)) as gateway:
        await deploy(gateway)
        message = await shown(fake)
        assert labels(message)[-2:] == ["✅ Approve & allow 15m", "✅ Approve & allow 1d"]
        query = fake.tap(CHAT, message["message_id"],
                         button(message, "✅ Approve & allow 15m"), ANN)
        await answer(fake, query)
        [grant] = await gateway.agrants()
        assert grant.expires_at is not None
        assert round((grant.expires_at - grant.created_at).total_seconds()) == 900
    async with running(fake, grant_offers=()) as gateway:
        await deploy(gateway, "dev")
        assert not any("allow" in label for label in labels(await shown(fake, '"dev"')))
    with pytest.raises(ConfigurationError):
        TelegramNotifier(fake.token, base_url=fake.base_url, grant_offers=(0,))
