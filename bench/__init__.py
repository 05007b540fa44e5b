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
    "8. **Deliveries to the gateway's own notifiers cost no transaction of their own** "
    "(`loopgate_lc/gateway/outbox.py`, `loopgate_lc/stores/`). They are written leased to "
    "the process with the change that owes them and made right after its commit (no "
    "claim, no read), and recorded by the next change of their request (the decision "
    "records the notification, the end of the run the outcome's delivery) or in one "
    "batch within a poll. Bought: a round trip with one notifier 7 -> 3 write "
    "transactions. Section 2's paired ratio to raw LangGraph, before and after measured "
    "minutes apart, in two runs on a busy VM (with item 9): SQLite 1.52 -> 1.37 and "
    "2.02 -> 1.85, PostgreSQL 2.35 -> 1.90 and 2.34 -> 2.06; the memory store 1.79 -> "
    "1.34 and 1.64 -> 1.79 (no change beyond its noise: it never paid for commits). On "
    "SQLite and PostgreSQL what is left is mostly not the commits (raw LangGraph plus two "
    "commits is 1.02-1.14x) but the hops between the caller's thread, the gateway's loop "
    "and the store's worker, and the loop's own work competing with the graph for the "
    "GIL.",
    "9. **PostgreSQL pipelines each write transaction** (`loopgate_lc/stores/postgres.py`): "
    "BEGIN and the statements whose rows nobody reads (audit lines, deliveries owed, "
    "grants, `pg_notify`) travel with the next statement that is waited for, or with the "
    "COMMIT: a decision is 3-4 round trips instead of 7-9, a filing 2 instead of 5.",
    "10. **A decision schema carries its compiled validator** "
    "(`loopgate_lc/interrupts.py`). LangGraph wraps a pause's `response_schema` in a "
    "new pydantic `TypeAdapter` on every `interrupt()` call, the pause and the resume "
    "alike, and each compiled the decision union again (1.4-2.1 ms here). Pydantic takes "
    "a type's own compiled core schema, validator and serializer when the type carries "
    "them, so `decision_schema()` compiles once and attaches them: adapting it again "
    "costs 8-16 us. Bought: about 2-3 ms per guarded round trip, gateway or not; section "
    "2 re-measures it in every run (the \"before fix 10\" rows).",
    "11. **`Loopgate.run` skips two reads on its way to a pause** "
    "(`loopgate_lc/gateway/facade.py`, `loopgate_lc/gateway/filing.py`). A sync caller "
    "of a gateway open on its own loop thread builds the run's config itself instead of "
    "a trip to the loop that only found the gateway open; and an interrupt the run "
    "reports for the first time is filed without looking it up first (the insert already "
    "returns a request filed before under the same thread and interrupt, in its own "
    "transaction). Bought: about 0.1-0.2 ms each (loop and store-thread hops), within "
    "section 2's run-to-run noise here.",
    "12. **An answer over HTTP costs the server less Python** (`loopgate_lc/server/`, "
    "`loopgate_lc/stores/`). Profiled (py-spy, GIL holder only) under section 4's 8 "
    "clients on SQLite: the store thread's row mapping and the loop's answer building "
    "took the GIL from each other. The JSON view of a request is built as a plain dict "
    "instead of being validated into a model and dumped again; answers and text columns "
    "are encoded by one shared JSON encoder (`json.dumps` with options builds one per "
    "call); a SQLite row becomes a record through one dict instead of a read by name per "
    "column. Bought: server CPU per decision 947-950 -> 753-907 us and 8 clients "
    "1,045-1,070 -> 1,108-1,223 decisions/s (three alternated pairs of 3,000 decisions "
    "on a busy 2-CPU VM).",
    "13. **The CLI's store commands run inline on a SQLite file** (`loopgate_lc/cli.py`, "
    "`loopgate_lc/stores/sqlite.py`, `loopgate_lc/_inline.py`, `loopgate_lc/gateway/`, "
    "`loopgate_lc/schema.py`, `loopgate_lc/stores/base.py`). Profiled with `-X "
    "importtime`, cProfile and instruction counts (valgrind, which the machine's load "
    "does not move): a command paid for asyncio (imported, an event loop and the store's "
    "thread started, all to run one read or one decision), for building the validators of"
    " all 18 models of the schema and the store contract (it uses two to five), and for "
    "pydantic's search for plugins, which reads the entry points of every installed "
    "distribution. Now `DirectSQLiteStore` runs the same operations and transactions on "
    "the caller's thread, so the store's and the deciding part's coroutines never wait "
    "and one step runs each (`run_inline`); the gateway parts the deciding path uses "
    "import asyncio and logging on first use; the models build their validators on first "
    "use (`defer_build`); a store command run as a program sets "
    "`PYDANTIC_DISABLE_PLUGINS` unless it is set. PostgreSQL and memory stores still run "
    "on an event loop. Bought, `pending` / `audit` / `approve` / `reject`: instructions "
    "945 / 915 / 945 / 945 M -> 788 / 735 / 803 / 803 M; CPU medians 282 / 277 / 302 / "
    "290 -> 231 / 219 / 232 / 245 ms and wall medians 409 / 412 / 450 / 569 -> 320 / 374 "
    "/ 381 / 462 ms (25 alternated runs of each on a 2-CPU VM at load 5, beside `python "
    "-c pass` at 20 ms; on an idle machine `pending` took 265 ms before). The floor row "
    "moved with it (no asyncio, no plugin search): 715 -> 582 M instructions. What is "
    "left above that floor is mostly loopgate_lc's own classes being created (frozen "
    "dataclasses cost about 1 ms each on Python 3.11, and the store path defines 14 to 20"
    " of them), the argument parser, and reading and printing the rows.",
    "14. **`Loopgate.run`'s round trip reads less** (`loopgate_lc/gateway/filing.py`, "
    "`loopgate_lc/gateway/deciding.py`, `loopgate_lc/gateway/resuming.py`, "
    "`loopgate_lc/grants.py`, `loopgate_lc/stores/`). Profiled (py-spy, GIL holder, and "
    "per-thread CPU time from the kernel) on "
    "section 2's SQLite round trip: the loop and the store "
    "thread each spent 3-4 ms per round trip, most of it on trips to the store and on "
    "parsing the 10 kB payload of every request row read. A tool call's filing looks for "
    "a remembered permission in its own insert (`INSERT ... SELECT ... WHERE NOT EXISTS`,"
    " `Store.create_request_unless_granted`) instead of a read before it; an answer to a "
    "request a run in this process waits for takes the record the run holds instead of "
    "reading it (not under a quorum or escalation steps, which change what the checks "
    "read; the compare-and-set still decides); a wait for requests just filed pending "
    "claims nothing first (its own read sees a decision made since); and a pause's "
    "decision schema is encoded by pydantic's Rust (123 -> 25 us per filing). Bought: "
    "per-thread CPU per round trip on SQLite, loop 3.6-3.9 -> 2.9-3.2 ms and store thread"
    " 3.7-3.8 -> 2.7-2.9 ms (two alternated runs of 100); section 2's paired ratio to raw"
    " LangGraph, median of three alternated runs of 60 on a busy 2-CPU VM (load 4-7): "
    "SQLite 1.35 -> 1.35 (within its noise), PostgreSQL 1.71 -> 1.66.",
    "15. **A finished run returns while the commit that records it is made** "
    "(`loopgate_lc/gateway/running.py`, `loopgate_lc/gateway/resuming.py`, "
    "`loopgate_lc/gateway/facade.py`). The end of a run (its resumes marked done, "
    "`finished` audited, the outcome's delivery recorded) was the caller's third wait on "
    "a commit, after the graph's checkpoint already held the resume. It is now started on"
    " the gateway's loop without the caller waiting (a sync caller does not even wait for"
    " the hop to the loop); every later call to the gateway waits for it first, and so do"
    " `close()` and the end of a process that never closed its gateway, so nothing in the"
    " process sees the run unfinished; a crash before it commits leaves what a crash a "
    "moment earlier left (claims a lease later completes). Still 3 write transactions per"
    " round trip. Bought: section 2's paired ratio, median of three alternated runs of 60"
    " on the same busy VM, SQLite 1.35 -> 1.16 (1.10-1.30), PostgreSQL 1.66 -> 1.49 "
    "(1.41-1.58); before both items 1.35 (1.26-1.49) and 1.71 (1.66-1.71). Both items "
    "together, three more alternated runs after the merge, on a quieter spell (raw "
    "LangGraph 17-32 ms): SQLite 1.48 -> 1.44 (1.39-1.53 -> 1.40-1.46), PostgreSQL 1.70 "
    "-> 1.49 (1.57-1.80 -> 1.42-1.50).",
    "16. **A decision's record is built from the request its decider read** "
    "(`loopgate_lc/stores/`, `loopgate_lc/gateway/deciding.py`, "
    "`loopgate_lc/gateway/audit.py`). The compare-and-set read its row back whole "
    "(`RETURNING *`) and parsed it into a new record, payload and all, although the "
    "decider had just read and parsed that request: `Store.resolve` now takes the record "
    "seen, and the SQL stores return only the columns that can change after filing (what "
    "the decision sets, deadlines, escalation, message references, votes), copied onto it"
    " (23 -> 12 us on the store thread per decision). Audit details and argument hashes "
    "use one encoder each instead of one built per call. Bought: instructions per "
    "decision of the app on SQLite, 8 concurrent callers in one process without uvicorn "
    "(callgrind, user space, so no other load counts) 1.85M -> 1.70M (-8%); server CPU "
    "per decision over HTTP with 8 clients, median of seven alternated runs, 762 -> 725 "
    "us. Throughput on this VM, busy with other work (the floor fell to a few hundred "
    "commits/s at times), moved within its noise: 8 clients on SQLite 568-1,022 -> "
    "757-1,178 decisions/s over seven alternated pairs, PostgreSQL 121 -> 153 in one. Not"
    " bought: a second SQLite thread and connection for reads, so a read need not wait "
    "behind a commit (server CPU per decision up, no gain over HTTP); `gc.freeze()` after"
    " start-up (no change per decision); a shorter interpreter switch interval (slower). "
    "The served process already runs uvloop and httptools.",
    "17. **An answer over HTTP passes one guard, and writes no rows it does not read** "
    "(`loopgate_lc/server/middleware.py`, `loopgate_lc/server/app.py`, "
    "`loopgate_lc/server/hitl.py`, `loopgate_lc/server/models.py`, "
    "`loopgate_lc/stores/_sql.py`). Profiled (cProfile on the loop, instruction counts "
    "for the whole process) on the app on SQLite with 8 concurrent callers in one "
    "process. The browser checks, the API-key check and the body limit were three "
    "middleware, each a call, a scan of the headers per header read and, for the limit, "
    "wrappers around receive and send; they are now one (`GuardMiddleware`) that reads "
    "the headers it needs in one scan and runs the same checks in the same order, CORS "
    "still between the browser checks and the key when origins are configured. The router "
    "tried `/health`, `/openapi.json` and eight `/hitl` routes before `/hitl/respond`; "
    "the `/hitl` routes now come first, the busiest first (no two match one path, so what "
    "a path reaches is unchanged). A polled request's `approved` is read from its "
    "decision without building the typed answer (a pydantic model) each time. Audit lines "
    "and deliveries owed that nobody reads back (a state change's effects) are inserted "
    "without `RETURNING *`, so SQLite no longer builds and hands back their rows. Bought: "
    "instructions per decision of the app on SQLite, 8 concurrent callers in one process "
    "without uvicorn (callgrind; each figure the difference between runs of 480 and 1,280 "
    "decisions) 1.71M / 1.71M -> 1.57M / 1.54M (-9%); server CPU per decision over HTTP "
    "with 8 clients on SQLite, eight alternated pairs of 1,800-3,600 decisions on a 2-CPU "
    "VM at load 3-5, median 667 -> 625 us (lower in 7 of 8 pairs); decisions/s moved "
    "within this VM's noise (medians of the pairs 486-1,298 -> 558-1,316). Not bought: "
    "the target's 1,500 decisions/s with 8 clients on this shared VM. What is left on the "
    "loop is spread thin: Starlette's own layers (its error middleware, exception "
    "middleware and the endpoint's wrapper), the body's validation, the decision's "
    "validation, the audit event's model, and the answer's JSON.",
    "18. **A pause hands LangGraph its published schema as text parsed anew** "
    "(`loopgate_lc/interrupts.py`). Profiled (cProfile) on the guard's pause: with the "
    "finished JSON schema attached (item 1), pydantic's generator still counted "
    "references in, remapped, sorted and copied the ~8 kB result on every `interrupt()` "
    "that paused (5 walks of about 470 nodes: 0.39-0.42 ms here). `decision_schema()` now"
    " also keeps the JSON text of exactly what pydantic publishes, and `ask()` passes "
    "LangGraph a fresh parse of it (36 us) when the task holds no resume value at all, so"
    " the `interrupt()` is sure to pause and nothing is validated; every other call, "
    "every resume included, still passes the type, so LangGraph checks an answer before "
    "saving it, as before (a LangGraph that keeps its resume values elsewhere gets the "
    "type every time). What is published is the same dict, in the same order. Bought: CPU"
    " per guarded pause + resume by hand 10.5 -> 9.8 ms (InMemorySaver, 150 alternated "
    "each); CPU per `Loopgate.run` round trip, on and off alternated in one process "
    "(80-120 each): memory 14.7 -> 14.0 ms, SQLite 19.1 -> 18.6 ms, PostgreSQL 23.8 -> "
    "23.4 ms. Wall time moved within the noise of a 2-CPU VM at load 5 (raw LangGraph on "
    "SQLite 13-33 ms from run to run): section 2's paired ratio, eight alternated runs "
    "(off, on, four times; two of each after merging main), SQLite 1.52, 1.33, 1.22, 1.51"
    " -> 1.39, 1.23, 1.29, 1.33 (medians 1.42 -> 1.31), PostgreSQL 1.39, 1.36, 1.31, 1.58"
    " -> 1.49, 1.46, 1.38, 1.39 (medians 1.38 -> 1.43): no change beyond the noise. The "
    "refreshed section 2 above, on a quieter spell, shows the pause alone: the guard's "
    "pause + resume 8.09 -> 7.21 ms (memory), 12.6 -> 11.9 ms (SQLite), 16.5 -> 15.5 ms "
    "(PostgreSQL), the \"before fix 18\" rows beside the \"guard()\" rows. Section 2 re-"
    "measures it in every run (the \"before fix 18\" rows).",
    "19. **A filing builds its record from what it wrote, and PostgreSQL is sent the "
    "JSON text checked** (`loopgate_lc/stores/_sql.py`, "
    "`loopgate_lc/stores/postgres.py`). Profiled (cProfile on the caller's thread and "
    "the gateway's loop) on `Loopgate.run`. Filing read its row back whole "
    "(`RETURNING *`) and parsed the ~8 kB payload into a new record; it now reads "
    "back all but the payload and takes the payload's JSON-ready form, a copy of the "
    "filer's and exactly what its column holds, as item 16 does for decisions (a "
    "filing that meets an earlier one, by id or by thread + interrupt, still reads "
    "that one back and parses it). On PostgreSQL every JSON value was encoded, parsed "
    "back (to check it and make it plain) and encoded again by psycopg; the checked "
    "text now goes as is. Still one transaction per "
    "state change and 3 write transactions per round trip. Bought: CPU per filing of "
    "a request with a 7 kB payload, its audit line and its delivery, client process "
    "only, 600 filings, three alternated pairs: PostgreSQL 1,081 / 1,072 / 1,237 -> "
    "837 / 862 / 1,056 us; SQLite 509 / 542 / 628 -> 532 / 491 / 638 us (within the "
    "noise; the parse saved is about 20 us there). Section 2's paired ratio, two "
    "alternated runs each on a 2-CPU VM at load 3 (raw LangGraph on SQLite 12-22 ms "
    "from run to run): SQLite 1.30, 1.36 -> 1.35, 1.43, PostgreSQL 1.58, 1.46 -> "
    "1.51, 1.52: within the noise; the 1.3x goal is not met by this. No other "
    "avoidable per-round-trip work stood out in the profiles of this pass: the "
    "gateway's loop shows its work spread thin, and LangGraph starts as many threads "
    "per run under the gateway as without it (8.5-8.7 per round trip).",
    "20. **PostgreSQL writes a filing, a decision and a finished resume as one "
    "statement each** (`loopgate_lc/stores/_sql.py`, `loopgate_lc/stores/postgres.py`). "
    "Profiled (cProfile on the gateway's loop): psycopg's pipeline machinery and the "
    "`BEGIN`/`COMMIT` around each write took about 3.8 ms of CPU per round trip "
    "(`_communicate_gen`, `_fetch_gen`). A write and the writes it causes (audit, "
    "deliveries, recorded deliveries, `pg_notify`) now travel as one data-modifying "
    "`WITH`, each made only if the change was, which PostgreSQL runs atomically as its "
    "own transaction; SQLite runs the same statements one by one in its transaction. "
    "Bought: process CPU per store operation, median of 200, alternated in one process "
    "against the same code with fusing off: filing 851 -> 351 us, decision 1,072 -> "
    "353 us, finished resume 747 -> 204 us (wall 1,205 -> 698, 1,470 -> 739, 1,104 -> "
    "458 us). On the round trip, the awaited filing and decision went from about 2.2 "
    "and 2.9 ms to 1.0 and 1.2 ms; section 4's PostgreSQL `POST /hitl/respond` with 8 "
    "clients from 732 to 1,218 decisions/s.",
    "21. **SQLite writes run through one cursor per batch and fetch no rows nobody "
    "reads** (`loopgate_lc/stores/sqlite.py`, `loopgate_lc/stores/_common.py`). "
    "Profiled (per-thread CPU, strace, callgrind) on the store's thread: of the ~500 us "
    "a write costs beyond a bare commit, 115-160 us is the thread hop, ~140 us the "
    "fsync of 16-19 WAL pages (the floor writes 5-6), ~100 us Python. The Python part "
    "shrank (one cursor, no fetch, no queue.Empty, UTC times formatted once, a shallow "
    "copy of an audit line). Bought: 2-4% of the store's CPU (callgrind, instructions "
    "per round trip: 4,480k -> 4,348k); within the noise of section 2.",
    "22. **A finished run's completion starts a millisecond after `run()` returns** "
    "(`loopgate_lc/gateway/resuming.py`, `loopgate_lc/gateway/facade.py`). Measured "
    "with timestamps around each step of a round trip: from the resume's end to "
    "`run()` returning took 185-271 us, of which about 220 us was the loop thread, "
    "woken at once, holding the interpreter lock while it prepared the finish commit. "
    "The finish is now handed over and started 1 ms later, or at once by any later "
    "call that needs it (the next run's filing, `close()`, the end of the process). "
    "Bought: 271 -> 62-97 us from the resume's end to the return, medians of 150.",
    "23. **A waiting run wakes on one future; audit details skip the JSON round trip** "
    "(`loopgate_lc/gateway/waiting.py`, `loopgate_lc/gateway/audit.py`). A run waited "
    "on a task per request, which took about five loop passes to wake it; it now waits "
    "on one future a decision made here sets directly (`Waiters.wait` is the same code "
    "for one request). Audit details holding only JSON's types are copied as the JSON "
    "round trip would make them, and a record's argument hash is computed once. "
    "Bought: the loop's CPU on a round trip's path, per-thread CPU, medians of 400 "
    "alternated: SQLite 1,414 -> 1,268 us, memory store 1,697 -> 1,344 us; wall within "
    "the noise.",
    "24. **`loopgate-lc serve` answers with httptools and uvloop, one write per answer** "
    "(`pyproject.toml`'s `server` extra, `loopgate_lc/_http.py`, `loopgate_lc/cli.py`, "
    "`loopgate_lc/server/hitl.py`). Profiled (callgrind and per-thread CPU) on the "
    "server process under 8 clients: without httptools and uvloop, uvicorn fell back "
    "to h11 and asyncio's loop (about 60% more instructions per decision on the loop "
    "thread); each answer went out in two writes (head, then body); the access log "
    "built its arguments below INFO; young collections ran every 700 allocations; "
    "bodies were parsed to a dict before the model. Now the extra brings httptools "
    "and uvloop, a step's writes go out as one, the access log is off below INFO, "
    "serve freezes its start-up heap, and a body `read_json` would accept unchecked "
    "is parsed by pydantic from its bytes (refusals take the old path). Bought: server "
    "CPU per decision, blocks of 2,000, 8 alternated pairs: loop thread 323 -> 235 us, "
    "whole server 563 -> 461 us; rate 1,477 -> 1,841/s. Section 4's SQLite row with 8 "
    "clients: 1,372-1,461/s before (floor 4,503-5,410/s), after 1,704/s (floor "
    "6,640/s) in a run on a quiet spell and 1,394/s (floor 4,505/s) in the full run at "
    "the top, on a slower one: 0.26-0.31 of the floor, as before; PostgreSQL's row "
    "732 -> 1,218-1,338/s with item 20.",
    "25. **A batch of finished deliveries takes only those a window old** "
    "(`loopgate_lc/gateway/outbox.py`). A delivery made just before a batch was "
    "written went into it, instead of riding with the next write of its request: "
    "section 2 counted 3.02-3.03 write transactions per round trip. Bought: 3.00.",
    "26. **A pause's response schema is stored once, under its digest** "
    "(`loopgate_lc/stores/_sql.py`, store migration 8). Every filing wrote the guard's "
    "decision schema (about 7.8 kB of JSON, escaped again inside the payload's JSON) into "
    "its request row, and SQLite rewrote that row with every decision. A row now names "
    "the schema, which is written once per database. Bought (alternated in one process, "
    "120-150 round trips each, on a loaded VM): on PostgreSQL 39.8 -> 39.1 ms (paired "
    "ratio to raw LangGraph 1.29 -> 1.26), on SQLite 25.1 -> 24.7 ms; the payload's "
    "encoding 48 -> 17 us (a digest costs 17 us).",
    "27. **An answer over HTTP costs the server less** (`loopgate_lc/server/hitl.py`, "
    "`loopgate_lc/stores/_sql.py`, `loopgate_lc/stores/sqlite.py`). The `/hitl` handlers "
    "are ASGI apps Starlette calls as they are; on SQLite a decision owes deliveries to "
    "its request's message channels through a statement only when the decided row holds a "
    "message reference; empty JSON defaults skip the decoder; a decision's statements are "
    "built once. Bought: instructions per decision in `loopgate-lc serve` (callgrind, "
    "1,000 minus 200 decisions) 1.667M -> 1.518M (-8.9%); server CPU per decision lower in "
    "each of three alternated pairs (1,835 / 2,182 / 1,605 -> 1,565 / 1,890 / 1,432 us on "
    "a loaded VM). Section 4's rate could not resolve it: the floor itself moved "
    "1,879-3,176/s between runs.",
    "28. **PostgreSQL statements travel numbered, and psycopg parses none** "
    "(`loopgate_lc/stores/_sql.py`, `loopgate_lc/stores/postgres.py`). Profiled (cProfile "
    "on the gateway's loop) on section 2's PostgreSQL round trip: psycopg turned each "
    "statement's `%s` markers into PostgreSQL's `$1, $2, ...` and keeps that work only "
    "for statements of at most 50 parameters, and a decision's (its change, three audit "
    "lines, two deliveries and a recorded delivery, 54 parameters) is over the line, so it "
    "was parsed anew on every decision (a regular expression over 1.9 kB: 56 us hot for a "
    "statement of that shape, more on a loop that has just woken). The SQL layer now numbers "
    "the markers itself, once per statement text, and the store sends them through "
    "psycopg's raw cursor, which parses nothing. The server sees the same text as before, "
    "so its prepared statements are the same. Bought: the decision's store call in the "
    "round trip 1,287 -> 1,143 us and 1,102 -> 915 us (medians of 200, two alternated pairs "
    "of processes on a 2-CPU VM).",
    "",
    "Not changed (trade-offs for the owners, not clear local wins): on SQLite every "
    "commit waits for the WAL fsync (about 0.4-0.6 ms here; `PRAGMA synchronous=NORMAL` "
    "would drop it, trading durability on power loss), and on PostgreSQL a commit waits "
    "for its WAL flush (1-4 ms on this loaded VM). The gateway's third commit (the end of "
    "the run, which marks the resume done) is what a crash-safe, exactly-once resume "
    "needs beyond the two commits any durable approval makes.",
]
"""What each library change made for speed bought, measured on the machine in the
table before and after the change (the live rows above re-measure what they can)."""
