"""``LangGraphBridge``: people decide the pauses of graphs deployed on LangGraph Server.

It registers one :class:`~loopgate_lc.langgraph_server.driver.RemoteDriver` per
deployment with a :class:`~loopgate_lc.gateway.Loopgate`, so a remote pause is filed,
notified, timed out, decided (Telegram, HTTP API, CLI, ...) and resumed through the same
code as a local one, and serves the run webhook that tells it of pauses early.

Run webhooks are not signed by LangGraph Server, so each deployment's webhook URL carries
a secret token that is checked before the body is read, and the body is only a hint:
the thread is always re-read from the server.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from loopgate_lc.errors import ConfigurationError
from loopgate_lc.gateway import Loopgate
from loopgate_lc.langgraph_server.deployment import Deployment
from loopgate_lc.langgraph_server.driver import RemoteDriver

__all__ = ["WEBHOOK_PATH", "LangGraphBridge"]

WEBHOOK_PATH = "/langgraph/webhook/{deployment}/{token}"
_THREAD_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class LangGraphBridge:
    """Watch LangGraph Server deployments through a gateway.

    Args:
        loopgate: The gateway that files, notifies, times out and resumes.
        deployments: The deployments (a URL string is a deployment with default
            settings).
        public_url: Where the deployments can reach this process (its HTTP server, whose
            app serves :meth:`routes`); runs the bridge creates then call back when they
            end, so the next pause is filed at once. None: polling only.
        webhook_token: The secret in webhook URLs; default a random one per process. Set
            the same one on every bridge process behind one ``public_url``.

    Raises:
        ConfigurationError: Names clash, or ``public_url`` is not http(s).
    """

    def __init__(self, loopgate: Loopgate, deployments: Sequence[Deployment | str], *,
                 public_url: str | None = None, webhook_token: str | None = None) -> None:
        self.loopgate = loopgate
        chosen = [d if isinstance(d, Deployment) else Deployment(url=d) for d in deployments]
        names = [d.name for d in chosen]
        if not chosen or len(set(names)) != len(names):
            raise ConfigurationError(
                f"give at least one deployment, each with its own name; got {names}")
        if public_url is not None:
            parts = urlsplit(public_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigurationError(
                    f"public_url must be http(s)://host[:port][/path], got {public_url!r}")
            public_url = public_url.rstrip("/")
        if webhook_token is not None and len(webhook_token) < 16:
            raise ConfigurationError("webhook_token must be at least 16 characters")
        self.public_url = public_url
        self._token = webhook_token or secrets.token_urlsafe(24)
        self.drivers: dict[str, RemoteDriver] = {}
        for deployment in chosen:
            driver = RemoteDriver(deployment, webhook_url=self.webhook_url(deployment.name))
            self.drivers[deployment.name] = driver
            loopgate.register_driver(deployment.name, driver)

    def webhook_url(self, deployment: str) -> str | None:
        """The URL to pass as ``webhook=`` when you create runs on ``deployment``, so
        their pauses are filed as soon as the run ends (None without ``public_url``)."""
        if self.public_url is None:
            return None
        path = WEBHOOK_PATH.format(deployment=deployment, token=self._token)
        return f"{self.public_url}{path}"

    def hint(self, deployment: str, thread_id: str) -> bool:
        """Tell the bridge a thread of ``deployment`` may have paused; it re-reads the
        thread from the server. False for an unknown deployment or a malformed id."""
        driver = self.drivers.get(deployment)
        if driver is None or not _THREAD_ID.match(thread_id):
            return False
        driver.hint(thread_id)
        return True

    def verify(self, deployment: str, token: str) -> bool:
        """Whether a webhook call carries this bridge's token for a known deployment."""
        return deployment in self.drivers and hmac.compare_digest(
            token.encode(), self._token.encode())

    def routes(self) -> list[Any]:
        """Starlette routes for the run webhook (``POST`` :data:`WEBHOOK_PATH`); needs the
        ``server`` extra. ``create_app(..., bridge=...)`` mounts them."""
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route

        from loopgate_lc.server.errors import ApiError
        from loopgate_lc.server.hitl import Endpoint

        async def run_ended(request: Request) -> Response:
            deployment = str(request.path_params["deployment"])
            if not self.verify(deployment, str(request.path_params["token"])):
                # one answer for a wrong token and an unknown deployment: nothing to probe
                raise ApiError(404, "not_found", f"no route {request.url.path}")
            raw = await request.body()
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ApiError(400, "malformed_json",
                               f"the webhook body is not valid JSON: {exc}") from exc
            thread_id = body.get("thread_id") if isinstance(body, dict) else None
            if not isinstance(thread_id, str) or not self.hint(deployment, thread_id):
                raise ApiError(422, "invalid_fields",
                               "the webhook body must be a run object with a thread_id")
            return JSONResponse({"accepted": True, "thread_id": thread_id}, status_code=202)

        return [Route(WEBHOOK_PATH, Endpoint(run_ended), methods=["POST"])]
