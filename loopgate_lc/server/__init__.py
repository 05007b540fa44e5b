"""The loopgate-lc server: the Loopgate HTTP API, signed webhook decisions and MCP.

``create_app(loopgate)`` returns a Starlette ASGI app; ``loopgate-lc serve`` runs it with
uvicorn. Needs the ``server`` extra (``pip install 'loopgate-lc[server]'``), and ``mcp``
for the MCP endpoint.
"""

from loopgate_lc.server.app import DEFAULT_MAX_BODY_BYTES, TELEGRAM_WEBHOOK_PATH, create_app
from loopgate_lc.server.callbacks import CallbackNotifier
from loopgate_lc.server.errors import ApiError
from loopgate_lc.server.middleware import ApiKeys, parse_api_keys
from loopgate_lc.server.models import poll_result

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "TELEGRAM_WEBHOOK_PATH",
    "ApiError",
    "ApiKeys",
    "CallbackNotifier",
    "create_app",
    "parse_api_keys",
    "poll_result",
]
