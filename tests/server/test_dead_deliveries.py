"""A delivery given up on is seen: in /health (with a hint that works when followed), in
`loopgate-lc deliveries`, and as a line from `loopgate-lc pending`."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx

from loopgate_lc import DeliveryError
from loopgate_lc.gateway import Loopgate
from loopgate_lc.locations import cli_command
from tests.server.conftest import ServeFn

CLI = [sys.executable, "-m", "loopgate_lc.cli"]


class GoneChat:
    """A channel whose chat was deleted: every delivery fails for good."""

    name = "tg"

    async def notify(self, request: Any) -> None:
        raise DeliveryError("Bad Request: chat not found", retryable=False)

    async def on_resolved(self, request: Any) -> None:
        return None


def test_a_dead_delivery_shows_in_health_and_the_cli(db_url: str, serve: ServeFn) -> None:
    gateway = Loopgate(db_url, notifiers=[GoneChat()], poll_interval=0.05)
    try:
        live = serve(gateway)
        with httpx.Client(base_url=live.url, timeout=10) as client:
            assert client.get("/health").json()["dead_deliveries"] == 0
            session = f"s-{uuid.uuid4().hex[:8]}"
            client.post("/hitl/register", json={"session_id": session, "client_id": "c",
                                                "telegram_id": 7})
            rid = client.post("/hitl/request", json={
                "session_id": session, "client_id": "c", "message": "Deploy?"}).json()[
                "request_id"]
            health: dict[str, Any] = {}
            for _ in range(1500):  # the outbox delivers in the background: bounded wait
                health = client.get("/health").json()
                if health["dead_deliveries"]:
                    break
                time.sleep(0.02)
            assert health["dead_deliveries"] == 1, health
        hint = next(w for w in health["warnings"] if "given up" in w)
        command = hint.split("`")[1]
        assert command.startswith(f"{cli_command()} deliveries --store ")
        # the hint, followed as printed, from another folder, lists the dead delivery
        listed = subprocess.run(shlex.split(command), capture_output=True,
                                text=True, timeout=60, cwd="/")
        assert listed.returncode == 0, listed.stderr
        assert f"request={rid}" in listed.stdout and "chat not found" in listed.stdout
        assert "1 dead deliveries" in listed.stdout
        pending = subprocess.run([*CLI, "pending", "--store", db_url], capture_output=True,
                                 text=True, timeout=60)
        assert pending.returncode == 0, pending.stderr
        assert "some deliveries were given up on" in pending.stderr
        assert rid in pending.stdout  # still pending: a dead channel never approves
    finally:
        gateway.close()
