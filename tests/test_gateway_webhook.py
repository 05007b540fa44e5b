"""End to end: create_agent + guarded tools + Loopgate.run, answered by a webhook receiver on
127.0.0.1 that posts decisions back to the server's signed decision endpoint."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from loopgate_lc import Loopgate, SignatureError, WebhookNotifier, verify_signature
from loopgate_lc.server import create_app
from tests.support.live import LiveServer, free_socket
from tests.test_gateway_graphs import agent

SECRET = "shared-secret"


def receiver(seen: list[dict[str, Any]], decide: Any) -> Starlette:
    """Someone else's app: checks the signature, then answers through the decision URL."""

    def answer(body: dict[str, Any]) -> None:
        decision = decide(body["request"])
        httpx.post(body["decision_url"], json={**decision, "token": body["decision_token"],
                                               "actor": "ops-bot"}, timeout=10)

    async def hook(request: Request) -> JSONResponse:
        raw = await request.body()
        try:
            verify_signature(raw, request.headers, SECRET)
        except SignatureError as exc:
            return JSONResponse({"error": str(exc)}, status_code=401)
        body = await request.json()
        seen.append({"event": body["event"], "key": request.headers["Idempotency-Key"]})
        if body["event"] != "approval.requested":
            return JSONResponse({"ok": True})
        return JSONResponse({"ok": True}, background=BackgroundTask(answer, body))

    return Starlette(routes=[Route("/hooks/approvals", hook, methods=["POST"])])


def test_a_run_answered_by_a_webhook_receiver(tmp_path: Any) -> None:
    runs: Counter[str] = Counter()
    seen: list[dict[str, Any]] = []
    decide = {"c-prod": {"type": "approve"},
              "c-eu": {"type": "reject", "message": "EU freeze"}}
    hooks = LiveServer(receiver(seen, lambda r: decide[r["payload"]["tool_call_id"]])).start()
    sock = free_socket()  # the server's address is known before the gateway is built
    server_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    webhook = WebhookNotifier(f"{hooks.url}/hooks/approvals", SECRET,
                              decision_url=f"{server_url}/hitl/webhook/decision")
    gate = Loopgate(store=f"sqlite:///{tmp_path / 'gate.db'}", notifiers=[webhook],
                    poll_interval=0.05)
    server = LiveServer(create_app(gate, webhook_secret=SECRET), sock).start()
    try:
        result: dict[str, Any] = {}
        run = threading.Thread(target=lambda: result.update(gate.run(
            agent(runs, "prod", "eu"), {"messages": [("user", "ship")]},
            {"configurable": {"thread_id": "webhook-e2e"}})))
        run.start()
        run.join(30)
        assert not run.is_alive()
        assert result["messages"][-1].content == "all done"
        assert runs == Counter(status=1, prod=1)
        decided = [e for e in gate.audit(thread_id="webhook-e2e")
                   if e.event.startswith("decided:")]
        assert sorted((e.event, e.actor, e.channel) for e in decided) == [
            ("decided:approved", "webhook:ops-bot", "webhook"),
            ("decided:rejected", "webhook:ops-bot", "webhook")]
        requested = [s for s in seen if s["event"] == "approval.requested"]
        assert len(requested) == 2 and len({s["key"] for s in requested}) == 2
    finally:
        server.stop()
        hooks.stop()
        gate.close()
