"""A server process that files N pending approvals and then waits to be killed.

``python -m tests.support.crash_child STORE CHECKPOINTS LOG N``
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.tools import tool
from langgraph.checkpoint.sqlite import SqliteSaver

from loopgate_lc import guard
from loopgate_lc.gateway import Loopgate
from loopgate_lc.testing import ScriptedChatModel, ai, call


def build(checkpoints: str, log: str) -> Any:
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


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
