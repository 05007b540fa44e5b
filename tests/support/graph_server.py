"""A server process with a graph of its own, for the scaling-out tests.

``python -m tests.support.graph_server STORE_URL DIR PORT``: a gateway on ``STORE_URL`` that
looks for decisions made by other processes only every five minutes, the deploy graph
registered on it (checkpoints and the tool's log in ``DIR``), one thread started, and the
HTTP API served on ``PORT`` with the admin key ``secret``. Prints ``READY`` once it serves.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import uvicorn

from loopgate_lc import Loopgate
from loopgate_lc.server import create_app
from tests.support.deploy_graph import build


def main(store: str, directory: str, port: int) -> None:
    gate = Loopgate(store=store, poll_interval=300)
    gate.register_graph("deployer", build(str(Path(directory) / "checkpoints.db"),
                                          str(Path(directory) / "deploys.log")))
    app = create_app(gate, api_keys="ops=secret", mcp=False, close_gateway=True)
    gate.open()
    gate.start("deployer", {"messages": [("user", "ship")]},
               {"configurable": {"thread_id": "thread-1"}})
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))

    def announce() -> None:
        for _ in range(3000):  # bounded: until uvicorn serves
            if server.started:
                print("READY", flush=True)
                return
            threading.Event().wait(0.01)

    threading.Thread(target=announce, daemon=True).start()
    server.run()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
