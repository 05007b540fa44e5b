"""``RemoteDriver``: the gateway's hands on a LangGraph Server deployment.

The gateway files, claims, times out and recovers remote pauses exactly as local ones
(see :class:`~loopgate_lc.gateway.GraphDriver`); this driver only reads threads and
creates runs through ``langgraph_sdk``, and learns of new pauses:

- from hints (a verified run webhook names a thread, see ``webhooks``): the thread is
  re-read at once; the hint's body is never trusted;
- from a bounded search of interrupted threads, newest first, that stops at the last
  change it saw (a cursor), every ``poll_interval``.

A resume is ``runs.create(thread_id, assistant_id, command={"resume": {...}})`` with
the request ids in the run's metadata: a bridge that takes over a resume whose process
died looks for that run before sending it again, so no decision reaches the server twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from langgraph.types import Interrupt

from loopgate_lc.errors import ConfigurationError, ThreadBusy
from loopgate_lc.gateway import PauseReport
from loopgate_lc.langgraph_server.deployment import Deployment
from loopgate_lc.schema import ApprovalRequest, RequestKind
from loopgate_lc.stores.base import RequestRecord

__all__ = ["RUN_METADATA_KEY", "RemoteDriver", "is_loopgate_request"]

log = logging.getLogger("loopgate_lc.langgraph_server")

RUN_METADATA_KEY = "loopgate_request_ids"
"""Run metadata naming the requests a resume run carries (read back on takeover)."""

_SEEN_LIMIT = 10_000  # threads remembered between searches (oldest forgotten first)
_HINT_LIMIT = 10_000  # hinted threads waiting to be re-read; past it, polling finds them
_CURSOR_OVERLAP = timedelta(seconds=10)  # clocks and commit order are not exact
_KINDS = frozenset(k.value for k in RequestKind)

BUSY_RETRY = 5.0
"""Seconds a resume is sent again while its thread runs another run, before the claim
is given back (see ``RemoteDriver._create_run``)."""


def is_loopgate_request(value: Any) -> bool:
    """Whether an interrupt value is a request a loopgate_lc guard or node raised."""
    if not isinstance(value, Mapping) or value.get("type") not in _KINDS:
        return False
    if not isinstance(value.get("request_id"), str):
        return False
    try:
        ApprovalRequest.model_validate(dict(value))
    except ValueError:
        return False
    return True


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value)
    return None


class RemoteDriver:
    """Reads and resumes the paused threads of one deployment (see the module doc).

    Every call runs on the gateway's event loop; the SDK client is made there on first
    use. :meth:`hint` is the one method other threads may call.
    """

    def __init__(self, deployment: Deployment, *, webhook_url: str | None = None,
                 client: Any = None) -> None:
        self.deployment = deployment
        self.lease: float | None = deployment.lease
        self.webhook_url = webhook_url
        self._client = client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hinted: set[str] = set()
        self._hint_kick: asyncio.Event | None = None
        self._seen: OrderedDict[str, str] = OrderedDict()
        self._assistants: OrderedDict[str, str] = OrderedDict()
        self._cursor: datetime | None = None
        self.polls = 0  # searches made, for tests and metrics
        self.busy_retries = 0  # resumes sent again because the thread was running

    # the SDK ---------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            from langgraph_sdk import get_client

            kwargs: dict[str, Any] = {"url": self.deployment.url,
                                      "timeout": self.deployment.timeout,
                                      "headers": dict(self.deployment.headers)}
            if self.deployment.api_key is not None:
                kwargs["api_key"] = self.deployment.api_key
            self._client = get_client(**kwargs)
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    # GraphDriver -----------------------------------------------------------------------

    async def pending(self, thread_id: str) -> set[str] | None:
        from langgraph_sdk.errors import NotFoundError

        try:
            thread = await self.client.threads.get(thread_id)
        except NotFoundError:
            return set()  # the thread is gone, and with it every interrupt
        if thread.get("status") == "busy":
            return None
        self._remember_assistant(thread)
        if thread.get("status") != "interrupted":
            return set()
        return {str(i["id"]) for i in self._interrupts(thread)}

    async def resume(self, thread_id: str, resume: dict[str, Any],
                     claimed: Sequence[RequestRecord]) -> Sequence[Interrupt] | None:
        ids = sorted(r.id for r in claimed)
        if any(r.resumed_at is not None for r in claimed) and \
                await self._already_sent(thread_id, set(ids)):
            return None  # the process that claimed it first got it to the server
        assistant = self._assistants.get(thread_id)
        if assistant is None:
            assistant = await self._assistant_of(thread_id)
        kwargs: dict[str, Any] = {"command": {"resume": resume},
                                  "metadata": {RUN_METADATA_KEY: ids},
                                  "multitask_strategy": "reject"}
        if self.webhook_url:
            from langgraph_sdk.errors import UnprocessableEntityError

            try:
                await self._create_run(thread_id, assistant,
                                       {**kwargs, "webhook": self.webhook_url})
                return None
            except UnprocessableEntityError as exc:
                if "webhook" not in str(exc).lower():
                    raise
                # refused before any run was made (a loopback URL, a domain allowlist):
                # resume without it; polling finds the next pause
                log.warning("loopgate_lc: %s refuses the run webhook %s (%s); polling "
                            "instead", self.deployment.name, self.webhook_url, exc)
                self.webhook_url = None
        await self._create_run(thread_id, assistant, kwargs)
        return None  # the run goes on on the server; its next pauses are found anew

    async def _create_run(self, thread_id: str, assistant: str,
                          kwargs: dict[str, Any]) -> None:
        """``runs.create``, sent again while the thread runs another run.

        The server refuses a second run on a busy thread (409, ``multitask_strategy=
        "reject"``) without making it, so sending again never resumes twice. Another
        decision's resume or someone's own run can hold the thread; this sends again
        50 ms later, doubling to 0.5 s, so the resume goes in as soon as a short run
        ends, for at most :data:`BUSY_RETRY` seconds (and half the lease). A longer run
        raises :class:`~loopgate_lc.ThreadBusy`: the gateway gives the claims back and
        resumes the thread once it is no longer busy.
        """
        from langgraph_sdk.errors import ConflictError

        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(BUSY_RETRY, self.deployment.lease / 2)
        delay = 0.05
        while True:
            try:
                await self.client.runs.create(thread_id, assistant, **kwargs)
                return
            except ConflictError as exc:
                if loop.time() + delay > deadline:
                    raise ThreadBusy(f"thread {thread_id} on {self.deployment.name} is "
                                     f"running another run ({exc})") from exc
                self.busy_retries += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def watch(self, report: PauseReport) -> None:
        """Search now and every ``poll_interval``; re-read hinted threads at once."""
        self._loop = asyncio.get_running_loop()
        self._hint_kick = asyncio.Event()
        failures = 0
        while True:
            try:
                await self.poll(report)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the server is away: keep the last cursor, retry
                failures += 1
                log.warning("loopgate_lc: searching %s failed (%s: %s)",
                            self.deployment.name, type(exc).__name__, exc)
            wait = self.deployment.poll_interval * min(2 ** max(failures - 1, 0), 8)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hint_kick.wait(), wait)
            while self._hinted:
                self._hint_kick.clear()
                hinted, self._hinted = self._hinted, set()
                for thread_id in sorted(hinted):
                    try:
                        await self.refresh(thread_id, report)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # polling comes back to it
                        log.warning("loopgate_lc: reading thread %s of %s failed (%s: %s)",
                                    thread_id, self.deployment.name, type(exc).__name__,
                                    exc)

    # discovery -------------------------------------------------------------------------

    def hint(self, thread_id: str) -> None:
        """A run of ``thread_id`` ended: re-read it soon. Safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # not watching yet: the first search finds it
        loop.call_soon_threadsafe(self._add_hint, thread_id)

    def _add_hint(self, thread_id: str) -> None:
        if len(self._hinted) < _HINT_LIMIT:
            self._hinted.add(thread_id)
        if self._hint_kick is not None:
            self._hint_kick.set()

    async def refresh(self, thread_id: str, report: PauseReport) -> None:
        """Read one thread and file its pauses, if it is paused."""
        from langgraph_sdk.errors import NotFoundError

        try:
            thread = await self.client.threads.get(thread_id)
        except NotFoundError:
            return
        if thread.get("status") == "interrupted":
            await self._file(thread, report)

    async def poll(self, report: PauseReport) -> int:
        """One bounded search of interrupted threads, newest change first, down to the
        cursor. Returns how many threads were filed."""
        self.polls += 1
        deployment = self.deployment
        stop_at = None if self._cursor is None else self._cursor - _CURSOR_OVERLAP
        newest = self._cursor
        filed = 0
        for page in range(deployment.max_pages):
            threads = await self.client.threads.search(
                status="interrupted", limit=deployment.page_size,
                offset=page * deployment.page_size, sort_by="updated_at",
                sort_order="desc",
                select=["thread_id", "updated_at", "status", "metadata", "interrupts"])
            older = False
            for thread in threads:
                updated = _parse_time(thread.get("updated_at"))
                if updated is not None and stop_at is not None and updated < stop_at:
                    older = True
                    break
                if updated is not None and (newest is None or updated > newest):
                    newest = updated
                if await self._file(thread, report):
                    filed += 1
            if older or len(threads) < deployment.page_size:
                break
        self._cursor = newest
        return filed

    async def _file(self, thread: Mapping[str, Any], report: PauseReport) -> bool:
        thread_id = str(thread["thread_id"])
        stamp = str(thread.get("updated_at"))
        if self._seen.get(thread_id) == stamp:
            return False
        metadata = thread.get("metadata") or {}
        interrupts: list[Interrupt] = []
        if self.deployment.watches(metadata.get("graph_id"), metadata.get("assistant_id")):
            interrupts = self._filed_interrupts(thread)
        if interrupts:
            self._remember_assistant(thread)
            await report(thread_id, interrupts)
        self._seen[thread_id] = stamp
        self._seen.move_to_end(thread_id)
        while len(self._seen) > _SEEN_LIMIT:
            self._seen.popitem(last=False)
        return bool(interrupts)

    def _filed_interrupts(self, thread: Mapping[str, Any]) -> list[Interrupt]:
        """The thread's interrupts this bridge files, with their published schemas."""
        return [
            Interrupt(value=i.get("value"), id=str(i["id"]),
                      response_schema=i.get("response_schema"))
            for i in self._interrupts(thread)
            if self.deployment.include_foreign or is_loopgate_request(i.get("value"))
        ]

    @staticmethod
    def _interrupts(thread: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        found: list[Mapping[str, Any]] = []
        for group in (thread.get("interrupts") or {}).values():
            found.extend(i for i in group if isinstance(i, Mapping) and i.get("id"))
        return found

    # resuming --------------------------------------------------------------------------

    def _remember_assistant(self, thread: Mapping[str, Any]) -> None:
        metadata = thread.get("metadata") or {}
        assistant = metadata.get("assistant_id") or metadata.get("graph_id")
        if assistant:
            self._assistants[str(thread["thread_id"])] = str(assistant)
            self._assistants.move_to_end(str(thread["thread_id"]))
            while len(self._assistants) > _SEEN_LIMIT:
                self._assistants.popitem(last=False)

    async def _assistant_of(self, thread_id: str) -> str:
        thread = await self.client.threads.get(thread_id)
        self._remember_assistant(thread)
        if thread_id in self._assistants:
            return self._assistants[thread_id]
        if len(self.deployment.graphs) == 1:
            return self.deployment.graphs[0]
        raise ConfigurationError(
            f"thread {thread_id} on {self.deployment.name} names no assistant in its "
            "metadata; watch exactly one graph (graphs=[...]) so resumes know which")

    async def _already_sent(self, thread_id: str, ids: set[str]) -> bool:
        runs = await self.client.runs.list(thread_id, limit=100)
        for run in runs:
            sent = (run.get("metadata") or {}).get(RUN_METADATA_KEY) or ()
            if ids & {str(x) for x in sent}:
                return True
        return False
