"""``loopgate-lc demo`` as a user runs it: a real store, a real terminal (a
pseudo-terminal), a real Telegram Bot API fake, and never a hang.

Runs that need nothing but arguments call ``demo.main(argv)`` in this process (with stdin at
end of file, as with no terminal), the code ``python -m loopgate_lc.demo`` runs, without a
new interpreter importing LangChain again; a terminal, a second process and Telegram get
real processes.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from loopgate_lc.cli import main as cli_main
from loopgate_lc.demo import main as demo_main
from loopgate_lc.fake_telegram import FakeBotAPI
from loopgate_lc.gateway import Loopgate
from loopgate_lc.locations import cli_command
from tests.support.inprocess import Ran, run_main

TIMEOUT = 60  # generous: a hang is what these tests catch, not slowness
DEMO = [sys.executable, "-m", "loopgate_lc.demo"]
CLI = [sys.executable, "-m", "loopgate_lc.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus anything that would reach a real bot or store."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TELEGRAM_", "LOOPGATE_"))}
    env.update(extra)
    return env


@pytest.fixture
def run_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """``loopgate-lc demo ARGS`` (or, with ``cli=True``, ``loopgate-lc ARGS``) in this
    process, in a fresh working directory, with no terminal and no bot configured."""

    def run(*args: str, cli: bool = False) -> Ran:
        main = cli_main if cli else demo_main
        return run_main(lambda: main(list(args)), cwd=tmp_path, monkeypatch=monkeypatch,
                        capture=capsys, drop_env=("TELEGRAM_", "LOOPGATE_"))

    return run


class Lines:
    """Reads a child's output on a thread, so waiting for a line has a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def until(self, pattern: re.Pattern[str], timeout: float = TIMEOUT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            found = pattern.search(line)
            if found:
                return found
        raise AssertionError(f"{pattern.pattern!r} never printed:\n{''.join(self.seen)}")

    def rest(self) -> str:
        for _ in range(100_000):
            line = self._queue.get(timeout=TIMEOUT)
            if line is None:
                break
            self.seen.append(line)
        return "".join(self.seen)


@pytest.fixture
def child() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started, killed if the test fails before they end."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_without_a_terminal_it_files_explains_and_exits_0(
        tmp_path: Path, run_demo: Callable[..., Ran]) -> None:
    done = run_demo()
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "no terminal to ask" in out and "stays pending" in out
    assert f"`{cli_command()} demo --auto approve`" in out
    assert f"{cli_command()} approve <request id it prints> --store sqlite:///" in out
    assert "live on production" not in out and "deployed:" not in out
    # the read-only checks and the staging deploy went through on policy alone
    assert "live on staging" in out
    assert re.search(r"auto_approved\s+check_build_status", out)
    assert re.search(r"requested\s+deploy #", out)
    assert list(tmp_path.iterdir()) == []  # the throwaway store is not left in the cwd


def test_make_demos_hints_work_in_a_shell_that_never_activated_the_environment(
        tmp_path: Path) -> None:
    # `make demo` runs .venv/bin/loopgate-lc by its path; the shell it prints to has no
    # loopgate-lc on its PATH, so what it tells that person to run must say where it is
    script = Path(sys.executable).parent / "loopgate-lc"
    if not script.is_file():
        pytest.skip("loopgate-lc is not installed in this environment")
    env = clean_env(PATH="/usr/bin:/bin")
    first = subprocess.run([str(script), "demo"], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path,
                           env=env)
    assert first.returncode == 0, first.stderr
    hint = re.search(r"`([^`]+ demo --auto approve)`", first.stdout)
    assert hint, first.stdout
    followed = subprocess.run(shlex.split(hint.group(1)), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=TIMEOUT,
                              cwd=tmp_path, env=env)
    assert followed.returncode == 0, followed.stderr
    assert "deployed: staging, production" in followed.stdout


def test_auto_approve_deploys_and_prints_the_audit_trail(
        tmp_path: Path, run_demo: Callable[..., Ran]) -> None:
    store = f"sqlite:///{tmp_path / 'demo.db'}"
    done = run_demo("--auto", "approve", "--store", store)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "<- deploy: version 1.4.2 is live on production" in out
    assert "deployed: staging, production" in out
    assert "audit trail:" in out
    assert re.search(r"decided:approved\s+deploy #\w+\s+demo --auto approve", out)
    # the trail printed is the one kept in the store
    with Loopgate(store=store) as gate:
        events = [e.event for e in gate.audit()]
    assert events.count("auto_approved") == 3
    assert events.count("requested") == 1 and events.count("decided:approved") == 1


def test_auto_reject_does_not_deploy_to_production(run_demo: Callable[..., Ran]) -> None:
    done = run_demo("--auto", "reject")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "deployed: staging\n" in out
    assert "live on production" not in out
    assert "production was not approved" in out
    assert re.search(r"decided:rejected\s+deploy #", out)


def test_nobody_answering_in_time_fails_closed(run_demo: Callable[..., Ran]) -> None:
    done = run_demo("--wait", "--timeout", "1")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "deployed: staging\n" in out and "live on production" not in out
    assert re.search(r"timed_out\s+deploy #\w+\s+-\s+timer\s+no answer within 1s; the "
                     r"configured outcome is reject", out)


def test_the_cli_subcommand_runs_the_same_demo(run_demo: Callable[..., Ran]) -> None:
    done = run_demo("demo", "--auto", "approve", cli=True)
    assert done.returncode == 0, done.stderr
    assert "deployed: staging, production" in done.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_a_person_at_the_terminal_approves(tmp_path: Path,
                                           child: list[subprocess.Popen[str]]) -> None:
    import pty
    import select

    master, slave = pty.openpty()
    process = subprocess.Popen(DEMO, stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path,
                               env=clean_env(), close_fds=True)
    child.append(process)  # type: ignore[arg-type]
    os.close(slave)
    seen = b""
    answered = False
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            seen += data
            if not answered and b"[a]pprove" in seen:
                os.write(master, b"a\n")
                answered = True
    finally:
        os.close(master)
    text = seen.decode(errors="replace")
    assert process.wait(10) == 0, text
    assert answered, text
    assert "=== loopgate: tool_approval needs a person ===" in text
    assert "deploy version 1.4.2 to production" in text
    assert "deployed: staging, production" in text
    assert re.search(r"decided:approved\s+deploy #\w+\s+console:", text)


def test_wait_takes_the_answer_from_another_terminal(
    tmp_path: Path, child: list[subprocess.Popen[str]]
) -> None:
    (tmp_path / "elsewhere").mkdir()
    process = subprocess.Popen([*DEMO, "--wait", "--store", "sqlite:///demo.db"],  # relative
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                               env=clean_env())
    child.append(process)
    assert process.stdout is not None
    lines = Lines(process.stdout)
    advice = lines.until(re.compile(r"`([^`]*loopgate-lc reject \S+ --store \S+) --reason TEXT`"))
    # followed as printed, from another folder
    command = [*shlex.split(advice.group(1)), "--reason", "release freeze"]
    answer = subprocess.run(command, capture_output=True, text=True,
                            timeout=TIMEOUT, cwd=tmp_path / "elsewhere", env=clean_env())
    assert answer.returncode == 0, answer.stderr
    assert process.wait(TIMEOUT) == 0
    out = lines.rest()
    assert "release freeze" in out
    assert "live on production" not in out
    assert re.search(r"decided:rejected\s+deploy #\w+\s+\S+\s+cli", out)


def test_telegram_is_used_when_a_bot_and_chat_are_configured(
    tmp_path: Path, child: list[subprocess.Popen[str]]
) -> None:
    chat = 4242
    with FakeBotAPI() as api:
        env = clean_env(TELEGRAM_BOT_TOKEN=api.token, TELEGRAM_CHAT_ID=str(chat),
                        TELEGRAM_API_BASE_URL=api.base_url)
        process = subprocess.Popen(DEMO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=env)
        child.append(process)
        (message,) = api.wait_for(lambda: api.messages(chat), timeout=TIMEOUT)
        assert "deploy version 1.4.2 to production" in message["plain_text"]
        buttons = [b for row in message["reply_markup"]["inline_keyboard"] for b in row]
        approve = next(b for b in buttons if "Approve" in b["text"])
        api.tap(chat, message["message_id"], approve["callback_data"],
                {"id": chat, "first_name": "Ana", "username": "ana"})
        out, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, out
    assert "approvals: Telegram chat 4242" in out
    assert "deployed: staging, production" in out
    assert re.search(r"decided:approved\s+deploy #\w+\s+telegram:4242 \(@ana\)", out)


@pytest.mark.parametrize(("model", "says"), [
    ("gpt-4o", "takes provider:name"),
    ("no-such-provider:x", "cannot start 'no-such-provider:x'"),
    ("openai:gpt-4o-mini", "cannot load 'openai:gpt-4o-mini'"),
])
def test_an_unusable_model_is_refused_clearly(run_demo: Callable[..., Ran], model: str,
                                              says: str) -> None:
    if model.startswith("openai:"):
        try:
            import langchain_openai  # noqa: F401
        except ImportError:
            pass
        else:
            pytest.skip("langchain-openai is installed, so this provider would load")
    done = run_demo("--model", model)
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    assert "deploy" not in done.stdout  # nothing ran


def test_a_bad_timeout_is_a_usage_error(run_demo: Callable[..., Ran]) -> None:
    done = run_demo("--timeout", "0")
    assert done.returncode == 2
    assert "--timeout must be a positive number" in done.stderr
