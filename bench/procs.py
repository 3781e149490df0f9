"""Child processes: start pinned, wait until they listen, account, stop by PID.

Strategy: every server and load generator the benchmark uses is a child
process started here through `taskset -c CORE` (so the pinning is visible in
the command line), with its output in a log file under the run directory.
A `Process` remembers its own PID and, while it runs, the PIDs of its
descendants (nginx and nghttpx fork workers), each with its start time, so
`stop()` can end exactly the processes the benchmark started and never a
later process that reused a PID: SIGTERM to each, SIGKILL to whatever is
left after a grace period.  Nothing is ever stopped by name.

Accounting reads /proc, summed over the process tree:
* CPU: utime + stime from /proc/PID/stat (all threads of a process), in
  clock ticks (USER_HZ, 100 on Linux), converted to seconds.  A snapshot is
  taken before and after each run; the difference is the server's CPU time
  for that run.
* Memory: VmRSS from /proc/PID/status.  Pages shared between a master and
  its worker are counted once per process; the benchmark only uses
  differences (RSS with N connections minus RSS before), where that cancels.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

from bench.prerequisites import program

#: How long a server may take to listen after it was started.  nginx, HAProxy
#: and nghttpx listen within milliseconds; Python servers import for ~0.3 s.
START_TIMEOUT = 15.0
#: How long a process may take to exit after SIGTERM before it gets SIGKILL.
STOP_GRACE = 5.0

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, deadline: float, popen: subprocess.Popen | None = None) -> bool:
    """True once 127.0.0.1:port accepts a connection; False at the deadline or when `popen` exits."""
    while time.monotonic() < deadline and (popen is None or popen.poll() is None):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def pinned(argv: list[str], core: int | None) -> list[str]:
    """`argv` run on one CPU core via taskset; unchanged when core is None."""
    return argv if core is None else [program("taskset"), "-c", str(core), *argv]


def _children(pid: int) -> list[int]:
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    for tid in tasks:
        try:
            out += [int(child) for child in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except FileNotFoundError:
            continue
    return out


def process_tree(pid: int) -> list[int]:
    """`pid` and all its living descendants."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += _children(current)
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads), in seconds."""
    user, system = cpu_times(pids)
    return user + system


def cpu_times(pids: list[int]) -> tuple[float, float]:
    """(utime, stime) of these processes (all their threads), in seconds:
    time in user space (the program, its interpreter and libraries) and in
    the kernel on their behalf (system calls, and the loopback TCP work a
    send does for its receiver)."""
    user = system = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            continue
        # The command name (field 2) may hold spaces: split after its ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        user += int(fields[11])  # utime, stime: fields 14 and 15 of stat(5)
        system += int(fields[12])
    return user / CLOCK_TICKS, system / CLOCK_TICKS


def rss_bytes(pids: list[int]) -> int:
    """Sum of VmRSS of these processes, in bytes."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
                break
    return total


#: Every Process started and not yet stopped, so a measurement can tell this
#: benchmark's CPU time from everything else on the machine.
RUNNING: set["Process"] = set()


class ProcessFailed(RuntimeError):
    """A child did not start, or a load generator failed; the message quotes its log."""


class Process:
    """One child process (and the tree it forks), pinned to a core.

    An `interactive` process is driven by lines: its stdin and stdout are
    pipes (`send_line`, `read_line`), its stderr goes to the log.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        core: int | None,
        log_path: Path,
        cwd: Path | None = None,
        interactive: bool = False,
    ):
        self.name = name
        self.argv = pinned(argv, core)
        self.core = core
        self.log_path = log_path
        self.cwd = cwd
        self.interactive = interactive
        self.popen: subprocess.Popen | None = None
        self._known: dict[int, int] = {}  # pid -> its start time, so a reused PID is never signalled
        self._pending = b""

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<Process {self.name} pid={self.popen.pid if self.popen else None} core={self.core} {state}>"

    def is_running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self, port: int | None = None) -> None:
        """Start the child; with `port`, wait until it accepts connections there."""
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE if self.interactive else subprocess.DEVNULL,
                stdout=subprocess.PIPE if self.interactive else log,
                stderr=log,
                cwd=self.cwd,
            )
        RUNNING.add(self)
        if port is not None and not wait_for_port(port, time.monotonic() + START_TIMEOUT, self.popen):
            self.stop()
            raise ProcessFailed(f"{self.name} did not listen on 127.0.0.1:{port}:\n{self.log_tail()}")
        if not self.is_running():
            raise ProcessFailed(f"{self.name} exited with code {self.popen.returncode}:\n{self.log_tail()}")
        self.pids()

    def send_line(self, line: str) -> None:
        self.popen.stdin.write(line.encode() + b"\n")
        self.popen.stdin.flush()

    def read_line(self, timeout: float) -> str:
        """The next line the process prints; ProcessFailed at the timeout or its exit."""
        deadline = time.monotonic() + timeout
        fd = self.popen.stdout.fileno()
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise ProcessFailed(f"{self.name} printed nothing within {timeout:.0f} s:\n{self.log_tail()}")
            data = os.read(fd, 65536)
            if not data:
                raise ProcessFailed(f"{self.name} exited (code {self.popen.wait()}):\n{self.log_tail()}")
            self._pending += data
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode()

    def pids(self) -> list[int]:
        """The living process tree; remembered so `stop()` can reach every PID."""
        if not self.is_running():
            return []
        tree = process_tree(self.popen.pid)
        for pid in tree:
            if pid not in self._known and (started := _start_time(pid)) is not None:
                self._known[pid] = started
        return tree

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pids())

    def cpu_times(self) -> tuple[float, float]:
        return cpu_times(self.pids())

    def rss_bytes(self) -> int:
        return rss_bytes(self.pids())

    def stop(self) -> None:
        """SIGTERM the whole known tree by PID, then SIGKILL what outlives the grace period."""
        if self.popen is None:
            return
        RUNNING.discard(self)
        if self.interactive and self.popen.stdin and not self.popen.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.popen.stdin.close()
        self.pids()
        for pid, started in self._known.items():
            _signal(pid, started, signal.SIGTERM)
        try:
            self.popen.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        deadline = time.monotonic() + STOP_GRACE
        for pid, started in self._known.items():
            while _is_alive(pid, started) and time.monotonic() < deadline:
                time.sleep(0.02)
            _signal(pid, started, signal.SIGKILL)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no output)"
        return "\n".join(text.splitlines()[-lines:]) or "(no output)"


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (state first), or None if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return None


def _start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None  # field 22 of stat(5): start time in clock ticks


def _is_alive(pid: int, started: int) -> bool:
    """True while the process `pid` that started at `started` exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and int(fields[19]) == started and fields[0] != "Z"


def _signal(pid: int, started: int, signum: int) -> None:
    """Signal `pid` only if it is still the process we saw start at `started`."""
    if _is_alive(pid, started):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def run_load(name: str, argv: list[str], *, core: int | None, log_path: Path, timeout: float, cwd: Path | None = None) -> str:
    """Run a load generator to completion; its stdout, or ProcessFailed with its output."""
    command = pinned(argv, core)
    try:
        done = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, cwd=cwd
        )
    except subprocess.TimeoutExpired as exc:
        raise ProcessFailed(f"{name} did not finish within {timeout:.0f} s: {' '.join(command)}") from exc
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        raise ProcessFailed(f"{name} exited with code {done.returncode}: {' '.join(command)}\n{done.stderr[-2000:]}")
    return done.stdout
