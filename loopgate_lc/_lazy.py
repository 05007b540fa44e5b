"""Names a package exports but imports only when first used.

The CLI's store commands import :mod:`loopgate_lc` to read a table; importing LangGraph,
LangChain, httpx or Starlette there would cost them a second before the first row.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, where: Mapping[str, str],
                 extras: Mapping[str, str] | None = None) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``where`` maps each lazily exported name to
    the module that defines it. A name, once imported, is kept on the package like an eager
    import's. ``extras`` maps a module to the optional extra it needs, so a name used without
    that extra installed says which one to install, not just which third-party module is
    missing."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            defining = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            extra = (extras or {}).get(module)
            if extra is None or (exc.name or "").startswith("loopgate_lc"):
                raise
            from loopgate_lc.errors import ConfigurationError

            raise ConfigurationError(
                f"{package}.{name} needs {exc.name}, which is not installed: "
                f"pip install 'loopgate-lc[{extra}]'") from exc
        value = getattr(defining, name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
