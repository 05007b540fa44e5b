"""Serve a fresh copy of this folder with ``langgraph dev`` for the examples' ``--auto``
runs (``langgraph dev`` keeps threads in the folder it serves; your own deployment
replaces all of this)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from loopgate_lc.testing.langgraph_dev import LangGraphDev

FOLDER = Path(__file__).resolve().parent


@contextlib.contextmanager
def langgraph_dev(config: str = "langgraph.json", **env: str) -> Iterator[str]:
    """Serve the agent (and, with ``langgraph.inside.json``, loopgate_lc); yields its URL."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "deployment"
        shutil.copytree(FOLDER, folder,
                        ignore=shutil.ignore_patterns(".langgraph_api", "__pycache__"))
        with LangGraphDev(folder, config=config, env=env) as server:
            yield server.url
