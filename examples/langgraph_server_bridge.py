"""Approvals for an agent deployed on LangGraph Server, the bridge in its own process.

The agent (``langgraph_deployment/agent.py``) runs on the server; this process holds a
``Loopgate`` and a ``LangGraphBridge`` watching the deployment: the paused run is filed,
shown to a person, and resumed through the server's API once they decide.

    python examples/langgraph_server_bridge.py --auto     # starts langgraph dev, decides itself
    python examples/langgraph_server_bridge.py --url http://127.0.0.1:2024
        # your deployment (serve langgraph_deployment/ with `langgraph dev`); answer with
        # the loopgate-lc command it prints, from another terminal

The same bridge as a command: ``loopgate-lc serve --langgraph prod=URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

from langgraph_sdk import get_client

from loopgate_lc import LogNotifier, Loopgate
from loopgate_lc.langgraph_server import Deployment, LangGraphBridge

sys.path.insert(0, str(Path(__file__).resolve().parent / "langgraph_deployment"))


async def main(url: str, store: str, auto: bool) -> None:
    gateway = Loopgate(store, notifiers=[LogNotifier()], poll_interval=0.2)
    LangGraphBridge(gateway, [Deployment(url=url, name="prod", graphs=("agent",),
                                         poll_interval=0.5)])
    async with gateway:
        client = get_client(url=url, api_key=None)
        thread = await client.threads.create()
        thread_id = thread["thread_id"]
        await client.runs.create(thread_id, "agent", input={
            "messages": [{"role": "user", "content": "please deploy 1.4.2"}]})
        print(f"started a run on {url} (thread {thread_id})")
        request = None
        for _ in range(600):  # the bridge files the pause within a search or two
            pending = await gateway.apending(thread_id=thread_id)
            if pending:
                request = pending[0]
                break
            await asyncio.sleep(0.1)
        if request is None:
            raise SystemExit("the pause was not filed within a minute")
        print(f"filed: {request.payload['name']} {request.payload['args']} "
              f"(request {request.id})")
        if auto:
            for _ in range(200):  # a person answers what they were shown: wait until then
                if any(e.event == "notified"
                       for e in await gateway.aaudit(request_id=request.id)):
                    break
                await asyncio.sleep(0.05)
            await gateway.arespond(request.id, {"type": "approve"}, actor="ana")
        else:
            print(f"answer it: loopgate-lc approve {request.id} --store {store}", flush=True)
        decided = await gateway.await_decision(request.id)
        print(f"decided: {decided.status.value} by {decided.decided_by}")
        for _ in range(1200):
            state = await client.threads.get(thread_id)
            if state["status"] == "idle":
                break
            await asyncio.sleep(0.1)
        print(f"agent: {state['values']['messages'][-1]['content']}")
        events = [e.event for e in await gateway.aaudit(request_id=request.id)]
        print("audit:", ", ".join(events))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--auto", action="store_true",
                        help="start langgraph dev here and approve as 'ana'")
    parser.add_argument("--url", help="your deployment's URL")
    parser.add_argument("--store", default="sqlite:///loopgate.db")
    args = parser.parse_args()
    if not args.auto and not args.url:
        parser.error("give --url of your deployment, or --auto")
    with contextlib.ExitStack() as stack:
        url = args.url
        if args.auto:
            from dev_server import langgraph_dev

            url = stack.enter_context(langgraph_dev())
        asyncio.run(main(url, "memory://" if args.auto else args.store, args.auto))
