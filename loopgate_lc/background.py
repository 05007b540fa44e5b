"""Serve an ASGI app with uvicorn on a background thread, on a loopback port.

The HTTP API in a notebook or script, the fake Telegram Bot API in tests, the benchmarks'
servers: all need "start this app here, tell me its URL, stop it later". The socket is
bound before uvicorn starts, so the URL is known at once, and it is created as TCP
explicitly, so asyncio turns Nagle off (otherwise every response waits ~40 ms for a
delayed ACK). Needs the ``server`` extra (uvicorn).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

__all__ = ["BackgroundServer", "loopback_socket"]

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def loopback_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A bound TCP socket on a loopback address (port 0: a free one)."""
    if host not in _LOOPBACK:
        raise ValueError(f"a background server listens on loopback only, not {host!r}")
    family = socket.AF_INET6 if host == "::1" else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else \
        f"http://{host}:{port}"


class BackgroundServer:
    """Run ``app`` under uvicorn in a daemon thread.

    Args:
        app: Any ASGI application; its lifespan (startup/shutdown) runs in the server's
            own event loop.
        sock: A socket already bound (see :func:`loopback_socket`), when the URL must be
            known before the app is built; otherwise one is bound on ``start``.
        host: A loopback address (this helper never listens elsewhere).
        port: 0 lets the operating system pick a free port.
        name: The thread's name, for debugging.

    Raises:
        ValueError: ``host`` is not a loopback address.
    """

    def __init__(self, app: Any, sock: socket.socket | None = None, *,
                 host: str = "127.0.0.1", port: int = 0,
                 name: str = "loopgate-server") -> None:
        if host not in _LOOPBACK:
            raise ValueError(f"a background server listens on loopback only, not {host!r}")
        self.app = app
        self.host = host
        self.port = port
        self.name = name
        self._sock = sock
        self.url = _url_of(sock) if sock is not None else ""
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> BackgroundServer:
        """Start serving; returns once the server accepts connections."""
        import uvicorn

        if self.running:
            return self
        sock, self._sock = self._sock or loopback_socket(self.host, self.port), None
        self.url = _url_of(sock)
        from loopgate_lc._http import http_protocol

        self._server = uvicorn.Server(uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="auto",
            timeout_graceful_shutdown=2, http=http_protocol()))
        self._thread = threading.Thread(target=self._run, args=(sock,), name=self.name,
                                        daemon=True)
        self._thread.start()
        started = threading.Event()
        for _ in range(1000):  # bounded: the socket is already bound, startup is quick
            if self._server.started or not self._thread.is_alive():
                break
            started.wait(0.01)
        if not self._server.started:
            self.stop()
            raise RuntimeError(f"{self.name} did not start")
        return self

    def _run(self, sock: socket.socket) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[sock]))
        finally:
            sock.close()

    def stop(self) -> None:
        """Ask uvicorn to finish and wait (bounded) for the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None
        self._server = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> BackgroundServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)
