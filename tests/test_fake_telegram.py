"""FakeBotAPI is a test tool, so it is tested like one: real python-telegram-bot, real HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import telegram
from telegram import (
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Update,
)
from telegram.error import BadRequest, Conflict, Forbidden, InvalidToken, NetworkError, RetryAfter
from telegram.ext import ApplicationBuilder, CommandHandler, ContextTypes

from loopgate_lc.fake_telegram import (
    MAX_CALLBACK_DATA_BYTES,
    MAX_MESSAGE_LENGTH,
    EntityParseError,
    FakeBotAPI,
    parse_html,
)

CHAT = 4242
ANN = {"id": 7, "username": "ann"}


@pytest.fixture
def fake() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as server:
        yield server


@pytest.fixture
async def bot(fake: FakeBotAPI) -> AsyncIterator[telegram.Bot]:
    async with telegram.Bot(fake.token, base_url=fake.base_url) as client:
        yield client


def _keyboard(*data: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(d or "x", callback_data=d) for d in data]])


# --- the HTML checker ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "plain"),
    [
        ("plain text", "plain text"),
        ("<b>bold</b> <strong>s</strong> <i>i</i> <em>e</em>", "bold s i e"),
        ("<u>u</u><ins>i</ins><s>s</s><strike>k</strike><del>d</del>", "uiskd"),
        ('<a href="https://example.org/?a=1&amp;b=2">link</a>', "link"),
        ('<pre><code class="language-json">{&quot;a&quot;: 1}</code></pre>', '{"a": 1}'),
        ('<tg-spoiler>x</tg-spoiler><span class="tg-spoiler">y</span>', "xy"),
        ("<blockquote>q</blockquote><blockquote expandable>r</blockquote>", "qr"),
        ("&lt;script&gt; &amp; &quot; &#39; &#x27; &#128512;", "<script> & \" ' ' \U0001f600"),
        ("a > b", "a > b"),
        ("<B>upper</B>", "upper"),
        ("<b>nested <i>fine</i></b>", "nested fine"),
    ],
)
def test_parse_html_accepts_what_telegram_accepts(source: str, plain: str) -> None:
    assert parse_html(source) == plain


@pytest.mark.parametrize(
    ("source", "detail"),
    [
        ("a < b", 'unsupported start tag ""'),
        ("<script>x</script>", 'unsupported start tag "script"'),
        ("<div>x</div>", 'unsupported start tag "div"'),
        ("fish & chips", 'character "&"'),
        ("&nbsp;", 'unsupported HTML entity "&nbsp;"'),
        ("&#0;", "invalid character reference"),
        ("<b>open", 'can\'t find end tag corresponding to start tag "b"'),
        ("<b><i>x</b></i>", "unmatched end tag"),
        ("x</b>", "unexpected end tag"),
        ("<b", "unclosed start tag"),
        ("<b>x</b", "unclosed end tag"),
        ("<span>x</span>", 'must have class "tg-spoiler"'),
        ("<code><b>x</b></code>", 'cannot be nested in "code"'),
        ("<pre><b>x</b></pre>", 'cannot be nested in "pre"'),
        ('<a href="x&y">l</a>', 'character "&"'),
    ],
)
def test_parse_html_rejects_what_telegram_rejects(source: str, detail: str) -> None:
    with pytest.raises(EntityParseError, match=detail.replace("(", r"\(")):
        parse_html(source)


def test_parse_html_reports_byte_offsets() -> None:
    with pytest.raises(EntityParseError, match="byte offset 3"):
        parse_html("é <x")  # "é" is two bytes in UTF-8


# --- lifecycle -------------------------------------------------------------------------------


def test_sync_context_manager_serves_and_stops() -> None:
    server = FakeBotAPI()
    with server:
        assert server.running
        assert server.url.startswith("http://127.0.0.1:")
        response = httpx.get(f"{server.base_url}{server.token}/getMe")
        assert response.json()["result"]["username"] == "loopgate_test_bot"
    assert not server.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.base_url}{server.token}/getMe")


async def test_async_context_manager() -> None:
    server = FakeBotAPI(bot_username="other_bot")
    async with server, telegram.Bot(server.token, base_url=server.base_url) as client:
        assert client.username == "other_bot"
    assert not server.running


def test_only_loopback_hosts() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FakeBotAPI(host="0.0.0.0")


async def test_wrong_token_is_unauthorized(fake: FakeBotAPI) -> None:
    client = telegram.Bot("999:wrong", base_url=fake.base_url)
    with pytest.raises(InvalidToken):
        await client.get_me()
    assert fake.calls[-1]["status_code"] == 401


def test_unknown_method_is_404(fake: FakeBotAPI) -> None:
    response = httpx.post(f"{fake.base_url}{fake.token}/sendTelepathy", json={})
    assert response.status_code == 404
    assert response.json() == {"ok": False, "error_code": 404, "description": "Not Found"}


def test_json_bodies_and_method_names_are_case_insensitive(fake: FakeBotAPI) -> None:
    response = httpx.post(
        f"{fake.base_url}{fake.token}/SENDMESSAGE",
        json={"chat_id": CHAT, "text": "hi", "reply_markup": {"force_reply": True}},
    )
    assert response.json()["ok"] is True
    assert fake.messages(CHAT)[0]["reply_markup"] == {"force_reply": True}


# --- messages ------------------------------------------------------------------------------


async def test_send_and_edit_keep_current_state(fake: FakeBotAPI, bot: telegram.Bot) -> None:
    sent = await bot.send_message(
        CHAT, "<b>Deploy?</b> a &amp; b", parse_mode="HTML", reply_markup=_keyboard("ok", "no")
    )
    assert sent.text == "Deploy? a & b"
    [stored] = fake.messages(CHAT)
    assert stored["text"] == "<b>Deploy?</b> a &amp; b"
    assert stored["plain_text"] == "Deploy? a & b"
    assert stored["parse_mode"] == "HTML"
    assert stored["reply_markup"]["inline_keyboard"][0][1]["callback_data"] == "no"

    await bot.edit_message_text("<i>Approved</i>", CHAT, sent.message_id, parse_mode="HTML")
    [edited] = fake.messages(CHAT)
    assert edited["plain_text"] == "Approved"
    assert edited["reply_markup"] is None
    assert edited["edits"] == 1
    assert edited["edit_date"] is not None

    with pytest.raises(BadRequest, match=r"(?i)not modified"):
        await bot.edit_message_text("<i>Approved</i>", CHAT, sent.message_id, parse_mode="HTML")
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("x", CHAT, 999)


async def test_edit_reply_markup_removes_buttons(fake: FakeBotAPI, bot: telegram.Bot) -> None:
    sent = await bot.send_message(CHAT, "q", reply_markup=_keyboard("a"))
    await bot.edit_message_reply_markup(CHAT, sent.message_id, reply_markup=None)
    assert fake.messages(CHAT)[0]["reply_markup"] is None
    with pytest.raises(BadRequest, match=r"(?i)not modified"):
        await bot.edit_message_reply_markup(CHAT, sent.message_id, reply_markup=None)


async def test_message_length_limit(fake: FakeBotAPI, bot: telegram.Bot) -> None:
    await bot.send_message(CHAT, "x" * MAX_MESSAGE_LENGTH)
    with pytest.raises(BadRequest, match=r"(?i)too long"):
        await bot.send_message(CHAT, "x" * (MAX_MESSAGE_LENGTH + 1))
    # The limit counts text after entity parsing, as Telegram does.
    await bot.send_message(CHAT, "<b>" + "x" * MAX_MESSAGE_LENGTH + "</b>", parse_mode="HTML")
    with pytest.raises(BadRequest, match=r"(?i)too long"):
        await bot.send_message(CHAT, "&amp;" * (MAX_MESSAGE_LENGTH + 1), parse_mode="HTML")
    assert len(fake.messages(CHAT)) == 2


async def test_empty_text_is_rejected(bot: telegram.Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)empty"):
        await bot.send_message(CHAT, "<b> </b>", parse_mode="HTML")


async def test_malformed_html_is_rejected(fake: FakeBotAPI, bot: telegram.Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)can't parse entities"):
        await bot.send_message(CHAT, "<b>1 < 2</b>", parse_mode="HTML")
    with pytest.raises(BadRequest, match=r"(?i)can't parse entities"):
        await bot.send_message(CHAT, "R&D", parse_mode="HTML")
    assert fake.messages(CHAT) == []
    # Without a parse mode the same text is fine.
    await bot.send_message(CHAT, "<b>1 < 2</b> R&D")


async def test_callback_data_limit_counts_bytes(fake: FakeBotAPI, bot: telegram.Bot) -> None:
    await bot.send_message(CHAT, "ok", reply_markup=_keyboard("a" * MAX_CALLBACK_DATA_BYTES))
    with pytest.raises(BadRequest, match=r"(?i)BUTTON_DATA_INVALID"):
        await bot.send_message(
            CHAT, "no", reply_markup=_keyboard("a" * (MAX_CALLBACK_DATA_BYTES + 1))
        )
    with pytest.raises(BadRequest, match=r"(?i)BUTTON_DATA_INVALID"):  # 33 two-byte characters
        await bot.send_message(CHAT, "no", reply_markup=_keyboard("é" * 33))
    assert [m["plain_text"] for m in fake.messages(CHAT)] == ["ok"]


async def test_blocked_chat_is_forbidden(fake: FakeBotAPI, bot: telegram.Bot) -> None:
    fake.block_chat(CHAT)
    with pytest.raises(Forbidden, match=r"(?i)blocked"):
        await bot.send_message(CHAT, "hello")


async def test_reply_to_missing_message_fails(bot: telegram.Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)replied not found"):
        await bot.send_message(CHAT, "x", reply_to_message_id=55)


# --- failure injection -------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")  # PTB's own str()
async def test_rate_limit_then_success(fake: FakeBotAPI, bot: telegram.Bot) -> None:
    fake.rate_limit("sendMessage", times=2, retry_after=0.05)
    for _ in range(2):
        with pytest.raises(RetryAfter) as caught:
            await bot.send_message(CHAT, "x")
        assert "0.05" in str(caught.value)
    await bot.send_message(CHAT, "x")
    statuses = [c["status_code"] for c in fake.calls if c["method"] == "sendMessage"]
    assert statuses == [429, 429, 200]


def test_rate_limit_body_matches_telegram(fake: FakeBotAPI) -> None:
    fake.rate_limit("sendMessage")
    response = httpx.post(f"{fake.base_url}{fake.token}/sendMessage", json={"chat_id": 1})
    assert response.status_code == 429
    assert response.json() == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 1",
        "parameters": {"retry_after": 1},
    }
    with pytest.raises(ValueError, match="positive"):
        fake.rate_limit("sendMessage", retry_after=0)


async def test_fail_next_gives_network_errors(fake: FakeBotAPI, bot: telegram.Bot) -> None:
    fake.fail_next("sendMessage")
    with pytest.raises(NetworkError, match=r"(?i)Bad Gateway"):
        await bot.send_message(CHAT, "x")
    await bot.send_message(CHAT, "x")
    assert len(fake.messages(CHAT)) == 1


# --- updates: long polling -----------------------------------------------------------------


async def test_get_updates_long_polls_and_honours_offset(
    fake: FakeBotAPI, bot: telegram.Bot
) -> None:
    assert await bot.get_updates(timeout=0) == ()
    waiting = asyncio.create_task(bot.get_updates(timeout=10))
    await fake.await_for(lambda: len(fake.calls_to("getUpdates")) == 2)
    assert not waiting.done()
    fake.send_text(CHAT, "hello", ANN)
    [first] = await asyncio.wait_for(waiting, 5)  # woken by the update, not the timeout
    assert first.message is not None and first.message.text == "hello"

    # Unconfirmed updates come again; offset confirms them.
    again = await bot.get_updates(timeout=0)
    assert [u.update_id for u in again] == [first.update_id]
    fake.send_text(CHAT, "second", ANN)
    later = await bot.get_updates(offset=first.update_id + 1, timeout=0)
    assert [u.message.text for u in later if u.message] == ["second"]
    assert fake.pending_updates == 1


async def test_second_poller_terminates_the_first(fake: FakeBotAPI, bot: telegram.Bot) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=10))
    await fake.await_for(lambda: fake.calls_to("getUpdates"))
    async with telegram.Bot(fake.token, base_url=fake.base_url) as other_instance:
        second = asyncio.create_task(other_instance.get_updates(timeout=10))
        with pytest.raises(Conflict, match=r"(?i)terminated by other getUpdates"):
            await asyncio.wait_for(first, 5)
        fake.send_text(CHAT, "hi", ANN)
        assert len(await asyncio.wait_for(second, 5)) == 1


async def test_commands_carry_bot_command_entities(fake: FakeBotAPI, bot: telegram.Bot) -> None:
    stored = fake.send_text(CHAT, "/pending@loopgate_test_bot now", ANN)
    assert stored["from"]["username"] == "ann"
    [update] = await bot.get_updates(timeout=0)
    assert update.message is not None
    assert update.message.entities[0].type == "bot_command"
    assert update.message.entities[0].length == len("/pending@loopgate_test_bot")


async def test_reply_carries_the_replied_message(fake: FakeBotAPI, bot: telegram.Bot) -> None:
    prompt = await bot.send_message(CHAT, "Why?", reply_markup=ForceReply(selective=True))
    fake.send_text(CHAT, "too risky", ANN, reply_to_message_id=prompt.message_id)
    [update] = await bot.get_updates(timeout=0)
    assert update.message is not None and update.message.reply_to_message is not None
    assert update.message.reply_to_message.message_id == prompt.message_id
    with pytest.raises(KeyError):
        fake.send_text(CHAT, "x", ANN, reply_to_message_id=999)


async def test_tap_and_answer(fake: FakeBotAPI, bot: telegram.Bot) -> None:
    sent = await bot.send_message(CHAT, "q", reply_markup=_keyboard("yes"))
    with pytest.raises(ValueError, match="never had a button"):
        fake.tap(CHAT, sent.message_id, "forged", ANN)
    with pytest.raises(KeyError):
        fake.tap(CHAT, 999, "yes", ANN)
    query_id = fake.tap(CHAT, sent.message_id, "yes", ANN)
    [update] = await bot.get_updates(timeout=0)
    assert update.callback_query is not None
    assert update.callback_query.id == query_id
    assert update.callback_query.data == "yes"
    assert update.callback_query.from_user.id == ANN["id"]
    assert fake.callback_answer(query_id) is None

    await bot.answer_callback_query(query_id, "done")
    assert fake.callback_answer(query_id) == {
        "callback_query_id": query_id,
        "text": "done",
        "show_alert": False,
        "url": None,
        "cache_time": None,
    }
    with pytest.raises(BadRequest, match=r"(?i)query ID is invalid"):
        await bot.answer_callback_query(query_id, "twice")
    with pytest.raises(BadRequest, match=r"(?i)MESSAGE_TOO_LONG"):
        await bot.answer_callback_query(fake.tap(CHAT, sent.message_id, "yes", ANN), "x" * 201)


async def test_a_removed_button_can_still_be_tapped(fake: FakeBotAPI, bot: telegram.Bot) -> None:
    sent = await bot.send_message(CHAT, "q", reply_markup=_keyboard("yes"))
    await bot.edit_message_text("decided", CHAT, sent.message_id)
    query_id = fake.tap(CHAT, sent.message_id, "yes", ANN)
    [update] = await bot.get_updates(timeout=0)
    assert update.callback_query is not None and update.callback_query.id == query_id


def test_wait_for_is_bounded(fake: FakeBotAPI) -> None:
    with pytest.raises(TimeoutError):
        fake.wait_for(lambda: fake.callback_answers, timeout=0.05)
    assert fake.wait_for(lambda: 3, timeout=0.05) == 3


async def test_await_for_accepts_coroutines(fake: FakeBotAPI) -> None:
    async def ready() -> str:
        return "yes"

    assert await fake.await_for(ready, timeout=0.05) == "yes"
    with pytest.raises(TimeoutError):
        await fake.await_for(lambda: None, timeout=0.05)


# --- commands and webhooks -----------------------------------------------------------------


async def test_my_commands(fake: FakeBotAPI, bot: telegram.Bot) -> None:
    await bot.set_my_commands([("start", "show my id"), ("pending", "list pending")])
    assert [c.command for c in await bot.get_my_commands()] == ["start", "pending"]
    assert fake.commands[0] == {"command": "start", "description": "show my id"}
    with pytest.raises(BadRequest, match=r"(?i)BOT_COMMAND_INVALID"):
        await bot.set_my_commands([("Bad Command", "x")])


class _Receiver:
    """A stdlib webhook receiver: records bodies and the secret header."""

    def __init__(self, status: int = 200) -> None:
        self.received: list[tuple[dict[str, Any], str | None]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                secret = self.headers.get("X-Telegram-Bot-Api-Secret-Token")
                receiver.received.append((json.loads(body), secret))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_webhook_delivery_with_secret(fake: FakeBotAPI, bot: telegram.Bot) -> None:
    fake.send_text(CHAT, "queued before the webhook", ANN)
    with _Receiver() as receiver:
        await bot.set_webhook(receiver.url, secret_token="s3cr3t_token")
        info = await bot.get_webhook_info()
        assert info.url == receiver.url
        assert fake.webhook is not None and fake.webhook["secret_token"] == "s3cr3t_token"
        with pytest.raises(Conflict, match=r"(?i)webhook is active"):
            await bot.get_updates(timeout=0)
        fake.send_text(CHAT, "after", ANN)
        await fake.await_for(lambda: len(receiver.received) == 2)
        texts = sorted(body["message"]["text"] for body, _ in receiver.received)
        assert texts == ["after", "queued before the webhook"]
        assert {secret for _, secret in receiver.received} == {"s3cr3t_token"}
        await fake.await_for(lambda: len(fake.webhook_deliveries) == 2)
        assert {d["status_code"] for d in fake.webhook_deliveries} == {200}

        await bot.delete_webhook()
        fake.send_text(CHAT, "polled again", ANN)
        [update] = await bot.get_updates(timeout=0)
        assert update.message is not None and update.message.text == "polled again"


async def test_webhook_failures_are_retried_and_reported(
    fake: FakeBotAPI, bot: telegram.Bot
) -> None:
    with _Receiver(status=403) as receiver:
        await bot.set_webhook(receiver.url, secret_token="abc")
        fake.send_text(CHAT, "x", ANN)
        [delivery] = await fake.await_for(lambda: fake.webhook_deliveries)
        assert delivery["status_code"] == 403
        assert delivery["attempts"] == 3
        assert len(receiver.received) == 3
        info = await bot.get_webhook_info()
        assert info.last_error_message


async def test_webhook_must_be_loopback(bot: telegram.Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)loopback"):
        await bot.set_webhook("https://example.org/hook")
    with pytest.raises(BadRequest, match=r"(?i)unallowed characters"):
        await bot.set_webhook("http://127.0.0.1:9/hook", secret_token="not allowed!")


# --- a whole python-telegram-bot Application ----------------------------------------------


async def test_ptb_application_polls_and_answers(fake: FakeBotAPI) -> None:
    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None and update.effective_user is not None
        await update.effective_message.reply_text(f"your id is {update.effective_user.id}")

    app = ApplicationBuilder().token(fake.token).base_url(fake.base_url).build()
    app.add_handler(CommandHandler("start", start))
    await app.initialize()
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(timeout=5)
    try:
        fake.send_text(CHAT, "/start", ANN)
        reply = await fake.await_for(
            lambda: [m for m in fake.messages(CHAT) if "your id" in m["text"]]
        )
        assert reply[0]["text"] == "your id is 7"
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()
    assert fake.pending_updates == 0  # the final getUpdates confirmed everything
