"""Signed decisions and sign-in links accepted once by every process sharing a store.

:class:`~loopgate_lc.signing.MemoryReplayGuard` protects one process: a signed decision
replayed to a second server process behind the same load balancer would pass its check
there. The store is what those processes share, so the server remembers message ids in it
(:meth:`~loopgate_lc.stores.base.Store.remember_once`, one atomic insert).
"""

from __future__ import annotations

from datetime import UTC, datetime

from loopgate_lc.stores.base import Store

__all__ = ["StoreReplayGuard"]


class StoreReplayGuard:
    """A :class:`~loopgate_lc.signing.ReplayGuard` kept in a store, so any number of
    processes on one store accept each signed message id once."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def first_use(self, message_id: str, expires_at: float) -> bool:
        return await self._store.remember_once(
            f"replay:{message_id}", expires_at=datetime.fromtimestamp(expires_at, UTC))
