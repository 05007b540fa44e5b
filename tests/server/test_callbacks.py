"""callback_url: the poll result POSTed, signed, once a request is decided, through the
durable outbox (retried, and delivered even when another process decided)."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest

from loopgate_lc.gateway import Loopgate
from loopgate_lc.notifiers.base import DeliveryError
from loopgate_lc.server.callbacks import CallbackNotifier, CallbackPolicy
from loopgate_lc.signing import verify_signature
from tests.server.conftest import WEBHOOK_SECRET, Receiver, ServeFn
from tests.support.live import LiveServer

LOOPBACK = ["127.0.0.1"]  # the receivers in these tests listen there


@pytest.fixture
def fast(gateway: Loopgate, serve: ServeFn) -> LiveServer:
    """A server whose callback notifier retries quickly."""
    gateway.notifiers.append(CallbackNotifier(WEBHOOK_SECRET, backoff=0.01,
                                              policy=CallbackPolicy(LOOPBACK)))
    return serve(webhook_secret=WEBHOOK_SECRET, callback_allowlist=LOOPBACK)


def _ask(client: httpx.Client, callback_url: str | None, **fields: Any) -> dict[str, Any]:
    client.post("/hitl/register", json={"session_id": "cb", "client_id": "ci"})
    body: dict[str, Any] = {"session_id": "cb", "message": "Deploy?", **fields}
    if callback_url:
        body["callback_url"] = callback_url
    response = client.post("/hitl/request", json=body)
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


def test_the_callback_is_the_signed_poll_result(fast: LiveServer,
                                                receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    with httpx.Client(base_url=fast.url, timeout=10) as client:
        created = _ask(client, f"{url}/done", options=["Deploy", "Cancel"])
        client.post("/hitl/respond", json={"request_id": created["request_id"],
                                           "response": "Deploy", "actor": "ann"})
        poll = client.get("/hitl/poll", params={"request_id": created["request_id"]}).json()
    [(headers, raw)] = rec.wait(1)
    verify_signature(raw, headers, WEBHOOK_SECRET)
    body = json.loads(raw)
    assert body.pop("event") == "approval.resolved"
    assert body == poll
    assert (body["approved"], body["response"], body["responded_by"]) == (
        True, "Deploy", "ann (api)")
    assert headers["idempotency-key"] == f"{created['request_id']}:approval.resolved"


def test_a_timeout_is_called_back_too(fast: LiveServer,
                                      receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    with httpx.Client(base_url=fast.url, timeout=10) as client:
        _ask(client, f"{url}/done", timeout_seconds=0.1)
    [(_, raw)] = rec.wait(1)
    body = json.loads(raw)
    assert (body["status"], body["completed"], body["approved"]) == ("timeout", True, False)


def test_a_failing_receiver_gets_it_on_a_retry(fast: LiveServer, gateway: Loopgate,
                                               receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    rec.script = [500, 503, 502, 500]  # more failures than one outbox try's attempts
    with httpx.Client(base_url=fast.url, timeout=10) as client:
        created = _ask(client, f"{url}/done")
        client.post("/hitl/cancel", json={"request_id": created["request_id"]})
    deliveries = rec.wait(5)
    assert json.loads(deliveries[-1][1])["status"] == "cancelled"
    keys = {headers["idempotency-key"] for headers, _ in deliveries}
    assert keys == {f"{created['request_id']}:approval.resolved"}  # one logical delivery
    events = gateway.audit(request_id=created["request_id"])
    failures = [e for e in events if e.event == "delivery_failed" and e.channel == "callback"]
    assert failures
    # the receiver's answer is not stored beyond its status code
    errors = [str(e.details.get("error", "")) for e in failures]
    assert all(error.endswith(("HTTP 500", "HTTP 502", "HTTP 503")) for error in errors), errors


def test_a_decision_made_by_another_process_is_called_back(
        fast: LiveServer, db_url: str, gateway: Loopgate,
        receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    with httpx.Client(base_url=fast.url, timeout=10) as client:
        created = _ask(client, f"{url}/done")
    rid = created["request_id"]
    for _ in range(3000):  # bounded: until the callback channel has claimed the request
        if "callback" in gateway.get(rid).message_refs:
            break
        threading.Event().wait(0.01)
    assert "callback" in gateway.get(rid).message_refs
    with Loopgate(db_url, poll_interval=0.05) as cli:  # the CLI, say
        cli.respond(rid, {"type": "approve"}, actor="cli:ann", channel="cli")
    [(_, raw)] = rec.wait(1)
    body = json.loads(raw)
    assert (body["status"], body["responded_by"], body["channel"]) == (
        "approved", "cli:ann", "cli")


def test_requests_without_a_callback_leave_the_channel_alone(
        fast: LiveServer, gateway: Loopgate) -> None:
    with httpx.Client(base_url=fast.url, timeout=10) as client:
        created = _ask(client, None)
        client.post("/hitl/respond", json={"request_id": created["request_id"],
                                           "approved": True})
    record = gateway.get(created["request_id"])
    assert "callback" not in record.message_refs
    assert all(e.channel != "callback" for e in gateway.audit(request_id=record.id))


def test_callbacks_need_a_secret(serve: ServeFn) -> None:
    live = serve()
    with httpx.Client(base_url=live.url, timeout=10) as client:
        client.post("/hitl/register", json={"session_id": "cb"})
        response = client.post("/hitl/request", json={
            "session_id": "cb", "message": "m", "callback_url": "http://127.0.0.1:9/x"})
    assert response.status_code == 422
    assert "LOOPGATE_WEBHOOK_SECRET" in response.json()["error"]["message"]


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/x",           # loopback, not on this server's allowlist
    "http://localhost:9/x",           # a name resolving to loopback
    "http://10.1.2.3/x",              # private
    "http://192.168.0.1/x",
    "http://169.254.169.254/latest/meta-data/",  # link-local: cloud metadata
    "http://[::1]:9/x",
    "http://[::ffff:127.0.0.1]:9/x",  # loopback dressed as IPv6
    "http://[fd00:ec2::254]/x",       # a metadata service on IPv6 (unique local)
    "http://100.100.100.200/x",       # shared address space (another metadata service)
    "http://0.0.0.0:9/x",
])
def test_internal_callback_urls_are_refused(serve: ServeFn, url: str) -> None:
    live = serve(webhook_secret=WEBHOOK_SECRET, callback_allowlist=["192.0.2.0/24"])
    with httpx.Client(base_url=live.url, timeout=10) as client:
        client.post("/hitl/register", json={"session_id": "cb"})
        response = client.post("/hitl/request", json={
            "session_id": "cb", "message": "m", "callback_url": url})
    assert response.status_code == 422, response.text
    assert "internal address" in response.json()["error"]["message"]


async def test_the_allowlist_names_hosts_and_networks() -> None:
    policy = CallbackPolicy(["10.0.0.0/8", "hooks.internal", "127.0.0.1"])
    await policy.check("http://10.9.9.9/x")
    await policy.check("http://hooks.internal/x")
    await policy.check("http://127.0.0.1:8080/x")
    await policy.check("https://93.184.215.14/x")  # public addresses need no entry
    with pytest.raises(ValueError, match="internal address"):
        await policy.check("http://127.0.0.2/x")


async def test_a_callback_is_checked_again_before_delivery(gateway: Loopgate) -> None:
    """Between filing and deciding, a name may come to resolve elsewhere: the delivery
    is refused for good (not retried) rather than sent to an internal address."""
    notifier = CallbackNotifier(WEBHOOK_SECRET)
    record = await gateway.asubmit("m", callback_url="http://127.0.0.1:9/x")
    with pytest.raises(DeliveryError, match="internal address") as caught:
        await notifier.on_resolved(record)
    assert caught.value.retryable is False
    await notifier.aclose()
