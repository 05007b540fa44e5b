"""uvicorn's HTTP/1.1 protocol (httptools) with each answer written to the socket in one piece.

uvicorn writes a response's head the moment the app starts it and its body when the body
comes: two writes, two TCP segments, and a client that reads the head first is woken twice.
An app that answers in one go (every JSON answer of the API) hands uvicorn both within one
step of the event loop, so this protocol's transport collects what is written during a step
and writes it once when the step ends. That saves the server a system call and the client a
wake-up per answer: with 8 clients deciding on SQLite, about 7% of the CPU the server's loop
thread spends on a decision and a fifth of a client's. A streamed answer still goes out chunk
by chunk, one step later at most, and a step that writes a lot writes it at once
(``FLUSH_AT``), so uvicorn's flow control still sees a full socket buffer.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, cast

__all__ = ["FLUSH_AT", "http_protocol"]

FLUSH_AT = 64 * 1024
"""Bytes collected within one step that are written at once instead of at its end."""


class _OneWrite(asyncio.Transport):
    """A transport that writes what one step of the loop wrote in one call to the real one;
    everything else is the real transport's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        # a transport takes what it is given at once, so a caller may reuse its buffer
        self._pending.append(data if isinstance(data, bytes) else bytes(data))
        self._size += len(data)
        if self._size >= FLUSH_AT:
            self._flush()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _flush(self) -> None:
        pending, self._pending, self._size = self._pending, [], 0
        if not pending or self._transport.is_closing():
            return  # the connection is gone, and what it was owed with it
        self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending, self._size = [], 0
        self._transport.abort()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()


@functools.cache
def http_protocol() -> Any:
    """What to pass uvicorn as ``http``: the one-write protocol, or ``"auto"`` (uvicorn's
    own choice) where httptools is not installed."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return "auto"

    class OneWriteProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol on a :class:`_OneWrite` transport."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(_OneWrite(cast(asyncio.Transport, transport), self.loop))

    return OneWriteProtocol
