"""A small guarded agent whose tool bodies append to a file, so a test can count
executions across processes. Run as a script: ``python -m tests.support.deploy_graph
DB LOG start|resume THREAD [INTERRUPT_ID DECISION_JSON]``."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command

from loopgate_lc import ApprovalPolicy, PolicySet, RiskLevel, guard
from loopgate_lc.testing import ScriptedChatModel, ai, call


def build(db: str, log: str) -> Any:
    @tool
    def deploy(environment: str) -> str:
        """Deploy the current build."""
        with Path(log).open("a") as fh:
            fh.write(f"deploy {environment}\n")
        return f"deployed to {environment}"

    policies = PolicySet([ApprovalPolicy("deploys", "deploy", 0.0, RiskLevel.DATA_MODIFICATION)])
    model = ScriptedChatModel(script=[
        ai("", call("deploy", "d1", environment="production"),
           call("deploy", "d2", environment="staging")),
        "done",
    ])
    saver = SqliteSaver(sqlite3.connect(db, check_same_thread=False))
    return create_agent(model, tools=[guard(deploy, policies=policies)], checkpointer=saver)


def main(argv: list[str]) -> None:
    db, log, action, thread = argv[:4]
    graph = build(db, log)
    config = {"configurable": {"thread_id": thread}}
    if action == "start":
        result = graph.invoke({"messages": [HumanMessage("ship")]}, config, version="v2")
    else:
        result = graph.invoke(Command(resume={argv[4]: json.loads(argv[5])}), config,
                              version="v2")
    print(json.dumps([{"id": i.id, "call": i.value["tool_call_id"]} for i in result.interrupts]))


if __name__ == "__main__":
    main(sys.argv[1:])
