"""``/openapi.json``, assembled from the request and response models.

There is no ``/docs`` page: Swagger UI would have to be loaded from a CDN (code the
server does not control, running next to the API) or vendored (no maintained package
ships a Swagger UI that renders OpenAPI 3.1). Point any local viewer at the document.

The document is built by hand from pydantic's JSON Schemas rather than by a framework
plugin: OpenAPI 3.1 uses JSON Schema 2020-12, which is what pydantic emits, so the models
drop in unchanged and the only dependency is the one we already have. The route table
below is the single list of what the API offers; a test checks it against the app's
routes so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from loopgate_lc.server.models import (
    MAX_PAGE,
    AuditOut,
    CancelBody,
    DeactivateBody,
    ErrorBody,
    GrantsOut,
    HealthOut,
    PendingOut,
    PollResult,
    RegisterBody,
    RequestBody,
    RespondBatchBody,
    RespondBody,
    RevokeGrantBody,
    SessionOut,
    WebhookDecisionBody,
)
from loopgate_lc.stores.base import GrantRecord

__all__ = ["API", "Operation", "openapi_document"]


@dataclass(frozen=True)
class Operation:
    """One documented route."""

    method: Literal["get", "post"]
    path: str
    summary: str
    response: type[BaseModel] | None
    body: type[BaseModel] | None = None
    query: tuple[tuple[str, str, bool, dict[str, Any]], ...] = ()
    errors: tuple[int, ...] = ()
    description: str = ""
    auth: bool = True
    tags: tuple[str, ...] = field(default=("hitl",))


_STR = {"type": "string"}

API: tuple[Operation, ...] = (
    Operation("get", "/health", "Liveness and store check", HealthOut, auth=False,
              tags=("meta",), errors=(503,)),
    Operation("post", "/hitl/register", "Register a session (route requests to a chat)",
              SessionOut, RegisterBody, errors=(400, 409, 413, 422)),
    Operation("get", "/hitl/status", "A session's state", SessionOut,
              query=(("session_id", "The session.", True, _STR),), errors=(404, 422)),
    Operation("post", "/hitl/deactivate", "Stop a session from taking new requests",
              SessionOut, DeactivateBody, errors=(400, 404, 422)),
    Operation("post", "/hitl/request", "Ask a person", PollResult, RequestBody,
              errors=(400, 404, 409, 413, 422),
              description="Returns at once with status `pending`. Unknown session: 404; "
                          "deactivated session: 409 `session_inactive`."),
    Operation("get", "/hitl/poll", "A request's state; long-polls with `wait`", PollResult,
              query=(("request_id", "The request.", True, _STR),
                     ("wait", "Seconds to wait for a decision (capped, default 0).", False,
                      {"type": "number", "minimum": 0})),
              errors=(404, 422)),
    Operation("get", "/hitl/pending", "Requests waiting for a person, oldest first, paged",
              PendingOut,
              query=(("session_id", "Only this session's.", False, _STR),
                     ("limit", f"At most this many (1 to {MAX_PAGE}, default {MAX_PAGE}).",
                      False, {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
                     ("cursor", "The `next` of the previous page (also accepted as `after`).",
                      False, _STR)),
              errors=(404, 422)),
    Operation("post", "/hitl/cancel", "Withdraw a pending request", PollResult, CancelBody,
              errors=(400, 404, 409, 422)),
    Operation("post", "/hitl/respond", "Decide a request over HTTP", PollResult, RespondBody,
              errors=(400, 403, 404, 409, 422),
              description="On a request that needs several approvals the answer is a vote: "
                          "until the count is reached the request stays `pending`, with "
                          "`votes` and a `note`. A second vote by the same approver: 409 "
                          "`already_voted`; the requester's own vote: 403."),
    Operation("post", "/hitl/respond/batch",
              "Decide a paused run's requests with LangChain's batched decisions", PendingOut,
              RespondBatchBody, errors=(400, 403, 404, 409, 422),
              description="`decisions` answer the thread's pending requests by position (the "
                          "order of their tool calls), one each; all are checked before any "
                          "is kept."),
    Operation("post", "/hitl/webhook/decision/{request_id}",
              "Decide a request from a webhook receiver (token or signature)", PollResult,
              WebhookDecisionBody, errors=(400, 401, 403, 404, 409, 422, 503), auth=False,
              tags=("webhook",),
              description="Authenticated by the `decision_token` of the `approval.requested` "
                          "delivery, or by a Standard Webhooks signature over method, "
                          "path and raw body (each signature accepted once); the API key "
                          "is not required here."),
    Operation("get", "/hitl/audit", "The audit trail in the key's scope, newest last",
              AuditOut,
              query=(("request_id", "Only this request's events.", False, _STR),
                     ("session_id", "Only this session's events.", False, _STR),
                     ("event", "Only events of this kind, e.g. `shadow` or "
                               "`decided:approved`.", False, _STR),
                     ("limit", "At most this many, the newest (default 100, at most 1000).",
                      False, {"type": "integer", "minimum": 0, "maximum": 1000})),
              errors=(404, 422), tags=("audit",),
              description="Scoped keys see the events of their own sessions and requests; "
                          "events of neither (a graph's own) are for admin keys."),
    Operation("get", "/hitl/grants", "Remembered permissions (grants) in the key's scope",
              GrantsOut,
              query=(("tool", "Only this tool's.", False, _STR),
                     ("session_id", "Only those made in this session.", False, _STR),
                     ("all", "Also expired and revoked ones (default false).", False,
                      {"type": "boolean"})),
              errors=(404, 422), tags=("grants",),
              description="Live grants (neither revoked nor expired), oldest first; another "
                          "tenant's are never listed."),
    Operation("post", "/hitl/grants/revoke", "Revoke a grant: it approves nothing from now on",
              GrantRecord, RevokeGrantBody, errors=(400, 404, 422), tags=("grants",),
              description="Unknown ids and another tenant's grants are 404. Revoking again "
                          "changes nothing and shows who revoked it first."),
)

_TELEGRAM = Operation(
    "post", "/telegram/webhook", "Telegram Bot API webhook (updates from Telegram)", None,
    errors=(400, 401, 422), auth=False, tags=("telegram",),
    description="Checked with the `X-Telegram-Bot-Api-Secret-Token` header.")

_STATUS_TEXT = {400: "Malformed request", 401: "Missing or invalid credentials",
                403: "Not allowed", 404: "Unknown request, session or route",
                409: "Conflict (already decided, duplicate or inactive session)",
                413: "Body too large", 415: "The body is not application/json",
                421: "Host not served here", 422: "Invalid fields", 503: "Not available"}


def openapi_document(*, version: str, auth: bool, telegram: bool, mcp: bool
                     ) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the app as configured."""
    operations = [*API, _TELEGRAM] if telegram else list(API)
    inputs = [op.body for op in operations if op.body is not None]
    outputs = [op.response for op in operations if op.response is not None] + [ErrorBody]
    pairs: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        *((m, "validation") for m in dict.fromkeys(inputs)),
        *((m, "serialization") for m in dict.fromkeys(outputs)),
    ]
    refs, defs = models_json_schema(pairs, ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        entry: dict[str, Any] = {
            "summary": op.summary,
            "operationId": f"{op.method}_{op.path.strip('/').replace('/', '_')}"
                           .replace("{", "").replace("}", ""),
            "tags": list(op.tags),
            "responses": {},
        }
        if op.description:
            entry["description"] = op.description
        params = [{"name": name, "in": "query", "required": required, "description": text,
                   "schema": schema} for name, text, required, schema in op.query]
        if "{request_id}" in op.path:
            params.append({"name": "request_id", "in": "path", "required": True,
                           "schema": _STR})
        if params:
            entry["parameters"] = params
        if op.body is not None:
            entry["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": refs[(op.body, "validation")]}}}
        ok: dict[str, Any] = {"description": "OK"}
        if op.response is not None:
            ok["content"] = {"application/json": {
                "schema": refs[(op.response, "serialization")]}}
        entry["responses"]["200"] = ok
        # every route checks Host (421) and Origin (403); bodies must be JSON (415)
        codes = set(op.errors) | {403, 421} | ({415} if op.body is not None else set()) \
            | ({401, 403} if auth and op.auth else set())
        for code in sorted(codes):
            entry["responses"][str(code)] = {
                "description": _STATUS_TEXT.get(code, "Error"),
                "content": {"application/json": {"schema": refs[(ErrorBody, "serialization")]}},
            }
        if auth and op.auth:
            entry["security"] = [{"bearer": []}, {"apiKey": []}]
        paths.setdefault(op.path, {})[op.method] = entry
    description = ("Human-in-the-loop approvals: the Loopgate API (`/hitl/*`) with long "
                   "polling, HTTP and signed webhook decisions, and callbacks. Every error "
                   "is `{\"error\": {\"code\", \"message\", \"details\"}}`.")
    if mcp:
        description += " MCP (streamable HTTP) is served at `/mcp`."
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "loopgate-lc", "version": version, "description": description},
        "paths": paths,
        "components": {"schemas": defs.get("$defs", {})},
    }
    if auth:
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
    return document
