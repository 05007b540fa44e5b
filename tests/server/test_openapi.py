"""/openapi.json describes the app as it is: every route, every body, every error."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from loopgate_lc.gateway import Loopgate
from loopgate_lc.server import create_app
from loopgate_lc.server.models import PollResult, respond_result
from loopgate_lc.server.openapi import API, openapi_document
from loopgate_lc.stores.base import Vote


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_the_document_is_served(client: httpx.Client) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] == "loopgate-lc"
    paths = document["paths"]
    for path in ("/hitl/register", "/hitl/request", "/hitl/poll", "/hitl/status",
                 "/hitl/cancel", "/hitl/deactivate", "/hitl/pending", "/hitl/respond",
                 "/hitl/webhook/decision/{request_id}", "/health"):
        assert path in paths, path
    request = paths["/hitl/request"]["post"]
    schema_ref = request["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = document["components"]["schemas"][schema_ref.rsplit("/", 1)[1]]
    assert set(body["required"]) == {"session_id", "message"}
    assert set(body["properties"]["request_type"]["enum"]) == {
        "approval", "confirmation", "input", "choice", "feedback", "annotation"}
    assert {"404", "409", "413", "422"} <= set(request["responses"])
    poll = paths["/hitl/poll"]["get"]
    assert [p["name"] for p in poll["parameters"]] == ["request_id", "wait"]
    result = document["components"]["schemas"]["PollResult"]
    assert {"request_id", "status", "completed", "approved", "response", "responded_by",
            "responded_at"} <= set(result["required"])
    assert "securitySchemes" not in document["components"]  # no keys on this server


def test_every_reference_resolves() -> None:
    document = openapi_document(version="1", auth=True, telegram=True, mcp=True)
    schemas = document["components"]["schemas"]
    refs = _refs(document)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref
    assert "/telegram/webhook" in document["paths"]


def test_auth_is_documented_when_on() -> None:
    document = openapi_document(version="1", auth=True, telegram=False, mcp=False)
    assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert "security" in document["paths"]["/hitl/request"]["post"]
    assert "401" in document["paths"]["/hitl/request"]["post"]["responses"]
    assert "security" not in document["paths"]["/health"]["get"]
    assert "security" not in document["paths"]["/hitl/webhook/decision/{request_id}"]["post"]


@pytest.mark.parametrize("mcp", [True, False])
def test_the_route_table_matches_the_app(gateway: Loopgate, mcp: bool) -> None:
    app = create_app(gateway, mcp=mcp)
    served = {(method.lower(), route.path) for route in app.routes
              if isinstance(route, Route) for method in (route.methods or ())
              if method != "HEAD"}
    documented = {(op.method, op.path) for op in API}
    undocumented = {("get", "/openapi.json")}
    assert served - undocumented == documented


def test_a_request_view_is_exactly_its_documented_model(gateway: Loopgate) -> None:
    """The view of a request is built by hand for speed: it must stay what ``PollResult``
    documents, field for field and in the model's own JSON form (times included)."""
    asked = gateway.submit("Deploy?", metadata={"change": 7, "tags": ["a", None]},
                           timeout=600)
    chosen = gateway.submit("Which?", kind="choice",
                            options=["one", {"label": "two", "approved": False}])
    chosen = gateway.respond(chosen.id, {"type": "respond", "message": "two"}, actor="ana")
    rejected = gateway.submit("Drop it?")
    rejected = gateway.respond(rejected.id, {"type": "reject", "message": "no"}, actor="bo")
    voting = asked.model_copy(update={
        "payload": {**asked.payload, "quorum": 2},
        "votes": [Vote(voter="ana", vote="approve", actor="ana", channel="http",
                       at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))]})
    for record in (asked, chosen, rejected, voting):
        view = respond_result(record)
        documented = PollResult.model_validate(view).model_dump(mode="json")
        # only the count and its note are left out when there is none
        kept = [k for k, v in documented.items() if v is not None or k not in ("votes", "note")]
        assert list(view) == kept
        assert view == {k: documented[k] for k in kept}
    assert "votes" in respond_result(voting) and "note" in respond_result(voting)
    assert "votes" not in respond_result(asked)
