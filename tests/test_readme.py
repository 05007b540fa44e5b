"""The README's self-contained snippets run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def snippet(heading: str) -> str:
    """The first python block under ``## heading`` (``"# x"`` reaches ``### x``)."""
    text = (ROOT / "README.md").read_text()
    marker = f"##{heading}" if heading.startswith("#") else f"## {heading}"
    section = text.split(f"{marker}\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block under {heading!r}"
    return match.group(1)


def run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_two_commands_come_first() -> None:
    head = (ROOT / "README.md").read_text().splitlines()[:12]
    assert "make demo" in "\n".join(head) and "make test" in "\n".join(head)


def test_quickstart_runs() -> None:
    out = run(snippet("Quickstart")).splitlines()
    assert out == ["Shipped.", "['requested', 'notified', 'decided:approved', 'resumed', "
                               "'finished']"]


def test_policies_snippet_prints_what_it_says() -> None:
    out = run(snippet("Policies"))
    assert out.strip() == ("False payments confidence 0.62 is below 0.80 required by "
                           "policy 'payments'")


def test_guard_snippet() -> None:
    out = run(snippet("Guarding tools")).splitlines()
    assert out == ["risk irreversible is above data_modification allowed by policy 'payments'",
                   "sent 900 to bob"]


def test_middleware_snippet() -> None:
    out = run(snippet("`ApprovalMiddleware` for `create_agent`")).splitlines()
    assert out == ["[('requested', 'delete_user')]"]


def test_request_approval_snippet() -> None:
    out = run(snippet("`request_approval()` in any node")).splitlines()
    assert out == ["{'choice': 'Cancel', 'by': 'ana'}"]


def test_shadow_and_simulation_snippet() -> None:
    out = run(snippet("Shadow policies and simulation")).splitlines()
    assert out == ["[('mail-auto', 'auto', 'ask')]", "[('send_email', 'bob')]"]



def test_telemetry_snippet() -> None:
    out = run(snippet("# Metrics and traces (OpenTelemetry)"))
    assert out.strip() == ("['loopgate.decision.duration', 'loopgate.decisions', "
                           "'loopgate.notifications', 'loopgate.requests', "
                           "'loopgate.requests.pending']")
