"""Scenario 1: throughput of small and medium responses through each proxy.

Every configuration serves the same two files from the same nginx origin
(100 B and 10 KiB), under closed-loop load at 1, 10 and 100 concurrent
requests:
* direct to the origin (a second, identical nginx on the server core):
  the reference of every ratio, taken at the same concurrency and size;
* nginx and HAProxy as HTTP/1.1 reverse proxies, muxproxy as a plain
  HTTP/1.1 proxy: wrk with 1/10/100 connections;
* nghttpx and HAProxy with an HTTP/2 front: h2load with one connection
  carrying 1/10/100 streams, and 10 connections x 10 streams;
* muxproxy's mux stream: the mux load client with one outer connection and
  K = 1/10/100 inner requests in flight, and 10 outer connections x 10.
* the bare mux relay (bench/servers/baremux.py): muxproxy's design on the
  same stack with none of its checks, at the mux stream's heaviest loads
  (1 x 100 and 10 x 10): the floor under muxproxy's CPU per request, so the
  report can say how much of muxproxy's figure is its own work and how much
  is the design in CPython.
The mux load client's ceiling is measured in the same rounds against the
null mux server (bench/servers/nullmux.py) on the server core.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from bench import report
from bench.measure import with_server_cpu
from bench.peers import BareMux, HAProxy, MuxProxy, Nghttpx, NginxOrigin, NginxProxy, NullMux
from bench.plots import Panel, bar_panels
from bench.runner import Case, Context, Plan, Results, Section, TargetRow

SIZES = (("/100b", "100 B"), ("/10k", "10 KiB"))
HTTP1_CONNECTIONS = (1, 10, 100)
#: (connections, streams or inner requests in flight per connection)
MULTIPLEXED = ((1, 1), (1, 10), (1, 100), (10, 10))
CEILING_LOADS = ((1, 100), (10, 10))
#: Loads at which the bare relay (the floor) runs beside the mux stream.
FLOOR_LOADS = ((1, 100), (10, 10))
FLOOR_LABEL = "bare mux relay (floor: same design, no checks)"
#: How the targets table names the ratio of CPU per request (the peer's over
#: muxproxy's, same round).  It estimates the throughput ratio once the load
#: side stops being a limit: each server runs on one core, so it serves about
#: one second over its CPU per request.  If anything it flatters muxproxy,
#: which is near 100 % CPU already, while a peer below it would likely get a
#: little cheaper per request when saturated (more events per wake-up).
CAPACITY_NOTE = "on CPU per request (the peer's ÷ muxproxy's: what one saturated core each would serve)"


LEVELS = ["1", "10", "100", "10×10"]


def _level(connections: int, per_connection: int) -> str:
    """Concurrent requests as the plot's x axis shows them."""
    return str(connections * per_connection) if connections == 1 else f"{connections}×{per_connection}"


class Throughput:
    number = 1
    title = "Throughput"

    def plan(self, ctx: Context) -> Plan:
        server_core, load_core = ctx.placement.server_core, ctx.placement.load_core
        origin = NginxOrigin("origin", ctx.run_dir, load_core)
        direct = NginxOrigin("direct-origin", ctx.run_dir, server_core)
        nginx = NginxProxy("nginx", ctx.run_dir, server_core, origin.port)
        haproxy = HAProxy("haproxy", ctx.run_dir, server_core, origin.port)
        nghttpx = Nghttpx("nghttpx", ctx.run_dir, server_core, origin.port)
        mux = MuxProxy("muxproxy", ctx.run_dir, server_core, origin.port)
        null = NullMux("nullmux", ctx.run_dir, server_core)
        bare = BareMux("baremux", ctx.run_dir, server_core, origin.port)
        loads, seconds = ctx.loads, ctx.settings.duration
        cases = []
        for path, size in SIZES:
            for connections in HTTP1_CONNECTIONS:
                cases.append(
                    Case(
                        f"direct {size} {connections}",
                        "direct to the origin",
                        f"wrk -c{connections}",
                        partial(with_server_cpu, ctx, direct, partial(loads.wrk, direct.port, path, connections, seconds)),
                        group=size,
                        level=str(connections),
                    )
                )
            reference = {c: f"direct {size} {c}" for c in HTTP1_CONNECTIONS}
            for label, server, port in (
                ("nginx (HTTP/1.1 proxy)", nginx, nginx.port),
                ("HAProxy (HTTP/1.1)", haproxy, haproxy.port),
            ):
                for connections in HTTP1_CONNECTIONS:
                    cases.append(
                        Case(
                            f"{label} {size} {connections}",
                            label,
                            f"wrk -c{connections}",
                            partial(with_server_cpu, ctx, server, partial(loads.wrk, port, path, connections, seconds)),
                            reference[connections],
                            size,
                            str(connections),
                        )
                    )
            cases.append(
                Case(
                    f"muxproxy (plain) {size} 100",
                    "muxproxy (plain HTTP/1.1 proxy)",
                    "wrk -c100",
                    partial(with_server_cpu, ctx, mux, partial(loads.wrk, mux.port, path, 100, seconds)),
                    reference[100],
                    size,
                    "100",
                )
            )
            for label, server, port in (("nghttpx (h2c)", nghttpx, nghttpx.port), ("HAProxy (h2c)", haproxy, haproxy.h2_port)):
                for connections, streams in MULTIPLEXED:
                    load = partial(loads.h2load, port, path, connections=connections, streams=streams, duration=seconds)
                    cases.append(
                        Case(
                            f"{label} {size} {connections}x{streams}",
                            label,
                            f"h2load -c{connections} -m{streams}",
                            partial(with_server_cpu, ctx, server, load),
                            reference[connections * streams],
                            size,
                            _level(connections, streams),
                        )
                    )
            for prefix, label, server, mux_loads in (
                ("muxproxy", "muxproxy (mux stream)", mux, MULTIPLEXED),
                ("floor", FLOOR_LABEL, bare, FLOOR_LOADS),
            ):
                for connections, in_flight in mux_loads:
                    load = partial(
                        loads.muxload, server.port, path, connections=connections, in_flight=in_flight, duration=seconds
                    )
                    cases.append(
                        Case(
                            f"{prefix} {size} {connections}x{in_flight}",
                            label,
                            f"mux C={connections} K={in_flight}",
                            partial(with_server_cpu, ctx, server, load),
                            reference[connections * in_flight],
                            size,
                            _level(connections, in_flight),
                        )
                    )
        for connections, in_flight in CEILING_LOADS:
            load = partial(loads.muxload, null.port, "/100b", connections=connections, in_flight=in_flight, duration=seconds)
            cases.append(
                Case(
                    f"ceiling {connections}x{in_flight}",
                    "mux load client → null mux server",
                    f"mux C={connections} K={in_flight}",
                    partial(with_server_cpu, ctx, null, load),
                    group="ceiling",
                )
            )
        return Plan([origin, direct, nginx, haproxy, nghttpx, mux, null, bare], cases)

    def report(self, results: Results, ctx: Context, out_dir: Path, stem: str) -> Section:
        lines = [
            f"## Scenario {self.number}: {self.title}",
            "",
            "Closed-loop load for "
            f"{ctx.settings.duration:g} s per measurement (wrk: whole seconds).  Requests per second "
            "(inner requests for the mux stream) and server CPU per request (**of it kernel**: its system "
            "time alone), median (min–max) over "
            f"{ctx.settings.rounds} round(s).  **× direct**: throughput divided by direct-to-origin throughput "
            "at the same number of concurrent requests and size, in the same round.  **CPU %**: the server's "
            "CPU time over the elapsed time (100 % = one core saturated).  **load core %**: how busy the load "
            "core was (/proc/stat, all but idle time: the origin, the load generator, anything else there, and "
            "interrupts); near 100 %, the "
            "load side rather than the server bounded the rate, and a faster server would gain little.  "
            + report.DISTURBANCE_NOTE,
            "",
        ]
        panels = []
        for _, size in SIZES:
            rows = [self._row(results, key) for key, case in results.cases.items() if case.group == size]
            lines += [f"### {size} responses", "", report.table(self._headers(), rows), ""]
            panels.append(self._panel(results, size))
        lines += self._floor_lines(results)
        lines += [
            "### Ceiling of the mux load client",
            "",
            "The mux load client against the null mux server (canned inner responses, "
            "bench/servers/nullmux.py) on the server core.  **client CPU µs/req** is the load client's own "
            "CPU time per inner request: 1,000,000 / that figure is the rate at which the client would "
            "saturate its core.  When the null server's CPU % is near 100 while the client's is not, the "
            "measured rate is the null server's limit and the client's true ceiling is higher; when neither "
            "is, something else limited the run (see others %).",
            "",
        ]
        rows = []
        for connections, in_flight in CEILING_LOADS:
            key = f"ceiling {connections}x{in_flight}"
            client_us = results.spread(key, "client_cpu_us_per_req")
            rows.append(
                [
                    results.cases[key].load,
                    report.spread(results.spread(key, "rps")),
                    report.percent(results.spread(key, "cpu_util")),
                    report.spread(client_us, 1),
                    report.percent(results.spread(key, "client_cpu_util")),
                    report.number(1e6 / client_us.median) if client_us.count else "–",
                    _disturbance(results, key),
                    str(results.errors(key)),
                ]
            )
        lines.append(
            report.table(
                ["load", "inner req/s", "null server CPU %", "client CPU µs/req", "client CPU %", "client saturates at (req/s)", "others %", "errors"],
                rows,
            )
        )
        plot = bar_panels(out_dir / f"{stem}-scenario1.png", "Scenario 1: throughput, × direct to origin", panels)
        return Section("\n".join(lines), [plot], self._targets(results))

    @staticmethod
    def _floor_lines(results: Results) -> list[str]:
        rows = []
        for _, size in SIZES:
            for connections, in_flight in FLOOR_LOADS:
                mux, floor = f"muxproxy {size} {connections}x{in_flight}", f"floor {size} {connections}x{in_flight}"
                rows.append(
                    [
                        size,
                        f"mux C={connections} K={in_flight}",
                        report.ratio(results.ratio(mux, "rps", floor)),
                        report.spread(results.spread(mux, "cpu_us_per_req"), 1),
                        report.spread(results.spread(floor, "cpu_us_per_req"), 1),
                        report.spread(results.spread(mux, "user_us_per_req"), 1),
                        report.spread(results.spread(floor, "user_us_per_req"), 1),
                        report.spread(results.difference(mux, "user_us_per_req", floor), 1),
                    ]
                )
        return [
            "### muxproxy against the floor of its design",
            "",
            "The bare mux relay (bench/servers/baremux.py) runs muxproxy's design on the same stack (uvloop, "
            "httptools for both levels, pooled keep-alive origin connections, one outer write per event-loop "
            "iteration) and nothing else: no checks, limits, timeouts, routing or metrics.  Its CPU per request "
            "is what the design costs in CPython on this machine.  **muxproxy's own work** is muxproxy's "
            "user-space CPU per request minus the relay's, in the same round: what validating, routing, "
            "rewriting, limiting and accounting cost.  **user space** is the CPU time per request less its "
            "kernel part.",
            "",
            report.table(
                [
                    "size",
                    "load",
                    "muxproxy req/s × floor",
                    "muxproxy CPU µs/req",
                    "floor CPU µs/req",
                    "muxproxy user space",
                    "floor user space",
                    "muxproxy's own work µs/req",
                ],
                rows,
            ),
            "",
        ]

    @staticmethod
    def _headers() -> list[str]:
        return [
            "configuration", "load", "req/s", "× direct", "server CPU µs/req", "of it kernel", "CPU %", "load core %",
            "others %", "p50 µs", "p99 µs", "errors",
        ]

    @staticmethod
    def _row(results: Results, key: str) -> list[str]:
        case = results.cases[key]
        return [
            case.label,
            case.load,
            report.spread(results.spread(key, "rps")),
            report.ratio(results.ratio(key, "rps")) if case.reference else "1 (reference)",
            report.spread(results.spread(key, "cpu_us_per_req"), 1),
            report.spread(results.spread(key, "system_us_per_req"), 1),
            report.percent(results.spread(key, "cpu_util")),
            report.percent(results.spread(key, "load_core_util")),
            _disturbance(results, key),
            report.spread(results.spread(key, "p50_us")),
            report.spread(results.spread(key, "p99_us")),
            str(results.errors(key)),
        ]

    @staticmethod
    def _panel(results: Results, size: str) -> Panel:
        series: dict[str, list] = {}
        for key, case in results.cases.items():
            if case.group == size and case.reference:
                values = series.setdefault(case.label, [None] * len(LEVELS))
                values[LEVELS.index(case.level)] = results.ratio(key, "rps")
        return Panel(f"{size} responses", "throughput ÷ direct to origin", [f"{level} concurrent" for level in LEVELS], series, 1.0)

    @staticmethod
    def _targets(results: Results) -> list[TargetRow]:
        mux = "muxproxy 100 B 1x100"
        h2 = "nghttpx (h2c) 100 B 1x100"
        nginx = "nginx (HTTP/1.1 proxy) 100 B 100"
        vs_h2 = results.ratio(mux, "rps", h2)
        vs_nginx = results.ratio(mux, "rps", nginx)
        cpu = results.spread(mux, "cpu_us_per_req")
        floor = "floor 100 B 1x100"
        floor_vs_h2 = results.ratio(floor, "rps", h2)
        floor_vs_nginx = results.ratio(floor, "rps", nginx)
        floor_cpu = results.spread(floor, "cpu_us_per_req")
        # The throughput ratios are bounded by the load core as much as by
        # the servers (see "load core %"); CPU per request is the figure that
        # travels, so each throughput target also gets its CAPACITY_NOTE ratio.
        capacity_vs_h2 = results.ratio(mux, "cpu_us_per_req", h2, inverse=True)
        capacity_vs_nginx = results.ratio(mux, "cpu_us_per_req", nginx, inverse=True)
        return [
            TargetRow(
                "S1, 100 B, K=100 on one connection: muxproxy inner req/s ≥ 1.0× nghttpx (1 connection × 100 streams)",
                f"{report.ratio(vs_h2)} ({report.spread(results.spread(mux, 'rps'))} vs {report.spread(results.spread(h2, 'rps'))} req/s); "
                f"the bare relay of the same design: {report.ratio(floor_vs_h2)}; "
                f"{CAPACITY_NOTE}: {report.ratio(capacity_vs_h2)}",
                vs_h2.median >= 1.0,
            ),
            TargetRow(
                "S1, 100 B: muxproxy K=100 on one connection ≥ 1.4× nginx (tuned HTTP/1.1 proxy, 100 connections)",
                f"{report.ratio(vs_nginx)} ({report.spread(results.spread(nginx, 'rps'))} req/s for nginx); "
                f"the bare relay of the same design: {report.ratio(floor_vs_nginx)}; "
                f"{CAPACITY_NOTE}: {report.ratio(capacity_vs_nginx)}",
                vs_nginx.median >= 1.4,
            ),
            TargetRow(
                "S1, 100 B, K=100: muxproxy server CPU ≤ 16 µs per inner request",
                f"{report.spread(cpu, 1)} µs; the bare relay of the same design: {report.spread(floor_cpu, 1)} µs",
                cpu.median <= 16,
            ),
        ]


def _disturbance(results: Results, key: str) -> str:
    return report.disturbance(results.spread(key, "others_server_core"), results.spread(key, "others_load_core"))


SCENARIO = Throughput()
