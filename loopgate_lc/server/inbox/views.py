"""The inbox's routes: sign-in, the pending list, a request, history, decisions, events.

Every page is rendered on the server from Jinja2 templates with autoescape on; the only
script is ``static/inbox.js`` (countdowns and the live update), served from this package,
and the Content-Security-Policy allows no other. Reads are scoped with the tenancy
module's own checks (:func:`own_request`, :meth:`ApiKey.may_use`); every decision goes
through ``Loopgate.arespond`` with the signed-in identity as actor and approver, so
exactly-once, approver lists and the audit are the gateway's, as on every channel.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loopgate_lc.errors import (
    AlreadyDecided,
    ApproverNotAllowed,
    InvalidDecision,
    LoopgateError,
    RequestNotFound,
)
from loopgate_lc.gateway import Loopgate
from loopgate_lc.locations import STORE_NOTE, store_command
from loopgate_lc.policy import RiskLevel
from loopgate_lc.quorum import tally_text
from loopgate_lc.schema import ApprovalRequest, RequestKind, Status
from loopgate_lc.server.inbox.auth import (
    COOKIE_NAME,
    InboxSession,
    LinkInvalid,
    SessionSigner,
    peek_link,
    use_link,
)
from loopgate_lc.server.inbox.render import (
    args_schema,
    decided_words,
    json_tree,
    when,
)
from loopgate_lc.server.tenancy import ApiKey, ApiKeys, own_request
from loopgate_lc.signing import MemoryReplayGuard, ReplayGuard
from loopgate_lc.stores.base import RequestRecord

__all__ = ["CSP", "InboxConfig", "inbox_routes"]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
"""No inline script or style, nothing from elsewhere, no framing."""

_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # sign-in link tokens never leave in a Referer; same-origin keeps Origin on form posts
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
_INPUT_KINDS = (RequestKind.INPUT, RequestKind.FEEDBACK, RequestKind.ANNOTATION)
_MAX_FIELD = 100_000
_STREAM_SECONDS = 600.0  # an event stream ends after this; EventSource reconnects
_MAX_ID = 200  # longer ids and filter values are cut, not looked up
_SCAN_BATCHES = 10  # store reads one listing page may make (see _Inbox._page_of)


@dataclass
class InboxConfig:
    """What the inbox needs besides the gateway.

    Attributes:
        keys: The server's API keys: who may sign in and what each may see.
        signer: Signs session cookies and CSRF tokens.
        replay_guard: Remembers used sign-in links (the app passes its store-backed guard,
            so a link is used once across processes).
        page_size: Requests per page.
        refresh: Seconds between store reads for live updates (decisions made by other
            processes; this process's own wake open pages at once).
    """

    keys: ApiKeys
    signer: SessionSigner
    replay_guard: ReplayGuard = field(default_factory=MemoryReplayGuard)
    page_size: int = 20
    refresh: float = 0.5


class _SecurityHeaders:
    """Every inbox response (pages, static files, events) carries the CSP and friends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for name, value in _HEADERS.items():
                    if name.lower().encode() not in present:
                        headers.append((name.lower().encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class _Inbox:
    def __init__(self, gateway: Loopgate, config: InboxConfig) -> None:
        self.gw = gateway
        self.config = config
        self.signer = config.signer
        self.env = Environment(loader=PackageLoader("loopgate_lc.server.inbox", "templates"),
                               autoescape=select_autoescape(default=True,
                                                            default_for_string=True))
        self.env.globals.update(when=when)

    # --- who is asking ----------------------------------------------------------------

    def _session(self, request: Request) -> InboxSession | None:
        return self.signer.load(request.cookies.get(COOKIE_NAME))

    def _key(self, identity: str | None) -> ApiKey | None:
        if not identity:
            return None
        if not self.config.keys:
            # No keys: the API is open to everyone on this host, and so is the inbox to
            # whoever holds a link; the name is kept for the audit and approver lists.
            return ApiKey(identity, "-", admin=True)
        return self.config.keys.named(identity)

    def _signed_in(self, request: Request) -> tuple[InboxSession, ApiKey] | None:
        session = self._session(request)
        key = self._key(session.identity if session else None)
        return None if session is None or key is None else (session, key)

    def _page(self, request: Request, template: str, session: InboxSession | None,
              status: int = 200, **context: Any) -> Response:
        session = session or self._session(request) or self.signer.new(None)
        html = self.env.get_template(template).render(
            csrf=self.signer.csrf(session),
            me=session.identity if self._key(session.identity) is not None else None,
            **context)
        response = HTMLResponse(html, status_code=status,
                                headers={"Cache-Control": "no-store"})
        self._set_cookie(request, response, session)
        return response

    def _set_cookie(self, request: Request, response: Response,
                    session: InboxSession) -> None:
        response.set_cookie(COOKIE_NAME, self.signer.dump(session),
                            max_age=max(1, int(session.expires - time.time())),
                            path="/inbox", httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")

    def _to_signin(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/inbox/signin?" + urlencode({"next": target}), 303)

    async def _form(self, request: Request) -> tuple[FormData, InboxSession | None] | Response:
        """The posted form, after the same-origin and CSRF checks (403 otherwise)."""
        origin = request.headers.get("origin")
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin is not None and origin.rstrip("/").lower() != own.lower():
            return self._forbidden(request, "this form was posted from another site")
        try:
            form = await request.form(max_files=0, max_fields=20, max_part_size=_MAX_FIELD)
        except Exception:  # a malformed body is the poster's problem, not a 500
            return self._forbidden(request, "the form could not be read", status=400)
        session = self._session(request)
        token = form.get("csrf")
        if not self.signer.check_csrf(session, token if isinstance(token, str) else None):
            return self._forbidden(request, "the form's security token is missing or "
                                   "stale; reload the page and try again")
        return form, session

    def _forbidden(self, request: Request, message: str, status: int = 403) -> Response:
        return self._page(request, "error.html", None, status=status, title="Not accepted",
                          message=message)

    # --- sign-in ----------------------------------------------------------------------

    def _signin_page(self, request: Request, nxt: str, *, status: int = 200,
                     error: str | None = None) -> Response:
        """The sign-in page, naming the command that makes a one-time link to this server
        for its operator: the address this browser used (the link must come back here),
        and, on a server with no API keys (which answers anyone everything), its program
        and store too; one with keys tells a stranger on this page neither. No command for
        a store in memory: no other process sees it."""
        here = shlex.quote(str(request.base_url).rstrip("/"))
        link = store_command(f"inbox-link --as NAME --url {here}", self.gw.store_url,
                             private=not self.config.keys)
        return self._page(request, "signin.html", None, status=status, next=nxt,
                          keys=bool(self.config.keys), error=error, link=link,
                          store_note=STORE_NOTE)

    async def signin(self, request: Request) -> Response:
        nxt = _safe_next(request.query_params.get("next"))
        if request.method == "GET":
            return self._signin_page(request, nxt)
        got = await self._form(request)
        if isinstance(got, Response):
            return got
        form, _ = got
        nxt = _safe_next(_field(form, "next"))
        presented = _field(form, "key").strip()
        key = self.config.keys.find(presented) if presented else None
        error = None
        if not self.config.keys:
            error = "this server has no API keys: sign in with a one-time link"
        elif key is None:
            error = "that API key is not valid"
        elif key.name is None:
            error = "that API key has no name; the inbox signs in named keys " \
                    "(LOOPGATE_API_KEYS=name=key)"
        if error is not None or key is None or key.name is None:
            return self._signin_page(request, nxt, status=403, error=error)
        return self._start(request, key.name, nxt)

    def _start(self, request: Request, identity: str, nxt: str) -> Response:
        response = RedirectResponse(nxt, 303)
        self._set_cookie(request, response, self.signer.new(identity))
        return response

    async def link(self, request: Request) -> Response:
        """GET shows whom the link signs in (link previews must not use it up); POST
        uses it."""
        token = str(request.path_params["token"])
        if request.method == "GET":
            try:
                identity, expires = await peek_link(self.gw.store, token)
            except LinkInvalid as exc:
                return self._page(request, "error.html", None, status=410,
                                  title="Sign-in link", message=str(exc))
            return self._page(request, "link.html", None, identity=identity,
                              expires=expires, token=token)
        got = await self._form(request)
        if isinstance(got, Response):
            return got
        try:
            identity = await use_link(self.gw.store, token, self.config.replay_guard)
        except LinkInvalid as exc:
            return self._page(request, "error.html", None, status=410,
                              title="Sign-in link", message=str(exc))
        if self._key(identity) is None:
            return self._page(request, "error.html", None, status=403, title="Sign-in link",
                              message=f"no API key named {identity!r} is configured on "
                                      "this server")
        return self._start(request, identity, "/inbox/")

    async def signout(self, request: Request) -> Response:
        got = await self._form(request)
        if isinstance(got, Response):
            return got
        response = RedirectResponse("/inbox/signin", 303)
        response.delete_cookie(COOKIE_NAME, path="/inbox")
        return response

    # --- pages ------------------------------------------------------------------------

    async def _page_of(self, key: ApiKey, chosen: dict[str, str], after: str | None, *,
                       pending: bool) -> tuple[list[RequestRecord], str | None]:
        """One page of the requests ``key`` may decide, newest first, and the cursor of
        the next page (None at the end).

        The store applies the tenant scope and the filters in its own query and hands
        back batches; only the approver lists are checked here, on each batch. A page
        reads at most ``_SCAN_BATCHES`` batches: past that it ends early with a cursor,
        so a key that may decide few of many requests still gets bounded pages.
        """
        size = self.config.page_size
        shown: list[RequestRecord] = []
        cursor = after
        for _ in range(_SCAN_BATCHES):
            batch = await self.gw.store.list_requests(
                status=Status.PENDING if pending else None, decided=not pending,
                session_id=chosen["session"] or None, tool=chosen["tool"] or None,
                risk=chosen["risk"] or None, scope=key.scope, newest_first=True,
                limit=size + 1, after=cursor)
            for record, ok in zip(batch, await self.gw.amay_decide(batch, key.identity),
                                  strict=True):
                if ok:
                    if len(shown) == size:  # one more exists: this page ends here
                        return shown, shown[-1].id
                    shown.append(record)
            if len(batch) <= size:
                return shown, None
            cursor = batch[-1].id
        # scanned enough for one page: say where to go on from (more may follow)
        return shown, cursor

    async def pending_list(self, request: Request) -> Response:
        return await self._listing(request, "list.html", pending=True)

    async def history(self, request: Request) -> Response:
        return await self._listing(request, "history.html", pending=False)

    async def _listing(self, request: Request, template: str, *, pending: bool) -> Response:
        who = self._signed_in(request)
        if who is None:
            return self._to_signin(request)
        session, key = who
        chosen = _filters(request)
        after = (request.query_params.get("after") or "").strip()[:_MAX_ID] or None
        if after is not None:
            try:
                await own_request(self.gw, key, after)
            except RequestNotFound:
                return self._page(request, "error.html", session, status=404,
                                  title="Not found", message="that page starts after a "
                                  "request you may not see; start again from the first page")
        records, nxt = await self._page_of(key, chosen, after, pending=pending)
        base = {k: v for k, v in chosen.items() if v}
        path = request.url.path
        events = None
        if pending:
            events = "/inbox/events?" + urlencode({**base, **({"after": after} if after
                                                              else {})})
        return self._page(request, template, session, rows=[_row(r) for r in records],
                          count=len(records), more=nxt is not None,
                          next_url=f"{path}?" + urlencode({**base, "after": nxt}) if nxt
                          else None,
                          first_url=(f"{path}?" + urlencode(base) if base else path)
                          if after else None,
                          chosen=chosen, risks=[r.value for r in RiskLevel], events=events)

    def _not_yours(self, request: Request, session: InboxSession, key: ApiKey,
                   request_id: str, reason: str | None = None) -> Response:
        return self._page(request, "error.html", session, status=403,
                          title="Not yours to decide",
                          message=reason or f"request {request_id} names its approvers, and "
                          f"{key.identity} is not one of them")

    async def detail(self, request: Request, *, error: dict[str, str] | None = None,
                     status: int = 200, typed: dict[str, str] | None = None,
                     late: str | None = None, refused: str | None = None) -> Response:
        who = self._signed_in(request)
        if who is None:
            return self._to_signin(request)
        session, key = who
        request_id = str(request.path_params["request_id"])
        try:
            record = await own_request(self.gw, key, request_id)
        except RequestNotFound:
            return self._page(request, "error.html", session, status=404, title="Not found",
                              message=f"there is no request {request_id!r} you may see")
        if refused is not None or not (await self.gw.amay_decide([record], key.identity))[0]:
            return self._not_yours(request, session, key, record.id, refused)
        payload = record.request
        can = _controls(payload)
        # an error about a control this request does not show goes to the top of the form
        error = {(k if can.get(k) else "form"): v for k, v in (error or {}).items()}
        audit = await self.gw.aaudit(request_id=record.id)
        schema = args_schema(record)
        decided = None if record.pending else decided_words(
            record.status.value, record.decided_by, record.channel, record.decided_at)
        return self._page(
            request, "request.html", session, status=status, r=record, q=payload,
            row=_row(record), args=json_tree(payload.args) if payload.args is not None
            else None,
            metadata=json_tree(payload.metadata) if payload.metadata else None,
            decision=json_tree(record.decision) if record.decision else None,
            audit=[(e, json.dumps(e.details, default=str, ensure_ascii=False))
                   for e in audit],
            schema=json.dumps(schema, indent=2) if schema else None,
            args_text=(typed or {}).get("args") or json.dumps(payload.args or {}, indent=2,
                                                             ensure_ascii=False),
            typed=typed or {}, error=error, late=late, decided=decided, can=can,
            votes=tally_text(record),
            events="/inbox/events?" + urlencode({"request": record.id}) if record.pending
            else None)

    async def decide(self, request: Request) -> Response:
        got = await self._form(request)
        if isinstance(got, Response):
            return got
        form, _ = got
        who = self._signed_in(request)
        if who is None:
            return self._to_signin(request)
        _, key = who
        request_id = str(request.path_params["request_id"])
        try:
            record = await own_request(self.gw, key, request_id)
        except RequestNotFound:
            return await self.detail(request)
        action = _field(form, "action")
        typed = {"message": _field(form, "message"), "args": _field(form, "args")}
        try:
            decision = _decision(record.request, action, form)
        except _FieldError as exc:
            return await self.detail(request, error={exc.field: str(exc)}, status=422,
                                     typed=typed)
        try:
            await self.gw.arespond(record.id, decision, actor=key.actor, channel="inbox",
                                   approver_id=key.identity)
        except AlreadyDecided as exc:
            late = "Too late: this request was already " + decided_words(
                exc.status, exc.decided_by, exc.channel, exc.decided_at) + "."
            return await self.detail(request, late=late, status=409)
        except ApproverNotAllowed as exc:  # refused and audited by the gateway
            return await self.detail(request, refused=str(exc))
        except InvalidDecision as exc:
            return await self.detail(request, error={action or "form": str(exc)},
                                     status=422, typed=typed)
        except LoopgateError as exc:
            return await self.detail(request, error={"form": str(exc)}, status=400,
                                     typed=typed)
        return RedirectResponse(f"/inbox/r/{record.id}", 303)

    # --- live updates -----------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        who = self._signed_in(request)
        if who is None:
            return Response("sign in first", status_code=401, media_type="text/plain")
        _, key = who
        request_id = request.query_params.get("request")
        stream: AsyncIterator[str]
        if request_id:
            try:
                record = await own_request(self.gw, key, request_id)
            except RequestNotFound:
                return Response("no such request", status_code=404, media_type="text/plain")
            if not (await self.gw.amay_decide([record], key.identity))[0]:
                return Response("not yours to decide", status_code=403,
                                media_type="text/plain")
            stream = self._watch_one(record)
        else:
            after = (request.query_params.get("after") or "").strip()[:_MAX_ID] or None
            if after is not None:
                try:
                    await own_request(self.gw, key, after)
                except RequestNotFound:
                    return Response("no such request", status_code=404,
                                    media_type="text/plain")
            stream = self._watch_list(key, _filters(request), after)
        return StreamingResponse(stream, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    async def _watch_one(self, record: RequestRecord) -> AsyncIterator[str]:
        yield "retry: 1000\n\n"
        deadline = time.monotonic() + _STREAM_SECONDS
        quiet = 0.0
        while record.pending and time.monotonic() < deadline:
            # woken at once by a decision in this process; each call reads the store
            # first, so one made by another process sharing it is seen within `refresh`
            try:
                record = await self.gw.await_decision(record.id, timeout=self.config.refresh)
            except TimeoutError:
                quiet += self.config.refresh
                if quiet >= 15:
                    quiet = 0.0
                    yield ": waiting\n\n"
        if not record.pending:
            data = {"status": record.status.value, "decided_by": record.decided_by,
                    "channel": record.channel,
                    "decided_at": record.decided_at.isoformat() if record.decided_at else None,
                    "text": "Decided: " + decided_words(record.status.value, record.decided_by,
                                                        record.channel, record.decided_at)}
            yield f"event: decided\ndata: {json.dumps(data)}\n\n"

    async def _watch_list(self, key: ApiKey, chosen: dict[str, str],
                          after: str | None) -> AsyncIterator[str]:
        """Say when the page on screen would change: the same page read again."""

        async def page() -> set[str]:
            return {r.id for r in (await self._page_of(key, chosen, after, pending=True))[0]}

        yield "retry: 1000\n\n"
        seen = await page()
        deadline = time.monotonic() + _STREAM_SECONDS
        quiet = 0.0
        while time.monotonic() < deadline:
            await asyncio.sleep(self.config.refresh)
            now = await page()
            if now != seen:
                data = {"added": sorted(now - seen), "gone": sorted(seen - now)}
                yield f"event: changed\ndata: {json.dumps(data)}\n\n"
                seen = now
            quiet += self.config.refresh
            if quiet >= 15:
                quiet = 0.0
                yield ": waiting\n\n"



class _FieldError(ValueError):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _filters(request: Request) -> dict[str, str]:
    """The list filters a page was asked for (each cut to a sane length)."""
    params = request.query_params
    chosen = {name: (params.get(name) or "").strip()[:_MAX_ID]
              for name in ("session", "tool", "risk")}
    if chosen["risk"] not in {r.value for r in RiskLevel}:
        chosen["risk"] = ""
    return chosen


def _safe_next(value: str | None) -> str:
    """Only inbox paths on this server: never an open redirect."""
    if value and value.startswith("/inbox") and "//" not in value and "\\" not in value:
        return value
    return "/inbox/"


def _row(record: RequestRecord) -> dict[str, Any]:
    shown = record.shown
    text = shown.message or shown.description
    confidence = shown.confidence
    return {
        "id": record.id, "kind": record.kind.value, "tool": shown.name or "",
        "risk": shown.risk_level.value if shown.risk_level else "",
        "session": record.session_id or "",
        "text": text if len(text) <= 140 else text[:139] + "…",
        "confidence": f"{confidence:.2f}" if confidence is not None else "",
        "policy": shown.policy or "", "reason": shown.reason,
        "created": record.created_at, "expires": record.expires_at,
        "status": record.status.value, "decided_by": record.decided_by or "",
        "decided_at": record.decided_at, "channel": record.channel or "",
    }


def _controls(request: ApprovalRequest) -> dict[str, bool]:
    allowed = set(request.allowed_decisions)
    asks_input = request.type in _INPUT_KINDS
    return {
        "approve": "approve" in allowed,
        "reject": "reject" in allowed,
        "edit": "edit" in allowed and bool(request.name),
        "respond": "respond" in allowed and not request.options,
        "choose": "respond" in allowed and bool(request.options),
        "input": asks_input,
    }


def _decision(request: ApprovalRequest, action: str, form: FormData) -> dict[str, Any]:
    """The LangChain decision a form asks for; the tool name of an edit is the request's
    own, never a form field."""
    message = _field(form, "message").strip()
    if action == "approve":
        return {"type": "approve"}
    if action == "reject":
        return {"type": "reject", **({"message": message} if message else {})}
    if action == "respond":
        if not message:
            raise _FieldError("respond", "write an answer first")
        return {"type": "respond", "message": message}
    if action == "choose":
        choice = _field(form, "choice")
        if not choice:
            raise _FieldError("choose", "choose one of the options")
        return {"type": "respond", "message": choice}
    if action == "edit":
        raw = _field(form, "args")
        try:
            args = json.loads(raw)
        except ValueError as exc:
            raise _FieldError("edit", f"the arguments are not valid JSON: {exc}") from exc
        if not isinstance(args, dict):
            raise _FieldError("edit", "the arguments must be a JSON object ({...})")
        return {"type": "edit", "edited_action": {"name": request.name or "", "args": args}}
    raise _FieldError("form", f"unknown action {action[:40]!r}")


def inbox_routes(gateway: Loopgate, config: InboxConfig) -> list[BaseRoute]:
    """The ``/inbox`` routes for one gateway, wrapped in the inbox's security headers."""
    inbox = _Inbox(gateway, config)

    def guarded(handler: Callable[[Request], Awaitable[Response]]
                ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except LoopgateError as exc:
                return inbox._page(request, "error.html", None, status=400,
                                   title="Not accepted", message=str(exc))
        return run

    static = Path(__file__).parent / "static"
    routes: list[BaseRoute] = [
        Route("/", guarded(inbox.pending_list), methods=["GET"]),
        Route("/history", guarded(inbox.history), methods=["GET"]),
        Route("/signin", guarded(inbox.signin), methods=["GET", "POST"]),
        Route("/signout", guarded(inbox.signout), methods=["POST"]),
        Route("/link/{token}", guarded(inbox.link), methods=["GET", "POST"]),
        Route("/events", guarded(inbox.events), methods=["GET"]),
        Route("/r/{request_id}", guarded(inbox.detail), methods=["GET"]),
        Route("/r/{request_id}/decide", guarded(inbox.decide), methods=["POST"]),
        Mount("/static", StaticFiles(directory=static)),
    ]
    return [Mount("/inbox", routes=routes, middleware=[_middleware()])]


def _middleware() -> Any:
    from starlette.middleware import Middleware

    return Middleware(_SecurityHeaders)
