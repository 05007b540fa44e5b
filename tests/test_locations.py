"""What the package prints for people to paste: this environment's program as a shell finds
it, and store URLs that run from any folder and carry no password."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest

from loopgate_lc.cli import main
from loopgate_lc.locations import cli_command, printable_store_url, store_command

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


@pytest.mark.parametrize("url", [
    "postgresql://ops:s3cret@db:5432/gate",
    "postgresql://ops@db/gate?sslmode=require&password=s3cret",
    "postgres://ops@[::1]:5433/gate?PassWord=s3cret",
    "postgresql://db/gate?sslpassword=s3cret",
    "host=db user=ops password=s3cret dbname=gate",
    "host=db password='s3cret with space' dbname=gate",
])
def test_a_printed_store_url_carries_no_password_however_libpq_takes_it(url: str) -> None:
    shown = printable_store_url(url)
    assert "s3cret" not in shown and "<password>" in shown
    assert "gate" in shown  # the rest as written


@pytest.mark.parametrize("url", ["sqlite:////tmp/a b.db", "sqlite:///rel.db", "memory://",
                                 "postgresql://ops@db:5432/gate?sslmode=require"])
def test_a_store_url_without_a_secret_is_printed_as_written(url: str) -> None:
    assert printable_store_url(url) == url


def test_a_store_the_cli_cannot_open_is_named_without_its_password(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pending", "--store", "mysql://root:s3cret@db/gate"]) != 0
    err = capsys.readouterr().err
    assert "cannot open a store from 'mysql://root:<password>@db/gate'" in err
    assert "s3cret" not in err
