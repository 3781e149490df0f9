"""The bare mux relay: the design's floor in Python, for scenario 1.

    python -m bench.servers.baremux --port P --origin-port Q

It does what muxproxy's mux stream does on the benchmark's path, on the same
stack, and nothing else: httptools reads the outer request and the inner
requests in its de-chunked body, each inner request goes to an origin
connection from a pool of keep-alive connections (opened on demand, never
closed), httptools reads the origin's response, and the inner response
(the origin's fields, Content-Location, the request's Request-Id) joins the
others answered in the same event-loop iteration in one outer chunk.

What it leaves out is everything that makes muxproxy a product: no checks
of either head (framing, field syntax, targets, sizes), no routing, no
header rewriting beyond Host and hop-by-hop fields, no limits, no
backpressure, no timeouts, no metrics, no retries, no Proxy-Status errors.
It trusts the load client and the nginx origin completely and must never
face anything else.  Its CPU per request is therefore what this design
costs in CPython with uvloop and httptools on this machine: the floor under
muxproxy's figure, measured in the same run.  Beside muxproxy's compiled
build it runs compiled by mypyc too (bench/compiled.py builds this unchanged
source), so it is written to type-check as muxproxy's compiled modules do.
The gap between the two is what muxproxy's own work costs; the gap between
the floor and the C proxies is the Python runtime's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc

import httptools
import uvloop

OUTER_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/http\r\nCache-Control: no-store\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
#: Response fields not passed on: hop-by-hop ones, and the framing (httptools
#: hands over the body de-chunked; the inner response gets a Content-Length).
DROPPED = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length"})
DROPPED_LENGTHS = frozenset(len(name) for name in DROPPED)
BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\nContent-Location: %s\r\nRequest-Id: %s\r\nContent-Length: 0\r\n\r\n"


class OriginConnection(asyncio.Protocol):
    """One keep-alive connection to the origin: one exchange at a time."""

    def __init__(self, relay: "Relay") -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.stream: ClientStream | None = None
        self.target = b""
        self.request_id = b""
        self.head = b""
        self.reason = b""
        self.fields: list[bytes] = []
        self.body: list[bytes] = []

    def run(self, stream: "ClientStream", target: bytes, request_id: bytes, head: bytes) -> None:
        self.stream, self.target, self.request_id, self.head = stream, target, request_id, head
        if self.transport is not None:
            self.transport.write(head)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.stream is not None:
            transport.write(self.head)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_status(self, reason: bytes) -> None:
        self.reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) in DROPPED_LENGTHS and name.lower() in DROPPED:
            return
        self.fields += (name, b": ", value, b"\r\n")

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        parser = self.parser
        parts = [
            b"HTTP/1.1 %d %s\r\nContent-Location: " % (parser.get_status_code(), self.reason),
            self.target,
            b"\r\nRequest-Id: ",
            self.request_id,
            b"\r\n",
            *self.fields,
            b"Content-Length: %d\r\n\r\n" % len(body),
            body,
        ]
        stream = self.stream
        assert stream is not None, "a response with no request"
        self.stream, self.reason, self.fields, self.body = None, b"", [], []
        self.relay.idle.append(self)
        stream.answer(b"".join(parts))

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.relay.idle:
            self.relay.idle.remove(self)
        if self.stream is not None:
            self.stream.answer(BAD_GATEWAY % (self.target, self.request_id))


class ClientStream(asyncio.Protocol):
    """One client connection carrying one outer mux request."""

    def __init__(self, relay: "Relay") -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.outer = httptools.HttpRequestParser(_Outer(self))
        self.inner = httptools.HttpRequestParser(self)
        self.target = b""
        self.request_id = b""
        self.fields: list[bytes] = []
        self.in_flight = 0
        self.request_ended = False
        self.output: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.outer.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    # inner requests (httptools callbacks)

    def on_url(self, url: bytes) -> None:
        self.target = url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 10 and name.lower() == b"request-id":
            self.request_id = value
        self.fields += (b"\r\n", name, b": ", value)

    def on_message_complete(self) -> None:
        head = b"".join(
            [self.inner.get_method(), b" ", self.target, b" HTTP/1.1\r\nHost: ", self.relay.authority, *self.fields, b"\r\n\r\n"]
        )
        target, request_id = self.target, self.request_id
        self.fields, self.request_id = [], b""  # the next inner request may carry none
        self.in_flight += 1
        relay = self.relay
        if relay.idle:
            relay.idle.pop().run(self, target, request_id, head)
        else:
            connection = OriginConnection(relay)
            connection.run(self, target, request_id, head)
            relay.open(connection)

    def answer(self, response: bytes) -> None:
        if not self.output:
            self.relay.loop.call_soon(self.flush)
        self.output.append(response)
        self.in_flight -= 1

    def flush(self) -> None:
        body = b"".join(self.output)
        self.output = []
        last = b"0\r\n\r\n" if self.request_ended and not self.in_flight else b""
        self.write(b"%x\r\n%s\r\n%s" % (len(body), body, last))

    def write(self, data: bytes) -> None:
        assert self.transport is not None, "data before the connection was made"
        self.transport.write(data)

    def close(self) -> None:
        assert self.transport is not None, "data before the connection was made"
        self.transport.close()


class _Outer:
    """httptools callbacks of the outer request."""

    def __init__(self, stream: ClientStream) -> None:
        self.stream = stream

    def on_headers_complete(self) -> None:
        self.stream.write(OUTER_HEAD)

    def on_body(self, data: bytes) -> None:
        self.stream.inner.feed_data(data)

    def on_message_complete(self) -> None:
        stream = self.stream
        stream.request_ended = True
        if not stream.in_flight and not stream.output:
            stream.write(b"0\r\n\r\n")


class Relay:
    def __init__(self, loop: asyncio.AbstractEventLoop, origin_port: int) -> None:
        self.loop = loop
        self.origin_port = origin_port
        self.authority = b"127.0.0.1:%d" % origin_port
        self.idle: list[OriginConnection] = []
        self._connects: set[asyncio.Task[None]] = set()

    def open(self, connection: OriginConnection) -> None:
        task = self.loop.create_task(self._connect(connection))
        self._connects.add(task)
        task.add_done_callback(self._connects.discard)

    async def _connect(self, connection: OriginConnection) -> None:
        try:
            await self.loop.create_connection(lambda: connection, "127.0.0.1", self.origin_port)
        except OSError:
            connection.connection_lost(None)


async def serve(port: int, origin_port: int) -> None:
    loop = asyncio.get_running_loop()
    relay = Relay(loop, origin_port)
    server = await loop.create_server(lambda: ClientStream(relay), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    # Not __doc__: compiled by mypyc (bench/compiled.py), the module has none.
    parser = argparse.ArgumentParser(description="The bare mux relay: the design's floor, for scenario 1.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--origin-port", type=int, required=True)
    args = parser.parse_args()
    # The garbage collector as muxproxy's server sets it (proxy.cli.tune_gc;
    # not imported, so that the relay stays apart from muxproxy's code):
    # the same stack includes the same runtime settings.
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    uvloop.run(serve(args.port, args.origin_port))


if __name__ == "__main__":
    main()
