"""No client input makes a 5xx: property-based requests generated from the OpenAPI
document (schemathesis, driven from pytest), and the specific inputs that used to crash
the server, over HTTP and MCP alike."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from mcp import Client
from starlette.applications import Starlette

from loopgate_lc.gateway import Loopgate
from loopgate_lc.server import create_app
from loopgate_lc.server.mcp import create_mcp_server
from loopgate_lc.server.models import MAX_JSON_DEPTH


@pytest.fixture(scope="module")
def fuzzed_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loopgate]:
    path = tmp_path_factory.mktemp("fuzz") / "loopgate.db"
    gw = Loopgate(f"sqlite:///{path}", poll_interval=0.05)
    gw.register_session("s", "c", telegram_id=1)
    yield gw
    gw.close()


@pytest.fixture(scope="module")
def api_schema(fuzzed_gateway: Loopgate) -> Any:
    app: Starlette = create_app(fuzzed_gateway, webhook_secret="fuzz-secret", mcp=False,
                                allowed_hosts=["testserver", "localhost", "127.0.0.1"],
                                max_wait=0.1)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_generated_requests_never_get_a_5xx(api_schema: Any) -> None:
    """Every documented operation, with bodies, query strings and paths generated from
    its schema (valid and invalid). Bounded (a fixed number of examples, fixed seed) so
    it runs in seconds and never flakes."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 9
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            response = case.call()
            assert response.status_code < 500, (case.method, case.path, response.text)

        check()


# --- the inputs that crashed the server, one by one ----------------------------------------


@pytest.fixture
def client(serve: Any) -> Iterator[httpx.Client]:
    live = serve(webhook_secret="s")
    with httpx.Client(base_url=live.url, timeout=10) as c:
        assert c.post("/hitl/register", json={"session_id": "s"}).status_code == 200
        yield c


def _post(client: httpx.Client, path: str, raw: str) -> httpx.Response:
    return client.post(path, content=raw.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1_000, 100_000])
def test_deep_json_is_422(client: httpx.Client, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    raw = f'{{"session_id": "s", "message": "m", "metadata": {{"x": {nested}}}}}'
    response = _post(client, "/hitl/request", raw)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("raw", [
    '{"session_id": "s", "message": "\\ud800"}',
    '{"session_id": "s", "message": "m", "metadata": {"\\udfff": 1}}',
    '{"session_id": "s", "message": "m", "options": ["\\ud83d"]}',
    '{"session_id": "\\ud800"}',
])
def test_lone_surrogates_are_422_not_mangled(client: httpx.Client, raw: str) -> None:
    path = "/hitl/register" if '"message"' not in raw else "/hitl/request"
    response = _post(client, path, raw)
    assert response.status_code == 422, response.text
    assert "surrogate" in response.json()["error"]["message"]


@pytest.mark.parametrize(("path", "fields"), [
    ("/hitl/request", {"session_id": "s", "message": "m", "timeout_seconds": True}),
    ("/hitl/request", {"session_id": "s", "message": "m", "timeout_seconds": "5"}),
    ("/hitl/register", {"session_id": "s2", "approvers": [False]}),
    ("/hitl/register", {"session_id": "s3", "telegram_id": True}),
    ("/hitl/request", {"session_id": "s", "message": True}),
    ("/hitl/respond", {"request_id": "x", "approved": "yes"}),
])
def test_a_boolean_is_not_a_number_or_a_string(client: httpx.Client, path: str,
                                               fields: dict[str, Any]) -> None:
    response = _post(client, path, json.dumps(fields))
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("args", [
    {"message": "m", "timeout_seconds": 1e12},
    {"message": "m", "timeout_seconds": True},
    {"message": "x" * 20_001},
    {"message": "m", "options": [f"o{i}" for i in range(51)]},
    {"message": "\ud800"},
])
async def test_mcp_has_the_same_limits_as_http(gateway: Loopgate,
                                               args: dict[str, Any]) -> None:
    """In memory: the tool's own validation, as a client library hands values over."""
    async with Client(create_mcp_server(gateway), read_timeout_seconds=30) as mcp:
        result = await mcp.call_tool("request_human_input", args)
    assert result.is_error, result
    assert gateway.pending() == []


def _mcp_raw(client: httpx.Client, raw: str, session: str | None) -> httpx.Response:
    headers = {"content-type": "application/json",
               "accept": "application/json, text/event-stream"}
    if session:
        headers.update({"mcp-session-id": session, "mcp-protocol-version": "2025-06-18"})
    return client.post("/mcp", content=raw.encode(), headers=headers)


def _rpc_result(response: httpx.Response) -> dict[str, Any]:
    text = response.text
    if "data:" in text:
        text = next(line[5:] for line in text.splitlines() if line.startswith("data:"))
    data: dict[str, Any] = json.loads(text)
    return data


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1e12"])
def test_mcp_over_http_refuses_an_infinite_timeout(serve: Any, gateway: Loopgate,
                                                   number: str) -> None:
    """Raw JSON-RPC, because only raw JSON spells infinity (1e999 parses as inf)."""
    live = serve()
    with httpx.Client(base_url=live.url, timeout=30) as client:
        init = _mcp_raw(client, json.dumps({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "raw", "version": "0"}}}), None)
        assert init.status_code == 200, init.text
        session = init.headers.get("mcp-session-id")
        _mcp_raw(client, '{"jsonrpc": "2.0", "method": "notifications/initialized"}', session)
        call = _mcp_raw(client, '{"jsonrpc": "2.0", "id": 2, "method": "tools/call", '
                                '"params": {"name": "request_human_input", "arguments": '
                                f'{{"message": "m", "timeout_seconds": {number}}}}}}}',
                        session)
        assert call.status_code < 500, call.text
        result = _rpc_result(call)
        assert result.get("error") or result["result"]["isError"], result
    assert gateway.pending() == []
