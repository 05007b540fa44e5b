"""The notifier protocol: how a pending request reaches a person.

A notifier only delivers; it never decides. Decisions travel back through
``Loopgate.arespond`` whatever the channel, so exactly-once holds in one place.
Deliveries run from the store's durable outbox: when ``notify`` raises, the gateway
records the failure, keeps the request pending and retries with backoff.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from loopgate_lc.gateway import Loopgate
    from loopgate_lc.stores.base import RequestRecord

__all__ = ["NO_CHANNEL_WARNING", "DeliveryError", "Notifier", "VoteNotifier"]

NO_CHANNEL_WARNING = (
    "no notification channel is configured, so nobody is told about new requests: they "
    "wait (and time out) unless someone runs `loopgate-lc pending`, another process with a "
    "channel shares this store, or a client answers over HTTP. Set TELEGRAM_BOT_TOKEN (and "
    "TELEGRAM_DEFAULT_CHAT_ID) to reach people on Telegram."
)
"""Said at start-up and in ``/health`` by a server or MCP process without a channel."""


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


@runtime_checkable
class VoteNotifier(Notifier, Protocol):
    """A notifier that shows a quorum request's count as votes arrive (see
    :mod:`loopgate_lc.quorum`); others hear only of the decision."""

    async def on_vote(self, request: RequestRecord) -> None:
        """Show the request's new count (``request.votes``); it is still pending."""


@runtime_checkable
class LifecycleNotifier(Notifier, Protocol):
    """A notifier that also listens (Telegram buttons, console input) and so needs the
    gateway and a running event loop."""

    async def start(self, gateway: Loopgate) -> None:
        """Begin listening; called once when the gateway starts."""

    async def stop(self) -> None:
        """Stop listening and release resources."""
