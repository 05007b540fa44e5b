"""``deployment_app``: loopgate_lc inside a LangGraph Server deployment.

LangGraph Server serves a Starlette app of yours beside the agent (``langgraph.json``:
``"http": {"app": "./loopgate_app.py:app"}``) and runs its lifespan. This builds that
app: the gateway, a bridge watching the deployment's own threads (resumed through the
SDK over the deployment's own URL), the ``/hitl`` API, and the Telegram webhook, all
under one prefix (default ``/loopgate``) so no route shadows one of the server's
(``/docs``, ``/openapi.json``, ``/ok``...).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from loopgate_lc.gateway import Loopgate
from loopgate_lc.langgraph_server.bridge import LangGraphBridge
from loopgate_lc.langgraph_server.deployment import Deployment

__all__ = ["deployment_app", "own_url"]


def own_url() -> str:
    """The deployment's own API URL: ``LANGGRAPH_API_URL`` (set by ``langgraph dev`` and
    the platform), else ``http://127.0.0.1:$PORT`` (``langgraph up`` serves on 8000)."""
    url = os.environ.get("LANGGRAPH_API_URL")
    if url:
        return url
    return f"http://127.0.0.1:{os.environ.get('PORT') or 8000}"


def deployment_app(
    loopgate: Loopgate,
    *,
    graphs: Sequence[str] = (),
    include_foreign: bool = False,
    url: str | None = None,
    poll_interval: float = 1.0,
    prefix: str = "/loopgate",
    **app_options: Any,
) -> Any:
    """The Starlette app to name in ``langgraph.json``'s ``http.app``.

    Args:
        loopgate: The gateway (its store should outlive the deployment's replicas:
            PostgreSQL, or a SQLite file on a volume).
        graphs: Graph or assistant ids to watch; empty watches all.
        include_foreign: Also file interrupts loopgate_lc did not raise.
        url: The deployment's own URL (default :func:`own_url`).
        poll_interval: Seconds between searches for paused threads (in-process calls
            are cheap; the platform does not send loopback webhooks by default).
        prefix: Where the routes live (``/loopgate/hitl/...``); ``""`` for the root.
        app_options: Passed to :func:`loopgate_lc.server.create_app` (``api_keys``,
            ``telegram``, ``webhook_secret``...). MCP is off unless ``mcp=True``; any
            ``Host`` is accepted unless ``allowed_hosts`` says otherwise.

    Returns:
        A Starlette app whose lifespan opens the gateway and starts the bridge.
    """
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from loopgate_lc.server import create_app

    bridge = LangGraphBridge(loopgate, [Deployment(
        url=url or own_url(), name="self", graphs=tuple(graphs),
        include_foreign=include_foreign, poll_interval=poll_interval)])
    app_options.setdefault("mcp", False)
    # LangGraph Server routes requests by its own host names (the platform's, a custom
    # domain); it checks them, not this app
    app_options.setdefault("allowed_hosts", ["*"])
    app_options.setdefault("close_gateway", True)
    inner = create_app(loopgate, bridge=bridge, **app_options)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with inner.router.lifespan_context(inner):
            yield

    outer = Starlette(routes=[Mount(prefix, app=inner)], lifespan=lifespan) if prefix \
        else inner
    outer.state.loopgate = loopgate
    outer.state.bridge = bridge
    return outer
