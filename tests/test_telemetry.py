"""OpenTelemetry hooks: counts, durations and spans of real approvals, read back through the
SDK's in-memory reader and exporter."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra (and its SDK) is not installed")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loopgate_lc import DeliveryError, Hooks, Loopgate, Status, Veto, compose_hooks
from loopgate_lc.telemetry import telemetry_hooks
from loopgate_lc.testing import ScriptedApprover
from tests.support.counting import CountingStore
from tests.test_simulate import record_history
from tests.test_timeouts import wait_for


class Telemetry:
    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.hooks = telemetry_hooks(
            meter_provider=MeterProvider(metric_readers=[self.reader]),
            tracer_provider=tracer_provider)

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        if data is None:
            return []
        return [point for resource in data.resource_metrics for scope in resource.scope_metrics
                for metric in scope.metrics if metric.name == name
                for point in metric.data.data_points]

    def sums(self, name: str, *keys: str) -> Counter[tuple[Any, ...]]:
        totals: Counter[tuple[Any, ...]] = Counter()
        for point in self.points(name):
            totals[tuple(point.attributes.get(k) for k in keys)] += point.value
        return totals


@pytest.fixture
def otel() -> Telemetry:
    return Telemetry()


def test_an_agent_run_is_counted_timed_and_traced(tmp_path: Any, otel: Telemetry) -> None:
    # two reads run automatically; a person approves one delete and rejects another
    # delete and an email (the history the simulation tests use)
    store = f"sqlite:///{tmp_path / 'otel.db'}"
    record_history(store, hooks=otel.hooks)
    assert otel.sums("loopgate.requests", "kind") == Counter({("tool_approval",): 3})
    assert otel.sums("loopgate.decisions", "outcome", "channel") == Counter({
        ("auto_approved", "policy"): 2, ("approved", "scripted"): 1,
        ("rejected", "scripted"): 2})
    assert otel.sums("loopgate.requests.pending") == Counter({(): 0})
    durations = otel.points("loopgate.decision.duration")
    assert sum(p.count for p in durations) == 3
    assert otel.sums("loopgate.notifications", "channel") == Counter({("scripted",): 3})
    pauses = [s for s in otel.spans.get_finished_spans() if s.name == "loopgate.pause"]
    assert sorted(s.attributes["loopgate.outcome"] for s in pauses) == [
        "approved", "rejected", "rejected"]
    assert {s.attributes["langgraph.thread_id"] for s in pauses} == {"history"}
    assert {s.attributes["loopgate.actor"] for s in pauses} == {"bob"}
    assert all(s.end_time >= s.start_time for s in pauses)
    with Loopgate(store) as gate:
        filed = {r.id for r in gate.pending()} | {
            e.request_id for e in gate.audit() if e.event == "requested"}
    assert {s.attributes["loopgate.request_id"] for s in pauses} == filed
    notifies = [s for s in otel.spans.get_finished_spans() if s.name == "loopgate.notify"]
    assert len(notifies) == 3
    # each decision reached the run once: one resume span per request, on the same thread
    resumes = [s for s in otel.spans.get_finished_spans() if s.name == "loopgate.resume"]
    assert {s.attributes["loopgate.request_id"] for s in resumes} == filed
    assert len(resumes) == 3
    assert {s.attributes["langgraph.thread_id"] for s in resumes} == {"history"}
    assert sorted(s.attributes["loopgate.outcome"] for s in resumes) == [
        "approved", "rejected", "rejected"]
    pause_end = {s.attributes["loopgate.request_id"]: s.end_time for s in pauses}
    for span in resumes:  # a resume starts after its decision and ends after it starts
        assert pause_end[span.attributes["loopgate.request_id"]] <= span.start_time
        assert span.start_time <= span.end_time


async def test_a_background_resume_is_traced_with_its_graph(otel: Telemetry,
                                                             config: dict[str, Any]) -> None:
    from tests.test_gateway_graphs import agent

    runs: Counter[str] = Counter()
    graph = agent(runs, "prod")
    async with Loopgate("memory://", hooks=otel.hooks) as gate:
        gate.register_graph("deployer", graph)
        thread_id = await gate.astart("deployer", {"messages": [("user", "ship")]}, config)
        await wait_for(lambda: gate.apending(thread_id=thread_id))
        (record,) = await gate.apending(thread_id=thread_id)
        await gate.arespond(record.id, {"type": "approve"}, actor="ana")
        await wait_for(lambda: any(s.name == "loopgate.resume"
                                   for s in otel.spans.get_finished_spans()))
        await wait_for(lambda: not graph.get_state(config).next)
    (span,) = [s for s in otel.spans.get_finished_spans() if s.name == "loopgate.resume"]
    assert dict(span.attributes or {}) == {
        "loopgate.request_id": record.id, "langgraph.thread_id": thread_id,
        "loopgate.outcome": "approved", "loopgate.graph": "deployer"}
    assert runs["prod"] == 1


async def test_telemetry_costs_a_filing_no_store_read(tmp_path: Path, otel: Telemetry) -> None:
    # it counts filings after their commit (on_filed), so the filing need not first look
    # for a request filed before, as a hook that may veto (on_request) makes it
    reads = {}
    for name, hooks in (("off", None), ("on", otel.hooks)):
        store = CountingStore(tmp_path / f"{name}.db")
        async with Loopgate(store, hooks=hooks, timers=False) as gate:
            store.reads.clear()
            await gate.asubmit("Proceed?")
            reads[name] = {op: n for op, n in store.reads.items()
                           if op in ("get_request", "find_request")}
    assert reads == {"off": {}, "on": {}}
    assert otel.sums("loopgate.requests", "kind") == Counter({("approval",): 1})


async def test_a_vetoed_request_is_counted_filed_and_decided(otel: Telemetry) -> None:
    # the veto comes first and stops later on_request hooks: the count must not need one
    hooks = compose_hooks(Hooks(on_request=lambda record: Veto("change freeze")), otel.hooks)
    async with Loopgate("memory://", hooks=hooks) as gate:
        record = await gate.asubmit("Proceed?")
    assert record.status is Status.REJECTED
    assert otel.sums("loopgate.requests", "kind") == Counter({("approval",): 1})
    assert otel.sums("loopgate.decisions", "outcome") == Counter({("rejected",): 1})
    assert otel.sums("loopgate.requests.pending") == Counter({(): 0})


class Unreachable:
    name = "pager"

    async def notify(self, request: Any) -> None:
        raise DeliveryError("pager is down", retryable=True)


async def test_delivery_failures_and_timeouts_are_counted(otel: Telemetry) -> None:
    async with Loopgate("memory://", notifiers=[Unreachable()], hooks=otel.hooks,
                        retry_backoff=0.01, max_retry_backoff=0.02) as gate:
        record = await gate.asubmit("Restart the database?", timeout=0.5)
        await wait_for(
            lambda: otel.sums("loopgate.delivery.failures", "channel")[("pager",)] >= 2)
        decided = await gate.await_decision(record.id, timeout=10)
    assert decided.status is Status.TIMEOUT
    assert otel.sums("loopgate.decisions", "outcome")[("timeout",)] == 1
    assert otel.sums("loopgate.requests.pending") == Counter({(): 0})


def test_without_an_sdk_the_hooks_are_harmless() -> None:
    # the API's default providers are no-ops: a library may leave the hooks in
    with Loopgate("memory://", notifiers=[ScriptedApprover()], hooks=telemetry_hooks()) as gate:
        record = gate.submit("Proceed?", timeout=30)
        assert gate.wait(record.id, timeout=10).status is Status.APPROVED
