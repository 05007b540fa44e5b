"""The app as a whole: health, docs, and one request answered through each channel —
Telegram (the fake Bot API, webhook mode into /telegram/webhook), /hitl/respond (see
test_hitl) and a signed webhook decision."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loopgate_lc.errors import StoreError
from loopgate_lc.fake_telegram import FakeBotAPI
from loopgate_lc.gateway import Loopgate
from loopgate_lc.notifiers.telegram import TelegramNotifier
from loopgate_lc.notifiers.webhook import WebhookNotifier
from loopgate_lc.server import TELEGRAM_WEBHOOK_PATH, create_app
from loopgate_lc.signing import decision_token, sign, sign_decision
from loopgate_lc.stores import RequestRecord, SQLiteStore
from tests.server.conftest import WEBHOOK_SECRET, Receiver, ServeFn
from tests.support.live import LiveServer, free_socket


def test_health(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["store"] == "SQLiteStore"
    assert body["mcp"] is True
    assert body["telegram"] is False
    assert body["channels"] == []
    assert "no notification channel is configured" in body["warnings"][0]


def test_health_tells_strangers_no_paths_when_the_server_has_api_keys(
        serve: ServeFn, db_url: str) -> None:
    # /health answers anyone: with keys, its hints keep the store's path and the program's
    # location to the server's own start-up line
    keyed = serve(api_keys={"ops": "k-0123456789"})
    body = httpx.get(f"{keyed.url}/health", timeout=10).text
    assert "pending --store STORE" in body and "the store the server named" in body
    assert db_url.removeprefix("sqlite:///") not in body
    assert str(Path(sys.executable).parent) not in body
    # an open server answers anyone everything anyway: its hint runs as printed
    open_body = httpx.get(f"{serve().url}/health", timeout=10).json()
    assert f"pending --store {db_url}" in open_body["warnings"][0]


class _DiskFails(SQLiteStore):
    """Opens, then fails every read as a failing disk would (SQLite's own wording)."""

    async def get_request(self, request_id: str) -> RequestRecord:
        raise StoreError(f"SQLite store {str(self.path)!r} failed: disk I/O error")


def test_a_store_that_fails_is_reported_to_strangers_without_its_path(
        serve: ServeFn, tmp_path: Path) -> None:
    for keys, shown in (({"ops": "k-0123456789"}, False), (None, True)):
        with Loopgate(_DiskFails(tmp_path / "private-dir.db")) as gw:
            health = httpx.get(f"{serve(gw, api_keys=keys).url}/health", timeout=10)
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "degraded" and body["reasons"][0].startswith("store: ")
        assert ("private-dir" in health.text) is shown, body


def test_no_docs_page_loads_code_from_a_cdn(client: httpx.Client) -> None:
    # /docs used to load an unpinned Swagger UI from a CDN; the route is off and the
    # document itself is served for local viewers.
    assert client.get("/docs").status_code == 404
    assert client.get("/openapi.json").json()["openapi"] == "3.1.0"


def _request(client: httpx.Client, session: str, **fields: Any) -> dict[str, Any]:
    created: dict[str, Any] = client.post("/hitl/request", json={
        "session_id": session, "client_id": "ci-cd", "message": "Deploy v2.1.0?", **fields,
    }).json()
    return created


# --- webhook decisions ---------------------------------------------------------------------


def test_webhook_decision_with_the_decision_token(client: httpx.Client, session: str) -> None:
    created = _request(client, session, options=["Deploy", "Cancel"])
    rid = created["request_id"]
    token = decision_token(WEBHOOK_SECRET, rid)
    response = client.post(f"/hitl/webhook/decision/{rid}",
                           json={"token": token, "type": "respond", "message": "Deploy",
                                 "actor": "carol"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["status"], result["approved"], result["response"]) == (
        "answered", True, "Deploy")
    assert (result["channel"], result["responded_by"]) == ("webhook", "webhook:carol")
    again = client.post(f"/hitl/webhook/decision/{rid}",
                        json={"token": token, "decision": {"type": "respond",
                                                           "message": "Cancel"}})
    assert again.status_code == 409  # a token is good for one decision: the request's


def _signed(body: bytes, path: str, secret: str = WEBHOOK_SECRET, **options: Any
            ) -> dict[str, str]:
    return {"content-type": "application/json",
            **sign_decision(body, secret, path=path, **options)}


def test_webhook_decision_with_a_signature(client: httpx.Client, session: str) -> None:
    rid = _request(client, session)["request_id"]
    body = json.dumps({"decision": {"type": "reject", "message": "freeze"}}).encode()
    path = f"/hitl/webhook/decision/{rid}"
    response = client.post(path, content=body, headers=_signed(body, path))
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["response"]) == ("rejected", "freeze")


def test_a_signed_decision_decides_only_the_request_it_was_signed_for(
        client: httpx.Client, session: str) -> None:
    """It used to approve whichever request id the URL named: the signature did not
    cover the path."""
    a, b = (_request(client, session)["request_id"] for _ in range(2))
    body = json.dumps({"decision": {"type": "approve"}}).encode()
    headers = _signed(body, f"/hitl/webhook/decision/{a}")
    moved = client.post(f"/hitl/webhook/decision/{b}", content=body, headers=headers)
    assert (moved.status_code, moved.json()["error"]["code"]) == (403, "forbidden")
    assert client.get("/hitl/poll", params={"request_id": b}).json()["status"] == "pending"


def test_a_signed_decision_is_accepted_once(client: httpx.Client, session: str) -> None:
    first, second = (_request(client, session)["request_id"] for _ in range(2))
    body = json.dumps({"type": "reject"}).encode()
    path = f"/hitl/webhook/decision/{first}"
    headers = _signed(body, path, message_id="msg_once")
    assert client.post(path, content=body, headers=headers).status_code == 200
    replay = client.post(path, content=body, headers=headers)
    assert (replay.status_code, replay.json()["error"]["code"]) == (409, "replayed")
    # the message id is the replay key: reused for another request, it is refused too
    other = f"/hitl/webhook/decision/{second}"
    reused = client.post(other, content=body, headers=_signed(body, other,
                                                              message_id="msg_once"))
    assert reused.status_code == 409


def test_a_server_signed_callback_is_not_a_decision(client: httpx.Client, session: str
                                                    ) -> None:
    """Outgoing deliveries were signed with the same key and format as incoming
    decisions, so a client could collect server-signed bodies via callback_url."""
    rid = _request(client, session)["request_id"]
    body = json.dumps({"decision": {"type": "approve"}}).encode()
    delivery = {"content-type": "application/json", **sign(body, WEBHOOK_SECRET)}
    forged = client.post(f"/hitl/webhook/decision/{rid}", content=body, headers=delivery)
    assert forged.status_code == 403


def test_webhook_decision_refusals(client: httpx.Client, session: str) -> None:
    rid = _request(client, session)["request_id"]
    other = _request(client, session)["request_id"]
    url = f"/hitl/webhook/decision/{rid}"
    missing = client.post(url, json={"type": "approve"})
    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "unauthorized")
    wrong = client.post(url, json={"type": "approve", "token": "not-the-token"})
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (403, "forbidden")
    # A token made for another request does not decide this one.
    foreign = client.post(url, json={"type": "approve",
                                     "token": decision_token(WEBHOOK_SECRET, other)})
    assert foreign.status_code == 403
    body = json.dumps({"type": "approve"}).encode()
    forged = client.post(url, content=body, headers=_signed(body, url, "another-secret"))
    assert forged.status_code == 403
    stale = client.post(url, content=body, headers=_signed(body, url, timestamp=1))
    assert stale.status_code == 403
    assert "stale" in stale.json()["error"]["message"]
    unknown = client.post("/hitl/webhook/decision/nope",
                          json={"type": "approve",
                                "token": decision_token(WEBHOOK_SECRET, "nope")})
    assert unknown.status_code == 404
    poll = client.get("/hitl/poll", params={"request_id": rid}).json()
    assert poll["status"] == "pending"  # nothing above decided anything


def test_webhook_decisions_off_without_a_secret(serve: ServeFn) -> None:
    live = serve()
    with httpx.Client(base_url=live.url) as client:
        response = client.post("/hitl/webhook/decision/x", json={"type": "approve",
                                                                 "token": "t"})
    assert (response.status_code, response.json()["error"]["code"]) == (503, "not_configured")


def test_a_request_answered_through_the_webhook_notifier(
        gateway: Loopgate, serve: ServeFn, receiver: tuple[Receiver, str]) -> None:
    """The whole loop: the webhook notifier POSTs approval.requested to a receiver, which
    sends the person's decision back to the decision URL it was given, with the token."""
    rec, receiver_url = receiver
    sock = free_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    gateway.notifiers.append(WebhookNotifier(
        f"{receiver_url}/hooks", WEBHOOK_SECRET, decision_url=f"{base}/hitl/webhook/decision",
        backoff=0.01))
    serve(sock=sock, webhook_secret=WEBHOOK_SECRET)
    with httpx.Client(base_url=base, timeout=10) as client:
        client.post("/hitl/register", json={"session_id": "deploy", "client_id": "ci"})
        created = _request(client, "deploy", options=["Deploy", "Cancel"])
        [(_, raw)] = rec.wait(1)
        delivery = json.loads(raw)
        assert delivery["event"] == "approval.requested"
        assert delivery["request"]["id"] == created["request_id"]
        answer = httpx.post(delivery["decision_url"], json={
            "token": delivery["decision_token"],
            "decision": {"type": "respond", "message": "Cancel"}})
        assert answer.status_code == 200, answer.text
        result = client.get("/hitl/poll", params={"request_id": created["request_id"]}).json()
    assert (result["status"], result["approved"], result["response"]) == (
        "answered", False, "Cancel")
    assert result["channel"] == "webhook"


# --- Telegram ------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as server:
        yield server


@pytest.mark.parametrize("request_type", ["choice", "approval"])
def test_a_request_answered_on_telegram(fake: FakeBotAPI, db_url: str,
                                        request_type: str) -> None:
    sock = free_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    telegram = TelegramNotifier(fake.token, base_url=fake.base_url, mode="webhook",
                                webhook_url=f"{base}{TELEGRAM_WEBHOOK_PATH}",
                                webhook_secret="tg-secret", retry_backoff=0.01)
    gateway = Loopgate(db_url, notifiers=[telegram], poll_interval=0.05)
    live = LiveServer(create_app(gateway, telegram=telegram), sock).start()
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            health = client.get("/health").json()
            assert (health["telegram"], health["channels"], health["warnings"]) == (
                True, ["telegram"], [])
            assert fake.webhook is not None and fake.webhook["url"].endswith(
                TELEGRAM_WEBHOOK_PATH)
            client.post("/hitl/register", json={"session_id": "deploy-bot", "client_id":
                                                "ci-cd", "telegram_id": 42})
            created = _request(client, "deploy-bot", options=["Deploy", "Cancel", "Review"],
                               metadata={"version": "v2.1.0"}, request_type=request_type)
            [message] = fake.wait_for(lambda: fake.messages(42))
            assert message["reply_markup"] is not None, "no buttons to tap"
            assert "Deploy v2.1.0?" in message["plain_text"]
            buttons = {b["text"]: b["callback_data"]
                       for row in message["reply_markup"]["inline_keyboard"] for b in row}
            cancel = next(data for text, data in buttons.items() if "Cancel" in text)
            fake.tap(42, message["message_id"], cancel, {"id": 42, "username": "ann"})
            result = client.get("/hitl/poll", params={"request_id": created["request_id"],
                                                      "wait": 10}).json()
            assert (result["status"], result["approved"], result["response"]) == (
                "answered", False, "Cancel")
            assert result["responded_by"] == "telegram:42 (@ann)"
            assert result["channel"] == "telegram"
            assert all(d["status_code"] == 200 for d in fake.webhook_deliveries)

            forged = client.post(TELEGRAM_WEBHOOK_PATH, json={"update_id": 1},
                                 headers={"X-Telegram-Bot-Api-Secret-Token": "guess"})
            assert forged.status_code == 401
            broken = client.post(TELEGRAM_WEBHOOK_PATH, json={"no": "update"},
                                 headers={"X-Telegram-Bot-Api-Secret-Token": "tg-secret"})
            assert broken.status_code == 422
    finally:
        live.stop()
        gateway.close()


def test_a_webhook_decision_must_name_one_of_the_approvers(
        client: httpx.Client, shared_gateway: Loopgate) -> None:
    """Webhook decisions skipped the approver list when they named nobody."""
    client.post("/hitl/register", json={"session_id": "wh-approvers", "approvers": ["cfo"]})
    rid = _request(client, "wh-approvers")["request_id"]
    path = f"/hitl/webhook/decision/{rid}"
    for fields in ({}, {"approver_id": "intern"}):
        body = json.dumps({"type": "approve", **fields}).encode()
        refused = client.post(path, content=body, headers=_signed(body, path))
        assert (refused.status_code, refused.json()["error"]["code"]) == (
            403, "approver_not_allowed")
    events = [e for e in shared_gateway.audit(request_id=rid) if e.event == "unauthorized"]
    assert [(e.channel, e.details["approver_id"]) for e in events] == [
        ("webhook", None), ("webhook", "intern")]
    body = json.dumps({"type": "approve", "approver_id": "cfo"}).encode()
    assert client.post(path, content=body, headers=_signed(body, path)).status_code == 200
