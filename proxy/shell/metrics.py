"""Metrics: plain counters on the hot path, Prometheus exposition at scrape time.

Strategy: a request updates a few dict entries and ints in `Stats` (about a
microsecond); nothing is formatted or locked per request.  At scrape time
`snapshot()` turns the counters and the live state (open connections,
streams, pool connections) into a JSON-able dict, and `SnapshotCollector`
hands it to prometheus_client as metric families, so the exposition format
and its parser are prometheus_client's.

With several workers, each worker sends its snapshot to the master once a
second over the control pipe; the master serves /metrics from the merged
snapshots (`merge`).  That is what makes the figures multiprocess-safe
without prometheus_client's multiprocess mode, whose mmap-file writes per
update would cost more than the request they count.
"""

from __future__ import annotations

import bisect
from typing import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

#: Request duration buckets in seconds: from a cache-hot origin on loopback
#: (1 ms) to the default total timeout range (five minutes).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Stats:
    """The counters of one process (see module note)."""

    def __init__(self) -> None:
        #: (kind, route, status) -> requests answered; kind is "mux" or "http".
        self.requests: dict[tuple[str, str, int], int] = {}
        #: (kind, route) -> [count per bucket ... , count above the last bucket]
        self.latency: dict[tuple[str, str], list[int]] = {}
        self.latency_sum: dict[tuple[str, str], float] = {}
        #: RFC 9209 error type -> responses the proxy made itself.
        self.errors: dict[str, int] = {}
        self.bytes_received = 0  # from clients, on the wire
        self.bytes_sent = 0  # to clients, on the wire
        self.heartbeats = 0
        self.connections_accepted = 0
        self.streams_started = 0
        self.reloads: dict[str, int] = {"ok": 0, "failed": 0}

    def request(self, kind: str, route: str, status: int, seconds: float, error: str) -> None:
        key = (kind, route, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        lkey = (kind, route)
        buckets = self.latency.get(lkey)
        if buckets is None:
            buckets = self.latency[lkey] = [0] * (len(LATENCY_BUCKETS) + 1)
            self.latency_sum[lkey] = 0.0
        buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum[lkey] += seconds
        if error:
            self.errors[error] = self.errors.get(error, 0) + 1

    def snapshot(self, live: dict) -> dict:
        """Counters plus `live` gauges, as plain JSON-able data."""
        return {
            "requests": [[kind, route, status, count] for (kind, route, status), count in self.requests.items()],
            "latency": [
                [kind, route, counts, self.latency_sum[(kind, route)]] for (kind, route), counts in self.latency.items()
            ],
            "errors": dict(self.errors),
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
            "heartbeats": self.heartbeats,
            "connections_accepted": self.connections_accepted,
            "streams_started": self.streams_started,
            "reloads": dict(self.reloads),
            **live,
        }


def merge(snapshots: Iterable[dict]) -> dict:
    """Sum the snapshots of several workers into one."""
    requests: dict[tuple, int] = {}
    latency: dict[tuple, list] = {}
    errors: dict[str, int] = {}
    pools: dict[str, dict[str, int]] = {}
    total = {
        key: 0
        for key in (
            "bytes_received",
            "bytes_sent",
            "heartbeats",
            "connections_accepted",
            "streams_started",
            "connections",
            "streams",
            "inflight",
        )
    }
    reloads = {"ok": 0, "failed": 0}
    workers = 0
    for snap in snapshots:
        workers += 1
        for kind, route, status, count in snap["requests"]:
            requests[(kind, route, status)] = requests.get((kind, route, status), 0) + count
        for kind, route, counts, seconds in snap["latency"]:
            entry = latency.setdefault((kind, route), [[0] * len(counts), 0.0])
            entry[0] = [a + b for a, b in zip(entry[0], counts)]
            entry[1] += seconds
        for error, count in snap["errors"].items():
            errors[error] = errors.get(error, 0) + count
        for origin, counters in snap.get("pools", {}).items():
            merged = pools.setdefault(origin, {})
            for name, value in counters.items():
                merged[name] = merged.get(name, 0) + value
        for key in total:
            total[key] += snap.get(key, 0)
        for key in reloads:
            reloads[key] += snap.get("reloads", {}).get(key, 0)
    return {
        "requests": [[k, r, s, c] for (k, r, s), c in requests.items()],
        "latency": [[k, r, counts, seconds] for (k, r), (counts, seconds) in latency.items()],
        "errors": errors,
        "pools": pools,
        "reloads": reloads,
        "workers": workers,
        **total,
    }


class SnapshotCollector:
    """A prometheus_client collector over `get_snapshot()` (see module note)."""

    def __init__(self, get_snapshot: Callable[[], dict]) -> None:
        self.get_snapshot = get_snapshot

    def describe(self) -> list:
        return []  # the metric set is only known at collect time

    def collect(self):
        snap = self.get_snapshot()
        gauge = GaugeMetricFamily("muxproxy_client_connections", "Open client connections.")
        gauge.add_metric([], snap["connections"])
        yield gauge
        gauge = GaugeMetricFamily("muxproxy_mux_streams", "Open mux streams (outer application/http requests).")
        gauge.add_metric([], snap["streams"])
        yield gauge
        gauge = GaugeMetricFamily("muxproxy_inner_requests_in_flight", "Inner requests sent to origins, unanswered.")
        gauge.add_metric([], snap["inflight"])
        yield gauge
        if "workers" in snap:
            gauge = GaugeMetricFamily("muxproxy_workers", "Worker processes reporting.")
            gauge.add_metric([], snap["workers"])
            yield gauge

        counter = CounterMetricFamily(
            "muxproxy_requests", "Requests answered, by kind (mux: inner; http: plain), route and status.",
            labels=["kind", "route", "status"],
        )
        for kind, route, status, count in snap["requests"]:
            counter.add_metric([kind, route, str(status)], count)
        yield counter

        histogram = HistogramMetricFamily(
            "muxproxy_request_duration_seconds", "Time from request head to the last response byte.",
            labels=["kind", "route"],
        )
        for kind, route, counts, seconds in snap["latency"]:
            cumulative, buckets = 0, []
            for bound, count in zip(LATENCY_BUCKETS, counts):
                cumulative += count
                buckets.append((_float_label(bound), cumulative))
            cumulative += counts[-1]
            buckets.append(("+Inf", cumulative))
            histogram.add_metric([kind, route], buckets, seconds)
        yield histogram

        counter = CounterMetricFamily(
            "muxproxy_errors", "Responses the proxy made itself, by RFC 9209 error type.", labels=["error"]
        )
        for error, count in snap["errors"].items():
            counter.add_metric([error], count)
        yield counter

        pool = GaugeMetricFamily(
            "muxproxy_origin_connections", "Pooled origin connections by state.", labels=["origin", "state"]
        )
        queued = GaugeMetricFamily(
            "muxproxy_origin_queued", "Requests waiting for a pooled connection.", labels=["origin"]
        )
        for origin, counters in snap["pools"].items():
            for state in ("active", "idle", "connecting"):
                pool.add_metric([origin, state], counters.get(state, 0))
            queued.add_metric([origin], counters.get("queued", 0))
        yield pool
        yield queued

        for name, key, text in (
            ("muxproxy_client_bytes_received", "bytes_received", "Bytes received from clients."),
            ("muxproxy_client_bytes_sent", "bytes_sent", "Bytes sent to clients."),
            ("muxproxy_heartbeats", "heartbeats", "Heartbeat CRLFs written on quiet mux streams."),
            ("muxproxy_connections_accepted", "connections_accepted", "Client connections accepted."),
            ("muxproxy_streams_started", "streams_started", "Mux streams opened."),
        ):
            counter = CounterMetricFamily(name, text)
            counter.add_metric([], snap[key])
            yield counter
        counter = CounterMetricFamily("muxproxy_reloads", "Configuration reloads, by result.", labels=["result"])
        for result, count in snap["reloads"].items():
            counter.add_metric([result], count)
        yield counter


def _float_label(bound: float) -> str:
    return repr(float(bound))
