"""``GET /hitl/audit``: the audit trail over HTTP, filtered by event kind (``shadow``,
``decided:approved``, ...), request or session, each key seeing only its tenant's."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from loopgate_lc.gateway import Loopgate
from loopgate_lc.server.tenancy import ApiKey, ApiKeys
from tests.server.conftest import ServeFn

KEYS = ApiKeys([
    ApiKey("billing-bot", "key-billing", admin=False, clients=frozenset({"billing"})),
    ApiKey("ops-bot", "key-ops", admin=False, sessions=frozenset({"ops-deploy"})),
    ApiKey("root", "key-root"),
])


@pytest.fixture
def http(gateway: Loopgate, serve: ServeFn) -> Iterator[dict[str, httpx.Client]]:
    gateway.open()
    gateway.register_session("invoices", "billing")
    gateway.register_session("ops-deploy")
    server = serve(api_keys=KEYS)
    made = {name: httpx.Client(base_url=server.url, timeout=10,
                               headers={"Authorization": f"Bearer key-{name}"})
            for name in ("billing", "ops", "root")}
    yield made
    for c in made.values():
        c.close()


def kinds(response: httpx.Response) -> list[tuple[str, str | None]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == len(body["events"])
    return [(e["event"], e["request_id"]) for e in body["events"]]


def test_the_audit_filtered_by_kind_and_tenant(gateway: Loopgate,
                                               http: dict[str, httpx.Client]) -> None:
    billing, ops, root = http["billing"], http["ops"], http["root"]
    mine = gateway.submit("pay?", session_id="invoices", client_id="billing")
    theirs = gateway.submit("deploy?", session_id="ops-deploy")
    gateway.respond(mine.id, {"type": "approve"}, actor="ana")
    gateway.respond(theirs.id, {"type": "reject"}, actor="bob")

    assert kinds(billing.get("/hitl/audit", params={"event": "decided:approved"})) == [
        ("decided:approved", mine.id)]
    assert kinds(ops.get("/hitl/audit", params={"event": "decided:approved"})) == []
    assert kinds(ops.get("/hitl/audit", params={"event": "decided:rejected"})) == [
        ("decided:rejected", theirs.id)]
    everything = kinds(root.get("/hitl/audit"))
    assert ("session_registered", None) in everything
    assert {("requested", mine.id), ("requested", theirs.id)} <= set(everything)
    # a scoped key never sees another tenant's events, nor events of no session
    own = billing.get("/hitl/audit").json()["events"]
    assert {e["session_id"] for e in own} == {"invoices"}
    assert {e["request_id"] for e in own} == {mine.id, None}  # None: the registration
    assert kinds(root.get("/hitl/audit", params={"request_id": mine.id, "limit": "1"})) == [
        ("decided:approved", mine.id)]  # the newest
    refused = billing.get("/hitl/audit", params={"request_id": theirs.id})
    assert refused.status_code == 404, refused.text
    assert billing.get("/hitl/audit", params={"session_id": "ops-deploy"}).status_code == 404
    assert root.get("/hitl/audit", params={"limit": "many"}).status_code == 422
    assert root.get("/hitl/audit", params={"limit": "5000"}).status_code == 422
