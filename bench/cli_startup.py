"""8. The CLI's store commands start fast.

``loopgate-lc pending``, ``approve``, ``reject`` and ``audit`` read or change one row of the
store; a person types them, so their start-up is what they feel. Each is run as a user runs
it (the installed ``loopgate-lc`` script, a new process every time, on a SQLite file holding
a few requests), alternated with the anchor ``python -c pass``: the interpreter's own
start-up on this machine in the same moment. ``approve`` and ``reject`` decide a fresh
pending request every time.

Goal: each store command's median under 0.3 s. What keeps it there is importing nothing a
command does not use (no LangGraph, LangChain, httpx, Telegram or jsonschema to read a
table); ``tests/test_cli_imports.py`` checks that list, this measures what it buys.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench._harness import Config, Section, interleave, median, ms, timed_rows
from loopgate_lc.gateway import Loopgate

GOAL_S = 0.3
FILED = 5  # requests already waiting when `pending` lists them
LABELS = {
    "python": "python -c pass",
    "pending": "loopgate-lc pending",
    "audit": "loopgate-lc audit --limit 20",
    "approve": "loopgate-lc approve ID",
    "reject": "loopgate-lc reject ID --reason ...",
    "eager": "loopgate-lc pending as before: LangGraph, LangChain imported first",
}
# what `loopgate-lc pending` paid before its imports were made lazy, re-created in the same
# run: the same command after importing what the package's __init__ used to pull in
EAGER = ("import langgraph.graph, langgraph.types, langchain_core.tools, httpx, telegram; "
         "from loopgate_lc.cli import main; raise SystemExit(main())")


def cli() -> list[str]:
    """The console script next to this interpreter, as ``pip install`` put it there."""
    script = Path(sys.executable).with_name("loopgate-lc")
    if script.exists():
        return [str(script)]
    found = shutil.which("loopgate-lc")
    return [found] if found else [sys.executable, "-m", "loopgate_lc.cli"]


def run(config: Config) -> Section:
    began = time.perf_counter()
    reps, warmup = config.reps(30, 1), config.reps(2, 0)
    with tempfile.TemporaryDirectory(prefix="loopgate-bench-") as tmp:
        store = f"sqlite:///{Path(tmp) / 'cli.db'}"
        with Loopgate(store) as gate:
            gate.register_session("deploy", client_id="bench")
            for i in range(FILED):
                gate.submit(f"Deploy build {i} to production?", session_id="deploy")
            # one pending request for every approve and every reject the run can make
            to_decide = [gate.submit(f"Rotate key {i}?").id for i in range(2 * (reps + warmup))]
        command = cli()
        cpu: dict[str, list[float]] = {name: [] for name in LABELS}

        def spawn(name: str, argv: list[str]) -> None:
            """One process; its CPU time (user + system) is kept beside the wall time,
            since on a busy machine the wall time mostly measures the neighbours."""
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, cwd=tmp, timeout=60)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[name].append((after.ru_utime - before.ru_utime + after.ru_stime
                              - before.ru_stime) * 1000)

        def once(*args: str) -> Callable[[], None]:
            def call() -> None:
                spawn(args[0], [*command, *args, "--store", store])
            return call

        def decide(verb: str, *extra: str) -> Callable[[], None]:
            def call() -> None:
                once(verb, to_decide.pop(), *extra)()
            return call

        variants: dict[str, Callable[[], None]] = {
            "python": lambda: spawn("python", [sys.executable, "-c", "pass"]),
            "pending": once("pending"),
            "eager": lambda: spawn("eager", [sys.executable, "-c", EAGER, "pending",
                                             "--store", store]),
            "audit": once("audit", "--limit", "20"),
            "approve": decide("approve", "--as", "bench"),
            "reject": decide("reject", "--reason", "bench", "--as", "bench"),
        }
        samples = interleave(variants, reps=reps, warmup=warmup,
                             budget_s=config.reps(60, 10))

    section = Section(
        key="cli",
        title="8. CLI store commands: start-up (new process each time)",
        goal=f"each store command's median under {GOAL_S} s",
    )
    section.rows = timed_rows({k: ms(v) for k, v in samples.items()}, "python", "ms",
                              labels=LABELS, p99=True)
    for key, label in LABELS.items():
        section.row(label).note = f"CPU {median(cpu[key]):,.0f} ms"
    slowest = max(section.row(LABELS[k]).value or 0.0 for k in LABELS
                  if k not in ("python", "eager"))
    section.verdict = ("met" if slowest < GOAL_S * 1000 else "not met") + (
        f" (slowest median {slowest / 1000:.2f} s)")
    section.notes.append(
        f"Wall time from process start to exit of `{' '.join(Path(c).name for c in command)} "
        "...` on a SQLite file store, medians and p99 over the repetitions; ratio = median / "
        "median of `python -c pass` in the same run; CPU = the process's user + system time "
        "(median), which a busy machine inflates far less than the wall time. The eager row "
        "re-creates the start-up before the imports were made lazy (LangGraph and "
        "langchain-core came in through the package's `__init__`; then about 1.06 s on an "
        "idle machine of this kind).")
    section.seconds = time.perf_counter() - began
    return section
