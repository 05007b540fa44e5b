"""``loopgate-lc demo``: a release agent that checks CI and deploys, with a person on the
production button.

The agent is a real ``langchain.agents.create_agent`` agent with guarded tools. Read-only
checks pass the policies on their own; a staging deploy is a data modification the
``deploys`` policy allows; a production deploy is irreversible, so the run pauses until a
person decides. That person is reached on Telegram when ``TELEGRAM_BOT_TOKEN`` and
``TELEGRAM_CHAT_ID`` are set, and at this terminal otherwise.

The model is scripted (offline, free, the same every time) unless ``--model
provider:name`` names a real one. The run ends with the audit trail, because "who
approved what, and why was the rest allowed" is the point of the library.

The demo must never hang in CI: with no terminal to ask and no ``--auto``/``--wait``, it
files the request, explains how to answer, and exits 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.tools import BaseTool, tool
from langgraph.checkpoint.memory import InMemorySaver

from loopgate_lc.errors import ConfigurationError, LoopgateError
from loopgate_lc.gateway import Loopgate
from loopgate_lc.guard import guard
from loopgate_lc.hooks import Hooks
from loopgate_lc.locations import (
    answer_hint,
    cli_command,
    printable_store_url,
    store_command,
)
from loopgate_lc.notifiers.base import Notifier
from loopgate_lc.notifiers.console import ConsoleNotifier, has_terminal, render_request
from loopgate_lc.policy import ApprovalPolicy, PolicySet, RiskLevel
from loopgate_lc.stores.base import AuditEvent, RequestRecord
from loopgate_lc.testing import ScriptedApprover, ScriptedChatModel, ai, call

__all__ = ["build_agent", "build_tools", "main", "policies", "render_audit"]

VERSION = "1.4.2"
TASK = (
    f"Release version {VERSION}: check that main builds and its tests pass, deploy it to "
    "staging, then to production."
)
SYSTEM_PROMPT = (
    "You are a release engineer bot. Use the tools: check the build and the tests of the "
    "branch first, deploy to staging next, and deploy to production last. If a person "
    "rejects a deploy, do not retry it; say what happened. Finish with one short sentence."
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


# --- the agent's world ------------------------------------------------------------------


@dataclass
class Release:
    """What the demo's tools did, so the summary (and the tests) can tell what shipped."""

    deployed: list[str] = field(default_factory=list)


def deploy_risk(args: dict[str, Any]) -> RiskLevel:
    """Production cannot be undone; staging is overwritten by the next deploy anyway.

    Anything else is treated as production: an unknown environment fails closed.
    """
    if args.get("environment") == "staging":
        return RiskLevel.DATA_MODIFICATION
    return RiskLevel.IRREVERSIBLE


RISKS: dict[str, RiskLevel | Callable[[dict[str, Any]], RiskLevel]] = {
    "check_build_status": RiskLevel.READ_ONLY,
    "run_tests_summary": RiskLevel.READ_ONLY,
    "deploy": deploy_risk,
}


def policies() -> PolicySet:
    """The first matching policy decides: deploys may go as far as data modifications
    (staging), every other tool only as far as reads."""
    return PolicySet([
        ApprovalPolicy("deploys", "deploy", max_risk_level=RiskLevel.DATA_MODIFICATION),
        ApprovalPolicy("read-only tools", "*", max_risk_level=RiskLevel.READ_ONLY),
    ])


def build_tools(release: Release, gate: Loopgate) -> list[BaseTool]:
    """The three CI/CD tools, each guarded with its own risk against the gateway's live
    policy set."""

    @tool
    def check_build_status(branch: str = "main") -> str:
        """Report the latest CI build of a branch."""
        return f"build #1287 of {branch} passed (commit 3f9c2ab, 4m12s)"

    @tool
    def run_tests_summary(branch: str = "main") -> str:
        """Summarise the latest test run of a branch."""
        return f"{branch}: 412 passed, 0 failed, 3 skipped; coverage 91%"

    @tool
    def deploy(environment: Literal["staging", "production"], version: str) -> str:
        """Deploy a released version to an environment."""
        release.deployed.append(environment)
        return f"version {version} is live on {environment}"

    return [
        guard(check_build_status, policies=gate.policies, risk=RISKS["check_build_status"]),
        guard(run_tests_summary, policies=gate.policies, risk=RISKS["run_tests_summary"]),
        guard(deploy, policies=gate.policies, risk=RISKS["deploy"], description=_describe_deploy,
              metadata={"requested_by": "release-bot", "change": f"release {VERSION}"}),
    ]


def _describe_deploy(name: str, args: dict[str, Any]) -> str:
    """What the person is asked, in their words rather than as a JSON dump."""
    where = args.get("environment", "?")
    undo = " This cannot be undone." if deploy_risk(args) is RiskLevel.IRREVERSIBLE else ""
    return f"The release bot wants to deploy version {args.get('version', '?')} to {where}.{undo}"


def _wrap_up(messages: list[BaseMessage]) -> str:
    """The scripted model's last word, written from what really happened."""
    last = next((m for m in reversed(messages) if isinstance(m, ToolMessage)), None)
    if last is not None and last.status == "error":
        return f"Version {VERSION} is on staging only: production was not approved, so I stopped."
    return f"Version {VERSION} is live on staging and production."


def scripted_model() -> ScriptedChatModel:
    """An offline model that plays the release engineer, turn by turn."""
    return ScriptedChatModel(script=[
        ai("Checking the build and the tests first.",
           call("check_build_status", "c-build", branch="main"),
           call("run_tests_summary", "c-tests", branch="main")),
        ai("All green. Deploying to staging.",
           call("deploy", "c-staging", environment="staging", version=VERSION)),
        ai("Staging is fine. Deploying to production.",
           call("deploy", "c-production", environment="production", version=VERSION)),
        _wrap_up,
    ])


def load_model(spec: str) -> BaseChatModel:
    """A real chat model from ``provider:name`` (for example ``openai:gpt-4o-mini``).

    Raises:
        ConfigurationError: The spec is malformed, the provider's package is missing, or
            the provider refuses to start (usually a missing API key).
    """
    if ":" not in spec:
        raise ConfigurationError(
            f"--model takes provider:name, like openai:gpt-4o-mini, got {spec!r}")
    try:
        from langchain.chat_models import init_chat_model
    except ImportError as exc:
        raise ConfigurationError(
            "a real model needs langchain: pip install 'loopgate-lc[agents]'") from exc
    provider = spec.split(":", 1)[0]
    try:
        return init_chat_model(spec)
    except ImportError as exc:
        raise ConfigurationError(f"cannot load {spec!r}: {exc}") from exc
    except Exception as exc:  # providers raise their own types for a missing key
        text = str(exc).strip()
        hint = ""
        if "key" in text.lower():
            hint = f" Set the provider's API key (for example {provider.upper()}_API_KEY)."
        raise ConfigurationError(f"cannot start {spec!r}: {text}{hint}") from exc


def build_agent(model: BaseChatModel, tools: Sequence[BaseTool]) -> Any:
    """The release agent: LangChain's ``create_agent`` with a checkpointer to pause on."""
    try:
        from langchain.agents import create_agent
    except ImportError as exc:
        raise ConfigurationError(
            "the demo agent needs langchain: pip install 'loopgate-lc[agents]'") from exc
    return create_agent(model, tools=list(tools), system_prompt=SYSTEM_PROMPT,
                        checkpointer=InMemorySaver())


# --- printing ----------------------------------------------------------------------------


class _Out:
    """Line-flushed printing, so output interleaves sensibly with the console prompt."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, text: str = "") -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def _short(value: Any, limit: int = 70) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _call_text(name: str, args: dict[str, Any]) -> str:
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in args.items())})"


def _risk_of(name: str, args: dict[str, Any]) -> RiskLevel:
    spec = RISKS.get(name, RiskLevel.IRREVERSIBLE)
    return spec(args) if callable(spec) else spec


def _show_update(out: _Out, gate: Loopgate, chunk: Any) -> None:
    """One line per model turn, tool call (with the policy's verdict) and tool result."""
    if not isinstance(chunk, dict):
        return
    for node, update in chunk.items():
        if node.startswith("__") or not isinstance(update, dict):
            continue
        for message in update.get("messages") or ():
            if isinstance(message, AIMessage):
                if message.content:
                    out(f"agent: {_short(message.text, 200)}")
                for tool_call in message.tool_calls:
                    name, args = tool_call["name"], tool_call["args"]
                    verdict = gate.should_approve(name, 0.0, _risk_of(name, args))
                    how = (f"auto-approved by policy {verdict.policy!r}" if verdict.auto_approved
                           else "needs a person")
                    out(f"  -> {_call_text(name, args)}   [{how}]")
            elif isinstance(message, ToolMessage):
                mark = "x" if message.status == "error" else "<-"
                out(f"  {mark} {message.name}: {_short(message.content, 160)}")


def _event_subject(event: AuditEvent, tools: dict[str, str]) -> str:
    tool = event.details.get("tool") or tools.get(event.request_id or "", "")
    if event.request_id:
        return f"{tool or 'request'} #{event.request_id[:8]}"
    return str(tool or "run")


def _event_note(event: AuditEvent) -> str:
    details = event.details
    if event.event == "auto_approved":
        return f"policy {details.get('policy')!r} allows it"
    decision = details.get("decision")
    if isinstance(decision, dict):
        return str(decision.get("message") or "")
    for key in ("reason", "error"):
        if details.get(key):
            return str(details[key])
    return ""


def render_audit(events: Sequence[AuditEvent]) -> str:
    """The audit trail as a plain-text table a person reads top to bottom."""
    tools = {e.request_id: str(e.details["tool"]) for e in events
             if e.request_id and e.details.get("tool")}
    head = ("time", "event", "what", "who", "via", "note")
    rows = [
        (
            event.at.astimezone().strftime("%H:%M:%S"),
            event.event,
            _short(_event_subject(event, tools), 28),
            _short(event.actor or "-", 24),
            event.channel or "-",
            _short(_event_note(event), 80),
        )
        for event in events
    ]
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head) - 1)]

    def line(row: Sequence[str]) -> str:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        return "  ".join([*cells, row[-1]]).rstrip()

    rule = "  ".join("-" * w for w in widths) + "  ----"
    return "\n".join([line(head), rule, *(line(row) for row in rows)])


# --- running -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loopgate-lc demo",
        description="A release agent checks CI and deploys; production needs a person.",
    )
    parser.add_argument("--model", metavar="PROVIDER:NAME",
                        help="a real chat model (e.g. openai:gpt-4o-mini); default: scripted,"
                             " offline")
    parser.add_argument("--auto", choices=("approve", "reject"),
                        help="answer every request automatically (for CI and smoke runs)")
    parser.add_argument("--store", metavar="URL",
                        help="where requests and the audit live (sqlite:///file.db, "
                             "postgresql://...); default: a throwaway SQLite file")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                        help="how long a person has to answer before the request is "
                             "rejected as timed out (default: %(default)s)")
    parser.add_argument("--wait", action="store_true",
                        help="with no terminal, keep waiting (up to --timeout) for an answer "
                             "from another terminal instead of exiting")
    return parser


@dataclass
class _Channel:
    notifiers: list[Notifier]
    label: str
    waits: bool  # whether the run keeps waiting for the person after filing


def _channel(args: argparse.Namespace) -> _Channel:
    if args.auto:
        decision: dict[str, Any] = {"type": "approve"}
        if args.auto == "reject":
            decision = {"type": "reject", "message": "rejected by --auto reject"}
        return _Channel([ScriptedApprover(decision, actor=f"demo --auto {args.auto}")],
                        f"answered automatically (--auto {args.auto})", True)
    token = os.environ.get("TELEGRAM_BOT_TOKEN")
    chat = os.environ.get("TELEGRAM_CHAT_ID") or os.environ.get("TELEGRAM_DEFAULT_CHAT_ID")
    if token and chat:
        try:
            chat_id = int(chat)
        except ValueError as exc:
            raise ConfigurationError(
                f"TELEGRAM_CHAT_ID must be a numeric chat id, got {chat!r} (send /start to "
                "your bot to see yours)") from exc
        from loopgate_lc.notifiers.telegram import TelegramNotifier

        return _Channel([TelegramNotifier(token, default_chat_id=chat_id)],
                        f"Telegram chat {chat_id}", True)
    unused = " (TELEGRAM_BOT_TOKEN is set; add TELEGRAM_CHAT_ID for Telegram)" if token else ""
    if has_terminal():
        return _Channel([ConsoleNotifier()],
                        f"this terminal (or `{cli_command()} approve`){unused}", True)
    return _Channel([], f"nobody yet: no terminal{unused}", args.wait)


def _explain_no_terminal(out: _Out, record: RequestRecord, store: str, throwaway: bool
                         ) -> None:
    out(render_request(record))
    out()
    out("This run has no terminal to ask, so the request stays pending and nothing was "
        "deployed to production. To answer it:")
    cli = cli_command()
    out(f"  * run `{cli} demo` in a terminal and answer at the prompt, or")
    out(f"  * let the demo answer itself: `{cli} demo --auto approve` (or --auto reject), or")
    shared = None if throwaway else store  # a throwaway store is gone: the default one
    wait = store_command("demo --wait", shared)
    approve = store_command("approve <request id it prints>", shared)
    if wait is not None and approve is not None:  # another process sees the store
        out("  * keep the run waiting and answer from another terminal:")
        out(f"      {wait}")
        out(f"      {approve}")


def _say_waiting(out: _Out, record: RequestRecord, store: str, *, only_cli: bool = False
                 ) -> None:
    out(f"waiting for a person on request {record.id}")
    where = "from another terminal" if only_cli else "or, from another terminal"
    out(f"  ({where}: {answer_hint(record.id, store)})")


def _run(args: argparse.Namespace, out: _Out) -> int:
    release = Release()
    channel = _channel(args)
    model = load_model(args.model) if args.model else scripted_model()
    temp_dir: str | None = None
    store = args.store
    if store is None:
        temp_dir = tempfile.mkdtemp(prefix="loopgate-demo-")
        store = f"sqlite:///{os.path.join(temp_dir, 'loopgate.db')}"

    def on_filed(record: RequestRecord) -> None:
        # Runs before the notifiers are called, so this line comes before the prompt.
        if channel.notifiers and not args.auto:
            _say_waiting(out, record, store)

    gate = Loopgate(store=store, notifiers=channel.notifiers, policies=policies(),
                    default_timeout=args.timeout, hooks=Hooks(on_filed=on_filed),
                    poll_interval=0.25)
    thread_id = f"demo-{uuid.uuid4().hex[:8]}"
    try:
        agent = build_agent(model, build_tools(release, gate))
        out("loopgate demo: a release agent checks CI, then deploys. Production needs a person.")
        model_name = args.model or "scripted (offline; --model provider:name for a real one)"
        out(f"  model:     {model_name}")
        out(f"  approvals: {channel.label}")
        out(f"  store:     {printable_store_url(store)}"
            + (" (throwaway)" if temp_dir else ""))
        out()
        out(f"you: {TASK}")
        stopped_early = False
        stream = gate.stream(agent, {"messages": [("user", TASK)]},
                             {"configurable": {"thread_id": thread_id}},
                             stream_mode="updates", name="release-agent")
        try:
            for kind, item in stream:
                if kind == "chunk":
                    _show_update(out, gate, item)
                elif kind == "requested" and item.pending and not channel.waits:
                    _explain_no_terminal(out, item, store, temp_dir is not None)
                    stopped_early = True
                    break
                elif kind == "requested" and not channel.notifiers:
                    out(render_request(item))
                    _say_waiting(out, item, store, only_cli=True)
                elif kind == "decided":
                    who = f" by {item.decided_by}" if item.decided_by else ""
                    out(f"  == request {item.id[:8]} {item.status}{who}")
        finally:
            close = getattr(stream, "close", None)
            if close is not None:  # leave the paused run behind now, not at collection
                close()
        out()
        if not stopped_early:
            shipped = ", ".join(release.deployed) or "nothing"
            out(f"deployed: {shipped}")
            out()
        out("audit trail:")
        out(render_audit(gate.audit(thread_id=thread_id)))
        return EXIT_OK
    finally:
        gate.close()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the process exit code.

    Exit codes: 0 done (also when the request was left pending for lack of a terminal),
    1 the run failed (a model error, say), 2 bad options or setup, 130 interrupted.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.timeout > 0 or args.timeout == float("inf"):
        parser.error("--timeout must be a positive number of seconds")
    err = _Out(sys.stderr)
    try:
        return _run(args, _Out(sys.stdout))
    except ConfigurationError as exc:
        err(f"loopgate-lc demo: {exc}")
        return EXIT_USAGE
    except LoopgateError as exc:
        err(f"loopgate-lc demo: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        err("\nstopped; nothing else will run")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a real model's network or auth failure, told plainly
        err(f"loopgate-lc demo: the run failed: {type(exc).__name__}: {exc}")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
