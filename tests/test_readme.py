"""The README's self-contained snippets run as written (each as a script of its own)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.inprocess import run_main

ROOT = Path(__file__).resolve().parents[1]


def snippet(heading: str) -> str:
    """The first python block under ``## heading`` (``"# x"`` reaches ``### x``)."""
    text = (ROOT / "README.md").read_text()
    marker = f"##{heading}" if heading.startswith("#") else f"## {heading}"
    section = text.split(f"{marker}\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block under {heading!r}"
    return match.group(1)


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Callable[[str], str]:
    """Run a snippet as a script of its own (fresh globals, ``__main__``) in this process,
    in an empty working directory; returns what it printed."""

    def run_snippet(code: str) -> str:
        done = run_main(lambda: exec(compile(code, "README.md", "exec"), {"__name__": "__main__"}),
                        cwd=tmp_path, monkeypatch=monkeypatch, capture=capsys)
        assert done.returncode == 0, done.stderr
        return done.stdout

    return run_snippet


def test_the_two_commands_come_first() -> None:
    head = (ROOT / "README.md").read_text().splitlines()[:12]
    assert "make demo" in "\n".join(head) and "make test" in "\n".join(head)


def test_quickstart_runs(run: Callable[[str], str]) -> None:
    out = run(snippet("Quickstart")).splitlines()
    assert out == ["Shipped.", "['requested', 'notified', 'decided:approved', 'resumed', "
                               "'finished']"]


def test_policies_snippet_prints_what_it_says(run: Callable[[str], str]) -> None:
    out = run(snippet("Policies"))
    assert out.strip() == ("False payments confidence 0.62 is below 0.80 required by "
                           "policy 'payments'")


def test_guard_snippet(run: Callable[[str], str]) -> None:
    out = run(snippet("Guarding tools")).splitlines()
    assert out == ["risk irreversible is above data_modification allowed by policy 'payments'",
                   "sent 900 to bob"]


def test_middleware_snippet(run: Callable[[str], str]) -> None:
    out = run(snippet("`ApprovalMiddleware` for `create_agent`")).splitlines()
    assert out == ["[('requested', 'delete_user')]"]


def test_request_approval_snippet(run: Callable[[str], str]) -> None:
    out = run(snippet("`request_approval()` in any node")).splitlines()
    assert out == ["{'choice': 'Cancel', 'by': 'ana'}"]


def test_shadow_and_simulation_snippet(run: Callable[[str], str]) -> None:
    out = run(snippet("Shadow policies and simulation")).splitlines()
    assert out == ["[('mail-auto', 'auto', 'ask')]", "[('send_email', 'bob')]"]


def test_telemetry_snippet(run: Callable[[str], str]) -> None:
    out = run(snippet("# Metrics and traces (OpenTelemetry)"))
    assert out.strip() == ("['loopgate.decision.duration', 'loopgate.decisions', "
                           "'loopgate.notifications', 'loopgate.requests', "
                           "'loopgate.requests.pending']")
