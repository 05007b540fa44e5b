"""10. Remembered permissions: what looking for a grant costs a filing, and what a grant
saves.

Every tool call a policy sends to a person is looked up among the live grants of its
tool before anyone is notified: one indexed read. Measured per store, alternated in one
run, one sample one request filed through ``Loopgate.asubmit``: a question (no tool, so
never looked up: the anchor), a tool call of a tool with no grant, a tool call while 100
other sessions hold a grant of its tool that would match it there (the store leaves
grants out of scope out of the read), and a tool call a grant approves (filed already
approved, in the same one transaction, nobody notified).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

from bench._backends import backend, backend_names
from bench._harness import Config, Section, interleave, not_measured, timed_rows, us
from loopgate_lc.gateway import Loopgate

GOAL = 1.25  # a tool call with no grant files within 25% of a question's cost

KINDS = {
    "question": "a question (never looked up)",
    "none": "a tool call, no grant stored",
    "miss": "a tool call, 100 grants of its tool in other sessions",
    "hit": "a tool call a grant approves",
}
NAMES = {"memory": "memory", "sqlite": "SQLite", "postgres": "PostgreSQL"}


def _variants(gate: Loopgate, loop: asyncio.AbstractEventLoop
              ) -> dict[str, Callable[[], None]]:
    counter = itertools.count()

    def file(tool: str | None, env: str) -> Callable[[], None]:
        def once() -> None:
            n = next(counter)
            if tool is None:
                coro = gate.asubmit(f"deploy {n}?", session_id="ops")
            else:
                coro = gate.asubmit("deploy?", tool_name=tool, args={"env": env, "n": n},
                                    session_id="ops")
            loop.run_until_complete(coro)
        return once

    return {"question": file(None, ""), "none": file("build", "x"),
            "miss": file("deploy", "x"), "hit": file("deploy", "granted")}


async def _prepare(gate: Loopgate) -> None:
    # 100 other sessions (tenants) with a grant each for the tool, which would match the
    # measured calls but are out of their scope; then the one that approves "granted"
    for i in range(100):
        await gate.aregister_session(f"other-{i}", f"client-{i}")
    await gate.aregister_session("ops", "bench")
    for session, env in [(f"other-{i}", "x") for i in range(100)] + [("ops", "granted")]:
        record = await gate.asubmit("deploy?", tool_name="deploy", args={"env": env, "n": 0},
                                    session_id=session)
        await gate.arespond(record.id, {"type": "approve", "grant": {
            "scope": "session", "ttl_seconds": 86_400, "args": {"n": {"any": True}}}})


def run(config: Config) -> Section:
    began = time.perf_counter()
    section = Section(
        key="grants",
        title="11. Remembered permissions: the grant lookup on every filing",
        goal=f"a tool call with no grant files within {GOAL}x of a question",
    )
    met = True
    for name, why in backend_names():
        labels = {k: f"{NAMES[name]}: {text}" for k, text in KINDS.items()}
        if why is not None:
            for kind in KINDS:
                section.rows.append(not_measured(labels[kind], "µs", why,
                                                 anchor=labels["question"]))
            continue
        with backend(name) as place:
            loop = asyncio.new_event_loop()
            gate = Loopgate(place.store(), timers=False)
            try:
                loop.run_until_complete(gate.aopen())
                loop.run_until_complete(_prepare(gate))
                samples = interleave(_variants(gate, loop), reps=config.reps(300),
                                     warmup=config.reps(20, 0), budget_s=config.reps(20, 5))
            finally:
                loop.run_until_complete(gate.aclose())
                loop.close()
        rows = timed_rows({k: us(v) for k, v in samples.items()}, "question", "µs",
                          labels=labels, p99=True)
        section.rows.extend(rows)
        ratio = section.row(labels["none"]).ratio
        met = met and ratio is not None and ratio <= GOAL
    section.verdict = "met" if met else "not met"
    section.notes.append(
        "Median wall time of filing one request through the gateway (no notifier, so "
        "nothing is delivered), the four kinds alternated in every repetition, per store. "
        "A matching grant files the request approved in one transaction with its audit "
        "(requested and decided), which replaces a person's round trip.")
    section.seconds = time.perf_counter() - began
    return section
