"""Telegram: approval requests as chat messages with buttons, decisions from taps and replies.

The bot runs inside the gateway's event loop (``start`` initialises python-telegram-bot's
``Application`` and starts long polling, never ``run_polling``, which would take over the
loop). Every decision goes through ``Loopgate.arespond`` like any other channel's, so
exactly-once, authorization and audit stay in one place; this module only translates.

Three rules keep it safe:

* Buttons carry a short random key, never a request id or a decision: the key maps to
  ``(request_id, action)`` in the store (``put_callback``), so callback data stays under
  Telegram's 64 bytes, cannot be forged into another decision, and survives restarts.
* Free-text answers (a rejection reason, replacement arguments, an input) are matched to
  their request by the prompt message they reply to (``reply:<chat>:<message>`` keys),
  never by parsing the text.
* Everything agents and users wrote is escaped and cut by :mod:`loopgate_lc.telegram_render`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import os
import secrets
import warnings
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, Literal, TypeVar

from telegram import (
    BotCommand,
    CallbackQuery,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
    User,
)
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from loopgate_lc.errors import (
    AlreadyDecided,
    ApproverNotAllowed,
    ConfigurationError,
    DuplicateVote,
    InvalidDecision,
    InvalidUpdate,
    LoopgateError,
    RequestNotFound,
    SessionNotFound,
    SignatureError,
)
from loopgate_lc.grants import MAX_GRANT_SECONDS
from loopgate_lc.notifiers.base import DeliveryError, Desk
from loopgate_lc.quorum import tally_text
from loopgate_lc.schema import Status
from loopgate_lc.stores.base import RequestRecord, SessionRecord
from loopgate_lc.telegram_render import (
    CALLBACK_ANSWER_LIMIT,
    INPUT_KINDS,
    already_decided_text,
    clip,
    escape,
    escape_clip,
    keyboard_for,
    outcome_label,
    render_edit_prompt,
    render_reject_prompt,
    render_request,
    render_resolved,
    truncate_html,
)

__all__ = ["InvalidUpdate", "TelegramNotifier"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
"""The header Telegram puts the webhook secret in."""

_ALLOWED_UPDATES = ["message", "callback_query"]
_PREVIOUS_REFS = 10  # older messages of a re-notified request still edited on resolve
_COMMANDS = [
    ("start", "Show your Telegram id (to register a session)"),
    ("pending", "List requests waiting in this chat"),
    ("status", "Count this chat's requests by status"),
    ("help", "How approving works here"),
]


def _retry_after_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB warns that the type will become timedelta
        warnings.simplefilter("ignore")
        value: Any = exc.retry_after
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def _actor(user: User) -> str:
    """The gateway's actor convention: ``telegram:<user id> (@username)``."""
    return f"telegram:{user.id} (@{user.username})" if user.username else f"telegram:{user.id}"


def _reply_key(chat_id: int, message_id: int) -> str:
    return f"reply:{chat_id}:{message_id}"


class TelegramNotifier:
    """Ask people on Telegram: messages with buttons, answers by tap or reply.

    Args:
        token: The bot token; default the ``TELEGRAM_BOT_TOKEN`` environment variable.
        base_url: The Bot API base URL (python-telegram-bot appends token and method);
            default ``TELEGRAM_API_BASE_URL`` or Telegram's own. Tests point it at
            :class:`~loopgate_lc.fake_telegram.FakeBotAPI`.
        default_chat_id: Where requests go when their session names no chat.
        mode: ``"polling"`` (long polling, the default) or ``"webhook"`` (updates arrive
            through :meth:`process_webhook_update`).
        webhook_url: In webhook mode, registered with Telegram on start when given.
        webhook_secret: In webhook mode, required: Telegram sends it with every update
            and :meth:`process_webhook_update` checks it.
        name: The notifier's name in outbox rows, message refs and audit events.
        approvers: Telegram user ids or ``@usernames`` allowed to use the buttons at all;
            None leaves authorization to the gateway (session and policy approvers),
            which is always checked as well.
        max_attempts: Bot API attempts per call (429s, network errors, timeouts) before
            the delivery is handed back to the gateway's outbox.
        retry_backoff: First delay after a network error or timeout; doubles per attempt.
        max_retry_after: A 429 asking to wait longer than this is handed back to the
            outbox instead of blocking.
        poll_timeout: Long-poll timeout in seconds.
        inbox_url: The web inbox's public base URL; with ``inbox_identity`` it turns on
            ``/inbox``, which answers in a private chat with a one-time sign-in link.
        inbox_identity: Maps a Telegram user (id, username) to the inbox identity (an
            API key's name) they sign in as; None refuses that user.
        grant_offers: Durations in seconds offered as "Approve & allow ..." buttons on
            tool calls that may be remembered: a tap approves and lets the same call
            (tool and arguments) in the request's session (else its run) be approved
            without asking for that long. The approver checks of a plain tap apply.
            Empty for no such buttons.
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        base_url: str | None = None,
        default_chat_id: int | None = None,
        mode: Literal["polling", "webhook"] = "polling",
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        name: str = "telegram",
        approvers: list[str] | None = None,
        max_attempts: int = 5,
        retry_backoff: float = 0.5,
        max_retry_after: float = 30.0,
        poll_timeout: float = 10.0,
        inbox_url: str | None = None,
        inbox_identity: Callable[[int, str | None], str | None] | None = None,
        grant_offers: Sequence[float] = (3600.0,),
    ) -> None:
        token = token or os.environ.get("TELEGRAM_BOT_TOKEN")
        if not token:
            raise ConfigurationError(
                "TelegramNotifier needs a bot token: pass token= or set TELEGRAM_BOT_TOKEN"
            )
        if mode not in ("polling", "webhook"):
            raise ConfigurationError(f"mode must be 'polling' or 'webhook', got {mode!r}")
        if mode == "webhook" and not webhook_secret:
            raise ConfigurationError(
                "webhook mode needs webhook_secret, so forged updates can be refused"
            )
        if max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        self.name = name
        self.mode = mode
        self.base_url = base_url or os.environ.get("TELEGRAM_API_BASE_URL") or None
        self.default_chat_id = default_chat_id
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.approvers = (
            None if approvers is None else {str(a).strip().lstrip("@").lower() for a in approvers}
        )
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.max_retry_after = max_retry_after
        self.poll_timeout = poll_timeout
        self.inbox_url = inbox_url.rstrip("/") if inbox_url else None
        self.inbox_identity = inbox_identity
        offers = tuple(float(o) for o in grant_offers)
        if any(not 0 < o <= MAX_GRANT_SECONDS for o in offers):
            raise ConfigurationError("grant_offers must be seconds above 0 and at most 366 "
                                     "days")
        self.grant_offers = offers
        self._token = token
        self.application = self._build()
        self._desk: Desk | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._initialized = False
        self._started = False
        self._listening = False
        self._reconnecting: asyncio.Task[None] | None = None
        self.problem: str | None = None
        """Why Telegram is not usable right now (unreachable at start, token refused
        later); None when connected. The server's ``/health`` reports it."""

    def __repr__(self) -> str:
        return f"TelegramNotifier(name={self.name!r}, mode={self.mode!r})"

    def _commands(self) -> list[tuple[str, str]]:
        """The command menu; ``/inbox`` only where the inbox is set up."""
        if self.inbox_url is None or self.inbox_identity is None:
            return list(_COMMANDS)
        return [*_COMMANDS[:-1], ("inbox", "A one-time link to the web inbox (private chat)"),
                _COMMANDS[-1]]

    def _build(self) -> Application[Any, Any, Any, Any, Any, Any]:
        # Concurrent: one slow store call or retried API call must not hold up other taps.
        builder = ApplicationBuilder().token(self._token).concurrent_updates(True)
        if self.mode == "webhook":
            builder = builder.updater(None)
        if self.base_url:
            builder = builder.base_url(self.base_url)
        application = builder.build()
        application.add_handler(CommandHandler("start", self._cmd_start))
        application.add_handler(CommandHandler("help", self._cmd_help))
        application.add_handler(CommandHandler("pending", self._cmd_pending))
        application.add_handler(CommandHandler("status", self._cmd_status))
        application.add_handler(CommandHandler("inbox", self._cmd_inbox))
        application.add_handler(CallbackQueryHandler(self._on_tap))
        # Commands were matched above; a reply like "/tmp is full" is still an answer.
        application.add_handler(MessageHandler(filters.REPLY & filters.TEXT, self._on_reply))
        application.add_error_handler(self._on_error)
        return application

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, desk: Desk) -> None:
        """Connect to Telegram and begin listening, inside the gateway's loop; taps and
        replies go to ``desk`` (the gateway's deciding path), never to the store.

        Telegram being unreachable does not fail the start: the rest of the gateway (and
        the server's API) works, :attr:`problem` says what is wrong, and the connection
        is retried in the background with backoff; deliveries wait in the outbox.

        Raises:
            ConfigurationError: Telegram refused the token (retrying cannot help).
        """
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop and not self._started:
            # Started again by a reopened gateway on a new loop: python-telegram-bot's
            # queues and HTTP clients belong to the old one, so start from a fresh app.
            self.application = self._build()
            self._initialized = False
        self._desk = desk
        self._loop = loop
        try:
            await self._connect()
        except (NetworkError, DeliveryError) as exc:
            self.problem = f"cannot reach Telegram ({exc}); retrying in the background"
            logger.warning("telegram: %s", self.problem)
            self._reconnecting = loop.create_task(self._reconnect())

    async def _connect(self) -> None:
        """Each step once: initialize, start, then listen (polling or webhook)."""
        await self._initialize()
        if not self._started:
            await self.application.start()
            self._started = True
            try:
                await self.application.bot.set_my_commands(
                    [BotCommand(command, text) for command, text in self._commands()]
                )
            except TelegramError as exc:  # a convenience; the bot works without it
                logger.warning("telegram: could not set the command list: %s", exc)
        if self.mode == "webhook":
            if self.webhook_url and not self._listening:
                await self._api(
                    "setWebhook",
                    lambda: self.application.bot.set_webhook(
                        self.webhook_url or "",
                        secret_token=self.webhook_secret,
                        allowed_updates=_ALLOWED_UPDATES,
                    ),
                )
        else:
            updater = self.application.updater
            assert updater is not None
            if not updater.running:
                await updater.start_polling(
                    timeout=int(self.poll_timeout) if self.poll_timeout >= 1 else 1,
                    allowed_updates=_ALLOWED_UPDATES,
                    drop_pending_updates=False,  # taps made while we were down still count
                    error_callback=self._on_polling_error,
                )
        self._listening = True
        self.problem = None

    async def _reconnect(self) -> None:
        """Retry :meth:`_connect` with doubling delays (capped at a minute) until it works,
        the token is refused, or the notifier stops."""
        delay = max(self.retry_backoff, 0.01)
        while not self._listening:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)
            try:
                await self._connect()
            except ConfigurationError as exc:
                self.problem = str(exc)
                logger.error("telegram: %s; not retrying", exc)
                return
            except (NetworkError, DeliveryError) as exc:
                self.problem = f"cannot reach Telegram ({exc}); retrying in the background"
        logger.warning("telegram: connected")

    async def stop(self) -> None:
        """Stop listening and release the HTTP clients. Safe to call twice."""
        task, self._reconnecting = self._reconnecting, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._listening = False
        updater = self.application.updater
        if updater is not None and updater.running:
            await updater.stop()
        if self._started:
            self._started = False
            await self.application.stop()
        if self._initialized:
            self._initialized = False
            await self.application.shutdown()

    def _require_connection(self) -> None:
        if not self._initialized:
            # The outbox keeps the delivery and retries it once the connection is back.
            raise DeliveryError(self.problem or "Telegram is not connected yet",
                                retryable=True)

    async def _initialize(self) -> None:
        if self._initialized:
            return
        try:
            await self.application.initialize()
        except InvalidToken as exc:
            raise ConfigurationError(f"Telegram refused the bot token: {exc}") from exc
        self._initialized = True

    # --- delivering ----------------------------------------------------------------------

    async def notify(self, request: RequestRecord) -> dict[str, Any]:
        """Send the request to its chat; returns ``{"chat_id", "message_id"}``.

        The ref is also stored through the desk here, so a later edit finds the message
        even when the caller does not store it.

        Raises:
            DeliveryError: No chat is configured (not retryable), Telegram refused the
                message (not retryable), or it could not be reached (retryable).
        """
        self._require_connection()
        chat_id = await self._chat_for(request)
        text = render_request(request)
        markup: InlineKeyboardMarkup | ForceReply | None = await self._buttons(request)
        if markup is None and (request.kind in INPUT_KINDS or request.shown.is_foreign):
            markup = ForceReply(input_field_placeholder="Your answer")
        message = await self._send(chat_id, text, markup, what=f"request {request.id}")
        if isinstance(markup, ForceReply):
            await self._gw().put_callback(
                _reply_key(message.chat_id, message.message_id),
                request.id,
                {"op": "reply", "purpose": "input"},
            )
        ref: dict[str, Any] = {"chat_id": message.chat_id, "message_id": message.message_id}
        old = request.message_refs.get(self.name)
        if isinstance(old, dict) and "message_id" in old:
            previous = [*old.get("previous", []), {k: old[k] for k in ("chat_id", "message_id")}]
            ref["previous"] = previous[-_PREVIOUS_REFS:]
        try:
            await self._gw().set_message_ref(request.id, self.name, ref)
            current = await self._gw().aget(request.id)
        except LoopgateError as exc:  # the gateway stores the returned ref as well
            logger.warning("telegram: could not store the message ref of %s: %s", request.id, exc)
            return ref
        if not current.pending:
            # Decided while the message was on its way: on_resolved may have run before
            # the ref was stored and found nothing to edit, so show the outcome now.
            await self.on_resolved(current)
        return ref

    async def _buttons(self, request: RequestRecord) -> InlineKeyboardMarkup | None:
        """The request's inline keyboard, each button keyed server-side (None: none)."""
        rows = keyboard_for(request, grant_offers=self.grant_offers)
        if not rows:
            return None
        return InlineKeyboardMarkup([
            [InlineKeyboardButton(button.label,
                                  callback_data=await self._key(request.id, button.action))
             for button in row]
            for row in rows
        ])

    async def on_vote(self, request: RequestRecord) -> None:
        """Show a quorum request's new count; its buttons stay until it is decided."""
        self._require_connection()
        ref = request.message_refs.get(self.name)
        if not isinstance(ref, dict) or "message_id" not in ref:
            return  # never shown here (no chat, or delivered by another process's bot)
        text = render_request(request)
        markup = await self._buttons(request)
        await self._edit(request, ref, text, markup)

    async def on_resolved(self, request: RequestRecord) -> None:
        """Show the outcome, who decided and when; remove the buttons."""
        self._require_connection()
        ref = request.message_refs.get(self.name)
        if not isinstance(ref, dict) and self._desk is not None:
            try:
                ref = (await self._desk.aget(request.id)).message_refs.get(self.name)
            except RequestNotFound:
                ref = None
        if not isinstance(ref, dict) or "message_id" not in ref:
            return  # never shown here (no chat, or delivered by another process's bot)
        await self._edit(request, ref, render_resolved(request), None)

    async def _edit(self, request: RequestRecord, ref: dict[str, Any], text: str,
                    markup: InlineKeyboardMarkup | None) -> None:
        """Edit every message that shows ``request`` (the latest and earlier ones);
        without ``markup`` the buttons go."""
        targets = [*ref.get("previous", []), ref]
        for target in targets:
            chat_id, message_id = int(target["chat_id"]), int(target["message_id"])
            try:
                await self._api(
                    "editMessageText",
                    functools.partial(
                        self.application.bot.edit_message_text,
                        text,
                        chat_id=chat_id,
                        message_id=message_id,
                        parse_mode=ParseMode.HTML,
                        reply_markup=markup,
                    ),
                )
            except BadRequest as exc:
                lowered = str(exc).lower()
                if "not modified" in lowered:
                    continue  # already shows the outcome (a retried delivery)
                if "not found" in lowered or "can't be edited" in lowered:
                    logger.info("telegram: message of %s is gone: %s", request.id, exc)
                    continue
                raise DeliveryError(f"Telegram refused the edit: {exc}", retryable=False) from exc

    # --- webhook -------------------------------------------------------------------------

    async def process_webhook_update(self, body: dict[str, Any], secret_header: str | None) -> None:
        """Feed one webhook POST from Telegram to the bot.

        Safe to call from any event loop (an ASGI server's): the update is handed to the
        loop the bot runs on.

        Raises:
            SignatureError: The secret token header is missing or wrong.
            InvalidUpdate: The body is not a Telegram update.
            ConfigurationError: The notifier is not started.
        """
        expected = (self.webhook_secret or "").encode()
        given = (secret_header or "").encode()
        if not expected or not hmac.compare_digest(given, expected):
            raise SignatureError("missing or wrong Telegram webhook secret token")
        if not isinstance(body, dict) or not isinstance(body.get("update_id"), int):
            raise InvalidUpdate("a Telegram update is a JSON object with an integer update_id")
        if self._loop is None or not self._started:
            raise ConfigurationError("TelegramNotifier is not started")
        try:
            update = Update.de_json(body, self.application.bot)
        except (TypeError, ValueError, KeyError) as exc:
            raise InvalidUpdate(f"not a Telegram update: {exc}") from exc
        queue_put = self.application.update_queue.put(update)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - always called from a coroutine
            running = None
        if running is self._loop:
            await queue_put
        else:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(queue_put, self._loop))

    # --- Bot API calls, retried ------------------------------------------------------------

    async def _api(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """One Bot API call with bounded retries.

        429s wait the time Telegram asks (up to ``max_retry_after``); network errors and
        timeouts back off exponentially. ``BadRequest`` is raised as is for the caller
        to interpret; other refusals become non-retryable :class:`DeliveryError`.
        """
        delay = self.retry_backoff
        for attempt in range(1, self.max_attempts + 1):
            last = attempt == self.max_attempts
            try:
                return await call()
            except RetryAfter as exc:
                wait = _retry_after_seconds(exc)
                if last or wait > self.max_retry_after:
                    raise DeliveryError(
                        f"Telegram rate limit on {what}: retry after {wait:g}s"
                    ) from exc
                logger.info("telegram: 429 on %s, waiting %.2fs", what, wait)
                await asyncio.sleep(wait)
            except BadRequest:
                raise
            except (Forbidden, InvalidToken) as exc:
                raise DeliveryError(f"Telegram refused {what}: {exc}", retryable=False) from exc
            except (TimedOut, NetworkError) as exc:
                if last:
                    raise DeliveryError(f"Telegram unreachable for {what}: {exc}") from exc
                logger.info("telegram: %s on %s, retrying in %.2fs", exc, what, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(
        self,
        chat_id: int,
        text: str,
        markup: InlineKeyboardMarkup | ForceReply | None,
        *,
        what: str,
    ) -> Message:
        try:
            return await self._api(
                "sendMessage",
                lambda: self.application.bot.send_message(
                    chat_id, text, parse_mode=ParseMode.HTML, reply_markup=markup
                ),
            )
        except ChatMigrated as exc:  # a group became a supergroup: follow it once
            logger.warning("telegram: chat %s moved to %s", chat_id, exc.new_chat_id)
            return await self._send(exc.new_chat_id, text, markup, what=what)
        except BadRequest as exc:
            raise DeliveryError(f"Telegram refused {what}: {exc}", retryable=False) from exc

    async def _answer(self, query: CallbackQuery, text: str, *, alert: bool = False) -> None:
        """Answer a tap (best effort: an unanswered tap only shows a spinner)."""
        try:
            await self._api(
                "answerCallbackQuery",
                lambda: query.answer(clip(text, CALLBACK_ANSWER_LIMIT), show_alert=alert),
            )
        except (TelegramError, DeliveryError) as exc:
            logger.info("telegram: could not answer a tap: %s", exc)

    async def _reply(self, message: Message, html_text: str) -> None:
        """Reply in the chat (best effort, for explanations and confirmations)."""
        try:
            await self._api(
                "sendMessage",
                lambda: message.reply_html(truncate_html(html_text), do_quote=True),
            )
        except (TelegramError, DeliveryError) as exc:
            logger.info("telegram: could not reply: %s", exc)

    # --- helpers -------------------------------------------------------------------------

    def _gw(self) -> Desk:
        if self._desk is None:
            raise ConfigurationError("TelegramNotifier is not started (no gateway)")
        return self._desk

    async def _chat_for(self, request: RequestRecord) -> int:
        if request.session_id and self._desk is not None:
            try:
                session = await self._desk.asession(request.session_id)
            except SessionNotFound:
                session = None
            if session is not None and session.telegram_id is not None:
                return session.telegram_id
        if self.default_chat_id is not None:
            return self.default_chat_id
        raise DeliveryError(
            f"no Telegram chat configured for request {request.id}: its session has no "
            "telegram_id and the notifier has no default_chat_id",
            retryable=False,
        )

    async def _key(self, request_id: str, action: dict[str, Any]) -> str:
        key = secrets.token_urlsafe(9)  # 12 characters, 72 random bits
        await self._gw().put_callback(key, request_id, action)
        return key

    def _may_decide(self, user: User) -> bool:
        if self.approvers is None:
            return True
        names = {str(user.id)}
        if user.username:
            names.add(user.username.lower())
        return bool(names & self.approvers)

    async def _allowed(self, user: User, request_id: str) -> bool:
        """The notifier's own ``approvers`` list; a refusal is audited like the gateway's,
        so every refused tap or reply is on record."""
        if self._may_decide(user):
            return True
        with contextlib.suppress(RequestNotFound):  # the request is gone: nothing to record
            await self._gw().arefuse(request_id, actor=_actor(user), channel="telegram",
                                     reason="not in the Telegram notifier's approvers")
        return False

    # --- handlers: taps --------------------------------------------------------------------

    async def _on_tap(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None or query.data is None:
            return
        found = await self._gw().get_callback(query.data)
        if found is None:
            await self._answer(query, "This button is no longer valid.")
            return
        request_id, action = found
        user = query.from_user
        if not await self._allowed(user, request_id):
            await self._answer(query, "not authorized to decide this request", alert=True)
            return
        op = action.get("op")
        if op == "decide":
            await self._decide_from_tap(query, request_id, dict(action.get("decision") or {}))
        elif op == "prompt":
            # Asked before prompting: a refused tap must not make the bot post anything.
            try:
                await self._gw().aauthorize(request_id, str(user.id), actor=_actor(user),
                                            channel="telegram")
            except ApproverNotAllowed:
                await self._answer(query, "not authorized to decide this request",
                                   alert=True)
                return
            except RequestNotFound:
                await self._answer(query, "This request no longer exists.")
                return
            await self._prompt(query, request_id, str(action.get("purpose")))
        else:
            await self._answer(query, "This button is no longer valid.")

    async def _decide_from_tap(
        self, query: CallbackQuery, request_id: str, decision: dict[str, Any]
    ) -> None:
        user = query.from_user
        try:
            record = await self._gw().arespond(
                request_id,
                decision,
                actor=_actor(user),
                channel="telegram",
                approver_id=str(user.id),
            )
        except AlreadyDecided as exc:
            await self._answer(
                query, already_decided_text(exc.status, exc.decided_by, exc.decided_at)
            )
        except ApproverNotAllowed:
            await self._answer(query, "not authorized to decide this request", alert=True)
        except RequestNotFound:
            await self._answer(query, "This request no longer exists.")
        except DuplicateVote as exc:
            await self._answer(query, f"You already voted {exc.vote}; a vote counts once.",
                               alert=True)
        except InvalidDecision as exc:
            await self._answer(query, f"Not accepted: {exc}", alert=True)
        else:
            if record.pending:  # a vote, and the request needs more
                await self._answer(query, f"🗳 Vote counted. {tally_text(record)}")
                return
            emoji, words = outcome_label(record.status)
            await self._answer(query, f"{emoji} {words}")

    async def _prompt(self, query: CallbackQuery, request_id: str, purpose: str) -> None:
        """Ask for a reason or replacement arguments with a ForceReply message."""
        try:
            record = await self._gw().aget(request_id)
        except RequestNotFound:
            await self._answer(query, "This request no longer exists.")
            return
        if not record.pending:
            await self._answer(
                query, already_decided_text(record.status, record.decided_by, record.decided_at)
            )
            return
        message = query.message
        if not isinstance(message, Message):
            await self._answer(query, "This message is too old to answer here.")
            return
        user = query.from_user
        mention = f'<a href="tg://user?id={user.id}">{escape_clip(user.first_name, 64)}</a>'
        if purpose == "edit":
            text = render_edit_prompt(record)
            placeholder = '{"arg": "value"}'
        else:
            purpose = "reject"
            text = render_reject_prompt(record)
            placeholder = "Reason for rejecting"
        text = truncate_html(f"{mention}: {text}")
        try:
            prompt = await self._send(
                message.chat_id,
                text,
                ForceReply(selective=True, input_field_placeholder=placeholder),
                what=f"{purpose} prompt for {request_id}",
            )
        except DeliveryError as exc:
            logger.warning("telegram: could not send a prompt: %s", exc)
            await self._answer(query, "Could not ask for your reply; please try again.")
            return
        await self._gw().put_callback(
            _reply_key(prompt.chat_id, prompt.message_id),
            request_id,
            {"op": "reply", "purpose": purpose, "tool": record.shown.name},
        )
        await self._answer(query, "Reply to the message below.")

    # --- handlers: replies -----------------------------------------------------------------

    async def _on_reply(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        if message is None or message.reply_to_message is None or message.text is None:
            return
        user = message.from_user
        if user is None:
            return
        found = await self._gw().get_callback(
            _reply_key(message.chat_id, message.reply_to_message.message_id)
        )
        if found is None:
            return  # a reply to something that is not a prompt: not ours
        request_id, action = found
        if not await self._allowed(user, request_id):
            await self._reply(message, "⛔ You are not authorized to answer this request.")
            return
        purpose = action.get("purpose")
        text = message.text
        if purpose == "reject":
            decision: dict[str, Any] = {"type": "reject", "message": text}
        elif purpose == "edit":
            try:
                args = json.loads(text)
            except ValueError as exc:
                await self._reply(
                    message,
                    f"⚠️ That is not valid JSON ({escape_clip(exc, 300)}). The request is "
                    "still pending: reply to the prompt again with one JSON object.",
                )
                return
            if not isinstance(args, dict):
                await self._reply(
                    message,
                    "⚠️ The new arguments must be one JSON object, like "
                    '<code>{"environment": "staging"}</code>. The request is still pending: reply '
                    "to the prompt again.",
                )
                return
            decision = {
                "type": "edit",
                "edited_action": {"name": action.get("tool") or "", "args": args},
            }
        else:
            decision = {"type": "respond", "message": text}
        try:
            record = await self._gw().arespond(
                request_id,
                decision,
                actor=_actor(user),
                channel="telegram",
                approver_id=str(user.id),
            )
        except AlreadyDecided as exc:
            await self._reply(
                message, escape(already_decided_text(exc.status, exc.decided_by, exc.decided_at))
            )
        except ApproverNotAllowed:
            await self._reply(message, "⛔ You are not authorized to answer this request.")
        except RequestNotFound:
            await self._reply(message, "This request no longer exists.")
        except DuplicateVote as exc:
            await self._reply(message, f"You already voted {escape(exc.vote)}; a vote counts "
                                       "once.")
        except InvalidDecision as exc:
            details = "".join(
                f"\n• {escape_clip(e.get('loc', ''), 100)}: {escape_clip(e.get('msg', e), 300)}"
                for e in exc.errors[:5]
                if isinstance(e, dict)
            )
            await self._reply(
                message,
                f"⚠️ Not accepted: {escape_clip(exc, 1000)}{details}\nThe request is still "
                "pending: reply to the prompt again.",
            )
        else:
            if record.pending:  # a vote, and the request needs more
                await self._reply(message, f"🗳 Vote counted. {escape(tally_text(record))}")
                return
            emoji, words = outcome_label(record.status)
            await self._reply(message, f"{emoji} {escape(words)}.")

    # --- handlers: commands ----------------------------------------------------------------

    async def _cmd_start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return
        await self._reply(
            message,
            f"👋 Your Telegram id is <code>{user.id}</code>; this chat's id is "
            f"<code>{message.chat_id}</code>.\nRegister a session with "
            f"<code>telegram_id={message.chat_id}</code> to get its approval requests "
            "here. /help explains the rest.",
        )

    async def _cmd_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None:
            return
        await self._reply(
            message,
            "<b>Loopgate approvals</b>\n"
            "Requests arrive as messages. Tap <b>Approve</b> or <b>Reject</b>; "
            "<b>Reject with reason</b> and <b>Edit</b> ask you to reply with text "
            "(new arguments as JSON). For questions, reply to the message with your answer.\n\n"
            "/start — your Telegram id, for registering a session\n"
            "/pending — requests waiting in this chat\n"
            "/status — this chat's requests by status\n"
            + ("/inbox — a one-time link to the web inbox (private chat)\n"
               if any(command == "inbox" for command, _ in self._commands()) else "")
            + "/help — this message",
        )

    async def _routed_here(self, chat_id: int) -> tuple[list[SessionRecord], bool]:
        """Sessions whose requests come to this chat, and whether it is the default chat."""
        sessions = await self._gw().asessions(active=None)
        mine = [s for s in sessions if s.telegram_id == chat_id]
        return mine, chat_id == self.default_chat_id

    async def _requests_here(self, chat_id: int, *, pending: bool) -> list[RequestRecord]:
        desk = self._gw()
        sessions, is_default = await self._routed_here(chat_id)
        found: dict[str, RequestRecord] = {}
        for session in sessions:
            records = await desk.arequests(session_id=session.session_id, pending=pending)
            found.update((r.id, r) for r in records)
        if is_default:
            routed = {
                s.session_id
                for s in await self._gw().asessions(active=None)
                if s.telegram_id is not None
            }
            records = await desk.arequests(pending=pending)
            found.update((r.id, r) for r in records if r.session_id not in routed)
        return sorted(found.values(), key=lambda r: r.created_at)

    async def _cmd_pending(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None:
            return
        records = await self._requests_here(message.chat_id, pending=True)
        if not records:
            await self._reply(message, "Nothing is waiting in this chat. ✨")
            return
        lines = [f"⏳ <b>{len(records)} pending</b>"]
        for record in records[:30]:
            shown = record.shown
            what = shown.name or shown.message or shown.description
            line = f"• <code>{escape_clip(record.id, 64)}</code> {escape(record.kind.value)}"
            if what:
                line += f": {escape_clip(what, 80)}"
            if record.expires_at is not None:
                line += f" (expires {record.expires_at.strftime('%H:%M')} UTC)"
            lines.append(line)
        if len(records) > 30:
            lines.append(f"… and {len(records) - 30} more")
        await self._reply(message, "\n".join(lines))

    async def _cmd_status(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None:
            return
        records = await self._requests_here(message.chat_id, pending=False)
        counts = {status: 0 for status in Status}
        for record in records:
            counts[record.status] += 1
        lines = ["📊 <b>Requests in this chat</b>"]
        lines += [
            f"{outcome_label(status)[0]} {status.value}: {count}"
            for status, count in counts.items()
            if count or status is Status.PENDING
        ]
        await self._reply(message, "\n".join(lines))

    async def _cmd_inbox(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A one-time sign-in link to the web inbox, only in a private chat (anyone in a
        group would see it) and only for users mapped to an inbox identity."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return
        if self.inbox_url is None or self.inbox_identity is None:
            await self._reply(message, "The web inbox is not set up on this server.")
            return
        if message.chat.type != "private":
            await self._reply(message, "Ask me for an inbox link in a private chat.")
            return
        identity = self.inbox_identity(user.id, user.username)
        if identity is None:
            await self._reply(
                message, f"You have no inbox identity here: ask the operator for an API key "
                f"named <code>{user.id}</code>.")
            return
        from loopgate_lc.server.inbox.auth import DEFAULT_LINK_TTL, issue_link, link_path

        token = await issue_link(self._gw(), identity)
        url = self.inbox_url + link_path(token)
        await self._reply(
            message, f"🔑 Sign in to the inbox as <b>{escape(identity)}</b> (works once, for "
            f"{int(DEFAULT_LINK_TTL // 60)} minutes):\n{escape(url)}")

    # --- errors ----------------------------------------------------------------------------

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        logger.error(
            "telegram: handling an update failed: %r", context.error, exc_info=context.error
        )

    def _on_polling_error(self, error: TelegramError) -> None:
        logger.warning("telegram: polling failed, retrying: %s", error)
