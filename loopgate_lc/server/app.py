"""``create_app``: the ASGI app that serves the Loopgate API, MCP and the Telegram webhook.

The app holds no state of its own: everything lives in the gateway and its store, so
several app instances (or processes) on one Postgres store serve the same requests. A
gateway the app's lifespan opens lives on the server's own event loop, so a handler's
call into it runs right there, with no hop to another thread; one opened before (from
sync code) keeps its private loop thread and is reached across it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from loopgate_lc.errors import LoopgateError, RequestNotFound
from loopgate_lc.gateway import Loopgate
from loopgate_lc.locations import deliveries_hint
from loopgate_lc.notifiers.base import no_channel_warning
from loopgate_lc.server.callbacks import CALLBACK_CHANNEL, CallbackNotifier, CallbackPolicy
from loopgate_lc.server.errors import ApiError, internal_error, log
from loopgate_lc.server.hitl import Endpoint, HitlConfig, hitl_routes, read_json
from loopgate_lc.server.middleware import GuardMiddleware, default_allowed_hosts
from loopgate_lc.server.openapi import openapi_document
from loopgate_lc.server.replay import StoreReplayGuard
from loopgate_lc.server.tenancy import ApiKeys, parse_api_keys
from loopgate_lc.signing import ReplayGuard, Secrets

__all__ = ["DEFAULT_MAX_BODY_BYTES", "TELEGRAM_WEBHOOK_PATH", "create_app"]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
TELEGRAM_WEBHOOK_PATH = "/telegram/webhook"
_TELEGRAM_SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


DEAD_COUNTED = 1_000
"""Dead deliveries `/health` counts before it says "1000+" (one indexed read)."""

def _version() -> str:
    from loopgate_lc import __version__

    return __version__


def _keys(api_keys: ApiKeys | Mapping[str, str] | Iterable[str] | str | None) -> ApiKeys:
    if api_keys is None:
        return ApiKeys()
    if isinstance(api_keys, ApiKeys):
        return api_keys
    if isinstance(api_keys, str):
        return parse_api_keys(api_keys)
    return ApiKeys(api_keys)


def _inbox_secret(given: str | bytes | None, webhook_secret: Secrets | None) -> bytes:
    if given:
        return given.encode() if isinstance(given, str) else bytes(given)
    if webhook_secret:
        first = webhook_secret if isinstance(webhook_secret, str | bytes) else webhook_secret[0]
        raw = first.encode() if isinstance(first, str) else bytes(first)
        return hmac.new(raw, b"loopgate-lc inbox secret v1", hashlib.sha256).digest()
    return secrets.token_bytes(32)


def create_app(
    loopgate: Loopgate,
    *,
    api_keys: ApiKeys | Mapping[str, str] | Iterable[str] | str | None = None,
    webhook_secret: Secrets | None = None,
    replay_guard: ReplayGuard | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    telegram: Any = None,
    mcp: bool = True,
    host: str = "127.0.0.1",
    allowed_hosts: Iterable[str] | None = None,
    cors_origins: Iterable[str] = (),
    callback_allowlist: Iterable[str] = (),
    max_wait: float = 60.0,
    mcp_progress_interval: float = 5.0,
    close_gateway: bool = False,
    inbox: bool = True,
    inbox_secret: str | bytes | None = None,
    bridge: Any = None,
) -> Starlette:
    """Build the server for one gateway.

    Args:
        loopgate: The gateway; opened when the app starts.
        api_keys: When any are given, every ``/hitl`` route and ``/mcp`` require one
            (``Authorization: Bearer <key>`` or ``X-API-Key``), and each key sees and
            decides only inside its scope (see :mod:`loopgate_lc.server.tenancy`).
            ``{name: key}`` gives admin keys named ``api:<name>`` in the audit; a string
            is read like ``LOOPGATE_API_KEYS`` (``key1,name=key2``); scoped keys are
            :class:`~loopgate_lc.server.tenancy.ApiKey` objects or come from
            :func:`~loopgate_lc.server.tenancy.load_api_keys`.
        webhook_secret: Verifies ``/hitl/webhook/decision/{id}`` (decision tokens and
            decision signatures) and signs ``callback_url`` deliveries; None turns both
            off. Several secrets while rotating.
        replay_guard: Where signed decisions' and sign-in links' ids are remembered so
            each is accepted once; by default the gateway's store, so every process
            sharing it refuses a replay.
        max_body_bytes: Larger bodies get 413, also when ``Content-Length`` lies.
        telegram: A :class:`~loopgate_lc.notifiers.telegram.TelegramNotifier` the gateway
            uses (added to it if missing); its updates are accepted at
            ``/telegram/webhook``.
        mcp: Serve MCP over streamable HTTP at ``/mcp``.
        host: The address the server binds; it decides the default ``allowed_hosts``.
        allowed_hosts: ``Host`` names every route accepts (421 otherwise); default the
            loopback names when ``host`` is loopback, else any. ``["*"]`` accepts any.
        cors_origins: Browser origins allowed to call the API; requests carrying any
            other ``Origin`` are refused (403).
        callback_allowlist: Hosts or networks (``"127.0.0.1"``, ``"10.0.0.0/8"``,
            ``"hooks.internal"``) a ``callback_url`` may reach although they are
            loopback, private, link-local or metadata addresses.
        max_wait: The cap on long polls (``/hitl/poll?wait=``), in seconds.
        mcp_progress_interval: Seconds between MCP progress notifications.
        close_gateway: Close the gateway when the app shuts down (the CLI does; callers
            that own the gateway usually do not). A gateway the app's startup opened is
            closed either way: it lives on the server's loop, which ends with it.
        inbox: Serve the web inbox at ``/inbox`` (see :mod:`loopgate_lc.server.inbox`).
        inbox_secret: Signs inbox session cookies; processes serving one inbox share it.
            Default: derived from ``webhook_secret``, else random for this process
            (sign-ins then end when it restarts).
        bridge: A :class:`~loopgate_lc.langgraph_server.LangGraphBridge` on this
            gateway; its run webhook is served (checked by its own token, not API keys).

    Raises:
        ConfigurationError: An API key or a limit is unusable.
    """
    keys = _keys(api_keys)
    policy = CallbackPolicy(callback_allowlist)
    if webhook_secret and not any(n.name == CALLBACK_CHANNEL for n in loopgate.notifiers):
        loopgate.notifiers.append(CallbackNotifier(webhook_secret, policy=policy))
    if telegram is not None and all(n is not telegram for n in loopgate.notifiers):
        loopgate.notifiers.append(telegram)
    config = HitlConfig(webhook_secret=webhook_secret or None, max_wait=max_wait,
                        callback_policy=policy,
                        replay_guard=replay_guard or StoreReplayGuard(loopgate.store))
    hosts = default_allowed_hosts(host) if allowed_hosts is None else tuple(allowed_hosts)

    # the channels that reach a person (a callback only tells the asking client)
    channels = [n.name for n in loopgate.notifiers if n.name != CALLBACK_CHANNEL]

    # /health answers anyone. A server without API keys answers anyone everything, so its
    # hints name its store and program in full, to run as printed; one with keys does not
    # tell strangers its paths or database address, nor what its store's error said.
    def store_failed(body: dict[str, Any], exc: Exception) -> Response:
        reason = str(exc)
        if keys:
            log.warning("/health: the store failed: %s", exc)
            reason = "the store could not complete the operation (the server's log says why)"
        body.update(status="degraded", error=reason,
                    reasons=[*body.get("reasons", []), f"store: {reason}"])
        return JSONResponse(body, status_code=503)

    async def health(request: Request) -> Response:
        body: dict[str, Any] = {
            "status": "ok", "version": _version(), "store": type(loopgate.store).__name__,
            "telegram": telegram is not None, "mcp": mcp, "auth": bool(keys),
            "channels": channels,
            "warnings": [] if channels else [
                no_channel_warning(loopgate.store_url, private=not keys)],
        }
        problem = getattr(telegram, "problem", None)
        if problem:
            # The API serves; Telegram reconnects in the background.
            body.update(status="degraded", reasons=[f"telegram: {problem}"])
        try:
            # One indexed lookup proves the store answers; the id never exists.
            await loopgate.aget("loopgate-health-check")
        except RequestNotFound:
            pass
        except (LoopgateError, OSError) as exc:
            return store_failed(body, exc)
        try:
            dead = len(await loopgate.adead_deliveries(limit=DEAD_COUNTED))
        except (LoopgateError, OSError) as exc:
            return store_failed(body, exc)
        body["dead_deliveries"] = dead
        if dead:
            body["warnings"] = [*body["warnings"], (
                f"{dead}{'+' if dead >= DEAD_COUNTED else ''} deliveries were given up on; "
                f"{deliveries_hint(loopgate.store_url, private=not keys)}")]
        return JSONResponse(body)

    document = openapi_document(version=_version(), auth=bool(keys),
                                telegram=telegram is not None, mcp=mcp)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    routes: list[BaseRoute] = [
        *hitl_routes(loopgate, config),  # first: they are most of the traffic
        Route("/health", Endpoint(health), methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *(bridge.routes() if bridge is not None else ()),
    ]

    if inbox:
        from loopgate_lc.server.inbox import InboxConfig, SessionSigner, inbox_routes

        routes.extend(inbox_routes(loopgate, InboxConfig(
            keys=keys, signer=SessionSigner(_inbox_secret(inbox_secret, webhook_secret)),
            replay_guard=config.replay_guard)))

    if telegram is not None:
        async def telegram_webhook(request: Request) -> Response:
            update = await read_json(request)
            await telegram.process_webhook_update(
                update, request.headers.get(_TELEGRAM_SECRET_HEADER))
            return JSONResponse({"ok": True})

        routes.append(Route(TELEGRAM_WEBHOOK_PATH, Endpoint(telegram_webhook),
                            methods=["POST"]))

    session_manager: Any = None
    if mcp:
        from mcp.server.streamable_http_manager import StreamableHTTPASGIApp

        from loopgate_lc.server.mcp import create_mcp_server

        mcp_server = create_mcp_server(loopgate, progress_interval=mcp_progress_interval)
        mcp_server.streamable_http_app(streamable_http_path="/mcp", host=host,
                                       max_request_body_size=max_body_bytes)
        session_manager = mcp_server.session_manager
        routes.append(Route("/mcp", StreamableHTTPASGIApp(session_manager)))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Opened here, the gateway makes the server's loop its home: handlers call it
        # without crossing threads. Nothing runs on that loop once the server stops, so
        # a gateway opened here is closed here too.
        opened_here = not loopgate.is_open
        await loopgate.aopen()
        try:
            async with contextlib.AsyncExitStack() as stack:
                if session_manager is not None:
                    await stack.enter_async_context(session_manager.run())
                yield
        finally:
            if close_gateway or opened_here:
                await loopgate.aclose()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            error = ApiError(404, "not_found", f"no route {request.url.path}")
        elif exc.status_code == 405:
            error = ApiError(405, "method_not_allowed",
                             f"{request.method} is not allowed on {request.url.path}",
                             headers=dict(exc.headers or {}))
        else:
            error = ApiError(exc.status_code, "http_error", str(exc.detail),
                             headers=dict(exc.headers or {}))
        return error.response()

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return exc.response()

    async def server_error(request: Request, exc: Exception) -> Response:
        return internal_error(exc).response()

    return Starlette(
        routes=routes,
        middleware=[Middleware(
            GuardMiddleware, allowed_hosts=hosts, cors_origins=tuple(cors_origins),
            pages=("/inbox",) if inbox else (), keys=keys, protected=("/hitl", "/mcp"),
            exempt=("/hitl/webhook/",), max_bytes=max_body_bytes,
            cors=None if not cors_origins else functools.partial(
                CORSMiddleware, allow_origins=list(cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "X-API-Key", "Content-Type",
                               "Mcp-Session-Id", "Mcp-Protocol-Version"],
                expose_headers=["Mcp-Session-Id"]))],
        exception_handlers={HTTPException: http_error, ApiError: api_error,
                            Exception: server_error},
        lifespan=lifespan,
    )
