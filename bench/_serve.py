"""``loopgate-lc serve`` in a child process of its own, for the sections that measure the
HTTP API: the server's work is then not shared with the benchmark's own."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from loopgate_lc.testing.langgraph_dev import free_port, wait_ready


class Served:
    """``loopgate-lc serve --store STORE`` on a free loopback port, logging to a file in
    ``workdir``; :meth:`close` stops it."""

    def __init__(self, store: str, workdir: Path, env: Mapping[str, str],
                 args: tuple[str, ...] = (), timeout: float = 60) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (workdir / f"serve-{self.port}.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loopgate_lc.cli", "serve", "--store", store,
             "--port", str(self.port), "--no-mcp", "--log-level", "warning", *args],
            env=dict(env), cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_ready(self.url, self.proc, timeout=timeout, path="/health")
        except (RuntimeError, TimeoutError) as exc:
            self.close()
            raise RuntimeError(f"loopgate-lc serve did not start ({exc}): see {self.log.name}"
                               ) from exc

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
