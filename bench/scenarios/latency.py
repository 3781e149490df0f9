"""Scenario 5: latency added by each proxy at a fixed, moderate load.

2,000 requests per second of the 100-byte file, open loop (requests go out
on schedule whether or not earlier ones were answered; bench/clients/
pacing.py), for the measurement duration:
* direct to the origin (the nginx on the server core): the reference;
* nginx, HAProxy and muxproxy as HTTP/1.1 proxies: bench/clients/h1rate.py
  over a pool of keep-alive connections;
* muxproxy's mux stream: the mux load client issuing inner requests at the
  same rate on one stream.
The figures are p50 and p99 latency and what each adds over direct access,
in the same round.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

from bench import report
from bench.measure import with_server_cpu
from bench.peers import HAProxy, MuxProxy, NginxOrigin, NginxProxy
from bench.plots import Panel, bar_panels
from bench.runner import Case, Context, Plan, Results, Section

RATE = 2000
PATH = "/100b"
#: Milliseconds the client may fall behind its schedule before a
#: measurement counts as disturbed.  Undisturbed runs on this project's
#: 2-core machines stayed under 8.2 ms (2026-12-04 to 12-06); disturbed
#: ones, with another tenant busy on the host, reached 13 to 67 ms.  A
#: client that late sends a burst to catch up, and the latency it measures
#: is its own as much as the server's.
LAG_LIMIT_MS = 10.0


def disturbed_note(lags_ms: list[float]) -> str | None:
    """A warning for the results when any measurement's client fell more
    than LAG_LIMIT_MS behind its schedule; None when none did."""
    late = [lag for lag in lags_ms if not math.isnan(lag) and lag > LAG_LIMIT_MS]
    if not late:
        return None
    return (
        f"**Disturbed**: in {len(late)} of {len(lags_ms)} measurements the load client fell more than "
        f"{LAG_LIMIT_MS:g} ms behind its schedule (up to {max(late):,.1f} ms).  Their latencies include "
        "the client's own delay: compare this table only with a run where no measurement was disturbed."
    )


class Latency:
    number = 5
    title = "Latency overhead at 2,000 req/s"

    def plan(self, ctx: Context) -> Plan:
        server_core, load_core = ctx.placement.server_core, ctx.placement.load_core
        origin = NginxOrigin("origin", ctx.run_dir, load_core)
        direct = NginxOrigin("direct-origin", ctx.run_dir, server_core)
        nginx = NginxProxy("nginx", ctx.run_dir, server_core, origin.port)
        haproxy = HAProxy("haproxy", ctx.run_dir, server_core, origin.port)
        mux = MuxProxy("muxproxy", ctx.run_dir, server_core, origin.port)
        loads, seconds = ctx.loads, ctx.settings.duration
        reference = "direct"
        cases = [
            Case(reference, "direct to the origin", "HTTP/1.1", partial(with_server_cpu, ctx, direct, partial(loads.h1rate, direct.port, PATH, rate=RATE, duration=seconds))),
        ]
        for key, label, server in (("nginx", "nginx (HTTP/1.1 proxy)", nginx), ("haproxy", "HAProxy (HTTP/1.1)", haproxy), ("plain", "muxproxy (plain HTTP/1.1 proxy)", mux)):
            load = partial(loads.h1rate, server.port, PATH, rate=RATE, duration=seconds)
            cases.append(Case(key, label, "HTTP/1.1", partial(with_server_cpu, ctx, server, load), reference))
        load = partial(loads.muxload, mux.port, PATH, rate=RATE, duration=seconds)
        cases.append(Case("mux", "muxproxy (mux stream)", "one mux stream", partial(with_server_cpu, ctx, mux, load), reference))
        return Plan([origin, direct, nginx, haproxy, mux], cases)

    def report(self, results: Results, ctx: Context, out_dir: Path, stem: str) -> Section:
        rows = []
        for key, case in results.cases.items():
            added = (
                [report.spread(results.difference(key, "p50_us")), report.spread(results.difference(key, "p99_us"))]
                if case.reference
                else ["(reference)", "(reference)"]
            )
            rows.append(
                [
                    case.label,
                    case.load,
                    report.spread(results.spread(key, "rps")),
                    report.spread(results.spread(key, "p50_us")),
                    report.spread(results.spread(key, "p99_us")),
                    *added,
                    report.spread(results.spread(key, "cpu_us_per_req"), 1),
                    report.spread(results.spread(key, "max_lag_ms"), 1),
                    report.disturbance(results.spread(key, "others_server_core"), results.spread(key, "others_load_core")),
                    str(results.errors(key)),
                ]
            )
        lines = [
            f"## Scenario {self.number}: {self.title}",
            "",
            f"Open loop at {RATE:,} req/s for {ctx.settings.duration:g} s per measurement; latency from the "
            "moment a request was issued to the end of its response, in microseconds, median (min–max) over "
            f"{ctx.settings.rounds} round(s).  **added**: this configuration's percentile minus direct access's, "
            "same round.  **lag ms**: the largest delay of the client's schedule (uvloop timers tick every "
            "1 ms), to show the client kept the rate.  " + report.DISTURBANCE_NOTE,
            "",
            report.table(
                ["configuration", "client", "req/s", "p50 µs", "p99 µs", "added p50 µs", "added p99 µs", "server CPU µs/req", "lag ms", "others %", "errors"],
                rows,
            ),
        ]
        note = disturbed_note([lag for key in results.cases for lag in results.values(key, "max_lag_ms")])
        if note:
            lines += ["", note]
        proxies = [key for key, case in results.cases.items() if case.reference]
        panel = Panel(
            "latency added over direct access",
            "µs",
            ["p50", "p99"],
            {results.cases[key].label: [results.difference(key, "p50_us"), results.difference(key, "p99_us")] for key in proxies},
        )
        plot = bar_panels(out_dir / f"{stem}-scenario5.png", f"Scenario 5: latency at {RATE:,} req/s", [panel])
        return Section("\n".join(lines), [plot])


SCENARIO = Latency()
