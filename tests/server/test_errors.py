"""One error shape with the right status: malformed, oversized, unknown and invalid input
never produce a 500, and every library error maps to a stable code."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from loopgate_lc.errors import (
    AlreadyDecided,
    ApproverNotAllowed,
    ConfigurationError,
    DecisionNotAllowed,
    InvalidDecision,
    InvalidPolicy,
    LoopgateError,
    RequestNotFound,
    SessionExists,
    SessionNotFound,
    SignatureError,
    StaleDecision,
    StoreError,
)
from loopgate_lc.gateway import Loopgate
from loopgate_lc.server import create_app
from loopgate_lc.server.errors import from_loopgate_error
from tests.server.conftest import ServeFn

POST_ROUTES = ["/hitl/register", "/hitl/request", "/hitl/respond", "/hitl/cancel",
               "/hitl/deactivate", "/hitl/webhook/decision/some-id"]

JSON = {"content-type": "application/json"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize("route", POST_ROUTES)
@pytest.mark.parametrize("body", [b"{bad json", b"", b"   ", b"\xff\xfe", b'{"a": 1'])
def test_malformed_bodies_are_400(client: httpx.Client, route: str, body: bytes) -> None:
    response = client.post(route, content=body, headers={"content-type": "application/json"})
    assert_error(response, 400, "malformed_json")


@pytest.mark.parametrize("route", POST_ROUTES[:5])
@pytest.mark.parametrize("body", ["[]", "42", '"text"', "null", "true"])
def test_json_that_is_not_an_object_is_422(client: httpx.Client, route: str,
                                           body: str) -> None:
    response = client.post(route, content=body, headers=JSON)
    assert_error(response, 422, "invalid_fields")


@pytest.mark.parametrize(("fields", "where"), [
    ({"message": ""}, "message"),
    ({"message": None}, "message"),
    ({"request_type": "vote"}, "request_type"),
    ({"timeout_seconds": 0}, "timeout_seconds"),
    ({"timeout_seconds": -5}, "timeout_seconds"),
    ({"timeout_seconds": "soon"}, "timeout_seconds"),
    ({"options": "Yes,No"}, "options"),
    ({"options": [""]}, "options"),
    ({"options": ["x" * 300]}, "options"),
    ({"options": [{"label": "Go", "approved": "perhaps"}]}, "options"),
    ({"options": [str(i) for i in range(60)]}, "options"),
    ({"metadata": ["not", "a", "dict"]}, "metadata"),
    ({"callback_url": "ftp://example.com/x"}, "callback_url"),
    ({"session_id": ""}, "session_id"),
])
def test_invalid_request_fields_are_422(client: httpx.Client, session: str,
                                        fields: dict[str, Any], where: str) -> None:
    body = {"session_id": session, "message": "Deploy?", **fields}
    error = assert_error(client.post("/hitl/request", json=body), 422, "invalid_fields")
    assert any(where in e["loc"] for e in error["details"]["errors"])
    assert "input" not in error["details"]["errors"][0]  # the rejected value is not echoed


@pytest.mark.parametrize("fields", [
    {"request_type": "choice"},                       # a choice needs options
    {"options": ["Yes", "Yes"]},                      # labels must be unique
])
def test_requests_the_gateway_refuses_are_422(client: httpx.Client, session: str,
                                              fields: dict[str, Any]) -> None:
    body = {"session_id": session, "message": "Pick one", **fields}
    assert_error(client.post("/hitl/request", json=body), 422, "invalid_decision")


def test_missing_required_fields_are_422(client: httpx.Client) -> None:
    error = assert_error(client.post("/hitl/request", json={"message": "hi"}), 422,
                         "invalid_fields")
    assert error["details"]["errors"][0]["loc"] == ["body", "session_id"]
    assert_error(client.post("/hitl/respond", json={}), 422, "invalid_fields")
    assert_error(client.get("/hitl/poll"), 422, "invalid_fields")
    assert_error(client.get("/hitl/status"), 422, "invalid_fields")


def test_an_invalid_decision_dict_is_422(client: httpx.Client, session: str) -> None:
    created = client.post("/hitl/request", json={"session_id": session,
                                                 "message": "Go?"}).json()
    for decision in ({"type": "launch"}, {"type": "edit"}, {"type": "timeout"},
                     {"type": "respond"}):
        response = client.post("/hitl/respond", json={"request_id": created["request_id"],
                                                      "decision": decision})
        assert_error(response, 422, "invalid_decision")
    poll = client.get("/hitl/poll", params={"request_id": created["request_id"]}).json()
    assert poll["status"] == "pending"  # nothing was lost or decided


def test_unknown_routes_and_methods(client: httpx.Client) -> None:
    assert_error(client.get("/hitl/nothing-here"), 404, "not_found")
    error = assert_error(client.get("/hitl/request"), 405, "method_not_allowed")
    assert "GET" in error["message"]
    assert_error(client.delete("/hitl/poll"), 405, "method_not_allowed")


def test_announced_oversized_body_is_413(serve: ServeFn) -> None:
    live = serve(max_body_bytes=1000)
    with httpx.Client(base_url=live.url) as client:
        body = json.dumps({"session_id": "s", "message": "x" * 2000})
        error = assert_error(client.post("/hitl/request", content=body, headers=JSON), 413,
                             "payload_too_large")
        assert error["details"] == {"max_body_bytes": 1000}
        small = client.post("/hitl/register", json={"session_id": "s"})
        assert small.status_code == 200


def test_chunked_oversized_body_is_413(serve: ServeFn) -> None:
    """No Content-Length at all: the bytes are counted as they stream in."""
    live = serve(max_body_bytes=1000)

    def chunks() -> Iterator[bytes]:
        yield b'{"session_id": "s", "message": "'
        for _ in range(20):
            yield b"x" * 100
        yield b'"}'

    with httpx.Client(base_url=live.url) as client:
        response = client.post("/hitl/request", content=chunks(), headers=JSON)
        assert "content-length" not in {k.lower() for k in response.request.headers}
        assert_error(response, 413, "payload_too_large")


async def test_a_lying_content_length_is_caught_while_streaming(gateway: Loopgate) -> None:
    """The header says 10 bytes, 4 KiB arrive: drive the ASGI app directly, since an HTTP
    client (rightly) refuses to send such a request."""
    app = create_app(gateway, max_body_bytes=1000, mcp=False)
    chunks = [b'{"session_id": "s", "message": "', *([b"x" * 512] * 8), b'"}']
    incoming = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    incoming[-1]["more_body"] = False
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(0)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/hitl/request", "raw_path":
             b"/hitl/request", "root_path": "", "query_string": b"",
             "headers": [(b"host", b"127.0.0.1"), (b"content-length", b"10"),
                         (b"content-type", b"application/json")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "app": app}
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert json.loads(body)["error"]["code"] == "payload_too_large"


def test_a_non_numeric_content_length_is_400(gateway: Loopgate) -> None:
    app = create_app(gateway, mcp=False)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/hitl/request", "query_string": b"",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                         (b"content-length", b"ten")], "root_path": ""}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 400


def test_garbage_never_makes_a_500(client: httpx.Client, session: str) -> None:
    bodies: list[Any] = [
        {"session_id": session, "message": "m", "options": [{"label": "x"}, {"nope": 1}]},
        {"session_id": session, "message": "m", "metadata": {"a": [1, {"b": None}]}},
        {"session_id": ["list"], "message": {"obj": 1}},
        {"request_id": {"x": 1}, "approved": "yes"},
        {"request_id": "x" * 10_000},
        {"request_id": "r", "decision": "approve"},
        {"session_id": session, "telegram_id": "not-a-number"},
        {"session_id": session, "telegram_id": 10**40},
        {"token": 5, "decision": []},
    ]
    for route in POST_ROUTES:
        for body in bodies:
            response = client.post(route, json=body)
            assert response.status_code < 500, (route, body, response.text)
            assert "error" in response.json() or response.status_code == 200


ERRORS: list[tuple[LoopgateError, int, str]] = [
    (AlreadyDecided("r", status="approved", decided_by="ann",
                    decided_at=datetime(2026, 1, 1, tzinfo=UTC), channel="telegram"),
     409, "already_decided"),
    (RequestNotFound("r"), 404, "not_found"),
    (SessionNotFound("s"), 404, "not_found"),
    (SessionExists("s"), 409, "session_exists"),
    (ApproverNotAllowed("no"), 403, "approver_not_allowed"),
    (SignatureError("bad"), 401, "unauthorized"),
    (InvalidDecision("bad"), 422, "invalid_decision"),
    (DecisionNotAllowed("bad"), 422, "invalid_decision"),
    (InvalidPolicy("bad"), 422, "invalid_fields"),
    (StaleDecision("old"), 409, "stale_decision"),
    (StoreError("down"), 503, "store_unavailable"),
    (ConfigurationError("off"), 503, "not_configured"),
    (LoopgateError("other"), 400, "bad_request"),
]


@pytest.mark.parametrize(("error", "status", "code"), ERRORS,
                         ids=[type(e).__name__ for e, _, _ in ERRORS])
def test_every_library_error_has_one_status(error: LoopgateError, status: int,
                                            code: str) -> None:
    api = from_loopgate_error(error)
    assert (api.status, api.code) == (status, code)
    assert api.body()["error"]["message"]


def test_already_decided_details_say_who_when_and_where() -> None:
    api = from_loopgate_error(AlreadyDecided(
        "r", status="approved", decided_by="ann", decided_at=datetime(2026, 1, 1, tzinfo=UTC),
        channel="telegram"))
    assert api.details == {"request_id": "r", "status": "approved", "decided_by": "ann",
                           "decided_at": "2026-01-01T00:00:00+00:00", "channel": "telegram"}
