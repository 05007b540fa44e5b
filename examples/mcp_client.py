"""An MCP client (the official ``mcp`` SDK) asking a person through ``loopgate-lc mcp``.

Any MCP host (Claude Desktop, an IDE, your agent) does the same: start the server over
stdio, call ``request_human_input``, act only if the result says ``approved``. The call
returns when someone answers, in Telegram, with ``loopgate-lc approve``, or over HTTP.

    python examples/mcp_client.py          # answer with the `loopgate-lc approve ...` it prints
    python examples/mcp_client.py --auto   # answers itself, from another process, via the CLI
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from loopgate_lc.locations import absolute_store_url, answer_hint

# `loopgate-lc` as an installed command would do; `python -m` keeps this runnable anywhere.
LOOPGATE_LC = [sys.executable, "-m", "loopgate_lc.cli"]


def result_of(call: Any) -> dict[str, Any]:
    """The tool's JSON result (structured when the server sends it, else the text)."""
    if call.is_error:
        raise RuntimeError(" ".join(getattr(c, "text", "") for c in call.content))
    if call.structured_content is not None:
        return dict(call.structured_content)
    return dict(json.loads(call.content[0].text))


async def first_pending(session: ClientSession) -> dict[str, Any]:
    """Wait (bounded) until the question shows up in the pending list."""
    for _ in range(200):
        pending = result_of(await session.call_tool("list_pending_requests", {}))
        if pending["requests"]:
            return dict(pending["requests"][0])
        await asyncio.sleep(0.05)
    raise TimeoutError("the request never showed up")


async def run(store: str, auto: bool) -> None:
    server = StdioServerParameters(
        command=LOOPGATE_LC[0],
        args=[*LOOPGATE_LC[1:], "mcp", "--store", store, "--poll-interval", "0.2"])
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = await session.list_tools()
        print("tools:", ", ".join(t.name for t in tools.tools))

        # The question blocks until a person answers, so ask it in its own task...
        question = asyncio.create_task(session.call_tool("request_human_input", {
            "message": "Drop the staging database `orders_v1`?",
            "request_type": "confirmation",
            "metadata": {"size": "18 GB", "last_write": "41 days ago"},
            "timeout_seconds": 300,
        }))
        # ...while we look at it from the same session, as a dashboard would.
        request = await first_pending(session)
        request_id = request["request_id"]
        answer = [*LOOPGATE_LC, "approve", request_id, "--store", store]
        if auto:  # "another terminal": the CLI decides, in another process, on the same store
            await asyncio.to_thread(subprocess.run, [*answer, "--as", "ops:lee"], check=True,
                                    capture_output=True, timeout=60)
        else:
            print(f"waiting for a person; {answer_hint(request_id, store)}")

        result = result_of(await question)
        print(f"{result['status']} by {result['responded_by']}: approved={result['approved']}")
        if result["approved"]:
            print("dropping orders_v1 ...")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--auto", action="store_true", help="answer from another process")
    parser.add_argument("--store", help="the store the server and the CLI share")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = absolute_store_url(args.store or f"sqlite:///{Path(tmp) / 'loopgate.db'}")
        asyncio.run(run(store, args.auto))


if __name__ == "__main__":
    main()
