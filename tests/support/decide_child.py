"""Another process that decides one request on a shared PostgreSQL store.

``python -m tests.support.decide_child DSN SCHEMA REQUEST_ID``: prints ``READY``, waits
for a line on stdin, approves the request through its own gateway, prints ``DONE``.
"""

from __future__ import annotations

import sys

from loopgate_lc.gateway import Loopgate
from loopgate_lc.stores.postgres import PostgresStore


def main(dsn: str, schema: str, request_id: str) -> None:
    with Loopgate(store=PostgresStore(dsn, schema=schema, max_size=2)) as gate:
        print("READY", flush=True)
        sys.stdin.readline()
        gate.respond(request_id, {"type": "approve"}, actor="elsewhere")
        print("DONE", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
