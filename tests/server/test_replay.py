"""A signed decision is accepted once by every server process sharing a store, not only by
the process that saw it first (its message id is remembered in the store)."""

from __future__ import annotations

import json
import uuid

import httpx

from loopgate_lc.gateway import Loopgate
from loopgate_lc.signing import sign_decision
from tests.server.conftest import WEBHOOK_SECRET, ServeFn


def test_a_signed_message_id_is_refused_by_a_second_process_on_the_same_store(
    db_url: str, serve: ServeFn,
) -> None:
    first_gateway = Loopgate(db_url, poll_interval=0.05)
    second_gateway = Loopgate(db_url, poll_interval=0.05)
    try:
        first = serve(first_gateway, webhook_secret=WEBHOOK_SECRET)
        second = serve(second_gateway, webhook_secret=WEBHOOK_SECRET)
        with httpx.Client(base_url=first.url, timeout=10) as a, \
                httpx.Client(base_url=second.url, timeout=10) as b:
            session = f"s-{uuid.uuid4().hex[:8]}"
            assert a.post("/hitl/register", json={"session_id": session, "client_id": "c",
                                                  "telegram_id": 1}).status_code == 200
            ids = [a.post("/hitl/request", json={"session_id": session, "client_id": "c",
                                                 "message": "Deploy?"}).json()["request_id"]
                   for _ in range(2)]
            body = json.dumps({"type": "approve"}).encode()

            def signed(request_id: str) -> tuple[str, dict[str, str]]:
                path = f"/hitl/webhook/decision/{request_id}"
                return path, {"content-type": "application/json", **sign_decision(
                    body, WEBHOOK_SECRET, path=path, message_id="msg_shared")}

            path, headers = signed(ids[0])
            assert a.post(path, content=body, headers=headers).status_code == 200
            # the same message id, freshly signed for the other request, at the other
            # process: in memory per process it was accepted; the store refuses it
            path, headers = signed(ids[1])
            replay = b.post(path, content=body, headers=headers)
            assert (replay.status_code, replay.json()["error"]["code"]) == (409, "replayed")
            assert b.get("/hitl/poll", params={"request_id": ids[1]}).json()[
                "status"] == "pending"
    finally:
        first_gateway.close()
        second_gateway.close()
