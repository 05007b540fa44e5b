"""Writes ``RESULTS.md``: the machine, the versions, and every figure beside its anchor."""

from __future__ import annotations

import math
import os
import platform
import re
import sys
from datetime import UTC, datetime
from importlib import metadata

from bench._harness import Row, Section

__all__ = ["PACKAGES", "machine", "merge", "render", "versions"]

PACKAGES = (
    "loopgate-lc",
    "langgraph",
    "langchain",
    "langchain-core",
    "python-telegram-bot",
    "httpx",
    "langgraph-checkpoint-sqlite",
    "langgraph-checkpoint-postgres",
    "psycopg",
    "pydantic",
    "starlette",
    "uvicorn",
)


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, str]:
    return {
        "platform": platform.platform(),
        "CPU": _cpu_model(),
        "CPU count": str(os.cpu_count()),
        "python": sys.version.split()[0] + f" ({platform.python_implementation()})",
        "load average at the end (1, 5, 15 min)": _load(),
    }


def _load() -> str:
    """How busy the machine was: figures from a shared machine read differently."""
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # not available on this platform
        return "unknown"


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(row: Row) -> str:
    return "—" if row.ratio is None else f"{row.ratio:.2f}×"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(sections: list[Section], *, total_seconds: float, smoke: bool,
           optimisations: list[str]) -> str:
    lines = ["# loopgate_lc benchmarks", ""]
    lines.append(
        f"Written by `python -m bench` (`make bench`) on "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} in {total_seconds:.0f} s; "
        "do not edit by hand. Every figure was measured in this run beside its anchor, with "
        "the variants alternated inside each repetition. Medians unless marked p99.")
    if smoke:
        lines += ["", "**Smoke run: tiny sizes, the figures mean nothing.**"]
    lines += ["", "## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in machine().items()]
    lines += ["", "## Versions", "", "| package | version |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in versions().items()]
    lines += ["", "## Summary", "", "| benchmark | goal | result | took |", "|---|---|---|---|"]
    for section in sections:
        lines.append(f"| {section.title} | {_cell(section.goal)} | {section.verdict} | "
                     f"{section.seconds:.0f} s |")
    for section in sections:
        lines += ["", f"## {section.title}", "", f"Goal: {section.goal}. Result: "
                  f"**{section.verdict}**.", ""]
        lines += ["| figure | median | p99 | anchor | ratio | note |",
                  "|---|---:|---:|---|---:|---|"]
        for row in section.rows:
            unit = f" {row.unit}" if row.value is not None else ""
            p99 = f"{_num(row.p99)} {row.unit}" if row.p99 is not None else "—"
            lines.append(
                f"| {_cell(row.label)} | {_num(row.value)}{unit} | {p99} | "
                f"{_cell(row.anchor) or '—'} | {_ratio(row)} | {_cell(row.note)} |")
        for note in section.notes:
            lines += ["", note]
    lines += ["", "## What each optimisation bought", ""]
    lines += optimisations or ["Nothing was changed in the library for speed."]
    return "\n".join(lines) + "\n"


def merge(old: str, new: str, sections: list[Section]) -> str:
    """``old`` with the blocks and summary rows of ``sections`` taken from ``new`` (a render
    of only those sections).

    ``python -m bench --only KEY`` refreshes one benchmark without re-measuring (and so
    rewriting) every other figure; the refreshed block says when and under what load it was
    measured, since the rest of the file is from another run.
    """
    olds = re.split(r"(?m)^(?=## )", old)
    news = re.split(r"(?m)^(?=## )", new)

    def find(parts: list[str], head: str) -> int | None:
        for i, part in enumerate(parts):
            if part.splitlines()[0] == head:
                return i
        return None

    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = machine()["load average at the end (1, 5, 15 min)"]
    for section in sections:
        head = f"## {section.title}"
        new_i = find(news, head)
        if new_i is None:  # pragma: no cover - render writes every section's heading
            continue
        block = (news[new_i].rstrip("\n") + f"\n\nMeasured on {when} by `python -m bench "
                 f"--only {section.key}` (load average at the end: {load}); the rest of this "
                 "file is from the run at the top.\n\n")
        old_i = find(olds, head)
        if old_i is not None:
            olds[old_i] = block
        else:
            tail = find(olds, "## What each optimisation bought")
            olds.insert(len(olds) if tail is None else tail, block)
        row = next(line for line in news[find(news, "## Summary") or 0].splitlines()
                   if line.startswith(f"| {section.title} |"))
        summary_i = find(olds, "## Summary")
        if summary_i is not None:
            lines = olds[summary_i].rstrip("\n").splitlines()
            at = [i for i, line in enumerate(lines) if line.startswith(f"| {section.title} |")]
            if at:
                lines[at[0]] = row
            else:
                lines.append(row)
            olds[summary_i] = "\n".join(lines) + "\n\n"
    # what the optimisations bought is text of the code, not a figure of a run: current
    head = "## What each optimisation bought"
    new_i, old_i = find(news, head), find(olds, head)
    if new_i is not None and old_i is not None:
        olds[old_i] = news[new_i]
    return "".join(olds).rstrip("\n") + "\n"
