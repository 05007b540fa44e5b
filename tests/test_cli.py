"""``loopgate-lc``: subcommands on a temp SQLite store, as subprocesses (the real console
entry) and in-process through ``main(argv)`` where only the output matters."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from loopgate_lc.cli import main
from loopgate_lc.errors import StoreError
from loopgate_lc.fake_telegram import FakeBotAPI
from loopgate_lc.gateway import Loopgate
from loopgate_lc.locations import cli_command
from loopgate_lc.schema import utcnow
from loopgate_lc.stores import OutboxItem, open_store
from loopgate_lc.testing.langgraph_dev import free_port, wait_ready

ENTRY = [sys.executable, "-m", "loopgate_lc.cli"]


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def gateway(store: str) -> Any:
    with Loopgate(store) as gw:
        gw.register_session("ops", client_id="ci")
        yield gw


def run(*args: str, cwd: Path, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENTRY, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def test_approve_then_approve_again_exits_1_with_who_decided(
        gateway: Loopgate, store: str, tmp_path: Path) -> None:
    record = gateway.submit("Deploy v2.1.0?", session_id="ops")
    first = run("approve", record.id, "--as", "ann", "--store", store, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"request {record.id}: approved (approved) by cli:ann" in first.stdout
    decided = gateway.get(record.id)
    assert (decided.status.value, decided.decided_by, decided.channel) == (
        "approved", "cli:ann", "cli")

    second = run("reject", record.id, "--reason", "changed my mind", "--store", store,
                 cwd=tmp_path)
    assert second.returncode == 1
    assert "was already approved by cli:ann via cli" in second.stderr
    assert gateway.get(record.id).status.value == "approved"


def test_an_overdue_request_is_left_to_the_process_that_times_it_out(
        store: str, tmp_path: Path) -> None:
    # filed two hours ago with a one-hour deadline; nothing has timed it out yet
    two_hours_ago = utcnow() - timedelta(hours=2)
    with Loopgate(store, timers=False, clock=lambda: two_hours_ago) as filer:
        record = filer.submit("Deploy v2.1.0?", timeout=3600)
    answer = run("approve", record.id, "--store", store, cwd=tmp_path)
    assert answer.returncode == 1
    assert f"request '{record.id}' passed its deadline at" in answer.stderr
    assert "on_timeout" in answer.stderr

    async def read() -> tuple[str, list[str]]:
        opened = open_store(store)
        await opened.setup()
        try:
            kept = await opened.get_request(record.id)
            events = await opened.list_audit(request_id=record.id)
        finally:
            await opened.close()
        return kept.status.value, [e.event for e in events]

    status, events = asyncio.run(read())
    assert status == "pending"  # nothing decided, nothing audited as decided
    assert not [e for e in events if e.startswith("decided")]


def test_unknown_id_exits_1_and_store_from_the_environment(
        gateway: Loopgate, store: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LOOPGATE_STORE", store)
    assert main(["approve", "no-such-id"]) == 1
    assert "no approval request with id 'no-such-id'" in capsys.readouterr().err


def test_pending_json_with_the_store_from_dotenv(gateway: Loopgate, store: str,
                                                 tmp_path: Path) -> None:
    waiting = gateway.submit("Ship it?", session_id="ops", options=["Deploy", "Skip"])
    done = gateway.submit("Old one", session_id="ops")
    gateway.respond(done.id, {"type": "approve"}, actor="ann")
    (tmp_path / ".env").write_text(f"LOOPGATE_STORE={store}\n")  # .env is honoured
    env = {k: v for k, v in os.environ.items() if k != "LOOPGATE_STORE"}
    pending = subprocess.run([*ENTRY, "pending", "--json"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
    assert pending.returncode == 0, pending.stderr
    [listed] = json.loads(pending.stdout)
    assert listed["request_id"] == waiting.id
    assert listed["options"] == [{"label": "Deploy", "approved": True},
                                 {"label": "Skip", "approved": False}]


def test_audit_json_lines(gateway: Loopgate, store: str,
                          capsys: pytest.CaptureFixture[str]) -> None:
    done = gateway.submit("Old one", session_id="ops")
    gateway.respond(done.id, {"type": "approve"}, actor="ann")
    assert main(["audit", "--json", "--request", done.id, "--store", store]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events] == ["requested", "decided:approved"]
    assert events[-1]["actor"] == "ann"


def test_pending_and_audit_as_text(gateway: Loopgate, store: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pending", "--store", store]) == 0
    assert "no pending requests" in capsys.readouterr().out
    record = gateway.submit("Deploy   to\nproduction?", session_id="ops",
                            options=["Deploy", "Cancel"])
    assert main(["pending", "--store", store, "--session", "ops"]) == 0
    out = capsys.readouterr().out
    assert record.id in out
    assert "Deploy to production?" in out  # one line, whitespace folded
    assert "[Deploy | Cancel (no)]" in out
    assert "1 pending" in out
    assert main(["audit", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "session_registered" in out and "requested" in out


def test_approve_picks_the_one_approving_option(gateway: Loopgate, store: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    record = gateway.submit("Deploy?", session_id="ops",
                            options=["Cancel", "Deploy", "Deploy to Staging First"])
    assert main(["approve", record.id, "--as", "bob", "--store", store]) == 0
    assert "answered with 'Deploy' (approved) by cli:bob" in capsys.readouterr().out


def test_several_approving_options_print_commands_that_work(
        gateway: Loopgate, store: str, tmp_path: Path) -> None:
    record = gateway.submit("Deploy?", session_id="ops",
                            options=["Deploy", "Deploy Immediately", "Cancel"])
    refused = run("approve", record.id, "--store", store, cwd=tmp_path)
    assert refused.returncode == 1
    assert gateway.get(record.id).pending
    commands = [line.strip() for line in refused.stderr.split(" or ")
                if "--choice" in line]
    assert len(commands) == 2 and "Cancel" not in refused.stderr.split(": ", 2)[-1]
    advice = commands[1][commands[1].index("loopgate-lc"):]
    followed = run(*shlex.split(advice)[1:], cwd=tmp_path.parent)  # another folder
    assert followed.returncode == 0, followed.stderr
    assert gateway.get(record.id).decision["message"] == "Deploy Immediately"  # type: ignore[index]


def test_reject_works_on_options_and_records_not_approved(
        gateway: Loopgate, store: str, capsys: pytest.CaptureFixture[str]) -> None:
    record = gateway.submit("Deploy?", session_id="ops", options=["Deploy", "Cancel"])
    assert main(["reject", record.id, "--reason", "tests are red", "--store", store]) == 0
    assert "rejected (not approved)" in capsys.readouterr().out
    decided = gateway.get(record.id)
    assert decided.decision["message"] == "tests are red"  # type: ignore[index]
    assert gateway.wait(record.id).status.value == "rejected"


@pytest.mark.parametrize("kind", ["approval", "confirmation", "choice", "input", "feedback",
                                  "annotation"])
def test_approve_and_reject_work_on_every_kind(gateway: Loopgate, store: str, kind: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    options = ["Yes", "No"] if kind == "choice" else []
    text = ["--text", "looks fine"] if kind in ("input", "feedback", "annotation") else []
    yes = gateway.submit("Well?", kind=kind, session_id="ops", options=options)
    assert main(["approve", yes.id, *text, "--store", store]) == 0
    assert "(approved)" in capsys.readouterr().out
    no = gateway.submit("Well?", kind=kind, session_id="ops", options=options)
    assert main(["reject", no.id, "--reason", "nope", "--store", store]) == 0
    assert "rejected (not approved)" in capsys.readouterr().out


def test_choosing_an_option_explicitly(gateway: Loopgate, store: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    record = gateway.submit("Deploy?", session_id="ops", options=["Deploy", "Cancel"])
    assert main(["approve", record.id, "--choice", "Cancel", "--as", "bob",
                 "--store", store]) == 0
    assert "answered with 'Cancel' (not approved) by cli:bob" in capsys.readouterr().out


def test_audit_limit_shows_the_newest(gateway: Loopgate, store: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    first = gateway.submit("First?", session_id="ops")
    last = gateway.submit("Last?", session_id="ops")
    gateway.respond(last.id, {"type": "approve"}, actor="ann")
    assert main(["audit", "--limit", "1", "--json", "--store", store]) == 0
    [event] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (event["event"], event["request_id"]) == ("decided:approved", last.id)
    assert first.id != last.id


def _follow(first: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Run a listing, then every next-page command it prints, as printed; the pages'
    stdout, in order."""
    pages: list[str] = []
    argv: list[str] | None = first
    for _ in range(20):
        if argv is None:
            return pages
        assert main(argv) == 0
        got = capsys.readouterr()
        pages.append(got.out)
        hints = [line.removeprefix("loopgate-lc: more: ") for line in got.err.splitlines()
                 if line.startswith("loopgate-lc: more: ")]
        assert len(hints) <= 1
        argv = None
        if hints:  # this environment's program, then the arguments to run it with
            program = shlex.split(cli_command())
            command = shlex.split(hints[0])
            assert command[:len(program)] == program
            argv = command[len(program):]
    raise AssertionError("the pages never ended")


def test_pending_pages_and_the_printed_next_page_command_works(
        gateway: Loopgate, store: str, capsys: pytest.CaptureFixture[str]) -> None:
    gateway.register_session("it's ops", client_id="ci")  # quoting must survive
    filed = [gateway.submit(f"Question {n}?", session_id="it's ops").id for n in range(7)]
    gateway.submit("Someone else's?", session_id="ops")
    pages = _follow(["pending", "--store", store, "--session", "it's ops", "--limit", "3",
                     "--json"], capsys)
    assert [len(json.loads(page)) for page in pages] == [3, 3, 1]
    assert [r["request_id"] for page in pages for r in json.loads(page)] == filed
    text = _follow(["pending", "--store", store, "--limit", "5"], capsys)
    assert "5 pending, more on the next page" in text[0] and "3 pending" in text[1]
    assert main(["pending", "--store", store, "--after", "no-such-id"]) == 1
    assert "no approval request with id 'no-such-id'" in capsys.readouterr().err


@pytest.mark.parametrize("limit", ["0", "1001", "x"])
def test_listing_limits_are_bounded(store: str, limit: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("pending", "audit", "deliveries"):
        with pytest.raises(SystemExit) as exited:
            main([command, "--store", store, "--limit", limit])
        assert exited.value.code == 2
        assert "--limit" in capsys.readouterr().err


def test_audit_pages_back_from_the_newest_by_following_the_hint(
        gateway: Loopgate, store: str, capsys: pytest.CaptureFixture[str]) -> None:
    for n in range(4):
        gateway.submit(f"Question {n}?", session_id="ops")
    everything = [e.id for e in gateway.audit()]
    assert len(everything) >= 5
    pages = _follow(["audit", "--store", store, "--limit", "2", "--json"], capsys)
    ids = [[json.loads(line)["id"] for line in page.splitlines()] for page in pages]
    assert ids[0] == everything[-2:]  # the newest first, each page in order
    assert [i for page in reversed(ids) for i in page] == everything
    only = _follow(["audit", "--store", store, "--session", "ops", "--limit", "3",
                    "--json"], capsys)
    assert sum(len(page.splitlines()) for page in only) == len(gateway.audit(
        session_id="ops"))


def test_dead_deliveries_page_by_following_the_hint(
        gateway: Loopgate, store: str, capsys: pytest.CaptureFixture[str]) -> None:
    record = gateway.submit("Deploy?", session_id="ops")

    async def give_up() -> None:
        async with open_store(store) as opened:
            for n in range(5):
                item = await opened.enqueue_outbox(OutboxItem(request_id=record.id,
                                                              notifier=f"chan{n}"))
                assert item.id is not None
                await opened.complete_outbox(item.id, error=f"gone {n}")

    asyncio.run(give_up())
    pages = _follow(["deliveries", "--store", store, "--limit", "2", "--json"], capsys)
    notifiers = [[json.loads(line)["notifier"] for line in page.splitlines()]
                 for page in pages]
    assert notifiers == [["chan0", "chan1"], ["chan2", "chan3"], ["chan4"]]


def test_read_only_commands_never_create_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here.db"
    for command in (["pending"], ["audit"], ["approve", "some-id"]):
        done = run(*command, "--store", f"sqlite:///{missing}", cwd=tmp_path)
        assert f"store sqlite:///{missing}" in done.stderr
    assert not missing.exists()
    assert "no pending requests" in run("pending", "--store", f"sqlite:///{missing}",
                                        cwd=tmp_path).stdout


def test_one_default_store_per_user_whatever_the_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = {"XDG_DATA_HOME": str(tmp_path / "data")}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    listed = run("pending", cwd=tmp_path / "a", env=home)
    assert listed.returncode == 0 and not (tmp_path / "data").exists()  # read-only: no file
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", home["XDG_DATA_HOME"])
    with Loopgate() as gw:  # a script's gateway meets the CLI on the same default store
        record = gw.submit("Ship?")
    shown = run("pending", cwd=tmp_path / "b", env=home)
    assert record.id in shown.stdout
    assert "loopgate-lc" in shown.stderr and "loopgate.db" in shown.stderr
    approved = run("approve", record.id, cwd=tmp_path / "a", env=home)
    assert approved.returncode == 0, approved.stderr


def test_input_requests_need_text(gateway: Loopgate, store: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    record = gateway.submit("Which region?", kind="input", session_id="ops")
    assert main(["approve", record.id, "--store", store]) == 1
    assert "--text" in capsys.readouterr().err
    assert main(["approve", record.id, "--text", "eu-west-1", "--store", store]) == 0
    assert gateway.get(record.id).decision == {
        "type": "respond", "message": "eu-west-1", "actor": gateway.get(record.id).decided_by,
        "channel": "cli"}


def test_reject_records_the_reason(gateway: Loopgate, store: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    record = gateway.submit("Drop the table?", session_id="ops")
    assert main(["reject", record.id, "--reason", "not on a Friday", "--store", store]) == 0
    assert "rejected (not approved)" in capsys.readouterr().out
    assert gateway.get(record.id).decision["message"] == "not on a Friday"  # type: ignore[index]


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["reject", "some-id"])  # --reason is required
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["launch"])
    assert main(["pending", "--env-file", str(tmp_path / "missing.env")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_demo_is_delegated(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    import loopgate_lc.demo as demo

    monkeypatch.setattr(demo, "main", lambda argv: seen.append(argv) or 0)
    assert main(["demo", "--auto", "approve", "--unknown-to-us"]) == 0
    assert seen == [["--auto", "approve", "--unknown-to-us"]]


def _interrupt(proc: subprocess.Popen[str]) -> None:
    """Stop a server the way Ctrl-C does; kill it only if it will not stop."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@contextlib.contextmanager
def _serving(port: int, args: list[str], cwd: Path, env: dict[str, str]
             ) -> Iterator[str]:
    """``loopgate-lc serve`` in its own process, ready: its base URL. Stopped as Ctrl-C
    stops it, and it must then exit cleanly."""
    proc = subprocess.Popen([*ENTRY, "serve", "--log-level", "warning", *args], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, proc, timeout=30, path="/health")
        except RuntimeError:  # it exited: say why
            pytest.fail(proc.stderr.read() if proc.stderr else "serve exited")
        yield base
    finally:
        _interrupt(proc)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""


def test_serve_on_a_new_machine_makes_the_per_user_store(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "no-such-dir-yet"  # a new machine: the data directory is missing
    env = {k: v for k, v in os.environ.items() if k != "LOOPGATE_STORE"}
    env["XDG_DATA_HOME"] = str(data)
    with _serving(port, ["--port", str(port), "--no-mcp"], tmp_path, env) as base:
        httpx.post(f"{base}/hitl/register", json={"session_id": "s", "telegram_id": 42})
        filed = httpx.post(f"{base}/hitl/request", json={"session_id": "s",
                                                         "message": "Ship it?"})
        assert filed.status_code == 200, filed.text
    shown = run("pending", cwd=tmp_path, env={"XDG_DATA_HOME": str(data)})
    assert filed.json()["request_id"] in shown.stdout


def test_a_gateway_on_a_mistyped_store_path_makes_no_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "gate.db"
    with pytest.raises(StoreError, match="unable to open database file"), \
            Loopgate(f"sqlite:///{missing}") as gate:
        gate.pending()
    assert not missing.parent.exists()


def test_serve_reads_port_keys_store_and_telegram_from_the_environment(
        tmp_path: Path, store: str) -> None:
    port = free_port()
    (tmp_path / ".env").write_text(f"SERVER_PORT={port}\nLOOPGATE_API_KEYS=ops=k-123\n")
    fake = FakeBotAPI().start()
    env = {**os.environ, "LOOPGATE_STORE": store, "TELEGRAM_BOT_TOKEN": fake.token,
           "TELEGRAM_API_BASE_URL": fake.base_url}
    try:
        with _serving(port, [], tmp_path, env) as base:
            health = httpx.get(f"{base}/health")
            assert (health.json()["auth"], health.json()["telegram"]) == (True, True)
            assert httpx.get(f"{base}/hitl/pending").status_code == 401
            auth = {"Authorization": "Bearer k-123"}
            authed = httpx.post(f"{base}/hitl/register", json={"session_id": "s",
                                                                "telegram_id": 42},
                                headers=auth)
            assert authed.status_code == 200
            httpx.post(f"{base}/hitl/request", json={"session_id": "s",
                                                     "message": "Ship it?"}, headers=auth)
            [message] = fake.wait_for(lambda: fake.messages(42), timeout=10)
            assert "Ship it?" in message["plain_text"]
    finally:
        fake.stop()
    with Loopgate(store) as gw:  # the server wrote to the store it was given
        assert gw.session("s").active


def test_serve_without_a_channel_warns_loudly_and_its_commands_work_as_printed(
        tmp_path: Path, store: str) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TELEGRAM_", "LOOPGATE_"))}
    proc = subprocess.Popen([*ENTRY, "serve", "--store", store, "--port", str(port),
                             "--log-level", "warning"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    said: list[str] = []
    try:
        assert proc.stderr is not None
        for _ in range(20):  # printed before serving: up to the warning's closing bar
            said.append(proc.stderr.readline())
            if sum(line.startswith("!!!") for line in said) == 2 or not said[-1]:
                break
        text = "".join(said)
        assert f"store {store}" in text
        assert "WARNING: no notification channel is configured" in text
        assert "requests without timeout_seconds end after 3600 s" in text
        # each command it names, pasted as printed into another folder, reaches this store
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        pending = re.search(r"`([^`]+ pending --store [^`]+)`", text.replace("\n", " "))
        assert pending, text
        listed = subprocess.run(shlex.split(pending.group(1)), capture_output=True,
                                text=True, timeout=60, cwd=elsewhere, env=env)
        assert listed.returncode == 0, listed.stderr
        assert f"store {store}" in listed.stderr
        sign_in = re.search(r"sign in: `([^`]+)`", text)
        assert sign_in, text
        made = subprocess.run(shlex.split(sign_in.group(1).replace("NAME", "ann")),
                              capture_output=True, text=True, timeout=60, cwd=elsewhere,
                              env=env)
        assert made.returncode == 0, made.stderr
        link = made.stdout.strip()
        assert link.startswith(f"http://127.0.0.1:{port}/inbox/link/"), link
        wait_ready(f"http://127.0.0.1:{port}", proc, timeout=30, path="/health")
        shown = httpx.get(link, timeout=10)  # the link this server made signs in here
        assert shown.status_code == 200 and "Sign in as ann" in shown.text, shown.text
    finally:
        _interrupt(proc)


def test_audit_filters_by_event_kind(gateway: Loopgate, store: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from langchain.agents import create_agent
    from langchain_core.tools import tool
    from langgraph.checkpoint.memory import InMemorySaver

    from loopgate_lc import ApprovalPolicy, RiskLevel, guard
    from loopgate_lc.testing import ScriptedApprover, ScriptedChatModel, ai, call

    @tool
    def send_email(to: str) -> str:
        """Send an email."""
        return "sent"

    watched = [ApprovalPolicy("mail-auto", "send_*", 0.8, RiskLevel.DATA_MODIFICATION,
                              shadow=True)]
    agent = create_agent(
        ScriptedChatModel(script=[ai("", call("send_email", to="ceo")), "ok"]),
        tools=[guard(send_email, policies=watched, risk="data_modification",
                     confidence=0.9)],
        checkpointer=InMemorySaver())
    with Loopgate(store, notifiers=[ScriptedApprover()]) as gate:
        gate.run(agent, {"messages": [("user", "mail")]})
    assert main(["audit", "--event", "shadow", "--json", "--store", store]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["event"], e["details"]["would"], e["details"]["enforced"]) for e in lines] == [
        ("shadow", "auto", "ask")]
    assert main(["audit", "--event", "nothing-like-it", "--store", store]) == 0
    assert capsys.readouterr().out == "no audit events\n"


def test_votes_from_the_cli_say_the_request_is_still_pending(
        store: str, capsys: pytest.CaptureFixture[str]) -> None:
    from loopgate_lc.policy import ApprovalPolicy

    two = ApprovalPolicy(name="two", tool_pattern="deploy", require_explicit=True, quorum=2)
    with Loopgate(store, policies=[two]) as gw:
        gw.register_session("quorum", client_id="ci", approvers=["ann", "bob"])
        record = gw.submit("Deploy?", session_id="quorum", tool_name="deploy",
                           risk="irreversible", confidence=1.0)
    assert main(["pending", "--store", store, "--session", "quorum"]) == 0
    assert "(Approvals: 0 of 2)" in capsys.readouterr().out
    assert main(["approve", record.id, "--as", "ann", "--store", store]) == 0
    assert (f"request {record.id}: vote counted, still pending (Approvals: 1 of 2)"
            in capsys.readouterr().out)
    assert main(["approve", record.id, "--as", "ann", "--store", store]) == 1
    assert "ann already voted approve" in capsys.readouterr().err
    assert main(["approve", record.id, "--as", "bob", "--store", store]) == 0
    assert (f"request {record.id}: approved (approved) by cli:ann, cli:bob"
            in capsys.readouterr().out)


def test_store_commands_on_postgresql_decide_on_an_event_loop(
        postgres_dsn: str, pg_schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Only a SQLite file is read inline; any other store runs the same commands through
    its own async driver, with the same output and exit codes."""
    import psycopg

    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{pg_schema}"')
    url = (f"{postgres_dsn}{'&' if '?' in postgres_dsn else '?'}"
           f"options=-csearch_path%3D{pg_schema}")
    with Loopgate(url, timers=False) as gate:
        record = gate.submit("Deploy v2.1.0 on PostgreSQL?")
    assert main(["pending", "--store", url]) == 0
    assert record.id in capsys.readouterr().out
    assert main(["approve", record.id, "--as", "ann", "--store", url]) == 0
    assert f"request {record.id}: approved (approved) by cli:ann" in capsys.readouterr().out
    assert main(["reject", record.id, "--reason", "late", "--store", url]) == 1
    assert "was already approved by cli:ann via cli" in capsys.readouterr().err
    assert main(["audit", "--request", record.id, "--store", url]) == 0
    assert "decided:approved" in capsys.readouterr().out
