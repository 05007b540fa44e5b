"""Lazily exported names: a name whose optional extra is missing says which extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

# ``sys.modules[name] = None`` makes ``import name`` fail as if it were not installed
MISSING = """
import sys
sys.modules[{module!r}] = None
import {package}
try:
    getattr({package}, {name!r})
except Exception as exc:
    print(type(exc).__name__ + ": " + str(exc))
else:
    print("imported")
"""


@pytest.mark.parametrize(("package", "name", "module", "extra"), [
    ("loopgate_lc", "ApprovalMiddleware", "langchain", "agents"),
    ("loopgate_lc.server", "create_app", "starlette", "server"),
])
def test_a_name_without_its_extra_names_the_extra(package: str, name: str, module: str,
                                                  extra: str) -> None:
    said = subprocess.run(
        [sys.executable, "-c", MISSING.format(package=package, name=name, module=module)],
        capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    assert said.startswith("ConfigurationError: "), said
    assert f"{package}.{name} needs {module}" in said
    assert f"pip install 'loopgate-lc[{extra}]'" in said


def test_a_name_with_its_extra_installed_imports() -> None:
    import loopgate_lc
    from loopgate_lc.middleware import ApprovalMiddleware

    assert loopgate_lc.ApprovalMiddleware is ApprovalMiddleware


def test_an_unknown_name_is_an_attribute_error() -> None:
    import loopgate_lc

    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        loopgate_lc.NoSuchThing  # noqa: B018
