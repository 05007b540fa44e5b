"""10. What a quorum costs: one decision, against the votes that make it.

Per store, alternated in every repetition: a single-decision request approved with one
``respond()`` (the anchor), one vote that leaves a quorum-of-2 request pending (it commits
the vote, its audit event and a ``voted`` delivery in one transaction, under the request's
row lock), and a quorum-of-2 request approved by both of its votes. Every sample files a
fresh request first; only the answers are timed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench._backends import Backend, backend, backend_names
from bench._harness import Config, Row, Section, interleave, not_measured, timed_rows, us
from loopgate_lc import ApprovalPolicy, Loopgate

NAMES = {"memory": "memory", "sqlite": "SQLite", "postgres": "PostgreSQL"}
LABELS = {
    "single": "one decision (respond, no quorum)",
    "one_vote": "one vote short of a quorum of 2",
    "two_votes": "a quorum of 2 reached (both votes)",
}
POLICIES = [ApprovalPolicy("single", "single", require_explicit=True),
            ApprovalPolicy("two", "two", require_explicit=True, quorum=2)]


def _measure(back: Backend, config: Config) -> list[Row]:
    gate = Loopgate(back.store(), policies=POLICIES, timers=False).open()
    try:
        gate.register_session("bench", approvers=["ana", "bob"])

        def ask(tool: str) -> str:
            return gate.submit("Proceed?", session_id="bench", tool_name=tool,
                               risk="irreversible", confidence=1.0).id

        def answer(tool: str, voters: tuple[str, ...]) -> Callable[[], int]:
            def once() -> int:
                request_id = ask(tool)  # filing is not what is measured
                began = time.perf_counter_ns()
                for voter in voters:
                    gate.respond(request_id, {"type": "approve"}, actor=voter,
                                 approver_id=voter)
                return time.perf_counter_ns() - began
            return once

        samples = interleave({
            "single": answer("single", ("ana",)),
            "one_vote": answer("two", ("ana",)),
            "two_votes": answer("two", ("ana", "bob")),
        }, reps=config.reps(200, 3), warmup=config.reps(10, 1), budget_s=config.reps(25, 5))
    finally:
        gate.close()
    label = NAMES[back.name]
    return timed_rows({f"{label}: {LABELS[k]}": us(v) for k, v in samples.items()},
                      f"{label}: {LABELS['single']}", "µs", p99=True)


def run(config: Config) -> Section:
    began = time.perf_counter()
    section = Section(
        key="quorum",
        title="10. Quorum: the cost of a vote",
        goal="measured: a vote and a quorum of 2 beside one plain decision, per store",
    )
    for name, missing in backend_names():
        if missing is not None:
            for kind in LABELS:
                section.rows.append(not_measured(f"{NAMES[name]}: {LABELS[kind]}", "µs",
                                                 missing))
            continue
        with backend(name) as back:
            section.rows.extend(_measure(back, config))
    section.verdict = "measured"
    section.notes.append(
        "Median wall time of the answers alone (the request is filed before the clock "
        "starts), through Loopgate.respond() with the gateway's own loop, the three "
        "variants alternated in every repetition on one gateway per store. The quorum "
        "row is two round trips through respond(), the second of which commits the vote "
        "and the decision in one transaction.")
    section.seconds = time.perf_counter() - began
    return section
