"""The CLI's store commands import only what reading and deciding a request needs.

Start-up time itself is measured in ``bench/cli_startup.py``; this checks the cause: a
command that reads a table must not pull in LangGraph, LangChain, Telegram, httpx or
jsonschema (together about a second of imports before the first row is read), nor the
gateway's facade and the parts only a running gateway uses (timers, filing, resuming,
graph drivers, its event-loop thread), nor notifiers, nor what another command needs.
On a SQLite file they run the store's and the deciding part's coroutines inline, so
asyncio is not imported at all (a fifth of their start-up).
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

# what a running gateway needs and a command that lives for one read or one decision does
# not: the facade and its other parts, every notifier, and the other commands' modules
NOT_FOR_ANY = (
    "loopgate_lc._portal",
    "loopgate_lc.gateway.asking",
    "loopgate_lc.gateway.desk",
    "loopgate_lc.gateway.drivers",
    "loopgate_lc.gateway.facade",
    "loopgate_lc.gateway.filing",
    "loopgate_lc.gateway.resuming",
    "loopgate_lc.gateway.running",
    "loopgate_lc.gateway.timers",
    "loopgate_lc.notifiers.console",
    "loopgate_lc.notifiers.log",
    "loopgate_lc.notifiers.telegram",
    "loopgate_lc.notifiers.webhook",
    "loopgate_lc.server.app",
    "loopgate_lc.signing",
    "loopgate_lc.simulate",
    "loopgate_lc.stores.memory",
    "loopgate_lc.stores.postgres",
    "tomllib",
)
# what only deciding needs: reading builds no deciding part and validates no decision
NOT_FOR_READING = (
    "loopgate_lc.decisions",
    "loopgate_lc.gateway.deciding",
    "loopgate_lc.gateway.outbox",
    "loopgate_lc.gateway.validation",
    "loopgate_lc.grants",
    "loopgate_lc.hooks",
    "loopgate_lc.notifiers",
)

PROBE = """
import json, sys
exec(sys.argv[1])
from loopgate_lc.cli import main
code = main(sys.argv[2:])
print("IMPORTED " + json.dumps(sorted(sys.modules)), file=sys.stderr)
sys.exit(code)
"""


def imported_by(*args: str, cwd: Path, first: str = "") -> set[str]:
    """Run ``loopgate-lc ARGS`` in a new interpreter (after running ``first``); every
    module it imported."""
    done = subprocess.run([sys.executable, "-c", PROBE, first, *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    line = [x for x in done.stderr.splitlines() if x.startswith("IMPORTED ")][-1]
    found: list[str] = json.loads(line.removeprefix("IMPORTED "))
    return set(found)


def heavy_in(modules: set[str]) -> list[str]:
    """The heavy third-party packages among ``modules``."""
    return sorted({name.split(".")[0] for name in modules} & set(HEAVY))


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, list[str]]:
    """A SQLite store with two pending requests, as ``loopgate-lc serve`` would leave it."""
    url = f"sqlite:///{tmp_path / 'loopgate.db'}"
    with Loopgate(url) as gate:
        gate.register_session("deploy", client_id="release-bot")
        ids = [gate.submit("Deploy to production?", session_id="deploy").id,
               gate.submit("Rotate the key?").id]
    return url, ids


@pytest.mark.parametrize(("command", "reads"), [
    (["pending"], True),
    (["pending", "--json"], True),
    (["audit", "--limit", "5"], True),
    (["audit", "--json"], True),
    (["approve", "{first}", "--as", "ana"], False),
    (["reject", "{second}", "--reason", "not today", "--as", "ana"], False),
])
def test_store_commands_import_nothing_they_do_not_use(
        command: list[str], reads: bool, store: tuple[str, list[str]], tmp_path: Path) -> None:
    url, (first, second) = store
    args = [a.format(first=first, second=second) for a in command]
    modules = imported_by(*args, "--store", url, cwd=tmp_path)
    assert "loopgate_lc.stores.sqlite" in modules  # it did read the store
    assert heavy_in(modules) == []
    assert "asyncio" not in modules  # nor started an event loop to do it
    unused = set(NOT_FOR_ANY + (NOT_FOR_READING if reads else ()))
    if command[:2] == ["pending", "--json"]:
        # prints the HTTP API's poll result, whose shape (the decision's meaning) is
        # the decisions module's
        unused.discard("loopgate_lc.decisions")
    assert sorted(modules & unused) == []
    if not reads:  # and it decided through the one deciding path
        assert "loopgate_lc.gateway.deciding" in modules


def test_the_probe_sees_an_import_a_command_should_not_make(
        store: tuple[str, list[str]], tmp_path: Path) -> None:
    """The checks above can fail: the gateway's facade, imported where a command used to
    build one, is seen with everything it brings."""
    url, _ = store
    modules = imported_by("pending", "--store", url, cwd=tmp_path,
                          first="from loopgate_lc import Loopgate")
    assert {"loopgate_lc.gateway.facade", "loopgate_lc.gateway.timers",
            "loopgate_lc.gateway.resuming", "loopgate_lc._portal"} <= modules
    assert sorted(modules & set(NOT_FOR_ANY)) != []


# run as the console script runs it: ``main()`` reading ``sys.argv``
AS_PROGRAM = """
import sys
read = []
sys.addaudithook(lambda event, args: read.append(args[0]) if event == "open"
                 and str(args[0]).endswith("entry_points.txt") else None)
sys.argv = ["loopgate-lc", *sys.argv[1:]]
from loopgate_lc.cli import main
code = main()
print(f"READ {len(read)}", file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize(("preset", "searched"), [(None, False), ("", True)])
def test_a_store_command_run_as_a_program_spares_pydantic_its_plugin_search(
        preset: str | None, searched: bool, store: tuple[str, list[str]],
        tmp_path: Path) -> None:
    """Pydantic reads every installed distribution's entry points for its plugins when it
    builds its first validator; a store command skips that, unless told otherwise
    (``PYDANTIC_DISABLE_PLUGINS`` set, even empty, is left as it is)."""
    import os

    url, _ = store
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    if preset is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = preset
    done = subprocess.run([sys.executable, "-c", AS_PROGRAM, "pending", "--store", url],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    [line] = [x for x in done.stderr.splitlines() if x.startswith("READ ")]
    assert (int(line.removeprefix("READ ")) > 0) is searched


def test_the_lazy_public_names_still_resolve() -> None:
    """``from loopgate_lc import X`` works for every name in ``__all__``, whichever is
    imported first (``guard`` is both a submodule and the function it exports)."""
    import types

    import loopgate_lc
    from loopgate_lc.guard import GuardedTool

    assert isinstance(loopgate_lc.guard, types.FunctionType)
    assert loopgate_lc.GuardedTool is GuardedTool
    import loopgate_lc.simulate  # the submodule named like the function it exports

    assert isinstance(loopgate_lc.simulate, types.FunctionType)
    for name in loopgate_lc.__all__:
        assert getattr(loopgate_lc, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = loopgate_lc.nope  # type: ignore[attr-defined]
