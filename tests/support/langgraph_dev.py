"""The test agent served by ``langgraph dev``, and a TCP relay that can make a server
unreachable for a while."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from loopgate_lc.testing.langgraph_dev import LangGraphDev, free_port

SUPPORT = Path(__file__).resolve().parent


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



@contextlib.contextmanager
def served(folder: Path, **kwargs: Any) -> Iterator[LangGraphDev]:
    """``langgraph dev`` serving the test agent, its tool log in ``folder/tools.log``."""
    env = {"SERVED_AGENT_LOG": str(folder / "tools.log"), **kwargs.pop("env", {})}
    agent = SUPPORT / "served_agent.py"
    graphs = {"agent": f"{agent}:graph", "hitl": f"{agent}:hitl",
              "hitl_per_call": f"{agent}:hitl_per_call"}
    with LangGraphDev(folder, graphs, env=env, **kwargs) as server:
        yield server
