"""loopgate_lc inside the deployment: ``langgraph dev`` serves the agent and
``deployment_app`` (the ``/loopgate/hitl`` API, the Telegram bot) from one process, and
the deployment resumes its own threads through the SDK."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from langgraph_sdk import get_client

from loopgate_lc.fake_telegram import FakeBotAPI
from loopgate_lc.testing.langgraph_dev import LangGraphDev
from tests.langgraph_server.test_bridge import finished, last_tool_message, tool_runs, until
from tests.support.langgraph_dev import SUPPORT, served

CHAT = 42


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake: FakeBotAPI) -> Iterator[LangGraphDev]:
    folder = tmp_path_factory.mktemp("deployment")
    env = {"LOOPGATE_STORE": f"sqlite:///{folder / 'loopgate.db'}",
           "TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_API_BASE_URL": fake.base_url,
           "TELEGRAM_CHAT_ID": str(CHAT)}
    with served(folder, env=env, http_app=f"{SUPPORT / 'served_app.py'}:app",
                loopback_webhooks=False) as srv:
        yield srv


async def _start(server: LangGraphDev, order: str) -> str:
    client = get_client(url=server.url, api_key=None)
    thread = await client.threads.create()
    await client.runs.create(thread["thread_id"], "agent",
                             input={"messages": [{"role": "user", "content": order}]})
    return str(thread["thread_id"])


async def test_the_deployment_serves_the_hitl_api_and_resumes_its_own_threads(
        server: LangGraphDev) -> None:
    env = f"inside-{uuid.uuid4().hex[:8]}"
    thread_id = await _start(server, f"deploy:{env}")
    async with httpx.AsyncClient(base_url=f"{server.url}/loopgate", timeout=10) as http:
        async def pending() -> list[dict[str, object]] | None:
            found = (await http.get("/hitl/pending")).json()
            mine = [r for r in found["requests"] if env in str(r)]
            return mine or None

        [request] = await until(pending)
        bad = await http.post("/hitl/respond", json={
            "request_id": request["request_id"],
            "decision": {"type": "edit", "edited_action": {
                "name": "deploy", "args": {"environment": env, "replicas": "x"}}}})
        assert bad.status_code == 422
        ok = await http.post("/hitl/respond", json={
            "request_id": request["request_id"], "decision": {"type": "approve"},
            "actor": "ann"})
        assert ok.status_code == 200, ok.text
        assert (await http.get("/health")).json()["status"] == "ok"
    thread = await finished(server, thread_id)
    assert last_tool_message(thread) == f"deployed to {env} x1"
    assert tool_runs(server, env) == [f"deploy {env} 1"]


async def test_the_server_keeps_its_own_routes(server: LangGraphDev) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        assert (await http.get("/ok")).json()["ok"] is True
        served = (await http.get("/openapi.json")).json()
        assert "/threads" in served["paths"]  # LangGraph's, not shadowed by ours
        ours = (await http.get("/loopgate/openapi.json")).json()
        assert "/hitl/respond" in ours["paths"]


async def test_a_telegram_tap_resumes_a_run_inside_the_deployment(
        server: LangGraphDev, fake: FakeBotAPI) -> None:
    env = f"tapin-{uuid.uuid4().hex[:8]}"
    thread_id = await _start(server, f"deploy:{env}")
    messages = await fake.await_for(
        lambda: [m for m in fake.messages(CHAT) if env in m["plain_text"]], timeout=30)
    message = messages[-1]
    reject = next(b["callback_data"] for row in message["reply_markup"]["inline_keyboard"]
                  for b in row if "Reject" in b["text"])
    fake.tap(CHAT, message["message_id"], reject, {"id": CHAT, "username": "ann"})
    thread = await finished(server, thread_id)
    assert "reject" in last_tool_message(thread).lower()
    assert tool_runs(server, env) == []
    assert (server.folder / "loopgate.db").exists()  # decided in the deployment's store
