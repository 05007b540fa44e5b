"""On PostgreSQL a decision made by one process wakes the waiters of another at once
(``LISTEN/NOTIFY``), not at their next poll."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from loopgate_lc.gateway import Loopgate
from loopgate_lc.schema import Status
from loopgate_lc.testing.stores import APPROVE, request
from tests.support.crash_child import build

psycopg = pytest.importorskip("psycopg")

ROOT = Path(__file__).resolve().parents[1]
_T = TypeVar("_T")


async def test_the_store_tells_listeners_of_every_decision(
    postgres_dsn: str, pg_schema: str,
) -> None:
    from loopgate_lc.stores.postgres import PostgresStore

    async with PostgresStore(postgres_dsn, schema=pg_schema) as listener, \
            PostgresStore(postgres_dsn, schema=pg_schema) as decider:
        stream = listener.decisions()
        assert stream is not None
        heard = asyncio.ensure_future(anext(stream))
        decided: list[str] = []
        try:
            # the listener connects in the background: decide until it has heard one
            for n in range(100):
                await decider.create_request(request(f"r{n}"))
                await decider.resolve(f"r{n}", status=Status.APPROVED, decision=APPROVE,
                                      decided_by="ana", channel="api")
                decided.append(f"r{n}")
                done, _ = await asyncio.wait([heard], timeout=0.2)
                if done:
                    break
            assert heard.result() in decided
        finally:
            heard.cancel()
            await stream.aclose()  # type: ignore[attr-defined]


def test_a_decision_in_another_process_resumes_the_run_here_before_any_poll(
    postgres_dsn: str, pg_schema: str, tmp_path: Path,
) -> None:
    from loopgate_lc.stores.postgres import PostgresStore

    log = tmp_path / "deploys.log"
    log.touch()
    # polls every five minutes: only a notification can resume the run within a minute
    with Loopgate(store=PostgresStore(postgres_dsn, schema=pg_schema),
                  poll_interval=300) as gate:
        gate.register_graph("deployer", build(str(tmp_path / "checkpoints.db"), str(log)))
        gate.start("deployer", {"messages": [("user", "b7")]},
                   {"configurable": {"thread_id": "thread-7"}})
        pending = _bounded(lambda: gate.pending(), seconds=60)
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.support.decide_child", postgres_dsn, pg_schema,
             pending[0].id],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        try:
            assert child.stdout is not None and child.stdin is not None
            assert child.stdout.readline().strip() == "READY"
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "DONE"
        finally:
            child.kill()
            child.wait(10)
        assert _bounded(lambda: log.read_text().split(), seconds=60) == ["b7"]
        assert gate.get(pending[0].id).decided_by == "elsewhere"


def _bounded(probe: Callable[[], _T], *, seconds: float) -> _T:
    """``probe()`` once it is truthy, looking for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        found = probe()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def test_a_run_decided_in_its_own_process_is_never_called_stale(
    postgres_dsn: str, pg_schema: str,
) -> None:
    """The decision claims the waiting run's resume in its own transaction; the store's
    notification of it can reach the run before the deciding task hands the record over.
    The run waits for the hand-over instead of reading the claim as someone else's."""
    from langchain.agents import create_agent
    from langchain_core.tools import tool
    from langgraph.checkpoint.memory import InMemorySaver

    from loopgate_lc import guard
    from loopgate_lc.stores.postgres import PostgresStore
    from loopgate_lc.testing import ScriptedApprover, ScriptedChatModel, ai, call

    @tool
    def deploy(environment: str) -> str:
        """Deploy."""
        return f"deployed {environment}"

    approver = ScriptedApprover({"type": "approve"})
    store = PostgresStore(postgres_dsn, schema=pg_schema)
    with Loopgate(store=store, notifiers=[approver], poll_interval=60.0) as gate:
        for round_trip in range(25):
            model = ScriptedChatModel(script=[ai("", call("deploy", environment="prod")),
                                              "done"])
            agent = create_agent(model, tools=[guard(deploy)], checkpointer=InMemorySaver())
            result = gate.run(agent, {"messages": [("user", f"ship {round_trip}")]})
            assert result["messages"][-1].content == "done"
        assert len(approver.answered) == 25
        resumed = [e for e in gate.audit() if e.event == "resumed"]
        assert len(resumed) == 25  # each claimed once, by the decision that ran it
