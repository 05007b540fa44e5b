"""3. Policy evaluation with 1, 100 and 10,000 policies.

Each set has filler policies that never match and, last, the one that decides, so a
linear scan would pay for every policy. ``PolicySet`` memoises the first match per tool
name, so the steady state (a name seen before: every call after an agent's first) is
what should stay flat. The first call for a new name still scans; that is measured too,
so the table shows both and hides nothing. Anchor: the set with one policy.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench._harness import Config, Row, Section, interleave, median, percentile
from loopgate_lc import ApprovalPolicy, PolicySet, RiskLevel

GOAL = 1.5  # "a flat line": 10,000 policies within 1.5x of one policy, per call


def policy_set(size: int) -> PolicySet:
    fillers = [ApprovalPolicy(f"filler-{i}", f"svc{i}_*", 0.5, RiskLevel.READ_ONLY)
               for i in range(size - 1)]
    return PolicySet([*fillers, ApprovalPolicy("deploys", "deploy*", 0.8,
                                               RiskLevel.DATA_MODIFICATION)])


def run(config: Config) -> Section:
    began = time.perf_counter()
    sizes = (1, 100, 10_000) if not config.smoke else (1, 100, 1_000)
    sets = {size: policy_set(size) for size in sizes}
    batch = config.size(2_000, 50)
    for policies in sets.values():  # the answer must be the same whatever the size
        verdict = policies.evaluate("deploy", confidence=0.9, risk="read_only")
        if not (verdict.auto_approved and verdict.policy == "deploys"):
            raise RuntimeError(f"unexpected verdict {verdict}")

    def warm(policies: PolicySet) -> Callable[[], None]:
        def once() -> None:
            for _ in range(batch):
                policies.evaluate("deploy", confidence=0.9, risk=RiskLevel.READ_ONLY)
        return once

    counter = [0]
    cold_batch = config.size(20, 5)

    def cold(policies: PolicySet) -> Callable[[], None]:
        def once() -> None:
            for _ in range(cold_batch):
                counter[0] += 1  # a name never seen: the memo misses, the set is scanned
                policies.evaluate(f"deploy-{counter[0]}", confidence=0.9,
                                  risk=RiskLevel.READ_ONLY)
        return once

    warm_ns = interleave({str(s): warm(p) for s, p in sets.items()},
                         reps=config.reps(200, 3), warmup=3, budget_s=config.reps(10, 3))
    cold_ns = interleave({str(s): cold(p) for s, p in sets.items()},
                         reps=config.reps(40, 2), warmup=1, budget_s=config.reps(10, 3))

    section = Section(
        key="policy",
        title="3. Policy evaluation (PolicySet.evaluate)",
        goal=f"flat: {sizes[-1]:,} policies within {GOAL}x of 1 policy (names seen before)",
    )
    for kind, data, per in (("seen name", warm_ns, batch), ("new name", cold_ns, cold_batch)):
        base = median([v / per / 1e3 for v in data[str(sizes[0])]])
        for size in sizes:
            values = [v / per / 1e3 for v in data[str(size)]]
            value = median(values)
            section.rows.append(Row(
                label=f"{kind}, {size:,} {'policy' if size == 1 else 'policies'}",
                value=value, unit="µs", p99=percentile(values, 99),
                anchor=f"{kind}, 1 policy", ratio=value / base if base else None,
                samples=len(values) * per))
    flat = section.row(f"seen name, {sizes[-1]:,} policies").ratio
    section.verdict = "met" if flat is not None and flat <= GOAL else "not met"
    section.notes.append(
        f"Median time per call over batches of {batch:,} (seen name) and {cold_batch} "
        "(new name) calls; the deciding policy is always the last one. A new name scans "
        "the set once, then is remembered (up to 4,096 names), so an agent's tools pay "
        "the scan once each.")
    section.seconds = time.perf_counter() - began
    return section
