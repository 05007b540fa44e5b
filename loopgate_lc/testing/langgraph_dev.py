"""A real ``langgraph dev`` on 127.0.0.1, for tests (yours and ours), benchmarks and
offline examples: the way to check that approvals work for a graph deployed on LangGraph
Server without deploying it. Needs ``langgraph-cli[inmem]``.

The server runs in its own process group on a free port, offline (no analytics, no
version check, no tracing), and is killed with the group at the end. Readiness is
``GET /ok``, waited for with a bound.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

__all__ = ["OFFLINE_ENV", "LangGraphDev", "free_port", "wait_ready"]

OFFLINE_ENV = {
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    "LANGGRAPH_NO_VERSION_CHECK": "true",
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING_V2": "false",
}


_PORTS_FROM, _PORTS_TO, _BLOCK = 20000, 32000, 300  # below Linux's ephemeral range
_handed = itertools.count()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server about to start.

    Not one the OS picks for ``bind(("127.0.0.1", 0))``: a port taken that way is free
    again the moment it is returned, and between then and the server's own bind, another
    test running at the same time could be handed it too (then one server fails to start
    and its client talks to the other). Ports come from below the kernel's ephemeral
    range instead, in a block per process, each handed out once, and only if nothing is
    bound to it.

    Raises:
        RuntimeError: No port of this process's block is free.
    """
    blocks = (_PORTS_TO - _PORTS_FROM) // _BLOCK
    start = _PORTS_FROM + (os.getpid() % blocks) * _BLOCK
    for _ in range(_BLOCK):
        port = start + next(_handed) % _BLOCK
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {start}-{start + _BLOCK - 1}")


def _langgraph_cli() -> str:
    found = Path(sys.executable).parent / "langgraph"
    if not found.exists():
        raise RuntimeError("langgraph dev needs: pip install 'langgraph-cli[inmem]'")
    return str(found)


def wait_ready(url: str, process: subprocess.Popen[bytes] | None = None,
               timeout: float = 90.0, path: str = "/ok") -> None:
    """Wait (bounded) until ``GET url + path`` answers 200 (``langgraph dev`` answers
    ``/ok``, ``loopgate-lc serve`` ``/health``).

    One client asks every time: each new ``httpx`` client loads the system's CA
    certificates (tens of ms of CPU), and a server takes seconds to start.
    """
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{url}{path}").status_code == 200:
                    return
            time.sleep(0.1)
    raise TimeoutError(f"{url} was not ready within {timeout:.0f}s")


class LangGraphDev:
    """``langgraph dev`` serving from ``folder``.

    Args:
        folder: Where the server runs (it keeps its threads there, in
            ``.langgraph_api``); its log is ``folder/server.log``.
        graphs: ``{"agent": "/path/file.py:graph"}``: write a ``langgraph.json`` with
            these graphs. None: serve the folder's own ``config`` file.
        config: The configuration file to serve (``langgraph dev --config``).
        env: Extra environment for the server (and your graphs).
        http_app: ``"/path/file.py:app"``, the custom HTTP app (with ``graphs``).
        loopback_webhooks: Let runs call webhooks on 127.0.0.1 over http (the server
            refuses them by default; with ``graphs``).
    """

    def __init__(self, folder: Path, graphs: Mapping[str, str] | None = None, *,
                 config: str = "langgraph.json", env: Mapping[str, str] | None = None,
                 http_app: str | None = None, loopback_webhooks: bool = True) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = config
        folder.mkdir(parents=True, exist_ok=True)
        if graphs is not None:
            written: dict[str, Any] = {"dependencies": ["."], "graphs": dict(graphs)}
            if loopback_webhooks:
                written["webhooks"] = {"url": {"disable_loopback": False,
                                               "require_https": False}}
            if http_app:
                written["http"] = {"app": http_app}
            (folder / config).write_text(json.dumps(written), encoding="utf-8")
        self.env = {**os.environ, **OFFLINE_ENV, **(env or {})}
        self.log = folder / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> LangGraphDev:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [_langgraph_cli(), "dev", "--config", self.config, "--no-browser",
                 "--no-reload", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=self.folder, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        try:
            wait_ready(self.url, self.process, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def logs(self) -> str:
        """The end of the server's log, for a failing test's message."""
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]

    def __enter__(self) -> LangGraphDev:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
