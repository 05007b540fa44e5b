"""``python -m bench``: run every benchmark and write ``bench/RESULTS.md``.

Options: ``--smoke`` (tiny sizes, proves each benchmark runs), ``--only a,b`` (run some;
their sections replace those in an existing table, the other figures stay), ``--out PATH``
(write the table elsewhere).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import BENCHMARKS, OPTIMISATIONS
from bench._harness import Config, Section
from bench.report import merge, render

DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS.md"


def run_all(config: Config, only: list[str] | None = None, out: Path = DEFAULT_OUT,
            log: Callable[[str], None] = print) -> list[Section]:
    """Run the chosen benchmarks in order and write the report; returns the sections."""
    chosen = [(key, fn) for key, fn in BENCHMARKS if not only or key in only]
    unknown = set(only or ()) - {key for key, _ in BENCHMARKS}
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(k for k, _ in BENCHMARKS)}")
    began = time.perf_counter()
    sections = []
    for key, fn in chosen:
        log(f"bench: {key} ...")
        section = fn(config)
        if config.smoke:
            section.verdict = "not judged (smoke run)"
        log(f"bench: {key}: {section.verdict} ({section.seconds:.0f} s)")
        sections.append(section)
    text = render(sections, total_seconds=time.perf_counter() - began, smoke=config.smoke,
                  optimisations=list(OPTIMISATIONS))
    if only and not config.smoke and out.exists():  # refresh these, keep the other figures
        text = merge(out.read_text(encoding="utf-8"), text, sections)
    out.write_text(text, encoding="utf-8")
    log(f"bench: wrote {out}")
    return sections


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; figures mean nothing")
    parser.add_argument("--only", default="", help="comma-separated benchmark keys")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    only = [k.strip() for k in args.only.split(",") if k.strip()] or None
    run_all(Config(smoke=args.smoke), only, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
