"""A fake Telegram Bot API server for tests: real HTTP on 127.0.0.1, real limits.

Mocking ``telegram.Bot`` would test our guesses about Telegram, not our code. This server
speaks the Bot API over real HTTP, so python-telegram-bot (or any client) runs unchanged
with ``base_url=f"{fake.url}/bot"``, and it rejects what Telegram rejects: texts over
4,096 characters, callback data over 64 bytes, HTML that does not parse. A notifier that
passes here will not be surprised in production by the errors that matter most.

The server runs in its own thread with its own event loop, so it serves sync tests, async
tests and the code under test alike, and a test can act as a person (:meth:`FakeBotAPI.tap`,
:meth:`FakeBotAPI.send_text`) while the bot long-polls. State is guarded by one lock;
everything read back (:meth:`FakeBotAPI.messages`, :attr:`FakeBotAPI.calls`, ...) is a copy.

Example::

    with FakeBotAPI() as fake:
        app = ApplicationBuilder().token(fake.token).base_url(f"{fake.url}/bot").build()
        ...
        fake.tap(chat_id, message_id, "k3Jd9sQ2xA", from_user={"id": 42, "username": "ann"})
        fake.wait_for(lambda: fake.callback_answers)
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import itertools
import json
import re
import ssl
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload
from urllib.parse import parse_qsl, urlsplit

import httpx

from loopgate_lc.background import BackgroundServer

try:
    import uvicorn  # noqa: F401  (checked here so the error below names the extra)
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "loopgate_lc.fake_telegram needs starlette and uvicorn: pip install 'loopgate-lc[server]'"
    ) from exc

__all__ = [
    "MAX_CALLBACK_ANSWER_LENGTH",
    "MAX_CALLBACK_DATA_BYTES",
    "MAX_MESSAGE_LENGTH",
    "EntityParseError",
    "FakeBotAPI",
    "parse_html",
]

MAX_MESSAGE_LENGTH = 4096
"""Telegram's limit on a message's text, counted after entity parsing."""

MAX_CALLBACK_DATA_BYTES = 64
"""Telegram's limit on an inline button's ``callback_data``, in UTF-8 bytes."""

MAX_CALLBACK_ANSWER_LENGTH = 200
"""Telegram's limit on the text of ``answerCallbackQuery``."""

_T = TypeVar("_T")

# --- HTML entity checking ------------------------------------------------------------------

_ALLOWED_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "a",
        "code",
        "pre",
        "tg-spoiler",
        "span",
        "blockquote",
    }
)
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_ATTRIBUTE = re.compile(
    r"""\s*([A-Za-z_][A-Za-z0-9_-]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?"""
)
_ENTITY = re.compile(r"&(?:#([0-9]{1,8})|#[xX]([0-9A-Fa-f]{1,8})|([A-Za-z][A-Za-z0-9]*));")


class EntityParseError(ValueError):
    """Text sent with ``parse_mode="HTML"`` is not HTML that Telegram accepts."""


def _offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


def _decode_entities(text: str, base: int, source: str) -> str:
    """Decode entities in ``text`` (a tag-free run), rejecting a bare ``&``."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        match = _ENTITY.match(text, i)
        if match is None:
            raise EntityParseError(
                f'character "&" at byte offset {_offset(source, base + i)} does not begin an '
                'entity; escape it as "&amp;"'
            )
        decimal, hexadecimal, name = match.groups()
        if name is not None:
            if name not in _NAMED_ENTITIES:
                raise EntityParseError(
                    f'unsupported HTML entity "&{name};" at byte offset {_offset(source, base + i)}'
                )
            out.append(_NAMED_ENTITIES[name])
        else:
            code = int(decimal) if decimal is not None else int(hexadecimal, 16)
            if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise EntityParseError(
                    f"invalid character reference at byte offset {_offset(source, base + i)}"
                )
            out.append(chr(code))
        i = match.end()
    return "".join(out)


def parse_html(text: str) -> str:
    """Check ``text`` the way Telegram parses ``parse_mode="HTML"`` and return the plain text.

    Accepts only Telegram's tags (b, strong, i, em, u, ins, s, strike, del, a, code, pre,
    tg-spoiler, span class="tg-spoiler", blockquote), properly nested, and only the
    entities ``&lt; &gt; &amp; &quot;`` and numeric ones. A bare ``<`` or ``&`` is an error
    (Telegram is slightly more lenient with ``&``; being stricter here catches unescaped
    text before it reaches a person).

    Raises:
        EntityParseError: With a message in the style of Telegram's
            "can't parse entities" details.
    """
    out: list[str] = []
    stack: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        lt = text.find("<", i)
        chunk_end = n if lt == -1 else lt
        out.append(_decode_entities(text[i:chunk_end], i, text))
        if lt == -1:
            break
        i = lt
        where = _offset(text, i)
        if text.startswith("</", i):
            end = text.find(">", i)
            if end == -1:
                raise EntityParseError(f"unclosed end tag at byte offset {where}")
            name = text[i + 2 : end].strip().lower()
            if not stack:
                raise EntityParseError(f'unexpected end tag "{name}" at byte offset {where}')
            if stack[-1] != name:
                raise EntityParseError(
                    f'unmatched end tag at byte offset {where}, expected "</{stack[-1]}>", '
                    f'found "</{name}>"'
                )
            stack.pop()
            i = end + 1
            continue
        match = _TAG_NAME.match(text, i + 1)
        if match is None:
            raise EntityParseError(f'unsupported start tag "" at byte offset {where}')
        name = match.group(0).lower()
        if name not in _ALLOWED_TAGS:
            raise EntityParseError(f'unsupported start tag "{name}" at byte offset {where}')
        j = match.end()
        attributes: dict[str, str] = {}
        while True:
            while j < n and text[j].isspace():
                j += 1
            if j >= n:
                raise EntityParseError(f'unclosed start tag "{name}" at byte offset {where}')
            if text[j] == ">":
                break
            attr = _ATTRIBUTE.match(text, j)
            if attr is None or attr.end() == j:
                raise EntityParseError(
                    f'malformed attribute in start tag "{name}" at byte offset {where}'
                )
            value = next((g for g in attr.groups()[1:] if g is not None), "")
            attributes[attr.group(1).lower()] = _decode_entities(value, attr.start(), text)
            j = attr.end()
        if name == "span" and attributes.get("class") != "tg-spoiler":
            raise EntityParseError(
                f'tag "span" must have class "tg-spoiler" at byte offset {where}'
            )
        if stack and stack[-1] == "code":
            raise EntityParseError(
                f'tag "{name}" cannot be nested in "code" at byte offset {where}'
            )
        if stack and stack[-1] == "pre" and name != "code":
            raise EntityParseError(f'tag "{name}" cannot be nested in "pre" at byte offset {where}')
        stack.append(name)
        i = j + 1
    if stack:
        raise EntityParseError(f'can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return "".join(out)


# --- request decoding ----------------------------------------------------------------------

#: Parameters whose form-encoded value is JSON (python-telegram-bot JSON-encodes every
#: non-string value; strings travel raw, so only these are decoded).
_JSON_PARAMS = frozenset(
    {
        "reply_markup",
        "allowed_updates",
        "commands",
        "entities",
        "caption_entities",
        "link_preview_options",
        "reply_parameters",
        "scope",
        "media",
    }
)


class _ApiError(Exception):
    def __init__(
        self, code: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every fake's webhook client in the process: a client made
    without one loads the CA bundle again (tens of ms of CPU), and tests start many fakes."""
    return httpx.create_ssl_context()


def _bad(description: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {description}")


def _int(params: dict[str, Any], name: str, default: int | None = None) -> int:
    value = params.get(name)
    if value is None or value == "":
        if default is None:
            raise _bad(f"{name} is empty")
        return default
    if isinstance(value, bool):
        raise _bad(f"invalid {name} specified")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _bad(f"invalid {name} specified") from None


def _float(params: dict[str, Any], name: str, default: float) -> float:
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _bad(f"invalid {name} specified") from None


def _bool(params: dict[str, Any], name: str) -> bool:
    value = params.get(name)
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1"}
    return bool(value)


def _str(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    return None if value is None else str(value)


def _decode_form_value(name: str, value: str) -> Any:
    if name in _JSON_PARAMS:
        try:
            return json.loads(value)
        except ValueError:
            raise _bad(f"can't parse {name} JSON object") from None
    return value


# --- the server ----------------------------------------------------------------------------


@dataclass
class _Failure:
    code: int
    description: str
    parameters: dict[str, Any] | None = None
    delay: float = 0.0


@dataclass
class _Chat:
    id: int
    next_message_id: int = 1
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    callback_data_seen: dict[int, set[str]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        if self.id > 0:
            return {"id": self.id, "type": "private", "first_name": f"User {self.id}"}
        return {"id": self.id, "type": "supergroup", "title": f"Group {self.id}"}


class FakeBotAPI:
    """A Telegram Bot API server on 127.0.0.1 for tests.

    Args:
        token: The bot token clients must use; other tokens get 401 like Telegram.
        bot_username: The bot's ``@username`` (returned by ``getMe``).
        bot_id: The bot's user id.
        host: Only loopback addresses are allowed.
        port: 0 picks a free port.

    Attributes:
        token: The accepted bot token.
        url: ``http://127.0.0.1:<port>`` once started.
    """

    def __init__(
        self,
        *,
        token: str = "123456:TEST-token",
        bot_username: str = "loopgate_test_bot",
        bot_id: int = 123456,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if host not in {"127.0.0.1", "localhost", "::1"}:
            raise ValueError(f"FakeBotAPI only listens on loopback addresses, not {host!r}")
        self.token = token
        self.bot_username = bot_username
        self.bot_id = bot_id
        self._host = host
        self._port = port
        self._lock = threading.RLock()
        self._chats: dict[int, _Chat] = {}
        self._calls: list[dict[str, Any]] = []
        self._callback_answers: list[dict[str, Any]] = []
        self._open_queries: dict[str, dict[str, Any]] = {}
        self._queue: list[dict[str, Any]] = []
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._query_ids = itertools.count(9_000_000_000_000_001)
        self._failures: dict[str, deque[_Failure]] = {}
        self._webhook: dict[str, Any] | None = None
        self._webhook_deliveries: list[dict[str, Any]] = []
        self._commands: list[dict[str, Any]] = []
        self._blocked: set[int] = set()
        self._poll_generation = 0
        self._closing = False
        self._background: BackgroundServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._http: httpx.AsyncClient | None = None
        self._pending_tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """What to give python-telegram-bot's ``base_url`` (it appends token and method)."""
        return f"{self.url}/bot"

    @property
    def running(self) -> bool:
        return self._background is not None and self._background.running

    def start(self) -> FakeBotAPI:
        """Start serving in a background thread; returns once the port accepts connections."""
        if self.running:
            return self
        self._closing = False
        self._background = BackgroundServer(self._app(), host=self._host, port=self._port,
                                            name="FakeBotAPI").start()
        self.url = self._background.url
        return self

    def stop(self) -> None:
        """Stop serving; wakes long polls so shutdown does not wait for them."""
        self._closing = True
        self._wake()
        if self._background is not None:
            self._background.stop()
        self._background = None

    def __enter__(self) -> FakeBotAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeBotAPI:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    def _app(self) -> Starlette:
        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            # state that lives on the server's own event loop
            self._loop = asyncio.get_running_loop()
            self._changed = asyncio.Event()
            self._http = httpx.AsyncClient(timeout=5.0, trust_env=False, verify=_tls())
            try:
                yield
            finally:
                for task in list(self._pending_tasks):
                    task.cancel()
                await self._http.aclose()
                self._loop = None

        return Starlette(
            routes=[
                Route("/bot{token}/{method}", self._endpoint, methods=["GET", "POST"]),
            ],
            lifespan=lifespan,
        )

    # --- inspection (test side) --------------------------------------------------------

    @property
    def calls(self) -> list[dict[str, Any]]:
        """Every Bot API call received: ``{"method", "params", "status_code", "description"}``.

        A call still in progress (a waiting long poll) has ``status_code`` None.
        """
        with self._lock:
            return copy.deepcopy(self._calls)

    def calls_to(self, method: str) -> list[dict[str, Any]]:
        """The parameters of every call to ``method`` (case-insensitive), in order."""
        key = method.lower()
        with self._lock:
            return [copy.deepcopy(c["params"]) for c in self._calls if c["method"].lower() == key]

    @property
    def callback_answers(self) -> list[dict[str, Any]]:
        """Every ``answerCallbackQuery``: ``{"callback_query_id", "text", "show_alert", ...}``."""
        with self._lock:
            return copy.deepcopy(self._callback_answers)

    def callback_answer(self, callback_query_id: str) -> dict[str, Any] | None:
        """The answer given to one tap (see :meth:`tap`), or None while unanswered."""
        with self._lock:
            for answer in self._callback_answers:
                if answer["callback_query_id"] == callback_query_id:
                    return copy.deepcopy(answer)
        return None

    def messages(self, chat_id: int) -> list[dict[str, Any]]:
        """The bot's messages in a chat, oldest first, as they are now (edits applied).

        Each is ``{"message_id", "chat_id", "text", "plain_text", "parse_mode",
        "reply_markup", "date", "edit_date", "edits", "reply_to_message_id"}``: ``text`` is
        exactly what the bot sent (HTML source included), ``plain_text`` what a person
        sees.
        """
        with self._lock:
            chat = self._chats.get(chat_id)
            if chat is None:
                return []
            return [
                copy.deepcopy(m) for m in chat.messages.values() if m["from"]["id"] == self.bot_id
            ]

    def message(self, chat_id: int, message_id: int) -> dict[str, Any]:
        """One message (bot's or person's) as it is now; KeyError when there is none."""
        with self._lock:
            chat = self._chats.get(chat_id)
            if chat is None or message_id not in chat.messages:
                raise KeyError(f"no message {message_id} in chat {chat_id}")
            return copy.deepcopy(chat.messages[message_id])

    @property
    def updates(self) -> list[dict[str, Any]]:
        """Every update the test side produced, in order."""
        with self._lock:
            return copy.deepcopy(self._updates)

    @property
    def pending_updates(self) -> int:
        """Updates not yet confirmed by ``getUpdates`` (or not yet delivered to a webhook)."""
        with self._lock:
            return len(self._queue)

    @property
    def webhook(self) -> dict[str, Any] | None:
        """The registered webhook (``url``, ``secret_token``, ...), or None."""
        with self._lock:
            return copy.deepcopy(self._webhook)

    @property
    def webhook_deliveries(self) -> list[dict[str, Any]]:
        """Each POST to the webhook: ``{"update_id", "status_code", "error", "attempts"}``."""
        with self._lock:
            return copy.deepcopy(self._webhook_deliveries)

    @property
    def commands(self) -> list[dict[str, Any]]:
        """The command list last set with ``setMyCommands``."""
        with self._lock:
            return copy.deepcopy(self._commands)

    # --- failure injection -------------------------------------------------------------

    def rate_limit(self, method: str, times: int = 1, *, retry_after: float = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with 429 Too Many Requests.

        ``retry_after`` may be fractional (python-telegram-bot accepts it) so tests stay
        fast; it must be positive, as python-telegram-bot ignores a zero ``retry_after``.
        """
        if retry_after <= 0:
            raise ValueError("retry_after must be positive")
        shown = int(retry_after) if float(retry_after).is_integer() else retry_after
        self.fail_next(
            method,
            times,
            error_code=429,
            description=f"Too Many Requests: retry after {shown}",
            parameters={"retry_after": shown},
        )

    def fail_next(
        self,
        method: str,
        times: int = 1,
        *,
        error_code: int = 502,
        description: str = "Bad Gateway",
        parameters: dict[str, Any] | None = None,
        delay: float = 0.0,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with an error (after ``delay``
        seconds, to provoke client timeouts)."""
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            queue = self._failures.setdefault(method.lower(), deque())
            for _ in range(times):
                queue.append(_Failure(error_code, description, parameters, delay))

    def block_chat(self, chat_id: int) -> None:
        """Make the chat's user block the bot: sends to it fail with 403 like Telegram."""
        with self._lock:
            self._blocked.add(chat_id)

    # --- acting as a person --------------------------------------------------------------

    def tap(
        self,
        chat_id: int,
        message_id: int,
        callback_data: str,
        from_user: dict[str, Any],
    ) -> str:
        """Press an inline button; returns the callback query id (see :meth:`callback_answer`).

        The button must exist or have existed on that message: a person can press a button
        an edit already removed (their client was slow), but never one that was never shown.

        Raises:
            KeyError: No such message.
            ValueError: The message never had a button with this data.
        """
        with self._lock:
            chat = self._chats.get(chat_id)
            if chat is None or message_id not in chat.messages:
                raise KeyError(f"no message {message_id} in chat {chat_id}")
            if callback_data not in chat.callback_data_seen.get(message_id, set()):
                raise ValueError(
                    f"message {message_id} in chat {chat_id} never had a button with "
                    f"callback_data {callback_data!r}"
                )
            query_id = str(next(self._query_ids))
            query = {
                "id": query_id,
                "from": self._user(from_user),
                "message": self._message_json(chat.messages[message_id]),
                "chat_instance": str(-abs(chat_id) - 7),
                "data": callback_data,
            }
            self._open_queries[query_id] = query
            self._push_update({"callback_query": query})
        return query_id

    def send_text(
        self,
        chat_id: int,
        text: str,
        from_user: dict[str, Any],
        reply_to_message_id: int | None = None,
    ) -> dict[str, Any]:
        """Send a text message to the bot as a person; returns the message as stored.

        Commands (``/start``, ``/pending@bot``) get their ``bot_command`` entity, as
        python-telegram-bot's ``CommandHandler`` needs.

        Raises:
            KeyError: ``reply_to_message_id`` names no message in the chat.
        """
        with self._lock:
            chat = self._chat(chat_id)
            reply_to: dict[str, Any] | None = None
            if reply_to_message_id is not None:
                if reply_to_message_id not in chat.messages:
                    raise KeyError(f"no message {reply_to_message_id} in chat {chat_id}")
                reply_to = chat.messages[reply_to_message_id]
            message_id = chat.next_message_id
            chat.next_message_id += 1
            stored: dict[str, Any] = {
                "message_id": message_id,
                "chat_id": chat_id,
                "from": self._user(from_user),
                "text": text,
                "plain_text": text,
                "parse_mode": None,
                "reply_markup": None,
                "date": int(time.time()),
                "edit_date": None,
                "edits": 0,
                "reply_to_message_id": reply_to_message_id,
            }
            chat.messages[message_id] = stored
            wire = self._message_json(stored)
            command = re.match(r"/[A-Za-z0-9_]+(@[A-Za-z0-9_]+)?", text)
            if command is not None:
                wire["entities"] = [
                    {"type": "bot_command", "offset": 0, "length": len(command.group(0))}
                ]
            if reply_to is not None:
                wire["reply_to_message"] = self._message_json(reply_to)
            self._push_update({"message": wire})
            return copy.deepcopy(stored)

    def push_update(self, update: dict[str, Any]) -> int:
        """Deliver any raw update (without ``update_id``; one is assigned and returned)."""
        with self._lock:
            return self._push_update(copy.deepcopy(update))

    # --- waiting -------------------------------------------------------------------------

    def wait_for(
        self, predicate: Callable[[], _T | None], timeout: float = 30.0, interval: float = 0.01
    ) -> _T:
        """Block until ``predicate()`` is truthy and return its value.

        The default bound is generous on purpose: it only matters when the condition never
        comes, and a short one turns a slow, busy machine into a failed test.

        Do not call from the event loop the code under test runs on (it would block that
        loop); use :meth:`await_for` there.

        Raises:
            TimeoutError: Still falsy after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            time.sleep(interval)

    @overload
    async def await_for(
        self,
        predicate: Callable[[], Awaitable[_T | None]],
        timeout: float = ...,
        interval: float = ...,
    ) -> _T: ...

    @overload
    async def await_for(
        self,
        predicate: Callable[[], _T | None],
        timeout: float = ...,
        interval: float = ...,
    ) -> _T: ...

    async def await_for(
        self,
        predicate: Callable[[], Any],
        timeout: float = 30.0,
        interval: float = 0.01,
    ) -> Any:
        """The async twin of :meth:`wait_for`; ``predicate`` may be a coroutine function.

        Raises:
            TimeoutError: Still falsy after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if isinstance(value, Awaitable):
                value = await value
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            await asyncio.sleep(interval)

    # --- internals: state ----------------------------------------------------------------

    def _chat(self, chat_id: int) -> _Chat:
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = self._chats[chat_id] = _Chat(chat_id)
        return chat

    def _bot_user(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "Loopgate Test Bot",
            "username": self.bot_username,
        }

    @staticmethod
    def _user(from_user: dict[str, Any]) -> dict[str, Any]:
        if "id" not in from_user:
            raise ValueError("from_user needs an 'id'")
        user = {"is_bot": False, "first_name": from_user.get("username") or "User"}
        user.update(from_user)
        user["id"] = int(from_user["id"])
        return user

    def _message_json(self, stored: dict[str, Any]) -> dict[str, Any]:
        """A stored message as Telegram would send it to the bot."""
        chat = self._chat(stored["chat_id"])
        wire: dict[str, Any] = {
            "message_id": stored["message_id"],
            "from": copy.deepcopy(stored["from"]),
            "chat": chat.as_json(),
            "date": stored["date"],
            "text": stored["plain_text"],
        }
        if stored["edit_date"] is not None:
            wire["edit_date"] = stored["edit_date"]
        markup = stored["reply_markup"]
        if markup is not None and "inline_keyboard" in markup:
            wire["reply_markup"] = copy.deepcopy(markup)
        return wire

    def _push_update(self, update: dict[str, Any]) -> int:
        update_id = next(self._update_ids)
        update = {"update_id": update_id, **update}
        self._updates.append(copy.deepcopy(update))
        if self._webhook is not None:
            self._schedule_webhook(update)
        else:
            self._queue.append(update)
            self._wake()
        return update_id

    def _wake(self) -> None:
        loop = self._loop
        if loop is None:
            return

        def wake() -> None:
            if self._changed is not None:
                old, self._changed = self._changed, asyncio.Event()
                old.set()

        with contextlib.suppress(RuntimeError):  # loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(wake)

    def _schedule_webhook(self, update: dict[str, Any]) -> None:
        loop = self._loop
        if loop is None:
            raise RuntimeError("FakeBotAPI is not running")
        with self._lock:
            webhook = copy.deepcopy(self._webhook)
        if webhook is None:  # deleted meanwhile: keep it for getUpdates
            with self._lock:
                self._queue.append(update)
            return

        def spawn() -> None:
            task = asyncio.get_running_loop().create_task(self._deliver(webhook, update))
            self._pending_tasks.add(task)
            task.add_done_callback(self._pending_tasks.discard)

        loop.call_soon_threadsafe(spawn)

    async def _deliver(self, webhook: dict[str, Any], update: dict[str, Any]) -> None:
        """POST one update to the webhook, retrying a few times like Telegram does."""
        headers = {}
        if webhook.get("secret_token"):
            headers["X-Telegram-Bot-Api-Secret-Token"] = webhook["secret_token"]
        assert self._http is not None
        record: dict[str, Any] = {
            "update_id": update["update_id"],
            "status_code": None,
            "error": None,
            "attempts": 0,
        }
        for attempt in range(1, 4):
            record["attempts"] = attempt
            try:
                response = await self._http.post(webhook["url"], json=update, headers=headers)
            except httpx.HTTPError as exc:
                record["error"] = repr(exc)
            else:
                record["status_code"] = response.status_code
                record["error"] = (
                    None
                    if response.is_success
                    else f"Wrong response from the webhook: {response.status_code} "
                    f"{response.reason_phrase}"
                )
                if response.is_success:
                    break
            await asyncio.sleep(0.05 * attempt)
        with self._lock:
            self._webhook_deliveries.append(record)
            if record["status_code"] is None or record["error"] is not None:
                webhook_state = self._webhook
                if webhook_state is not None:
                    webhook_state["last_error_date"] = int(time.time())
                    webhook_state["last_error_message"] = str(record["error"])[:200]

    # --- internals: HTTP -------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> Response:
        token = request.path_params["token"]
        method = request.path_params["method"]
        # Logged on arrival (status filled in later) so a test can see a long poll waiting.
        entry: dict[str, Any] = {
            "method": method,
            "params": {},
            "status_code": None,
            "description": None,
        }
        with self._lock:
            self._calls.append(entry)
        try:
            params = await self._params(request)
            with self._lock:
                entry["params"] = copy.deepcopy(params)
            if token != self.token:
                raise _ApiError(401, "Unauthorized")
            with self._lock:
                queue = self._failures.get(method.lower())
                failure = queue.popleft() if queue else None
            if failure is not None:
                if failure.delay:
                    await asyncio.sleep(failure.delay)
                raise _ApiError(failure.code, failure.description, failure.parameters)
            handler = self._handlers().get(method.lower())
            if handler is None:
                raise _ApiError(404, "Not Found")
            result = await handler(params)
        except _ApiError as exc:
            with self._lock:
                entry.update(status_code=exc.code, description=exc.description)
            body: dict[str, Any] = {
                "ok": False,
                "error_code": exc.code,
                "description": exc.description,
            }
            if exc.parameters:
                body["parameters"] = exc.parameters
            return JSONResponse(body, status_code=exc.code)
        with self._lock:
            entry["status_code"] = 200
        return JSONResponse({"ok": True, "result": result})

    @staticmethod
    async def _params(request: Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query_params)
        if request.method != "POST":
            return params
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await request.body()
        if not body:
            return params
        if content_type == "application/json":
            try:
                data = json.loads(body)
            except ValueError:
                raise _bad("can't parse JSON body") from None
            if not isinstance(data, dict):
                raise _bad("JSON body must be an object")
            params.update(data)
        elif content_type == "application/x-www-form-urlencoded":
            for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
                params[key] = _decode_form_value(key, value)
        elif content_type == "multipart/form-data":
            try:
                form = await request.form()
            except AssertionError:  # python-multipart missing
                raise _bad("multipart/form-data is not supported here") from None
            for key, item in form.multi_items():
                if isinstance(item, str):
                    params[key] = _decode_form_value(key, item)
        else:
            raise _bad(f"unsupported Content-Type {content_type!r}")
        return params

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]:
        return {
            "getme": self._get_me,
            "sendmessage": self._send_message,
            "editmessagetext": self._edit_message_text,
            "editmessagereplymarkup": self._edit_message_reply_markup,
            "deletemessage": self._delete_message,
            "answercallbackquery": self._answer_callback_query,
            "getupdates": self._get_updates,
            "setwebhook": self._set_webhook,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._get_webhook_info,
            "setmycommands": self._set_my_commands,
            "getmycommands": self._get_my_commands,
            "deletemycommands": self._delete_my_commands,
            "getchat": self._get_chat,
            "sendchataction": self._true,
            "close": self._true,
            "logout": self._true,
        }

    # --- internals: methods --------------------------------------------------------------

    async def _true(self, params: dict[str, Any]) -> bool:
        return True

    async def _get_me(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            **self._bot_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    def _target_chat(self, params: dict[str, Any]) -> _Chat:
        raw = params.get("chat_id")
        if raw is None or raw == "":
            raise _bad("chat_id is empty")
        try:
            chat_id = int(raw)
        except (TypeError, ValueError):
            raise _bad("chat not found") from None
        if chat_id in self._blocked:
            raise _ApiError(403, "Forbidden: bot was blocked by the user")
        return self._chat(chat_id)

    @staticmethod
    def _render(params: dict[str, Any]) -> tuple[str, str, str | None]:
        """Validate text + parse mode; returns ``(text, plain_text, parse_mode)``."""
        text = params.get("text")
        if text is None or text == "":
            raise _bad("message text is empty")
        text = str(text)
        parse_mode = _str(params, "parse_mode") or None
        if parse_mode is not None and parse_mode.lower() == "html":
            try:
                plain = parse_html(text)
            except EntityParseError as exc:
                raise _bad(f"can't parse entities: {exc}") from None
        elif parse_mode is not None and parse_mode.lower() not in {"markdown", "markdownv2"}:
            raise _bad(f"unsupported parse_mode {parse_mode!r}")
        else:
            plain = text
        if not plain.strip():
            raise _bad("message text is empty")
        if len(plain) > MAX_MESSAGE_LENGTH:
            raise _bad("message is too long")
        return text, plain, parse_mode

    @staticmethod
    def _markup(params: dict[str, Any]) -> dict[str, Any] | None:
        """Validate ``reply_markup`` like Telegram (callback data at most 64 bytes)."""
        markup = params.get("reply_markup")
        if markup is None or markup == "":
            return None
        if isinstance(markup, str):
            try:
                markup = json.loads(markup)
            except ValueError:
                raise _bad("can't parse reply keyboard markup JSON object") from None
        if not isinstance(markup, dict):
            raise _bad("can't parse reply keyboard markup JSON object")
        if "inline_keyboard" in markup:
            rows = markup["inline_keyboard"]
            if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
                raise _bad("inline_keyboard should be an Array of Arrays")
            for row in rows:
                for button in row:
                    if not isinstance(button, dict) or not str(button.get("text", "")).strip():
                        raise _bad("text buttons are unallowed in the inline keyboard")
                    kinds = [k for k in button if k != "text"]
                    if len(kinds) != 1:
                        raise _bad("can't parse inline keyboard button: one action expected")
                    if "callback_data" in button:
                        data = button["callback_data"]
                        size = len(str(data).encode("utf-8"))
                        if not isinstance(data, str) or not 1 <= size <= MAX_CALLBACK_DATA_BYTES:
                            raise _bad("BUTTON_DATA_INVALID")
        elif not any(k in markup for k in ("force_reply", "keyboard", "remove_keyboard")):
            raise _bad('can\'t find field "inline_keyboard"')
        return dict(markup)

    def _remember_buttons(
        self, chat: _Chat, message_id: int, markup: dict[str, Any] | None
    ) -> None:
        if markup is None or "inline_keyboard" not in markup:
            return
        seen = chat.callback_data_seen.setdefault(message_id, set())
        for row in markup["inline_keyboard"]:
            for button in row:
                if "callback_data" in button:
                    seen.add(button["callback_data"])

    async def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        text, plain, parse_mode = self._render(params)
        markup = self._markup(params)
        reply_to = params.get("reply_to_message_id")
        reply_parameters = params.get("reply_parameters")
        if isinstance(reply_parameters, dict):
            reply_to = reply_parameters.get("message_id")
        with self._lock:
            chat = self._target_chat(params)
            reply_to_id = None if reply_to in (None, "") else int(reply_to)
            if reply_to_id is not None and reply_to_id not in chat.messages:
                allow = isinstance(reply_parameters, dict) and _bool(
                    reply_parameters, "allow_sending_without_reply"
                )
                if not allow:
                    raise _bad("message to be replied not found")
                reply_to_id = None
            message_id = chat.next_message_id
            chat.next_message_id += 1
            stored: dict[str, Any] = {
                "message_id": message_id,
                "chat_id": chat.id,
                "from": self._bot_user(),
                "text": text,
                "plain_text": plain,
                "parse_mode": parse_mode,
                "reply_markup": markup,
                "date": int(time.time()),
                "edit_date": None,
                "edits": 0,
                "reply_to_message_id": reply_to_id,
            }
            chat.messages[message_id] = stored
            self._remember_buttons(chat, message_id, markup)
            return self._message_json(stored)

    def _editable(self, params: dict[str, Any]) -> tuple[_Chat, dict[str, Any]]:
        if params.get("inline_message_id"):
            raise _bad("inline messages are not supported by FakeBotAPI")
        chat = self._target_chat(params)
        message_id = _int(params, "message_id")
        stored = chat.messages.get(message_id)
        if stored is None:
            raise _bad("message to edit not found")
        if stored["from"]["id"] != self.bot_id:
            raise _bad("message can't be edited")
        return chat, stored

    async def _edit_message_text(self, params: dict[str, Any]) -> dict[str, Any]:
        text, plain, parse_mode = self._render(params)
        markup = self._markup(params)
        with self._lock:
            chat, stored = self._editable(params)
            if (
                stored["text"] == text
                and stored["parse_mode"] == parse_mode
                and stored["reply_markup"] == markup
            ):
                raise _bad(
                    "message is not modified: specified new message content and reply markup "
                    "are exactly the same as a current content and reply markup of the message"
                )
            stored.update(
                text=text,
                plain_text=plain,
                parse_mode=parse_mode,
                reply_markup=markup,
                edit_date=int(time.time()),
                edits=stored["edits"] + 1,
            )
            self._remember_buttons(chat, stored["message_id"], markup)
            return self._message_json(stored)

    async def _edit_message_reply_markup(self, params: dict[str, Any]) -> dict[str, Any]:
        markup = self._markup(params)
        with self._lock:
            chat, stored = self._editable(params)
            if stored["reply_markup"] == markup:
                raise _bad(
                    "message is not modified: specified new message content and reply markup "
                    "are exactly the same as a current content and reply markup of the message"
                )
            stored.update(
                reply_markup=markup, edit_date=int(time.time()), edits=stored["edits"] + 1
            )
            self._remember_buttons(chat, stored["message_id"], markup)
            return self._message_json(stored)

    async def _delete_message(self, params: dict[str, Any]) -> bool:
        with self._lock:
            chat = self._target_chat(params)
            message_id = _int(params, "message_id")
            if chat.messages.pop(message_id, None) is None:
                raise _bad("message to delete not found")
            return True

    async def _answer_callback_query(self, params: dict[str, Any]) -> bool:
        query_id = _str(params, "callback_query_id")
        text = _str(params, "text")
        if text is not None and len(text) > MAX_CALLBACK_ANSWER_LENGTH:
            raise _bad("MESSAGE_TOO_LONG")
        with self._lock:
            if query_id is None or self._open_queries.pop(query_id, None) is None:
                raise _bad("query is too old and response timeout expired or query ID is invalid")
            self._callback_answers.append(
                {
                    "callback_query_id": query_id,
                    "text": text,
                    "show_alert": _bool(params, "show_alert"),
                    "url": _str(params, "url"),
                    "cache_time": params.get("cache_time"),
                }
            )
        return True

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = _int(params, "offset", 0)
        limit = max(1, min(100, _int(params, "limit", 100)))
        timeout = max(0.0, min(50.0, _float(params, "timeout", 0.0)))
        with self._lock:
            if self._webhook is not None:
                raise _ApiError(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; use "
                    "deleteWebhook to delete the webhook first",
                )
            self._poll_generation += 1
            generation = self._poll_generation
        self._wake()  # an older poll still waiting is terminated, as Telegram does
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if offset > 0:
                    self._queue = [u for u in self._queue if u["update_id"] >= offset]
                    ready = self._queue[:limit]
                elif offset < 0:
                    ready = self._queue[offset:][:limit]
                else:
                    ready = self._queue[:limit]
                if generation != self._poll_generation:
                    raise _ApiError(
                        409,
                        "Conflict: terminated by other getUpdates request; make sure that only "
                        "one bot instance is running",
                    )
                if ready or self._closing:
                    return copy.deepcopy(ready)
                changed = self._changed
            remaining = deadline - time.monotonic()
            if remaining <= 0 or changed is None:
                return []
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return []

    async def _set_webhook(self, params: dict[str, Any]) -> bool:
        url = _str(params, "url") or ""
        if not url:
            return await self._delete_webhook(params)
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or parts.hostname not in {
            "127.0.0.1",
            "localhost",
            "::1",
        }:
            raise _bad("bad webhook: FakeBotAPI only delivers to loopback http(s) URLs")
        secret = _str(params, "secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise _bad("secret token contains unallowed characters")
        with self._lock:
            if _bool(params, "drop_pending_updates"):
                self._queue.clear()
            self._webhook = {
                "url": url,
                "secret_token": secret,
                "max_connections": _int(params, "max_connections", 40),
                "allowed_updates": params.get("allowed_updates"),
                "last_error_date": None,
                "last_error_message": None,
            }
            pending, self._queue = self._queue, []
            self._poll_generation += 1
        self._wake()
        for update in pending:
            self._schedule_webhook(update)
        return True

    async def _delete_webhook(self, params: dict[str, Any]) -> bool:
        with self._lock:
            self._webhook = None
            if _bool(params, "drop_pending_updates"):
                self._queue.clear()
        return True

    async def _get_webhook_info(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            hook = self._webhook or {}
            info: dict[str, Any] = {
                "url": hook.get("url", ""),
                "has_custom_certificate": False,
                "pending_update_count": len(self._queue),
            }
            if hook:
                info["max_connections"] = hook["max_connections"]
                if hook.get("allowed_updates"):
                    info["allowed_updates"] = hook["allowed_updates"]
                if hook.get("last_error_date"):
                    info["last_error_date"] = hook["last_error_date"]
                    info["last_error_message"] = hook["last_error_message"]
            return info

    async def _set_my_commands(self, params: dict[str, Any]) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise _bad("can't parse commands JSON object")
        for command in commands:
            if not isinstance(command, dict) or not re.fullmatch(
                r"[a-z0-9_]{1,32}", str(command.get("command", ""))
            ):
                raise _bad("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
        with self._lock:
            self._commands = copy.deepcopy(commands)
        return True

    async def _get_my_commands(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._commands)

    async def _delete_my_commands(self, params: dict[str, Any]) -> bool:
        with self._lock:
            self._commands = []
        return True

    async def _get_chat(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            chat = self._target_chat(params)
            return {**chat.as_json(), "accent_color_id": 0, "max_reaction_count": 11}
