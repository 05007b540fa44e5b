"""The shortcuts ``Loopgate.run``'s round trip takes keep the store authoritative.

An answer to a request a run in this process waits for uses the record the run holds
instead of reading it, so a decision another process made meanwhile must still win,
through the compare-and-set. A finished run returns while the commit that records it is
made: every later call to the gateway, and the end of a process that never closed it,
must still find the run recorded finished.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from loopgate_lc import guard
from loopgate_lc.errors import AlreadyDecided, StoreError
from loopgate_lc.gateway import Loopgate, resuming
from loopgate_lc.hooks import Hooks
from loopgate_lc.stores import SQLiteStore
from loopgate_lc.testing import ScriptedApprover, ScriptedChatModel, ai, call
from tests.support.waiting import until

ROOT = Path(__file__).resolve().parents[2]
RAN: list[str] = []


@tool
def deploy(environment: str) -> str:
    """Deploy."""
    RAN.append(environment)
    return f"deployed {environment}"


def _agent() -> Any:
    model = ScriptedChatModel(script=[ai("", call("deploy", environment="prod")), "done"])
    return create_agent(model, tools=[guard(deploy)], checkpointer=InMemorySaver())


def test_a_decision_made_elsewhere_while_a_run_waits_wins_over_an_answer_here(
        tmp_path: Path) -> None:
    RAN.clear()
    path = tmp_path / "gate.db"
    # the run's gateway reads the store for decisions of other processes every 0.2 s
    with Loopgate(store=SQLiteStore(path), poll_interval=0.2) as here, \
            Loopgate(store=SQLiteStore(path)) as elsewhere:
        result: list[Any] = []
        run = threading.Thread(target=lambda: result.append(
            here.run(_agent(), {"messages": [("user", "ship it")]})))
        run.start()
        until(lambda: bool(here.pending()))
        (pending,) = here.pending()
        elsewhere.respond(pending.id, {"type": "reject", "message": "not today"},
                          actor="bo")
        with pytest.raises(AlreadyDecided) as refused:
            here.respond(pending.id, {"type": "approve"}, actor="ana")
        assert refused.value.decided_by == "bo"
        run.join(20)
        assert not run.is_alive() and result
        assert RAN == []  # the rejection stood: the tool never ran
        record = here.get(pending.id)
        assert (record.status.value, record.decided_by) == ("rejected", "bo")
        events = [e.event for e in here.audit(request_id=pending.id)]
        assert "unauthorized" not in events and events.count("decided:rejected") == 1


def test_every_call_after_a_run_returns_finds_it_recorded_finished(tmp_path: Path) -> None:
    RAN.clear()
    with Loopgate(store=SQLiteStore(tmp_path / "gate.db"),
                  notifiers=[ScriptedApprover({"type": "approve"})]) as gate:
        for _ in range(3):
            gate.run(_agent(), {"messages": [("user", "ship it")]})
            (last,) = gate.audit(limit=1, newest=True)
            assert last.event == "finished"
            (resumed,) = gate.audit(limit=1, newest=True, event="resumed")
            assert gate.get(str(resumed.request_id)).resume_done_at is not None
    assert RAN == ["prod"] * 3


def test_a_run_that_returned_is_recorded_finished_before_the_next_run_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    RAN.clear()
    # however long the gateway lets the caller go before it commits the finish
    monkeypatch.setattr(resuming, "HAND_OVER_DELAY", 30.0)
    model = ScriptedChatModel(script=[ai("", call("deploy", environment="prod")), "done",
                                      ai("", call("deploy", environment="staging")), "done"])
    agent = create_agent(model, tools=[guard(deploy)], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "one-conversation"}}
    with Loopgate(store=SQLiteStore(tmp_path / "gate.db"),
                  notifiers=[ScriptedApprover({"type": "approve"})]) as gate:
        # back to back, no other call to the gateway between them
        gate.run(agent, {"messages": [("user", "ship it")]}, config)
        gate.run(agent, {"messages": [("user", "now staging")]}, config)
        events = [e.event for e in gate.audit(thread_id="one-conversation")
                  if e.event in ("requested", "finished")]
    assert events == ["requested", "finished", "requested", "finished"]
    assert RAN == ["prod", "staging"]


class _FailsToFinishOnce(SQLiteStore):
    failed = False

    async def complete_resume(self, *request_ids: str, **kwargs: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise StoreError("disk full")
        return await super().complete_resume(*request_ids, **kwargs)


def test_a_finish_that_fails_to_commit_is_reported_and_the_result_stands(
        tmp_path: Path) -> None:
    RAN.clear()
    errors: list[tuple[str, Any]] = []
    with Loopgate(store=_FailsToFinishOnce(tmp_path / "gate.db"),
                  notifiers=[ScriptedApprover({"type": "approve"})],
                  hooks=Hooks(on_error=lambda error, context: errors.append(
                      (str(error), context.get("task"))))) as gate:
        result = gate.run(_agent(), {"messages": [("user", "ship it")]})
        assert result["messages"][-1].content == "done"
        events = [e.event for e in gate.audit()]  # waits for the finish, failed by now
        assert errors == [("disk full", "complete")]
        assert "error" in events and "finished" not in events
        (resumed,) = [e for e in gate.audit() if e.event == "resumed"]
        # the claim stands, for the resume lease to complete; the graph is not run again
        assert gate.get(str(resumed.request_id)).resume_done_at is None
    assert RAN == ["prod"]


_SCRIPT = """
import asyncio, sys, threading
from tests.gateway.test_round_trip import _agent
from loopgate_lc.gateway import Loopgate
from loopgate_lc.hooks import Hooks
from loopgate_lc.stores import SQLiteStore
from loopgate_lc.testing import ScriptedApprover

returned = threading.Event()

class FinishesAfterReturn(SQLiteStore):  # the finish commits only once run() returned
    async def complete_resume(self, *ids, **kwargs):
        await asyncio.to_thread(returned.wait, 60)
        return await super().complete_resume(*ids, **kwargs)

gate = Loopgate(store=FinishesAfterReturn(sys.argv[1]),
                notifiers=[ScriptedApprover({"type": "approve"})])
gate.run(_agent(), {"messages": [("user", "ship it")]})
print("RETURNED", flush=True)
returned.set()
# never closed: the process ends here
"""


@pytest.mark.timeout(300)
def test_a_process_that_never_closes_its_gateway_still_records_its_run_finished(
        tmp_path: Path) -> None:
    path = tmp_path / "gate.db"
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0 and "RETURNED" in done.stdout, done.stderr
    with Loopgate(store=SQLiteStore(path)) as gate:
        events = [e.event for e in gate.audit()]
        assert events[-1] == "finished", (events, time.monotonic() - began)
        (record,) = [gate.get(e.request_id) for e in gate.audit() if e.event == "resumed"]
        assert record.resume_done_at is not None
