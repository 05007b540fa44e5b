"""A real HTTP server for the benchmarks: an ASGI app under uvicorn on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

__all__ = ["LiveServer"]


class LiveServer:
    """Serve an ASGI app with uvicorn in a background thread, on a loopback port chosen
    by the OS (bound before the server starts, so the URL is known at once)."""

    def __init__(self, app: Any) -> None:
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and
        # without it every response waits ~40 ms for a delayed ACK.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on",
            timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        for _ in range(1_000):  # bounded: the socket is already bound, startup is quick
            if self.server.started or not self.thread.is_alive():
                break
            time.sleep(0.01)
        if not self.server.started:
            raise RuntimeError("the benchmark's HTTP server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
