"""``serve`` stays up when Telegram is unreachable at start (the API serves, /health says
``degraded`` and why, Telegram reconnects in the background), and a bad token or store
is one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from loopgate_lc.fake_telegram import FakeBotAPI
from loopgate_lc.notifiers.telegram import TelegramNotifier
from loopgate_lc.testing.langgraph_dev import free_port
from tests.server.conftest import ServeFn

CHAT = 4242


def test_telegram_unreachable_at_start_degrades_then_recovers(serve: ServeFn) -> None:
    port = free_port()
    fake = FakeBotAPI(port=port)
    telegram = TelegramNotifier(fake.token, base_url=f"http://127.0.0.1:{port}/bot",
                                default_chat_id=CHAT, retry_backoff=0.05, poll_timeout=1)
    live = serve(telegram=telegram)  # used to fail: "Application startup failed"
    with httpx.Client(base_url=live.url, timeout=10) as client:
        health = client.get("/health").json()
        assert health["status"] == "degraded"
        assert any(r.startswith("telegram: cannot reach Telegram") for r in health["reasons"])
        # the API serves meanwhile; the request waits in the outbox for Telegram
        client.post("/hitl/register", json={"session_id": "s"})
        created = client.post("/hitl/request", json={"session_id": "s", "message": "go?"})
        assert created.status_code == 200
        with fake:
            fake.wait_for(lambda: client.get("/health").json()["status"] == "ok",
                          timeout=30)
            sent = fake.wait_for(lambda: fake.messages(CHAT), timeout=30)
        assert "go?" in sent[0]["text"]


def _serve(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loopgate_lc.cli", "serve", "--port", str(free_port()),
         *args], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, **env})


def test_a_refused_token_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    with FakeBotAPI() as fake:
        done = _serve(tmp_path, "--store", f"sqlite:///{tmp_path / 'x.db'}",
                      env={"TELEGRAM_BOT_TOKEN": "999:wrong", "TELEGRAM_DEFAULT_CHAT_ID": "1",
                           "TELEGRAM_API_BASE_URL": fake.base_url})
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: Telegram refused the bot token")
    assert "Traceback" not in done.stderr


def test_a_bad_store_path_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    done = _serve(tmp_path, "--store", f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}",
                  env={})
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: cannot open SQLite database")
    assert "Traceback" not in done.stderr
