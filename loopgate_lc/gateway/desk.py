"""The gateway's side of :class:`~loopgate_lc.notifiers.base.Desk`: what listening
channels are handed at start, instead of the gateway or its store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loopgate_lc.gateway.deciding import Deciding
from loopgate_lc.schema import Status
from loopgate_lc.stores.base import RequestRecord, SessionRecord, Store

__all__ = ["GatewayDesk"]


class GatewayDesk:
    """Decisions go to the deciding part; reads and the channel's own references to the
    store. Nothing here changes a request's state except through ``Deciding``."""

    def __init__(self, store: Store, deciding: Deciding, store_url: str | None) -> None:
        self._store = store
        self._deciding = deciding
        self.store_url = store_url

    async def arespond(self, request_id: str, decision: Mapping[str, Any], *,
                       actor: str | None = None, channel: str = "api",
                       approver_id: str | None = None) -> RequestRecord:
        return await self._deciding.respond(request_id, decision, actor, channel, approver_id)

    async def aauthorize(self, request_id: str, approver_id: str | None, *,
                         actor: str | None = None, channel: str = "api") -> None:
        record = await self._store.get_request(request_id)
        await self._deciding.authorize(record, approver_id, actor, channel)

    async def arefuse(self, request_id: str, *, actor: str | None, channel: str,
                      reason: str) -> None:
        await self._deciding.refuse(request_id, actor, channel, reason)

    async def aget(self, request_id: str) -> RequestRecord:
        return await self._store.get_request(request_id)

    async def asession(self, session_id: str) -> SessionRecord:
        return await self._store.get_session(session_id)

    async def asessions(self, *, active: bool | None = None) -> list[SessionRecord]:
        return await self._store.list_sessions(active=active)

    async def arequests(self, *, session_id: str | None = None,
                        pending: bool = False) -> list[RequestRecord]:
        return await self._store.list_requests(
            status=Status.PENDING if pending else None, session_id=session_id)

    async def set_message_ref(self, request_id: str, channel: str, ref: Any) -> None:
        await self._store.set_message_ref(request_id, channel, ref)

    async def put_callback(self, key: str, request_id: str, action: dict[str, Any]) -> None:
        await self._store.put_callback(key, request_id, action)

    async def get_callback(self, key: str) -> tuple[str, dict[str, Any]] | None:
        return await self._store.get_callback(key)
