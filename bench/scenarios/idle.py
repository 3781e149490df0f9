"""Scenario 3: memory held by idle client connections.

Each proxy, started afresh for every measurement, has its resident memory
(RSS summed over its process tree) read before and after a helper process (bench/clients/idle.py, on the load core)
opened N connections and brought each to the idle state its users hold:
* nginx and HAProxy (HTTP/1.1 front), muxproxy as a plain proxy: a
  keep-alive connection after one request;
* HAProxy (h2c front) and nghttpx: an HTTP/2 connection after one request;
* muxproxy: an open outer mux stream (POST /_mux, chunked body started,
  response head received, nothing in flight), what its users hold open.
Bytes per connection = RSS growth / N.  The reference is HAProxy's h2c
front: an idle HTTP/2 connection is the peers' closest match to an idle mux
stream (a multiplexed connection a client keeps open).
"""

from __future__ import annotations

import itertools
from functools import partial
from pathlib import Path
from typing import Callable

from bench import report
from bench.measure import idle_memory
from bench.peers import HAProxy, MuxProxy, Nghttpx, NginxOrigin, NginxProxy, Server
from bench.plots import Panel, bar_panels
from bench.runner import Case, Context, Plan, Results, Section, TargetRow
from bench.stats import Spread

#: Target: bytes per idle outer mux connection.
TARGET_BYTES = 4 * 1024


class Idle:
    number = 3
    title = "Idle connections"

    def plan(self, ctx: Context) -> Plan:
        core = ctx.placement.server_core
        origin = NginxOrigin("origin", ctx.run_dir, ctx.placement.load_core)
        run_dir, origin_port = ctx.run_dir, origin.port
        names = itertools.count(1)

        def fresh(kind: type, front: str = "port") -> Callable[[], tuple[Server, int]]:
            def start() -> tuple[Server, int]:
                server = kind(f"{kind.__name__.lower()}-idle-{next(names)}", run_dir, core, origin_port)
                return server, getattr(server, front)

            return start

        configurations = (
            ("HAProxy (HTTP/1.1)", fresh(HAProxy), "h1"),
            ("nginx (HTTP/1.1)", fresh(NginxProxy), "h1"),
            ("HAProxy (h2c)", fresh(HAProxy, "h2_port"), "h2"),
            ("nghttpx (h2c)", fresh(Nghttpx), "h2"),
            ("muxproxy (plain HTTP/1.1)", fresh(MuxProxy), "h1"),
            ("muxproxy (mux stream)", fresh(MuxProxy), "mux"),
        )
        cases = []
        for count in ctx.settings.idle_counts:
            reference = f"HAProxy (h2c) {count:,}"
            for label, start, kind in configurations:
                key = f"{label} {count:,}"
                cases.append(
                    Case(
                        key,
                        label,
                        f"{count:,} idle {kind}",
                        partial(idle_memory, ctx, start, kind, count),
                        None if key == reference else reference,
                        f"{count:,}",
                    )
                )
        return Plan([origin], cases)

    def report(self, results: Results, ctx: Context, out_dir: Path, stem: str) -> Section:
        groups = sorted({case.group for case in results.cases.values()}, key=lambda g: int(g.replace(",", "")))
        rows = []
        for key, case in results.cases.items():
            per_connection = results.spread(key, "bytes_per_conn")
            rows.append(
                [
                    case.label,
                    case.group,
                    report.spread(_mib(results.spread(key, "rss_before")), 1),
                    report.spread(_mib(results.spread(key, "rss_after")), 1),
                    report.spread(_kib(per_connection), 1),
                    report.ratio(results.ratio(key, "bytes_per_conn")) if case.reference else "1 (reference)",
                    str(results.errors(key)),
                ]
            )
        lines = [
            f"## Scenario {self.number}: {self.title}",
            "",
            "RSS of the proxy's process tree before and after the helper opened the idle connections, and "
            f"the growth per connection; median (min–max) over {ctx.settings.rounds} round(s).  "
            "**× HAProxy h2**: bytes per connection divided by HAProxy's with its h2c front, same count, same round.  "
            "**errors**: connections that did not reach the idle state.",
            "",
            report.table(["proxy (idle state)", "connections", "RSS before MiB", "RSS after MiB", "KiB per connection", "× HAProxy h2", "errors"], rows),
        ]
        labels = list(dict.fromkeys(case.label for case in results.cases.values()))
        series = {
            label: [_kib(results.spread(f"{label} {group}", "bytes_per_conn")) for group in groups] for label in labels
        }
        panel = Panel("RSS growth per idle connection", "KiB per connection", [f"{g} connections" for g in groups], series)
        plot = bar_panels(out_dir / f"{stem}-scenario3.png", "Scenario 3: idle connections", [panel])
        largest = groups[-1]
        mux = _kib(results.spread(f"muxproxy (mux stream) {largest}", "bytes_per_conn"))
        target = TargetRow(
            f"S3: ≤ 4 KiB per idle outer mux connection ({largest} connections)",
            f"{report.spread(mux, 1)} KiB (HAProxy h2c: "
            f"{report.spread(_kib(results.spread(f'HAProxy (h2c) {largest}', 'bytes_per_conn')), 1)} KiB, nghttpx: "
            f"{report.spread(_kib(results.spread(f'nghttpx (h2c) {largest}', 'bytes_per_conn')), 1)} KiB)",
            mux.median * 1024 <= TARGET_BYTES,
        )
        return Section("\n".join(lines), [plot], [target])


def _kib(value: Spread) -> Spread:
    return value.scaled(1 / 1024)


def _mib(value: Spread) -> Spread:
    return value.scaled(1 / 1024**2)


SCENARIO = Idle()
