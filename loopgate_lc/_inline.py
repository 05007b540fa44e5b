"""Running async code that never waits, without an event loop.

The stores and the gateway's parts are async: servers and graphs run on event loops. A
command that lives for one read or one decision (``loopgate-lc pending``, ``approve``)
uses the same code over a store that does its I/O at once, on the caller's thread
(:class:`~loopgate_lc.stores.sqlite.DirectSQLiteStore`). Then none of its coroutines ever
waits for anything, and one step runs each to its end: no event loop, no thread, and no
import of asyncio, which alone costs such a command a fifth of its start-up.
"""

from __future__ import annotations

import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["loop_running", "run_inline"]

_T = TypeVar("_T")


def run_inline(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` to its end here and now, and return its result (or raise its error).

    Raises:
        RuntimeError: ``coro`` waited for something only an event loop can give (a
            sleep, a future, a thread): it was not written to run inline. It is closed
            first, so its ``finally`` blocks run.
    """
    try:
        coro.send(None)
    except StopIteration as done:
        result: _T = done.value
        return result
    coro.close()
    raise RuntimeError(f"{coro!r} waited for an event loop; it cannot run inline")


def loop_running() -> bool:
    """Whether an asyncio event loop runs in this thread (never, if asyncio was not even
    imported): work that would go to a worker thread to keep a loop responsive can run
    here when there is none."""
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and asyncio.events._get_running_loop() is not None
