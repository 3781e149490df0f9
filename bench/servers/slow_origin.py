"""The slow origin of scenario 2: every response leaves after a fixed delay.

    python -m bench.servers.slow_origin --port P --delay 0.05

An HTTP/1.1 keep-alive server that answers every request with a 100-byte
body `--delay` seconds after the request arrived.  Requests on one
connection are answered in order (a pipelining client gets them back to back
after the delay).  The delay stands for an application's think time; the
point of the scenario is how many of those waits a client can overlap.

Strategy: uvloop, httptools, one timer per request; nothing in here takes
measurable time next to 50 ms, and it holds hundreds of connections at once.
"""

from __future__ import annotations

import argparse
import asyncio

import httptools
import uvloop

BODY = b"s" * 100
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n%s" % (
    len(BODY),
    BODY,
)


class SlowConnection(asyncio.Protocol):
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    # httptools callback
    def on_message_complete(self) -> None:
        self.loop.call_later(self.delay, self._respond)

    def _respond(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(RESPONSE)


async def serve(port: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SlowConnection(delay), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.servers.slow_origin", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds before each response (default 0.05)")
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.delay))
