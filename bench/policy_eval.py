"""3. Policy evaluation with 1, 100 and 10,000 policies.

Each set has filler policies that never match and, last, the one that decides, so a
linear scan would pay for every policy. Two costs are judged:

- a name seen before (every call after an agent's first): ``PolicySet`` memoises the
  first match per tool name, so this must stay flat;
- a new name (an agent's first call of a tool, or a flood of names a model makes up):
  policies are indexed by what their patterns fix outright (an exact name, a literal
  start such as ``deploy*``, a literal end such as ``*_delete``, else plain characters
  somewhere inside such as ``*admin*``), so a new name is tried only against the
  policies that can match it. Judged on the two common shapes of a large set: exact tool
  names, and globs with a literal start.

Two more sets are shown, not judged, to hide nothing: globs fixed only inside
(``*svc42*``) cost a lookup per window of the name, so a few times one policy; globs
with no plain character at all (``[s][v][c][4][2]*``) cannot be indexed and are still
tried one by one for a new name. Anchor: the set with one policy.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench._harness import Config, Row, Section, interleave, median, percentile
from loopgate_lc import ApprovalPolicy, PolicySet, RiskLevel

GOAL = 1.5  # "a flat line": 10,000 policies within 1.5x of one policy, per call
# a new name costs a few dictionary lookups more than one policy's single try: within 2x
NEW_GOAL = 2.0

# filler shapes: what the policies before the deciding one look like
SHAPES: dict[str, Callable[[int], str]] = {
    "exact names": lambda i: f"svc{i}_call",
    "literal starts": lambda i: f"svc{i}_*",
    "plain run inside": lambda i: f"*svc{i}*",
    "classes only": lambda i: "".join(f"[{c}]" for c in f"svc{i}") + "*",
}
JUDGED = ("exact names", "literal starts")
NOTES = {"plain run inside": "not judged: a lookup per window of the name",
         "classes only": "not judged: cannot be indexed, tried in order"}


def policy_set(size: int, filler: Callable[[int], str] = SHAPES["literal starts"]
               ) -> PolicySet:
    fillers = [ApprovalPolicy(f"filler-{i}", filler(i), 0.5, RiskLevel.READ_ONLY)
               for i in range(size - 1)]
    return PolicySet([*fillers, ApprovalPolicy("deploys", "deploy*", 0.8,
                                               RiskLevel.DATA_MODIFICATION)])


def _plural(size: int) -> str:
    return f"{size:,} {'policy' if size == 1 else 'policies'}"


def run(config: Config) -> Section:
    began = time.perf_counter()
    sizes = (1, 100, 10_000) if not config.smoke else (1, 100, 1_000)
    largest = sizes[-1]
    sets = {size: policy_set(size) for size in sizes}
    shaped = {shape: policy_set(largest, SHAPES[shape]) for shape in SHAPES}
    batch = config.size(2_000, 50)
    for policies in [*sets.values(), *shaped.values()]:  # the same answer whatever the set
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
                counter[0] += 1  # a name never seen: the memo misses, the index is asked
                policies.evaluate(f"deploy-{counter[0]}", confidence=0.9,
                                  risk=RiskLevel.READ_ONLY)
        return once

    warm_ns = interleave({str(s): warm(p) for s, p in sets.items()},
                         reps=config.reps(200, 3), warmup=3, budget_s=config.reps(10, 3))
    # one-policy anchor and every 10,000-policy shape alternated in the same repetitions
    cold_variants = {"1": cold(sets[1]), str(sizes[1]): cold(sets[sizes[1]]),
                     **{shape: cold(p) for shape, p in shaped.items()}}
    cold_ns = interleave(cold_variants, reps=config.reps(40, 2), warmup=1,
                         budget_s=config.reps(15, 3))

    section = Section(
        key="policy",
        title="3. Policy evaluation (PolicySet.evaluate)",
        goal=f"flat: {largest:,} policies within {GOAL}x of 1 policy for a name seen "
             f"before, within {NEW_GOAL}x for a new name (exact names or literal starts)",
    )

    def add(label: str, values_ns: list[int], per: int, anchor: str, base: float,
            note: str = "") -> float:
        values = [v / per / 1e3 for v in values_ns]
        value = median(values)
        section.rows.append(Row(
            label=label, value=value, unit="µs", p99=percentile(values, 99), anchor=anchor,
            ratio=value / base if base else None, note=note, samples=len(values) * per))
        return value

    base = median([v / batch / 1e3 for v in warm_ns["1"]])
    for size in sizes:
        add(f"seen name, {_plural(size)}", warm_ns[str(size)], batch, "seen name, 1 policy",
            base)
    anchor = "new name, 1 policy"
    base = median([v / cold_batch / 1e3 for v in cold_ns["1"]])
    add(anchor, cold_ns["1"], cold_batch, anchor, base)
    add(f"new name, {_plural(sizes[1])}", cold_ns[str(sizes[1])], cold_batch, anchor, base)
    for shape in SHAPES:
        add(f"new name, {_plural(largest)}: {shape}", cold_ns[shape], cold_batch, anchor, base,
            note="" if shape in JUDGED else NOTES[shape])

    flat = section.row(f"seen name, {_plural(largest)}").ratio
    new = [section.row(f"new name, {_plural(largest)}: {shape}").ratio for shape in JUDGED]
    met = (flat is not None and flat <= GOAL
           and all(ratio is not None and ratio <= NEW_GOAL for ratio in new))
    section.verdict = "met" if met else "not met"
    section.notes.append(
        f"Median time per call over batches of {batch:,} (seen name) and {cold_batch} "
        "(new name) calls; the deciding policy (`deploy*`) is always the last one. Filler "
        f"shapes for the {largest:,}-policy sets: exact names (`svc42_call`), literal starts "
        "(`svc42_*`, also the 100-policy set), plain characters inside only (`*svc42*`), "
        "and character classes only (`[s][v][c][4][2]*`). A new name looks up only the "
        "policies whose exact name, literal start, literal end or inner run fit it, then "
        "tries those in order: the first two shapes stay flat, an inner run costs a lookup "
        "per window of the name, and the last shape has nothing to look up, so it is tried "
        "policy by policy and costs what a scan costs (before the index every shape did). "
        "Every answer is then remembered (up to 4,096 names).")
    section.seconds = time.perf_counter() - began
    return section
