"""5. From a Telegram tap to the run going on.

Real python-telegram-bot long-polls ``FakeBotAPI`` (a real HTTP fake of the Bot API on
127.0.0.1); the gateway keeps its requests in SQLite (the default store) and serves the
Loopgate HTTP API under uvicorn. A person's tap is ``FakeBotAPI.tap`` on the request's
"Approve" button. Measured, in alternating batches:

- loopgate_lc: an agent started in the background (``register_graph``/``start``) pauses
  at a guarded tool; tap -> the tool body runs (the graph has resumed);
- the anchor, a Loopgate-style client as the Loopgate guide writes it: ``POST
  /hitl/request``, then ``GET /hitl/poll`` every 2 seconds; tap -> it sees the answer;
- the same client with loopgate_lc's long poll (``GET /hitl/poll?wait=30``).

Taps come at random moments, as a person's would. Goal: the tap-to-resume latency far
below the 2-second poller's (p50 and p99 both).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from langchain.agents import create_agent
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from bench._harness import Config, Row, Section, median, percentile
from loopgate_lc import guard
from loopgate_lc.background import BackgroundServer as LiveServer
from loopgate_lc.fake_telegram import FakeBotAPI
from loopgate_lc.gateway import Loopgate
from loopgate_lc.notifiers.telegram import TelegramNotifier
from loopgate_lc.server import create_app
from loopgate_lc.stores.sqlite import SQLiteStore
from loopgate_lc.testing import ScriptedChatModel, ai, call

CHAT = 42
PERSON = {"id": CHAT, "username": "ann"}
SESSION = "ops"
POLL_EVERY = 2.0
SMOKE_POLL_EVERY = 0.05  # tests never sleep for seconds; smoke figures mean nothing


def labels(poll_every: float) -> dict[str, str]:
    return {
        "graph": "loopgate_lc: tap -> guarded tool resumed",
        "poll2": f"Loopgate-style client polling /hitl/poll every {poll_every:g} s: "
                 "tap -> seen",
        "longpoll": "client long-polling /hitl/poll?wait=30: tap -> seen",
    }


def _wait(check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:  # bounded by the deadline
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.001)


class _Rig:
    """Fake Telegram, the gateway with the real Telegram notifier, and the HTTP API."""

    def __init__(self, workdir: Path, poll_every: float) -> None:
        self.poll_every = poll_every
        self.fake = FakeBotAPI().start()
        self.telegram = TelegramNotifier(self.fake.token, base_url=self.fake.base_url,
                                         poll_timeout=10)
        self.gate = Loopgate(store=SQLiteStore(workdir / "loopgate.db"),
                             notifiers=[self.telegram]).open()
        self.gate.register_session(SESSION, client_id="bench", telegram_id=CHAT)
        self.resumed: dict[str, int] = {}
        self.finished = threading.Event()
        self.gate.register_graph("deployer", self._agent())
        self.live = LiveServer(create_app(self.gate, mcp=False)).__enter__()

    def _agent(self) -> Any:
        resumed = self.resumed

        @tool
        def deploy(environment: str, ticket: str) -> str:
            """Deploy the current build."""
            resumed[ticket] = time.perf_counter_ns()
            return f"deployed {ticket} to {environment}"

        def script(messages: list[Any]) -> Any:
            ticket = str(messages[0].content)
            return ai("", call("deploy", f"c-{ticket}", environment="production",
                               ticket=ticket))

        return create_agent(ScriptedChatModel(script=[script, "done"]),
                            tools=[guard(deploy, session_id=SESSION)],
                            checkpointer=InMemorySaver())

    def close(self) -> None:
        self.live.__exit__()
        self.gate.close()
        self.fake.stop()

    def approve_button(self, request_id: str) -> tuple[int, str]:
        """The Telegram message showing ``request_id`` and its Approve button's data."""
        refs = _wait(lambda: self.gate.get(request_id).message_refs.get(self.telegram.name),
                     "the Telegram message")
        message = self.fake.message(int(refs["chat_id"]), int(refs["message_id"]))
        for row in message["reply_markup"]["inline_keyboard"]:
            for button in row:
                if "Approve" in button["text"]:
                    return int(message["message_id"]), str(button["callback_data"])
        raise RuntimeError("the Telegram message has no Approve button")

    def tap(self, request_id: str) -> int:
        message_id, data = self.approve_button(request_id)
        tapped = time.perf_counter_ns()
        self.fake.tap(CHAT, message_id, data, PERSON)
        return tapped

    # the three ways of waiting -----------------------------------------------------------

    def graph_sample(self) -> float:
        ticket = uuid.uuid4().hex[:8]
        thread_id = self.gate.start("deployer", {"messages": [("user", ticket)]},
                                    {"configurable": {"thread_id": f"t-{ticket}"}})
        record = _wait(lambda: self.gate.pending(thread_id=thread_id), "the pause")[0]
        self.approve_button(record.id)  # delivered; a person reads it, then taps
        time.sleep(random.uniform(0.0, 0.05))
        tapped = self.tap(record.id)
        resumed = _wait(lambda: self.resumed.get(ticket), "the resume")
        _wait(lambda: any(e.event == "finished" for e in self.gate.audit(thread_id=thread_id)),
              "the run to finish")
        return float(resumed - tapped) / 1e6

    def client_samples(self, count: int, wait: float) -> list[float]:
        """``count`` clients at once, each filing a request and polling for its answer;
        each request is tapped at a random moment within two poll periods."""
        seen: dict[str, int] = {}
        ids: list[str] = []
        ready = threading.Barrier(count + 1)

        def client() -> None:
            with httpx.Client(base_url=self.live.url, timeout=60) as http:
                answer = http.post("/hitl/request", json={
                    "session_id": SESSION, "client_id": "bench",
                    "message": "Deploy the release?"})
                request_id = answer.json()["request_id"]
                ids.append(request_id)
                ready.wait()
                for _ in range(200):  # bounded: at most 200 polls
                    params: dict[str, Any] = {"request_id": request_id}
                    if wait:
                        params["wait"] = wait
                    status = http.get("/hitl/poll", params=params).json()
                    if status["completed"]:
                        seen[request_id] = time.perf_counter_ns()
                        return
                    if not wait:
                        time.sleep(self.poll_every)

        threads = [threading.Thread(target=client, daemon=True) for _ in range(count)]
        for thread in threads:
            thread.start()
        ready.wait(timeout=30)
        buttons = {request_id: self.approve_button(request_id) for request_id in ids}
        plan = sorted((random.uniform(0.0, 2 * self.poll_every), rid) for rid in ids)
        start = time.monotonic()
        tapped: dict[str, int] = {}
        for at, request_id in plan:
            time.sleep(max(0.0, start + at - time.monotonic()))
            message_id, data = buttons[request_id]
            tapped[request_id] = time.perf_counter_ns()
            self.fake.tap(CHAT, message_id, data, PERSON)
        for thread in threads:
            thread.join(timeout=self.poll_every * 4 + 30)
        missing = [rid for rid in ids if rid not in seen]
        if missing:
            raise RuntimeError(f"{len(missing)} polling clients never saw their answer")
        return [(seen[rid] - tapped[rid]) / 1e6 for rid in ids]


def run(config: Config, workdir: Path | None = None) -> Section:
    import tempfile

    began = time.perf_counter()
    rounds = config.reps(3, 1)
    per_round = config.size(10, 3)
    poll_every = SMOKE_POLL_EVERY if config.smoke else POLL_EVERY
    names = labels(poll_every)
    samples: dict[str, list[float]] = {k: [] for k in names}
    with tempfile.TemporaryDirectory(prefix="loopgate-bench-") as tmp:
        rig = _Rig(Path(workdir or tmp), poll_every)
        try:
            rig.graph_sample()  # warm up every path once
            rig.client_samples(1, wait=30)
            for rnd in range(rounds):
                order = ["graph", "poll2", "longpoll"]
                order = order[rnd % 3:] + order[:rnd % 3]
                for kind in order:
                    if kind == "graph":
                        samples[kind] += [rig.graph_sample() for _ in range(per_round)]
                    else:
                        samples[kind] += rig.client_samples(
                            per_round, wait=30 if kind == "longpoll" else 0)
        finally:
            rig.close()
    anchor = names["poll2"]
    base = median(samples["poll2"])
    section = Section(
        key="telegram",
        title="5. Telegram tap to resumed (python-telegram-bot + FakeBotAPI)",
        goal=f"tap-to-resume p50 and p99 far below a client polling every {poll_every:g} s",
    )
    for kind, values in samples.items():
        value = median(values)
        section.rows.append(Row(names[kind], value, "ms", p99=percentile(values, 99),
                                anchor=anchor, ratio=value / base if base else None,
                                samples=len(values)))
    graph, poll = samples["graph"], samples["poll2"]
    section.verdict = "met" if (percentile(graph, 99) < percentile(poll, 50)) else "not met"
    section.notes.append(
        "Latency in ms from the tap (FakeBotAPI.tap) to the guarded tool's body running "
        "(for loopgate_lc) or to the client holding the answer (for the HTTP clients). "
        f"Clients ran {per_round} at a time, tapped at random moments; all in one process "
        "on loopback. \"Far below\" is read as: loopgate_lc's p99 under the poller's p50.")
    section.seconds = time.perf_counter() - began
    return section
