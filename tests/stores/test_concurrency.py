"""Exactly-once under real concurrency, on every backend.

Many answers to one request race through tasks, threads and OS processes; each request
must leave ``pending`` once, every loser must learn who won, and nothing may be lost.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from loopgate_lc.errors import AlreadyDecided
from loopgate_lc.schema import Status
from loopgate_lc.stores import MemoryStore, OutboxItem, SQLiteStore, Store
from loopgate_lc.testing.stores import T0, request

REQUESTS = 20
ANSWERS_PER_REQUEST = 10
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend: Store
    if request.param == "memory":
        backend = MemoryStore()
    elif request.param == "sqlite":
        backend = SQLiteStore(tmp_path / "race.db")
    else:
        pytest.importorskip("psycopg")
        from loopgate_lc.stores import PostgresStore

        dsn = request.getfixturevalue("postgres_dsn")
        schema = request.getfixturevalue("pg_schema")
        backend = PostgresStore(dsn, schema=schema, max_size=8)
    await backend.setup()
    yield backend
    await backend.close()


Outcome = tuple[str, str, Any]  # (request id, actor, "won" or the AlreadyDecided)


async def _answer(store: Store, request_id: str, actor: str) -> Outcome:
    try:
        await store.resolve(
            request_id,
            status=Status.APPROVED,
            decision={"type": "approve", "by": actor},
            decided_by=actor,
            channel="race",
        )
    except AlreadyDecided as exc:
        return request_id, actor, exc
    return request_id, actor, "won"


async def _file_requests(store: Store) -> list[str]:
    ids = [f"req-{n}" for n in range(REQUESTS)]
    for request_id in ids:
        await store.create_request(request(request_id))
    return ids


async def _check_exactly_once(store: Store, ids: list[str], outcomes: list[Outcome]) -> None:
    assert len(outcomes) == REQUESTS * ANSWERS_PER_REQUEST
    winners = {rid: actor for rid, actor, result in outcomes if result == "won"}
    wins_per_request = Counter(rid for rid, _, result in outcomes if result == "won")
    assert wins_per_request == Counter({rid: 1 for rid in ids})
    losers = [(rid, result) for rid, _, result in outcomes if result != "won"]
    assert len(losers) == REQUESTS * (ANSWERS_PER_REQUEST - 1) == 180
    for rid, error in losers:
        assert isinstance(error, AlreadyDecided)
        assert (error.request_id, error.decided_by, error.status) == (rid, winners[rid], "approved")
    stored = await store.list_requests()
    assert sorted(r.id for r in stored) == sorted(ids)
    for record in stored:
        assert record.status is Status.APPROVED
        assert record.decided_by == winners[record.id]
        assert record.decision == {"type": "approve", "by": winners[record.id]}


async def test_200_concurrent_resolves_from_tasks(store: Store) -> None:
    ids = await _file_requests(store)
    calls = [_answer(store, rid, f"task-{k}") for k in range(ANSWERS_PER_REQUEST) for rid in ids]
    outcomes = await asyncio.gather(*calls)
    await _check_exactly_once(store, ids, list(outcomes))


async def test_200_concurrent_resolves_from_threads(
    store: Store, request: pytest.FixtureRequest
) -> None:
    ids = await _file_requests(store)
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    start = threading.Barrier(ANSWERS_PER_REQUEST)

    shared = isinstance(store, MemoryStore | SQLiteStore)
    if not shared:
        dsn = request.getfixturevalue("postgres_dsn")
        schema = request.getfixturevalue("pg_schema")

    def store_for_thread() -> Store:
        if shared:
            return store  # one object shared by every thread and event loop
        # A Postgres pool belongs to one event loop: each thread is its own worker.
        from loopgate_lc.stores import PostgresStore

        return PostgresStore(dsn, schema=schema, max_size=2)

    def answer_all(actor: str) -> None:
        own = store_for_thread()

        async def run() -> list[Outcome]:
            try:
                return list(await asyncio.gather(*(_answer(own, rid, actor) for rid in ids)))
            finally:
                if own is not store:
                    await own.close()

        start.wait(timeout=10)
        results = asyncio.run(run())
        with lock:
            outcomes.extend(results)

    threads = [
        threading.Thread(target=answer_all, args=(f"thread-{k}",))
        for k in range(ANSWERS_PER_REQUEST)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    await _check_exactly_once(store, ids, outcomes)


async def test_concurrent_filing_of_one_interrupt_creates_one_request(store: Store) -> None:
    results = await asyncio.gather(
        *(
            store.create_request(request(f"dup-{n}", thread_id="t", interrupt_id="i"))
            for n in range(20)
        )
    )
    created = [stored for stored, was_created in results if was_created]
    assert len(created) == 1
    assert {stored.id for stored, _ in results} == {created[0].id}
    assert [r.id for r in await store.list_requests()] == [created[0].id]


async def test_concurrent_mark_resumed_has_one_winner(store: Store) -> None:
    await store.create_request(request("r1"))
    await store.resolve("r1", status=Status.APPROVED, decision={}, decided_by="a", channel="c")
    claims = await asyncio.gather(*(store.mark_resumed("r1") for _ in range(20)))
    assert claims.count(True) == 1


async def test_concurrent_claims_hand_each_delivery_to_one_worker(store: Store) -> None:
    for n in range(40):
        await store.enqueue_outbox(OutboxItem(request_id=f"r{n}", notifier="n", due_at=T0))
    batches = await asyncio.gather(*(store.claim_outbox(T0, limit=7) for _ in range(10)))
    claimed = [item.id for batch in batches for item in batch]
    assert len(claimed) == 40
    assert len(set(claimed)) == 40


def _start_worker(
    url: str, actor: str, ids: list[str], schema: str | None
) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "tests.stores._race_worker", url, actor, ",".join(ids)]
    if schema:
        args.append(schema)
    return subprocess.Popen(
        args,
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    for _ in range(50):  # tolerate stray lines printed on import
        line = proc.stdout.readline()
        if line.strip() == "ready":
            return
        if not line:
            break
    proc.kill()
    _, err = proc.communicate(timeout=10)
    pytest.fail(f"race worker did not start: {err}")


def _race_two_processes(
    url: str, ids: list[str], schema: str | None = None
) -> list[dict[str, Any]]:
    procs = [_start_worker(url, actor, ids, schema) for actor in ("proc-a", "proc-b")]
    try:
        for proc in procs:
            _wait_ready(proc)
        for proc in procs:  # both are waiting on stdin: release them together
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = []
        for proc in procs:
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)


async def _check_two_process_race(
    store: Store, ids: list[str], reports: list[dict[str, Any]]
) -> None:
    a, b = reports
    won_a, won_b = set(a["won"]), set(b["won"])
    assert not won_a & won_b
    assert won_a | won_b == set(ids)
    assert len(won_a) + len(won_b) == 50
    # each process lost exactly the ids the other won, and was told the right winner
    assert set(a["lost"]) == won_b
    assert set(b["lost"]) == won_a
    assert set(a["lost"].values()) <= {"proc-b"}
    assert set(b["lost"].values()) <= {"proc-a"}
    for report in reports:
        for request_id in report["won"]:
            record = await store.get_request(request_id)
            assert record.decided_by == report["actor"]
            assert record.decision == {"type": "approve", "by": report["actor"]}


async def test_two_processes_race_on_one_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    store = SQLiteStore(path)
    await store.setup()
    ids = [f"p-{n}" for n in range(50)]
    for request_id in ids:
        await store.create_request(request(request_id))
    try:
        reports = await asyncio.to_thread(_race_two_processes, f"sqlite:///{path}", ids)
        await _check_two_process_race(store, ids, reports)
    finally:
        await store.close()


async def test_two_processes_race_on_one_postgres_schema(postgres_dsn: str, pg_schema: str) -> None:
    pytest.importorskip("psycopg")
    from loopgate_lc.stores import PostgresStore

    store = PostgresStore(postgres_dsn, schema=pg_schema)
    await store.setup()
    ids = [f"p-{n}" for n in range(50)]
    for request_id in ids:
        await store.create_request(request(request_id))
    try:
        reports = await asyncio.to_thread(_race_two_processes, postgres_dsn, ids, pg_schema)
        await _check_two_process_race(store, ids, reports)
    finally:
        await store.close()
