"""The constant-rate HTTP/1.1 client of scenario 5.

    python -m bench.clients.h1rate --port P --path /100b --rate 2000 --duration 5

Issues GET requests at a constant rate (open loop: the schedule never waits
for responses) over a pool of keep-alive connections, one request at a time
per connection, and prints one JSON object with the same fields as
bench/clients/muxload.py: requests, errors, elapsed time, requests per
second, latency percentiles (microseconds), its own CPU time, and the
largest lag of the schedule.

Strategy: the same pacing as the mux client's open loop
(bench/clients/pacing.py), so the two are comparable.  Latency counts from
the tick that issued a request to the end of its response, including any
wait for a free connection (the pool is opened before the clock starts and is large
enough that at 2,000 req/s a request rarely waits).  uvloop, httptools, bare
protocols.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import resource
import sys
import time

import httptools
import uvloop

from bench.clients.pacing import pace
from bench.stats import latency_summary_us

#: Seconds to wait for outstanding responses after the last request was issued.
DRAIN_TIMEOUT = 30.0


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.request = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (args.path.encode("ascii"), args.port)
        self.idle: collections.deque[Connection] = collections.deque()
        self.waiting: collections.deque[float] = collections.deque()  # issue ticks of queued requests
        self.latencies: list[float] = []
        self.errors = 0
        self.outstanding = 0
        self.last_done = 0.0
        self.max_lag = 0.0
        self.drained: asyncio.Future | None = None

    def issue(self, count: int, tick: float) -> None:
        for _ in range(count):
            self.outstanding += 1
            if self.idle:
                self.idle.popleft().send(tick)
            else:
                self.waiting.append(tick)

    def release(self, connection: "Connection") -> None:
        if self.waiting:
            connection.send(self.waiting.popleft())
        else:
            self.idle.append(connection)

    def done(self, started: float, ok: bool) -> None:
        now = time.perf_counter()
        self.latencies.append(now - started)
        self.last_done = now
        self.outstanding -= 1
        if not ok:
            self.errors += 1
        if self.outstanding == 0 and self.drained is not None and not self.drained.done():
            self.drained.set_result(None)


class Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.started = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.started:
            self.run.done(self.started, ok=False)
        if self in self.run.idle:
            self.run.idle.remove(self)

    def send(self, tick: float) -> None:
        self.started = tick
        self.transport.write(self.run.request)

    # httptools callback
    def on_message_complete(self) -> None:
        started, self.started = self.started, 0.0
        self.run.done(started, ok=200 <= self.parser.get_status_code() < 300)
        self.run.release(self)


async def main(args: argparse.Namespace) -> dict:
    loop = asyncio.get_running_loop()
    run = Run(args)
    for _ in range(args.connections):
        _, connection = await loop.create_connection(lambda: Connection(run), "127.0.0.1", args.port)
        run.idle.append(connection)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    run.max_lag = await pace(args.rate, args.duration, run.issue)
    if run.outstanding:
        run.drained = loop.create_future()
        await asyncio.wait_for(run.drained, DRAIN_TIMEOUT)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = (run.last_done or time.perf_counter()) - start
    for connection in run.idle:
        connection.transport.close()
    return {
        "requests": len(run.latencies),
        "errors": run.errors,
        "elapsed_s": elapsed,
        "rps": len(run.latencies) / elapsed if elapsed > 0 else 0.0,
        "latency_us": latency_summary_us(run.latencies),
        "client_cpu_s": (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime),
        "max_lag_ms": run.max_lag * 1e3,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.clients.h1rate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/100b")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds to keep issuing requests")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections in the pool")
    result = uvloop.run(main(parser.parse_args()))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    sys.exit(0 if result["requests"] else 1)
