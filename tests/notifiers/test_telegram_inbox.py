"""Telegram's ``/inbox``: a one-time sign-in link to the web inbox, in private chats only,
for users the operator mapped to an inbox identity."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from loopgate_lc.fake_telegram import FakeBotAPI
from loopgate_lc.gateway import Loopgate
from loopgate_lc.notifiers.telegram import TelegramNotifier
from loopgate_lc.server.inbox.auth import peek_link

ANN = {"id": 42, "username": "ann"}
BOB = {"id": 43, "username": "bob"}
GROUP = -100123


@pytest.fixture
def fake() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as server:
        yield server


async def _reply(fake: FakeBotAPI, chat: int, count: int) -> str:
    found = await fake.await_for(lambda: [m for m in fake.messages(chat) if m.get("from", {})
                                          .get("is_bot")][count - 1:])
    return str(found[0]["plain_text"])


async def test_inbox_answers_with_a_link_that_signs_in_as_the_mapped_identity(
        fake: FakeBotAPI) -> None:
    telegram = TelegramNotifier(
        fake.token, base_url=fake.base_url, retry_backoff=0.01, poll_timeout=1,
        inbox_url="https://hitl.example/",
        inbox_identity=lambda uid, name: "ann" if name == "ann" else None)
    async with Loopgate("memory://", notifiers=[telegram], poll_interval=0.05) as gateway:
        assert [c["command"] for c in fake.commands] == [
            "start", "pending", "status", "inbox", "help"]
        fake.send_text(42, "/help", ANN)
        assert "/inbox — a one-time link" in await _reply(fake, 42, 1)
        fake.send_text(42, "/inbox", ANN)
        text = await _reply(fake, 42, 2)
        assert "Sign in to the inbox as ann" in text
        url = next(w for w in text.split() if w.startswith("https://hitl.example/inbox/link/"))
        identity, _ = await peek_link(gateway.store, url.rsplit("/", 1)[1])
        assert identity == "ann"

        fake.send_text(43, "/inbox", BOB)
        refused = await _reply(fake, 43, 1)
        assert "no inbox identity" in refused and "43" in refused

        fake.send_text(GROUP, "/inbox", ANN)
        group = await _reply(fake, GROUP, 1)
        assert "private chat" in group and "/inbox/link/" not in group


async def test_inbox_without_a_public_url_says_it_is_not_set_up(fake: FakeBotAPI) -> None:
    telegram = TelegramNotifier(fake.token, base_url=fake.base_url, retry_backoff=0.01,
                                poll_timeout=1)
    async with Loopgate("memory://", notifiers=[telegram], poll_interval=0.05):
        fake.send_text(42, "/help", ANN)
        assert "/inbox" not in await _reply(fake, 42, 1)
        fake.send_text(42, "/inbox", ANN)
        assert "not set up" in await _reply(fake, 42, 2)
