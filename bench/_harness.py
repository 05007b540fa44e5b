"""What every benchmark shares: interleaved timing, summary statistics, result rows.

Each figure is measured beside its anchor in the same run, with the variants alternated
inside every repetition (and their order rotated), so whatever drifts while the run goes
on (CPU frequency, caches, a neighbour's load, heap growth) hits all of them alike.
Nothing here asserts on time: the smoke test only checks that a run produces the rows.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Config",
    "Row",
    "Section",
    "interleave",
    "median",
    "not_measured",
    "percentile",
    "postgres_dsn",
]

DSN_ENV = ("LOOPGATE_BENCH_POSTGRES_DSN", "LOOPGATE_TEST_POSTGRES_DSN")


def postgres_dsn() -> str | None:
    """The PostgreSQL to measure on, if one is configured; benchmarks that need it say
    "not measured" without it rather than invent a number."""
    for name in DSN_ENV:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


@dataclass(frozen=True)
class Config:
    """How hard to push. ``smoke`` proves every benchmark runs end to end in seconds;
    its figures mean nothing, so it runs each path once: one repetition, no warm-up
    (the test suite runs every benchmark in smoke size, on two CPUs shared with the
    rest of the suite)."""

    smoke: bool = False

    def reps(self, full: int, smoke: int = 1) -> int:
        return smoke if self.smoke else full

    def size(self, full: int, smoke: int) -> int:
        return smoke if self.smoke else full


@dataclass
class Row:
    """One figure and what it is compared with.

    ``value`` is None when the figure could not be measured in this run; ``note`` then
    says why (never a made-up number).
    """

    label: str
    value: float | None
    unit: str
    p99: float | None = None
    anchor: str = ""
    ratio: float | None = None
    note: str = ""
    samples: int = 0


@dataclass
class Section:
    """One benchmark's result: rows, the goal it is held to, and what the rows mean."""

    key: str
    title: str
    goal: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verdict: str = ""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self, label: str) -> Row:
        for row in self.rows:
            if row.label == label:
                return row
        raise KeyError(label)


def not_measured(label: str, unit: str, why: str, anchor: str = "") -> Row:
    return Row(label, None, unit, anchor=anchor, note=f"not measured yet: {why}")


def median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return math.nan
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: every reported value was observed)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def interleave(
    variants: Mapping[str, Callable[[], Any]],
    *,
    reps: int,
    warmup: int = 2,
    budget_s: float = 60.0,
    min_reps: int = 5,
    between: Callable[[], Any] | None = None,
) -> dict[str, list[int]]:
    """Time every variant once per repetition, rotating their order each time.

    Returns nanoseconds per call, warm-up excluded; a variant that returns an ``int``
    reports its own nanoseconds (to cut out a modelled wait, like a person's). Stops
    early (after ``min_reps``) when ``budget_s`` is spent, so a slow machine gets fewer
    samples, not a longer run. ``between`` runs untimed after each call (to let
    background work settle, the same for every variant).
    """
    names = list(variants)
    out: dict[str, list[int]] = {name: [] for name in names}
    start = time.perf_counter()
    for rep in range(warmup + reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            fn = variants[name]
            began = time.perf_counter_ns()
            own = fn()
            took = own if isinstance(own, int) else time.perf_counter_ns() - began
            if rep >= warmup:
                out[name].append(took)
            if between is not None:
                between()
        done = rep + 1 - warmup
        if done >= min_reps and time.perf_counter() - start > budget_s:
            break
    return out


def ms(values: list[int]) -> list[float]:
    return [v / 1e6 for v in values]


def us(values: list[int]) -> list[float]:
    return [v / 1e3 for v in values]


def timed_rows(
    samples: Mapping[str, list[float]],
    anchor: str,
    unit: str,
    *,
    labels: Mapping[str, str] | None = None,
    p99: bool = False,
) -> list[Row]:
    """Rows with medians (and p99) and each variant's ratio to the anchor's median."""
    labels = labels or {}
    base = median(samples[anchor])
    rows = []
    for name, values in samples.items():
        value = median(values)
        rows.append(Row(
            label=labels.get(name, name),
            value=value,
            unit=unit,
            p99=percentile(values, 99) if p99 else None,
            anchor=labels.get(anchor, anchor),
            ratio=value / base if base else None,
            samples=len(values),
        ))
    return rows


def paired_ratio(samples: Mapping[str, list[int]], name: str, anchor: str) -> float:
    """Median of per-repetition ratios: each repetition timed both back to back, so this
    cancels drift between repetitions that the ratio of medians would keep."""
    pairs = [a / b for a, b in zip(samples[name], samples[anchor], strict=False) if b]
    return median(pairs)
