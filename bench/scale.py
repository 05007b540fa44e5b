"""4. Scale: 10,000 pending requests in one process, and decisions per second.

For each store (memory, SQLite, PostgreSQL when configured) one gateway files 10,000
requests (each with a one-hour deadline, so the timer tracks them all) as
``POST /hitl/request`` does, through ``Loopgate.asubmit``. Memory: the Python heap the
gateway and its store still hold once they are filed (``tracemalloc``), per request,
beside the anchor: the same requests' payloads held as plain dicts.

Then, with those requests still pending, requests are decided in alternating blocks:
the database's own floor (a plain ``UPDATE ... WHERE id = ? AND status = 'pending'``,
one commit each, through the bare driver), the store's compare-and-set with its audit
event and outbox entries (``Store.resolve``), ``Loopgate.respond()`` (validation,
authorisation, audit, hooks, wake-ups), and ``POST /hitl/respond`` over real HTTP from
one client and from 8 concurrent ones. The server runs in its own process
(``loopgate-lc serve`` on the same database), so the HTTP figures are not shared with
the benchmark's own work; the clients speak plain HTTP/1.1 over keep-alive sockets, so
they cost the two CPUs little beside the server. The memory store lives in one
process: there the server's requests are filed over HTTP, and there is no floor.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import sqlite3
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

from bench._backends import Backend, backend, backend_names
from bench._harness import Config, Row, Section, median, not_measured, percentile
from bench._serve import Served
from loopgate_lc.gateway import Loopgate
from loopgate_lc.schema import Status, utcnow
from loopgate_lc.stores.sqlite import SQLiteStore

LABELS = {
    "floor": "raw UPDATE ... WHERE status = 'pending', one commit each (the floor)",
    "resolve": "Store.resolve (compare-and-set + audit + outbox, one transaction)",
    "respond": "Loopgate.respond()",
    "http": "POST /hitl/respond, 1 client",
    "http8": "POST /hitl/respond, 8 concurrent clients",
}
NAMES = {"memory": "memory store", "sqlite": "SQLite store", "postgres": "PostgreSQL store"}
HTTP = ("http", "http8")


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


class _Client:
    """One keep-alive HTTP/1.1 connection that posts JSON and reads the answer: a client
    that costs next to nothing, so the figures are the server's."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        data = json.dumps(body).encode()
        message = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                   ).encode() + data
        try:
            return await self._exchange(message)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                raise
            # the server closed the idle connection (keep-alive timeout) before reading
            # this request: open another and send it there
            await self.close()
            return await self._exchange(message)

    async def _exchange(self, message: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self._reader is not None
        self._writer.write(message)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(int(line.split(":", 1)[1]) for line in lines
                      if line.lower().startswith("content-length:"))
        return int(lines[0].split()[1]), await self._reader.readexactly(length)

    async def close(self) -> None:
        if self._writer is not None:
            writer, self._writer, self._reader = self._writer, None, None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class _Deciders:
    """The ways of deciding, each taking the next pending ids."""

    def __init__(self, gate: Loopgate, twin: Any, floor: Callable[[str], None] | None,
                 port: int) -> None:
        self.gate = gate
        self.twin = twin
        self.floor_one = floor
        self.loop = asyncio.new_event_loop()
        self.clients = [_Client(port) for _ in range(8)]

    def close(self) -> None:
        for client in self.clients:
            self.loop.run_until_complete(client.close())
        self.loop.run_until_complete(self.twin.close())
        self.loop.close()

    def floor(self, ids: list[str]) -> None:
        assert self.floor_one is not None
        for request_id in ids:
            self.floor_one(request_id)

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

    def _post(self, ids: list[str], clients: int) -> None:
        todo = iter(ids)

        async def one(client: _Client) -> None:
            for request_id in todo:
                status, body = await client.post("/hitl/respond", {
                    "request_id": request_id, "decision": {"type": "approve"},
                    "actor": "bench"})
                if status != 200:
                    raise RuntimeError(f"POST /hitl/respond said {status}: {body[:200]!r}")

        async def go() -> None:
            await asyncio.gather(*(one(c) for c in self.clients[:clients]))
        self.loop.run_until_complete(go())

    def http(self, ids: list[str]) -> None:
        self._post(ids, 1)

    def http8(self, ids: list[str]) -> None:
        self._post(ids, 8)


def _rate_rows(deciders: _Deciders, ids: dict[str, Iterator[str]], store_name: str,
               rounds: int, block: int, kinds: list[str]) -> list[Row]:
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    for rnd in range(rounds + 1):  # round 0 warms up
        shift = rnd % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            batch = [next(ids[kind]) for _ in range(block)]
            began = time.perf_counter_ns()
            getattr(deciders, kind)(batch)
            took = time.perf_counter_ns() - began
            if rnd:
                rates[kind].append(block / (took / 1e9))
    anchor = kinds[0]
    base = median(rates[anchor])
    rows = []
    for kind, values in rates.items():
        value = median(values)
        rows.append(Row(
            f"{store_name}: {LABELS[kind]}", value, "decisions/s",
            anchor=f"{store_name}: {LABELS[anchor]}", ratio=value / base if base else None,
            samples=len(values) * block,
            note=f"slowest block {percentile(values, 1):,.0f}/s" if values else ""))
    return rows


def _floor(back: Backend, store: Any) -> tuple[Callable[[str], None], Callable[[], None]]:
    """The bare driver's ``UPDATE ... WHERE status = 'pending'``, one commit each, on the
    store's own table (and the same file settings: WAL, SQLite's default sync)."""
    text = ("UPDATE {table} SET status = 'approved', decided_by = 'bench', decided_at = {p} "
            "WHERE id = {p} AND status = 'pending'")
    if isinstance(store, SQLiteStore):
        conn = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
        sql = text.format(table="loopgate_requests", p="?")

        def one(request_id: str) -> None:
            if conn.execute(sql, (utcnow().isoformat(), request_id)).rowcount != 1:
                raise RuntimeError(f"{request_id} was not pending")
        return one, conn.close
    import psycopg

    assert back.dsn is not None and back.schema is not None
    pg = psycopg.connect(back.dsn, autocommit=True, options=f"-c search_path={back.schema}")
    sql = text.format(table="loopgate_requests", p="%s")

    def one_pg(request_id: str) -> None:
        if pg.execute(sql, (utcnow(), request_id)).rowcount != 1:
            raise RuntimeError(f"{request_id} was not pending")
    return one_pg, pg.close


def _store_url(back: Backend, store: Any) -> str:
    if isinstance(store, SQLiteStore):
        return f"sqlite:///{store.path.resolve()}"
    if back.name == "postgres":
        assert back.dsn is not None and back.schema is not None
        sep = "&" if "?" in back.dsn else "?"
        return f"{back.dsn}{sep}options=-csearch_path%3D{back.schema}"
    return "memory://"


def _file_over_http(port: int, count: int) -> list[str]:
    """File ``count`` requests in the server's own (memory) store, 8 at a time."""
    async def go() -> list[str]:
        clients = [_Client(port) for _ in range(8)]
        ids: list[str] = []
        todo = iter(range(count))

        async def one(client: _Client) -> None:
            for i in todo:
                status, body = await client.post("/hitl/request", {
                    "session_id": "bench",
                    "message": f"Approve change #{i} to the billing service?",
                    "metadata": {"change": i, "service": "billing", "author": "ci"},
                    "timeout_seconds": 3600})
                if status != 200:
                    raise RuntimeError(f"POST /hitl/request said {status}: {body[:200]!r}")
                ids.append(json.loads(body)["request_id"])

        try:
            status, body = await clients[0].post("/hitl/register", {"session_id": "bench"})
            if status != 200:
                raise RuntimeError(f"POST /hitl/register said {status}: {body[:200]!r}")
            await asyncio.gather(*(one(c) for c in clients))
        finally:
            for client in clients:
                await client.close()
        return ids

    return asyncio.run(go())


def _count(config: Config) -> int:
    """Requests filed per store: enough for every way of deciding to take its blocks."""
    return config.size(10_000, 20)


def _measure(back: Backend, config: Config) -> list[Row]:
    count = _count(config)
    rounds, block = config.reps(6), config.size(50, 2)
    name = NAMES[back.name]
    concurrency = 1 if back.name == "memory" else 16
    kinds = [k for k in LABELS if back.name != "memory" or k != "floor"]
    need = (rounds + 1) * block
    store = back.store()
    with Loopgate(store=store) as gate:
        rows, ids = _memory_rows(gate, name, count, concurrency)
        shared = back.name != "memory"
        if need * (len(kinds) if shared else len(kinds) - len(HTTP)) > len(ids):
            raise RuntimeError(f"need {need} pending requests per way, filed {len(ids)}")
        server = Served(_store_url(back, store), back.workdir, {
            k: v for k, v in os.environ.items()
            if not k.startswith(("LOOPGATE_API_KEYS", "TELEGRAM_"))},
            ("--default-timeout", "3600"), timeout=120)
        floor, close_floor = _floor(back, store) if shared else (None, lambda: None)
        try:
            served = ids if shared else _file_over_http(server.port, need * len(HTTP))
            taken = iter(ids)
            given = {k: iter([next(taken) for _ in range(need)]) for k in kinds
                     if shared or k not in HTTP}
            if not shared:
                left = iter(served)
                given.update({k: iter([next(left) for _ in range(need)]) for k in HTTP})
            deciders = _Deciders(gate, back.twin(store), floor, server.port)
            try:
                rows += _rate_rows(deciders, given, name, rounds, block, kinds)
            finally:
                deciders.close()
        finally:
            close_floor()
            server.close()
        used = need * (len(kinds) if shared else len(kinds) - len(HTTP))
        left_pending = len(gate.pending())
        if left_pending != count - used:
            raise RuntimeError(f"{count - used} requests should still be pending, "
                               f"not {left_pending}")
    return rows


def _verdict(section: Section) -> str:
    """Met when 8 clients decide 1,500/s on SQLite through the server's own process."""
    try:
        row = section.row(f"{NAMES['sqlite']}: {LABELS['http8']}")
    except KeyError:
        return "measured"
    if row.value is None:
        return "measured"
    return "met" if row.value >= 1500 else "not met"


def run(config: Config) -> Section:
    began = time.perf_counter()
    count = _count(config)
    section = Section(
        key="scale",
        title="4. Scale: pending requests and decisions per second",
        goal=f"{count:,} pending requests in one process; POST /hitl/respond at least 1,500 "
             "decisions/s on SQLite with 8 clients, the server in its own process, beside "
             "the raw UPDATE floor",
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
    section.verdict = _verdict(section)
    section.notes.append(
        "Heap: Python allocations still held after filing, by tracemalloc (SQLite's and "
        "libpq's own C buffers are not counted; the requests themselves live in the "
        "database there). Decisions/s: the median over alternating blocks of "
        "decisions; ratio = rate / the floor on the same backend (the raw UPDATE through "
        "the bare driver, one commit each; on the memory store, Store.resolve). Every "
        "decision approves a different pending request, with the rest still pending, so no "
        "decision meets an empty or warmed-up store. The HTTP rows talk to `loopgate-lc "
        "serve` in its own process on the same database (the memory store's server files "
        "its own requests over HTTP first); the gateway there lives on uvicorn's loop, and "
        "SQLite commits concurrent decisions together (one transaction, a savepoint each), "
        "which is how 8 clients can pass the one-commit-each floor.")
    section.seconds = time.perf_counter() - began
    return section
