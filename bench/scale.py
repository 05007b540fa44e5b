"""4. Scale: 10,000 pending requests in one process, and decisions per second.

For each store (memory, SQLite, PostgreSQL when configured) one gateway files 10,000
requests (each with a one-hour deadline, so the timer tracks them all) as
``POST /hitl/request`` does, through ``Loopgate.asubmit``. Memory: the Python heap the
gateway and its store still hold once they are filed (``tracemalloc``), per request,
beside the anchor: the same requests' payloads held as plain dicts.

Then, with those requests still pending, requests are decided in alternating blocks
four ways: the store's own compare-and-set (``Store.resolve``, the anchor: what any
decision must cost), ``Loopgate.respond()`` (validation, authorisation, audit, hooks,
wake-ups), ``POST /hitl/respond`` over real HTTP from one client, and the same from
8 concurrent clients.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from bench._backends import Backend, backend, backend_names
from bench._harness import Config, Row, Section, median, not_measured, percentile
from loopgate_lc.background import BackgroundServer as LiveServer
from loopgate_lc.gateway import Loopgate
from loopgate_lc.schema import Status, utcnow
from loopgate_lc.server import create_app

LABELS = {
    "resolve": "Store.resolve (compare-and-set only)",
    "respond": "Loopgate.respond()",
    "http": "POST /hitl/respond, 1 client",
    "http8": "POST /hitl/respond, 8 concurrent clients",
}
NAMES = {"memory": "memory store", "sqlite": "SQLite store", "postgres": "PostgreSQL store"}


def _file(gate: Loopgate, count: int, concurrency: int) -> list[str]:
    async def go() -> list[str]:
        limit = asyncio.Semaphore(concurrency)

        async def one(i: int) -> str:
            async with limit:
                record = await gate.asubmit(
                    f"Approve change #{i} to the billing service?", kind="approval",
                    metadata={"change": i, "service": "billing", "author": "ci"},
                    client_id="bench", timeout=3600)
                return record.id

        return list(await asyncio.gather(*(one(i) for i in range(count))))

    return asyncio.run(go())


def _heap_of(build: Callable[[], Any]) -> tuple[int, Any]:
    """Bytes of Python heap that ``build()`` leaves allocated (and what it built)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before, kept


def _memory_rows(gate: Loopgate, store_name: str, count: int, concurrency: int
                 ) -> tuple[list[Row], list[str]]:
    took = time.perf_counter()
    held, ids = _heap_of(lambda: _file(gate, count, concurrency))
    took = time.perf_counter() - took
    records = gate.pending()
    if len(records) != count:
        raise RuntimeError(f"expected {count} pending requests, found {len(records)}")
    payloads, copies = _heap_of(lambda: [json.loads(json.dumps(r.payload)) for r in records])
    del copies
    anchor = f"{store_name}: the requests' payloads as plain dicts"
    rows = [
        Row(f"{store_name}: heap held for {count:,} pending requests, per request",
            held / count, "bytes", anchor=anchor, ratio=held / payloads if payloads else None,
            samples=count, note=f"{held / 2**20:.1f} MiB in all; filed in {took:.1f} s "
            "(under tracemalloc)"),
        Row(anchor, payloads / count, "bytes", anchor=anchor, ratio=1.0, samples=count),
    ]
    return rows, ids


class _Deciders:
    """The four ways of deciding, each taking the next pending ids."""

    def __init__(self, gate: Loopgate, twin: Any, url: str) -> None:
        self.gate = gate
        self.twin = twin
        self.loop = asyncio.new_event_loop()
        self.client = httpx.Client(base_url=url, timeout=30)
        self.aclient = httpx.AsyncClient(base_url=url, timeout=30,
                                         limits=httpx.Limits(max_connections=8))

    def close(self) -> None:
        self.client.close()
        self.loop.run_until_complete(self.aclient.aclose())
        self.loop.run_until_complete(self.twin.close())
        self.loop.close()

    def resolve(self, ids: list[str]) -> None:
        async def go() -> None:
            for request_id in ids:
                decision = {"type": "approve", "actor": "bench", "channel": "bench"}
                await self.twin.resolve(request_id, status=Status.APPROVED, decision=decision,
                                        decided_by="bench", channel="bench",
                                        decided_at=utcnow())
        self.loop.run_until_complete(go())

    def respond(self, ids: list[str]) -> None:
        for request_id in ids:
            self.gate.respond(request_id, {"type": "approve"}, actor="bench", channel="bench")

    def http(self, ids: list[str]) -> None:
        for request_id in ids:
            answer = self.client.post("/hitl/respond", json={
                "request_id": request_id, "decision": {"type": "approve"}, "actor": "bench"})
            if answer.status_code != 200:
                raise RuntimeError(f"POST /hitl/respond said {answer.status_code}: "
                                   f"{answer.text[:200]}")

    def http8(self, ids: list[str]) -> None:
        async def go() -> None:
            limit = asyncio.Semaphore(8)

            async def one(request_id: str) -> None:
                async with limit:
                    answer = await self.aclient.post("/hitl/respond", json={
                        "request_id": request_id, "decision": {"type": "approve"},
                        "actor": "bench"})
                    if answer.status_code != 200:
                        raise RuntimeError(f"POST /hitl/respond said {answer.status_code}")

            await asyncio.gather(*(one(i) for i in ids))
        self.loop.run_until_complete(go())


def _rate_rows(deciders: _Deciders, ids: Iterator[str], store_name: str, rounds: int,
               block: int) -> list[Row]:
    rates: dict[str, list[float]] = {k: [] for k in LABELS}
    kinds = list(LABELS)
    for rnd in range(rounds + 1):  # round 0 warms up
        shift = rnd % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            batch = [next(ids) for _ in range(block)]
            began = time.perf_counter_ns()
            getattr(deciders, kind)(batch)
            took = time.perf_counter_ns() - began
            if rnd:
                rates[kind].append(block / (took / 1e9))
    base = median(rates["resolve"])
    rows = []
    for kind, values in rates.items():
        value = median(values)
        rows.append(Row(
            f"{store_name}: {LABELS[kind]}", value, "decisions/s",
            anchor=f"{store_name}: {LABELS['resolve']}", ratio=value / base if base else None,
            samples=len(values) * block,
            note=f"slowest block {percentile(values, 1):,.0f}/s" if values else ""))
    return rows


def _measure(back: Backend, config: Config) -> list[Row]:
    count = config.size(10_000, 60)
    rounds, block = config.reps(6, 2), config.size(50, 4)
    name = NAMES[back.name]
    concurrency = 1 if back.name == "memory" else 16
    store = back.store()
    with Loopgate(store=store) as gate:
        rows, ids = _memory_rows(gate, name, count, concurrency)
        need = (rounds + 1) * block * len(LABELS)
        if need > len(ids):
            raise RuntimeError(f"need {need} pending requests, filed {len(ids)}")
        with LiveServer(create_app(gate, mcp=False)) as live:
            deciders = _Deciders(gate, back.twin(store), live.url)
            try:
                rows += _rate_rows(deciders, iter(ids), name, rounds, block)
            finally:
                deciders.close()
        left = len(gate.pending())
        if left != count - need:
            raise RuntimeError(f"{count - need} requests should still be pending, not {left}")
    return rows


def run(config: Config) -> Section:
    began = time.perf_counter()
    count = config.size(10_000, 60)
    section = Section(
        key="scale",
        title="4. Scale: pending requests and decisions per second",
        goal=f"{count:,} pending requests in one process; decisions/s through respond() "
             "and POST /hitl/respond, beside the store's own compare-and-set",
    )
    for name, missing in backend_names():
        if missing is not None:
            label = NAMES[name]
            section.rows.append(not_measured(f"{label}: heap per pending request", "bytes",
                                             missing))
            for kind in LABELS:
                section.rows.append(not_measured(f"{label}: {LABELS[kind]}", "decisions/s",
                                                 missing))
            continue
        with backend(name) as back:
            section.rows.extend(_measure(back, config))
            back.close()
    section.verdict = "measured"
    section.notes.append(
        "Heap: Python allocations still held after filing, by tracemalloc (SQLite's and "
        "libpq's own C buffers are not counted; the requests themselves live in the "
        "database there). Decisions/s: the median over alternating blocks of "
        "decisions; ratio = rate / the store's compare-and-set rate on the same backend. "
        "Every decision approves a different pending request, with the rest still "
        "pending, so no decision meets an empty or warmed-up store.")
    section.seconds = time.perf_counter() - began
    return section
