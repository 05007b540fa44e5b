"""Votes over HTTP on a request that needs several approvals: each answer short of the
quorum says the request is still pending, with the count; the requester and a second
vote by one approver are refused with their own codes."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from loopgate_lc.gateway import Loopgate
from loopgate_lc.policy import ApprovalPolicy
from tests.server.conftest import ServeFn

TWO = ApprovalPolicy(name="two-people", tool_pattern="deploy", require_explicit=True, quorum=2)


@pytest.fixture
def quorum_gateway(db_url: str) -> Iterator[Loopgate]:
    gate = Loopgate(db_url, policies=[TWO], poll_interval=0.05)
    gate.register_session("ops", client_id="deploy-bot", approvers=["ana", "bob", "cy"])
    yield gate
    gate.close()


def test_votes_over_http(quorum_gateway: Loopgate, serve: ServeFn) -> None:
    record = quorum_gateway.submit("Deploy v2?", session_id="ops", tool_name="deploy",
                                   risk="irreversible", confidence=1.0, requester="cy")
    live = serve(quorum_gateway)
    with httpx.Client(base_url=live.url, timeout=10) as client:
        def vote(approver: str, **fields: object) -> httpx.Response:
            return client.post("/hitl/respond", json={
                "request_id": record.id, "approver_id": approver, "actor": approver,
                **(fields or {"approved": True})})

        first = vote("ana")
        assert first.status_code == 200, first.text
        body = first.json()
        assert (body["status"], body["completed"], body["approved"]) == ("pending", False, False)
        assert body["votes"]["approvals"] == 1 and body["votes"]["approvals_needed"] == 2
        assert body["votes"]["voters"] == [{"voter": "ana", "vote": "approve"}]
        assert body["note"] == ("vote counted; the request is still pending "
                                "(Approvals: 1 of 2)")
        polled = client.get("/hitl/poll", params={"request_id": record.id}).json()
        assert polled["votes"]["approvals"] == 1 and "note" not in polled

        again = vote("ana")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "already_voted"
        assert again.json()["error"]["details"]["approvals"] == 1

        own = vote("cy")  # the requester
        assert own.status_code == 403
        assert own.json()["error"]["code"] == "approver_not_allowed"

        edit = vote("bob", decision={"type": "edit", "edited_action": {
            "name": "deploy", "args": {}}})
        assert edit.status_code == 422
        assert "only approve and reject are votes" in edit.json()["error"]["message"]

        final = vote("bob")
        assert final.status_code == 200
        decided = final.json()
        assert (decided["status"], decided["completed"], decided["approved"]) == (
            "approved", True, True)
        assert decided["responded_by"] == "ana (api), bob (api)"
        assert decided["votes"]["approvals"] == 2 and "note" not in decided
        plain = client.get("/hitl/poll", params={"request_id": record.id}).json()
        assert plain["status"] == "approved"


def test_requests_without_a_quorum_carry_no_count(quorum_gateway: Loopgate,
                                                  serve: ServeFn) -> None:
    record = quorum_gateway.submit("Anything?", session_id="ops")
    live = serve(quorum_gateway)
    with httpx.Client(base_url=live.url, timeout=10) as client:
        done = client.post("/hitl/respond", json={"request_id": record.id, "approved": True,
                                                  "approver_id": "ana"}).json()
        assert done["status"] == "approved" and "votes" not in done and "note" not in done
