"""API-key auth on and off, against the real server; parsing LOOPGATE_API_KEYS."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from loopgate_lc.errors import ConfigurationError
from loopgate_lc.gateway import Loopgate
from loopgate_lc.server import ApiKeys, create_app, parse_api_keys
from tests.support.live import LiveServer

KEYS = "ci=key-ci-123,ui=key-ui-456,bare-key-789"


@pytest.fixture(scope="module")
def secured(shared_gateway: Loopgate) -> Iterator[LiveServer]:
    server = LiveServer(create_app(shared_gateway, api_keys=KEYS, webhook_secret="s")).start()
    yield server
    server.stop()


@pytest.fixture
def anonymous(secured: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=secured.url, timeout=10) as c:
        yield c


HITL_CALLS = [
    ("POST", "/hitl/register", {"session_id": "s"}),
    ("POST", "/hitl/request", {"session_id": "s", "message": "m"}),
    ("GET", "/hitl/poll?request_id=x", None),
    ("GET", "/hitl/status?session_id=s", None),
    ("GET", "/hitl/pending", None),
    ("POST", "/hitl/cancel", {"request_id": "x"}),
    ("POST", "/hitl/respond", {"request_id": "x", "approved": True}),
    ("POST", "/hitl/deactivate", {"session_id": "s"}),
    ("POST", "/mcp", {"jsonrpc": "2.0", "id": 1, "method": "ping"}),
]


@pytest.mark.parametrize(("method", "path", "body"), HITL_CALLS)
def test_without_a_key_every_hitl_route_is_401(anonymous: httpx.Client, method: str,
                                               path: str, body: object) -> None:
    response = anonymous.request(method, path, json=body)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path", "body"), HITL_CALLS)
def test_a_wrong_key_is_403(anonymous: httpx.Client, method: str, path: str,
                            body: object) -> None:
    response = anonymous.request(method, path, json=body,
                                 headers={"Authorization": "Bearer key-ci-124"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_bearer_and_x_api_key_both_work(anonymous: httpx.Client) -> None:
    bearer = anonymous.post("/hitl/register", json={"session_id": "a"},
                            headers={"Authorization": "Bearer key-ci-123"})
    assert bearer.status_code == 200
    header = anonymous.get("/hitl/status", params={"session_id": "a"},
                           headers={"X-API-Key": "bare-key-789"})
    assert header.status_code == 200
    assert header.json()["active"] is True


def test_the_key_name_is_the_actor(anonymous: httpx.Client, shared_gateway: Loopgate) -> None:
    auth = {"X-API-Key": "key-ui-456"}
    anonymous.post("/hitl/register", json={"session_id": "s"}, headers=auth)
    created = anonymous.post("/hitl/request", json={"session_id": "s", "message": "m"},
                             headers=auth).json()
    decided = anonymous.post("/hitl/respond", json={"request_id": created["request_id"],
                                                    "approved": True}, headers=auth)
    assert decided.json()["responded_by"] == "api:ui"
    bare = anonymous.post("/hitl/request", json={"session_id": "s", "message": "m"},
                          headers=auth).json()
    cancelled = anonymous.post("/hitl/cancel", json={"request_id": bare["request_id"]},
                               headers={"Authorization": "Bearer bare-key-789"})
    assert cancelled.json()["responded_by"] == "api"
    actors = {e.actor for e in shared_gateway.audit(request_id=created["request_id"])}
    assert "api:ui" in actors


def test_open_routes_stay_open(anonymous: httpx.Client) -> None:
    assert anonymous.get("/health").json()["auth"] is True
    assert anonymous.get("/openapi.json").status_code == 200
    # Webhook decisions authenticate by token or signature instead of an API key.
    webhook = anonymous.post("/hitl/webhook/decision/x", json={"type": "approve"})
    assert webhook.status_code == 401
    assert webhook.headers["www-authenticate"] == "Signature"


def test_without_keys_everything_is_open(client: httpx.Client) -> None:
    assert client.get("/health").json()["auth"] is False
    assert client.get("/hitl/pending").status_code == 200


def test_parse_api_keys() -> None:
    keys = parse_api_keys(" ci = abc , plain,")
    assert keys.actor("abc") == "api:ci"
    assert keys.actor("plain") == "api"
    assert keys.actor("abd") is None
    assert not parse_api_keys("")
    assert not parse_api_keys(None)
    assert "abc" not in repr(keys)


@pytest.mark.parametrize("text", ["ci=", "=abc", "a=1,a=2"])
def test_bad_key_lists_are_refused(text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_api_keys(text)


def test_keys_with_spaces_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        ApiKeys({"ci": " padded "})
