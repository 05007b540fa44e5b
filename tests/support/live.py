"""A real server for tests: an ASGI app under uvicorn on 127.0.0.1, in a thread."""

from __future__ import annotations

import socket
import threading
from typing import Any

import uvicorn


def free_socket() -> socket.socket:
    """A bound loopback socket: its port is known before the app is built.

    Created as TCP explicitly, so asyncio turns Nagle off: otherwise every response waits
    ~40 ms for a delayed ACK.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class LiveServer:
    """Serve an ASGI app with uvicorn in a background thread."""

    def __init__(self, app: Any, sock: socket.socket | None = None) -> None:
        self.sock = sock or free_socket()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on",
            timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        ready = threading.Event()
        for _ in range(1000):  # bounded: startup is quick, the socket is already bound
            if self.server.started or not self.thread.is_alive():
                break
            ready.wait(0.01)
        if not self.server.started:
            raise RuntimeError("the server did not start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
