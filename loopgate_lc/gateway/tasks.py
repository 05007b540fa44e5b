"""The gateway's background tasks: spawned on its loop, cancelled together at close.

asyncio is imported with the first task: a process that only decides (the CLI) spawns
none, and runs without an event loop (see :mod:`loopgate_lc._inline`).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

__all__ = ["Tasks"]


class Tasks:
    """Keeps a strong reference to every background task (asyncio keeps only weak ones)
    and says whether the gateway is closing, so loops end instead of starting work that
    would be cut off."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closing = False

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background on the running loop."""
        import asyncio

        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def cancel(self) -> None:
        """Cancel every task and wait for them to end."""
        tasks = list(self._tasks)
        if not tasks:
            return
        import asyncio

        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
