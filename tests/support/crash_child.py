"""Processes that tests kill with SIGKILL.

``python -m tests.support.crash_child STORE CHECKPOINTS LOG N``: a server that files N
pending approvals and then waits to be killed.

``python -m tests.support.crash_child churn STORE [SCHEMA]``: a gateway that files and
decides requests in a loop, printing a line after each step, until it is killed.

``python -m tests.support.crash_child showing STORE``: a gateway that files one request
and is still showing it (its notifier never returns) when it is killed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from loopgate_lc.gateway import Loopgate
from loopgate_lc.stores import Store, open_store

#: The churning gateway's notifier, by name.
CHANNEL = "shown"


def build(checkpoints: str, log: str) -> Any:
    # imported here, not at the top: the churning and showing gateways never build an
    # agent, and each of the many processes the crash tests start would pay for
    # importing LangChain and LangGraph (about a second of CPU) for nothing
    from langchain.agents import create_agent
    from langchain_core.tools import tool
    from langgraph.checkpoint.sqlite import SqliteSaver

    from loopgate_lc import guard
    from loopgate_lc.testing import ScriptedChatModel, ai, call

    @tool
    def deploy(build: str) -> str:
        """Deploy one build."""
        with Path(log).open("a") as fh:
            fh.write(f"{build}\n")
        return f"deployed {build}"

    def first_turn(messages: list[Any]) -> Any:
        build = str(messages[0].content)
        return ai("", call("deploy", f"c-{build}", build=build))

    saver = SqliteSaver(sqlite3.connect(checkpoints, check_same_thread=False))
    return create_agent(ScriptedChatModel(script=[first_turn, "done"]),
                        tools=[guard(deploy)], checkpointer=saver)


def main(store: str, checkpoints: str, log: str, count: int) -> None:
    gate = Loopgate(store=store).open()
    gate.register_graph("deployer", build(checkpoints, log))
    for i in range(count):
        gate.start("deployer", {"messages": [("user", f"b{i:02d}")]},
                   {"configurable": {"thread_id": f"thread-{i:02d}"}})
    for _ in range(3000):
        if len(gate.pending()) == count:
            break
        time.sleep(0.01)
    print(f"READY {len(gate.pending())}", flush=True)
    time.sleep(600)  # killed long before this


class Shown:
    """A notifier that shows every request at once and says where."""

    name = CHANNEL

    def __init__(self) -> None:
        self.count = 0

    async def notify(self, request: Any) -> Any:
        self.count += 1
        return {"message_id": self.count}

    async def on_resolved(self, request: Any) -> None:
        return None


def store_of(url: str, schema: str | None) -> Store:
    if schema is None:
        return open_store(url)
    from loopgate_lc.stores.postgres import PostgresStore

    return PostgresStore(url, schema=schema, max_size=4)


def churn(url: str, schema: str | None) -> None:
    """File and decide (approve, reject, cancel, or leave to time out) until killed."""
    gate = Loopgate(store=store_of(url, schema), notifiers=[Shown()], poll_interval=0.05,
                    retry_backoff=0.01).open()
    print("READY", flush=True)
    for i in range(1_000_000):
        record = gate.submit(f"change {i}?", timeout=0.2 if i % 4 == 3 else None)
        print("filed", record.id, flush=True)
        if i % 4 == 0:
            gate.respond(record.id, {"type": "approve"}, actor="ana")
        elif i % 4 == 1:
            gate.respond(record.id, {"type": "reject", "message": "no"}, actor="ana")
        elif i % 4 == 2:
            gate.cancel(record.id, actor="ana", reason="changed my mind")
        print("decided", record.id, flush=True)


class Stuck:
    """A notifier whose delivery never ends (a chat that hangs), saying when it began."""

    name = CHANNEL

    async def notify(self, request: Any) -> Any:
        print("showing", request.id, flush=True)
        await asyncio.Event().wait()

    async def on_resolved(self, request: Any) -> None:
        return None


def showing(url: str) -> None:
    """File one request and hang while showing it, until killed."""
    gate = Loopgate(store=url, notifiers=[Stuck()]).open()
    gate.submit("deploy?")
    time.sleep(600)  # killed long before this


if __name__ == "__main__":
    if sys.argv[1] == "churn":
        churn(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    elif sys.argv[1] == "showing":
        showing(sys.argv[2])
    else:
        main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
