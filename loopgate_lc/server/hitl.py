"""The ``/hitl/*`` routes: the Loopgate API, plus respond, long poll and webhook decisions.

Handlers are thin: parse and validate, call the gateway, render :func:`poll_result`.
Every decision goes through ``Loopgate.arespond`` (channel ``http`` or ``webhook``), so
exactly-once, approver checks and the audit stay in one place. Errors are raised as
:class:`ApiError` or library errors and rendered once, by :func:`endpoint`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from loopgate_lc.decisions import approval_of
from loopgate_lc.errors import (
    LoopgateError,
    RequestNotFound,
    SessionExists,
    SessionNotFound,
    SignatureError,
)
from loopgate_lc.gateway import Loopgate
from loopgate_lc.schema import RequestKind
from loopgate_lc.server.callbacks import CALLBACK_CHANNEL, CallbackPolicy
from loopgate_lc.server.errors import (
    ApiError,
    from_loopgate_error,
    from_validation_error,
    internal_error,
)
from loopgate_lc.server.middleware import caller
from loopgate_lc.server.models import (
    MAX_JSON_DEPTH,
    MAX_PAGE,
    AuditOut,
    CancelBody,
    DeactivateBody,
    RegisterBody,
    RequestBody,
    RespondBatchBody,
    RespondBody,
    RevokeGrantBody,
    WebhookDecisionBody,
    check_json,
    poll_result,
    respond_result,
    session_out,
)
from loopgate_lc.server.tenancy import (
    ApiKey,
    filing_client,
    own_grant,
    own_request,
    own_session,
    pending_page,
)
from loopgate_lc.signing import (
    DEFAULT_TOLERANCE,
    SIGNATURE_HEADER,
    MemoryReplayGuard,
    ReplayGuard,
    Secrets,
    verify_decision_signature,
    verify_decision_token,
)
from loopgate_lc.stores.base import AuditEvent, RequestRecord

__all__ = ["Endpoint", "HitlConfig", "hitl_routes", "page_params", "read_json",
           "simple_decision"]

_M = TypeVar("_M", bound=BaseModel)
Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class HitlConfig:
    """What the routes need besides the gateway.

    Attributes:
        webhook_secret: Verifies webhook decisions and signs callbacks; None turns both off.
        max_wait: The cap on ``/hitl/poll?wait=`` in seconds.
        callback_policy: Which addresses a ``callback_url`` may reach.
        replay_guard: Remembers signed decisions' message ids so each is accepted once;
            in memory by default (one process).
    """

    webhook_secret: Secrets | None = None
    max_wait: float = 60.0
    callback_policy: CallbackPolicy = field(default_factory=CallbackPolicy)
    replay_guard: ReplayGuard = field(default_factory=MemoryReplayGuard)


class Endpoint:
    """A route's handler as an ASGI app that renders every failure in the one error
    shape: API errors as raised, library errors by their mapping, anything else as a
    logged 500 that reveals nothing.

    An ASGI app rather than a function so Starlette calls it as it is: a function would
    be wrapped in its request-response adapter and its exception-handler layer (a
    closure around ``send`` and a lookup per request), and no exception reaches that
    layer from here.
    """

    __slots__ = ("__name__", "handler")

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.__name__ = getattr(handler, "__name__", type(handler).__name__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await self.handler(Request(scope, receive, send))
        except ApiError as exc:
            response = exc.response()
        except LoopgateError as exc:
            response = from_loopgate_error(exc).response()
        except Exception as exc:
            response = internal_error(exc).response()
        await response(scope, receive, send)


async def read_json(request: Request) -> Any:
    """The body as JSON; 400 when it is empty or not JSON, 422 when it nests too deep or
    holds lone surrogates."""
    raw = await request.body()
    if not raw.strip():
        raise ApiError(400, "malformed_json", "the request body is empty; send a JSON object")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"the request body is not valid JSON: {exc}") \
            from exc
    except RecursionError as exc:
        raise ApiError(422, "invalid_fields",
                       f"the request body nests more than {MAX_JSON_DEPTH} levels deep") \
            from exc
    if not _plainly_safe(raw):
        try:
            check_json(data)
        except ValueError as exc:
            raise ApiError(422, "invalid_fields", str(exc)) from exc
    return data


def _plainly_safe(raw: bytes) -> bool:
    """Whether ``raw`` cannot hold what :func:`check_json` refuses, seen from its bytes
    (most bodies, so the walk is skipped): a lone surrogate can only come from a
    ``\\u`` escape (UTF-8 cannot carry one), and nesting needs a bracket per level."""
    return b"\\u" not in raw and raw.count(b"{") + raw.count(b"[") <= MAX_JSON_DEPTH


async def read_model(request: Request, model: type[_M]) -> _M:
    """Parse and validate a JSON object body (400 malformed, 422 invalid).

    A body :func:`read_json` would accept unchecked is parsed by pydantic straight from
    its bytes, without building the dict first; any failure there is answered by the path
    below, so every refusal keeps its code and message.
    """
    raw = await request.body()
    if _plainly_safe(raw):
        try:
            return model.model_validate_json(raw)
        except ValidationError:
            pass
    return await read_model_checked(request, model)


async def read_model_checked(request: Request, model: type[_M]) -> _M:
    """:func:`read_model` the long way, which says what is wrong with a body:
    :func:`read_json`'s checks, then the model."""
    data = await read_json(request)
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_fields",
                       f"the request body must be a JSON object, not {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from exc


def _decider(request: Request, body: RespondBody | RespondBatchBody) -> tuple[str, str | None]:
    """Who decides over HTTP: ``(actor, approver_id)``.

    The actor is the key's identity, never only a name the caller fills in. An admin key
    (a UI's backend that signs its own users in) may name the person it acts for
    (``actor``, and ``approver_id`` to be checked against the approvers); a scoped key
    may name only itself. Where approvers are named, a caller that names nobody is
    refused by the gateway.
    """
    key = caller(request.scope)
    approver = (body.approver_id or "").strip() or None
    person = (body.actor or "").strip() or approver
    if not key.admin:
        for named in (approver, person):
            if named is not None and named != key.identity:
                raise ApiError(403, "approver_not_allowed",
                               f"API key {key.identity!r} decides as itself; it may not act "
                               f"as {named!r}")
        return key.actor, approver
    if person is None or person == key.identity:
        return key.actor, approver
    return f"{person} ({key.actor})", approver


def _query(request: Request, name: str, *, required: bool = True) -> str | None:
    value = request.query_params.get(name)
    if value is None or not value.strip():
        if required:
            raise ApiError(422, "invalid_fields", f"the query parameter {name!r} is required",
                           {"errors": [{"loc": ["query", name], "msg": "Field required",
                                        "type": "missing"}]})
        return None
    return value.strip()


#: Starlette's JSON options, in one encoder: its ``JSONResponse`` calls ``json.dumps``
#: with them, which builds a new encoder for every answer.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=None,
                            separators=(",", ":"))


class _Json(JSONResponse):
    """Starlette's JSON answer, encoded by the one shared encoder."""

    def render(self, content: Any) -> bytes:
        return _ENCODER.encode(content).encode("utf-8")


def _ok(data: Any, status: int = 200) -> JSONResponse:
    return _Json(data, status_code=status)


def _done(data: dict[str, Any], message: str | None = None) -> JSONResponse:
    """An answer with the original server's ``success`` (and ``message``) fields added, so
    its clients' checks keep working."""
    return _ok({"success": True, **({"message": message} if message else {}), **data})


def _seed_request(result: dict[str, Any]) -> dict[str, Any]:
    """A request as the original server listed it in ``pending_requests``: ``id`` and
    options as plain label strings, besides the poll result's fields."""
    return {**result, "id": result["request_id"],
            "options": [o["label"] for o in result["options"]]}


def simple_decision(record: RequestRecord, approved: bool | None,
                    response: str | None) -> dict[str, Any]:
    """Turn the simple ``{approved, response}`` form into a LangChain decision.

    With options, ``response`` names the chosen label (``respond``); ``approved: true``
    alone picks the one option that means approval (:func:`approval_of`: several or
    none is a 422 listing them); ``approved: false`` alone, or with a reason that is not
    a label, rejects ("not approved", the reason kept). A label that contradicts
    ``approved`` is refused rather than guessed at.

    Raises:
        ApiError: 422 when the form cannot be read as one decision.
    """
    request = record.request
    if request.options:
        chosen = next((o for o in request.options if o.label == response), None)
        if chosen is not None:
            if approved is not None and chosen.approved != approved:
                meaning = "approves" if chosen.approved else "does not approve"
                raise ApiError(422, "invalid_decision",
                               f"option {response!r} {meaning}, which contradicts "
                               f"approved={str(approved).lower()}")
            return {"type": "respond", "message": response}
        if approved is True and response is None:
            return approval_of(request)
        if approved is None and response is None:
            raise ApiError(422, "invalid_decision",
                           "send 'response' with one of the options' labels, or "
                           "approved=false with a reason",
                           {"options": [o.label for o in request.options]})
        if approved is not False:
            raise ApiError(422, "invalid_decision",
                           f"{response!r} is not one of the options: "
                           f"{', '.join(repr(o.label) for o in request.options)}",
                           {"options": [o.label for o in request.options]})
    if approved is False:
        return {"type": "reject", **({"message": response} if response else {})}
    if request.type in (RequestKind.INPUT, RequestKind.FEEDBACK, RequestKind.ANNOTATION):
        if response is None:
            raise ApiError(422, "invalid_decision",
                           "an input request is answered with 'response' (or approved=false)")
        return {"type": "respond", "message": response}
    if approved is True:
        return {"type": "approve"}
    if response is not None:
        return {"type": "respond", "message": response}
    raise ApiError(422, "invalid_decision",
                   "send 'decision', or 'approved' (with 'response' for a reason or a label)")


class _Routes:
    """Route handlers bound to one gateway and configuration."""

    def __init__(self, loopgate: Loopgate, config: HitlConfig) -> None:
        self.gw = loopgate
        self.config = config

    # sessions -------------------------------------------------------------------------

    async def register(self, request: Request) -> Response:
        body = await read_model(request, RegisterBody)
        key = caller(request.scope)
        client_id = body.client_id
        if not key.admin:
            if not client_id and len(key.clients) == 1:
                client_id = next(iter(key.clients))
            if (client_id and client_id not in key.clients) \
                    or not key.may_use(body.session_id, client_id):
                raise ApiError(403, "forbidden",
                               f"API key {key.identity!r} may register only its own sessions "
                               f"(sessions {sorted(key.sessions)}, clients "
                               f"{sorted(key.clients)})")
            try:
                await own_session(self.gw, key, body.session_id)
            except SessionNotFound:
                if await self._exists(body.session_id):
                    # another tenant's id, active or not: taken, and not ours to replace
                    raise SessionExists(body.session_id) from None
        session = await self.gw.aregister_session(
            body.session_id, client_id, body.telegram_id, body.approvers, body.metadata)
        return _done({**session_out(session), "status": "registered"},
                     "Session registered successfully")

    async def status(self, request: Request) -> Response:
        session_id = _query(request, "session_id")
        assert session_id is not None
        session = await own_session(self.gw, caller(request.scope), session_id)
        pending = await self.gw.apending(session_id=session_id)
        return _ok({**session_out(session, pending=len(pending)), "id": session.session_id})

    async def deactivate(self, request: Request) -> Response:
        body = await read_model(request, DeactivateBody)
        await own_session(self.gw, caller(request.scope), body.session_id)
        session = await self.gw.adeactivate_session(body.session_id)
        return _done({**session_out(session), "status": "deactivated"},
                     "Session deactivated successfully")

    async def _exists(self, session_id: str) -> bool:
        try:
            await self.gw.asession(session_id)
        except SessionNotFound:
            return False
        return True

    # requests -------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        body = await read_model(request, RequestBody)
        key = caller(request.scope)
        session = await own_session(self.gw, key, body.session_id)
        client_id = filing_client(key, session, body.client_id)
        if not session.active:
            raise ApiError(409, "session_inactive",
                           f"session {body.session_id!r} is deactivated; register it again",
                           {"session_id": body.session_id})
        callback_url = str(body.callback_url) if body.callback_url is not None else None
        if callback_url and not self.config.webhook_secret:
            raise ApiError(422, "invalid_fields",
                           "callback_url needs a signing secret on this server "
                           "(LOOPGATE_WEBHOOK_SECRET); callbacks are never sent unsigned",
                           {"errors": [{"loc": ["body", "callback_url"],
                                        "msg": "callbacks are off on this server",
                                        "type": "not_configured"}]})
        if callback_url and not any(n.name == CALLBACK_CHANNEL for n in self.gw.notifiers):
            raise ApiError(503, "not_configured", "callbacks are not set up on this server")
        if callback_url:
            try:
                await self.config.callback_policy.check(callback_url)
            except ValueError as exc:
                raise ApiError(422, "invalid_fields", str(exc), {"errors": [
                    {"loc": ["body", "callback_url"], "msg": str(exc),
                     "type": "callback_not_allowed"}]}) from exc
        options = [o.model_dump(exclude_none=True) if isinstance(o, BaseModel) else o
                   for o in body.options]
        record = await self.gw.asubmit(
            body.message, kind=body.request_type, options=options, metadata=body.metadata,
            session_id=body.session_id, client_id=client_id,
            timeout=body.timeout_seconds, callback_url=callback_url,
        )
        return _done(poll_result(record))

    async def poll(self, request: Request) -> Response:
        request_id = _query(request, "request_id")
        assert request_id is not None
        wait = _wait(request.query_params.get("wait"), self.config.max_wait)
        record = await own_request(self.gw, caller(request.scope), request_id)
        if record.pending and wait > 0:
            try:
                record = await self.gw.await_decision(request_id, timeout=wait)
            except TimeoutError:
                record = await self.gw.aget(request_id)
        return _ok(poll_result(record))

    async def pending(self, request: Request) -> Response:
        session_id = _query(request, "session_id", required=False)
        limit, after = page_params(request)
        try:
            records, nxt = await pending_page(self.gw, caller(request.scope),
                                              session_id=session_id, limit=limit, after=after)
        except RequestNotFound as exc:
            if after is None or exc.request_id != after:
                raise
            raise _bad_cursor(after) from None
        results = [poll_result(r) for r in records]
        return _ok({"count": len(records), "requests": results,
                    "pending_requests": [_seed_request(r) for r in results], "next": nxt})

    async def cancel(self, request: Request) -> Response:
        body = await read_model(request, CancelBody)
        key = caller(request.scope)
        await own_request(self.gw, key, body.request_id)
        record = await self.gw.acancel(body.request_id, actor=key.actor, reason=body.reason)
        return _done(poll_result(record), "Request canceled successfully")

    async def respond(self, request: Request) -> Response:
        body = await read_model(request, RespondBody)
        key = caller(request.scope)
        record = await own_request(self.gw, key, body.request_id)
        actor, approver_id = _decider(request, body)
        decision = _decision_of(record, body.decision, body.approved, body.response,
                                body.grant)
        _check_grant_scope(key, record, decision)
        decided = await self.gw.arespond(
            body.request_id, decision, actor=actor, channel="http", approver_id=approver_id,
            record=record)  # read once: the tenancy check above just read it
        return _ok(respond_result(decided))

    async def respond_batch(self, request: Request) -> Response:
        body = await read_model(request, RespondBatchBody)
        key = caller(request.scope)
        for pending in await self.gw.apending(thread_id=body.thread_id):
            await own_request(self.gw, key, pending.id)  # every one must be the caller's
        actor, approver_id = _decider(request, body)
        for decision in body.decisions:
            if isinstance(decision, dict) and decision.get("grant") is not None:
                raise ApiError(422, "invalid_decision", "grants are made one request at a "
                               "time (POST /hitl/respond), not in a batch")
        decided = await self.gw.arespond_batch(
            body.thread_id, {"decisions": body.decisions}, actor=actor, channel="http",
            approver_id=approver_id)
        return _ok({"count": len(decided), "requests": [respond_result(r) for r in decided]})

    async def webhook_decision(self, request: Request) -> Response:
        secret = self.config.webhook_secret
        if not secret:
            raise ApiError(503, "not_configured",
                           "webhook decisions are off: the server has no LOOPGATE_WEBHOOK_SECRET")
        request_id = str(request.path_params["request_id"])
        raw = await request.body()
        signed = request.headers.get(SIGNATURE_HEADER) is not None
        if signed:
            try:
                message_id, at = verify_decision_signature(
                    raw, request.headers, secret, method=request.method,
                    path=request.url.path)
            except SignatureError as exc:
                raise ApiError(403, "forbidden", str(exc)) from exc
            if not await self.config.replay_guard.first_use(
                    message_id, at + DEFAULT_TOLERANCE + 1):
                raise ApiError(409, "replayed",
                               f"signed decision {message_id!r} was already used; sign each "
                               "decision with a new webhook-id")
        body = await read_model(request, WebhookDecisionBody)
        if not signed:
            if not body.token:
                raise ApiError(401, "unauthorized",
                               "send the request's decision token as 'token', or sign the body "
                               f"({SIGNATURE_HEADER})",
                               headers={"WWW-Authenticate": "Signature"})
            try:
                verify_decision_token(secret, request_id, body.token)
            except SignatureError as exc:
                raise ApiError(403, "forbidden", str(exc)) from exc
        record = await self.gw.aget(request_id)
        if body.decision is None and body.type is not None:
            inline: dict[str, Any] = {"type": body.type, **(body.model_extra or {})}
            if body.response is not None:
                inline.setdefault("message", body.response)
            decision = _decision_of(record, inline, body.approved, None, body.grant)
        else:
            decision = _decision_of(record, body.decision, body.approved, body.response,
                                    body.grant)
        actor = f"webhook:{body.actor.strip()}" if body.actor and body.actor.strip() \
            else "webhook"
        decided = await self.gw.arespond(request_id, decision, actor=actor, channel="webhook",
                                         approver_id=body.approver_id, record=record)
        return _ok(respond_result(decided))


    # audit ----------------------------------------------------------------------------

    async def audit(self, request: Request) -> Response:
        key = caller(request.scope)
        request_id = _query(request, "request_id", required=False)
        session_id = _query(request, "session_id", required=False)
        if request_id is not None:
            await own_request(self.gw, key, request_id)  # 404 unknown or not ours
        if session_id is not None:
            await own_session(self.gw, key, session_id)
        limit = _count(request.query_params.get("limit"), "limit", default=100,
                       cap=MAX_AUDIT_EVENTS)
        event = _query(request, "event", required=False)
        if key.admin:  # the store reads the tail itself
            events = await self.gw.aaudit(request_id=request_id, session_id=session_id,
                                          event=event, limit=limit, newest=True)
        else:
            seen: dict[tuple[str, str], bool] = {}
            events = [e for e in await self.gw.aaudit(
                request_id=request_id, session_id=session_id, event=event)
                if await self._visible(key, e, seen)]
            events = events[-limit:] if limit else []
        return _ok(AuditOut(count=len(events), events=events).model_dump(mode="json"))

    async def _visible(self, key: ApiKey, event: AuditEvent,
                       seen: dict[tuple[str, str], bool]) -> bool:
        """Whether a scoped key may read an event: it belongs to one of the key's sessions
        or requests (events of neither, such as a graph's own, are for admin keys)."""
        if event.session_id is not None:
            which, ident = "session", event.session_id
        elif event.request_id is not None:
            which, ident = "request", event.request_id
        else:
            return False
        if (which, ident) not in seen:
            try:
                if which == "session":
                    await own_session(self.gw, key, ident)
                else:
                    await own_request(self.gw, key, ident)
                seen[(which, ident)] = True
            except (SessionNotFound, RequestNotFound):
                seen[(which, ident)] = False
        return seen[(which, ident)]

    # grants ---------------------------------------------------------------------------

    async def grants(self, request: Request) -> Response:
        key = caller(request.scope)
        session_id = _query(request, "session_id", required=False)
        if session_id is not None:
            await own_session(self.gw, key, session_id)  # 404 unknown or not ours
        every = (_query(request, "all", required=False) or "false").lower()
        if every not in ("true", "false", "1", "0"):
            raise ApiError(422, "invalid_fields", "'all' must be true or false")
        found = [g for g in await self.gw.agrants(
            tool=_query(request, "tool", required=False), session_id=session_id,
            live=every in ("false", "0")) if key.may_use(g.session_id, g.client_id)]
        return _ok({"count": len(found), "grants": [g.model_dump(mode="json")
                                                    for g in found]})

    async def revoke_grant(self, request: Request) -> Response:
        body = await read_model(request, RevokeGrantBody)
        key = caller(request.scope)
        await own_grant(self.gw, key, body.grant_id)
        revoked = await self.gw.arevoke_grant(body.grant_id, actor=key.actor, channel="http")
        return _ok(revoked.model_dump(mode="json"))


def _decision_of(record: RequestRecord, decision: dict[str, Any] | None,
                 approved: bool | None, response: str | None,
                 grant: dict[str, Any] | None = None) -> dict[str, Any]:
    if not record.pending:
        return decision or {"type": "approve"}  # the gateway answers AlreadyDecided
    if decision is not None:
        if approved is not None or response is not None:
            raise ApiError(422, "invalid_fields",
                           "send either 'decision' or 'approved'/'response', not both")
        chosen = decision
    else:
        chosen = simple_decision(record, approved, response)
    if grant is None:
        return chosen
    if chosen.get("grant") is not None:
        raise ApiError(422, "invalid_fields",
                       "send the grant once: in 'decision' or beside it, not both")
    return {**chosen, "grant": grant}


def _check_grant_scope(key: ApiKey, record: RequestRecord, decision: dict[str, Any]) -> None:
    """A scoped key may not make a grant wider than its scope: ``everyone`` reaches every
    session of the request's client, so the key must hold that client."""
    grant = decision.get("grant")
    if key.admin or not isinstance(grant, dict) or grant.get("scope") != "everyone":
        return
    if record.client_id is None or record.client_id not in key.clients:
        raise ApiError(403, "forbidden",
                       f"API key {key.identity!r} may make 'everyone' grants only for its own "
                       "clients; use scope 'session' or 'thread'")


MAX_AUDIT_EVENTS = 1000
"""The most events one ``/hitl/audit`` answer holds (the newest)."""


def _count(raw: str | None, name: str, *, default: int, cap: int) -> int:
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= cap:
        raise ApiError(422, "invalid_fields", f"{name!r} must be a whole number from 0 to {cap}",
                       {"errors": [{"loc": ["query", name], "msg": "out of range",
                                    "type": "value_error"}]})
    return value


def page_params(request: Request, *, default: int = MAX_PAGE) -> tuple[int, str | None]:
    """``limit`` (1 to :data:`MAX_PAGE`, default ``default``) and the cursor, sent as
    ``cursor`` or ``after`` (the ``next`` of the previous page).

    Raises:
        ApiError: 422 for a limit that is not a whole number in range, or two cursors
            that disagree.
    """
    raw = request.query_params.get("limit")
    limit = default
    if raw is not None and raw.strip():
        try:
            limit = int(raw.strip())
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_PAGE:
            raise ApiError(422, "invalid_fields",
                           f"'limit' must be a whole number from 1 to {MAX_PAGE}",
                           {"errors": [{"loc": ["query", "limit"],
                                        "msg": f"not a whole number from 1 to {MAX_PAGE}",
                                        "type": "value_error"}]})
    cursors = {value.strip() for name in ("cursor", "after")
               for value in request.query_params.getlist(name) if value.strip()}
    if len(cursors) > 1:
        raise ApiError(422, "invalid_fields",
                       "send one cursor: 'cursor' and 'after' name the same thing",
                       {"errors": [{"loc": ["query", "cursor"], "msg": "more than one cursor",
                                    "type": "value_error"}]})
    return limit, (cursors.pop() if cursors else None)


def _bad_cursor(cursor: str) -> ApiError:
    return ApiError(422, "invalid_fields",
                    f"cursor {cursor[:80]!r} is not a request of an earlier page; start "
                    "again without one",
                    {"errors": [{"loc": ["query", "cursor"], "msg": "unknown cursor",
                                 "type": "value_error"}]})


def _wait(raw: str | None, cap: float) -> float:
    if raw is None or not raw.strip():
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isnan(value) or value < 0 or math.isinf(value):
        raise ApiError(422, "invalid_fields", "'wait' must be a number of seconds >= 0",
                       {"errors": [{"loc": ["query", "wait"], "msg": "not a non-negative number",
                                    "type": "value_error"}]})
    return min(value, cap)


def hitl_routes(loopgate: Loopgate, config: HitlConfig) -> list[Route]:
    """The ``/hitl`` routes for one gateway, the busiest first: the router tries each
    route's pattern in turn, and no two of these match the same path."""
    r = _Routes(loopgate, config)
    return [
        Route("/hitl/respond", Endpoint(r.respond), methods=["POST"]),
        Route("/hitl/request", Endpoint(r.create), methods=["POST"]),
        Route("/hitl/poll", Endpoint(r.poll), methods=["GET"]),
        Route("/hitl/pending", Endpoint(r.pending), methods=["GET"]),
        Route("/hitl/register", Endpoint(r.register), methods=["POST"]),
        Route("/hitl/status", Endpoint(r.status), methods=["GET"]),
        Route("/hitl/deactivate", Endpoint(r.deactivate), methods=["POST"]),
        Route("/hitl/cancel", Endpoint(r.cancel), methods=["POST"]),
        Route("/hitl/respond/batch", Endpoint(r.respond_batch), methods=["POST"]),
        Route("/hitl/webhook/decision/{request_id}", Endpoint(r.webhook_decision),
              methods=["POST"]),
        Route("/hitl/audit", Endpoint(r.audit), methods=["GET"]),
        Route("/hitl/grants", Endpoint(r.grants), methods=["GET"]),
        Route("/hitl/grants/revoke", Endpoint(r.revoke_grant), methods=["POST"]),
    ]
