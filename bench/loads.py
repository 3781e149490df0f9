"""Driving the load generators: command lines in, one result shape out.

Every load generator runs as a child process pinned to the load core
(procs.run_load) and is reduced to the same dict:

    {"requests": n, "errors": n, "elapsed_s": s, "rps": r,
     "latency_us": {"p50", "p90", "p99", "max"}, ...}

* wrk (HTTP/1.1, closed loop, one thread): its text report is parsed;
  latency percentiles come from `--latency`, each line read by its label.
  Errors are socket errors plus non-2xx/3xx responses.
* h2load (HTTP/2 over cleartext by prior knowledge for http:// URLs, or
  HTTP/1.1 with --h1): its text report gives requests, time and bytes;
  latency percentiles are computed from its per-request `--log-file`, since
  h2load itself prints only min/max/mean.  Its "traffic" figure counts the
  bytes it received, frame headers included, not what it sent.
* bench/clients/muxload.py and h1rate.py print the dict as JSON.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from bench.compiled import mux_client
from bench.prerequisites import program
from bench.procs import run_load
from bench.stats import percentile

#: Seconds a load generator may run beyond its nominal duration.
LOAD_GRACE = 60.0

_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


def _duration_us(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS_US[match.group(2)]


def parse_wrk(output: str) -> dict:
    summary = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", output)
    if not summary:
        raise ValueError(f"no summary in wrk output:\n{output}")
    requests = int(summary.group(1))
    elapsed = _duration_us(summary.group(2) + summary.group(3)) / 1e6
    latency = {}
    for label, key in (("50%", "p50"), ("90%", "p90"), ("99%", "p99")):
        found = re.search(rf"^\s+{re.escape(label)}\s+(\S+)", output, re.M)
        latency[key] = _duration_us(found.group(1)) if found else float("nan")
    maximum = re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", output, re.M)
    latency["max"] = _duration_us(maximum.group(1)) if maximum else float("nan")
    errors = 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socket_errors:
        errors += sum(int(value) for value in socket_errors.groups())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    return {"requests": requests, "errors": errors, "elapsed_s": elapsed, "rps": requests / elapsed, "latency_us": latency}


def parse_h2load(output: str, log_file: Path | None) -> dict:
    finished = re.search(r"finished in ([\d.]+)(us|ms|s|m),", output)
    counts = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout",
        output,
    )
    if not finished or not counts:
        raise ValueError(f"no summary in h2load output:\n{output}")
    elapsed = _duration_us(finished.group(1) + finished.group(2)) / 1e6
    done, succeeded = int(counts.group(3)), int(counts.group(4))
    traffic = re.search(r"traffic: \S+ \((\d+)\) total", output)
    latency = {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "max": float("nan")}
    if log_file is not None and log_file.exists():
        times = sorted(float(line.split("\t")[2]) for line in log_file.read_text().splitlines() if line.count("\t") >= 2)
        if times:
            latency = {"p50": percentile(times, 50), "p90": percentile(times, 90), "p99": percentile(times, 99), "max": times[-1]}
        log_file.unlink()
    return {
        "requests": succeeded,
        "errors": done - succeeded + int(counts.group(6)) + int(counts.group(7)),
        "elapsed_s": elapsed,
        "rps": succeeded / elapsed if elapsed > 0 else 0.0,
        "latency_us": latency,
        "h2load_traffic_bytes": int(traffic.group(1)) if traffic else 0,
    }


class Loads:
    """Builds and runs load generator command lines for one benchmark run."""

    def __init__(self, run_dir: Path, core: int | None, repo: Path) -> None:
        self.run_dir = run_dir
        self.core = core
        self.repo = repo
        self.log_path = run_dir / "loads.log"

    def _run(self, name: str, argv: list[str], budget: float) -> str:
        return run_load(name, argv, core=self.core, log_path=self.log_path, timeout=budget + LOAD_GRACE, cwd=self.repo)

    def wrk(self, port: int, path: str, connections: int, duration: float) -> dict:
        seconds = max(1, round(duration))  # wrk takes whole seconds
        argv = [program("wrk"), "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}{path}"]
        return parse_wrk(self._run("wrk", argv, seconds))

    def h2load(
        self,
        port: int,
        path: str,
        *,
        connections: int,
        streams: int,
        duration: float | None = None,
        requests: int | None = None,
        http1: bool = False,
        headers: list[str] = (),
    ) -> dict:
        log_file = self.run_dir / "h2load-requests.tsv"
        argv = [program("h2load"), f"-c{connections}", f"-m{streams}", "-t1", f"--log-file={log_file}"]
        argv += [f"-D{round(duration * 1000)}ms"] if duration is not None else [f"-n{requests}"]
        argv += ["--h1"] if http1 else []
        for header in headers:
            argv += ["-H", header]
        argv.append(f"http://127.0.0.1:{port}{path}")
        return parse_h2load(self._run("h2load", argv, duration or 30.0), log_file)

    def _json(self, name: str, argv: list[str], budget: float) -> dict:
        """Run one of the Python load clients, which print their result as JSON."""
        return json.loads(self._run(name, argv, budget))

    def muxload(
        self,
        port: int,
        path: str,
        *,
        connections: int = 1,
        in_flight: int = 1,
        duration: float | None = None,
        requests: int | None = None,
        rate: float | None = None,
        gzip: bool = False,
        outer_headers: list[str] = (),
        inner_headers: list[str] = (),
    ) -> dict:
        args = ["--port", str(port), "--path", path, "--connections", str(connections), "--in-flight", str(in_flight)]
        args += ["--duration", str(duration)] if duration is not None else ["--requests", str(requests)]
        args += ["--rate", str(rate)] if rate is not None else []
        args += ["--gzip"] if gzip else []
        for header in outer_headers:
            args += ["--outer-header", header]
        for header in inner_headers:
            args += ["--inner-header", header]
        # Compiled when it can be (bench/compiled.py): it shares the load core with the origin.
        return self._json("bench.clients.muxload", mux_client().argv(*args), duration or 30.0)

    def h1rate(self, port: int, path: str, *, rate: float, duration: float) -> dict:
        args = ["--port", str(port), "--path", path, "--rate", str(rate), "--duration", str(duration)]
        return self._json("bench.clients.h1rate", [sys.executable, "-m", "bench.clients.h1rate", *args], duration)
