"""The loopgate-lc server: the Loopgate HTTP API, signed webhook decisions and MCP.

``create_app(loopgate)`` returns a Starlette ASGI app; ``loopgate-lc serve`` runs it with
uvicorn. Needs the ``server`` extra (``pip install 'loopgate-lc[server]'``), and ``mcp``
for the MCP endpoint.
"""

from typing import TYPE_CHECKING

from loopgate_lc._lazy import lazy_exports

if TYPE_CHECKING:
    from loopgate_lc.server.app import DEFAULT_MAX_BODY_BYTES, TELEGRAM_WEBHOOK_PATH, create_app
    from loopgate_lc.server.callbacks import CallbackNotifier
    from loopgate_lc.server.errors import ApiError
    from loopgate_lc.server.models import poll_result
    from loopgate_lc.server.tenancy import ApiKey, ApiKeys, load_api_keys, parse_api_keys

# Imported on first use, so ``loopgate-lc pending --json`` can format with ``poll_result``
# without loading Starlette and httpx.
_LAZY = {
    "DEFAULT_MAX_BODY_BYTES": "loopgate_lc.server.app",
    "TELEGRAM_WEBHOOK_PATH": "loopgate_lc.server.app",
    "create_app": "loopgate_lc.server.app",
    "CallbackNotifier": "loopgate_lc.server.callbacks",
    "ApiError": "loopgate_lc.server.errors",
    "poll_result": "loopgate_lc.server.models",
    "ApiKey": "loopgate_lc.server.tenancy",
    "ApiKeys": "loopgate_lc.server.tenancy",
    "load_api_keys": "loopgate_lc.server.tenancy",
    "parse_api_keys": "loopgate_lc.server.tenancy",
}


__getattr__ = lazy_exports(__name__, _LAZY, extras={
    "loopgate_lc.server.app": "server", "loopgate_lc.server.errors": "server"})


__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "TELEGRAM_WEBHOOK_PATH",
    "ApiError",
    "ApiKey",
    "ApiKeys",
    "CallbackNotifier",
    "create_app",
    "load_api_keys",
    "parse_api_keys",
    "poll_result",
]
