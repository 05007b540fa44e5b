"""The one-write transport under ``loopgate-lc serve``: what one step of the loop writes
reaches the socket in one write, and nothing written is lost, reordered or sent late."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from loopgate_lc._http import FLUSH_AT, _OneWrite, http_protocol
from loopgate_lc.background import BackgroundServer


class _Socket(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False
        self.aborted = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.aborted = self.closing = True

    def get_write_buffer_size(self) -> int:
        return 0


async def test_what_one_step_writes_goes_out_in_one_write() -> None:
    real = _Socket()
    transport = _OneWrite(real, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"ok")
    assert real.writes == []
    assert transport.get_write_buffer_size() == 40
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
    transport.write(b"next")
    await asyncio.sleep(0)
    assert real.writes[1:] == [b"next"]


async def test_a_large_write_goes_out_at_once() -> None:
    real = _Socket()
    transport = _OneWrite(real, asyncio.get_running_loop())
    transport.write(b"head")
    transport.write(b"x" * FLUSH_AT)
    assert real.writes == [b"head" + b"x" * FLUSH_AT]  # flow control sees it now
    await asyncio.sleep(0)
    assert len(real.writes) == 1


async def test_close_sends_what_is_collected_first_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    real = _Socket()
    transport = _OneWrite(real, loop)
    transport.write(b"bye")
    transport.close()
    assert real.writes == [b"bye"] and real.closing
    real = _Socket()
    transport = _OneWrite(real, loop)
    transport.write(b"lost")
    transport.abort()
    await asyncio.sleep(0)
    assert real.writes == [] and real.aborted


async def test_nothing_is_written_to_a_connection_that_closed_meanwhile() -> None:
    real = _Socket()
    transport = _OneWrite(real, asyncio.get_running_loop())
    transport.write(b"late")
    real.closing = True
    await asyncio.sleep(0)
    assert real.writes == []


def test_answers_whole_and_streamed_arrive_intact() -> None:
    assert http_protocol() != "auto"  # httptools comes with the server extra

    async def whole(request: Request) -> Response:
        return JSONResponse({"echo": (await request.body()).decode()})

    async def streamed(request: Request) -> Response:
        async def chunks() -> Any:
            for i in range(50):
                yield b"%d," % i
                await asyncio.sleep(0)
            yield b"x" * (3 * FLUSH_AT)
        return StreamingResponse(chunks())

    app = Starlette(routes=[Route("/whole", whole, methods=["POST"]),
                            Route("/streamed", streamed)])
    server = BackgroundServer(app).start()
    try:
        with httpx.Client(base_url=server.url) as client:
            for i in range(20):  # one keep-alive connection, answer after answer
                assert client.post("/whole", content=f"n{i}").json() == {"echo": f"n{i}"}
            body = client.get("/streamed").content
            assert body == b"".join(b"%d," % i for i in range(50)) + b"x" * (3 * FLUSH_AT)
    finally:
        server.stop()


async def test_a_buffer_written_can_be_reused_at_once() -> None:
    real = _Socket()
    transport = _OneWrite(real, asyncio.get_running_loop())
    buffer = bytearray(b"first")
    transport.write(buffer)
    buffer[:] = b"xxxxx"
    await asyncio.sleep(0)
    assert real.writes == [b"first"]
