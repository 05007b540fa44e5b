"""A client of the Loopgate HTTP API with nothing but httpx, as any language could write it.

It registers a session, asks a question with options, and long-polls until a person
answers (on Telegram, with ``loopgate-lc approve``, or through ``POST /hitl/respond`` from
your own UI). Requests are the seed Loopgate server's, so this client works against both.

    loopgate-lc serve                      # in another terminal (add TELEGRAM_BOT_TOKEN...)
    python examples/http_client.py         # then answer with `loopgate-lc approve ID ...`
    python examples/http_client.py --auto  # starts a server in-process and answers itself
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import httpx


class LoopgateError(Exception):
    """An error the API answered with: ``code`` is stable, ``message`` for people."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        error = body.get("error", {})
        self.status, self.code = status, error.get("code", "unknown")
        self.details = error.get("details", {})
        super().__init__(f"{status} {self.code}: {error.get('message', body)}")


class LoopgateClient:
    """The few calls an agent needs. Only httpx, only JSON."""

    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # the read timeout must outlast the long poll's `wait`
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=70.0)

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.http.request(method, path, **kwargs)
        if response.is_error:
            raise LoopgateError(response.status_code, response.json())
        return dict(response.json())

    def register(self, session_id: str, client_id: str, telegram_id: int | None = None) -> None:
        try:
            self._call("POST", "/hitl/register", json={
                "session_id": session_id, "client_id": client_id, "telegram_id": telegram_id})
        except LoopgateError as exc:
            if exc.code != "session_exists":  # registered on an earlier run: fine
                raise

    def ask(self, session_id: str, message: str, *, options: list[Any] | None = None,
            request_type: str = "approval", timeout_seconds: float = 300) -> dict[str, Any]:
        return self._call("POST", "/hitl/request", json={
            "session_id": session_id, "client_id": "http-example", "message": message,
            "options": options or [], "request_type": request_type,
            "timeout_seconds": timeout_seconds})

    def wait(self, request_id: str, *, limit: float = 600) -> dict[str, Any]:
        """Long-poll until the request is answered (or times out server-side)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            result = self._call("GET", "/hitl/poll",
                                params={"request_id": request_id, "wait": 30})
            if result["completed"]:
                return result
        raise TimeoutError(f"request {request_id} still pending after {limit}s")

    def respond(self, request_id: str, *, approved: bool | None = None,
                response: str | None = None, actor: str | None = None) -> dict[str, Any]:
        """Decide a request from your own UI (the simple form; see also `decision`)."""
        return self._call("POST", "/hitl/respond", json={
            "request_id": request_id, "approved": approved, "response": response,
            "actor": actor})

    def pending(self, session_id: str | None = None) -> list[dict[str, Any]]:
        params = {"session_id": session_id} if session_id else {}
        return list(self._call("GET", "/hitl/pending", params=params)["requests"])


# --- offline mode only: a server in this process, and a reviewer who answers -------------


@contextmanager
def local_server() -> Iterator[str]:
    """Serve loopgate-lc on a free 127.0.0.1 port (what `loopgate-lc serve` does)."""
    from loopgate_lc import Loopgate
    from loopgate_lc.background import BackgroundServer
    from loopgate_lc.server import create_app

    with BackgroundServer(create_app(Loopgate(store="memory://"), close_gateway=True)) as live:
        yield live.url


def reviewer(client: LoopgateClient, session_id: str, choice: str) -> threading.Thread:
    """A person in "your own UI": sees the pending request and picks an option."""
    def review() -> None:
        for _ in range(1500):
            for request in client.pending(session_id):
                client.respond(request["request_id"], response=choice, actor="reviewer:kim")
                return
            time.sleep(0.02)

    thread = threading.Thread(target=review, daemon=True)
    thread.start()
    return thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("LOOPGATE_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--auto", action="store_true",
                        help="start a server in-process and answer as a reviewer")
    args = parser.parse_args()

    with local_server() if args.auto else nullcontext(args.url) as url:
        client = LoopgateClient(url, api_key=os.environ.get("LOOPGATE_API_KEY"))
        client.register("ci-pipeline", client_id="build-agent")

        request = client.ask(
            "ci-pipeline", "Build #1287 passed. Deploy it to production?",
            request_type="choice",
            # plain strings: only a whole affirmative label ("Deploy now") approves
            options=["Deploy now", "Wait for the morning", "Cancel"])
        print(f"asked: request {request['request_id']} is {request['status']}")
        if args.auto:
            reviewer(client, "ci-pipeline", "Deploy now")
        else:
            print(f"answer it: loopgate-lc approve {request['request_id']} "
                  "--choice 'Deploy now' --store <the store `loopgate-lc serve` printed "
                  "when it started>   (or tap it in Telegram)")

        result = client.wait(request["request_id"])
        print(f"answer: {result['response']!r} by {result['responded_by']} -> "
              f"approved={result['approved']}")
        if result["approved"]:
            print("deploying build #1287 ...")

        try:  # a second answer is refused and told who decided first
            client.respond(request["request_id"], approved=False, actor="late-larry")
        except LoopgateError as exc:
            print(f"a late answer: {exc.code} ({exc.details.get('decided_by')} decided first)")


if __name__ == "__main__":
    main()
