"""The CLI's store commands import only what reading and deciding a request needs.

Start-up time itself is measured in ``bench/cli_startup.py``; this checks the cause: a
command that reads a table must not pull in LangGraph, LangChain, Telegram, httpx or
jsonschema (together about a second of imports before the first row is read).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loopgate_lc.gateway import Loopgate

HEAVY = ("langgraph", "langchain_core", "langchain", "telegram", "httpx", "jsonschema",
         "starlette", "uvicorn", "mcp", "psycopg")

PROBE = f"""
import json, sys
from loopgate_lc.cli import main
code = main(sys.argv[1:])
heavy = sorted({{name.split(".")[0] for name in sys.modules}} & {set(HEAVY)!r})
print("IMPORTED " + json.dumps(heavy), file=sys.stderr)
sys.exit(code)
"""


def imported_by(*args: str, cwd: Path) -> list[str]:
    """Run ``loopgate-lc ARGS`` in a new interpreter; the heavy packages it imported."""
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    line = [x for x in done.stderr.splitlines() if x.startswith("IMPORTED ")][-1]
    found: list[str] = json.loads(line.removeprefix("IMPORTED "))
    return found


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, list[str]]:
    """A SQLite store with two pending requests, as ``loopgate-lc serve`` would leave it."""
    url = f"sqlite:///{tmp_path / 'loopgate.db'}"
    with Loopgate(url) as gate:
        gate.register_session("deploy", client_id="release-bot")
        ids = [gate.submit("Deploy to production?", session_id="deploy").id,
               gate.submit("Rotate the key?").id]
    return url, ids


@pytest.mark.parametrize("command", [
    ["pending"],
    ["pending", "--json"],
    ["audit", "--limit", "5"],
    ["audit", "--json"],
    ["approve", "{first}", "--as", "ana"],
    ["reject", "{second}", "--reason", "not today", "--as", "ana"],
])
def test_store_commands_import_nothing_heavy(command: list[str], store: tuple[str, list[str]],
                                             tmp_path: Path) -> None:
    url, (first, second) = store
    args = [a.format(first=first, second=second) for a in command]
    assert imported_by(*args, "--store", url, cwd=tmp_path) == []


def test_the_lazy_public_names_still_resolve() -> None:
    """``from loopgate_lc import X`` works for every name in ``__all__``, whichever is
    imported first (``guard`` is both a submodule and the function it exports)."""
    import types

    import loopgate_lc
    from loopgate_lc.guard import GuardedTool

    assert isinstance(loopgate_lc.guard, types.FunctionType)
    assert loopgate_lc.GuardedTool is GuardedTool
    for name in loopgate_lc.__all__:
        assert getattr(loopgate_lc, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = loopgate_lc.nope  # type: ignore[attr-defined]
