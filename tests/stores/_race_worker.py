"""One OS process racing another to decide the same requests (run by test_concurrency).

Usage: python -m tests.stores._race_worker URL ACTOR ID[,ID...] [SCHEMA]

Prints ``ready``, waits for a line on stdin so both processes start together, resolves
every id at once, then prints one JSON line: the ids it won and, for each id it lost,
who the store said had won.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

from loopgate_lc.errors import AlreadyDecided
from loopgate_lc.schema import Status
from loopgate_lc.stores import Store, open_store


def _store(url: str, schema: str | None) -> Store:
    if schema:
        from loopgate_lc.stores import PostgresStore

        return PostgresStore(url, schema=schema)
    return open_store(url)


async def _race(store: Store, actor: str, ids: list[str]) -> dict[str, object]:
    won: list[str] = []
    lost: dict[str, str | None] = {}

    async def decide(request_id: str) -> None:
        try:
            await store.resolve(
                request_id,
                status=Status.APPROVED,
                decision={"type": "approve", "by": actor},
                decided_by=actor,
                channel="race",
            )
            won.append(request_id)
        except AlreadyDecided as exc:
            lost[request_id] = exc.decided_by

    try:
        await asyncio.gather(*(decide(i) for i in ids))
    finally:
        await store.close()
    return {"actor": actor, "won": won, "lost": lost}


def main() -> None:
    url, actor, joined = sys.argv[1:4]
    schema = sys.argv[4] if len(sys.argv) > 4 else None
    ids = joined.split(",")
    random.Random(actor).shuffle(ids)
    store = _store(url, schema)
    print("ready", flush=True)
    sys.stdin.readline()
    result = asyncio.run(_race(store, actor, ids))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
