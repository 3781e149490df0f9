"""Measurements that combine a load with readings of the server under test.

* `with_server_cpu`: runs a load and reads the server's CPU time (utime +
  stime over its whole process tree, /proc) just before and just after it.
  The kernel's part (stime) is kept apart as well: it is what a proxy's
  system calls cost, so it shows how much of a difference between two
  servers is their own code and how much the work every proxy must do.
  CPU per request = that difference / requests completed: unlike requests per
  second, it hardly depends on how fast this machine is, so it is the figure
  to compare between machines.  CPU utilisation = the difference / the
  load's elapsed time: near 100 % the server was the bottleneck.  Beside
  it, how much of the server core and of the load core processes that are
  not the benchmark's used meanwhile (/proc/stat for that core minus the
  CPU time of our processes there), so a measurement disturbed by other
  work on the machine can be recognised.
* `idle_memory`: the RSS (summed over the process tree) of a freshly started
  server before and after a helper process opened N idle connections to it.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from typing import Callable

from bench.machine import busy_cpu_seconds, nonidle_cpu_seconds, own_cpu_seconds
from bench.peers import REPO, Server, start_servers
from bench.procs import RUNNING, Process
from bench.runner import Context

#: Seconds the server gets to settle (finish allocations, free buffers)
#: after the last idle connection was opened, before its RSS is read.
IDLE_SETTLE = 1.0
#: Seconds the idle helper may take to open each 1,000 connections.
IDLE_OPEN_BUDGET = 20.0
#: Idle connections opened and closed before the baseline RSS is read.
WARM_UP = 10
#: Seconds the idle helper may take to reset its connections and exit.
IDLE_CLOSE_TIMEOUT = 30.0


def load_metrics(result: dict) -> dict[str, float]:
    latency = result["latency_us"]
    return {
        "requests": result["requests"],
        "errors": result["errors"],
        "elapsed_s": result["elapsed_s"],
        "rps": result["rps"],
        "p50_us": latency["p50"],
        "p99_us": latency["p99"],
        "max_lag_ms": result.get("max_lag_ms", float("nan")),
    }


def others_cpu_seconds(core: int, load_core: int | None) -> float:
    """CPU time used on `core` since boot by processes that are not this benchmark's.

    Ours are the running servers pinned there, and, on the load core, this
    process and its exited children (the load generators).  Only differences
    of this figure mean anything.
    """
    ours = sum(process.cpu_seconds() for process in RUNNING if process.core == core)
    if core == load_core:
        ours += own_cpu_seconds()
    return busy_cpu_seconds(core) - ours


def with_server_cpu(ctx: Context, server: Server, load: Callable[[], dict]) -> dict[str, float]:
    placement = ctx.placement
    cores = {"others_server_core": placement.server_core, "others_load_core": placement.load_core}
    others_before = {name: others_cpu_seconds(core, placement.load_core) for name, core in cores.items() if core is not None}
    # Everything the load core did (origin, load generator, helpers, others,
    # interrupts): near 100 %, the load side bounds the throughput too.
    load_core = placement.load_core
    load_busy_before = nonidle_cpu_seconds(load_core) if load_core is not None else 0.0
    started = time.monotonic()
    user_before, system_before = server.process.cpu_times()
    result = load()
    user_after, system_after = server.process.cpu_times()
    system = system_after - system_before
    cpu = user_after - user_before + system
    wall = time.monotonic() - started
    metrics = load_metrics(result)
    metrics["cpu_us_per_req"] = cpu / result["requests"] * 1e6 if result["requests"] else float("nan")
    metrics["system_us_per_req"] = system / result["requests"] * 1e6 if result["requests"] else float("nan")
    metrics["user_us_per_req"] = metrics["cpu_us_per_req"] - metrics["system_us_per_req"]
    metrics["cpu_util"] = cpu / result["elapsed_s"] if result["elapsed_s"] else float("nan")
    for name, core in cores.items():
        if core is not None:
            metrics[name] = max(0.0, others_cpu_seconds(core, placement.load_core) - others_before[name]) / wall
    if load_core is not None:
        metrics["load_core_util"] = (nonidle_cpu_seconds(load_core) - load_busy_before) / wall
    if "client_cpu_s" in result:
        metrics["client_cpu_us_per_req"] = result["client_cpu_s"] / result["requests"] * 1e6 if result["requests"] else float("nan")
        metrics["client_cpu_util"] = result["client_cpu_s"] / result["elapsed_s"] if result["elapsed_s"] else float("nan")
    return metrics


def idle_memory(ctx: Context, start: Callable[[], tuple[Server, int]], kind: str, count: int) -> dict[str, float]:
    """RSS growth of a fresh server while `count` idle connections of `kind` (h1, h2, mux) are open.

    `start()` returns a new, not yet started server and the port to connect
    to.  A fresh process per measurement, because servers keep freed memory
    in their own pools (HAProxy, CPython, glibc): after an earlier
    measurement the next one would find its memory already there.  A warm-up
    of WARM_UP connections, opened and closed before the baseline is read,
    keeps one-time allocations (the first request, the origin connection)
    out of the figure.
    """
    server, port = start()
    with start_servers(server):
        _hold_idle(ctx, port, kind, WARM_UP, server.process.rss_bytes)
        before = server.process.rss_bytes()
        opened, after = _hold_idle(ctx, port, kind, count, server.process.rss_bytes)
    return {
        "open": opened["open"],
        "errors": opened["failed"],
        "rss_before": before,
        "rss_after": after,
        "bytes_per_conn": (after - before) / opened["open"] if opened["open"] else float("nan"),
    }


def _hold_idle(ctx: Context, port: int, kind: str, count: int, read_rss: Callable[[], int]) -> tuple[dict, int]:
    """Open `count` idle connections with the helper; (its report, read_rss() while they are open)."""
    holder = Process(
        f"idle-{kind}",
        [sys.executable, "-m", "bench.clients.idle", "--port", str(port), "--kind", kind, "--count", str(count)],
        core=ctx.placement.load_core,
        log_path=ctx.run_dir / "idle.log",
        cwd=REPO,
        interactive=True,
    )
    try:
        holder.start()
        opened = json.loads(holder.read_line(IDLE_OPEN_BUDGET * max(1, count / 1000)))
        time.sleep(IDLE_SETTLE)
        rss = read_rss()
        holder.send_line("close")
        with contextlib.suppress(subprocess.TimeoutExpired):
            holder.popen.wait(IDLE_CLOSE_TIMEOUT)
    finally:
        holder.stop()
    return opened, rss
