"""The custom HTTP app the in-deployment tests serve beside the agent (``langgraph.json``:
``"http": {"app": ".../served_app.py:app"}``): loopgate_lc inside the deployment, with
Telegram when ``TELEGRAM_BOT_TOKEN`` is set (the tests point it at FakeBotAPI)."""

from __future__ import annotations

import os
from typing import Any

from loopgate_lc import Loopgate
from loopgate_lc.langgraph_server import deployment_app

notifiers: list[Any] = []
if os.environ.get("TELEGRAM_BOT_TOKEN"):
    from loopgate_lc.notifiers.telegram import TelegramNotifier

    notifiers.append(TelegramNotifier(default_chat_id=int(os.environ["TELEGRAM_CHAT_ID"]),
                                      retry_backoff=0.05, poll_timeout=2))

app = deployment_app(
    Loopgate(os.environ["LOOPGATE_STORE"], notifiers=notifiers, poll_interval=0.1),
    graphs=["agent"], poll_interval=0.2,
    telegram=notifiers[0] if notifiers else None)
