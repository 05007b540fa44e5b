"""Processes killed by SIGKILL lose nothing and leave nothing half done.

A process with 50 pending approvals dies; a new one answers all 50. Gateways filing and
deciding in a loop die at random instants; every request's status, audit trail and
deliveries still agree, without any repair at start-up. A notification the filing
process leased to itself and never finished is made by another once the lease passes.
"""

from __future__ import annotations

import asyncio
import os
import random
import selectors
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from loopgate_lc import Status
from loopgate_lc.gateway import Loopgate
from loopgate_lc.gateway.outbox import OWN_LEASE
from loopgate_lc.schema import utcnow
from loopgate_lc.stores import Store, open_store
from loopgate_lc.testing import RecordingNotifier
from tests.support.crash_child import CHANNEL, build, store_of
from tests.support.waiting import until

# these tests start interpreters in turn: on a machine busy with other work that alone can
# pass the suite's 120 s guard, which is only there to stop a hung test
INTERPRETERS = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parents[1]
COUNT = 50


@INTERPRETERS
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


def _read_lines(child: subprocess.Popen[str], count: int, deadline: float) -> list[str]:
    """``count`` lines of the child's progress, waiting at most until ``deadline``."""
    assert child.stdout is not None
    lines: list[str] = []
    with selectors.DefaultSelector() as sel:
        sel.register(child.stdout, selectors.EVENT_READ)
        while len(lines) < count:
            left = deadline - time.monotonic()
            assert left > 0 and sel.select(left), f"child stalled after {lines[-3:]}"
            line = child.stdout.readline()
            assert line, f"child exited: {child.stderr.read() if child.stderr else ''}"
            lines.append(line.strip())
    return lines


def _kill_while_churning(args: list[str], rounds: int, seed: int) -> int:
    """Start a churning gateway ``rounds`` times; kill each one mid-work. Returns how
    many requests the children said they filed."""
    rng = random.Random(seed)
    filed = 0
    for _ in range(rounds):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.support.crash_child", "churn", *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            bufsize=1)
        try:
            deadline = time.monotonic() + 120
            assert _read_lines(child, 1, deadline) == ["READY"]
            # a checkpoint the child reached, then a random instant after it
            progress = _read_lines(child, rng.randint(1, 40), deadline)
            time.sleep(rng.uniform(0, 0.004))
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
        assert child.returncode == -signal.SIGKILL
        filed += sum(line.startswith("filed") for line in progress)
    return filed


async def _assert_whole(store: Store, at_least: int) -> None:
    """Every request's status, audit events and deliveries agree: each state change is
    there with everything it causes, or not at all."""
    await store.setup()
    try:
        requests = await store.list_requests()
        assert len(requests) >= at_least
        known = {r.id for r in requests}
        events: dict[str, Counter[str]] = {r.id: Counter() for r in requests}
        for event in await store.list_audit():
            assert event.request_id in known, event
            events[event.request_id][event.event] += 1
        deliveries: dict[str, dict[str, bool]] = {r.id: {} for r in requests}
        for item in await store.list_outbox():
            assert item.request_id in known, item
            assert item.notifier == CHANNEL
            assert item.kind not in deliveries[item.request_id], item  # one of each
            deliveries[item.request_id][item.kind] = item.done
        for record in requests:
            seen, owed = events[record.id], deliveries[record.id]
            assert seen["requested"] == 1 and "notify" in owed, (record, seen, owed)
            decided = {e: n for e, n in seen.items() if e.startswith("decided:")}
            decided_total = sum(decided.values()) + seen["timed_out"]
            if record.pending:
                assert decided_total == 0 and "resolved" not in owed, (record, seen, owed)
            else:
                event = ("timed_out" if record.status is Status.TIMEOUT
                         else f"decided:{record.status.value}")
                assert decided_total == seen[event] == 1, (record, seen)
                assert "resolved" in owed, (record, owed)
            # a delivery, where it was shown and its audit commit together
            shown = CHANNEL in record.message_refs
            assert seen["notified"] == int(shown), (record, seen)
            if shown:
                assert owed["notify"], (record, owed)
    finally:
        await store.close()


@INTERPRETERS
def test_sigkill_at_random_instants_of_filing_and_deciding_leaves_every_change_whole(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'churn.db'}"
    filed = _kill_while_churning([url], rounds=10, seed=11)
    asyncio.run(_assert_whole(store_of(url, None), filed))


@INTERPRETERS
def test_sigkill_while_churning_on_postgres_leaves_every_change_whole(
    postgres_dsn: str, pg_schema: str,
) -> None:
    pytest.importorskip("psycopg")
    filed = _kill_while_churning([postgres_dsn, pg_schema], rounds=6, seed=13)
    asyncio.run(_assert_whole(store_of(postgres_dsn, pg_schema), filed))


@INTERPRETERS
def test_a_notification_leased_to_a_killed_process_is_taken_over_after_its_lease(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'gate.db'}"
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.support.crash_child", "showing", url],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    try:
        [line] = _read_lines(child, 1, time.monotonic() + 120)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    assert line.startswith("showing "), line
    request_id = line.split()[1]
    # filed with its notification leased to the process, which died showing it
    [item] = asyncio.run(_outbox(url))
    assert (item.request_id, item.done) == (request_id, False)
    assert item.leased_until is not None and item.leased_until > utcnow()

    shown = RecordingNotifier(CHANNEL)
    later = utcnow() + timedelta(seconds=OWN_LEASE + 1)  # a restart once the lease passed

    def clock() -> datetime:
        return later

    with Loopgate(store=url, notifiers=[shown], clock=clock, poll_interval=0.05) as gate:
        until(lambda: all(i.done for i in asyncio.run(_outbox(url))))
        assert [r.id for r in shown.notified] == [request_id]
        assert [e.event for e in gate.audit(request_id=request_id)] == [
            "requested", "notified"]
        assert gate.get(request_id).message_refs == {CHANNEL: {"seen": 1}}


async def _outbox(url: str) -> list[Any]:
    store = open_store(url)
    try:
        return await store.list_outbox()
    finally:
        await store.close()
