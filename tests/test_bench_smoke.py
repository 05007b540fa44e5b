"""Every benchmark runs end to end in its smoke size and reports each figure beside its
anchor. Structure only: timing is measured by ``make bench``, never asserted here."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import BENCHMARKS
from bench.__main__ import run_all
from bench._harness import Config, Row, Section, interleave, median, percentile

SMOKE = Config(smoke=True)


def check_rows(section: Section) -> None:
    assert section.rows, f"{section.key} produced no rows"
    labels = [row.label for row in section.rows]
    assert len(set(labels)) == len(labels), "row labels must be unique"
    for row in section.rows:
        if row.value is None:  # only an honest "not measured", never a silent gap
            assert row.note.startswith("not measured yet: "), row
            continue
        assert math.isfinite(row.value) and row.value > 0, row
        assert row.anchor, f"{row.label} has no anchor"
        assert row.samples > 0, row
        if row.ratio is not None:
            assert math.isfinite(row.ratio) and row.ratio > 0, row
    anchors = {row.anchor for row in section.rows if row.value is not None}
    for anchor in anchors:  # each anchor is itself measured in the run, at ratio 1
        matching = [r for r in section.rows if r.label.endswith(anchor) and r.value]
        assert matching, f"anchor {anchor!r} was not measured beside its figures"
        assert all(r.ratio == pytest.approx(1.0) for r in matching)


@pytest.mark.parametrize("key", [key for key, _ in BENCHMARKS])
def test_each_benchmark_runs_in_smoke_size(key: str) -> None:
    fn = dict(BENCHMARKS)[key]
    section = fn(SMOKE)
    assert section.key == key
    assert section.title and section.goal
    assert section.verdict.split(" (")[0] in ("met", "not met", "measured")
    check_rows(section)


def test_run_all_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    seen: list[str] = []
    sections = run_all(SMOKE, ["policy"], out, log=seen.append)
    text = out.read_text(encoding="utf-8")
    assert [s.key for s in sections] == ["policy"]
    for needed in ("## Machine", "CPU count", "python", "langgraph", "langchain-core",
                   "python-telegram-bot", "httpx", "loopgate-lc", "## Summary",
                   sections[0].title, "## What each optimisation bought", "Smoke run"):
        assert needed in text, needed
    assert "not judged (smoke run)" in text
    assert seen[-1].endswith(str(out))


def test_an_unknown_benchmark_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown benchmark"):
        run_all(SMOKE, ["nope"], tmp_path / "x.md", log=lambda _: None)


def test_interleave_alternates_and_drops_warmup() -> None:
    order: list[str] = []
    samples = interleave({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                         reps=4, warmup=1)
    assert {k: len(v) for k, v in samples.items()} == {"a": 4, "b": 4}
    assert order[:4] == ["a", "b", "b", "a"]  # the order rotates every repetition


def test_statistics_report_observed_values() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert median(values) == 3.0
    assert median([1.0, 2.0]) == 1.5
    assert percentile(values, 99) == 5.0
    assert percentile(values, 50) == 3.0
    assert math.isnan(median([]))


def test_a_row_without_a_value_says_why() -> None:
    from bench._harness import not_measured

    row = not_measured("x", "ms", "the server has not landed")
    assert isinstance(row, Row) and row.value is None
    assert row.note == "not measured yet: the server has not landed"


def test_only_refreshes_its_own_section_and_keeps_the_others() -> None:
    from bench.report import merge, render

    def section(key: str, title: str, value: float) -> Section:
        out = Section(key=key, title=title, goal="g", verdict="measured")
        out.rows.append(Row("a", value, "ms", anchor="a", ratio=1.0, samples=1))
        return out

    full = render([section("x", "1. X", 1.0), section("y", "2. Y", 2.0)], total_seconds=1,
                  smoke=False, optimisations=["as the code said then"])
    again = render([section("y", "2. Y", 7.0), section("z", "3. Z", 3.0)], total_seconds=1,
                   smoke=False, optimisations=["as the code says now"])
    merged = merge(full, again, [section("y", "2. Y", 7.0), section("z", "3. Z", 3.0)])
    assert "| a | 1.00 ms |" in merged.split("## 2. Y")[0]  # X untouched
    assert "| a | 7.00 ms |" in merged.split("## 2. Y")[1]  # Y re-measured ...
    assert "| a | 2.00 ms |" not in merged
    assert "`python -m bench --only y`" in merged  # ... and says so
    assert merged.index("## 3. Z") < merged.index("## What each optimisation bought")
    assert [line.split(" |")[0] for line in merged.splitlines()
            if line.startswith("| 1. X") or line.startswith("| 2. Y")
            or line.startswith("| 3. Z")] == ["| 1. X", "| 2. Y", "| 3. Z"]
    # what the optimisations bought is the code's text, not a figure: always the current
    assert merged.rstrip().endswith("as the code says now")
    assert "as the code said then" not in merged
