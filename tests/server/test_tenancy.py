"""API keys with scopes, against the real server: one tenant's key cannot read, file in,
decide, cancel or deactivate another tenant's sessions and requests, over HTTP or MCP;
the key's name is the decision's actor; keys come from a TOML file or the environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from loopgate_lc.errors import ConfigurationError
from loopgate_lc.gateway import Loopgate
from loopgate_lc.server import create_app
from loopgate_lc.server.tenancy import ApiKey, ApiKeys, load_api_keys
from tests.support.live import LiveServer

KEYS = ApiKeys([
    ApiKey("billing-bot", "key-billing", admin=False, clients=frozenset({"billing"})),
    ApiKey("ops-bot", "key-ops", admin=False, sessions=frozenset({"ops-deploy"})),
    ApiKey("root", "key-root"),
])


@pytest.fixture(scope="module")
def server(shared_gateway: Loopgate) -> Iterator[LiveServer]:
    live = LiveServer(create_app(shared_gateway, api_keys=KEYS)).start()
    yield live
    live.stop()


def _client(server: LiveServer, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=10,
                        headers={"Authorization": f"Bearer {key}"})


@pytest.fixture(scope="module")
def billing(server: LiveServer) -> Iterator[httpx.Client]:
    with _client(server, "key-billing") as c:
        yield c


@pytest.fixture(scope="module")
def ops(server: LiveServer) -> Iterator[httpx.Client]:
    with _client(server, "key-ops") as c:
        yield c


@pytest.fixture(scope="module")
def filed(billing: httpx.Client, ops: httpx.Client) -> dict[str, str]:
    """Each tenant registers its session and files one request in it."""
    assert billing.post("/hitl/register", json={
        "session_id": "invoices", "client_id": "billing",
        "metadata": {"secret": "billing-only"}}).status_code == 200
    # a session-scoped key names no client: it could otherwise pose as another tenant's
    assert ops.post("/hitl/register", json={"session_id": "ops-deploy",
                                            "client_id": "ops"}).status_code == 403
    assert ops.post("/hitl/register", json={"session_id": "ops-deploy"}).status_code == 200
    mine = billing.post("/hitl/request", json={"session_id": "invoices", "message": "pay?",
                                               "metadata": {"iban": "DE00"}}).json()
    theirs = ops.post("/hitl/request", json={"session_id": "ops-deploy",
                                             "message": "deploy?"}).json()
    return {"billing": mine["request_id"], "ops": theirs["request_id"]}


def _not_found(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"


def test_another_tenants_session_and_request_answer_404(
        billing: httpx.Client, filed: dict[str, str]) -> None:
    """The seven operations another client's key used to perform, each now a 404 that
    reads exactly like an id that never existed."""
    theirs = filed["ops"]
    _not_found(billing.get("/hitl/status", params={"session_id": "ops-deploy"}))
    _not_found(billing.get("/hitl/poll", params={"request_id": theirs}))
    _not_found(billing.post("/hitl/request", json={"session_id": "ops-deploy",
                                                   "message": "planted"}))
    _not_found(billing.post("/hitl/respond", json={"request_id": theirs, "approved": True}))
    _not_found(billing.post("/hitl/cancel", json={"request_id": theirs}))
    _not_found(billing.post("/hitl/deactivate", json={"session_id": "ops-deploy"}))
    _not_found(billing.get("/hitl/pending", params={"session_id": "ops-deploy"}))
    unknown = billing.get("/hitl/poll", params={"request_id": "never-existed"})
    assert unknown.json()["error"]["message"] == (
        "no approval request with id 'never-existed'")
    hidden = billing.get("/hitl/poll", params={"request_id": theirs}).json()["error"]
    assert hidden["message"] == f"no approval request with id {theirs!r}"


def test_listings_show_only_the_keys_own(billing: httpx.Client, ops: httpx.Client,
                                         filed: dict[str, str]) -> None:
    mine = {r["request_id"] for r in billing.get("/hitl/pending").json()["requests"]}
    assert filed["billing"] in mine and filed["ops"] not in mine
    seen = {r["request_id"] for r in ops.get("/hitl/pending").json()["requests"]}
    assert filed["ops"] in seen and filed["billing"] not in seen


def test_pages_keep_to_the_key_and_its_cursor_cannot_probe_others(
        billing: httpx.Client, ops: httpx.Client, filed: dict[str, str]) -> None:
    extra = [billing.post("/hitl/request", json={"session_id": "invoices",
                                                 "message": f"pay {n}?"}).json()["request_id"]
             for n in range(3)]
    seen: list[str] = []
    params: dict[str, str | int] = {"limit": 1}
    for _ in range(50):
        page = billing.get("/hitl/pending", params=params).json()
        seen += [r["request_id"] for r in page["requests"]]
        if page["next"] is None:
            break
        params = {"limit": 1, "cursor": page["next"]}
    assert filed["billing"] in seen and set(extra) <= set(seen)
    assert filed["ops"] not in seen
    # another tenant's id as a cursor reads exactly like an id that never existed
    theirs = billing.get("/hitl/pending", params={"cursor": filed["ops"]})
    never = billing.get("/hitl/pending", params={"cursor": "never-existed"})
    assert theirs.status_code == never.status_code == 422
    assert theirs.json()["error"]["message"].replace(filed["ops"], "X") == \
        never.json()["error"]["message"].replace("never-existed", "X")
    for request_id in extra:  # leave the module's other tests the requests they expect
        assert billing.post("/hitl/cancel", json={"request_id": request_id}).status_code == 200


def test_the_other_tenants_request_is_untouched_and_its_owner_decides(
        ops: httpx.Client, shared_gateway: Loopgate, filed: dict[str, str]) -> None:
    assert shared_gateway.get(filed["ops"]).pending
    assert shared_gateway.session("ops-deploy").active
    # the owner decides a request of its own: the filed ones stay pending for the other
    # tests of this module, whichever order they run in
    own = ops.post("/hitl/request", json={"session_id": "ops-deploy",
                                          "message": "ship?"}).json()["request_id"]
    decided = ops.post("/hitl/respond", json={"request_id": own, "approved": True})
    assert decided.status_code == 200, decided.text
    # the actor is the key's identity, not a name the caller could fill in
    assert decided.json()["responded_by"] == "api:ops-bot"


def test_a_scoped_key_cannot_act_as_someone_else(billing: httpx.Client,
                                                 filed: dict[str, str]) -> None:
    response = billing.post("/hitl/respond", json={"request_id": filed["billing"],
                                                   "approved": True, "actor": "cfo"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "approver_not_allowed"


def test_a_scoped_key_registers_and_files_only_inside_its_scope(
        billing: httpx.Client, filed: dict[str, str]) -> None:
    outside = billing.post("/hitl/register", json={"session_id": "b2", "client_id": "ops"})
    assert (outside.status_code, outside.json()["error"]["code"]) == (403, "forbidden")
    # the id is taken by another tenant: the same answer as any taken id, nothing more
    taken = billing.post("/hitl/register", json={"session_id": "ops-deploy"})
    assert taken.status_code == 409
    # no client id given: the key's only client is used
    implied = billing.post("/hitl/register", json={"session_id": "b3"})
    assert implied.json()["client_id"] == "billing"
    planted = billing.post("/hitl/request", json={"session_id": "invoices", "message": "m",
                                                  "client_id": "ops"})
    assert planted.status_code == 403


def test_an_admin_key_sees_every_tenant(server: LiveServer, filed: dict[str, str]) -> None:
    with _client(server, "key-root") as root:
        ids = {r["request_id"] for r in root.get("/hitl/pending").json()["requests"]}
        assert filed["billing"] in ids
        assert root.get("/hitl/status", params={"session_id": "invoices"}).status_code == 200


async def _mcp_call(server: LiveServer, key: str, tool: str, args: dict[str, Any]) -> Any:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30)
    async with http, Client(streamable_http_client(f"{server.url}/mcp", http_client=http),
                            read_timeout_seconds=30) as client:
        return await client.call_tool(tool, args)


async def test_mcp_tools_keep_to_the_keys_scope(server: LiveServer,
                                                filed: dict[str, str]) -> None:
    theirs = filed["ops"]
    for tool, args in [("check_request_status", {"request_id": theirs}),
                       ("cancel_request", {"request_id": theirs}),
                       ("request_human_input", {"message": "x", "session_id": "ops-deploy",
                                                "timeout_seconds": 1})]:
        result = await _mcp_call(server, "key-billing", tool, args)
        assert result.is_error, (tool, result)
        assert "no approval request" in str(result.content) or "no session" in str(
            result.content)
    listed = await _mcp_call(server, "key-billing", "list_pending_requests", {})
    ids = {r["request_id"] for r in listed.structured_content["requests"]}
    assert filed["billing"] in ids and theirs not in ids
    paged: list[str] = []
    args: dict[str, object] = {"limit": 1}
    for _ in range(50):
        page = (await _mcp_call(server, "key-billing", "list_pending_requests",
                                args)).structured_content
        assert page is not None
        paged += [r["request_id"] for r in page["requests"]]
        if page["next"] is None:
            break
        args = {"limit": 1, "cursor": page["next"]}
    assert set(paged) == ids
    refused = await _mcp_call(server, "key-billing", "list_pending_requests",
                              {"cursor": theirs})
    assert refused.is_error and "no approval request" in str(refused.content)
    assert (await _mcp_call(server, "key-billing", "list_pending_requests",
                            {"limit": 0})).is_error


def test_keys_from_a_toml_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text('[keys.billing-bot]\nkey = "k1"\nclients = ["billing"]\n\n'
                    '[keys.ops]\nkey_env = "OPS_KEY"\nadmin = true\n', encoding="utf-8")
    keys = load_api_keys({"LOOPGATE_API_KEYS": "legacy=k0",
                          "LOOPGATE_API_KEYS_FILE": str(path), "OPS_KEY": "k2"})
    legacy, billing, ops = (keys.find(k) for k in ("k0", "k1", "k2"))
    assert legacy is not None and legacy.admin and legacy.actor == "api:legacy"
    assert billing is not None and not billing.admin
    assert billing.may_use("any", "billing") and not billing.may_use("any", "ops")
    assert ops is not None and ops.admin
    assert "k1" not in repr(billing)  # secrets stay out of logs


@pytest.mark.parametrize(("text", "message"), [
    ('[keys.a]\nkey = "k"\n', "has no scope"),
    ('[keys.a]\nclients = ["c"]\n', "needs key"),
    ('[keys.a]\nkey = "k"\nadmin = "yes"\n', "admin must be true or false"),
    ('[keys.a]\nkey = "k"\nadmin = true\nscope = 1\n', "unknown fields"),
    ('[keys.a]\nkey_env = "NOPE_NOT_SET"\nadmin = true\n', "is not set"),
    ("keys = 3", "no \\[keys"),
    ("[keys.a\n", "not valid TOML"),
])
def test_a_bad_key_file_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigurationError, match=message):
        load_api_keys({"LOOPGATE_API_KEYS_FILE": str(path)})
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_api_keys({"LOOPGATE_API_KEYS_FILE": str(tmp_path / "missing.toml")})
