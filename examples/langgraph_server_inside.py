"""Approvals served by the LangGraph Server deployment itself.

``langgraph_deployment/langgraph.inside.json`` names ``loopgate_app.py:app`` as the
deployment's HTTP app: the one server runs the agent, the ``/loopgate/hitl`` API (and the
Telegram bot when ``TELEGRAM_BOT_TOKEN`` is set), and resumes its own threads through the
SDK. This script starts a run and decides it over the HTTP API, as your UI would.

    python examples/langgraph_server_inside.py --auto   # starts langgraph dev, decides itself
    python examples/langgraph_server_inside.py --url http://127.0.0.1:2024
        # after `cd examples/langgraph_deployment && langgraph dev --config
        # langgraph.inside.json`; answer with the curl command it prints
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import httpx
from langgraph_sdk import get_sync_client

sys.path.insert(0, str(Path(__file__).resolve().parent / "langgraph_deployment"))


def main(url: str, auto: bool) -> None:
    client = get_sync_client(url=url, api_key=None)
    thread_id = client.threads.create()["thread_id"]
    client.runs.create(thread_id, "agent", input={
        "messages": [{"role": "user", "content": "please deploy 2.0.0"}]})
    print(f"started a run on {url} (thread {thread_id})")
    with httpx.Client(base_url=f"{url}/loopgate", timeout=10) as http:
        request = None
        for _ in range(600):
            pending = http.get("/hitl/pending").json()["requests"]
            mine = [r for r in pending if "2.0.0" in r["message"]]
            if mine:
                request = mine[0]
                break
            time.sleep(0.1)
        if request is None:
            raise SystemExit("the deployment did not file the pause within a minute")
        request_id = request["request_id"]
        print(f"the deployment filed request {request_id}")
        if auto:
            answer = http.post("/hitl/respond", json={
                "request_id": request_id, "decision": {"type": "approve"}, "actor": "ana"})
            answer.raise_for_status()
        else:
            print(f"answer it: curl -X POST {url}/loopgate/hitl/respond -H 'Content-Type: "
                  f"application/json' -d '{{\"request_id\": \"{request_id}\", "
                  f"\"decision\": {{\"type\": \"approve\"}}}}'", flush=True)
        for _ in range(3000):
            state = client.threads.get(thread_id)
            if state["status"] == "idle":
                break
            time.sleep(0.1)
        print(f"agent: {state['values']['messages'][-1]['content']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--auto", action="store_true",
                        help="start langgraph dev here and approve as 'ana'")
    parser.add_argument("--url", help="your deployment's URL (serving loopgate_app.py)")
    args = parser.parse_args()
    if not args.auto and not args.url:
        parser.error("give --url of your deployment, or --auto")
    with contextlib.ExitStack() as stack:
        url = args.url
        if args.auto:
            from dev_server import langgraph_dev

            folder = stack.enter_context(tempfile.TemporaryDirectory())
            url = stack.enter_context(langgraph_dev(
                "langgraph.inside.json", LOOPGATE_STORE=f"sqlite:///{folder}/loopgate.db"))
        main(url, args.auto)
