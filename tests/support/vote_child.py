"""Another process that votes on quorum requests through its own gateway.

``python -m tests.support.vote_child STORE VOTER ID[,ID...] [SCHEMA]``: STORE is a store
URL (with SCHEMA, a PostgreSQL DSN). Prints ``READY``, waits for a line on stdin so every
voter starts together, approves every id as VOTER (in its own shuffled order), then
prints one JSON line: for each id, ``pending`` (counted, more needed), ``decided`` (this
vote decided it) or ``late`` (it was decided already).
"""

from __future__ import annotations

import json
import random
import sys

from loopgate_lc.errors import AlreadyDecided
from loopgate_lc.gateway import Loopgate
from loopgate_lc.stores import Store, open_store


def _store(url: str, schema: str | None) -> Store:
    if schema:
        from loopgate_lc.stores.postgres import PostgresStore

        return PostgresStore(url, schema=schema, max_size=2)
    return open_store(url)


def main(url: str, voter: str, ids: list[str], schema: str | None) -> None:
    random.Random(voter).shuffle(ids)
    outcomes: dict[str, str] = {}
    with Loopgate(store=_store(url, schema), timers=False) as gate:
        print("READY", flush=True)
        sys.stdin.readline()
        for request_id in ids:
            try:
                record = gate.respond(request_id, {"type": "approve"},
                                      actor=f"proc:{voter}", approver_id=voter)
            except AlreadyDecided:
                outcomes[request_id] = "late"
            else:
                outcomes[request_id] = "pending" if record.pending else "decided"
    print(json.dumps(outcomes), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3].split(","),
         sys.argv[4] if len(sys.argv) > 4 else None)
