"""Fixtures for the server tests: a gateway on a real SQLite file, and the app served live."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loopgate_lc.gateway import Loopgate
from loopgate_lc.server import create_app
from tests.support.live import LiveServer


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'loopgate.db'}"


@pytest.fixture
def gateway(db_url: str) -> Iterator[Loopgate]:
    gw = Loopgate(db_url, poll_interval=0.05, retry_backoff=0.05)
    yield gw
    gw.close()


ServeFn = Callable[..., LiveServer]
# one TLS context for every test's client: each client made without one loads the CA bundle
# (about 30 ms of CPU), for a server that speaks plain HTTP on loopback anyway
TLS = httpx.create_ssl_context()


@pytest.fixture
def serve(gateway: Loopgate) -> Iterator[ServeFn]:
    """Start the app for ``gateway`` with the given ``create_app`` options."""
    started: list[LiveServer] = []

    def start(gw: Loopgate | None = None, *, sock: socket.socket | None = None,
              **options: Any) -> LiveServer:
        app = create_app(gw or gateway, **options)
        live = LiveServer(app, sock).start()
        started.append(live)
        return live

    yield start
    for live in reversed(started):
        live.stop()


WEBHOOK_SECRET = "test-secret"


@pytest.fixture(scope="module")
def shared_db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('shared') / 'loopgate.db'}"


@pytest.fixture(scope="module")
def shared_gateway(shared_db_url: str) -> Iterator[Loopgate]:
    """One gateway for a whole test module: tests keep apart by using their own
    sessions (see ``session``)."""
    gw = Loopgate(shared_db_url, poll_interval=0.05, retry_backoff=0.05)
    yield gw
    gw.close()


@pytest.fixture(scope="module")
def live(shared_gateway: Loopgate) -> Iterator[LiveServer]:
    """The app with the defaults (no auth) and a webhook secret, shared by a module."""
    server = LiveServer(create_app(shared_gateway, webhook_secret=WEBHOOK_SECRET)).start()
    yield server
    server.stop()


@pytest.fixture
def client(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=10, verify=TLS) as c:
        yield c


@pytest.fixture
def session(client: httpx.Client) -> str:
    """A registered session of this test's own."""
    session_id = f"approval-bot-{uuid.uuid4().hex[:8]}"
    response = client.post("/hitl/register", json={
        "session_id": session_id, "client_id": "my-ai", "telegram_id": 123456789})
    assert response.status_code == 200, response.text
    return session_id


class Receiver:
    """An HTTP endpoint that records what it is sent (webhooks, callbacks) and answers
    with scripted status codes (200 once the script runs out)."""

    def __init__(self) -> None:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        self.received: list[tuple[dict[str, str], bytes]] = []
        self.script: list[int] = []
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)

        async def hook(request: Request) -> JSONResponse:
            body = await request.body()
            with self.lock:
                self.received.append((dict(request.headers), body))
                status = self.script.pop(0) if self.script else 200
                self.arrived.notify_all()
            return JSONResponse({"ok": status < 300}, status_code=status)

        self.app = Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])

    def wait(self, count: int = 1, timeout: float = 10.0) -> list[tuple[dict[str, str], bytes]]:
        """Block until ``count`` deliveries arrived (bounded by ``timeout``)."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.received) >= count, timeout):
                raise TimeoutError(f"{len(self.received)} of {count} deliveries arrived")
            return list(self.received)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    """A recording receiver and its base URL."""
    rec = Receiver()
    server = LiveServer(rec.app).start()
    yield rec, server.url
    server.stop()
