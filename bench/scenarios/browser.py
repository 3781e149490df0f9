"""Scenario 2: the browser's connection limit.

200 requests to an origin that answers each one 50 ms after it arrived
(bench/servers/slow_origin.py, on the load core), fetched three ways; the
figure is the time until all 200 have been answered:
* HTTP/1.1 with 6 connections, what a browser allows per host
  (h2load --h1 -c6 -m1, straight to the origin): the reference;
* one muxproxy stream with 100 inner requests in flight (the mux client,
  C=1, K=100);
* one HTTP/2 connection through nghttpx with 100 streams (h2load -c1 -m100),
  nghttpx's default SETTINGS_MAX_CONCURRENT_STREAMS, which a browser obeys.
Both multiplexed clients get the same concurrency, 100, so the comparison is
of the protocols, not of a setting.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from bench import report
from bench.peers import MuxProxy, Nghttpx, SlowOrigin
from bench.plots import Panel, bar_panels
from bench.runner import Case, Context, Plan, Results, Section, TargetRow

REQUESTS = 200
DELAY = 0.05
BROWSER_CONNECTIONS = 6
IN_FLIGHT = 100


def _timed(load) -> dict[str, float]:
    result = load()
    return {"time_s": result["elapsed_s"], "requests": result["requests"], "errors": result["errors"]}


class Browser:
    number = 2
    title = "The browser's connection limit"

    def plan(self, ctx: Context) -> Plan:
        origin = SlowOrigin("slow-origin", ctx.run_dir, ctx.placement.load_core, DELAY)
        mux = MuxProxy("muxproxy-slow", ctx.run_dir, ctx.placement.server_core, origin.port)
        nghttpx = Nghttpx("nghttpx-slow", ctx.run_dir, ctx.placement.server_core, origin.port)
        loads = ctx.loads
        reference = "http1"
        cases = [
            Case(
                reference,
                f"HTTP/1.1, {BROWSER_CONNECTIONS} connections, direct to the origin",
                f"h2load --h1 -c{BROWSER_CONNECTIONS} -m1 -n{REQUESTS}",
                partial(
                    _timed,
                    partial(loads.h2load, origin.port, "/", connections=BROWSER_CONNECTIONS, streams=1, requests=REQUESTS, http1=True),
                ),
            ),
            Case(
                "mux",
                "muxproxy, one mux stream",
                f"mux C=1 K={IN_FLIGHT} N={REQUESTS}",
                partial(_timed, partial(loads.muxload, mux.port, "/", in_flight=IN_FLIGHT, requests=REQUESTS)),
                reference,
            ),
            Case(
                "h2",
                "nghttpx, one HTTP/2 connection",
                f"h2load -c1 -m{IN_FLIGHT} -n{REQUESTS}",
                partial(_timed, partial(loads.h2load, nghttpx.port, "/", connections=1, streams=IN_FLIGHT, requests=REQUESTS)),
                reference,
            ),
        ]
        return Plan([origin, mux, nghttpx], cases)

    def report(self, results: Results, ctx: Context, out_dir: Path, stem: str) -> Section:
        rows = []
        for key, case in results.cases.items():
            rows.append(
                [
                    case.label,
                    case.load,
                    report.spread(results.spread(key, "time_s"), 3, " s"),
                    report.ratio(results.ratio(key, "time_s", inverse=True), 1) if case.reference else "1 (reference)",
                    str(results.errors(key)),
                ]
            )
        lines = [
            f"## Scenario {self.number}: {self.title}",
            "",
            f"{REQUESTS} requests to an origin that answers each after {DELAY * 1000:.0f} ms.  Time until all "
            f"{REQUESTS} were answered (connection set-up included), median (min–max) over "
            f"{ctx.settings.rounds} round(s).  **× sooner**: the 6-connection client's time divided by this "
            "client's time, same round.  The ideal times are "
            f"{-(-REQUESTS // BROWSER_CONNECTIONS) * DELAY:.2f} s for 6 connections and "
            f"{-(-REQUESTS // IN_FLIGHT) * DELAY:.2f} s for 100 in flight.",
            "",
            report.table(["client", "load", "time to finish", "× sooner", "errors"], rows),
        ]
        panel = Panel(
            "time to finish 200 requests",
            "seconds",
            [case.label.replace(", ", "\n", 1) for case in results.cases.values()],
            {"time": [results.spread(key, "time_s") for key in results.cases]},
        )
        plot = bar_panels(out_dir / f"{stem}-scenario2.png", "Scenario 2: 200 requests, 50 ms each", [panel])
        speedup = results.ratio("mux", "time_s", inverse=True)
        target = TargetRow(
            "S2: muxproxy finishes ≥ 8× sooner than the 6-connection HTTP/1.1 client",
            f"{report.ratio(speedup, 1)} ({report.spread(results.spread('mux', 'time_s'), 3, ' s')} vs "
            f"{report.spread(results.spread('http1', 'time_s'), 3, ' s')})",
            speedup.median >= 8,
        )
        return Section("\n".join(lines), [plot], [target])


SCENARIO = Browser()
