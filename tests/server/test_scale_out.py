"""Two server processes on one PostgreSQL database: a decision made through one reaches a
graph running in the other by ``LISTEN/NOTIFY``, not by polling."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from loopgate_lc.testing.langgraph_dev import free_port
from tests.support.postgres import fresh_database

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": "Bearer secret"}
HTTP = httpx.Client(headers=AUTH, timeout=60)  # a busy machine answers slowly; never fails fast
_T = TypeVar("_T")


@pytest.fixture
def database(postgres_dsn: str) -> Iterator[str]:
    """A database of its own: ``loopgate-lc serve`` keeps its tables in the default schema."""
    with fresh_database(postgres_dsn, "loopgate_scale") as url:
        yield url


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str] | None = None
             ) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def _bounded(probe: Callable[[], _T], *, seconds: float = 60) -> _T:
    """``probe()`` once it is truthy, looking for at most ``seconds`` (it may raise meanwhile)."""
    wake = threading.Event()
    for _ in range(int(seconds / 0.05)):
        with contextlib.suppress(httpx.TransportError):
            found = probe()
            if found:
                return found
        wake.wait(0.05)
    return probe()


def test_a_decision_through_one_server_resumes_a_graph_in_the_other(
        database: str, tmp_path: Path) -> None:
    graph_port, api_port = free_port(), free_port()
    log = tmp_path / "deploys.log"
    # both poll for other processes' decisions only every five minutes: within the minute
    # this test waits, only a notification can carry the decision across
    with _process([sys.executable, "-m", "tests.support.graph_server", database,
                   str(tmp_path), str(graph_port)]) as graph_server, \
         _process([sys.executable, "-m", "loopgate_lc.cli", "serve", "--store", database,
                   "--port", str(api_port), "--poll-interval", "300", "--no-mcp",
                   "--log-level", "warning"],
                  env={"LOOPGATE_API_KEYS": "ops=secret"}) as api_server:
        assert graph_server.stdout is not None
        assert graph_server.stdout.readline().strip() == "READY", graph_server.stderr.read()
        api = f"http://127.0.0.1:{api_port}"
        assert _bounded(lambda: HTTP.get(f"{api}/health").status_code == 200), \
            api_server.poll()

        def both_pending() -> list[dict[str, object]]:
            listed = HTTP.get(f"{api}/hitl/pending").json()["requests"]
            return listed if len(listed) == 2 else []

        pending = _bounded(both_pending)  # filed by the graph's server, listed by the other
        for request in pending:
            answer = HTTP.post(f"{api}/hitl/respond", json={
                "request_id": request["request_id"], "decision": {"type": "approve"}})
            assert answer.status_code == 200, answer.text

        def both_ran() -> list[str]:
            lines = sorted(log.read_text().splitlines()) if log.exists() else []
            return lines if len(lines) >= 2 else []

        ran = _bounded(both_ran)
        assert ran == ["deploy production", "deploy staging"]

        graph = f"http://127.0.0.1:{graph_port}"
        for request in pending:  # the graph's server sees the decision the other one made
            polled = HTTP.get(f"{graph}/hitl/poll",
                             params={"request_id": request["request_id"]}).json()
            assert polled["status"] == "approved"
            assert (polled["responded_by"], polled["channel"]) == ("api:ops", "http")
