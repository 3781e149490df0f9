"""The machine a run happens on: its cores, the pinning plan, and the facts
the results header records (CPU model, kernel, versions of every program).

Pinning: with two or more usable cores the server under test gets the first
and everything else (origins, helpers, load generators, the benchmark
process itself) the second, so the server never competes with its own load.
With one core nothing is pinned, and the results say so.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.compiled import floor_relay, mux_client
from bench.prerequisites import program


@dataclass(frozen=True, slots=True)
class Placement:
    server_core: int | None
    load_core: int | None

    @classmethod
    def for_this_machine(cls) -> "Placement":
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            return cls(None, None)
        return cls(cores[0], cores[1])

    @property
    def is_pinned(self) -> bool:
        return self.server_core is not None

    def describe(self) -> str:
        if not self.is_pinned:
            return "not pinned: this machine offers only one core, so servers and load share it"
        return (
            f"server under test on core {self.server_core}; origins, helpers and load generators "
            f"(and the benchmark process) on core {self.load_core} (taskset -c)"
        )

    def pin_self(self) -> None:
        """Move the benchmark process itself to the load core."""
        if self.load_core is not None:
            os.sched_setaffinity(0, {self.load_core})


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _version(argv: list[str], pattern: str) -> str:
    line = _first_line(argv)
    found = re.search(pattern, line)
    return found.group(1) if found else line


def cpu_model() -> str:
    text = Path("/proc/cpuinfo").read_text()
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return found.group(1).strip() if found else platform.processor() or "unknown"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _cpu_counters(core: int | None) -> tuple[int, ...]:
    """/proc/stat's first eight counters for one core or (None) all of them:
    user, nice, system, idle, iowait, irq, softirq, steal (clock ticks)."""
    name = "cpu" if core is None else f"cpu{core}"
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0] == name:
            return tuple(int(value) for value in fields[1:9])
    raise ValueError(f"no {name} line in /proc/stat")


def busy_cpu_seconds(core: int | None = None) -> float:
    """CPU time used since boot (/proc/stat), on one core or (None) on all of them.

    Interrupt and softirq time are left out: they are work done for whatever
    traffic flows (much of it this benchmark's), not charged to a process,
    so they cannot be compared with processes' utime + stime.  Steal time (a
    hypervisor running something else) is counted: it is a disturbance.
    """
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = _cpu_counters(core)
    return (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")


def nonidle_cpu_seconds(core: int) -> float:
    """Time `core` was not idle since boot (/proc/stat), whatever for:
    processes, steal, and interrupt and softirq time too (on loopback much of
    the network work of a send is done in softirq on the sender's core).
    How busy a core was, where busy_cpu_seconds is what processes used."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = _cpu_counters(core)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """This process's CPU time and that of its children that have exited."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


@dataclass(slots=True)
class Noise:
    """How busy the machine was besides this benchmark, over a whole run.

    Other processes' CPU = all CPU time used on the machine (/proc/stat,
    without interrupts) minus this process's and its reaped children's
    (getrusage), so it is only complete once every child has been stopped.
    """

    busy_start: float
    own_start: float
    load_start: str

    @classmethod
    def start(cls) -> "Noise":
        return cls(busy_cpu_seconds(), own_cpu_seconds(), load_average())

    def describe(self, wall_seconds: float) -> str:
        others = max(0.0, (busy_cpu_seconds() - self.busy_start) - (own_cpu_seconds() - self.own_start))
        return (
            f"load average {self.load_start} at the start, {load_average()} at the end; other processes "
            f"used {others:,.0f} CPU-seconds during the run, {others / wall_seconds * 100:.0f} % of one core "
            "on average."
        )


def versions() -> dict[str, str]:
    import httptools
    import uvloop

    import proxy

    return {
        "Python": sys.version.split()[0],
        "muxproxy": f"{proxy.__version__} (this repository, {proxy.build()} build)",
        "bare relay (the floor)": floor_relay().description,
        "mux load client": mux_client().description,
        "nginx": _version([program("nginx"), "-v"], r"nginx/(\S+)"),
        "HAProxy": _version([program("haproxy"), "-v"], r"version (\S+)"),
        "nghttpx": _version([program("nghttpx"), "--version"], r"nghttp2/(\S+)"),
        "h2load": _version([program("h2load"), "--version"], r"nghttp2/(\S+)"),
        "wrk": _version([program("wrk"), "-v"], r"^wrk (\S+)"),
        "uvloop": uvloop.__version__,
        "httptools": httptools.__version__,
    }


def facts() -> dict[str, str]:
    return {
        "CPU": f"{cpu_model()}, {os.cpu_count()} cores",
        "memory": f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB",
        "kernel": platform.release(),
        "OS": _os_name(),
        **versions(),
    }


def _os_name() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except FileNotFoundError:
        return platform.system()
    found = re.search(r'^PRETTY_NAME="?([^"\n]+)"?$', text, re.M)
    return found.group(1) if found else platform.system()
