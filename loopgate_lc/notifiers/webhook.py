"""A notifier that POSTs signed JSON to an HTTP endpoint.

Two layers of retry, on purpose: a few quick in-call attempts ride out a blip (a deploy,
a dropped connection) without touching the database, and when those run out
:class:`~loopgate_lc.notifiers.base.DeliveryError` hands the delivery back to the
gateway's durable outbox, which retries for as long as the request is pending. Every
attempt carries the same ``Idempotency-Key`` and ``webhook-id``, so a receiver that saw an
attempt whose response was lost can drop the repeat.

Deliveries are signed in the Standard Webhooks format; receivers check them with
:func:`loopgate_lc.signing.verify_signature` or any Standard Webhooks library.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import httpx

from loopgate_lc.errors import ConfigurationError
from loopgate_lc.notifiers.base import DeliveryError
from loopgate_lc.signing import (
    IDEMPOTENCY_HEADER,
    Secrets,
    decision_token,
    message_id_for,
    sign,
)
from loopgate_lc.stores.base import RequestRecord

__all__ = ["WebhookNotifier"]

logger = logging.getLogger(__name__)

Event = Literal["approval.requested", "approval.resolved"]

EVENT_HEADER = "X-Loopgate-Event"


class WebhookNotifier:
    """Deliver ``approval.requested`` and ``approval.resolved`` events as signed POSTs.

    Args:
        url: The receiver's endpoint (http or https).
        secret: The shared HMAC secret, or several (new first) while rotating.
        name: The notifier's name in outbox rows and audit events.
        timeout: Seconds per attempt (connect, write and read each).
        max_attempts: Attempts per call before giving the delivery back to the outbox.
        backoff: First retry delay in seconds; doubles per attempt, capped at
            ``max_backoff``, with up to 10% jitter so many notifiers do not retry in step.
        max_backoff: The cap on one delay, also applied to a 429's ``Retry-After``.
        decision_url: Where the receiver sends the person's decision back, e.g.
            ``"https://app.example/hitl/webhook/decision"``. The request id is appended
            as a path segment, or substituted for ``{request_id}`` when the template has
            it. Omitted from payloads when None.
        transport: An httpx transport for the client this notifier creates (tests pass
            ``httpx.MockTransport``; proxies and retries at the socket level go here too).
        client: An existing client to share; this notifier then never closes it.
        sleep: Awaited between attempts; injectable so tests do not wait.

    Raises:
        ConfigurationError: The URL is not http(s), the secret is empty, or the retry
            settings cannot work.
    """

    echo_answers = True
    """Quote the start of an error answer in the failure message (and so the audit). The
    receiver is the operator's own; ``callback_url`` receivers are the client's and are
    never quoted."""

    def __init__(
        self,
        url: str,
        secret: Secrets,
        *,
        name: str = "webhook",
        timeout: float = 10.0,
        max_attempts: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        decision_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        _check_url(url, "url")
        if decision_url is not None:
            _check_url(decision_url.replace("{request_id}", "x"), "decision_url")
        if not secret or (not isinstance(secret, str | bytes) and not all(secret)):
            raise ConfigurationError("WebhookNotifier needs a non-empty secret to sign with")
        if max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be at least 1, not {max_attempts}")
        if timeout <= 0 or backoff < 0 or max_backoff < 0:
            raise ConfigurationError("timeout must be positive; backoff and max_backoff >= 0")
        if client is not None and transport is not None:
            raise ConfigurationError("pass either client or transport, not both")
        self.url = url
        self.name = name
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.decision_url = decision_url
        self._secret: Secrets = secret
        self._transport = transport
        self._client = client
        self._owns_client = client is None
        self._sleep = sleep

    def __repr__(self) -> str:
        # The secret stays out of reprs, and so out of logs and tracebacks.
        return f"WebhookNotifier(name={self.name!r}, url={self.url!r})"

    # -- the Notifier protocol --------------------------------------------------------------

    async def notify(self, request: RequestRecord) -> dict[str, Any]:
        """POST ``approval.requested``.

        Returns:
            ``{"status_code": ..., "attempts": n}``, stored by the gateway as this
            channel's message reference.

        Raises:
            DeliveryError: ``retryable=False`` for a 4xx other than 429 (retrying the
                same body cannot help); ``retryable=True`` once ``max_attempts`` failed
                with 5xx, 429, timeouts or connection errors.
        """
        return await self.deliver("approval.requested", request)

    async def on_resolved(self, request: RequestRecord) -> None:
        """POST ``approval.resolved`` with the final status and decision. Raises as
        :meth:`notify` does, so the gateway's outbox retries it."""
        await self.deliver("approval.resolved", request)

    # -- delivery ---------------------------------------------------------------------------

    def build_body(self, event: Event, request: RequestRecord) -> dict[str, Any]:
        """The JSON document sent for ``event``: the whole record plus where to answer.

        The decision URL and token are only offered while there is something to decide.
        """
        body: dict[str, Any] = {
            "event": event,
            "request": request.model_dump(mode="json"),
            "decision_url": None,
            "decision_token": None,
        }
        if event == "approval.requested":
            secret = self._primary_secret()
            body["decision_token"] = decision_token(secret, request.id)
            if self.decision_url is not None:
                body["decision_url"] = self._decision_url_for(request.id)
        return body

    async def deliver(self, event: Event, request: RequestRecord) -> dict[str, Any]:
        """Send one event with in-call retries; see :meth:`notify` for the contract."""
        content = json.dumps(
            self.build_body(event, request), separators=(",", ":"), ensure_ascii=False
        ).encode()
        idempotency_key = f"{request.id}:{event}"
        client = self._get_client()
        last_problem = ""
        last_exc: Exception | None = None
        for attempt in range(1, self.max_attempts + 1):
            # Signed per attempt: a fresh timestamp keeps late retries inside the
            # receiver's tolerance window.
            headers = {
                "Content-Type": "application/json",
                IDEMPOTENCY_HEADER: idempotency_key,
                EVENT_HEADER: event,
                **sign(content, self._secret, message_id=message_id_for(idempotency_key)),
            }
            retry_after: float | None = None
            try:
                response = await client.post(
                    self.url, content=content, headers=headers, timeout=self.timeout
                )
            except httpx.TransportError as exc:  # connection refused, timeouts, resets
                last_exc = exc
                last_problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return {"status_code": status, "attempts": attempt}
                last_exc = None
                last_problem = f"HTTP {status}" + (_snippet(response) if self.echo_answers
                                                   else "")
                if status != 429 and status < 500:
                    raise DeliveryError(
                        f"webhook {self.name!r} {event} for {request.id!r} was refused with "
                        f"{last_problem}; not retrying",
                        retryable=False,
                    )
                retry_after = _retry_after(response)
            if attempt < self.max_attempts:
                delay = self._delay(attempt, retry_after)
                logger.warning(
                    "webhook %r %s for %r failed (%s), attempt %d of %d; retrying in %.2fs",
                    self.name,
                    event,
                    request.id,
                    last_problem,
                    attempt,
                    self.max_attempts,
                    delay,
                )
                await self._sleep(delay)
        raise DeliveryError(
            f"webhook {self.name!r} {event} for {request.id!r} failed after "
            f"{self.max_attempts} attempts; last: {last_problem}",
            retryable=True,
        ) from last_exc

    # -- lifecycle --------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the HTTP client if this notifier created it (a shared one stays open)."""
        if not self._owns_client:
            return
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def stop(self) -> None:
        """Same as :meth:`aclose`, for gateways that stop notifiers on shutdown."""
        await self.aclose()

    async def __aenter__(self) -> WebhookNotifier:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- helpers ----------------------------------------------------------------------------

    def _get_client(self) -> httpx.AsyncClient:
        # Created lazily: an AsyncClient belongs to the event loop that first uses it,
        # and notifiers are usually built before the gateway's loop runs.
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport,
                timeout=self.timeout,
                headers={"User-Agent": "loopgate-lc-webhook"},
            )
        return self._client

    def _primary_secret(self) -> str | bytes:
        if isinstance(self._secret, str | bytes):
            return self._secret
        return self._secret[0]

    def _decision_url_for(self, request_id: str) -> str:
        assert self.decision_url is not None
        segment = quote(request_id, safe="")
        if "{request_id}" in self.decision_url:
            return self.decision_url.replace("{request_id}", segment)
        return f"{self.decision_url.rstrip('/')}/{segment}"

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        delay: float = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        delay *= 1 + random.random() * 0.1
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.max_backoff)


def _check_url(url: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"{what} must be an absolute http(s) URL, not {url!r}")


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header in its delta-seconds form; dates are ignored."""
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _snippet(response: httpx.Response, limit: int = 200) -> str:
    """A short piece of the error body for the message: enough to diagnose, no more."""
    text = response.text.strip().replace("\n", " ")
    if not text:
        return ""
    return f": {text[:limit]}" + ("..." if len(text) > limit else "")
