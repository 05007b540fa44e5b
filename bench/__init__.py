"""Benchmarks: a human gate should cost next to nothing.

``python -m bench`` (or ``make bench``) runs them all and writes ``bench/RESULTS.md``.
Each benchmark is a module with ``run(Config) -> Section``; every figure is measured
beside its anchor in the same run, and each benchmark stops at a time budget.
"""

from __future__ import annotations

from collections.abc import Callable

from bench import agent_overhead, policy_eval, round_trip
from bench._harness import Config, Section

__all__ = ["BENCHMARKS", "OPTIMISATIONS"]

BENCHMARKS: list[tuple[str, Callable[[Config], Section]]] = [
    ("overhead", agent_overhead.run),
    ("round_trip", round_trip.run),
    ("policy", policy_eval.run),
]

OPTIMISATIONS: list[str] = []
"""What each library change made for speed bought, measured on the machine in the
table before and after the change (the live rows above re-measure what they can)."""
