"""Scenario 4: bytes on the wire for 1,000 small GETs with browser-like headers.

Method: every client reaches its server through a counting TCP relay on
loopback (bench/servers/relay.py), which counts the TCP payload in each
direction: request and response heads and bodies, chunk and frame headers,
the outer mux request and response, HTTP/2 SETTINGS, WINDOW_UPDATE and
GOAWAY frames; not TCP/IP headers.  The same code counts every protocol.
Requests go one at a time (one in flight) on one connection everywhere, so
framing is paid per request alike.  The responses are the origin's 100-byte
file.
* HTTP/1.1 keep-alive, one connection, through muxproxy's plain proxy (the
  reference: the same server and response fields as the mux stream), and
  straight to nginx for comparison: h2load --h1 -c1 -m1 -H ...;
* HTTP/2 through nghttpx: h2load -c1 -m1 -H ... (h2load's own "traffic"
  figure, shown beside, counts only what it received);
* the mux stream and the gzip-coded mux stream (Accept-Encoding: gzip on the
  outer request): the mux load client, K=1.  A browser's mux client sends
  the identity fields once, on the outer request, and the inner requests
  inherit them (docs/protocol.md §3.5: Cookie, User-Agent, Accept-Language);
  Accept, Accept-Encoding and Referer go on every inner request, with the
  Request-Id the client needs for matching.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from bench import report
from bench.peers import MuxProxy, Nghttpx, NginxOrigin, Relay
from bench.plots import Panel, bar_panels
from bench.runner import Case, Context, Plan, Results, Section, TargetRow

REQUESTS = 1000
#: Browser-like request fields (a desktop Chrome request's set); the Cookie
#: value is ~100 bytes.
USER_AGENT = "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
ACCEPT = "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
ACCEPT_LANGUAGE = "Accept-Language: en-GB,en-US;q=0.9,en;q=0.8"
ACCEPT_ENCODING = "Accept-Encoding: gzip, deflate, br"
COOKIE = "Cookie: sessionid=8f14e45fceea167a5a36dedd4bea2543; csrftoken=c9f0f895fb98ab9159f51fd0297e236d; theme=dark"
REFERER = "Referer: http://127.0.0.1/app/index.html"
IDENTITY_FIELDS = [USER_AGENT, ACCEPT_LANGUAGE, COOKIE]
PER_REQUEST_FIELDS = [ACCEPT, ACCEPT_ENCODING, REFERER]
#: Target: the gzip-coded stream's bytes as a fraction of HTTP/1.1's.
TARGET_RATIO = 0.35


def _counted(relay: Relay, load) -> dict[str, float]:
    relay.take_counts()  # start from zero
    result = load()
    counts = relay.take_counts()
    total = counts["to_server"] + counts["to_client"]
    return {
        "requests": result["requests"],
        "errors": result["errors"],
        "bytes_up": counts["to_server"],
        "bytes_down": counts["to_client"],
        "bytes_total": total,
        "bytes_per_request": total / result["requests"] if result["requests"] else float("nan"),
        "connections": counts["connections"],
        "h2load_traffic": result.get("h2load_traffic_bytes", float("nan")),
    }


class Wire:
    number = 4
    title = "Bytes on the wire"

    def plan(self, ctx: Context) -> Plan:
        load_core, server_core = ctx.placement.load_core, ctx.placement.server_core
        origin = NginxOrigin("origin", ctx.run_dir, load_core)
        mux = MuxProxy("muxproxy", ctx.run_dir, server_core, origin.port)
        nghttpx = Nghttpx("nghttpx", ctx.run_dir, server_core, origin.port)
        to_origin = Relay("relay-origin", ctx.run_dir, load_core, origin.port)
        to_mux = Relay("relay-muxproxy", ctx.run_dir, load_core, mux.port)
        to_nghttpx = Relay("relay-nghttpx", ctx.run_dir, load_core, nghttpx.port)
        loads = ctx.loads
        all_fields = IDENTITY_FIELDS + PER_REQUEST_FIELDS
        h2load = partial(loads.h2load, path="/100b", connections=1, streams=1, requests=REQUESTS, headers=all_fields)
        muxload = partial(
            loads.muxload,
            to_mux.port,
            "/100b",
            requests=REQUESTS,
            outer_headers=IDENTITY_FIELDS,
            inner_headers=PER_REQUEST_FIELDS,
        )
        reference = "http1"
        cases = [
            Case(reference, "HTTP/1.1 keep-alive via muxproxy (plain)", "h2load --h1 -c1 -m1", partial(_counted, to_mux, partial(h2load, to_mux.port, http1=True))),
            Case("http1-nginx", "HTTP/1.1 keep-alive, direct to nginx", "h2load --h1 -c1 -m1", partial(_counted, to_origin, partial(h2load, to_origin.port, http1=True)), reference),
            Case("h2", "HTTP/2 (h2c) via nghttpx", "h2load -c1 -m1", partial(_counted, to_nghttpx, partial(h2load, to_nghttpx.port)), reference),
            Case("mux", "mux stream", "mux C=1 K=1", partial(_counted, to_mux, muxload), reference),
            Case("mux-gzip", "mux stream, gzip-coded", "mux C=1 K=1 gzip", partial(_counted, to_mux, partial(muxload, gzip=True)), reference),
        ]
        return Plan([origin, mux, nghttpx, to_origin, to_mux, to_nghttpx], cases)

    def report(self, results: Results, ctx: Context, out_dir: Path, stem: str) -> Section:
        rows = []
        for key, case in results.cases.items():
            rows.append(
                [
                    case.label,
                    report.spread(results.spread(key, "bytes_up")),
                    report.spread(results.spread(key, "bytes_down")),
                    report.spread(results.spread(key, "bytes_total")),
                    report.spread(results.spread(key, "bytes_per_request"), 1),
                    report.ratio(results.ratio(key, "bytes_total")) if case.reference else "1 (reference)",
                    report.spread(results.spread(key, "h2load_traffic")),
                    str(results.errors(key)),
                ]
            )
        lines = [
            f"## Scenario {self.number}: {self.title}",
            "",
            f"{REQUESTS:,} GETs of a 100-byte file, one at a time on one connection, with browser-like fields "
            f"(User-Agent, Accept, Accept-Language, Accept-Encoding, a {len(COOKIE.split(': ', 1)[1])}-byte Cookie, Referer).  Bytes are "
            "TCP payload counted by a relay between client and server, both directions; median (min–max) over "
            f"{ctx.settings.rounds} round(s).  **× HTTP/1.1**: total bytes divided by HTTP/1.1 through muxproxy's "
            "plain proxy, same round.  **h2load traffic**: what h2load itself reports; it counts only bytes "
            "received (frame headers included), not what it sent.",
            "",
            "Fields sent: HTTP/1.1 and HTTP/2 send all six on every request (HTTP/2 compresses them with HPACK).  "
            "The mux stream sends User-Agent, Accept-Language and Cookie once, on the outer request, and the "
            "inner requests inherit them; Accept, Accept-Encoding, Referer and Request-Id go on every inner request.",
            "",
            report.table(["protocol", "client → server", "server → client", "total bytes", "bytes per request", "× HTTP/1.1", "h2load traffic", "errors"], rows),
        ]
        panel = Panel(
            f"bytes on the wire for {REQUESTS:,} GETs (both directions)",
            "× HTTP/1.1 via muxproxy (plain)",
            [case.label.replace(" ", "\n", 2) for case in results.cases.values()],
            {"total bytes": [results.ratio(key, "bytes_total", "http1") for key in results.cases]},
            1.0,
        )
        plot = bar_panels(out_dir / f"{stem}-scenario4.png", "Scenario 4: bytes on the wire", [panel])
        gzip = results.ratio("mux-gzip", "bytes_total")
        target = TargetRow(
            f"S4: gzip-coded mux stream ≤ {TARGET_RATIO}× the HTTP/1.1 bytes",
            f"{report.ratio(gzip)} ({report.spread(results.spread('mux-gzip', 'bytes_total'))} vs "
            f"{report.spread(results.spread('http1', 'bytes_total'))} bytes)",
            gzip.median <= TARGET_RATIO,
        )
        return Section("\n".join(lines), [plot], [target])


SCENARIO = Wire()
