"""What the sans-IO core, and the shell's origin side, cost per inner request, without sockets.

    python -m bench.micro                 # 100 inner requests per batch, best of 7 repeats
    python -m bench.micro --batch 10 --repeats 15

Strategy: scenario 1 measures muxproxy whole, kernel included; this times
the protocol core alone, stage by stage, on the same messages: the inner
GETs the mux load client sends, and the response head nginx sends for
bench's 100-byte file.  Each stage runs `batch` inner requests at a time,
as one outer read brings them in, and is repeated; the best repeat is
reported (the least disturbed one: the figures are for comparing two
versions of the code on one machine, not for the README's targets).

Stages, per inner request, in microseconds:

- inner parsing: RequestParser alone on the batch (llhttp and our checks);
- inner parsing and dispatch: MuxSession.receive_data until its
  ForwardRequest commands (parsing, routing, header rewriting);
- llhttp alone: httptools with empty callbacks on the origin response, the
  floor under the next line;
- origin response parsing: ResponseParser.start + feed (validation, field
  sorting, framing and reuse decisions);
- answer: MuxSession.response_complete + take_output (the inner response
  built and queued for the client);
- origin exchange: the asyncio shell's side of each inner request's origin
  exchange, on reused pooled connections whose transports discard what they
  are given (proxy/shell/origin.py): OriginPool.start (exchange, pool
  checkout, request head joined and written), then the connection's
  data_received (the ResponseParser, the exchange's completion, the release
  to the pool, the sink, here a stub).  Less "origin response parsing", it
  is what the shell adds to the origin side;
- bare relay: the same three steps done by bench/servers/baremux.py, the
  floor of scenario 1 (its own classes, with transports that discard what
  they are given): httptools on the inner requests, the origin request
  heads, httptools on the origin responses, the inner responses joined into
  one outer chunk, by the interpreted relay;
- bare relay, compiled: the same, by the relay compiled by mypyc as
  muxproxy's build is (bench/compiled.py), when it is: the floor scenario 1
  runs.  "core over the bare relay" is muxproxy's core in all less this
  (less the interpreted relay on a pure-Python build): what muxproxy's
  checks and bookkeeping cost inside the core.  The rest of scenario 1's
  "muxproxy's own work" is in the shell.

The garbage collector runs as it does in muxproxy's server process
(proxy.cli.tune_gc: start-up objects frozen, a gen-0 threshold of 10,000).
With Python's default threshold (700) a collection would run every few
dozen requests and traverse every request still in flight, which the
server does not pay (at the default threshold, more than half of "inner
parsing and dispatch" was the collector's).

It needs nothing beyond muxproxy's own dependencies and starts no process.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from types import ModuleType
from typing import Callable

import httptools
import uvloop

from bench.compiled import floor_relay
from bench.servers import baremux
from proxy.cli import tune_gc
from proxy.core.forwarding import ClientInfo
from proxy.core.http1.request_parser import RequestParser
from proxy.core.http1.response_parser import ResponseParser
from proxy.core.mux.commands import ForwardRequest
from proxy.core.mux.session import MuxLimits, MuxSession
from proxy.core.routing import Route, RouteTable, Timeouts
from proxy.errors import ProxyError
from proxy.shell.origin import OriginConnection, OriginPool

#: The stage of the bare relay compiled as muxproxy is (bench/compiled.py), the
#: floor scenario 1 runs; timed when muxproxy's build is compiled.
COMPILED_RELAY = "bare relay, compiled"

#: The response head nginx 1.22 sends for a static file, as bench's origin
#: serves /100b (field order and spelling as nginx writes them).
ORIGIN_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.22.1\r\n"
    b"Date: Mon, 23 Nov 2026 18:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Length: 100\r\n"
    b"Last-Modified: Mon, 23 Nov 2026 17:00:00 GMT\r\n"
    b"Connection: keep-alive\r\n"
    b'ETag: "6742171a-64"\r\n'
    b"Accept-Ranges: bytes\r\n"
    b"\r\n" + b"x" * 100
)


def inner_requests(count: int, first_id: int = 0) -> bytes:
    """What bench/clients/muxload.py writes for `count` inner requests."""
    return b"".join(b"GET /100b HTTP/1.1\r\nRequest-Id: %d\r\n\r\n" % (first_id + i) for i in range(count))


def new_session(batch: int) -> MuxSession:
    """A session as bench/configs/muxproxy.toml makes one: one route, no
    access log, mux.max_in_flight 256 (more if the batch is larger, so that
    every request of a batch is forwarded at once).  The load client's outer
    request carries none of the fields mux.inherit_headers names."""
    route = Route("route[1]", "origin", b"/", frozenset(), (), False, "preserve", Timeouts(5.0, 60.0, 300.0))
    return MuxSession(
        limits=MuxLimits(max_in_flight=max(256, batch)),
        routes=RouteTable([route]),
        client=ClientInfo(b"127.0.0.1", b"http", b"muxproxy"),
        outer_host=b"127.0.0.1:8080",
        inherited={},
        proxy_name=b"muxproxy",
        gzip_response=False,
        gzip_request=False,
        clock=time.monotonic,
        report_completions=False,
    )


class _EmptyCallbacks:
    def on_message_begin(self) -> None: ...
    def on_status(self, reason: bytes) -> None: ...
    def on_header(self, name: bytes, value: bytes) -> None: ...
    def on_headers_complete(self) -> None: ...
    def on_body(self, data: bytes) -> None: ...
    def on_message_complete(self) -> None: ...


class _DiscardingTransport:
    def write(self, data: bytes) -> None: ...


class _LaterLoop:
    """baremux's only use of its loop here: call_soon(flush); the stage flushes itself."""

    def call_soon(self, callback: Callable[[], None]) -> None: ...


class _DiscardingOriginTransport(_DiscardingTransport):
    def set_write_buffer_limits(self, high: int) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def abort(self) -> None: ...


class _CountingSink:
    """The exchange's ResponseSink: the small response arrives whole."""

    def __init__(self) -> None:
        self.completed = 0

    def on_response_complete(self, head: object, body: bytes) -> None:
        self.completed += 1

    def on_response_head(self, head: object) -> None:
        raise RuntimeError("the origin exchange stage took the streaming path")

    on_response_data = on_response_head

    def on_response_end(self) -> None:
        raise RuntimeError("the origin exchange stage took the streaming path")

    def on_response_error(self, error: ProxyError) -> None:
        raise RuntimeError(f"the origin exchange stage failed: {error}")

    def pause_request_body(self) -> None: ...
    def resume_request_body(self) -> None: ...


def origin_exchange(batch: int, transport_type: type = _DiscardingOriginTransport) -> Callable[[], None]:
    """One round of the shell's origin side for `batch` inner requests: each
    started on a pooled keep-alive connection, answered, and released.  The
    connections' transports are `transport_type`s (by default they discard)."""
    loop = uvloop.new_event_loop()

    async def new_pool() -> OriginPool:  # the pool takes the running loop
        return OriginPool(
            "origin", [("127.0.0.1", 8000)], max_connections=batch, idle_timeout=60.0, queue_timeout=5.0,
            max_queue=batch, max_fails=1, fail_timeout=10.0, max_response_head_size=16384,
        )

    pool = loop.run_until_complete(new_pool())
    server = pool.state.servers[0]
    connections = []
    for _ in range(batch):
        connection = OriginConnection(pool, server)
        connection.connection_made(transport_type())
        pool.state.active += 1  # as if connected: released, it becomes idle
        pool.connections.add(connection)
        pool.release(connection, loop.time())
        connections.append(connection)
    session = new_session(batch)
    session.receive_data(inner_requests(batch))
    requests = [command.request for command in session.take_commands() if type(command) is ForwardRequest]
    sink = _CountingSink()

    def round_() -> None:
        before = sink.completed
        for request in requests:
            pool.start(request, sink)  # type: ignore[arg-type]
        if pool.state.idle_count:
            raise RuntimeError("an inner request did not get a pooled connection")
        for connection in connections:
            connection.data_received(ORIGIN_RESPONSE)
        if sink.completed - before != batch or pool.state.idle_count != batch:
            raise RuntimeError("the origin exchange stage did not complete and release every exchange")

    return round_


def bare_relay(
    batch: int, client_transport: object | None = None, relay_module: ModuleType = baremux
) -> Callable[[], None]:
    """One round of the bare relay's protocol work on `batch` inner requests
    (its outer chunk goes to `client_transport`, by default nowhere), by the
    relay in `relay_module`: by default the interpreted one."""
    relay = relay_module.Relay(_LaterLoop(), 8080)
    connections = [relay_module.OriginConnection(relay) for _ in range(batch)]
    for connection in connections:
        connection.transport = _DiscardingTransport()  # type: ignore[assignment]
    relay.idle[:] = connections
    stream = relay_module.ClientStream(relay)
    stream.transport = client_transport or _DiscardingTransport()  # type: ignore[assignment]
    requests = inner_requests(batch)

    def round_() -> None:
        stream.inner.feed_data(requests)
        if relay.idle or stream.in_flight != batch:
            raise RuntimeError("the bare relay did not forward every inner request")
        for connection in connections:
            connection.data_received(ORIGIN_RESPONSE)
        if stream.in_flight or len(stream.output) != batch:
            raise RuntimeError("the bare relay did not answer every inner request")
        stream.flush()

    return round_


def measure(batch: int, repeats: int, rounds_per_repeat: int = 50) -> dict[str, float]:
    """Best-of-`repeats` microseconds per inner request for each stage."""
    requests = inner_requests(batch)
    request_parser = RequestParser(max_head_size=16384, max_header_count=100, require_host=False)

    def inner_parsing() -> None:
        request_parser.feed(requests)

    # One session serves every round: each round's requests are answered
    # (stage "answer") before the next round's arrive, as in a real stream.
    session = new_session(batch)
    origin_parsers = [ResponseParser(max_head_size=16384, max_header_count=100) for _ in range(batch)]
    forwarded: list[ForwardRequest] = []
    parsed: list[list] = []

    def dispatch() -> None:
        session.receive_data(requests)
        forwarded[:] = [c for c in session.take_commands() if type(c) is ForwardRequest]
        if len(forwarded) != batch:
            raise RuntimeError(f"{len(forwarded)} of {batch} inner requests were forwarded")

    def origin_parsing() -> None:
        parsed[:] = []
        for parser in origin_parsers:
            parser.start(b"GET")
            parsed.append(parser.feed(ORIGIN_RESPONSE))

    def answer() -> None:
        for command, events in zip(forwarded, parsed):
            session.response_complete(command.stream_id, events[0], events[1].data)
        session.take_commands()
        if not session.take_output():
            raise RuntimeError("the session wrote no inner responses")

    floor = [httptools.HttpResponseParser(_EmptyCallbacks()) for _ in range(batch)]

    def llhttp_alone() -> None:
        for parser in floor:
            parser.feed_data(ORIGIN_RESPONSE)

    # In this order: "answer" needs what the two stages before it made.
    stages: list[tuple[str, Callable[[], None]]] = [
        ("inner parsing", inner_parsing),
        ("inner parsing and dispatch", dispatch),
        ("llhttp alone", llhttp_alone),
        ("origin response parsing", origin_parsing),
        ("answer", answer),
        ("origin exchange", origin_exchange(batch)),
        ("bare relay", bare_relay(batch)),
    ]
    relay = floor_relay()
    if relay.compiled:
        stages.append((COMPILED_RELAY, bare_relay(batch, relay_module=relay.module())))
    best = {name: float("inf") for name, _ in stages}
    for _ in range(repeats):
        spent = dict.fromkeys(best, 0.0)
        for _ in range(rounds_per_repeat):
            for name, stage in stages:
                started = time.perf_counter()
                stage()
                spent[name] += time.perf_counter() - started
        for name, seconds in spent.items():
            best[name] = min(best[name], seconds / (rounds_per_repeat * batch) * 1e6)
    return best


def render(figures: dict[str, float], batch: int, repeats: int) -> str:
    core = figures["inner parsing and dispatch"] + figures["origin response parsing"] + figures["answer"]
    lines = [
        f"sans-IO core and the shell's origin side, {batch} inner requests per batch, "
        f"best of {repeats} repeats (µs per inner request):",
        "",
    ]
    lines += [f"{figures[name]:8.2f}  {name}" for name in figures]
    lines += [f"{core:8.2f}  core in all (dispatch + origin response parsing + answer)"]
    reference = COMPILED_RELAY if COMPILED_RELAY in figures else "bare relay"
    lines += [f"{core - figures[reference]:8.2f}  core over the bare relay (core in all - {reference})"]
    shell = figures["origin exchange"] - figures["origin response parsing"]
    lines += [f"{shell:8.2f}  the shell's origin side (origin exchange - origin response parsing)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=100, help="inner requests per outer read (K)")
    parser.add_argument("--repeats", type=int, default=7, help="repeats; the best is reported")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        parser.error("--batch and --repeats must be at least 1")
    tune_gc()  # as the server does (module note)
    print(render(measure(args.batch, args.repeats), args.batch, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
