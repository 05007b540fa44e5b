"""8. The CLI's store commands start fast.

``loopgate-lc pending``, ``approve``, ``reject`` and ``audit`` read or change one row of the
store; a person types them, so their start-up is what they feel. Each is run as a user runs
it (the installed ``loopgate-lc`` script, a new process every time, on a SQLite file holding
a few requests), alternated with the anchor ``python -c pass``: the interpreter's own
start-up on this machine in the same moment. ``approve`` and ``reject`` decide a fresh
pending request every time.

Goal: each store command's median under 0.3 s. What keeps it there is importing nothing a
command does not use: the read commands open the store directly and the deciding ones use
the gateway's deciding part alone (no facade, timers, notifiers, LangGraph, LangChain,
httpx, Telegram or jsonschema), and on a SQLite file both run their coroutines inline,
without asyncio or an event loop; ``tests/test_cli_imports.py`` checks that list, this
measures what it buys. A floor row shows what no store command can go below: the
interpreter with sqlite3 and pydantic imported and one model built, without pydantic's
search for plugins (which the commands skip).

The figures are with bytecode compiled, as every ``pip install`` leaves it: without it
each process compiles every module it imports from source, which more than doubles these
times. Before measuring, the run checks every module the commands import for up-to-date
bytecode and compiles what is missing or stale, and says how many it compiled or could
not.
"""

from __future__ import annotations

import importlib.util
import json
import os
import py_compile
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
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
    "floor": "python: sqlite3, pydantic and one model (the floor)",
}
# what `loopgate-lc pending` paid before its imports were made lazy, re-created in the same
# run: the same command after importing what the package's __init__ used to pull in
EAGER_IMPORTS = "import langgraph.graph, langgraph.types, langchain_core.tools, httpx, telegram"
EAGER = "{imports}; from loopgate_lc.cli import main; raise SystemExit(main())"
# what every store command pays before loopgate_lc's own code: the interpreter, SQLite,
# and pydantic with its first model built (when pydantic would look for its plugins among
# the installed distributions, which the store commands spare it)
FLOOR = ("import argparse, json, os, sqlite3\n"
         "os.environ['PYDANTIC_DISABLE_PLUGINS'] = '__all__'\n"
         "from pydantic import BaseModel\n"
         "class Row(BaseModel):\n    id: str\n"
         "Row(id='x')")
# run in one interpreter: every command once, then what the eager row adds; prints the
# source files of every module imported, to check their bytecode before timing anything
PROBE = """
import contextlib, io, json, sys
from loopgate_lc.cli import main
store, first, second = sys.argv[1:4]
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    for args in (["pending"], ["audit", "--limit", "20"], ["approve", first, "--as", "bench"],
                 ["reject", second, "--reason", "bench", "--as", "bench"]):
        main([*args, "--store", store])
    exec(sys.argv[4])
print(json.dumps(sorted({getattr(m, "__file__", None) or "" for m in list(sys.modules.values())})))
"""


def _fresh(source: str) -> bool:
    """Whether ``source`` has bytecode Python will use: a ``.pyc`` whose header names the
    source's modification time and size (or one checked by hash)."""
    cached = importlib.util.cache_from_source(source)
    try:
        with open(cached, "rb") as file:
            header = file.read(16)
        stat = os.stat(source)
    except OSError:
        return False
    if len(header) < 16 or header[:4] != importlib.util.MAGIC_NUMBER:
        return False
    if int.from_bytes(header[4:8], "little") & 1:  # hash-based: Python checks it itself
        return True
    return (int.from_bytes(header[8:12], "little") == int(stat.st_mtime) & 0xFFFFFFFF
            and int.from_bytes(header[12:16], "little") == stat.st_size & 0xFFFFFFFF)


def ensure_bytecode(sources: Iterable[str]) -> tuple[int, int, int]:
    """Compile each ``.py`` among ``sources`` that lacks fresh bytecode, as ``pip
    install`` would have (``py_compile`` writes it even under PYTHONDONTWRITEBYTECODE).
    Returns how many modules were checked, compiled, and could not be compiled."""
    checked = compiled = failed = 0
    for source in sources:
        if not source.endswith(".py"):
            continue  # extension modules, frozen and built-in ones
        checked += 1
        if _fresh(source):
            continue
        try:
            py_compile.compile(source, cfile=importlib.util.cache_from_source(source),
                               doraise=True)
            compiled += 1
        except (OSError, py_compile.PyCompileError):
            failed += 1
    return checked, compiled, failed


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
            probed = [gate.submit("Probe approve?").id, gate.submit("Probe reject?").id]
        # a smoke run skips the eager row's imports (seconds of CPU, in the probe and in
        # the row's process alike) and proves nothing more
        eager_imports = "pass" if config.smoke else EAGER_IMPORTS
        found = subprocess.run(
            [sys.executable, "-c", PROBE, store, *probed, eager_imports],
            check=True, capture_output=True, text=True, cwd=tmp, timeout=120)
        checked, compiled, failed = ensure_bytecode(json.loads(found.stdout))
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
            "eager": lambda: spawn("eager", [sys.executable, "-c",
                                             EAGER.format(imports=eager_imports), "pending",
                                             "--store", store]),
            "floor": lambda: spawn("floor", [sys.executable, "-c", FLOOR]),
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
                  if k not in ("python", "eager", "floor"))
    section.verdict = ("met" if slowest < GOAL_S * 1000 else "not met") + (
        f" (slowest median {slowest / 1000:.2f} s"
        + (f"; {failed} modules without bytecode" if failed else "") + ")")
    section.notes.append(
        f"Wall time from process start to exit of `{' '.join(Path(c).name for c in command)} "
        "...` on a SQLite file store, medians and p99 over the repetitions; ratio = median / "
        "median of `python -c pass` in the same run; CPU = the process's user + system time "
        "(median), which a busy machine inflates far less than the wall time. The eager row "
        "re-creates the start-up before the imports were made lazy (LangGraph and "
        "langchain-core came in through the package's `__init__`; then about 1.06 s on an "
        "idle machine of this kind). The floor row is what any command that reads a record "
        "through the store pays first: the interpreter, sqlite3, pydantic and its first "
        "model, without the search for pydantic plugins among the installed distributions "
        "(which the store commands skip when run as a program).")
    if failed:
        bytecode = (f"Bytecode: {failed} of the {checked} modules these rows import have "
                    "none and could not be compiled here, so their figures include compiling "
                    "them from source on every start: slower than after `pip install`.")
    else:
        bytecode = (f"Bytecode: all {checked} modules these rows import ran from "
                    "compiled bytecode, as after `pip install` (which compiles it) or `make "
                    "venv`" + (f"; this run compiled {compiled} that lacked it or had it "
                               "stale first." if compiled else "."))
    section.notes.append(bytecode)
    section.seconds = time.perf_counter() - began
    return section
