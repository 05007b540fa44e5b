"""Memory stays bounded: decided requests leave the memory store, listings page, and
per-tool-name caches keep only the names used most recently."""

from __future__ import annotations

import pytest

from loopgate_lc._lru import LRU
from loopgate_lc.errors import RequestNotFound
from loopgate_lc.gateway import Loopgate
from loopgate_lc.policy import ApprovalPolicy, PolicySet, RiskLevel
from loopgate_lc.schema import Status
from loopgate_lc.stores import MemoryStore, OutboxItem
from loopgate_lc.testing import RecordingNotifier
from loopgate_lc.testing.stores import APPROVE, request


async def test_the_memory_store_forgets_the_oldest_finished_requests() -> None:
    store = MemoryStore(max_decided=3)
    for n in range(6):
        await store.create_request(request(f"r{n}"))
        await store.resolve(f"r{n}", status=Status.APPROVED, decision=APPROVE,
                            decided_by="ana", channel="api")
    await store.create_request(request("waiting"))
    assert [r.id for r in await store.list_requests()] == ["r3", "r4", "r5", "waiting"]
    with pytest.raises(RequestNotFound):  # a late answer is told the id is unknown
        await store.get_request("r0")


async def test_decisions_still_owed_a_resume_or_a_delivery_are_kept() -> None:
    store = MemoryStore(max_decided=1)
    await store.create_request(request("run", thread_id="t", interrupt_id="i"))
    await store.resolve("run", status=Status.APPROVED, decision=APPROVE, decided_by="a",
                        channel="c")
    await store.create_request(request("shown"))
    await store.resolve("shown", status=Status.REJECTED, decision={"type": "reject"},
                        decided_by="a", channel="c",
                        outbox=[OutboxItem(request_id="shown", notifier="tg", kind="resolved")])
    [item] = await store.list_outbox(request_id="shown")
    await store.create_request(request("later"))
    await store.resolve("later", status=Status.APPROVED, decision=APPROVE, decided_by="a",
                        channel="c")
    # the run still needs resuming and "shown" still owes a delivery: both stay past the
    # bound, and the finished "later" goes instead
    assert [r.id for r in await store.list_requests()] == ["run", "shown"]
    assert await store.mark_resumed("run")
    await store.complete_resume("run")
    assert [r.id for r in await store.list_requests()] == ["shown"]
    assert item.id is not None
    await store.complete_outbox(item.id)
    assert [r.id for r in await store.list_requests()] == ["shown"]  # within the bound


def test_pending_pages_with_a_cursor() -> None:
    notifier = RecordingNotifier()
    with Loopgate(store="memory://", notifiers=[notifier]) as gate:
        ids = [gate.submit(f"q{n}?").id for n in range(5)]
        gate.respond(ids[1], {"type": "approve"})
        first = gate.pending(limit=2)
        second = gate.pending(limit=2, after=first[-1].id)
        third = gate.pending(limit=2, after=second[-1].id)
        assert [r.id for r in first + second + third] == [ids[0], ids[2], ids[3], ids[4]]
        assert len(gate.pending()) == 4  # no limit: all of them, as before


def test_the_lru_drops_the_least_recently_used_name_only() -> None:
    lru: LRU[str, int] = LRU(2)
    made: list[str] = []

    def make(name: str) -> int:
        made.append(name)
        return len(made)

    assert lru.get_or_make("a", lambda: make("a")) == 1
    assert lru.get_or_make("b", lambda: make("b")) == 2
    assert lru.get_or_make("a", lambda: make("a")) == 1  # used again: most recent
    lru.get_or_make("c", lambda: make("c"))  # drops "b", not "a"
    assert "a" in lru and "b" not in lru and len(lru) == 2
    with pytest.raises(ValueError):
        LRU(0)


def test_the_lru_put_replaces_a_value_and_stays_bounded() -> None:
    lru: LRU[str, int] = LRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    lru.put("a", 3)  # replaced, and now the most recent
    lru.put("c", 4)  # drops "b"
    assert (lru.get("a"), lru.get("b"), lru.get("c"), len(lru)) == (3, None, 4, 2)


def test_a_policy_set_past_its_memo_still_answers_right() -> None:
    policies = PolicySet([ApprovalPolicy(name="reads", tool_pattern="read_*",
                                         min_confidence=0.5, max_risk_level=RiskLevel.READ_ONLY)],
                         cache_size=2)
    for n in range(10):
        assert policies.match(f"read_{n}") is not None
        assert policies.match(f"write_{n}") is None
    assert policies.evaluate("read_0", confidence=0.9, risk="read_only").auto_approved


async def test_the_gateway_keeps_nothing_per_finished_thread_or_decided_request() -> None:
    from langchain.agents import create_agent
    from langchain_core.tools import tool
    from langgraph.checkpoint.memory import InMemorySaver

    from loopgate_lc import guard
    from loopgate_lc.testing import ScriptedApprover, ScriptedChatModel, ai, call
    from tests.test_timeouts import wait_for

    @tool
    def deploy(environment: str) -> str:
        """Deploy."""
        return f"deployed {environment}"

    def agent() -> object:
        model = ScriptedChatModel(script=[ai("", call("deploy", environment="prod")), "done"])
        return create_agent(model, tools=[guard(deploy)], checkpointer=InMemorySaver())

    store = MemoryStore()
    async with Loopgate(store=store, notifiers=[ScriptedApprover()],
                        poll_interval=0.05) as gate:
        gate.register_graph("deployer", agent())
        threads = [await gate.astart("deployer", {"messages": [("user", "ship")]})
                   for _ in range(5)]
        await gate.arun(agent(), {"messages": [("user", "ship")]})

        async def finished() -> bool:
            events = [e for t in threads for e in await gate.aaudit(thread_id=t)]
            return sum(e.event == "finished" for e in events) == len(threads)

        await wait_for(finished, timeout=30)

        async def unlocked() -> bool:  # a run's last step lets go of its lock after that
            return gate._p.resuming._locks == {}

        # one lock per thread, only while it steps (or a resume of it waits to)
        await wait_for(unlocked, timeout=30)

    # pending requests another process filed are checked once for a gateway's channels;
    # the ids remembered for that go once they are decided
    async with Loopgate(store=store, notifiers=[RecordingNotifier("shown")]) as watcher, \
            Loopgate(store=store) as filer:
        records = [await filer.asubmit(f"Deploy {n}?") for n in range(3)]
        await watcher._p.outbox.adopt()
        assert {r.id for r in records} <= watcher._p.outbox._adopted
        for record in records:
            await filer.arespond(record.id, {"type": "approve"})
        await watcher._p.outbox.adopt()
        assert watcher._p.outbox._adopted == set()



def test_the_middleware_keeps_gates_for_the_most_recent_tool_names_only() -> None:
    from loopgate_lc.middleware import ApprovalMiddleware

    middleware = ApprovalMiddleware([ApprovalPolicy("reads", "read_*")])
    first = middleware._gate("tool-0")
    for n in range(1, 5_000):  # names a model made up, one call each
        middleware._gate(f"tool-{n}")
    assert len(middleware._gates) == 4_096
    assert "tool-0" not in middleware._gates and "tool-4999" in middleware._gates
    assert middleware._gate("tool-0") is not first  # made again, not remembered forever


def test_the_guard_keeps_decision_schemas_for_the_most_recent_tool_names_only() -> None:
    from loopgate_lc.guard import Gate

    gate = Gate(policies=PolicySet(), _schemas=LRU(2))
    kept = gate.schema_for("a", None)
    assert gate.schema_for("a", None) is kept  # built once per name
    gate.schema_for("b", None)
    gate.schema_for("c", None)
    assert len(gate._schemas) == 2 and "a" not in gate._schemas
    assert Gate(policies=PolicySet())._schemas.maxsize == 4_096
