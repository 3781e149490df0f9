"""The mux load client: inner requests over application/http streams.

    python -m bench.clients.muxload --port P --path /100b --connections C --in-flight K --requests N
    python -m bench.clients.muxload --port P --path /100b --rate 2000 --duration 5

Opens C outer connections, each one duplex stream (POST /_mux, chunked),
and either keeps K inner requests in flight on each (closed loop) until N
requests or the duration are done, or issues requests at a constant rate
spread over the streams (open loop, --rate).  Prints one JSON object: inner
requests completed, errors, elapsed time, inner requests per second, latency
percentiles (microseconds), and its own CPU time.

Strategy, chosen so the client is not the bottleneck (its ceiling against
bench/servers/nullmux.py is reported with every run):
* uvloop and bare `asyncio.Protocol`s: no streams, no tasks per request.
* httptools parses both levels: one parser reads the outer response and
  hands its de-chunked (and, with --gzip, inflated) body to a second parser,
  which reads the inner responses back to back.  Only the callbacks that are
  needed exist (httptools skips absent ones).
* Requests are written in batches: every time responses arrive, all the
  requests that now fit are framed into a single outer chunk and written
  with one call.
* Latency is matched by Request-Id: send time in a dict keyed by the id's
  bytes, exactly as it comes back from the parser.  A response ends when
  the read that completes it arrived: one clock reading per read, taken
  before parsing, so that parsing earlier responses in the same read is
  neither counted against later ones nor paid for once per response.
* Open loop: bench/clients/pacing.py issues the requests that have fallen
  due, round-robin over the streams; latency counts from the tick that
  issued them, and the largest lag of the schedule is reported.
* Compiled: the benchmark runs this unchanged source compiled by mypyc
  (bench/compiled.py), as wrk and h2load, the peers' clients, are C: it
  shares the load core with the origin, and what it spends is taken from
  the origin.  Hence the type annotations, and `main()` as the entry point.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import resource
import sys
import time
import zlib

import httptools
import uvloop

from bench.clients.pacing import pace
from bench.stats import latency_summary_us

#: The help text's first line (not __doc__: compiled by mypyc, bench/compiled.py, the module has none).
SUMMARY = "The mux load client: inner requests over application/http streams."
MUX_PATH = b"/_mux"
#: Seconds to wait for in-flight requests after the last one was issued.
DRAIN_TIMEOUT = 30.0


class Run:
    """State shared by all streams of one load run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loop = asyncio.get_running_loop()
        self.next_id = 0
        self.remaining = args.requests if args.requests else None  # None: bounded by the deadline
        self.deadline = 0.0
        self.latencies: list[float] = []
        self.errors = 0
        self.statuses: dict[int, int] = {}
        self.last_done = 0.0
        self.max_lag = 0.0
        extra = b"".join(b"%s\r\n" % header.encode("latin-1") for header in args.inner_header)
        self.request_prefix = b"GET " + args.path.encode("ascii") + b" HTTP/1.1\r\nRequest-Id: "
        self.request_suffix = b"\r\n" + extra + b"\r\n"

    def may_issue(self) -> bool:
        if self.remaining is not None:
            return self.remaining > 0
        return time.perf_counter() < self.deadline

    def take(self, wanted: int) -> int:
        """How many of `wanted` requests may still be issued."""
        if self.remaining is None:
            return wanted if time.perf_counter() < self.deadline else 0
        granted = min(wanted, self.remaining)
        self.remaining -= granted
        return granted


class _OuterCallbacks:
    """httptools callbacks for the outer response of one stream."""

    def __init__(self, stream: "MuxStream") -> None:
        self.stream = stream
        self.inflater: "zlib._Decompress | None" = None

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-encoding" and value.strip().lower() == b"gzip":
            self.inflater = zlib.decompressobj(31)

    def on_headers_complete(self) -> None:
        self.stream.on_outer_head(self.stream.outer.get_status_code())

    def on_body(self, data: bytes) -> None:
        if self.inflater is not None:
            data = self.inflater.decompress(data)
        self.stream.inner.feed_data(data)

    def on_message_complete(self) -> None:
        self.stream.on_outer_end()


class MuxStream(asyncio.Protocol):
    """One outer connection carrying one duplex mux stream."""

    def __init__(self, run: Run, head: bytes) -> None:
        self.run = run
        self.head = head
        self.transport: asyncio.Transport | None = None
        self.outer = httptools.HttpResponseParser(_OuterCallbacks(self))
        self.inner = httptools.HttpResponseParser(self)
        self.sent: dict[bytes, float] = {}
        self.request_id = b""
        self.completed_since_write = 0
        #: When the read being parsed arrived: the completion time of every
        #: response it ends (one clock reading per read, not per response).
        self.received_at = 0.0
        self.ended = False
        self.opened = run.loop.create_future()
        self.finished = run.loop.create_future()

    # -- transport callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.write(self.head)

    def data_received(self, data: bytes) -> None:
        self.received_at = time.perf_counter()
        try:
            self.outer.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"bad response stream: {exc!r}")
            return
        if self.completed_since_write and self.run.args.rate is None:
            count, self.completed_since_write = self.completed_since_write, 0
            self.issue(self.run.take(count))
        self.maybe_end()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            self._fail(f"connection lost with {len(self.sent)} requests in flight: {exc!r}")

    # -- inner response callbacks (httptools)
    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 10 and name.lower() == b"request-id":
            self.request_id = value

    def on_message_complete(self) -> None:
        now = self.received_at
        run = self.run
        started = self.sent.pop(self.request_id, None)
        status = self.inner.get_status_code()
        if started is None:
            run.errors += 1
        else:
            run.latencies.append(now - started)
        run.statuses[status] = run.statuses.get(status, 0) + 1
        if not 200 <= status < 300:
            run.errors += 1
        run.last_done = now
        self.request_id = b""
        self.completed_since_write += 1

    # -- outer response
    def on_outer_head(self, status: int) -> None:
        if status != 200:
            self._fail(f"outer response {status}")
        elif not self.opened.done():
            self.opened.set_result(None)

    def on_outer_end(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)
        self.close()

    # -- sending
    def issue(self, count: int, started: float | None = None) -> None:
        """Write `count` new inner requests as one outer chunk."""
        if count <= 0 or self.ended:
            return
        run = self.run
        first = run.next_id
        run.next_id += count
        prefix, suffix = run.request_prefix, run.request_suffix
        ids = [b"%d" % n for n in range(first, first + count)]
        body = b"".join([prefix + rid + suffix for rid in ids])
        now = time.perf_counter() if started is None else started
        sent = self.sent
        for rid in ids:
            sent[rid] = now
        self.write(b"%x\r\n%s\r\n" % (len(body), body))

    def maybe_end(self) -> None:
        """End the request body once nothing more will be issued and nothing is in flight."""
        if not self.ended and not self.sent and not self.run.may_issue():
            self.ended = True
            self.write(b"0\r\n\r\n")

    def write(self, data: bytes) -> None:
        assert self.transport is not None, "writing before the connection was made"
        self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _fail(self, reason: str) -> None:
        self.run.errors += len(self.sent) or 1
        self.sent.clear()
        for future in (self.opened, self.finished):
            if not future.done():
                future.set_exception(ConnectionError(reason))
        self.close()


def outer_head(args: argparse.Namespace) -> bytes:
    lines = [
        b"POST " + MUX_PATH + b" HTTP/1.1",
        b"Host: 127.0.0.1:%d" % args.port,
        b"Content-Type: application/http",
        b"Transfer-Encoding: chunked",
    ]
    if args.gzip:
        lines.append(b"Accept-Encoding: gzip")
    lines += [header.encode("latin-1") for header in args.outer_header]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def run_load(args: argparse.Namespace) -> dict:
    run = Run(args)
    loop = run.loop
    head = outer_head(args)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    # Open loop: issuing ends when pace() returns; closed loop: at the deadline.
    run.deadline = started + args.duration if args.duration and not args.rate else float("inf")
    streams = []
    for _ in range(args.connections):
        _, stream = await loop.create_connection(lambda: MuxStream(run, head), "127.0.0.1", args.port)
        streams.append(stream)
    await asyncio.gather(*(stream.opened for stream in streams))
    if args.rate:
        turn = itertools.cycle(streams)

        def issue(count: int, tick: float) -> None:
            for _ in range(count):
                next(turn).issue(1, tick)

        run.max_lag = await pace(args.rate, args.duration, issue)
        run.deadline = 0.0
        for stream in streams:
            stream.maybe_end()
    else:
        for stream in streams:
            stream.issue(run.take(args.in_flight))
            stream.maybe_end()
    await asyncio.wait_for(asyncio.gather(*(stream.finished for stream in streams)), args.duration + DRAIN_TIMEOUT if args.duration else None)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = (run.last_done or time.perf_counter()) - started
    return {
        "requests": len(run.latencies),
        "errors": run.errors,
        "statuses": {str(code): count for code, count in sorted(run.statuses.items())},
        "elapsed_s": elapsed,
        "rps": len(run.latencies) / elapsed if elapsed > 0 else 0.0,
        "latency_us": latency_summary_us(run.latencies),
        "client_cpu_s": (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime),
        "max_lag_ms": run.max_lag * 1e3,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.clients.muxload", description=SUMMARY)
    parser.add_argument("--port", type=int, required=True, help="mux server on 127.0.0.1:PORT")
    parser.add_argument("--path", default="/100b", help="inner request target")
    parser.add_argument("--connections", type=int, default=1, help="outer connections (C)")
    parser.add_argument("--in-flight", type=int, default=1, help="inner requests in flight per connection (K)")
    bound = parser.add_mutually_exclusive_group(required=True)
    bound.add_argument("--requests", type=int, help="total inner requests (N)")
    bound.add_argument("--duration", type=float, help="seconds to keep issuing requests")
    parser.add_argument("--rate", type=float, help="open loop: inner requests per second (needs --duration)")
    parser.add_argument("--gzip", action="store_true", help="send Accept-Encoding: gzip on the outer request")
    parser.add_argument("--outer-header", action="append", default=[], metavar="'Name: value'")
    parser.add_argument("--inner-header", action="append", default=[], metavar="'Name: value'")
    args = parser.parse_args(argv)
    if args.rate is not None and args.duration is None:
        parser.error("--rate needs --duration")
    return args


def main() -> None:
    result = uvloop.run(run_load(parse_args()))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    sys.exit(0 if result["requests"] else 1)


if __name__ == "__main__":
    main()
