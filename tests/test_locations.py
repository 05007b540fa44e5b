"""Commands the package prints name this environment's program as a shell finds it."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest

from loopgate_lc.locations import cli_command, store_command

SCRIPT = Path(sys.executable).parent / ("loopgate-lc.exe" if os.name == "nt" else "loopgate-lc")
needs_script = pytest.mark.skipif(not SCRIPT.is_file(),
                                  reason="loopgate-lc is not installed in this environment")


@needs_script
def test_the_bare_name_only_when_the_shell_finds_this_very_program(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = os.pathsep.join(["/usr/bin", "/bin"])
    monkeypatch.setenv("PATH", os.pathsep.join([str(SCRIPT.parent), system]))
    assert cli_command() == "loopgate-lc"
    # not activated (a `make demo`, a `.venv/bin/python app.py`): the full path
    monkeypatch.setenv("PATH", system)
    assert cli_command() == shlex.quote(str(SCRIPT.absolute()))
    # another installation's loopgate-lc first on PATH is not this one
    other = tmp_path / SCRIPT.name
    other.write_text("#!/bin/sh\nexit 3\n")
    other.chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(tmp_path), str(SCRIPT.parent), system]))
    assert cli_command() == shlex.quote(str(SCRIPT.absolute()))


def test_without_an_installed_script_this_python_runs_the_module(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    python = tmp_path / "with space" / "python3"
    monkeypatch.setattr(sys, "executable", str(python))
    assert shlex.split(cli_command()) == [str(python), "-m", "loopgate_lc.cli"]


@needs_script
def test_a_store_command_names_the_program_and_an_absolute_store_without_its_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(tmp_path)
    command = store_command("pending", "sqlite:///it's here.db")  # relative to the cwd
    assert command is not None
    absolute = "sqlite:///" + str(tmp_path / "it's here.db")
    assert shlex.split(command) == [str(SCRIPT.absolute()), "pending", "--store", absolute]
    secret = store_command("pending", "postgresql://ops:s3cret@db.internal:5432/gate")
    assert secret is not None and "s3cret" not in secret and "<password>" in secret
    assert store_command("pending", "memory://") is None
