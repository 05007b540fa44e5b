"""WebhookNotifier against a real HTTP server on 127.0.0.1 that checks signatures the way
a receiver would, and scripts failures (5xx, 4xx, 429, hangs, refused connections)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from loopgate_lc.errors import ConfigurationError, SignatureError
from loopgate_lc.notifiers import DeliveryError, Notifier, WebhookNotifier
from loopgate_lc.schema import Status
from loopgate_lc.signing import verify_decision_token, verify_signature
from tests.notifiers._records import make_record, resolved

SECRET = "webhook-secret"


@dataclass
class Attempt:
    headers: dict[str, str]
    body: bytes
    signature_error: str | None


@dataclass
class Receiver:
    """A webhook receiver: verifies, then hands each Idempotency-Key to its app once."""

    secret: str | list[str] = SECRET
    # One entry per attempt: a status code, (status, extra headers), or "hang".
    script: list[Any] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    delivered: dict[str, dict[str, Any]] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        try:
            verify_signature(body, headers, self.secret)
            error = None
        except SignatureError as exc:
            error = str(exc)
        with self.lock:
            self.attempts.append(Attempt(headers, body, error))
            action = self.script.pop(0) if self.script else 200
        if action == "hang":
            self.release.wait(10)  # bounded; the fixture releases it at teardown
            return 200, {}
        status, extra = action if isinstance(action, tuple) else (action, {})
        if error is not None:
            return 401, {}
        if 200 <= status < 300:
            with self.lock:  # the app's handler logic: once per idempotency key
                self.delivered.setdefault(headers["idempotency-key"], json.loads(body))
        return status, extra


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra = state.handle(headers, body)
            try:
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
            except OSError:  # the client gave up (timeout test)
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/loopgate"
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


class Sleeps:
    """Stands in for asyncio.sleep so retries take no wall time; remembers each delay."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def test_is_a_notifier() -> None:
    assert isinstance(WebhookNotifier("http://127.0.0.1:9/x", SECRET), Notifier)


async def test_delivers_signed_json(receiver: Receiver, sleeps: Sleeps) -> None:
    async with WebhookNotifier(
        receiver.url, SECRET, sleep=sleeps, decision_url="https://app.example/hitl/decision"
    ) as notifier:
        ref = await notifier.notify(make_record())

    assert ref == {"status_code": 200, "attempts": 1}
    [attempt] = receiver.attempts
    assert attempt.signature_error is None
    assert attempt.headers["content-type"] == "application/json"
    assert attempt.headers["idempotency-key"] == "req-1:approval.requested"
    assert attempt.headers["x-loopgate-event"] == "approval.requested"
    body = json.loads(attempt.body)
    assert body["event"] == "approval.requested"
    request = body["request"]
    assert request["id"] == "req-1"
    assert request["kind"] == "tool_approval"
    assert request["status"] == "pending"
    assert request["session_id"] == "sess-1"
    assert request["thread_id"] == "thread-1"
    assert request["created_at"] == "2026-01-02T03:04:05Z"
    assert request["expires_at"] == "2026-01-02T04:04:05Z"
    assert request["payload"]["name"] == "delete_file"
    assert request["payload"]["args"] == {"path": "/tmp/report.txt"}
    assert body["decision_url"] == "https://app.example/hitl/decision/req-1"
    verify_decision_token(SECRET, "req-1", body["decision_token"])
    assert sleeps.delays == []


async def test_five_hundreds_then_success_is_delivered_once(
    receiver: Receiver, sleeps: Sleeps
) -> None:
    receiver.script = [500, 500, 500, 200]
    async with WebhookNotifier(receiver.url, SECRET, sleep=sleeps) as notifier:
        ref = await notifier.notify(make_record())

    assert ref == {"status_code": 200, "attempts": 4}
    assert len(receiver.attempts) == 4
    assert {a.headers["idempotency-key"] for a in receiver.attempts} == {"req-1:approval.requested"}
    assert all(a.signature_error is None for a in receiver.attempts)
    assert list(receiver.delivered) == ["req-1:approval.requested"]
    # Exponential from 0.5 s with at most 10% jitter.
    assert len(sleeps.delays) == 3
    for delay, base in zip(sleeps.delays, [0.5, 1.0, 2.0], strict=True):
        assert base <= delay <= base * 1.1


async def test_gateway_redelivery_is_deduplicated_by_the_key(
    receiver: Receiver, sleeps: Sleeps
) -> None:
    async with WebhookNotifier(receiver.url, SECRET, sleep=sleeps) as notifier:
        await notifier.notify(make_record())
        await notifier.notify(make_record())  # the outbox retried after a lost response
    assert len(receiver.attempts) == 2
    assert len(receiver.delivered) == 1


async def test_client_error_is_not_retried(receiver: Receiver, sleeps: Sleeps) -> None:
    receiver.script = [400]
    async with WebhookNotifier(receiver.url, SECRET, sleep=sleeps) as notifier:
        with pytest.raises(DeliveryError, match="refused with HTTP 400") as info:
            await notifier.notify(make_record())
    assert info.value.retryable is False
    assert len(receiver.attempts) == 1
    assert receiver.delivered == {}
    assert sleeps.delays == []


async def test_wrong_secret_is_refused_by_the_receiver(receiver: Receiver, sleeps: Sleeps) -> None:
    async with WebhookNotifier(receiver.url, "not-the-secret", sleep=sleeps) as notifier:
        with pytest.raises(DeliveryError, match="HTTP 401") as info:
            await notifier.notify(make_record())
    assert info.value.retryable is False
    assert receiver.attempts[0].signature_error is not None
    assert "mismatch" in receiver.attempts[0].signature_error
    assert receiver.delivered == {}


async def test_too_many_requests_is_retried_after_retry_after(
    receiver: Receiver, sleeps: Sleeps
) -> None:
    receiver.script = [(429, {"Retry-After": "3"}), 200]
    async with WebhookNotifier(receiver.url, SECRET, sleep=sleeps) as notifier:
        ref = await notifier.notify(make_record())
    assert ref == {"status_code": 200, "attempts": 2}
    assert sleeps.delays == [3.0]


async def test_retry_after_is_capped(receiver: Receiver, sleeps: Sleeps) -> None:
    receiver.script = [(429, {"Retry-After": "86400"}), 200]
    async with WebhookNotifier(receiver.url, SECRET, sleep=sleeps, max_backoff=5) as notifier:
        await notifier.notify(make_record())
    assert sleeps.delays == [5.0]


async def test_persistent_server_errors_give_the_delivery_back(
    receiver: Receiver, sleeps: Sleeps
) -> None:
    receiver.script = [503, 503, 503]
    notifier = WebhookNotifier(receiver.url, SECRET, sleep=sleeps, max_attempts=3)
    try:
        with pytest.raises(DeliveryError, match="failed after 3 attempts; last: HTTP 503") as info:
            await notifier.notify(make_record())
    finally:
        await notifier.aclose()
    assert info.value.retryable is True
    assert len(receiver.attempts) == 3
    assert len(sleeps.delays) == 2
    assert receiver.delivered == {}


async def test_a_server_that_never_answers_times_out(receiver: Receiver, sleeps: Sleeps) -> None:
    receiver.script = ["hang", "hang"]
    async with WebhookNotifier(
        receiver.url, SECRET, sleep=sleeps, timeout=0.2, max_attempts=2
    ) as notifier:
        with pytest.raises(DeliveryError, match="ReadTimeout") as info:
            await notifier.notify(make_record())
    assert info.value.retryable is True
    assert isinstance(info.value.__cause__, httpx.TimeoutException)
    assert len(receiver.attempts) == 2
    assert len(sleeps.delays) == 1


async def test_connection_refused_is_retried(sleeps: Sleeps) -> None:
    # A bound socket that never listens: connecting to it is refused, and no one else
    # can take the port while the test runs.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
        async with WebhookNotifier(url, SECRET, sleep=sleeps, max_attempts=3) as notifier:
            with pytest.raises(DeliveryError, match="ConnectError") as info:
                await notifier.notify(make_record())
    assert info.value.retryable is True
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert len(sleeps.delays) == 2


async def test_on_resolved_posts_the_outcome(receiver: Receiver, sleeps: Sleeps) -> None:
    record = resolved(make_record(), Status.APPROVED, {"type": "approve"})
    async with WebhookNotifier(
        receiver.url, SECRET, sleep=sleeps, decision_url="https://app.example/d"
    ) as notifier:
        assert await notifier.on_resolved(record) is None
    [attempt] = receiver.attempts
    assert attempt.signature_error is None
    assert attempt.headers["idempotency-key"] == "req-1:approval.resolved"
    body = json.loads(attempt.body)
    assert body["event"] == "approval.resolved"
    assert body["request"]["status"] == "approved"
    assert body["request"]["decision"] == {"type": "approve"}
    assert body["request"]["decided_by"] == "telegram:42 (@alice)"
    assert body["request"]["decided_at"] == "2026-01-02T03:10:00Z"
    assert body["decision_url"] is None  # nothing left to decide
    assert body["decision_token"] is None


async def test_on_resolved_failure_raises_for_the_outbox(
    receiver: Receiver, sleeps: Sleeps
) -> None:
    receiver.script = [404]
    record = resolved(make_record(), Status.APPROVED, {"type": "approve"})
    async with WebhookNotifier(receiver.url, SECRET, sleep=sleeps) as notifier:
        with pytest.raises(DeliveryError) as info:
            await notifier.on_resolved(record)
    assert info.value.retryable is False


async def test_rotation_signs_with_every_secret(receiver: Receiver, sleeps: Sleeps) -> None:
    receiver.secret = "old"  # a receiver that has not rotated yet
    async with WebhookNotifier(receiver.url, ["new", "old"], sleep=sleeps) as notifier:
        await notifier.notify(make_record())
    [attempt] = receiver.attempts
    assert attempt.signature_error is None
    assert attempt.headers["webhook-signature"].count("v1,") == 2
    body = json.loads(attempt.body)
    verify_decision_token("new", "req-1", body["decision_token"])  # the newest secret


def test_decision_url_template() -> None:
    notifier = WebhookNotifier(
        "https://hooks.example/x",
        SECRET,
        decision_url="https://app.example/decide/{request_id}/form",
    )
    body = notifier.build_body("approval.requested", make_record("id with/slash"))
    assert body["decision_url"] == "https://app.example/decide/id%20with%2Fslash/form"


def test_no_decision_url_still_gives_a_token() -> None:
    body = WebhookNotifier("https://hooks.example/x", SECRET).build_body(
        "approval.requested", make_record()
    )
    assert body["decision_url"] is None
    verify_decision_token(SECRET, "req-1", body["decision_token"])


async def test_mock_transport_and_shared_client() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202)

    notifier = WebhookNotifier(
        "https://hooks.example/x", SECRET, transport=httpx.MockTransport(handler)
    )
    assert await notifier.notify(make_record()) == {"status_code": 202, "attempts": 1}
    await notifier.aclose()
    assert seen[0].url == "https://hooks.example/x"
    verify_signature(seen[0].content, seen[0].headers, SECRET)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as shared:
        async with WebhookNotifier("https://hooks.example/y", SECRET, client=shared) as n2:
            await n2.notify(make_record())
        assert not shared.is_closed  # not ours to close
        await shared.post("https://hooks.example/z")
    assert len(seen) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "ftp://example/x"}, "absolute http"),
        ({"url": "/relative"}, "absolute http"),
        ({"secret": ""}, "non-empty secret"),
        ({"secret": ["new", ""]}, "non-empty secret"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"timeout": 0}, "timeout must be positive"),
        ({"decision_url": "not a url"}, "decision_url"),
        ({"client": "placeholder", "transport": "placeholder"}, "either client or transport"),
    ],
)
def test_bad_configuration(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"url": "https://hooks.example/x", "secret": SECRET}
    if kwargs.get("client") == "placeholder":
        kwargs = {
            "client": httpx.AsyncClient(),
            "transport": httpx.MockTransport(lambda r: httpx.Response(200)),
        }
    args.update(kwargs)
    with pytest.raises(ConfigurationError, match=message):
        WebhookNotifier(**args)


def test_repr_hides_the_secret() -> None:
    assert SECRET not in repr(WebhookNotifier("https://hooks.example/x", SECRET))
