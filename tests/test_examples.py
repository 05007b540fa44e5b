"""Every example runs as a user would run it (``python examples/NAME.py ARGS``), offline,
and prints what it promises.

The offline runs execute the script in this process (``runpy``, as ``__main__``, with its
own argv, working directory and environment): the same code path as ``python
examples/NAME.py``, without paying for a new interpreter that imports LangChain again. An
example that starts processes of its own (``mcp_client``) runs in one too, and so does the
test that needs several (a server, the example, and a person at the CLI).
"""

from __future__ import annotations

import os
import re
import runpy
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from loopgate_lc.testing.langgraph_dev import free_port, wait_ready
from tests.support.inprocess import Ran, run_main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TIMEOUT = 90  # a hang is what these catch, not slowness
CLI = [sys.executable, "-m", "loopgate_lc.cli"]

# name -> (offline arguments, lines the output must contain)
OFFLINE: dict[str, tuple[list[str], list[str]]] = {
    "ci_cd_deployment": (["--auto", "approve"], [
        "*** deploying 1.4.2 to staging ***",
        "*** deploying 1.4.2 to production ***",
        "agent: Release 1.4.2 is done.",
    ]),
    "trading": (["--auto"], [
        "o1: filled: buy 20 AAPL at 190.00",
        "a person changed this tool call before it ran",
        "filled: buy 20 AAPL; buy 83 NVDA",
        "place_order  auto-approved by policy 'small orders'",
        "place_order  edited by risk-desk",
    ]),
    "content_moderation": (["--auto"], [
        "p1: p1 removed (spam)",
        "p4: p4 removed (spam)",
        "p3 kept (ok, 0.98)",
        "removed: p1, p4",
        "asked a person 1 time(s): confidence 0.61 is below 0.95",
    ]),
    "multi_session": (["--auto"], [
        "deploy   -> chat -100123  Deploy 1.4.2 to production?",
        "alerts   -> chat 1002     Disk on db-1 is 95% full.",
        "finance  -> chat 1003     Pay invoice #881",
        "Carl taps Approve in the deploy group: 'not authorized to decide this request'",
        "deploy   approved  by telegram:1001 (@ana)",
        "finance  answered  by telegram:1003 (@eve) (Pay next week)",
        "release-bot says: Deployed.",
        "refused: telegram:1005 (@carl) is not an approver of session 'deploy'",
    ]),
    "http_client": (["--auto"], [
        "answer: 'Deploy now' by reviewer:kim",
        "approved=True",
        "a late answer: already_decided",
    ]),
    "mcp_client": (["--auto"], [
        "tools: request_human_input, check_request_status, list_pending_requests",
        "approved by cli:ops:lee: approved=True",
        "dropping orders_v1",
    ]),
    "langgraph_server_bridge": (["--auto"], [
        "filed: deploy {'version': '1.4.2'}",
        "decided: approved by ana",
        "agent: 1.4.2 is live on production",
        "audit: requested, notified, decided:approved, resumed",
    ]),
    "langgraph_server_inside": (["--auto"], [
        "the deployment filed request",
        "agent: 2.0.0 is live on production",
    ]),
}


# Examples that start processes of their own run in one too: the MCP SDK's stdio client
# binds ``sys.stderr`` when it is first imported, which in-process would be a test's capture.
OWN_PROCESS = {"mcp_client"}
LEAKY = ("TELEGRAM_", "LOOPGATE_", "DEPLOY_", "ALERTS_", "FINANCE_")


def clean_env() -> dict[str, str]:
    """No real bot, server or store of the developer's may leak into a test run."""
    return {k: v for k, v in os.environ.items() if not k.startswith(LEAKY)}


@pytest.fixture
def run_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                capfd: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """``python examples/NAME.py ARGS`` (in this process but for ``OWN_PROCESS``), in a
    fresh working directory, without the developer's bots and stores."""

    def run(name: str, *args: str) -> Ran:
        script = EXAMPLES / f"{name}.py"
        if name in OWN_PROCESS:
            done = subprocess.run([sys.executable, str(script), *args],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=TIMEOUT, cwd=tmp_path, env=clean_env())
            return Ran(done.returncode, done.stdout, done.stderr)
        return run_main(lambda: runpy.run_path(str(script), run_name="__main__"),
                        cwd=tmp_path, monkeypatch=monkeypatch, capture=capfd,
                        argv=[str(script), *args], drop_env=LEAKY)

    return run


def test_every_example_has_an_offline_run() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.py")) == sorted(OFFLINE)


@pytest.mark.parametrize("name", sorted(OFFLINE))
def test_example_runs_offline(name: str, run_example: Callable[..., Ran]) -> None:
    args, expected = OFFLINE[name]
    done = run_example(name, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    missing = [line for line in expected if line not in done.stdout]
    assert not missing, f"missing {missing} in:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("name", ["ci_cd_deployment", "content_moderation", "trading"])
def test_without_a_terminal_an_example_explains_and_exits(
    name: str, run_example: Callable[..., Ran],
) -> None:
    done = run_example(name)  # stdin is not a terminal; no --auto
    assert done.returncode == 0, done.stderr
    assert "no terminal to ask" in done.stdout and "--auto" in done.stdout


def test_ci_cd_rejected_production_stays_on_staging(run_example: Callable[..., Ran]) -> None:
    done = run_example("ci_cd_deployment", "--auto", "reject")
    assert done.returncode == 0, done.stderr
    assert "deploying 1.4.2 to production" not in done.stdout
    assert "Production was not approved; 1.4.2 is on staging only." in done.stdout
    assert re.search(r"decided:rejected\s+\w{8}\s+scripted-approver", done.stdout)


def test_http_client_against_loopgate_lc_serve_answered_from_the_cli(tmp_path: Path) -> None:
    """The non-offline path: a separate `loopgate-lc serve`, and a person using the CLI."""
    store = f"sqlite:///{tmp_path / 'serve.db'}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([*CLI, "serve", "--store", store, "--port", str(port),
                               "--poll-interval", "0.2", "--log-level", "warning"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=clean_env())
    client = None
    try:
        try:
            wait_ready(url, server, timeout=TIMEOUT, path="/health")
        except RuntimeError:  # it exited: say why
            pytest.fail(server.stderr.read() if server.stderr else "serve exited")
        client = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "http_client.py"), "--url", url],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, cwd=tmp_path, env=clean_env())
        assert client.stdout is not None
        hint = ""
        for _ in range(1000):
            hint = client.stdout.readline()
            if hint.startswith("answer it:") or not hint:
                break
        found = re.search(r"(loopgate-lc approve \S+ --choice 'Deploy now' --store) <[^>]+>",
                          hint)
        assert found, hint
        assert server.stderr is not None
        said = server.stderr.readline()  # the store `loopgate-lc serve` printed at start-up
        assert said.startswith("loopgate-lc: store "), said
        advice = f"{found.group(1)} {said.split('store ', 1)[1].strip()} --as ana"
        answer = subprocess.run([*CLI, *shlex.split(advice)[1:]], capture_output=True,
                                text=True, timeout=TIMEOUT, cwd=tmp_path.parent,
                                env=clean_env())
        assert answer.returncode == 0, answer.stderr
        out, _ = client.communicate(timeout=TIMEOUT)
        assert client.returncode == 0, out
        assert "answer: 'Deploy now' by cli:ana -> approved=True" in out
        assert "deploying build #1287" in out
    finally:
        for process in (client, server):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
