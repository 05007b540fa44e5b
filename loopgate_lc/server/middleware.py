"""The guards in front of every route: browser checks, API keys and the body-size limit.

All are plain ASGI middleware, so they cover the ``/hitl`` routes and the mounted MCP
endpoint alike, and they answer in the API's one error shape.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loopgate_lc.errors import ConfigurationError
from loopgate_lc.server.errors import ApiError, BodyTooLarge
from loopgate_lc.server.tenancy import ADMIN, ApiKey, ApiKeys, parse_api_keys

__all__ = [
    "ApiKeys",
    "AuthMiddleware",
    "BodyLimitMiddleware",
    "BrowserGuardMiddleware",
    "caller",
    "default_allowed_hosts",
    "parse_api_keys",
]

ACTOR_KEY = "loopgate_actor"
"""Where the middleware leaves the caller's actor name in ``scope["state"]``."""

KEY_STATE = "loopgate_key"
"""Where the middleware leaves the caller's :class:`ApiKey` (its identity and scope)."""


def caller(scope: Scope) -> ApiKey:
    """The key the request was made with; :data:`ADMIN` when the server has no keys."""
    found = scope.get("state", {}).get(KEY_STATE)
    return found if isinstance(found, ApiKey) else ADMIN


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


class AuthMiddleware:
    """Require an API key on protected path prefixes.

    ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; none -> 401, a wrong one
    -> 403. Exempt prefixes authenticate otherwise (webhook decisions carry a signature
    or token). Without keys every route is open and the actor is ``api``.
    """

    def __init__(self, app: ASGIApp, keys: ApiKeys, *, protected: tuple[str, ...],
                 exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.keys = keys
        self.protected = protected
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        state: dict[str, Any] = scope.setdefault("state", {})
        state[ACTOR_KEY] = "api"
        state[KEY_STATE] = ADMIN
        needs_key = (bool(self.keys) and path.startswith(self.protected)
                     and not path.startswith(self.exempt))
        if needs_key:
            presented = _presented_key(scope)
            if presented is None:
                error = ApiError(401, "unauthorized",
                                 "an API key is required: send 'Authorization: Bearer <key>' "
                                 "or 'X-API-Key: <key>'",
                                 headers={"WWW-Authenticate": 'Bearer realm="loopgate"'})
                await error.response()(scope, receive, send)
                return
            key = self.keys.find(presented)
            if key is None:
                await ApiError(403, "forbidden", "the API key is not valid").response()(
                    scope, receive, send)
                return
            state[ACTOR_KEY] = key.actor
            state[KEY_STATE] = key
        await self.app(scope, receive, send)


def _presented_key(scope: Scope) -> str | None:
    auth = _header(scope, b"authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = _header(scope, b"x-api-key")
    if key and key.strip():
        return key.strip()
    return None


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413, counting what actually arrives.

    A ``Content-Length`` over the limit is refused before reading; a body without one
    (chunked) or whose header lies is cut off as soon as the count passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ConfigurationError(f"max_body_bytes must be positive, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                announced = int(declared)
            except ValueError:
                await ApiError(400, "bad_request", "Content-Length is not a number").response()(
                    scope, receive, send)
                return
            if announced > limit:
                await BodyTooLarge(limit).response()(scope, receive, send)
                return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await exc.response()(scope, receive, send)


_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def default_allowed_hosts(bind_host: str) -> tuple[str, ...] | None:
    """The ``Host`` names accepted when none are configured: the loopback names when the
    server binds to loopback (so a DNS-rebinding page cannot reach it), else any."""
    if bind_host in _LOOPBACK_NAMES or bind_host.startswith("127."):
        return tuple(dict.fromkeys((*_LOOPBACK_NAMES, bind_host)))
    return None


def _host_name(value: str) -> str:
    """``Host`` without its port, lower-cased; IPv6 brackets removed."""
    text = value.strip().lower()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    return text.rpartition(":")[0] if text.count(":") == 1 else text


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                           and media.endswith("+json"))


class BrowserGuardMiddleware:
    """Keep web pages the operator opens away from the API.

    Three checks, in this order, on every HTTP request:

    * ``Host`` must be one of ``allowed_hosts`` (421 otherwise): a DNS-rebinding page
      reaches the server under its own name, which is not on the list.
    * An ``Origin`` header must be one of ``cors_origins`` (403 otherwise): browsers send
      it on cross-origin requests (and on same-origin POSTs), and the server serves no
      pages that call the API, so any other origin is someone else's page trying to.
    * A ``POST`` with a body must be ``application/json`` (415 otherwise): a form or a
      ``text/plain`` fetch is a "simple" cross-site request that skips CORS preflight.

    Args:
        allowed_hosts: Host names (without port) accepted; ``"*"`` in the list or None
            accepts any.
        cors_origins: Origins (``https://app.example``) allowed to call the API from a
            browser.
        pages: Path prefixes of the server's own pages (the inbox). They get the
            ``Host`` check only: their forms post from the same origin, as forms, and
            they check that origin and a CSRF token themselves.
    """

    def __init__(self, app: ASGIApp, *, allowed_hosts: Iterable[str] | None,
                 cors_origins: Iterable[str] = (), pages: tuple[str, ...] = ()) -> None:
        self.app = app
        self.pages = tuple(p.rstrip("/") + "/" for p in pages)
        hosts = None if allowed_hosts is None else {_host_name(h) for h in allowed_hosts}
        self.allowed_hosts = None if hosts is None or "*" in hosts else hosts
        self.cors_origins = {o.strip().rstrip("/").lower() for o in cors_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host") or ""
        if self.allowed_hosts is not None and _host_name(host) not in self.allowed_hosts:
            await ApiError(421, "misdirected_request",
                           f"host {host[:100]!r} is not served here; allowed hosts are set "
                           "with LOOPGATE_ALLOWED_HOSTS").response()(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if self.pages and (path + "/").startswith(self.pages):
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        if origin is not None and origin.strip().rstrip("/").lower() not in self.cors_origins:
            await ApiError(403, "cross_origin",
                           f"requests from origin {origin[:100]!r} are not allowed; "
                           "allowed origins are set with LOOPGATE_CORS_ORIGINS"
                           ).response()(scope, receive, send)
            return
        if scope.get("method") == "POST" and _declares_body(scope) \
                and not _is_json(_header(scope, b"content-type")):
            await ApiError(415, "unsupported_media_type",
                           "send the body as JSON with 'Content-Type: application/json'"
                           ).response()(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _declares_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    if length is not None:
        return length.strip() != "0"
    return _header(scope, b"transfer-encoding") is not None
