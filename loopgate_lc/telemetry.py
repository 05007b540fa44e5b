"""OpenTelemetry metrics and spans for approvals, delivered as :class:`~loopgate_lc.Hooks`.

Off by default and free when off: the gateway knows nothing of OpenTelemetry, and nothing is
measured unless these hooks are passed to it (``Loopgate(hooks=telemetry_hooks())``). Needs
the ``otel`` extra (``opentelemetry-api``); without an SDK configured, the API's no-op
providers make every call a no-op, so library code can leave the hooks in.

What is recorded (instrument names follow OpenTelemetry's dotted style):

- ``loopgate.requests`` (counter, by ``kind``): requests filed for a person.
- ``loopgate.requests.pending`` (up-down counter): filed minus decided. Each process adds
  what it filed and subtracts what it decided, so the sum over processes is the number
  pending even when one process files and another decides.
- ``loopgate.decisions`` (counter, by ``outcome`` and ``channel``): final outcomes, with
  policy auto-approvals as ``outcome="auto_approved", channel="policy"``.
- ``loopgate.decision.duration`` (histogram, seconds, by ``outcome`` and ``channel``): from
  filing to decision, the time a run stood paused for a person.
- ``loopgate.notifications`` (counter, by ``channel``): deliveries to people.
- ``loopgate.delivery.failures`` (counter, by ``channel``): failed delivery attempts.

Spans, each carrying ``loopgate.request_id`` and ``langgraph.thread_id`` so a trace backend
can join them to the graph run of that thread: ``loopgate.notify`` from filing until a channel
delivered the request, ``loopgate.pause`` from filing until the decision, with its outcome,
channel, actor and policy, and ``loopgate.resume`` from claiming the decision's resume until
LangGraph's checkpoint saved it, with the graph's name and the outcome it resumed with.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from loopgate_lc.errors import ConfigurationError
from loopgate_lc.hooks import Hooks
from loopgate_lc.schema import utcnow

if TYPE_CHECKING:
    from loopgate_lc.stores.base import RequestRecord

__all__ = ["telemetry_hooks"]

_SCOPE = "loopgate_lc"


def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000_000)


class _Telemetry:
    """The instruments, created once per hook set."""

    def __init__(self, meter_provider: Any, tracer_provider: Any) -> None:
        try:
            from opentelemetry import metrics, trace
        except ImportError as exc:  # pragma: no cover - the otel extra brings it
            raise ConfigurationError(
                "telemetry needs the otel extra: pip install 'loopgate-lc[otel]'") from exc
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(_SCOPE)
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(_SCOPE)
        self.requests = meter.create_counter(
            "loopgate.requests", description="Requests filed for a person")
        self.pending = meter.create_up_down_counter(
            "loopgate.requests.pending", description="Requests filed and not yet decided")
        self.decisions = meter.create_counter(
            "loopgate.decisions", description="Final outcomes, by outcome and channel")
        self.duration = meter.create_histogram(
            "loopgate.decision.duration", unit="s",
            description="Time from filing to decision")
        self.notifications = meter.create_counter(
            "loopgate.notifications", description="Requests delivered to people")
        self.failures = meter.create_counter(
            "loopgate.delivery.failures", description="Failed delivery attempts")

    def filed(self, record: RequestRecord) -> None:
        self.requests.add(1, {"kind": record.kind.value})
        self.pending.add(1)

    def notified(self, record: RequestRecord, channel: str) -> None:
        self.notifications.add(1, {"channel": channel})
        span = self.tracer.start_span(
            "loopgate.notify", start_time=_ns(record.created_at),
            attributes={**_ids(record), "loopgate.channel": channel})
        span.end(end_time=_ns(utcnow()))

    def decided(self, record: RequestRecord | None, policy: str | None = None) -> None:
        if record is None:  # a policy approved the call: nobody was asked
            self.decisions.add(1, {"outcome": "auto_approved", "channel": "policy"})
            return
        outcome = record.status.value
        channel = record.channel or "unknown"
        attributes = {"outcome": outcome, "channel": channel}
        self.decisions.add(1, attributes)
        self.pending.add(-1)
        decided_at = record.decided_at or utcnow()
        self.duration.record(
            max(0.0, (decided_at - record.created_at).total_seconds()), attributes)
        span_attributes: dict[str, Any] = {
            **_ids(record), "loopgate.outcome": outcome, "loopgate.channel": channel}
        if record.decided_by:
            span_attributes["loopgate.actor"] = record.decided_by
        policy = policy or record.request.policy
        if policy:
            span_attributes["loopgate.policy"] = policy
        tool = record.request.name
        if tool:
            span_attributes["loopgate.tool"] = tool
        span = self.tracer.start_span(
            "loopgate.pause", start_time=_ns(record.created_at), attributes=span_attributes)
        span.end(end_time=_ns(decided_at))

    def resumed(self, record: RequestRecord) -> None:
        attributes: dict[str, Any] = {**_ids(record), "loopgate.outcome": record.status.value}
        if record.graph:
            attributes["loopgate.graph"] = record.graph
        done_at = record.resume_done_at or utcnow()
        span = self.tracer.start_span(
            "loopgate.resume", start_time=_ns(record.resumed_at or done_at),
            attributes=attributes)
        span.end(end_time=_ns(done_at))

    def failed(self, error: BaseException, context: dict[str, Any]) -> None:
        channel = context.get("notifier")
        if channel:
            self.failures.add(1, {"channel": str(channel)})


def _ids(record: RequestRecord) -> dict[str, str]:
    ids = {"loopgate.request_id": record.id}
    if record.thread_id:
        ids["langgraph.thread_id"] = record.thread_id
    return ids


def telemetry_hooks(*, meter_provider: Any = None, tracer_provider: Any = None) -> Hooks:
    """Hooks that record approvals as OpenTelemetry metrics and spans.

    Args:
        meter_provider: Where metrics go (default: the global provider).
        tracer_provider: Where spans go (default: the global provider).

    Returns:
        Hooks to pass to :class:`~loopgate_lc.Loopgate` (alone or composed with your own).

    Raises:
        ConfigurationError: ``opentelemetry-api`` is not installed.
    """
    t = _Telemetry(meter_provider, tracer_provider)
    return Hooks(
        on_filed=t.filed,  # not on_request: that would make every filing read first
        on_notified=t.notified,
        on_approve=lambda record, _auto, policy: t.decided(record, policy),
        on_reject=t.decided,
        on_timeout=t.decided,
        on_cancel=t.decided,
        on_resumed=t.resumed,
        on_error=t.failed,
    )
