"""The loopgate-lc server: the Loopgate HTTP API, signed webhook decisions and MCP.

``create_app(loopgate)`` returns a Starlette ASGI app; ``loopgate-lc serve`` runs it with
uvicorn. Needs the ``server`` extra (``pip install 'loopgate-lc[server]'``), and ``mcp``
for the MCP endpoint.
"""

from loopgate_lc.server.app import DEFAULT_MAX_BODY_BYTES, TELEGRAM_WEBHOOK_PATH, create_app
from loopgate_lc.server.callbacks import CallbackNotifier
from loopgate_lc.server.errors import ApiError
from loopgate_lc.server.models import poll_result
from loopgate_lc.server.tenancy import ApiKey, ApiKeys, load_api_keys, parse_api_keys

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
