"""6. A graph on LangGraph Server: pause to notification, decision to resumed.

A real ``langgraph dev`` (``langgraph-cli[inmem]``) on 127.0.0.1 serves ``create_agent``
with a guarded tool; a gateway (SQLite store) with a ``LangGraphBridge`` watches it.
Measured, alternating, on one server:

- pause saved on the server (the interrupted thread's ``updated_at``) -> the bridge's
  notifier has sent the notification, when the run was created with the bridge's run
  webhook, and when the bridge only searches (every 2 s, the default);
- a person's decision (``Loopgate.respond``) -> the guarded tool's body runs on the
  server (the bridge's ``runs.create`` picked up and resumed);
- the anchors, measured on the same server in the same run: the server's own run pickup
  (``runs.create`` -> the graph's first node runs, for the same runs), and a resume written
  by hand with the SDK (``runs.create(command={"resume": ...})`` -> the tool runs) on a
  thread no bridge watches.

Times cross two processes on one machine, so they are wall-clock (``time.time_ns``).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._harness import Config, Row, Section, median, percentile
from loopgate_lc.background import BackgroundServer
from loopgate_lc.gateway import Loopgate
from loopgate_lc.langgraph_server import Deployment, LangGraphBridge
from loopgate_lc.server import create_app
from loopgate_lc.stores.base import RequestRecord
from loopgate_lc.testing.langgraph_dev import LangGraphDev, free_port

AGENT = Path(__file__).resolve().parent / "_served_agent.py"
LABELS = {
    "pickup": "LangGraph Server's own run pickup: runs.create -> first node runs",
    "webhook": "pause saved on the server -> notification sent (run webhook)",
    "polling": "pause saved on the server -> notification sent (search every 2 s, no webhook)",
    "resume": "decision -> the guarded tool runs on the server",
    "by_hand": "hand-written SDK resume: runs.create(command=resume) -> the tool runs",
}
ANCHORS = {"pickup": "pickup", "webhook": "pickup", "polling": "pickup",
           "resume": "by_hand", "by_hand": "by_hand"}


class _Sent:
    """A notifier that notes when each notification went out."""

    name = "bench"

    def __init__(self) -> None:
        self.sent: dict[str, int] = {}

    async def notify(self, request: RequestRecord) -> None:
        self.sent[request.id] = time.time_ns()

    async def on_resolved(self, request: RequestRecord) -> None:
        return None


def _notes(log: Path) -> dict[tuple[str, str], int]:
    if not log.exists():
        return {}
    found = {}
    for line in log.read_text().splitlines():
        kind, ticket, at = line.split()
        found[(kind, ticket)] = int(at)
    return found


async def _until(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


async def _sample(gateway: Loopgate, bridge: LangGraphBridge, client: Any, sent: _Sent,
                  log: Path, name: str, assistant: str) -> dict[str, float]:
    ticket = uuid.uuid4().hex[:10]
    thread_id = (await client.threads.create())["thread_id"]
    created = time.time_ns()
    hook = bridge.webhook_url(name) if name == "webhook" else None
    await client.runs.create(thread_id, assistant, webhook=hook,
                             input={"messages": [{"role": "user", "content": ticket}]})

    async def filed() -> RequestRecord | None:
        found = await gateway.apending(thread_id=thread_id)
        return found[0] if found and found[0].id in sent.sent else None

    record = await _until(filed, "the notification")
    thread = await client.threads.get(thread_id)
    paused = int(datetime.fromisoformat(thread["updated_at"]).timestamp() * 1e9)
    decided = time.time_ns()
    await gateway.arespond(record.id, {"type": "approve"}, actor="bench")

    async def ran() -> int | None:
        return _notes(log).get(("ran", ticket))

    resumed = await _until(ran, "the resumed tool")
    started = _notes(log)[("started", ticket)]
    return {"pickup": (started - created) / 1e6, name: (sent.sent[record.id] - paused) / 1e6,
            "resume": (resumed - decided) / 1e6}


async def _by_hand(client: Any, log: Path, assistant: str) -> float:
    """The anchor for a resume: the same pause, resumed with the SDK directly."""
    ticket = uuid.uuid4().hex[:10]
    thread_id = (await client.threads.create())["thread_id"]
    await client.runs.create(thread_id, assistant,
                             input={"messages": [{"role": "user", "content": ticket}]})

    async def paused() -> dict[str, Any] | None:
        thread = await client.threads.get(thread_id)
        return thread if thread["status"] == "interrupted" else None

    thread = await _until(paused, "the pause")
    [interrupt] = [i for group in thread["interrupts"].values() for i in group]
    decided = time.time_ns()
    await client.runs.create(thread_id, assistant,
                             command={"resume": {interrupt["id"]: {"type": "approve"}}})

    async def ran() -> int | None:
        return _notes(log).get(("ran", ticket))

    ran_at: int = await _until(ran, "the resumed tool")
    return (ran_at - decided) / 1e6


async def _measure(folder: Path, samples: int) -> dict[str, list[float]]:
    log = folder / "notes.log"
    out: dict[str, list[float]] = {k: [] for k in LABELS}
    with LangGraphDev(folder / "server", {"agent": f"{AGENT}:graph"},
                      env={"LOOPGATE_BENCH_LOG": str(log)}) as server:
        from langgraph_sdk import get_client

        client = get_client(url=server.url, api_key=None)
        hooked = (await client.assistants.create(graph_id="agent"))["assistant_id"]
        searched = (await client.assistants.create(graph_id="agent"))["assistant_id"]
        unwatched = (await client.assistants.create(graph_id="agent"))["assistant_id"]
        sent = _Sent()
        gateway = Loopgate(f"sqlite:///{folder / 'loopgate.db'}", notifiers=[sent],
                           poll_interval=0.2)
        port = free_port()
        bridge = LangGraphBridge(gateway, [
            Deployment(url=server.url, name="webhook", graphs=(hooked,), poll_interval=600),
            Deployment(url=server.url, name="polling", graphs=(searched,))],
            public_url=f"http://127.0.0.1:{port}")
        bridge.drivers["polling"].webhook_url = None  # this one learns only by searching
        async with gateway, BackgroundServer(create_app(gateway, bridge=bridge, mcp=False),
                                             port=port):
            await _sample(gateway, bridge, client, sent, log, "webhook", hooked)  # warm-up
            for rep in range(samples):
                order = [("webhook", hooked), ("polling", searched), ("by_hand", unwatched)]
                for name, assistant in order[rep % 3:] + order[:rep % 3]:
                    if name == "by_hand":
                        out[name].append(await _by_hand(client, log, assistant))
                        continue
                    for key, value in (await _sample(gateway, bridge, client, sent, log,
                                                     name, assistant)).items():
                        out[key].append(value)
    return out


def run(config: Config) -> Section:
    began = time.perf_counter()
    samples = config.reps(15, 1)
    with tempfile.TemporaryDirectory(prefix="loopgate-bench-lgs-") as tmp:
        values = asyncio.run(_measure(Path(tmp), samples))
    section = Section(
        key="langgraph_server",
        title="6. LangGraph Server: pause to notification, decision to resumed",
        goal="with run webhooks, pause -> notification p50 below the server's own run "
             "pickup p50; decision -> resumed p50 within 1.2x a hand-written SDK resume",
    )
    for key, label in LABELS.items():
        value = median(values[key])
        base = median(values[ANCHORS[key]])
        section.rows.append(Row(label, value, "ms", p99=percentile(values[key], 99),
                                anchor=LABELS[ANCHORS[key]],
                                ratio=value / base if base else None,
                                samples=len(values[key])))
    met = (median(values["webhook"]) < median(values["pickup"])
           and median(values["resume"]) <= 1.2 * median(values["by_hand"]))
    section.verdict = "met" if met else "not met"
    section.notes.append(
        "Wall-clock ms on one machine (the server and the bridge are two processes). "
        "The pause is the interrupted thread's updated_at (when the server saved it); "
        "the notification is the notifier's notify() call; the resume is the tool body "
        "running in the server. The inmem server picks runs up from its queue (it sleeps "
        "0.5 s when idle), so any resume, by hand or by the bridge, pays that pickup; "
        "the bridge adds one thread read and one runs.create. Searching adds up to its "
        "interval, and the webhook does not wait for it.")
    section.seconds = time.perf_counter() - began
    return section
