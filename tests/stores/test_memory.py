"""MemoryStore against the conformance suite, plus what only it promises."""

from __future__ import annotations

import asyncio
import threading

import pytest

from loopgate_lc.schema import Status
from loopgate_lc.stores import MemoryStore, Store
from loopgate_lc.testing.stores import APPROVE, MakeStore, StoreConformance, request


class TestMemoryStore(StoreConformance):
    persistent = False

    @pytest.fixture
    def make_store(self) -> MakeStore:
        async def make() -> Store:
            return MemoryStore()

        return make


async def test_memory_store_is_shared_across_event_loops_and_threads() -> None:
    store = MemoryStore()
    await store.create_request(request("r1"))
    outcomes: list[str] = []

    def decide_in_own_loop() -> None:
        async def decide() -> None:
            try:
                await store.resolve(
                    "r1", status=Status.APPROVED, decision=APPROVE, decided_by="t", channel="c"
                )
                outcomes.append("won")
            except Exception as exc:
                outcomes.append(type(exc).__name__)

        asyncio.run(decide())

    threads = [threading.Thread(target=decide_in_own_loop) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(outcomes) == ["AlreadyDecided"] * 3 + ["won"]
    assert (await store.get_request("r1")).status is Status.APPROVED
