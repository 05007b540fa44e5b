"""Where the gateway's work runs: its home event loop.

Stores, notifiers (Telegram's PTB application), timers and background resumes all live on
one loop, the gateway's *home*. Which loop that is depends on who opens the gateway:

- opened (or first used) from a running loop (``async with``, ``aopen``, an ASGI
  server's lifespan, a notebook's ``await``): that loop. Async calls made on it run
  directly, with no hop to another thread and back; sync callers on other threads submit
  to it and block.
- opened (or first used) from sync code: a private loop on a daemon thread, which serves
  every caller as before (sync callers block on a future, async callers on other loops
  await it).

A blocking call made on the home loop's own thread could only deadlock it, so it is
refused with an error that names the async twin. A home loop that has ended
(``asyncio.run`` returned) is forgotten: the next caller becomes the new home.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from loopgate_lc.errors import LoopgateError

T = TypeVar("T")

__all__ = ["Portal"]

_ON_HOME = ("a blocking loopgate_lc call was made from the gateway's own event loop; "
            "use the async twin (the method prefixed with 'a', e.g. 'await gate.arespond(...)')")


class Portal:
    """Runs the gateway's coroutines on its home loop (see the module's docstring).

    Args:
        name: The private loop thread's name.
        on_lost: Called (on the caller's thread) when the home loop is found ended, so
            the owner can drop what lived on it before the next caller opens anew.
    """

    def __init__(self, name: str = "loopgate", on_lost: Callable[[], None] | None = None
                 ) -> None:
        self._name = name
        self._on_lost = on_lost
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None  # set only for the private loop
        self._lock = threading.Lock()

    # the home loop -----------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The home loop; a private one on its own thread when there is none yet."""
        with self._lock:
            self._forget_ended()
            if self._loop is None:
                self._start_private()
            assert self._loop is not None
            return self._loop

    @property
    def private(self) -> bool:
        """True when the home is the portal's own loop thread (opened from sync code)."""
        return self._thread is not None

    @property
    def running(self) -> bool:
        """True while there is a home loop that has not ended."""
        loop = self._loop
        return loop is not None and not loop.is_closed()

    def _start_private(self) -> None:
        ready = threading.Event()
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name=self._name, daemon=True)
        self._thread.start()
        ready.wait(timeout=10)
        self._loop = loop

    def _forget_ended(self) -> None:
        """Drop a home loop that has ended (closed); the owner is told first."""
        loop = self._loop
        if loop is not None and loop.is_closed():
            self._loop = self._thread = None
            if self._on_lost is not None:
                self._on_lost()

    def _home_for(self, running: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
        """The home for an async caller on ``running``: adopted when there is none."""
        with self._lock:
            self._forget_ended()
            if self._loop is None:
                self._loop = running
            return self._loop

    def on_home(self) -> bool:
        """True when called on the home loop's own thread, while it runs."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        try:
            return asyncio.get_running_loop() is loop
        except RuntimeError:
            return self._thread is not None and threading.current_thread() is self._thread

    # running coroutines -----------------------------------------------------------------

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule ``coro`` on the home loop from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self._running_home(coro))

    def soon(self, work: Callable[[], object]) -> None:
        """Call ``work`` on the home loop, from any thread, without waiting for it: no
        task or future is made for a result nobody reads (``work`` reports its own
        errors; one it raises goes to the loop's exception handler)."""
        self._running_home(None).call_soon_threadsafe(work)

    def _running_home(self, coro: Coroutine[Any, Any, Any] | None
                      ) -> asyncio.AbstractEventLoop:
        loop = self.loop
        if self._thread is None and not loop.is_running():
            if coro is not None:
                coro.close()
            raise LoopgateError(
                "the gateway lives on an event loop that is not running now; await its "
                "async methods on that loop, or close it there and open it again")
        return loop

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the home loop and block for its result (sync callers).

        A home loop that is idle between ``run_until_complete`` calls is run for this
        one call, in the calling thread, when that thread runs no loop of its own.
        """
        if self.on_home():
            coro.close()
            raise RuntimeError(_ON_HOME)
        loop = self.loop
        if self._thread is None and not loop.is_running() and not _in_a_loop():
            return loop.run_until_complete(coro)
        return self.submit(coro).result(timeout)

    async def acall(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the home loop and await it: directly when this is the home
        loop (adopting it when the gateway has none), else across threads."""
        running = asyncio.get_running_loop()
        if self._home_for(running) is running:
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def close(self, timeout: float = 5.0) -> None:
        """Forget the home loop; stop and join it when it is the private one."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or loop.is_closed() or thread is None:
            return  # an adopted loop belongs to whoever runs it
        loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join(timeout)
        if not loop.is_running():
            loop.close()


def _in_a_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
