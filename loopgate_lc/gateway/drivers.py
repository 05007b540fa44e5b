"""Graph drivers: how the gateway reads and resumes the paused threads of one graph.

LangGraph is imported where a graph runs, never at module level: the CLI's store
commands import the gateway and start faster without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

from loopgate_lc.errors import ConfigurationError
from loopgate_lc.stores.base import RequestRecord

if TYPE_CHECKING:
    from langgraph.types import Command, Interrupt

__all__ = [
    "GraphDriver",
    "LocalDriver",
    "PauseReport",
    "Step",
    "final",
    "interrupts_of",
    "is_remote",
    "require_checkpointer",
    "resume_command",
    "supports_async",
]

PauseReport: TypeAlias = "Callable[[str, Sequence[Interrupt]], Awaitable[Any]]"
"""``report(thread_id, interrupts)``: file a paused thread's interrupts."""


@runtime_checkable
class GraphDriver(Protocol):
    """How the gateway reads and resumes the paused threads of one graph, wherever the
    graph runs: in this process (a compiled graph with a checkpointer) or on a LangGraph
    Server (``loopgate_lc.langgraph_server``). Filing, claiming, timeouts and recovery are
    the gateway's and the same for every driver; only these calls differ.
    """

    #: Seconds after which a resume that was claimed and never completed may be taken
    #: over; None means the gateway's ``resume_lease``.
    lease: float | None

    async def pending(self, thread_id: str) -> set[str] | None:
        """The ids of the thread's pending interrupts; None when that cannot be told now
        (a run is in progress), so nothing is claimed or called stale."""
        ...

    async def resume(self, thread_id: str, resume: dict[str, Any],
                     claimed: Sequence[RequestRecord]) -> Sequence[Interrupt] | None:
        """Resume the thread with ``{interrupt_id: value}``. Returns the interrupts the
        run paused at next, or None when the run goes on elsewhere (its next pauses are
        reported through ``watch``). Returning means the resume is saved where the graph
        lives; raising means it may not be, except :class:`ThreadBusy`, which says
        nothing was sent (the claims are given back and the thread resumed later)."""
        ...

    async def watch(self, report: PauseReport) -> None:
        """Run for the gateway's lifetime, calling ``report`` for every paused thread it
        learns of (drivers that learn nothing on their own return at once)."""
        ...


@dataclass(frozen=True)
class Step:
    """What a graph step left behind, shaped like ``invoke(..., version="v2")``'s."""

    value: Any
    interrupts: tuple[Interrupt, ...]


def final(state: Any) -> Step:
    """A streamed run's end, read from its state snapshot."""
    return Step(state.values, tuple(state.interrupts))


def interrupts_of(result: Any) -> tuple[Interrupt, ...]:
    """The interrupts a step paused at (none when it finished)."""
    return tuple(getattr(result, "interrupts", ()) or ())


class LocalDriver:
    """A compiled graph in this process, resumed from its checkpointer."""

    lease: float | None = None

    def __init__(self, graph: Any, config: Callable[[str], dict[str, Any]]) -> None:
        self.graph = graph
        self.run_async = supports_async(graph.checkpointer)
        self._config = config

    async def invoke(self, value: Any, config: dict[str, Any]) -> Any:
        """Run the graph on this loop, or in a worker thread when its checkpointer is
        sync-only."""
        if self.run_async:
            return await self.graph.ainvoke(value, config, version="v2")
        return await asyncio.to_thread(self.graph.invoke, value, config, version="v2")

    async def pending(self, thread_id: str) -> set[str] | None:
        config = self._config(thread_id)
        if self.run_async:
            state = await self.graph.aget_state(config)
        else:
            state = await asyncio.to_thread(self.graph.get_state, config)
        return {i.id for i in state.interrupts}

    async def resume(self, thread_id: str, resume: dict[str, Any],
                     claimed: Sequence[RequestRecord]) -> Sequence[Interrupt] | None:
        result = await self.invoke(resume_command(resume), self._config(thread_id))
        return interrupts_of(result)

    async def watch(self, report: PauseReport) -> None:
        return None


def resume_command(resume: dict[str, Any]) -> Command[Any]:
    """``Command(resume=...)``, LangGraph imported on first use."""
    from langgraph.types import Command

    return Command(resume=resume)


def supports_async(checkpointer: Any) -> bool:
    """Whether a checkpointer implements the async API (SqliteSaver only pretends)."""
    from langgraph.checkpoint.base import BaseCheckpointSaver

    if type(checkpointer).aget_tuple is BaseCheckpointSaver.aget_tuple:
        return False
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
    except ImportError:  # pragma: no cover - optional extra
        return True
    return not isinstance(checkpointer, SqliteSaver)


def is_remote(graph: Any) -> bool:
    """Whether ``graph`` is a ``RemoteGraph`` (a graph on LangGraph Server)."""
    try:
        from langgraph.pregel.remote import RemoteGraph
    except ImportError:  # pragma: no cover - part of langgraph
        return False
    return isinstance(graph, RemoteGraph)


def require_checkpointer(graph: Any, name: str | None = None) -> None:
    """Refuse a graph that cannot be resumed from here.

    Raises:
        ConfigurationError: It is a ``RemoteGraph`` or has no checkpointer.
    """
    if is_remote(graph):
        raise ConfigurationError(
            "a RemoteGraph runs on LangGraph Server, which keeps its state: let the gateway "
            "watch it with register_graph(name, remote_graph) (or a LangGraphBridge) and "
            "start runs through the server")
    if getattr(graph, "checkpointer", None) in (None, False, True):
        which = f"graph {name!r}" if name else "the graph"
        raise ConfigurationError(
            f"{which} has no checkpointer; compile it with one (e.g. InMemorySaver, "
            "SqliteSaver, PostgresSaver) so paused runs can resume")
