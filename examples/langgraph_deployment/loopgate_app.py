"""loopgate_lc inside the deployment (``langgraph dev --config langgraph.inside.json``):
the ``/loopgate/hitl`` API and, with ``TELEGRAM_BOT_TOKEN`` set, the Telegram bot, served
by LangGraph Server beside the agent. The deployment resumes its own threads through the
SDK. Use PostgreSQL (``LOOPGATE_STORE=postgresql://...``) when it has several replicas.
"""

from __future__ import annotations

import os
from typing import Any

from loopgate_lc import Loopgate
from loopgate_lc.langgraph_server import deployment_app

notifiers: list[Any] = []
if os.environ.get("TELEGRAM_BOT_TOKEN"):
    from loopgate_lc import TelegramNotifier

    notifiers.append(TelegramNotifier(default_chat_id=int(os.environ["TELEGRAM_CHAT_ID"])))

app = deployment_app(
    Loopgate(os.environ.get("LOOPGATE_STORE", "sqlite:///loopgate.db"), notifiers=notifiers),
    graphs=["agent"],
    api_keys=os.environ.get("LOOPGATE_API_KEYS"),
    telegram=notifiers[0] if notifiers else None,
)
