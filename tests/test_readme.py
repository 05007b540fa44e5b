"""Every Python block of the README runs as copied.

Blocks under one ``##`` heading continue each other (like notebook cells), so each
section runs as one script, in a fresh folder and a fresh per-user data directory.
Blocks that need a Telegram bot get a FakeBotAPI through the environment (as a reader's
real token would come); the PostgreSQL block gets ``DATABASE_URL`` from
``LOOPGATE_TEST_POSTGRES_DSN`` and is skipped, with that reason, without it.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from loopgate_lc.fake_telegram import FakeBotAPI
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


def run(heading: str, tmp_path: Path) -> str:
    if heading in NOT_AS_COPIED:
        pytest.skip(NOT_AS_COPIED[heading])
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TELEGRAM_", "LOOPGATE_", "DATABASE_URL"))}
    env["XDG_DATA_HOME"] = str(tmp_path / "user-data")
    dsn = os.environ.get("LOOPGATE_TEST_POSTGRES_DSN")
    if heading == "Scaling out" and not dsn:
        pytest.skip("LOOPGATE_TEST_POSTGRES_DSN is not set; the block needs PostgreSQL")
    with contextlib.ExitStack() as cleanup:
        if heading in POSTGRES and dsn:  # a database of its own: the blocks use its default schema
            env["DATABASE_URL"] = cleanup.enter_context(fresh_database(dsn, "loopgate_readme"))
        return _run_block(heading, env, tmp_path)


def _run_block(heading: str, env: dict[str, str], tmp_path: Path) -> str:
    fake = FakeBotAPI().start() if heading in TELEGRAM else None
    try:
        if fake is not None:
            env.update(TELEGRAM_BOT_TOKEN=fake.token, TELEGRAM_API_BASE_URL=fake.base_url,
                       TELEGRAM_WEBHOOK_URL="http://127.0.0.1:9/telegram/webhook")
        done = subprocess.run([sys.executable, "-c", SECTIONS[heading]], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)
    finally:
        if fake is not None:
            fake.stop()
    assert done.returncode == 0, f"{heading}:\n{done.stderr}"
    return done.stdout


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


@pytest.mark.parametrize("heading", sorted(SECTIONS))
def test_section_runs_as_copied(heading: str, tmp_path: Path) -> None:
    run(heading, tmp_path)


def test_quickstart_prints_what_it_says(tmp_path: Path) -> None:
    assert run("Quickstart", tmp_path).splitlines() == [
        "Shipped.", "['requested', 'notified', 'decided:approved', 'resumed', 'finished']"]


def test_policies_print_what_they_say(tmp_path: Path) -> None:
    assert run("Policies", tmp_path).strip() == (
        "False payments confidence 0.62 is below 0.80 required by policy 'payments'")


def test_guard_and_answering_by_hand(tmp_path: Path) -> None:
    assert run("Guarding tools", tmp_path).splitlines() == [
        "risk irreversible is above data_modification allowed by policy 'payments'",
        "sent 900 to bob", "error"]


def test_middleware_per_call_and_batched(tmp_path: Path) -> None:
    assert run("`ApprovalMiddleware` for `create_agent`", tmp_path).splitlines() == [
        "[('requested', 'delete_user')]", "['delete_user']", "Cleaned up."]


def test_request_approval_snippet(tmp_path: Path) -> None:
    assert run("`request_approval()` in any node", tmp_path).splitlines() == [
        "{'choice': 'Cancel', 'by': 'ana'}"]


def test_the_gateway_blocks(tmp_path: Path) -> None:
    out = run("The gateway: `Loopgate`", tmp_path).splitlines()
    assert out[0] == "Shipped." and "requested" in out and "decided" in out
    assert out[-1] == "['resumed', 'finished']"


def test_the_default_store_is_per_user(tmp_path: Path) -> None:
    out = run("Stores", tmp_path).strip()
    assert out == f"sqlite:///{tmp_path / 'user-data' / 'loopgate-lc' / 'loopgate.db'}"


def test_shadow_and_simulation_snippet(tmp_path: Path) -> None:
    assert run("Shadow policies and simulation", tmp_path).splitlines() == [
        "[('mail-auto', 'auto', 'ask')]", "[('send_email', 'bob')]"]


def test_grants_snippet(tmp_path: Path) -> None:
    assert run("Remembered permissions (grants)", tmp_path).splitlines() == [
        "approved True", "pending", "0 ['grant_created', 'grant_revoked']"]


def test_telemetry_snippet(tmp_path: Path) -> None:
    out = run("Timeouts, hooks and the audit log", tmp_path).splitlines()
    assert ("['loopgate.decision.duration', 'loopgate.decisions', 'loopgate.notifications', "
            "'loopgate.requests', 'loopgate.requests.pending']") in out


def test_telegram_blocks_reach_the_fake_bot(tmp_path: Path) -> None:
    assert run("Telegram: approve from your phone", tmp_path).strip() == "telegram:42 (@ana)"


def test_signature_block(tmp_path: Path) -> None:
    assert run("Webhook signatures (for receivers)", tmp_path).splitlines() == [
        "(200, 'accepted')", "(200, 'duplicate, ignored')", "401", "approved"]
