"""The notifier protocol: how a pending request reaches a person.

A notifier only delivers; it never decides. Decisions travel back through
``Loopgate.arespond`` whatever the channel, so exactly-once holds in one place.
Deliveries run from the store's durable outbox: when ``notify`` raises, the gateway
records the failure, keeps the request pending and retries with backoff.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from loopgate_lc.stores.base import RequestRecord, SessionRecord

__all__ = [
    "DeliveryError",
    "Desk",
    "LifecycleNotifier",
    "Notifier",
    "VoteNotifier",
    "no_channel_warning",
]


def no_channel_warning(store_url: str | None, *, private: bool = True) -> str:
    """Said at start-up and in ``/health`` by a server or MCP process without a channel;
    the command it names lists that process's store (see
    :func:`~loopgate_lc.locations.store_command` for ``private``)."""
    from loopgate_lc.locations import store_hint

    pending = store_hint("pending", store_url, private=private)
    unless = ("a client answers over HTTP" if pending is None else
              f"someone runs {pending}, another process with a channel shares this store, "
              "or a client answers over HTTP")
    return ("no notification channel is configured, so nobody is told about new requests: "
            f"they wait (and time out) unless {unless}. Set TELEGRAM_BOT_TOKEN (and "
            "TELEGRAM_DEFAULT_CHAT_ID) to reach people on Telegram.")


class DeliveryError(Exception):
    """A notifier could not deliver; ``retryable`` False means retrying cannot help (4xx)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@runtime_checkable
class Notifier(Protocol):
    """What the gateway needs of a channel.

    Attributes:
        name: A stable name; outbox rows and audit events refer to it.
    """

    name: str

    async def notify(self, request: RequestRecord) -> Any:
        """Show a pending request to a person. Returns a message reference to store
        (or None). Raise on failure; the gateway retries."""

    async def on_resolved(self, request: RequestRecord) -> None:
        """Tell the channel the request left ``pending`` (edit the message, ...)."""


class Desk(Protocol):
    """What a listening channel may ask of the gateway, and nothing more.

    Hand back a person's decision or refusal (checked like every other channel's, through
    the gateway's one deciding path), read requests and sessions, and keep the channel's
    own references: where it showed a request, what a button's short key means. A
    channel never holds the gateway or its store, so it cannot change a request's state
    behind the gateway's back. Its methods run on the gateway's event loop, where
    ``start`` is called.
    """

    #: The gateway's store URL (None for a store object), for hints naming it.
    store_url: str | None

    async def arespond(self, request_id: str, decision: Mapping[str, Any], *,
                       actor: str | None = None, channel: str = "api",
                       approver_id: str | None = None) -> RequestRecord:
        """Decide a request (see ``Loopgate.respond``)."""
        ...

    async def aauthorize(self, request_id: str, approver_id: str | None, *,
                         actor: str | None = None, channel: str = "api") -> None:
        """Check a decider before prompting them (see ``Loopgate.authorize``)."""
        ...

    async def arefuse(self, request_id: str, *, actor: str | None, channel: str,
                      reason: str) -> None:
        """Audit a decider the channel refused by its own rules."""
        ...

    async def aget(self, request_id: str) -> RequestRecord:
        """One request. Raises: RequestNotFound."""
        ...

    async def asession(self, session_id: str) -> SessionRecord:
        """One session. Raises: SessionNotFound."""
        ...

    async def asessions(self, *, active: bool | None = None) -> list[SessionRecord]:
        """Sessions, optionally only (in)active ones."""
        ...

    async def arequests(self, *, session_id: str | None = None,
                        pending: bool = False) -> list[RequestRecord]:
        """Requests (of one session, only pending ones), oldest first."""
        ...

    async def set_message_ref(self, request_id: str, channel: str, ref: Any) -> None:
        """Remember where the channel showed a request. Raises: RequestNotFound."""
        ...

    async def put_callback(self, key: str, request_id: str, action: dict[str, Any]) -> None:
        """Map a short key (a button's data) to an action on a request."""
        ...

    async def get_callback(self, key: str) -> tuple[str, dict[str, Any]] | None:
        """``(request_id, action)`` for a key, or None."""
        ...


@runtime_checkable
class VoteNotifier(Notifier, Protocol):
    """A notifier that shows a quorum request's count as votes arrive (see
    :mod:`loopgate_lc.quorum`); others hear only of the decision."""

    async def on_vote(self, request: RequestRecord) -> None:
        """Show the request's new count (``request.votes``); it is still pending."""


@runtime_checkable
class LifecycleNotifier(Notifier, Protocol):
    """A notifier that also listens (Telegram buttons, console input) and so needs a
    :class:`Desk` to hand decisions to and a running event loop."""

    async def start(self, desk: Desk) -> None:
        """Begin listening; called once when the gateway starts."""

    async def stop(self) -> None:
        """Stop listening and release resources."""
