"""``callback_url``: the final poll result POSTed to the client, signed.

The callback rides the gateway's durable outbox like any notifier's ``on_resolved``, so a
receiver that is down gets it later (the outbox retries with backoff), and a decision
made in another process (the CLI, a second server) is delivered by the server that owns
the ``callback`` channel. Signing, in-call retries and idempotency keys are the
webhook notifier's: each delivery is a :class:`WebhookNotifier` aimed at that one URL
whose body is the poll result instead of the notifier's event document.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx

from loopgate_lc.notifiers.base import DeliveryError
from loopgate_lc.notifiers.webhook import Event, WebhookNotifier
from loopgate_lc.server.models import poll_result
from loopgate_lc.signing import Secrets
from loopgate_lc.stores.base import RequestRecord

__all__ = ["CALLBACK_CHANNEL", "CallbackNotifier", "CallbackPolicy"]

CALLBACK_CHANNEL = "callback"

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class CallbackPolicy:
    """Which addresses a client-chosen ``callback_url`` may reach.

    Only public addresses, unless the allowlist names the host or its network: a URL
    that resolves to loopback, private, link-local (cloud metadata at 169.254.169.254),
    shared or reserved addresses would let any API client make the server call its own
    network (SSRF). Every address a name resolves to is checked, so a name with one
    public and one private address is refused.

    Args:
        allowlist: Host names (``"hooks.internal"``), addresses or networks
            (``"127.0.0.1"``, ``"10.0.0.0/8"``) that may be reached although internal.
    """

    def __init__(self, allowlist: Iterable[str] = ()) -> None:
        self.networks: list[_Network] = []
        self.names: set[str] = set()
        for entry in allowlist:
            text = entry.strip().lower()
            if not text:
                continue
            try:
                self.networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                self.names.add(text.rstrip("."))

    def _allowed(self, address: _Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.networks):
            return True
        return address.is_global and not address.is_multicast

    async def check(self, url: str) -> None:
        """Raise ``ValueError`` saying why ``url`` may not be called back."""
        host = (urlsplit(url).hostname or "").lower().rstrip(".")
        if not host:
            raise ValueError("callback_url has no host")
        if host in self.names:
            return
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, None, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError) as exc:
                raise ValueError(f"callback_url host {host!r} does not resolve") from exc
            addresses = [ipaddress.ip_address(str(info[4][0]).partition("%")[0])
                         for info in infos]
        refused = sorted({str(a) for a in addresses if not self._allowed(a)})
        if refused:
            raise ValueError(
                f"callback_url host {host!r} is an internal address ({', '.join(refused)}); "
                "the server allows it only when LOOPGATE_CALLBACK_ALLOWLIST names it")


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
        policy: Which addresses callbacks may reach; checked again before each delivery,
            since a name may resolve elsewhere by then.
    """

    name = CALLBACK_CHANNEL

    def __init__(self, secret: Secrets, *, max_attempts: int = 3, backoff: float = 0.5,
                 timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None,
                 policy: CallbackPolicy | None = None) -> None:
        self._secret = secret
        self.policy = policy or CallbackPolicy()
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._timeout = timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return "CallbackNotifier()"

    def accepts(self, request: RequestRecord) -> bool:
        """Only requests that asked for a callback concern this channel."""
        return request.shown.callback_url is not None

    async def notify(self, request: RequestRecord) -> dict[str, Any] | None:
        """Nothing to show while pending; the returned reference marks the request as
        this channel's, so whichever process decides it queues the callback."""
        url = request.shown.callback_url
        return {"url": url} if url else None

    async def on_resolved(self, request: RequestRecord) -> None:
        """POST the poll result; raises ``DeliveryError`` so the outbox retries."""
        url = request.shown.callback_url
        if not url:
            return
        try:
            await self.policy.check(str(url))
        except ValueError as exc:
            raise DeliveryError(str(exc), retryable=False) from exc
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
