"""A real ``langgraph dev`` on 127.0.0.1 for tests and benchmarks, and a TCP relay that
can make a server unreachable for a while.

The server runs in its own process group on a free port, offline (no analytics, no
version check, no tracing), and is killed with the group at the end. Readiness is
``GET /ok``, waited for with a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

SUPPORT = Path(__file__).resolve().parent
OFFLINE_ENV = {
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    "LANGGRAPH_NO_VERSION_CHECK": "true",
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING_V2": "false",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _langgraph_cli() -> str:
    found = Path(sys.executable).parent / "langgraph"
    if not found.exists():
        raise RuntimeError("langgraph-cli is not installed: pip install 'langgraph-cli[inmem]'")
    return str(found)


def wait_ready(url: str, process: subprocess.Popen[bytes] | None = None,
               timeout: float = 90.0) -> None:
    """Wait (bounded) until ``GET url/ok`` answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} was not ready within {timeout:.0f}s")


class LangGraphDev:
    """``langgraph dev`` serving ``graphs`` (``{"agent": "/path/file.py:graph"}``) from
    ``folder``; ``http_app`` (``"/path/file.py:app"``) is its custom app."""

    def __init__(self, folder: Path, graphs: Mapping[str, str], *,
                 env: Mapping[str, str] | None = None, http_app: str | None = None,
                 loopback_webhooks: bool = True) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config: dict[str, Any] = {"dependencies": ["."], "graphs": dict(graphs)}
        if loopback_webhooks:
            config["webhooks"] = {"url": {"disable_loopback": False, "require_https": False}}
        if http_app:
            config["http"] = {"app": http_app}
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "langgraph.json").write_text(json.dumps(config), encoding="utf-8")
        self.env = {**os.environ, **OFFLINE_ENV, **(env or {})}
        self.log = folder / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> LangGraphDev:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [_langgraph_cli(), "dev", "--no-browser", "--no-reload", "--host",
                 "127.0.0.1", "--port", str(self.port)],
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
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]

    def __enter__(self) -> LangGraphDev:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Relay:
    """A TCP relay on 127.0.0.1 in front of ``target_port``: :meth:`cut` closes it (new
    connections are refused, open ones dropped), :meth:`restore` listens again on the
    same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="relay")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread.start()
        self.restore()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def restore(self) -> None:
        self._call(self._listen())

    def cut(self) -> None:
        self._call(self._close())

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port,
                                                      reuse_address=True)

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.close()
        if server is not None:
            await server.wait_closed()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


def served_agent_paths() -> dict[str, str]:
    return {"agent": f"{SUPPORT / 'served_agent.py'}:graph"}


@contextlib.contextmanager
def served(folder: Path, **kwargs: Any) -> Iterator[LangGraphDev]:
    """``langgraph dev`` serving the test agent, its tool log in ``folder/tools.log``."""
    log = folder / "tools.log"
    env = {"SERVED_AGENT_LOG": str(log), **kwargs.pop("env", {})}
    with LangGraphDev(folder, served_agent_paths(), env=env, **kwargs) as server:
        yield server
