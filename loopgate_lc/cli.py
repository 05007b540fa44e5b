"""``loopgate-lc``: serve the API, serve MCP, and decide requests from a terminal.

Every subcommand works on the same store as the server (``--store``, ``LOOPGATE_STORE``,
default one SQLite file per user, see :mod:`loopgate_lc.locations`), and names it on
stderr, so ``loopgate-lc approve`` in one terminal resumes what ``loopgate-lc serve``
filed in another, whichever folder each runs in. Read-only commands (``pending``,
``audit``) never create a database. Decisions take the path of ``Loopgate.respond``
(channel ``cli``) like every other channel's, so a request already decided elsewhere is
reported with who decided it, and nothing is decided twice.

A person types the store commands, so they start fast: they read the store directly and
decide through the gateway's deciding part alone (:mod:`loopgate_lc.gateway.oneshot`),
importing no gateway, notifier, LangGraph or HTTP module they do not use. On a SQLite
file they run that same code on this thread, without asyncio or an event loop (see
:class:`~loopgate_lc.stores.sqlite.DirectSQLiteStore`); other stores run it on one.
Run as a program, they also spare pydantic its search for plugins among every installed
distribution (``PYDANTIC_DISABLE_PLUGINS``, unless it is set): nothing in such a
process is anyone's to observe, and the search costs it more than its own work.

Exit codes: 0 done, 1 the request could not be decided (unknown id, already decided,
not allowed), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from loopgate_lc.errors import (
    AlreadyDecided,
    ApproverNotAllowed,
    ConfigurationError,
    DeadlinePassed,
    GrantNotFound,
    InvalidDecision,
    LoopgateError,
    RequestNotFound,
)

if TYPE_CHECKING:
    from loopgate_lc.gateway import Loopgate
    from loopgate_lc.gateway.deciding import Deciding
    from loopgate_lc.stores.base import RequestRecord, Store

__all__ = ["build_parser", "main"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080

#: The commands that read or change the store once and exit.
STORE_COMMANDS = frozenset({"pending", "approve", "reject", "audit", "grants", "revoke-grant",
                            "deliveries", "simulate"})


# --- configuration -------------------------------------------------------------------------


def _load_env_file(path: str | None) -> None:
    """Honour a ``.env`` file (variables already set win), when python-dotenv is there."""
    target = Path(path) if path else Path.cwd() / ".env"
    if not target.is_file():
        if path:
            raise ConfigurationError(f"env file {path!r} does not exist")
        return
    try:
        from dotenv import load_dotenv
    except ImportError:  # pragma: no cover - the server extra brings it
        print("warning: .env found but python-dotenv is not installed; ignoring it",
              file=sys.stderr)
        return
    load_dotenv(target, override=False)


def _store(args: argparse.Namespace) -> str:
    from loopgate_lc.locations import absolute_store_url, default_store_url

    return absolute_store_url(str(args.store or default_store_url()))


def _say_store(url: str) -> None:
    """Name the store on stderr, so two commands that disagree are easy to spot."""
    from loopgate_lc.locations import printable_store_url

    print(f"loopgate-lc: store {printable_store_url(url)}", file=sys.stderr)


def _missing(url: str) -> bool:
    """True for a SQLite store whose file does not exist yet (nothing to read)."""
    from loopgate_lc.locations import sqlite_file

    file = sqlite_file(url)
    return file is not None and not file.exists()


T = TypeVar("T")


def _run(url: str, work: Callable[[Store], Coroutine[Any, Any, T]]) -> T:
    """Run ``work`` on the store ``url`` names (not set up yet). A SQLite file is read
    and written on this thread: the store's coroutines never wait then, and run without
    the import of asyncio, an event loop or the store's thread, which would cost a
    command a third of its start-up. Any other store runs on an event loop."""
    from loopgate_lc.locations import sqlite_file

    file = sqlite_file(url)
    if file is not None:
        from loopgate_lc._inline import run_inline
        from loopgate_lc.stores.sqlite import DirectSQLiteStore

        return run_inline(work(DirectSQLiteStore(file)))
    import asyncio

    from loopgate_lc.stores import open_store

    return asyncio.run(work(open_store(url)))


def _on_store(url: str, op: Callable[[Store], Awaitable[T]]) -> T:
    """Run ``op`` on the store ``url`` names, set up (migrations applied) and closed
    after. A command that reads builds no gateway: no timers, notifiers or event-loop
    thread, which would cost it most of its start-up and do nothing before it exits."""

    async def run(store: Store) -> T:
        try:
            await store.setup()
            return await op(store)
        finally:
            await store.close()

    return _run(url, run)


def _deciding(url: str, op: Callable[[Deciding, Store], Awaitable[T]]) -> T:
    """Run ``op`` with the gateway's deciding part over the store ``url`` names (see
    :mod:`loopgate_lc.gateway.oneshot`): a decision here is checked, audited and committed
    exactly as a ``Loopgate`` over that store would."""
    from loopgate_lc.gateway.oneshot import deciding

    async def run(store: Store) -> T:
        async with deciding(store) as desk:
            return await op(desk, store)

    return _run(url, run)


def _default_timeout(value: float | None) -> float:
    from loopgate_lc.gateway import DEFAULT_TIMEOUT

    return value or _env_float("LOOPGATE_DEFAULT_TIMEOUT") or DEFAULT_TIMEOUT


def _port(value: str | None) -> int:
    raw = value or os.environ.get("SERVER_PORT") or os.environ.get("LOOPGATE_PORT")
    if not raw:
        return DEFAULT_PORT
    try:
        port = int(raw)
    except ValueError:
        raise ConfigurationError(f"port must be a number, got {raw!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigurationError(f"port must be between 0 and 65535, got {port}")
    return port


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} must be a positive number")
    return number


def _json_object(value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return parsed


MAX_PAGE = 1000
"""The most rows one listing command prints at a time."""


def _page(value: str) -> int:
    number = _count(value)
    if number > MAX_PAGE:
        raise argparse.ArgumentTypeError(f"{value!r} must be at most {MAX_PAGE}")
    return number


def _more(args: argparse.Namespace, store_url: str, *flags: str) -> None:
    """Print, on stderr, the command that lists the next page: the same command and
    filters, runnable from any folder (the store is named when it was named here)."""
    from loopgate_lc.locations import cli_command, printable_store_url

    parts = [args.command]
    if args.store:
        parts += ["--store", printable_store_url(store_url)]
    parts += flags
    print(f"loopgate-lc: more: {cli_command()} {shlex.join(parts)}", file=sys.stderr)


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be at least 1")
    return number


def _env_float(name: str) -> float | None:
    raw = os.environ.get(name)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ConfigurationError(f"{name} must be positive, got {raw!r}")
    return value


def _env_list(name: str) -> list[str]:
    """A comma-separated environment variable as a list (host names, origins)."""
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def _telegram_from_env() -> Any:
    """A TelegramNotifier when ``TELEGRAM_BOT_TOKEN`` is set, else None."""
    if not os.environ.get("TELEGRAM_BOT_TOKEN"):
        return None
    from loopgate_lc.notifiers.telegram import TelegramNotifier
    from loopgate_lc.server.tenancy import load_api_keys

    webhook_url = os.environ.get("TELEGRAM_WEBHOOK_URL") or None
    chat = os.environ.get("TELEGRAM_DEFAULT_CHAT_ID") or None
    try:
        default_chat = int(chat) if chat else None
    except ValueError:
        raise ConfigurationError(
            f"TELEGRAM_DEFAULT_CHAT_ID must be a chat id (a number), got {chat!r}") from None
    keys = load_api_keys()

    def inbox_identity(user_id: int, username: str | None) -> str | None:
        # Only people the operator gave an API key (named by Telegram id or username).
        found = keys.named(str(user_id)) or (keys.named(username) if username else None)
        return found.name if found is not None else None

    return TelegramNotifier(
        inbox_url=_public_url(), inbox_identity=inbox_identity if keys else None,
        mode="webhook" if webhook_url else "polling",
        webhook_url=webhook_url,
        webhook_secret=os.environ.get("TELEGRAM_WEBHOOK_SECRET") or None,
        default_chat_id=default_chat,
    )


# --- the parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``loopgate-lc`` argument parser (exposed for docs and tests)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store", metavar="URL",
        help="where requests live: sqlite:///path.db, postgresql://..., memory:// "
             "(env LOOPGATE_STORE; default: one SQLite file per user, printed by every "
             "command)")
    common.add_argument("--env-file", metavar="PATH",
                        help="read variables from this file (default ./.env when present)")

    parser = argparse.ArgumentParser(
        prog="loopgate-lc",
        description="Human-in-the-loop approvals: serve the Loopgate API and MCP, and "
                    "decide pending requests from the terminal.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", parents=[common], help="run the HTTP API (and /mcp)")
    serve.add_argument("--host", help=f"bind address (env LOOPGATE_HOST; default {DEFAULT_HOST})")
    serve.add_argument("--port", help=f"port (env SERVER_PORT; default {DEFAULT_PORT})")
    serve.add_argument("--max-body-bytes", type=int, default=None,
                       help="larger request bodies get 413 (default 1 MiB)")
    serve.add_argument("--default-timeout", type=_positive, default=None, metavar="SECONDS",
                       help="requests without timeout_seconds end as 'timeout' after this "
                            "(env LOOPGATE_DEFAULT_TIMEOUT; default 3600)")
    serve.add_argument("--no-mcp", action="store_true", help="do not serve MCP at /mcp")
    serve.add_argument("--poll-interval", type=_positive, default=1.0, metavar="SECONDS",
                       help="how often decisions made by other processes are looked for")
    serve.add_argument("--langgraph", action="append", default=[], metavar="[NAME=]URL",
                       help="watch this LangGraph Server deployment and resume its threads "
                            "(repeatable; env LOOPGATE_LANGGRAPH, comma-separated; API key "
                            "from LOOPGATE_LANGGRAPH_API_KEY_<NAME> or LANGGRAPH_API_KEY)")
    serve.add_argument("--langgraph-graph", action="append", default=[], metavar="ID",
                       help="only threads of this graph or assistant (repeatable; env "
                            "LOOPGATE_LANGGRAPH_GRAPHS; default: every graph)")
    serve.add_argument("--langgraph-foreign", action="store_true",
                       help="also file interrupts loopgate_lc did not raise (LangChain's "
                            "HumanInTheLoopMiddleware, plain questions)")
    serve.add_argument("--langgraph-poll", type=_positive, default=None, metavar="SECONDS",
                       help="seconds between searches for paused threads (default 2)")
    serve.add_argument("--public-url", metavar="URL",
                       help="where the deployments can reach this server, for run webhooks "
                            "(env LOOPGATE_PUBLIC_URL; default: polling only)")
    serve.add_argument("--log-level", default="info",
                       choices=["critical", "error", "warning", "info", "debug"])

    mcp = sub.add_parser("mcp", parents=[common], help="serve MCP over stdio")
    mcp.add_argument("--poll-interval", type=_positive, default=1.0, metavar="SECONDS",
                     help="how often decisions made by other processes are looked for")
    mcp.add_argument("--progress-interval", type=_positive, default=5.0, metavar="SECONDS",
                     help="seconds between progress notifications while waiting")

    pending = sub.add_parser("pending", parents=[common], help="list requests waiting")
    pending.add_argument("--json", action="store_true", help="print a JSON array")
    pending.add_argument("--session", metavar="ID", help="only this session's requests")
    pending.add_argument("--limit", type=_page, default=100, metavar="N",
                         help=f"at most N, oldest first (1 to {MAX_PAGE}; default 100); "
                              "the command for the next page is printed on stderr")
    pending.add_argument("--after", metavar="ID",
                         help="start after this request (the previous page's last)")

    approve = sub.add_parser("approve", parents=[common], help="approve (or answer) a request")
    approve.add_argument("request_id", metavar="ID")
    approve.add_argument("--as", dest="actor", metavar="NAME",
                         help="who is deciding: checked against the request's approvers (required "
                              "when it names some), and the audit's actor (default: your user "
                              "name)")
    approve.add_argument("--choice", metavar="LABEL",
                         help="for requests with options: the option to choose (default: "
                              "the one option that means approval)")
    approve.add_argument("--text", metavar="TEXT", help="for input requests: the answer")
    approve.add_argument("--grant", metavar="JSON", type=_json_object,
                         help="allow calls like this one again without asking, e.g. "
                              "'{\"scope\": \"session\", \"ttl_seconds\": 3600}' (see "
                              "README, Remembered permissions)")

    reject = sub.add_parser("reject", parents=[common],
                            help="reject a request (any kind: recorded as not approved)")
    reject.add_argument("request_id", metavar="ID")
    reject.add_argument("--reason", required=True, help="why (the agent is told)")
    reject.add_argument("--as", dest="actor", metavar="NAME",
                        help="who is deciding: checked against the request's approvers (required "
                              "when it names some), and the audit's actor (default: your user "
                              "name)")

    audit = sub.add_parser("audit", parents=[common], help="print the audit trail")
    audit.add_argument("--json", action="store_true", help="one JSON object per line")
    audit.add_argument("--request", metavar="ID", help="only this request's events")
    audit.add_argument("--session", metavar="ID", help="only this session's events")
    audit.add_argument("--limit", type=_page, default=100, metavar="N",
                       help=f"the newest N events, printed oldest first (1 to {MAX_PAGE}; "
                            "default 100); the command for older ones is printed on stderr")
    audit.add_argument("--before", type=_count, default=None, metavar="EVENT_ID",
                       help="only events older than this one (the previous page's first)")
    audit.add_argument("--event", metavar="KIND",
                       help="only events of this kind (shadow, decided:approved, "
                            "grant_created, ...)")

    grants = sub.add_parser("grants", parents=[common],
                            help="list remembered permissions (live ones unless --all)")
    grants.add_argument("--json", action="store_true", help="one JSON object per line")
    grants.add_argument("--all", action="store_true", help="also expired and revoked ones")
    grants.add_argument("--tool", metavar="NAME", help="only this tool's")
    grants.add_argument("--session", metavar="ID", help="only those made in this session")

    revoke = sub.add_parser("revoke-grant", parents=[common],
                            help="revoke a remembered permission: it approves nothing more")
    revoke.add_argument("grant_id", metavar="ID")
    revoke.add_argument("--as", dest="actor", metavar="NAME",
                        help="who revokes, for the audit (default: your user name)")

    link = sub.add_parser("inbox-link", parents=[common],
                          help="print a one-time sign-in link to the web inbox")
    link.add_argument("--as", dest="actor", metavar="NAME", required=True,
                      help="who signs in: an API key's name (its scope is what they see)")
    link.add_argument("--url", metavar="URL",
                      help="the server's public URL (env LOOPGATE_PUBLIC_URL; default "
                           f"http://{DEFAULT_HOST}:{DEFAULT_PORT})")
    link.add_argument("--ttl", type=_positive, default=None, metavar="SECONDS",
                      help="how long the link works (default 600)")

    deliveries = sub.add_parser(
        "deliveries", parents=[common],
        help="list deliveries given up on (dead): requests a channel never showed")
    deliveries.add_argument("--json", action="store_true", help="one JSON object per line")
    deliveries.add_argument("--limit", type=_page, default=100, metavar="N",
                            help=f"at most N (1 to {MAX_PAGE}; default 100); the command "
                                 "for the next page is printed on stderr")
    deliveries.add_argument("--after", type=_count, default=None, metavar="ITEM_ID",
                            help="start after this delivery (the previous page's last)")

    simulate = sub.add_parser(
        "simulate", parents=[common],
        help="replay the recorded tool calls against a policy file")
    simulate.add_argument("--policies", required=True, metavar="FILE",
                          help="the policy file to try (.toml or .json)")
    simulate.add_argument("--json", action="store_true", help="print the result as JSON")

    sub.add_parser("demo", help="run the demo (its own flags: loopgate-lc demo --help)",
                   add_help=False)
    return parser


# --- subcommands ----------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from loopgate_lc.server import create_app
    except ImportError as exc:
        print(f"error: serving needs the server extra: pip install 'loopgate-lc[server]' "
              f"({exc})", file=sys.stderr)
        return 2
    if not args.no_mcp:
        import importlib.util

        if importlib.util.find_spec("mcp") is None:
            from loopgate_lc.locations import cli_command

            print("error: serving MCP at /mcp needs the mcp extra: pip install "
                  "'loopgate-lc[server,mcp]' (or serve without it: "
                  f"{cli_command()} serve --no-mcp)", file=sys.stderr)
            return 2
    from loopgate_lc.gateway import Loopgate

    host = args.host or os.environ.get("LOOPGATE_HOST") or DEFAULT_HOST
    port = _port(args.port)
    telegram = _telegram_from_env()
    store = _store(args)
    gateway = Loopgate(store, notifiers=[telegram] if telegram else [],
                       default_timeout=_default_timeout(args.default_timeout),
                       poll_interval=args.poll_interval)
    kwargs: dict[str, Any] = {}
    if args.max_body_bytes is not None:
        kwargs["max_body_bytes"] = args.max_body_bytes
    from loopgate_lc.server.tenancy import load_api_keys

    keys = load_api_keys()
    hosts = _env_list("LOOPGATE_ALLOWED_HOSTS")
    bridge = _bridge(args, gateway)
    if bridge is not None:
        kwargs["bridge"] = bridge
    app = create_app(
        gateway,
        api_keys=keys,
        webhook_secret=[s for s in (os.environ.get("LOOPGATE_WEBHOOK_SECRET"),
                                    os.environ.get("LOOPGATE_WEBHOOK_SECRET_PREVIOUS")) if s]
        or None,
        telegram=telegram, mcp=not args.no_mcp, host=host, close_gateway=True,
        allowed_hosts=hosts or None, cors_origins=_env_list("LOOPGATE_CORS_ORIGINS"),
        callback_allowlist=_env_list("LOOPGATE_CALLBACK_ALLOWLIST"),
        inbox_secret=os.environ.get("LOOPGATE_INBOX_SECRET") or None, **kwargs,
    )
    from loopgate_lc._http import http_protocol

    # Access lines are logged at INFO: below that level uvicorn would still build each
    # one's arguments (the client's address, the quoted path) only to drop it.
    config = uvicorn.Config(app, host=host, port=port, log_level=args.log_level,
                            access_log=args.log_level in ("debug", "info"),
                            http=http_protocol())

    async def serve() -> None:
        # Opened here, on the loop uvicorn then serves from: the gateway's home, so the
        # handlers call it without crossing threads. Opened before uvicorn starts, so a
        # refused token or an unusable store is one clear line (and a non-zero exit)
        # instead of uvicorn's startup traceback. An unreachable Telegram is not fatal:
        # the API serves and /health says "degraded".
        try:
            await gateway.aopen()
        except BaseException:
            await gateway.aclose()
            raise
        _say_store(store)
        _settle_heap()
        from loopgate_lc.locations import store_command

        public = _public_url() or f"http://{host}:{port}"
        link = store_command(f"inbox-link --as NAME --url {shlex.quote(public)}", store)
        sign_in = f"; sign in: `{link}`" if link is not None else ""
        print(f"loopgate-lc: serving on http://{host}:{port} (telegram "
              f"{'on' if telegram else 'off'}; API keys {'required' if keys else 'off'}; "
              f"requests without timeout_seconds end after {gateway.default_timeout:g} s); "
              f"inbox at {public}/inbox/{sign_in}", file=sys.stderr)
        if telegram is None:
            _warn_no_channel(store)
        if bridge is not None:
            for name, driver in bridge.drivers.items():
                print(f"loopgate-lc: watching LangGraph Server {name} at "
                      f"{driver.deployment.url} ({'webhooks and ' if bridge.public_url else ''}"
                      f"polling every {driver.deployment.poll_interval:g}s)", file=sys.stderr)
        try:
            await uvicorn.Server(config).serve()
        finally:  # the lifespan closes it too; not when uvicorn could not start
            await gateway.aclose()

    import asyncio
    import contextlib

    factory = getattr(config, "get_loop_factory", lambda: None)()
    # uvicorn hands a Ctrl-C back once it has shut down; that is the way out, as in
    # uvicorn.run
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve())
    return 0


def _settle_heap() -> None:
    """Tune the collector for a process that now only serves.

    What start-up built (modules, app, schemas) lives as long as the process: frozen, full
    collections no longer walk it. A request allocates a few hundred short-lived containers
    (bodies, models, the answer); with the default threshold of 700 a young collection ran
    every few requests and walked whatever the requests in flight held, a few per cent of
    a decision's CPU. Cycles are still collected, just less often.
    """
    import gc

    gc.collect()
    gc.freeze()
    young, *older = gc.get_threshold()
    gc.set_threshold(max(young, _YOUNG_GC_THRESHOLD), *older)


_YOUNG_GC_THRESHOLD = 10_000
"""Net container allocations between young collections in ``loopgate-lc serve``."""


def _split(values: list[str], env: str) -> list[str]:
    raw = values or [os.environ.get(env, "")]
    return [part.strip() for value in raw for part in value.split(",") if part.strip()]


def _bridge(args: argparse.Namespace, gateway: Loopgate) -> Any:
    """A LangGraphBridge when ``--langgraph`` or ``LOOPGATE_LANGGRAPH`` names deployments."""
    specs = _split(args.langgraph, "LOOPGATE_LANGGRAPH")
    if not specs:
        return None
    from loopgate_lc.langgraph_server import LangGraphBridge, parse_deployments

    deployments = parse_deployments(
        specs, graphs=_split(args.langgraph_graph, "LOOPGATE_LANGGRAPH_GRAPHS"),
        include_foreign=args.langgraph_foreign, poll_interval=args.langgraph_poll)
    return LangGraphBridge(
        gateway, deployments,
        public_url=args.public_url or os.environ.get("LOOPGATE_PUBLIC_URL") or None,
        webhook_token=os.environ.get("LOOPGATE_LANGGRAPH_WEBHOOK_TOKEN") or None)


def _mcp(args: argparse.Namespace) -> int:
    try:
        import anyio

        from loopgate_lc.server.mcp import run_stdio
    except ImportError as exc:
        print(f"error: MCP needs the mcp extra: pip install 'loopgate-lc[mcp]' ({exc})",
              file=sys.stderr)
        return 2
    from loopgate_lc.gateway import Loopgate

    store = _store(args)
    _say_store(store)
    telegram = _telegram_from_env()
    if telegram is None:
        _warn_no_channel(store)
    gateway = Loopgate(store, notifiers=[telegram] if telegram else [],
                       default_timeout=_default_timeout(None),
                       poll_interval=args.poll_interval)
    anyio.run(lambda: run_stdio(gateway, progress_interval=args.progress_interval))
    return 0


def _warn_no_channel(store_url: str) -> None:
    """Said loudly: without a channel, requests wait unseen unless someone looks."""
    import re
    import textwrap

    from loopgate_lc.notifiers.base import no_channel_warning

    bar = "!" * 78
    # wrapped between words, never inside a `command`: copied whole, it runs as shown
    words = re.sub(r"`[^`]*`", lambda m: m.group(0).replace(" ", "\0"),
                   f"loopgate-lc: WARNING: {no_channel_warning(store_url)}")
    text = textwrap.fill(words, 78, break_long_words=False,
                         break_on_hyphens=False).replace("\0", " ")
    print(f"{bar}\n{text}\n{bar}", file=sys.stderr)


def _age(record: RequestRecord) -> str:
    from loopgate_lc.schema import utcnow

    seconds = int((utcnow() - record.created_at).total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _pending(args: argparse.Namespace, out: TextIO) -> int:
    store = _store(args)
    _say_store(store)
    records: list[RequestRecord] = []
    dead = 0
    if not _missing(store):
        from loopgate_lc.schema import Status

        async def read(s: Store) -> tuple[list[RequestRecord], int]:
            found = await s.list_requests(status=Status.PENDING, session_id=args.session,
                                          limit=args.limit + 1, after=args.after)
            return found, len(await s.list_outbox(dead=True, limit=1))

        records, dead = _on_store(store, read)
    more = len(records) > args.limit
    records = records[:args.limit]
    if more:
        _more(args, store, *(["--session", args.session] if args.session else []),
              *(["--json"] if args.json else []), "--limit", str(args.limit),
              "--after", records[-1].id)
    if dead:
        from loopgate_lc.locations import deliveries_hint

        print(f"loopgate-lc: some deliveries were given up on; {deliveries_hint(store)}",
              file=sys.stderr)
    if args.json:
        from loopgate_lc.server.models import poll_result

        json.dump([poll_result(r) for r in records], out, indent=2)
        out.write("\n")
        return 0
    if not records:
        print("no pending requests", file=out)
        return 0
    from loopgate_lc.quorum import tally_text

    for record in records:
        request = record.request
        options = ""
        if request.options:
            options = "  [" + " | ".join(
                f"{o.label}{'' if o.approved else ' (no)'}" for o in request.options) + "]"
        counts = f"  ({tally_text(record)})" if tally_text(record) else ""
        print(f"{record.id}  {_age(record):>4}  {record.kind.value:<13} "
              f"session={record.session_id or '-'}  {_one_line(request.text, 70)}{options}"
              f"{counts}", file=out)
    print(f"{len(records)} pending" + (", more on the next page" if more else ""),
          file=out)
    return 0


def _deliveries(args: argparse.Namespace, out: TextIO) -> int:
    store = _store(args)
    _say_store(store)
    items: list[Any] = []
    if not _missing(store):
        items = _on_store(store, lambda s: s.list_outbox(dead=True, limit=args.limit + 1,
                                                        after=args.after))
    if len(items) > args.limit:
        items = items[:args.limit]
        _more(args, store, *(["--json"] if args.json else []), "--limit", str(args.limit),
              "--after", str(items[-1].id))
    if args.json:
        for item in items:
            out.write(item.model_dump_json() + "\n")
        return 0
    for item in items:
        print(f"request={item.request_id}  {item.notifier:<10} {item.kind:<9} "
              f"attempts={item.attempts}  {_one_line(item.last_error or '-', 90)}", file=out)
    print(f"{len(items)} dead deliveries" if items else "no dead deliveries", file=out)
    return 0


def _actor(args: argparse.Namespace) -> str:
    name = args.actor
    if not name:
        import getpass  # only a decision without --as needs it (and its terminal module)

        try:
            name = getpass.getuser()
        except (OSError, KeyError):  # no user name in this environment
            name = "unknown"
    return f"cli:{name}"


def _decision(args: argparse.Namespace, record: RequestRecord, *, approve: bool
              ) -> dict[str, Any]:
    """What ``approve``/``reject`` mean for this request's kind.

    Raises:
        InvalidDecision: The request needs a choice or text that was not given; the
            message says which flag to pass.
    """
    from loopgate_lc.decisions import approval_of

    if not approve:
        return {"type": "reject", "message": args.reason}
    if getattr(args, "grant", None) is not None:
        return {"type": "approve", "grant": args.grant}
    if args.choice is not None:
        return {"type": "respond", "message": args.choice}
    if args.text is not None:
        return {"type": "respond", "message": args.text}
    request = record.request
    if not record.pending:
        return {"type": "approve"}  # the gateway reports who decided it first
    try:
        return approval_of(request)
    except InvalidDecision as exc:
        from loopgate_lc.locations import cli_command, store_command

        command = (store_command(f"approve {record.id}", args.store_url)
                   or f"{cli_command()} approve {record.id}")
        if request.options:
            choices = " or ".join(
                f"{command} --choice {shlex.quote(label)}"
                for label in (exc.options or [o.label for o in request.options]))
            raise InvalidDecision(f"{exc}: {choices}") from exc
        raise InvalidDecision(
            f"request {record.id} asks for an answer ({request.type.value}): "
            f"{command} --text TEXT") from exc


def _decide(args: argparse.Namespace, out: TextIO, *, approve: bool) -> int:
    args.store_url = _store(args)
    _say_store(args.store_url)
    if _missing(args.store_url):
        raise RequestNotFound(args.request_id)

    async def decide(desk: Deciding, store: Store) -> RequestRecord:
        from loopgate_lc.schema import utcnow

        record = await store.get_request(args.request_id)
        if record.pending and record.expires_at is not None and record.expires_at <= utcnow():
            # fail closed: the serving process's timeout policy decides an overdue request
            raise DeadlinePassed(record.id, record.expires_at)
        decision = _decision(args, record, approve=approve)
        # --as names the approver: where the session or policy names approvers, the CLI
        # decides only as one of them (and refusals are audited).
        return await desk.respond(record.id, decision, actor=_actor(args), channel="cli",
                                  approver_id=args.actor)

    try:
        decided = _deciding(args.store_url, decide)
    except ApproverNotAllowed as exc:
        hint = "" if args.actor else (
            "; this request names its approvers: decide as one of them with --as NAME")
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 1
    if decided.pending:  # the answer was a vote, and the request needs more
        from loopgate_lc.quorum import tally_text

        print(f"request {decided.id}: vote counted, still pending ({tally_text(decided)})",
              file=out)
        return 0
    from loopgate_lc.decisions import response_of

    outcome = response_of(decided)
    verdict = "approved" if outcome.approved else "not approved"
    detail = f" with {outcome.choice!r}" if outcome.choice else ""
    print(f"request {decided.id}: {decided.status.value}{detail} ({verdict}) by "
          f"{decided.decided_by}", file=out)
    return 0


def _audit(args: argparse.Namespace, out: TextIO) -> int:
    store = _store(args)
    _say_store(store)
    events: list[Any] = []
    if not _missing(store):
        # the newest N (and one more, to know older ones exist), oldest first
        events = _on_store(store, lambda s: s.list_audit(
            request_id=args.request, session_id=args.session, limit=args.limit + 1,
            before=args.before, newest=True, event=args.event))
    if len(events) > args.limit:
        events = events[-args.limit:]
        _more(args, store, *(["--request", args.request] if args.request else []),
              *(["--session", args.session] if args.session else []),
              *(["--event", args.event] if args.event else []),
              *(["--json"] if args.json else []), "--limit", str(args.limit),
              "--before", str(events[0].id))
    if args.json:
        for event in events:
            out.write(event.model_dump_json() + "\n")
        return 0
    for event in events:
        details = json.dumps(event.details, default=str, separators=(",", ":"))
        print(f"{event.at.isoformat(timespec='seconds')}  {event.event:<20} "
              f"request={event.request_id or '-'}  actor={event.actor or '-'}  "
              f"channel={event.channel or '-'}  {_one_line(details, 120)}", file=out)
    if not events:
        print("no audit events", file=out)
    return 0


def _grants(args: argparse.Namespace, out: TextIO) -> int:
    from loopgate_lc.grants import describe_constraints

    store = _store(args)
    _say_store(store)
    found: list[Any] = []
    if not _missing(store):
        from loopgate_lc.schema import utcnow

        live_at = None if args.all else utcnow()  # live ones: neither revoked nor expired
        found = _on_store(store, lambda s: s.list_grants(tool=args.tool,
                                                         session_id=args.session,
                                                         live_at=live_at))
    if args.json:
        for grant in found:
            out.write(grant.model_dump_json() + "\n")
        return 0
    for grant in found:
        if grant.revoked_at is not None:
            until = f"revoked by {grant.revoked_by or '-'}"
        elif grant.expires_at is None:
            until = "until revoked"
        else:
            until = f"until {grant.expires_at.isoformat(timespec='seconds')}"
        where = {"thread": f"thread={grant.thread_id}", "session": f"session={grant.session_id}",
                 "everyone": f"everyone (client={grant.client_id or '-'})"}[grant.scope]
        print(f"{grant.id}  {grant.tool:<16} {where}  {until}  by {grant.created_by or '-'}  "
              f"{_one_line(describe_constraints(grant.args), 80)}", file=out)
    print(f"{len(found)} grants" if found else "no grants", file=out)
    return 0


def _revoke_grant(args: argparse.Namespace, out: TextIO) -> int:
    store = _store(args)
    _say_store(store)
    if _missing(store):
        raise GrantNotFound(args.grant_id)
    grant = _deciding(store, lambda desk, _: desk.grants.revoke(
        args.grant_id, actor=_actor(args), channel="cli"))
    when = grant.revoked_at.isoformat(timespec="seconds") if grant.revoked_at else "-"
    print(f"grant {grant.id} ({grant.tool}): revoked by {grant.revoked_by} at {when}", file=out)
    return 0


def _public_url() -> str | None:
    url = os.environ.get("LOOPGATE_PUBLIC_URL", "").strip()
    return url.rstrip("/") or None


def _inbox_link(args: argparse.Namespace, out: TextIO) -> int:
    from loopgate_lc.server.inbox import DEFAULT_LINK_TTL, issue_link, link_path
    from loopgate_lc.server.tenancy import load_api_keys

    keys = load_api_keys()
    if keys and keys.named(args.actor) is None:
        print(f"error: no API key is named {args.actor!r}; the inbox signs in API key "
              "identities (LOOPGATE_API_KEYS=name=key or LOOPGATE_API_KEYS_FILE)",
              file=sys.stderr)
        return 2
    url = (args.url or _public_url() or f"http://{DEFAULT_HOST}:{DEFAULT_PORT}").rstrip("/")
    import asyncio

    from loopgate_lc.stores import open_store

    store_url = _store(args)
    _say_store(store_url)

    async def issue() -> str:
        async with open_store(store_url) as store:
            return await issue_link(store, args.actor, ttl=args.ttl or DEFAULT_LINK_TTL)

    token = asyncio.run(issue())
    print(url + link_path(token), file=out)
    return 0


def _simulate(args: argparse.Namespace, out: TextIO) -> int:
    from loopgate_lc.policy import PolicySet
    from loopgate_lc.simulate import simulate

    policies = PolicySet.from_file(args.policies)
    store = _store(args)
    _say_store(store)
    events: list[Any] = []
    if not _missing(store):
        events = _on_store(store, lambda s: s.list_audit())
    result = simulate(events, policies)
    if args.json:
        json.dump({
            "tools": result.rows(),
            "flagged": [{"request_id": c.request_id, "tool": c.tool, "at": c.at.isoformat(),
                         "rejected_by": c.decided_by, "policy": c.verdict.policy}
                        for c in result.flagged],
            "skipped": result.skipped,
        }, out, indent=2)
        out.write("\n")
    else:
        print(result.table(), file=out)
    return 0


def _demo(argv: list[str]) -> int:
    try:
        from loopgate_lc import demo
    except ImportError as exc:
        if exc.name not in ("loopgate_lc.demo", None):
            raise
        print("error: the demo is not part of this installation (loopgate_lc.demo is "
              "missing)", file=sys.stderr)
        return 2
    result: int | None = demo.main(argv)
    return int(result or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``loopgate-lc``; returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["demo"]:
        # The demo parses its own flags; argparse would reject the ones it does not know.
        return _demo(arguments[1:])
    parser = build_parser()
    args = parser.parse_args(arguments)
    out = sys.stdout
    try:
        _load_env_file(args.env_file)
        if argv is None and args.command in STORE_COMMANDS:
            # this process is the command's alone (see the module's docstring)
            os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
        if args.command == "serve":
            return _serve(args)
        if args.command == "mcp":
            return _mcp(args)
        if args.command == "pending":
            return _pending(args, out)
        if args.command in ("approve", "reject"):
            return _decide(args, out, approve=args.command == "approve")
        if args.command == "audit":
            return _audit(args, out)
        if args.command == "grants":
            return _grants(args, out)
        if args.command == "revoke-grant":
            return _revoke_grant(args, out)
        if args.command == "inbox-link":
            return _inbox_link(args, out)
        if args.command == "deliveries":
            return _deliveries(args, out)
        if args.command == "simulate":
            return _simulate(args, out)
    except (AlreadyDecided, RequestNotFound, GrantNotFound) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except LoopgateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse checks
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
