"""Every Python block of the README runs as copied.

Blocks under one ``##`` heading continue each other (like notebook cells), so each
section runs as one script, in a fresh folder and a fresh per-user data directory. It runs
in the test's own process (``tests/support/inprocess.py``), from an empty namespace, as
``python -c`` would run it: a new interpreter would cost a second or more of importing
LangChain and LangGraph per section. What a finished process would show is checked too:
its exit code, and no thread of its own left running (one would keep a process alive).
Blocks that need a Telegram bot get a FakeBotAPI through the environment (as a reader's
real token would come); the PostgreSQL block gets ``DATABASE_URL`` from
``LOOPGATE_TEST_POSTGRES_DSN`` and is skipped, with that reason, without it.
"""

from __future__ import annotations

import contextlib
import os
import re
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from loopgate_lc.fake_telegram import FakeBotAPI
from tests.support.inprocess import run_main
from tests.support.postgres import fresh_database

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"^(?P<indent>[ \t]*)```python\n(?P<code>.*?)^(?P=indent)```", re.S | re.M)


def sections() -> dict[str, str]:
    """Heading -> the section's Python blocks, joined in order."""
    found: dict[str, str] = {}
    for part in re.split(r"^## ", README, flags=re.M)[1:]:
        heading = part.splitlines()[0].strip()
        blocks = [textwrap.dedent(m.group("code")) for m in BLOCK.finditer(part)]
        if blocks:
            found[heading] = "\n".join(blocks)
    return found


SECTIONS = sections()
# Sections whose blocks sketch a set-up this suite cannot run as copied, with the test
# that runs the same code instead.
NOT_AS_COPIED = {
    "LangGraph Server": "needs a LangGraph Server deployment; tests/test_examples.py runs "
                        "examples/langgraph_server_*.py against `langgraph dev` instead",
}
TELEGRAM = {"Telegram: approve from your phone", "Scaling out"}
POSTGRES = {"Scaling out", "Stores"}


def run(heading: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> str:
    if heading in NOT_AS_COPIED:
        pytest.skip(NOT_AS_COPIED[heading])
    dsn = os.environ.get("LOOPGATE_TEST_POSTGRES_DSN")
    if heading == "Scaling out" and not dsn:
        pytest.skip("LOOPGATE_TEST_POSTGRES_DSN is not set; the block needs PostgreSQL")
    for key in [k for k in os.environ if k.startswith(("TELEGRAM_", "LOOPGATE_", "DATABASE_URL"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "user-data"))
    with contextlib.ExitStack() as cleanup:
        if heading in POSTGRES and dsn:  # a database of its own: the blocks use its default schema
            monkeypatch.setenv("DATABASE_URL",
                               cleanup.enter_context(fresh_database(dsn, "loopgate_readme")))
        if heading in TELEGRAM:
            fake = cleanup.enter_context(FakeBotAPI())
            monkeypatch.setenv("TELEGRAM_BOT_TOKEN", fake.token)
            monkeypatch.setenv("TELEGRAM_API_BASE_URL", fake.base_url)
            monkeypatch.setenv("TELEGRAM_WEBHOOK_URL", "http://127.0.0.1:9/telegram/webhook")
        return _run_block(heading, tmp_path, monkeypatch, capsys)


def _run_block(heading: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> str:
    code = compile(SECTIONS[heading], f"<README.md: {heading}>", "exec")
    before = set(threading.enumerate())
    ran = run_main(lambda: exec(code, {"__name__": "__main__"}), cwd=tmp_path,
                   monkeypatch=monkeypatch, capture=capsys)
    assert ran.returncode == 0, f"{heading}:\n{ran.stderr}"
    # a process exits only once its last non-daemon thread ends
    started = [t for t in threading.enumerate() if t not in before and not t.daemon]
    for thread in started:
        thread.join(timeout=10)
    assert not [t.name for t in started if t.is_alive()], f"{heading} left threads running"
    return ran.stdout


def test_the_two_commands_then_install_come_first() -> None:
    head = README.splitlines()[:12]
    assert "make demo" in "\n".join(head) and "make test" in "\n".join(head)
    headings = re.findall(r"^## (.+)$", README, flags=re.M)
    assert headings[0] == "Install"


def test_every_extra_is_named_in_the_install_section() -> None:
    install = README.split("## Install\n", 1)[1].split("\n## ", 1)[0]
    pyproject = (ROOT / "pyproject.toml").read_text()
    extras = re.findall(r"^(\w+) = \[", pyproject.split("[project.optional-dependencies]")[1]
                        .split("\n[", 1)[0], flags=re.M)
    assert extras and all(f"| `{extra}` |" in install for extra in extras)


def test_no_block_is_left_out() -> None:
    in_readme = len(BLOCK.findall(README))
    in_sections = sum(len(BLOCK.findall(part)) for part in re.split(r"^## ", README,
                                                                     flags=re.M)[1:])
    assert in_readme == in_sections > 10


# What a section prints, where the README shows it: checked on the run that proves the
# section runs as copied (each run starts an interpreter that imports LangGraph, so a
# section is run once, not once to run and again to read its output)
PRINTS: dict[str, Callable[[str, Path], None]] = {}


def prints(heading: str) -> Callable[[Callable[[str, Path], None]], Callable[[str, Path], None]]:
    def register(check: Callable[[str, Path], None]) -> Callable[[str, Path], None]:
        PRINTS[heading] = check
        return check
    return register


@pytest.mark.parametrize("heading", sorted(SECTIONS))
def test_section_runs_as_copied(heading: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    out = run(heading, tmp_path, monkeypatch, capsys)
    if heading in PRINTS:
        PRINTS[heading](out, tmp_path)


def test_every_printed_output_belongs_to_a_section() -> None:
    assert set(PRINTS) <= set(SECTIONS) - set(NOT_AS_COPIED)


@prints("Quickstart")
def quickstart_prints_what_it_says(out: str, tmp_path: Path) -> None:
    assert out.splitlines() == [
        "Shipped.", "['requested', 'notified', 'decided:approved', 'resumed', 'finished']"]


@prints("Policies")
def policies_print_what_they_say(out: str, tmp_path: Path) -> None:
    assert out.strip() == (
        "False payments confidence 0.62 is below 0.80 required by policy 'payments'")


@prints("Guarding tools")
def guard_and_answering_by_hand(out: str, tmp_path: Path) -> None:
    assert out.splitlines() == [
        "risk irreversible is above data_modification allowed by policy 'payments'",
        "sent 900 to bob", "error"]


@prints("`ApprovalMiddleware` for `create_agent`")
def middleware_per_call_and_batched(out: str, tmp_path: Path) -> None:
    assert out.splitlines() == [
        "[('requested', 'delete_user')]", "['delete_user']", "Cleaned up."]


@prints("`request_approval()` in any node")
def request_approval_snippet(out: str, tmp_path: Path) -> None:
    assert out.splitlines() == ["{'choice': 'Cancel', 'by': 'ana'}"]


@prints("The gateway: `Loopgate`")
def the_gateway_blocks(out: str, tmp_path: Path) -> None:
    lines = out.splitlines()
    assert lines[0] == "Shipped." and "requested" in lines and "decided" in lines
    assert lines[-1] == "['resumed', 'finished']"


@prints("Stores")
def the_default_store_is_per_user(out: str, tmp_path: Path) -> None:
    assert out.strip() == f"sqlite:///{tmp_path / 'user-data' / 'loopgate-lc' / 'loopgate.db'}"


@prints("Shadow policies and simulation")
def shadow_and_simulation_snippet(out: str, tmp_path: Path) -> None:
    assert out.splitlines() == [
        "[('mail-auto', 'auto', 'ask')]", "[('send_email', 'bob')]"]


@prints("Remembered permissions (grants)")
def grants_snippet(out: str, tmp_path: Path) -> None:
    assert out.splitlines() == [
        "approved True", "pending", "0 ['grant_created', 'grant_revoked']"]


@prints("Timeouts, hooks and the audit log")
def telemetry_snippet(out: str, tmp_path: Path) -> None:
    assert ("['loopgate.decision.duration', 'loopgate.decisions', 'loopgate.notifications', "
            "'loopgate.requests', 'loopgate.requests.pending']") in out.splitlines()


@prints("Telegram: approve from your phone")
def telegram_blocks_reach_the_fake_bot(out: str, tmp_path: Path) -> None:
    assert out.strip() == "telegram:42 (@ana)"


@prints("Webhook signatures (for receivers)")
def signature_block(out: str, tmp_path: Path) -> None:
    assert out.splitlines() == [
        "(200, 'accepted')", "(200, 'duplicate, ignored')", "401", "approved"]
