"""MCP: the same requests, reachable from any MCP client (Claude Desktop, agents, IDEs).

Built on the official ``mcp`` SDK (2.x, ``MCPServer``). The tools share the gateway, and
so the store, with the HTTP API: a request filed here shows up in ``/hitl/pending``, on
Telegram and in the CLI, and may be decided from any of them. Served over stdio
(``loopgate-lc mcp``) and over streamable HTTP at ``/mcp`` in the ASGI app.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from loopgate_lc.errors import LoopgateError
from loopgate_lc.gateway import Loopgate
from loopgate_lc.server.middleware import caller
from loopgate_lc.server.models import (
    MAX_PAGE,
    Ident,
    Message,
    Metadata,
    OptionalIdent,
    Options,
    PendingOut,
    PollResult,
    RequestType,
    Timeout,
    check_json,
    poll_result,
)
from loopgate_lc.server.tenancy import (
    ADMIN,
    ApiKey,
    filing_client,
    own_request,
    own_session,
    pending_page,
)

__all__ = ["create_mcp_server", "run_stdio"]

INSTRUCTIONS = (
    "Ask a human before risky or irreversible actions. Call request_human_input with a "
    "clear message (and options when there are choices); it returns once a person has "
    "answered or the request timed out. Act only when the result's `approved` is true. "
    "`response` holds the chosen option, the person's text or the reason."
)


def _result(record: Any) -> PollResult:
    return PollResult.model_validate(poll_result(record))


def _key(ctx: Context) -> ApiKey:
    """The API key of the HTTP request carrying this call; over stdio the local user,
    who owns the store anyway, is admin."""
    try:
        request = ctx.request_context.request
    except ValueError:
        return ADMIN
    scope = getattr(request, "scope", None)
    return caller(scope) if isinstance(scope, dict) else ADMIN


def create_mcp_server(loopgate: Loopgate, *, progress_interval: float = 5.0,
                      name: str = "loopgate-lc") -> MCPServer[Any]:
    """An MCP server whose tools file, read and cancel requests on ``loopgate``.

    Args:
        loopgate: The gateway (and store) the tools act on.
        progress_interval: Seconds between progress notifications while
            ``request_human_input`` waits (only sent when the client asked for progress).
        name: The server's name in the MCP handshake.
    """
    # MCPServer configures the root logger (logging.basicConfig); a library must leave
    # the application's logging alone, so whatever it changes is put back.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    server: MCPServer[Any] = MCPServer(name, instructions=INSTRUCTIONS, log_level="WARNING")
    root.handlers[:] = handlers
    root.setLevel(level)

    async def request_human_input(
        message: Message,
        ctx: Context,
        session_id: Ident
        | None = None,
        options: Options | None = None,
        request_type: RequestType = "approval",
        metadata: Metadata | None = None,
        timeout_seconds: Timeout | None = None,
        client_id: OptionalIdent = "",
    ) -> PollResult:
        """Ask a person and wait for the answer.

        Returns when the person answered, the request timed out (approved is false) or it
        was cancelled. request_type: approval, confirmation, choice, input, feedback or
        annotation. Options may be plain strings or {"label", "approved"}; a plain string
        counts as approval only when the whole label is an affirmative phrase ("Yes",
        "Approve", "Deploy", "Proceed"...): "Deploy to Staging First" or "Cancel" do not.
        Read `response` for the chosen label.
        """
        if not message.strip():
            raise ToolError("message must not be empty")
        try:
            check_json({"message": message, "metadata": metadata or {},
                        "options": [o if isinstance(o, str) else o.label
                                    for o in options or ()]}, "arguments")
        except ValueError as exc:
            raise ToolError(str(exc)) from exc
        key = _key(ctx)
        try:
            session = None
            if session_id is not None:
                session = await own_session(loopgate, key, session_id)
                if not session.active:
                    raise ToolError(f"session {session_id!r} is deactivated")
            filed_client = filing_client(key, session, client_id or None) \
                if not key.admin else (client_id or "mcp")
            record = await loopgate.asubmit(
                message, kind=request_type,
                options=[o if isinstance(o, str) else o.model_dump(exclude_none=True)
                         for o in options or ()],
                metadata=metadata or {}, session_id=session_id, client_id=filed_client,
                timeout=timeout_seconds)
            loop = asyncio.get_running_loop()
            started = loop.time()
            while record.pending:
                try:
                    record = await loopgate.await_decision(record.id,
                                                           timeout=progress_interval)
                except TimeoutError:
                    waited = loop.time() - started
                    await ctx.report_progress(
                        waited, timeout_seconds,
                        f"waiting for a person to answer request {record.id} "
                        f"({int(waited)}s)")
                    record = await loopgate.aget(record.id)
        except LoopgateError as exc:
            raise ToolError(str(exc)) from exc
        return _result(record)

    async def check_request_status(
        request_id: Ident,
        ctx: Context,
        wait_seconds: Annotated[float, Field(ge=0, le=60, allow_inf_nan=False,
                                             strict=True)] = 0,
    ) -> PollResult:
        """A request's current state; with wait_seconds > 0 (at most 60) wait for a
        decision first."""
        try:
            await own_request(loopgate, _key(ctx), request_id)
            if wait_seconds > 0:
                try:
                    return _result(await loopgate.await_decision(
                        request_id, timeout=wait_seconds))
                except TimeoutError:
                    pass
            return _result(await loopgate.aget(request_id))
        except LoopgateError as exc:
            raise ToolError(str(exc)) from exc

    async def list_pending_requests(
        ctx: Context,
        session_id: Ident
        | None = None,
        limit: Annotated[int, Field(ge=1, le=MAX_PAGE, strict=True)] = MAX_PAGE,
        cursor: Ident | None = None,
    ) -> PendingOut:
        """Requests still waiting for a person, oldest first (optionally one session's),
        a page at a time: pass the answer's ``next`` as ``cursor`` for the next page."""
        try:
            records, nxt = await pending_page(loopgate, _key(ctx), session_id=session_id,
                                              limit=limit, after=cursor)
        except LoopgateError as exc:
            raise ToolError(str(exc)) from exc
        return PendingOut(count=len(records), requests=[_result(r) for r in records],
                          next=nxt)

    async def cancel_request(
        request_id: Ident,
        ctx: Context,
        reason: Annotated[str, Field(max_length=2_000, strict=True)] | None = None,
    ) -> PollResult:
        """Withdraw a pending request; a request already decided is reported with who
        decided it and when."""
        key = _key(ctx)
        try:
            await own_request(loopgate, key, request_id)
            actor = "mcp" if key is ADMIN else f"mcp ({key.actor})"
            return _result(await loopgate.acancel(request_id, actor=actor, reason=reason))
        except LoopgateError as exc:
            raise ToolError(str(exc)) from exc

    for tool in (request_human_input, check_request_status, list_pending_requests,
                 cancel_request):
        server.add_tool(tool)
    return server


async def run_stdio(loopgate: Loopgate, *, progress_interval: float = 5.0) -> None:
    """Serve the tools over stdin/stdout until the client disconnects."""
    server = create_mcp_server(loopgate, progress_interval=progress_interval)
    await loopgate.aopen()
    try:
        await server.run_stdio_async()
    finally:
        await loopgate.aclose()
