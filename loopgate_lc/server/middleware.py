"""The guard in front of every route: browser checks, API keys and the body-size limit.

One plain ASGI middleware, so it covers the ``/hitl`` routes and the mounted MCP
endpoint alike, and it answers in the API's one error shape. It is one pass rather than
a middleware per check because each layer cost every request a call, a scan of the
headers and a wrapper per check, a measurable share of a decision's CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loopgate_lc.errors import ConfigurationError
from loopgate_lc.server.errors import ApiError, BodyTooLarge
from loopgate_lc.server.tenancy import ADMIN, ApiKey, ApiKeys, parse_api_keys

__all__ = [
    "ApiKeys",
    "GuardMiddleware",
    "caller",
    "default_allowed_hosts",
    "parse_api_keys",
]

ACTOR_KEY = "loopgate_actor"
"""Where the middleware leaves the caller's actor name in ``scope["state"]``."""

KEY_STATE = "loopgate_key"
"""Where the middleware leaves the caller's :class:`ApiKey` (its identity and scope)."""

_CHECKED = frozenset((b"host", b"origin", b"content-type", b"content-length",
                      b"transfer-encoding", b"authorization", b"x-api-key"))


def caller(scope: Scope) -> ApiKey:
    """The key the request was made with; :data:`ADMIN` when the server has no keys."""
    found = scope.get("state", {}).get(KEY_STATE)
    return found if isinstance(found, ApiKey) else ADMIN


def _headers(scope: Scope) -> dict[bytes, str]:
    """The headers the guard reads, each its first occurrence, in one scan."""
    found: dict[bytes, str] = {}
    for key, value in scope.get("headers", []):
        name = key.lower()
        if name in _CHECKED and name not in found:
            found[name] = value.decode("latin-1")
    return found


def _presented_key(headers: dict[bytes, str]) -> str | None:
    auth = headers.get(b"authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get(b"x-api-key")
    if key and key.strip():
        return key.strip()
    return None


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


def _declares_body(headers: dict[bytes, str]) -> bool:
    length = headers.get(b"content-length")
    if length is not None:
        return length.strip() != "0"
    return b"transfer-encoding" in headers


class GuardMiddleware:
    """Keep web pages away from the API, require API keys, and limit body sizes.

    The checks, in this order, on every HTTP request:

    * ``Host`` must be one of ``allowed_hosts`` (421 otherwise): a DNS-rebinding page
      reaches the server under its own name, which is not on the list.
    * An ``Origin`` header must be one of ``cors_origins`` (403 otherwise): browsers send
      it on cross-origin requests (and on same-origin POSTs), and the server serves no
      pages that call the API, so any other origin is someone else's page trying to.
    * A ``POST`` with a body must be ``application/json`` (415 otherwise): a form or a
      ``text/plain`` fetch is a "simple" cross-site request that skips CORS preflight.
    * Then ``cors`` (the CORS middleware, when browsers may call the API) sees the
      request, so its preflight answers come after the browser checks and before keys.
    * On ``protected`` path prefixes, not ``exempt`` ones, an API key when there are
      keys: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; none -> 401, a
      wrong one -> 403. Exempt prefixes authenticate otherwise (webhook decisions carry
      a signature or token). Without keys every route is open and the actor is ``api``.
    * Bodies over ``max_bytes`` get 413, counting what actually arrives: a
      ``Content-Length`` over the limit is refused before reading; a body without one
      (chunked) or whose header lies is cut off as soon as the count passes the limit.

    Args:
        allowed_hosts: Host names (without port) accepted; ``"*"`` in the list or None
            accepts any.
        cors_origins: Origins (``https://app.example``) allowed to call the API from a
            browser.
        pages: Path prefixes of the server's own pages (the inbox). They get the
            ``Host`` check only of the browser checks: their forms post from the same
            origin, as forms, and they check that origin and a CSRF token themselves.
        keys: The API keys; none leaves every route open.
        protected: Path prefixes that need a key.
        exempt: Path prefixes under those that do not.
        max_bytes: The largest body accepted.
        cors: Wraps the rest of the checks and the app (the CORS middleware), or None.

    Raises:
        ConfigurationError: ``max_bytes`` is not positive.
    """

    def __init__(self, app: ASGIApp, *, allowed_hosts: Iterable[str] | None,
                 cors_origins: Iterable[str] = (), pages: tuple[str, ...] = (),
                 keys: ApiKeys, protected: tuple[str, ...], exempt: tuple[str, ...] = (),
                 max_bytes: int, cors: Callable[[ASGIApp], ASGIApp] | None = None) -> None:
        if max_bytes < 1:
            raise ConfigurationError(f"max_body_bytes must be positive, got {max_bytes}")
        self.app = app
        self.pages = tuple(p.rstrip("/") + "/" for p in pages)
        hosts = None if allowed_hosts is None else {_host_name(h) for h in allowed_hosts}
        self.allowed_hosts = None if hosts is None or "*" in hosts else hosts
        self.cors_origins = {o.strip().rstrip("/").lower() for o in cors_origins}
        self.keys = keys
        self.protected = protected
        self.exempt = exempt
        self.max_bytes = max_bytes
        self._cors = None if cors is None else cors(self._rescanned)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        host = headers.get(b"host") or ""
        if self.allowed_hosts is not None and _host_name(host) not in self.allowed_hosts:
            await ApiError(421, "misdirected_request",
                           f"host {host[:100]!r} is not served here; allowed hosts are set "
                           "with LOOPGATE_ALLOWED_HOSTS").response()(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if not (self.pages and (path + "/").startswith(self.pages)):
            origin = headers.get(b"origin")
            if origin is not None and origin.strip().rstrip("/").lower() \
                    not in self.cors_origins:
                await ApiError(403, "cross_origin",
                               f"requests from origin {origin[:100]!r} are not allowed; "
                               "allowed origins are set with LOOPGATE_CORS_ORIGINS"
                               ).response()(scope, receive, send)
                return
            if scope.get("method") == "POST" and _declares_body(headers) \
                    and not _is_json(headers.get(b"content-type")):
                await ApiError(415, "unsupported_media_type",
                               "send the body as JSON with 'Content-Type: application/json'"
                               ).response()(scope, receive, send)
                return
        if self._cors is None:
            await self._admitted(scope, receive, send, headers)
        else:
            await self._cors(scope, receive, send)

    async def _rescanned(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._admitted(scope, receive, send, _headers(scope))

    async def _admitted(self, scope: Scope, receive: Receive, send: Send,
                        headers: dict[bytes, str]) -> None:
        """The key and body checks, after the browser's (and CORS's)."""
        path: str = scope.get("path", "")
        state: dict[str, Any] = scope.setdefault("state", {})
        state[ACTOR_KEY] = "api"
        state[KEY_STATE] = ADMIN
        if self.keys and path.startswith(self.protected) and not path.startswith(self.exempt):
            presented = _presented_key(headers)
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
        await self._limited(scope, receive, send, headers.get(b"content-length"))

    async def _limited(self, scope: Scope, receive: Receive, send: Send,
                       declared: str | None) -> None:
        limit = self.max_bytes
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
