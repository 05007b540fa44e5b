"""Approvals for graphs deployed on LangGraph Server (``langgraph dev``, ``langgraph up``,
the hosted platform).

- :class:`LangGraphBridge` watches deployments through a :class:`~loopgate_lc.Loopgate`:
  every paused thread whose interrupt is a loopgate_lc request is filed, notified, timed
  out and decided like a local pause, and resumed once through the server's API.
- :func:`deployment_app` runs the same inside the deployment, as its custom HTTP app.
- ``loopgate-lc serve --langgraph URL`` runs a bridge as its own process.
"""

from loopgate_lc.langgraph_server.app import deployment_app, own_url
from loopgate_lc.langgraph_server.bridge import WEBHOOK_PATH, LangGraphBridge
from loopgate_lc.langgraph_server.deployment import Deployment, parse_deployments
from loopgate_lc.langgraph_server.driver import RUN_METADATA_KEY, RemoteDriver, is_loopgate_request

__all__ = [
    "RUN_METADATA_KEY",
    "WEBHOOK_PATH",
    "Deployment",
    "LangGraphBridge",
    "RemoteDriver",
    "deployment_app",
    "is_loopgate_request",
    "own_url",
    "parse_deployments",
]
