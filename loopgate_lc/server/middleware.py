"""Two guards in front of every route: API keys and the body-size limit.

Both are plain ASGI middleware, so they cover the ``/hitl`` routes and the mounted MCP
endpoint alike, and they answer in the API's one error shape.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loopgate_lc.errors import ConfigurationError
from loopgate_lc.server.errors import ApiError, BodyTooLarge

__all__ = ["ApiKeys", "AuthMiddleware", "BodyLimitMiddleware", "parse_api_keys"]

ACTOR_KEY = "loopgate_actor"
"""Where the middleware leaves the caller's name in ``scope["state"]``."""


class ApiKeys:
    """Named API keys; the name becomes the actor in the audit (``api:<name>``).

    Args:
        keys: ``{name: key}``, or bare keys (their actor is plain ``api``).
    """

    def __init__(self, keys: Mapping[str, str] | Iterable[str] = ()) -> None:
        named: dict[str, str] = {}
        if isinstance(keys, Mapping):
            named = {str(k): str(v) for k, v in keys.items()}
        else:
            for index, key in enumerate(keys):
                named[f"\x00{index}"] = str(key)  # unnamed: never shown
        for name, key in named.items():
            if not key or key != key.strip():
                raise ConfigurationError(
                    f"API key {name.lstrip(chr(0)) or '#'} is empty or has surrounding spaces")
        self._keys = named

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __repr__(self) -> str:  # keys stay out of logs
        return f"ApiKeys({len(self._keys)} keys)"

    def actor(self, presented: str) -> str | None:
        """The actor for a presented key, or None when it matches no key.

        Every key is compared (constant time each, no early exit), so timing does not tell
        which key came close.
        """
        found: str | None = None
        given = presented.encode()
        for name, key in self._keys.items():
            if hmac.compare_digest(given, key.encode()):
                found = "api" if name.startswith("\x00") else f"api:{name}"
        return found


def parse_api_keys(text: str | None) -> ApiKeys:
    """Read ``LOOPGATE_API_KEYS``: comma-separated ``key`` or ``name=key`` entries.

    Raises:
        ConfigurationError: An entry is empty or a name repeats.
    """
    if not text or not text.strip():
        return ApiKeys()
    named: dict[str, str] = {}
    bare: list[str] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        name, sep, key = entry.partition("=")
        if sep and name.strip() and key.strip():
            if name.strip() in named:
                raise ConfigurationError(f"API key name {name.strip()!r} appears twice")
            named[name.strip()] = key.strip()
        elif sep:
            raise ConfigurationError("an API key entry 'name=key' has an empty name or key")
        else:
            bare.append(entry)
    keys = ApiKeys({**named, **{f"\x00{i}": k for i, k in enumerate(bare)}})
    return keys


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
            actor = self.keys.actor(presented)
            if actor is None:
                await ApiError(403, "forbidden", "the API key is not valid").response()(
                    scope, receive, send)
                return
            state[ACTOR_KEY] = actor
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
