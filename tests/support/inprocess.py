"""Run a program's entry point in the test's own process, as its command line would.

A new interpreter costs a second or more of importing LangChain and LangGraph; running
``main`` here takes the same code path with the same argv, working directory, environment
and (empty) standard input, and reports what a finished process would.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Ran:
    """What a process run would give back."""

    returncode: int
    stdout: str
    stderr: str


def run_main(main: Callable[[], Any], *, cwd: Path, monkeypatch: pytest.MonkeyPatch,
             capture: pytest.CaptureFixture[str], argv: list[str] | None = None,
             drop_env: tuple[str, ...] = ()) -> Ran:
    """Call ``main()`` in ``cwd`` with stdin at end of file (no terminal), ``argv`` as
    ``sys.argv`` and no environment variable starting with ``drop_env``. An ``int`` it
    returns, or a ``SystemExit`` it raises, is the exit code; any other exception fails
    the test with its traceback, as a crash would."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    if argv is not None:
        monkeypatch.setattr(sys, "argv", argv)
    for key in [k for k in os.environ if drop_env and k.startswith(drop_env)]:
        monkeypatch.delenv(key)
    capture.readouterr()
    try:
        result = main()
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capture.readouterr()
    return Ran(code, out, err)
