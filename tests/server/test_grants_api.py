"""Grants over HTTP, against the real server: made with a ``grant`` field on a decision
(``/hitl/respond`` and webhook decisions), listed and revoked under ``/hitl/grants``,
each tenant seeing and revoking only its own; bad grants are clear 4xx and lose
nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from loopgate_lc.gateway import Loopgate
from loopgate_lc.server.tenancy import ApiKey, ApiKeys
from loopgate_lc.signing import decision_token
from tests.server.conftest import ServeFn
from tests.support.live import LiveServer

KEYS = ApiKeys([
    ApiKey("billing-bot", "key-billing", admin=False, clients=frozenset({"billing"})),
    ApiKey("ops-bot", "key-ops", admin=False, sessions=frozenset({"ops-deploy"})),
    ApiKey("root", "key-root"),
])
SECRET = "grant-secret"
HOUR = {"ttl_seconds": 3600}


@pytest.fixture
def server(gateway: Loopgate, serve: ServeFn) -> LiveServer:
    gateway.open()
    gateway.register_session("invoices", "billing")
    gateway.register_session("payroll", "billing")
    gateway.register_session("ops-deploy")
    return serve(api_keys=KEYS, webhook_secret=SECRET)


def clients(server: LiveServer) -> Iterator[dict[str, httpx.Client]]:
    made = {name: httpx.Client(base_url=server.url, timeout=10,
                               headers={"Authorization": f"Bearer key-{name}"})
            for name in ("billing", "ops", "root")}
    yield made
    for c in made.values():
        c.close()


@pytest.fixture
def http(server: LiveServer) -> Iterator[dict[str, httpx.Client]]:
    yield from clients(server)


def pay(gateway: Loopgate, session: str = "invoices", client: str | None = "billing",
        **args: Any) -> Any:
    return gateway.submit("pay?", tool_name="pay", args={"to": "acme", "amount": 10, **args},
                          session_id=session, client_id=client)


def test_a_grant_made_over_http_is_listed_and_revoked_by_its_tenant_only(
        gateway: Loopgate, http: dict[str, httpx.Client]) -> None:
    billing, ops, root = http["billing"], http["ops"], http["root"]
    first = pay(gateway)
    answer = billing.post("/hitl/respond", json={
        "request_id": first.id, "approved": True,
        "grant": {"scope": "session", "args": {"amount": {"max": 100}}, **HOUR}})
    assert answer.status_code == 200, answer.text
    made = answer.json()["decision"]["grant"]
    assert (made["scope"], made["args"]) == (
        "session", {"amount": {"max": 100}, "to": {"equals": "acme"}})
    again = pay(gateway, amount=99)
    assert (again.status.value, again.decided_by) == ("approved", f"grant:{made['id']}")
    assert pay(gateway, amount=101).pending
    assert pay(gateway, session="payroll").pending  # the session's grant, not the client's

    listed = billing.get("/hitl/grants").json()
    assert listed["count"] == 1
    [grant] = listed["grants"]
    assert (grant["id"], grant["created_by"], grant["request_id"]) == (
        made["id"], "api:billing-bot", first.id)
    assert ops.get("/hitl/grants").json() == {"count": 0, "grants": []}
    assert root.get("/hitl/grants").json()["count"] == 1
    assert billing.get("/hitl/grants", params={"tool": "other"}).json()["count"] == 0
    assert ops.get("/hitl/grants", params={"session_id": "invoices"}).status_code == 404

    # another tenant's grant reads exactly like an id that never existed
    for grant_id in (made["id"], "g_never"):
        refused = ops.post("/hitl/grants/revoke", json={"grant_id": grant_id})
        assert refused.status_code == 404, refused.text
        assert refused.json()["error"]["code"] == "not_found"
    assert billing.get("/hitl/grants").json()["count"] == 1  # still live

    revoked = billing.post("/hitl/grants/revoke", json={"grant_id": made["id"]})
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_by"] == "api:billing-bot"
    assert billing.get("/hitl/grants").json()["count"] == 0
    assert billing.get("/hitl/grants", params={"all": "true"}).json()["count"] == 1
    assert billing.get("/hitl/grants", params={"all": "maybe"}).status_code == 422
    assert pay(gateway, amount=50).pending
    assert billing.post("/hitl/grants/revoke", json={}).status_code == 422


def test_bad_grants_are_4xx_and_leave_the_request_pending(
        gateway: Loopgate, http: dict[str, httpx.Client]) -> None:
    billing, ops = http["billing"], http["ops"]
    record = pay(gateway)
    for body, status, words in (
        ({"approved": True, "grant": {"scope": "session"}}, 422, "exactly one of"),
        ({"approved": False, "grant": HOUR}, 422, "only an approve decision"),
        ({"decision": {"type": "approve", "grant": HOUR}, "grant": HOUR}, 422, "once"),
        ({"approved": True, "grant": {"args": {"to": {"regex": "."}}, **HOUR}}, 422,
         "unknown constraint"),
        ({"approved": True, "grant": "forever"}, 422, "invalid body"),
    ):
        answer = billing.post("/hitl/respond", json={"request_id": record.id, **body})
        assert answer.status_code == status, answer.text
        assert words in answer.json()["error"]["message"]
    assert gateway.get(record.id).pending
    # a scoped key makes no grant wider than its scope
    theirs = pay(gateway, session="ops-deploy", client=None)
    wide = ops.post("/hitl/respond", json={"request_id": theirs.id, "approved": True,
                                           "grant": {"scope": "everyone", **HOUR}})
    assert wide.status_code == 403, wide.text
    assert gateway.get(theirs.id).pending
    batch = ops.post("/hitl/respond/batch", json={"thread_id": "t", "decisions": [
        {"type": "approve", "grant": HOUR}]})
    assert batch.status_code == 422
    assert gateway.grants(live=False) == []
    # within its clients, a scoped key may make one
    ok = billing.post("/hitl/respond", json={"request_id": record.id, "decision": {
        "type": "approve", "grant": {"scope": "everyone", **HOUR}}})
    assert ok.status_code == 200, ok.text
    assert not pay(gateway, session="payroll").pending


def test_a_webhook_decision_carries_a_grant(gateway: Loopgate, server: LiveServer) -> None:
    record = pay(gateway)
    with httpx.Client(base_url=server.url, timeout=10) as receiver:
        answer = receiver.post(f"/hitl/webhook/decision/{record.id}", json={
            "token": decision_token(SECRET, record.id), "type": "approve",
            "actor": "ana", "grant": {"scope": "session", **HOUR}})
    assert answer.status_code == 200, answer.text
    [grant] = gateway.grants()
    assert (grant.created_by, grant.channel) == ("webhook:ana", "webhook")
    assert not pay(gateway).pending
