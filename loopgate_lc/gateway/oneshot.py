"""Deciding from a process that lives for one decision: the deciding part alone.

``loopgate-lc approve`` and ``reject`` decide one request and exit. They need the one
compare-and-set path of :class:`~loopgate_lc.gateway.deciding.Deciding`, with its checks
(pending, approver, decision), its audit events and its outbox entries committed in one
transaction, and nothing a running gateway adds around it: no timers, notifiers, resumes,
graph drivers or event-loop thread. Those cost a short-lived command most of its start-up
and would do nothing before it exits; a gateway built with the same defaults (no
notifiers, hooks, policies or escalation) decides exactly as this does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from loopgate_lc.gateway.audit import Auditor, Clock
from loopgate_lc.gateway.deciding import Deciding
from loopgate_lc.gateway.outbox import Outbox, Retries
from loopgate_lc.gateway.tasks import Tasks
from loopgate_lc.gateway.validation import Schemas
from loopgate_lc.gateway.waiting import Waiters
from loopgate_lc.hooks import Hooks
from loopgate_lc.schema import utcnow
from loopgate_lc.stores.base import Store

__all__ = ["deciding"]


@asynccontextmanager
async def deciding(store: Store, *, clock: Clock = utcnow,
                   poll_interval: float = 1.0) -> AsyncIterator[Deciding]:
    """The deciding part over ``store``, set up (migrations applied) and closed after.

    Wired as ``Loopgate(store)`` wires its own, with its defaults: decisions are recorded
    with their audit events in the same transaction; this process has no channels, so
    they owe it no deliveries, and the processes that have channels show them.

    Args:
        store: The store to decide on; closed when the block ends.
        clock: Returns "now" (UTC).
        poll_interval: How often a wait would re-read the store (nothing waits here).
    """
    try:
        await store.setup()
        tasks = Tasks()
        auditor = Auditor(store, Hooks(), clock)
        outbox = Outbox(store, (), auditor, clock, tasks, Retries(), poll_interval)
        yield Deciding(store, auditor, outbox, Waiters(store, poll_interval), clock, (),
                       Schemas())
        tasks.closing = True
        await tasks.cancel()
    finally:
        await store.close()
