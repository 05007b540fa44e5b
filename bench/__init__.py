"""Benchmarks: a human gate should cost next to nothing.

``python -m bench`` (or ``make bench``) runs them all and writes ``bench/RESULTS.md``.
Each benchmark is a module with ``run(Config) -> Section``; every figure is measured
beside its anchor in the same run, and each benchmark stops at a time budget.
"""

from __future__ import annotations

from collections.abc import Callable

from bench import (
    agent_overhead,
    cli_startup,
    grant_lookup,
    inbox_live,
    langgraph_server,
    policy_eval,
    quorum_votes,
    round_trip,
    scale,
    telegram_latency,
    telemetry_cost,
)
from bench._harness import Config, Section

__all__ = ["BENCHMARKS", "OPTIMISATIONS"]

BENCHMARKS: list[tuple[str, Callable[[Config], Section]]] = [
    ("overhead", agent_overhead.run),
    ("round_trip", round_trip.run),
    ("policy", policy_eval.run),
    ("scale", scale.run),
    ("telegram", telegram_latency.run),
    ("langgraph_server", langgraph_server.run),
    ("telemetry", telemetry_cost.run),
    ("cli", cli_startup.run),
    ("inbox", inbox_live.run),
    ("quorum", quorum_votes.run),
    ("grants", grant_lookup.run),
]

OPTIMISATIONS: list[str] = [
    "Found by profiling the benchmarks above (cProfile on the caller's thread and on the "
    "gateway's loop thread); each was measured before and after on a 2-CPU AMD EPYC "
    "Linux VM, Python 3.11, with the variants alternated in one process.",
    "",
    "1. **A pause publishes a decision schema generated once per tool** "
    "(`loopgate_lc/interrupts.py`). LangGraph generates a `response_schema`'s JSON "
    "schema on every `interrupt()` that pauses; for a tool's decision union that took "
    "about 4 ms, more than the rest of the pause. `decision_schema()` now attaches the "
    "finished schema (definitions inlined; validation unchanged). Bought: about 4-5 ms "
    "per pause, e.g. a guarded pause + resume on InMemorySaver 14.1 -> 9.9 ms (1.79x -> "
    "1.26x raw LangGraph); on SqliteSaver 19.8 -> 16.4 ms, on PostgresSaver 24.8 -> 19.8 "
    "ms. Section 2 re-measures it in every run (the \"before fix 1\" rows).",
    "2. **The memory store copies records with a pickle round trip** "
    "(`loopgate_lc/stores/memory.py`) instead of `model_copy(deep=True)`: 341 -> 41 us "
    "per request record carrying a decision schema. Bought: a gateway round trip on the "
    "memory store 20.1 -> 18.0 ms (median of 120 alternated runs each).",
    "3. **Filing a request wakes the deadline timer only for a deadline before its next "
    "wake** (now `loopgate_lc/gateway/timers.py`, a deadline heap armed from "
    "`loopgate_lc/gateway/filing.py`). Every filing used to make the timer re-read the "
    "store (expired requests, next deadline): a scan of every pending request in the "
    "memory store, so filing was quadratic. Bought: filing 10,000 requests on the memory "
    "store 50-56 s -> 3.7-5.5 s (0.4-0.6 ms per request, flat); on SQLite no measurable "
    "change (1.4 ms per request either way: its writes dominate).",
    "4. **FakeBotAPI's socket says it is TCP** (`loopgate_lc/fake_telegram.py`): asyncio "
    "turns Nagle off only on sockets created with `IPPROTO_TCP`, so every fake Bot API "
    "reply waited ~40 ms for a delayed ACK. Bought: tap -> resumed through "
    "python-telegram-bot p50 62 -> 17 ms, p99 71 -> 24 ms. (The benchmarks' own uvicorn "
    "server has the same fix: 45 -> 0.7 ms per loopback request.)",
    "5. **A request keeps its decision schema as one JSON string, and validators are "
    "cached per schema** (now `loopgate_lc/gateway/filing.py` and "
    "`loopgate_lc/gateway/validation.py`). The schema rode in every stored "
    "payload as nested dicts, so every store read and audit copied it. Bought: filing "
    "one interrupt on the memory store 2.45 -> 0.52 ms (gateway loop time per round "
    "trip, 100 alternated runs).",
    "6. **The memory store indexes open deliveries and filters before sorting** "
    "(`loopgate_lc/stores/memory.py`): enqueueing a delivery scanned every delivery ever "
    "made. Bought: enqueue with 10,000 finished deliveries behind it 619 -> 19 us.",
    "7. **`Loopgate.run` files a pause and waits for its decision in one trip to the "
    "gateway's loop, and wakes the waiting run before firing hooks and queueing "
    "notifications** (now `loopgate_lc/gateway/running.py` and "
    "`loopgate_lc/gateway/deciding.py`). Bought: nothing measurable in section "
    "2 (1.65x before, 1.69x after, within this VM's run-to-run noise); kept because it "
    "is simpler, and `stream()` still shows each request before waiting.",
    "",
    "Not changed (trade-offs for the owners, not clear local wins): on SQLite and "
    "PostgreSQL a round trip makes about 9 durable writes on its critical path "
    "(create, audit, outbox enqueue and claim, resolve, audit, outbox, mark resumed, "
    "audit), about 0.6-1.2 ms each on SQLite (0.4 ms of it the WAL fsync; "
    "`PRAGMA synchronous=NORMAL` would drop that, trading durability on power loss) and "
    "1-2 ms on PostgreSQL. Filing a request, its audit event and its outbox entry in one "
    "transaction (a store-contract change) would remove about a third of them.",
]
"""What each library change made for speed bought, measured on the machine in the
table before and after the change (the live rows above re-measure what they can)."""
