"""The /hitl routes against a real uvicorn server: sessions, requests, decisions over HTTP,
long polls, cancel, and the meaning of options."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import httpx
import pytest

from loopgate_lc.gateway import Loopgate
from tests.server.conftest import ServeFn


def ask(client: httpx.Client, session: str, **fields: Any) -> dict[str, Any]:
    body = {"session_id": session, "client_id": "my-ai", "message": "Approve this action?",
            **fields}
    response = client.post("/hitl/request", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    assert data["status"] == "pending"
    assert data["completed"] is False
    assert data["approved"] is False
    return data


def respond(client: httpx.Client, request_id: str, **fields: Any) -> httpx.Response:
    return client.post("/hitl/respond", json={"request_id": request_id, **fields})


def poll(client: httpx.Client, request_id: str, **params: Any) -> dict[str, Any]:
    response = client.get("/hitl/poll", params={"request_id": request_id, **params})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


# --- sessions ---------------------------------------------------------------------------


def test_register_status_deactivate_and_register_again(client: httpx.Client) -> None:
    body = {"session_id": "deploy", "client_id": "ci-cd", "telegram_id": 123456789}
    first = client.post("/hitl/register", json=body)  # the only test using "deploy"
    assert first.status_code == 200
    assert first.json()["active"] is True
    assert first.json()["telegram_id"] == 123456789

    duplicate = client.post("/hitl/register", json=body)
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "session_exists"

    status = client.get("/hitl/status", params={"session_id": "deploy"}).json()
    assert status["active"] is True
    assert status["pending_requests"] == 0

    gone = client.post("/hitl/deactivate", json={"session_id": "deploy"})
    assert gone.status_code == 200
    assert gone.json()["active"] is False
    assert client.get("/hitl/status", params={"session_id": "deploy"}).json()["active"] is False

    again = client.post("/hitl/register", json=body)
    assert again.status_code == 200
    assert again.json()["active"] is True


def test_unknown_session_is_404_everywhere(client: httpx.Client) -> None:
    status = client.get("/hitl/status", params={"session_id": "nobody"})
    assert status.status_code == 404
    assert status.json()["error"]["details"] == {"session_id": "nobody"}
    assert client.post("/hitl/deactivate", json={"session_id": "nobody"}).status_code == 404
    request = client.post("/hitl/request", json={"session_id": "nobody", "message": "hi"})
    assert request.status_code == 404
    assert request.json()["error"]["code"] == "not_found"
    assert client.get("/hitl/pending", params={"session_id": "nobody"}).status_code == 404


def test_a_deactivated_session_takes_no_requests(client: httpx.Client, session: str) -> None:
    client.post("/hitl/deactivate", json={"session_id": session})
    response = client.post("/hitl/request", json={"session_id": session, "message": "hi"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "session_inactive"


# --- approvals ----------------------------------------------------------------------------


def test_plain_approval_approved_over_http(client: httpx.Client, session: str,
                                           shared_gateway: Loopgate) -> None:
    created = ask(client, session, metadata={"version": "v2.1.0", "tests_passed": 847})
    assert created["metadata"] == {"version": "v2.1.0", "tests_passed": 847}
    assert created["request_type"] == "approval"

    decided = respond(client, created["request_id"], approved=True, actor="alice")
    assert decided.status_code == 200, decided.text
    result = poll(client, created["request_id"])
    assert result["status"] == "approved"
    assert result["completed"] is True
    assert result["approved"] is True
    assert result["response"] == "approved"
    assert result["responded_by"] == "alice (api)"
    assert result["responded_at"] is not None
    assert result["channel"] == "http"
    events = [e.event for e in shared_gateway.audit(request_id=created["request_id"])]
    assert "decided:approved" in events


def test_plain_rejection_carries_the_reason(client: httpx.Client, session: str) -> None:
    created = ask(client, session)
    respond(client, created["request_id"], approved=False, response="too risky today")
    result = poll(client, created["request_id"])
    assert (result["status"], result["approved"], result["response"]) == (
        "rejected", False, "too risky today")


def test_a_langchain_decision_dict_is_accepted(client: httpx.Client, session: str) -> None:
    created = ask(client, session)
    decided = respond(client, created["request_id"],
                      decision={"type": "reject", "message": "not now"})
    assert decided.status_code == 200
    assert decided.json()["decision"] == {"type": "reject", "message": "not now"}
    assert decided.json()["approved"] is False


@pytest.mark.parametrize("label", ["Cancel", "No", "Reject", "Deny", "Abort", "Decline",
                                   "Stop", "Don't deploy", "Wait for Better Price"])
def test_negative_options_are_never_approved(client: httpx.Client, session: str,
                                             label: str) -> None:
    created = ask(client, session, options=["Yes", label])
    assert {o["label"]: o["approved"] for o in created["options"]} == {"Yes": True,
                                                                       label: False}
    respond(client, created["request_id"], response=label)
    result = poll(client, created["request_id"])
    assert result["completed"] is True
    assert result["response"] == label
    assert result["approved"] is False


def test_affirmative_option_is_approved(client: httpx.Client, session: str) -> None:
    created = ask(client, session, options=["Deploy", "Cancel"])
    respond(client, created["request_id"], response="Deploy")
    result = poll(client, created["request_id"])
    assert (result["status"], result["approved"], result["response"]) == (
        "answered", True, "Deploy")


def test_explicit_option_meaning_wins_over_the_rule(client: httpx.Client, session: str) -> None:
    created = ask(client, session, options=[{"label": "Ship later", "approved": True},
                                            {"label": "Yes, but no", "approved": False}])
    respond(client, created["request_id"], response="Ship later")
    assert poll(client, created["request_id"])["approved"] is True


def test_simple_form_picks_the_one_approving_option(client: httpx.Client, session: str
                                                    ) -> None:
    yes = ask(client, session, options=["Cancel", "Deploy"])
    assert respond(client, yes["request_id"], approved=True).json()["response"] == "Deploy"


def test_approved_false_on_options_rejects_with_the_reason(client: httpx.Client, session: str
                                                           ) -> None:
    no = ask(client, session, options=["Deploy", "Cancel"])
    answer = respond(client, no["request_id"], approved=False, response="tests are red").json()
    assert (answer["status"], answer["approved"], answer["response"]) == \
        ("rejected", False, "tests are red")
    bare = ask(client, session, options=["Deploy", "Cancel"])
    answer = respond(client, bare["request_id"], approved=False).json()
    assert (answer["status"], answer["approved"]) == ("rejected", False)


def test_approved_true_with_several_approving_options_asks_to_choose(
        client: httpx.Client, session: str) -> None:
    created = ask(client, session, options=["Deploy", "Deploy Immediately", "Cancel"])
    response = respond(client, created["request_id"], approved=True)
    assert response.status_code == 422
    assert response.json()["error"]["details"]["options"] == ["Deploy", "Deploy Immediately"]
    assert poll(client, created["request_id"])["status"] == "pending"


def test_contradicting_label_and_flag_is_refused(client: httpx.Client, session: str) -> None:
    created = ask(client, session, options=["Deploy", "Cancel"])
    response = respond(client, created["request_id"], approved=True, response="Cancel")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_decision"
    assert poll(client, created["request_id"])["status"] == "pending"


def test_an_unknown_label_is_refused(client: httpx.Client, session: str) -> None:
    created = ask(client, session, options=["Deploy", "Cancel"])
    response = respond(client, created["request_id"], response="Maybe")
    assert response.status_code == 422
    assert "Deploy" in response.json()["error"]["message"]


def test_input_request_returns_the_text(client: httpx.Client, session: str) -> None:
    created = ask(client, session, request_type="input",
                  message="Please provide additional context:")
    assert respond(client, created["request_id"], approved=True).status_code == 422
    respond(client, created["request_id"], response="The outage was in eu-west-1")
    result = poll(client, created["request_id"])
    assert (result["status"], result["approved"], result["response"]) == (
        "answered", True, "The outage was in eu-west-1")


def test_choice_request_returns_the_label(client: httpx.Client, session: str) -> None:
    created = ask(client, session, request_type="choice",
                  options=["Development", "Staging", "Production"])
    respond(client, created["request_id"], response="Staging")
    result = poll(client, created["request_id"])
    assert result["response"] == "Staging"
    assert result["completed"] is True
    assert result["approved"] is False  # "Staging" is not an affirmative word


def test_both_decision_forms_at_once_are_refused(client: httpx.Client, session: str) -> None:
    created = ask(client, session)
    response = respond(client, created["request_id"], decision={"type": "approve"},
                       approved=True)
    assert response.status_code == 422


def test_second_answer_learns_who_decided(client: httpx.Client, session: str) -> None:
    created = ask(client, session)
    respond(client, created["request_id"], approved=True, actor="alice")
    second = respond(client, created["request_id"], approved=False)
    assert second.status_code == 409
    error = second.json()["error"]
    assert error["code"] == "already_decided"
    assert error["details"]["decided_by"] == "alice (api)"
    assert error["details"]["status"] == "approved"
    assert error["details"]["decided_at"]
    assert poll(client, created["request_id"])["status"] == "approved"


# --- cancel, timeout, long poll ---------------------------------------------------------


def test_cancel_then_approve_is_409(client: httpx.Client, session: str) -> None:
    created = ask(client, session)
    cancelled = client.post("/hitl/cancel", json={"request_id": created["request_id"],
                                                  "reason": "not needed"})
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["approved"] is False
    late = respond(client, created["request_id"], approved=True)
    assert late.status_code == 409
    assert late.json()["error"]["details"]["status"] == "cancelled"


def test_cancel_of_a_decided_request_says_who_and_when(client: httpx.Client,
                                                       session: str) -> None:
    created = ask(client, session)
    respond(client, created["request_id"], approved=True, actor="bob")
    response = client.post("/hitl/cancel", json={"request_id": created["request_id"]})
    assert response.status_code == 409
    details = response.json()["error"]["details"]
    assert details["decided_by"] == "bob (api)"
    assert details["decided_at"]
    assert details["channel"] == "http"


def test_timeout_ends_as_timeout_never_approved(client: httpx.Client, session: str) -> None:
    created = ask(client, session, timeout_seconds=0.2, options=["Investigate", "Ignore"])
    assert created["expires_at"] is not None
    result = poll(client, created["request_id"], wait=10)
    assert result["status"] == "timeout"
    assert result["completed"] is True
    assert result["approved"] is False
    assert result["responded_by"] is None


def test_long_poll_returns_once_decided(client: httpx.Client, session: str,
                                        live: Any) -> None:
    created = ask(client, session)
    results: list[dict[str, Any]] = []

    def long_poll() -> None:
        with httpx.Client(base_url=live.url, timeout=30) as other:
            results.append(poll(other, created["request_id"], wait=20))

    waiter = threading.Thread(target=long_poll)
    waiter.start()
    # The poll is parked on the gateway's waiter until the decision arrives.
    respond(client, created["request_id"], approved=True)
    waiter.join(timeout=25)
    assert results and results[0]["status"] == "approved"


def test_long_poll_wait_is_capped(serve: ServeFn) -> None:
    live = serve(max_wait=0.1)
    with httpx.Client(base_url=live.url, timeout=10) as client:
        client.post("/hitl/register", json={"session_id": "s", "client_id": "c"})
        created = ask(client, "s")
        result = poll(client, created["request_id"], wait=100000)
    assert result["status"] == "pending"


@pytest.mark.parametrize("wait", ["-1", "soon", "nan", "inf"])
def test_bad_wait_is_422(client: httpx.Client, session: str, wait: str) -> None:
    created = ask(client, session)
    response = client.get("/hitl/poll", params={"request_id": created["request_id"],
                                                "wait": wait})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_fields"


def test_pending_lists_open_requests_per_session(client: httpx.Client, session: str) -> None:
    other = f"{session}-other"
    client.post("/hitl/register", json={"session_id": other, "client_id": "x"})
    mine = ask(client, session)
    theirs = ask(client, other)
    done = ask(client, session)
    respond(client, done["request_id"], approved=True)

    everything = client.get("/hitl/pending").json()
    listed = {r["request_id"] for r in everything["requests"]}
    assert {mine["request_id"], theirs["request_id"]} <= listed
    assert done["request_id"] not in listed
    assert everything["count"] == len(everything["requests"])
    only_mine = client.get("/hitl/pending", params={"session_id": session}).json()
    assert [r["request_id"] for r in only_mine["requests"]] == [mine["request_id"]]
    status = client.get("/hitl/status", params={"session_id": session}).json()
    assert status["pending_requests"] == 1


def test_pending_pages_with_a_limit_and_the_next_cursor(serve: ServeFn,
                                                         gateway: Loopgate) -> None:
    with httpx.Client(base_url=serve().url, timeout=10) as client:
        client.post("/hitl/register", json={"session_id": "paged", "client_id": "x"})
        filed = [ask(client, "paged", message=f"q{n}")["request_id"] for n in range(7)]
        # a client of the original server sends no paging parameters and gets them all
        whole = client.get("/hitl/pending").json()
        assert [r["request_id"] for r in whole["requests"]] == filed
        assert [r["id"] for r in whole["pending_requests"]] == filed
        assert (whole["count"], whole["next"]) == (7, None)
        seen: list[str] = []
        params: dict[str, Any] = {"session_id": "paged", "limit": 3}
        for name in ("cursor", "after", "cursor", "after"):  # both names mean the same
            page = client.get("/hitl/pending", params=params).json()
            assert page["count"] == len(page["requests"]) <= 3
            seen += [r["request_id"] for r in page["requests"]]
            if page["next"] is None:
                break
            params = {"session_id": "paged", "limit": 3, name: page["next"]}
        assert seen == filed
        assert page["next"] is None and page["count"] == 1
        # a request decided between pages does not move the cursor of the others
        first = client.get("/hitl/pending", params={"limit": 2}).json()
        respond(client, filed[2], approved=True)
        rest = client.get("/hitl/pending", params={"cursor": first["next"]}).json()
        assert [r["request_id"] for r in rest["requests"]] == filed[3:]


@pytest.mark.parametrize("params", [
    {"limit": "0"}, {"limit": "1001"}, {"limit": "-1"}, {"limit": "ten"}, {"limit": "2.5"},
    {"cursor": "never-filed"}, {"cursor": "a", "after": "b"},
])
def test_bad_paging_parameters_are_422(client: httpx.Client, session: str,
                                       params: dict[str, str]) -> None:
    ask(client, session)
    response = client.get("/hitl/pending", params=params)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_fields"
    assert ("limit" in error["message"]) == ("limit" in params)


def test_unknown_request_ids_are_404(client: httpx.Client) -> None:
    for response in (
        client.get("/hitl/poll", params={"request_id": "nope"}),
        client.post("/hitl/respond", json={"request_id": "nope", "approved": True}),
        client.post("/hitl/cancel", json={"request_id": "nope"}),
    ):
        assert response.status_code == 404
        assert response.json()["error"] == {
            "code": "not_found", "message": "no approval request with id 'nope'",
            "details": {"request_id": "nope"}}


def test_requests_filed_elsewhere_are_served(client: httpx.Client, session: str,
                                             shared_db_url: str) -> None:
    """A second gateway on the same file (another process, in real life) files a
    request; the server lists it and decides it."""
    with Loopgate(shared_db_url) as other:
        record = other.submit("From the other side", session_id=session)
    pending = client.get("/hitl/pending").json()
    assert record.id in [r["request_id"] for r in pending["requests"]]
    assert respond(client, record.id, approved=True).json()["approved"] is True


def test_the_api_on_postgres(postgres_dsn: str, pg_schema: str) -> None:
    """The same routes over the PostgreSQL store (skipped without a DSN)."""
    from loopgate_lc.server import create_app
    from loopgate_lc.stores.postgres import PostgresStore
    from tests.support.live import LiveServer

    gateway = Loopgate(PostgresStore(postgres_dsn, schema=pg_schema), poll_interval=0.05)
    live = LiveServer(create_app(gateway, mcp=False)).start()
    try:
        with httpx.Client(base_url=live.url, timeout=10) as client:
            assert client.get("/health").json()["store"] == "PostgresStore"
            client.post("/hitl/register", json={"session_id": "pg", "client_id": "c"})
            created = ask(client, "pg", options=["Deploy", "Cancel"])
            assert respond(client, created["request_id"], response="Cancel").status_code == 200
            result = poll(client, created["request_id"])
            assert (result["status"], result["approved"]) == ("answered", False)
            again = client.post("/hitl/cancel", json={"request_id": created["request_id"]})
            assert again.status_code == 409
            assert client.get("/hitl/status", params={"session_id": "nope"}).status_code == 404
    finally:
        live.stop()
        gateway.close()


def test_named_approvers_are_checked_even_when_the_caller_names_nobody(
        client: httpx.Client, shared_gateway: Loopgate) -> None:
    """Leaving ``approver_id`` out used to skip the check; now the caller's own identity
    is checked, so only a named approver decides, and every refusal is audited."""
    session_id = f"finance-{uuid.uuid4().hex[:6]}"
    client.post("/hitl/register", json={"session_id": session_id, "client_id": "bot",
                                        "telegram_id": 1001, "approvers": ["cfo"]})
    created = ask(client, session_id)
    silent = respond(client, created["request_id"], approved=True)
    assert (silent.status_code, silent.json()["error"]["code"]) == (403, "approver_not_allowed")
    stranger = respond(client, created["request_id"], approved=True, approver_id="999")
    assert stranger.status_code == 403
    assert poll(client, created["request_id"])["status"] == "pending"
    refusals = [e for e in shared_gateway.audit(request_id=created["request_id"])
                if e.event == "unauthorized"]
    assert [e.details["approver_id"] for e in refusals] == [None, "999"]
    allowed = respond(client, created["request_id"], approved=True, approver_id="cfo")
    assert allowed.json()["approved"] is True
    assert allowed.json()["responded_by"] == "cfo (api)"


# --- every kind, and the original server's fields ------------------------------------


@pytest.mark.parametrize("kind", ["approval", "confirmation", "input", "choice", "feedback",
                                  "annotation"])
def test_every_interaction_kind_over_http(client: httpx.Client, session: str,
                                          kind: str) -> None:
    options = ["Yes", "No"] if kind == "choice" else []
    created = ask(client, session, request_type=kind, options=options)
    assert created["request_type"] == kind
    fields: dict[str, Any] = {"approved": True}
    if kind == "choice":
        fields = {"response": "Yes"}
    elif kind in ("input", "feedback", "annotation"):
        fields = {"response": "looks right"}
    answer = respond(client, created["request_id"], **fields)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["completed"], answer.json()["approved"]) == (True, True)


def test_answers_carry_the_original_servers_fields(client: httpx.Client) -> None:
    registered = client.post("/hitl/register", json={
        "session_id": "seed-shapes", "client_id": "my-ai", "telegram_id": 123456789}).json()
    assert (registered["success"], registered["session_id"]) == (True, "seed-shapes")
    assert registered["message"] == "Session registered successfully"
    created = client.post("/hitl/request", json={
        "session_id": "seed-shapes", "client_id": "my-ai", "message": "Deploy?",
        "options": ["Deploy", "Cancel"]}).json()
    assert (created["success"], created["status"]) == (True, "pending")
    assert {"request_id", "created_at"} <= created.keys()
    listed = client.get("/hitl/pending", params={"session_id": "seed-shapes"}).json()
    [seed_view] = listed["pending_requests"]
    assert (seed_view["id"], seed_view["options"]) == (created["request_id"],
                                                       ["Deploy", "Cancel"])
    assert listed["count"] == 1 and listed["requests"][0]["request_id"] == created["request_id"]
    status = client.get("/hitl/status", params={"session_id": "seed-shapes"}).json()
    assert (status["id"], status["active"], status["pending_requests"]) == (
        "seed-shapes", True, 1)
    cancelled = client.post("/hitl/cancel", json={"request_id": created["request_id"]}).json()
    assert (cancelled["success"], cancelled["completed"], cancelled["approved"]) == (
        True, True, False)
    gone = client.post("/hitl/deactivate", json={"session_id": "seed-shapes"}).json()
    assert (gone["success"], gone["active"]) == (True, False)
