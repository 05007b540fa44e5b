"""A web page the operator opens cannot use the API: DNS rebinding (a foreign ``Host``),
cross-origin calls (an ``Origin`` not configured) and form-style bodies are refused on
every route, against the real server with its default settings (no keys, loopback)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from loopgate_lc.server.middleware import default_allowed_hosts
from tests.server.conftest import ServeFn
from tests.support.live import LiveServer


@pytest.fixture
def default_server(serve: ServeFn) -> LiveServer:
    return serve()


@pytest.fixture
def client(default_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=default_server.url, timeout=10) as c:
        assert c.post("/hitl/register", json={"session_id": "s"}).status_code == 200
        yield c


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/hitl/pending"), ("POST", "/hitl/respond"), ("GET", "/health"),
    ("POST", "/mcp"), ("GET", "/openapi.json"),
])
def test_a_rebound_host_name_is_refused_everywhere(client: httpx.Client, method: str,
                                                   path: str) -> None:
    response = client.request(method, path, json={},
                              headers={"Host": "attacker.example:8080"})
    assert response.status_code == 421, response.text
    assert response.json()["error"]["code"] == "misdirected_request"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST:9"])
def test_the_loopback_names_are_served(client: httpx.Client, host: str) -> None:
    assert client.get("/hitl/pending", headers={"Host": host}).status_code == 200


def test_a_cross_origin_page_cannot_list_or_approve(client: httpx.Client) -> None:
    created = client.post("/hitl/request", json={"session_id": "s", "message": "m"}).json()
    evil = {"Origin": "http://attacker.example"}
    listed = client.get("/hitl/pending", headers=evil)
    assert (listed.status_code, listed.json()["error"]["code"]) == (403, "cross_origin")
    approve = client.post("/hitl/respond", headers=evil,
                          json={"request_id": created["request_id"], "approved": True})
    assert approve.status_code == 403
    assert "access-control-allow-origin" not in approve.headers
    poll = client.get("/hitl/poll", params={"request_id": created["request_id"]})
    assert poll.json()["status"] == "pending"


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    None,
])
def test_a_simple_cross_site_body_is_415(client: httpx.Client,
                                         content_type: str | None) -> None:
    """``text/plain`` needs no CORS preflight, so a page could send it blind."""
    created = client.post("/hitl/request", json={"session_id": "s", "message": "m"}).json()
    body = b'{"request_id": "%s", "approved": true}' % created["request_id"].encode()
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = client.post("/hitl/respond", content=body, headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (
        415, "unsupported_media_type")
    json_charset = client.post("/hitl/respond", content=body,
                               headers={"Content-Type": "application/json; charset=utf-8"})
    assert json_charset.status_code == 200


def test_configured_cors_origins_may_call(serve: ServeFn) -> None:
    live = serve(cors_origins=["https://ui.example"])
    with httpx.Client(base_url=live.url, timeout=10) as c:
        ok = c.get("/hitl/pending", headers={"Origin": "https://ui.example"})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://ui.example"
        preflight = c.options("/hitl/respond", headers={
            "Origin": "https://ui.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,authorization"})
        assert preflight.status_code == 200
        other = c.get("/hitl/pending", headers={"Origin": "https://other.example"})
        assert other.status_code == 403


def test_allowed_hosts_are_configurable(serve: ServeFn) -> None:
    live = serve(allowed_hosts=["hitl.example.com"])
    with httpx.Client(base_url=live.url, timeout=10) as c:
        assert c.get("/health").status_code == 421  # 127.0.0.1 is no longer on the list
        assert c.get("/health", headers={"Host": "hitl.example.com"}).status_code == 200


def test_the_default_host_list_follows_the_bind_address() -> None:
    assert default_allowed_hosts("127.0.0.1") == ("127.0.0.1", "localhost", "::1")
    assert default_allowed_hosts("127.0.0.2") == ("127.0.0.1", "localhost", "::1",
                                                  "127.0.0.2")
    assert default_allowed_hosts("0.0.0.0") is None  # public: set LOOPGATE_ALLOWED_HOSTS


def test_the_checks_run_in_order_around_cors_and_keys(serve: ServeFn) -> None:
    """Browser checks first, then CORS (a preflight carries no key), then the key, then
    the body limit; every refusal in the API's error shape."""
    live = serve(cors_origins=["https://ui.example"], api_keys={"ui": "k" * 32},
                 max_body_bytes=64)
    origin = {"Origin": "https://ui.example"}
    with httpx.Client(base_url=live.url, timeout=10) as c:
        preflight = {**origin, "Access-Control-Request-Method": "POST"}
        assert c.options("/hitl/respond", headers=preflight).status_code == 200
        rebound = c.options("/hitl/respond", headers={**preflight, "Host": "attacker.example"})
        assert rebound.status_code == 421
        keyless = c.post("/hitl/respond", headers=origin, json={})
        assert (keyless.status_code, keyless.json()["error"]["code"]) == (401, "unauthorized")
        assert keyless.headers["access-control-allow-origin"] == "https://ui.example"
        large = c.post("/hitl/respond", headers={**origin, "X-API-Key": "k" * 32},
                       json={"request_id": "x" * 100})
        assert (large.status_code, large.json()["error"]["code"]) == (413, "payload_too_large")
        form = c.post("/hitl/respond", headers={**origin, "Content-Type": "text/plain"},
                      content=b"a=b")
        assert form.status_code == 415  # before the key is asked for
