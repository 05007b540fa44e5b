"""``callback_url``: the final poll result POSTed to the client, signed.

The callback rides the gateway's durable outbox like any notifier's ``on_resolved``, so a
receiver that is down gets it later (the outbox retries with backoff), and a decision
made in another process (the CLI, a second server) is delivered by the server that owns
the ``callback`` channel. Signing, in-call retries and idempotency keys are the
webhook notifier's: each delivery is a :class:`WebhookNotifier` aimed at that one URL
whose body is the poll result instead of the notifier's event document.
"""

from __future__ import annotations

from typing import Any

import httpx

from loopgate_lc.notifiers.webhook import Event, WebhookNotifier
from loopgate_lc.server.models import poll_result
from loopgate_lc.signing import Secrets
from loopgate_lc.stores.base import RequestRecord

__all__ = ["CALLBACK_CHANNEL", "CallbackNotifier"]

CALLBACK_CHANNEL = "callback"


class _PollResultPoster(WebhookNotifier):
    """The webhook notifier's delivery, with the poll result as the body. The answer is
    not kept beyond its status code: a client-chosen URL must not make the server fetch
    and store what an internal address says."""

    echo_answers = False

    def build_body(self, event: Event, request: RequestRecord) -> dict[str, Any]:
        return {"event": event, **poll_result(request)}


class CallbackNotifier:
    """POSTs the poll result to a request's ``callback_url`` once it is decided.

    Args:
        secret: The webhook secret the body is signed with (Standard Webhooks headers).
        max_attempts: Quick attempts per outbox try; after them the outbox retries with
            backoff for as long as needed.
        backoff: First delay between quick attempts (doubling).
        timeout: Seconds per attempt.
        transport: An httpx transport (tests, proxies).
    """

    name = CALLBACK_CHANNEL

    def __init__(self, secret: Secrets, *, max_attempts: int = 3, backoff: float = 0.5,
                 timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._secret = secret
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._timeout = timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return "CallbackNotifier()"

    def accepts(self, request: RequestRecord) -> bool:
        """Only requests that asked for a callback concern this channel."""
        return bool(request.payload.get("callback_url"))

    async def notify(self, request: RequestRecord) -> dict[str, Any] | None:
        """Nothing to show while pending; the returned reference marks the request as
        this channel's, so whichever process decides it queues the callback."""
        url = request.payload.get("callback_url")
        return {"url": url} if url else None

    async def on_resolved(self, request: RequestRecord) -> None:
        """POST the poll result; raises ``DeliveryError`` so the outbox retries."""
        url = request.payload.get("callback_url")
        if not url:
            return
        poster = _PollResultPoster(
            str(url), self._secret, name=self.name, client=self._get_client(),
            max_attempts=self._max_attempts, backoff=self._backoff, timeout=self._timeout,
        )
        await poster.deliver("approval.resolved", request)

    def _get_client(self) -> httpx.AsyncClient:
        # Created on first use: it belongs to the gateway's loop, where deliveries run.
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport, timeout=self._timeout,
                headers={"User-Agent": "loopgate-lc-callback"})
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
