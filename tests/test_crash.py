"""A process with 50 pending approvals dies by SIGKILL; a new one answers all 50."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from loopgate_lc import Status
from loopgate_lc.gateway import Loopgate
from tests.support.crash_child import build

ROOT = Path(__file__).resolve().parents[1]
COUNT = 50


def test_sigkill_with_fifty_pending_then_a_new_process_answers_them_all(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'gate.db'}"
    checkpoints, log = str(tmp_path / "checkpoints.db"), tmp_path / "deploys.log"
    log.touch()
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.support.crash_child", store, checkpoints, str(log),
         str(COUNT)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # bounded by the child's own loop
        assert line.strip() == f"READY {COUNT}", child.stderr.read() if child.stderr else line
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    assert log.read_text() == ""  # nothing ran before a person decided

    graph = build(checkpoints, str(log))
    with Loopgate(store=store) as gate:
        gate.register_graph("deployer", graph)
        pending = gate.pending()
        assert len(pending) == COUNT
        approved = set()
        for record in pending:
            build_name = record.payload["args"]["build"]
            if int(build_name[1:]) % 2 == 0:
                gate.respond(record.id, {"type": "approve"}, actor="ana")
                approved.add(build_name)
            else:
                gate.respond(record.id, {"type": "reject", "message": "not today"},
                             actor="ana")
        configs = [{"configurable": {"thread_id": f"thread-{i:02d}"}} for i in range(COUNT)]
        for _ in range(1500):
            if all(not graph.get_state(c).next for c in configs):
                break
            time.sleep(0.02)
        unfinished = [c for c in configs if graph.get_state(c).next]
        assert unfinished == []
        assert all(gate.get(r.id).status in (Status.APPROVED, Status.REJECTED) for r in pending)
    lines = log.read_text().splitlines()
    assert sorted(lines) == sorted(approved)  # every approved body ran exactly once
    assert len(lines) == len(set(lines)) == COUNT // 2
