"""Running `python -m proxy` as a service would: signals, systemd's notify socket, the admin listener.

`NotifySocket` is a datagram socket bound in a test's directory and handed to
the proxy as $NOTIFY_SOCKET, the way systemd does for a `Type=notify`
service.  A background thread collects every datagram (sd_notify(3): one
message of "KEY=value" lines), timestamped on arrival, and `wait_for` waits
for one that carries a given line.

`ServiceProcess` starts `python -m proxy --config FILE` (or any command line
that ends in one, such as `systemd-socket-activate ... python -m proxy ...`)
with that socket in its environment, reads its stderr (the operational log)
on a thread, and knows the ports and PIDs the log names: the admin listener
("admin listener on HOST:PORT") and, with workers, each worker ("worker N
started (pid P)").  `stop()` ends the process by its PID, gracefully and
then with SIGKILL, and afterwards kills any worker that outlived its master
(checked by /proc/PID/cmdline, so a recycled PID is never hit).

`scrape()` reads /metrics from the admin listener and parses it with
prometheus_client's own parser into a `Metrics` lookup.

`connection_owner()` tells which process holds the server side of a client's
TCP connection (from /proc/net/tcp and /proc/PID/fd), so a test can make sure
its requests landed on every worker.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.harness import REPO

#: Generous bounds: workers are whole interpreters, and CI machines are slow.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0
WAIT_TIMEOUT = 10.0

#: Longest AF_UNIX path (sun_path is 108 bytes with its NUL).
_MAX_UNIX_PATH = 107


# --- systemd's notify socket ----------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    """One sd_notify datagram: its lines, and when it arrived (time.monotonic)."""

    lines: tuple[str, ...]
    at: float

    def has(self, line: str) -> bool:
        return line in self.lines

    def value(self, key: str) -> str | None:
        prefix = key + "="
        for line in self.lines:
            if line.startswith(prefix):
                return line[len(prefix) :]
        return None


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, directory: Path) -> None:
        path = directory / "notify.sock"
        self._own_dir: str | None = None
        if len(str(path)) > _MAX_UNIX_PATH:  # a deep tmp_path: use a short directory
            self._own_dir = tempfile.mkdtemp(prefix="notify-", dir="/tmp")
            path = Path(self._own_dir) / "notify.sock"
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[Notification] = []
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._collect, name="notify-socket", daemon=True)
        self._thread.start()

    def __enter__(self) -> "NotifySocket":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _collect(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                return
            if not data and self._closed:
                return
            message = Notification(tuple(data.decode("utf-8").split("\n")), time.monotonic())
            with self._changed:
                self.messages.append(message)
                self._changed.notify_all()

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path)}

    def mark(self) -> int:
        """The index the next message will have: pass it as `start` to wait for later ones."""
        with self._changed:
            return len(self.messages)

    def wait_for(
        self, line: str | Callable[[Notification], bool], *, start: int = 0, timeout: float = WAIT_TIMEOUT
    ) -> int:
        """Index of the first message from `start` on that has `line` (or
        satisfies the predicate); TimeoutError with what arrived otherwise."""
        matches = line if callable(line) else (lambda message: message.has(line))
        deadline = time.monotonic() + timeout
        with self._changed:
            index = start
            while True:
                while index < len(self.messages):
                    if matches(self.messages[index]):
                        return index
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {line!r} after {timeout}s; got {self.messages[start:]!r}")
                self._changed.wait(remaining)

    def since(self, start: int) -> list[Notification]:
        with self._changed:
            return self.messages[start:]

    def close(self) -> None:
        self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(5)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        if self._own_dir is not None:
            os.rmdir(self._own_dir)


# --- configuration files -----------------------------------------------------------------


def write_config(
    path: Path,
    body: str,
    *,
    listeners: Sequence[int | str],
    admin: str = "127.0.0.1:0",
    access: str = "off",
) -> Path:
    """Write a config file: `body` (origins, routes, [server], [mux]: the
    `proxy_config` fixture's text) with these listeners, this admin address
    and access log.  `body` must say how many workers ([server] workers), so
    a test never depends on the machine's core count."""
    if "[server]" not in body or "workers" not in body:
        raise ValueError("say [server] workers = N in the config body")
    parts = []
    for listener in listeners:
        address = f"127.0.0.1:{listener}" if isinstance(listener, int) else listener
        parts.append(f'[[listener]]\naddress = "{address}"\n')
    parts.append(body)
    parts.append(f'\n[admin]\naddress = "{admin}"\n')
    parts.append(f'\n[log]\naccess = "{access}"\n')
    path.write_text("\n".join(parts))
    return path


# --- the proxy process -------------------------------------------------------------------------

_ADMIN_RE = re.compile(r"admin listener on ([0-9.]+):([0-9]+)")
_WORKER_RE = re.compile(r"worker (\d+) started \(pid (\d+)\)")


class ServiceProcess:
    """`python -m proxy --config FILE` as a child process (see module note)."""

    def __init__(
        self,
        config_path: Path,
        *,
        notify: NotifySocket | None = None,
        env: dict[str, str] | None = None,
        command: Sequence[str] | None = None,
        new_session: bool = False,
    ) -> None:
        self.config_path = config_path
        self.notify = notify
        self.extra_env = dict(env or {})
        #: The command line; by default `python -m proxy --config FILE`.
        self.command = list(command) if command is not None else self.proxy_command(config_path)
        self.new_session = new_session
        self.process: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader: threading.Thread | None = None
        self._admin: tuple[str, int] | None = None

    @staticmethod
    def proxy_command(config_path: Path) -> list[str]:
        return [sys.executable, "-m", "proxy", "--config", str(config_path)]

    # --- life cycle ---

    def start(self, *, wait_ready: bool = True) -> "ServiceProcess":
        env = dict(os.environ, PYTHONPATH=str(REPO))
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            env.pop(key, None)  # whatever runs the tests must not leak into the proxy
        if self.notify is not None:
            env.update(self.notify.env)
        env.update(self.extra_env)
        self.process = subprocess.Popen(
            self.command,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=self.new_session,
        )
        self._reader = threading.Thread(target=self._read_log, name=f"log-{self.process.pid}", daemon=True)
        self._reader.start()
        if wait_ready:
            try:
                self.wait_ready()
            except BaseException:
                self.stop()
                raise
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """READY=1 on the notify socket (or, without one, the admin log line)."""
        if self.notify is not None:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    self.notify.wait_for("READY=1", timeout=0.2)
                    return
                except TimeoutError:
                    if self.process.poll() is not None:
                        raise RuntimeError(f"the proxy exited with {self.process.returncode}:\n{self.log}") from None
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"no READY=1 after {timeout}s:\n{self.log}") from None
        else:
            self.wait_log(r"listening on ", timeout=timeout)

    def __enter__(self) -> "ServiceProcess":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self.process.pid

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"pid {self.pid} still runs after {timeout}s:\n{self.log}") from None

    def stop(self) -> None:
        """Stop by PID: SIGTERM, then SIGKILL; then any worker left behind."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in self.worker_pids(all_started=True):
            deadline = time.monotonic() + 5.0
            while is_worker_process(pid) and time.monotonic() < deadline:
                time.sleep(0.05)  # a worker stops on its own when its master is gone
            if is_worker_process(pid):
                os.kill(pid, signal.SIGKILL)
        if self._reader is not None:
            self._reader.join(5)
        if self.process.stderr is not None:
            self.process.stderr.close()

    # --- the log ---

    def _read_log(self) -> None:
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    @property
    def log(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def log_mark(self) -> int:
        with self._changed:
            return len(self.lines)

    def wait_log(self, pattern: str, *, start: int = 0, timeout: float = WAIT_TIMEOUT) -> re.Match:
        """The first log line from line `start` on that matches `pattern` (re.search)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            index = start
            while True:
                while index < len(self.lines):
                    match = regex.search(self.lines[index])
                    if match:
                        return match
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no log line matching {pattern!r} after {timeout}s:\n{self.log}")
                self._changed.wait(min(remaining, 0.2))

    def log_lines(self, pattern: str) -> list[re.Match]:
        regex = re.compile(pattern)
        with self._changed:
            return [m for m in map(regex.search, self.lines) if m]

    def worker_pids(self, *, all_started: bool = False) -> list[int]:
        """PIDs of the workers, by index: the latest start of each (or every
        start ever, with `all_started`)."""
        starts = self.log_lines(_WORKER_RE.pattern)
        if all_started:
            return [int(m[2]) for m in starts]
        latest: dict[int, int] = {}
        for match in starts:
            latest[int(match[1])] = int(match[2])
        return [latest[index] for index in sorted(latest)]

    # --- the admin listener ---

    @property
    def admin(self) -> tuple[str, int]:
        if self._admin is None:
            match = self.wait_log(_ADMIN_RE.pattern)
            self._admin = (match[1], int(match[2]))
        return self._admin

    def admin_get(self, path: str, timeout: float = WAIT_TIMEOUT) -> tuple[int, str, dict[str, str]]:
        """(status, body, lower-cased fields) of GET `path` on the admin listener."""
        host, port = self.admin
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read().decode("utf-8")
            return response.status, body, {k.lower(): v for k, v in response.getheaders()}
        finally:
            connection.close()

    def scrape(self) -> "Metrics":
        status, body, fields = self.admin_get("/metrics")
        if status != 200:
            raise AssertionError(f"/metrics answered {status}: {body}")
        return Metrics(body, fields.get("content-type", ""))

    def wait_metrics(self, predicate: Callable[["Metrics"], bool], timeout: float = WAIT_TIMEOUT) -> "Metrics":
        """Scrape until `predicate(metrics)` holds (workers report once a second)."""
        deadline = time.monotonic() + timeout
        while True:
            metrics = self.scrape()
            if predicate(metrics):
                return metrics
            if time.monotonic() > deadline:
                raise AssertionError(f"metrics never matched after {timeout}s:\n{metrics.text}")
            time.sleep(0.1)


def is_worker_process(pid: int) -> bool:
    """Is `pid` alive and a muxproxy worker (not a recycled PID)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return b"--worker" in cmdline and b"proxy" in cmdline and state != "Z"


# --- metrics ----------------------------------------------------------------------------------


@dataclass
class Metrics:
    """A /metrics page, parsed by prometheus_client's text parser."""

    text: str
    content_type: str = ""
    families: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.families = {family.name: family for family in text_string_to_metric_families(self.text)}

    def samples(self, name: str) -> list:
        """Every sample called `name` (e.g. "muxproxy_requests_total")."""
        return [s for family in self.families.values() for s in family.samples if s.name == name]

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one sample `name` with exactly these labels, or None."""
        found = [s.value for s in self.samples(name) if s.labels == labels]
        if len(found) > 1:
            raise AssertionError(f"{len(found)} samples {name}{labels}")
        return found[0] if found else None

    def sum(self, name: str, **labels: str) -> float:
        """Sum of the samples `name` whose labels include these."""
        return sum(s.value for s in self.samples(name) if labels.items() <= s.labels.items())


# --- which process holds a connection --------------------------------------------------------


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    base = Path(f"/proc/{pid}/fd")
    for entry in base.iterdir():
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _tcp_inode(local_port: int, remote_port: int) -> int | None:
    """Inode of the 127.0.0.1:local_port <-> 127.0.0.1:remote_port socket (IPv4)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        local, remote, inode = parts[1], parts[2], int(parts[9])
        if int(local.split(":")[1], 16) == local_port and int(remote.split(":")[1], 16) == remote_port and inode:
            return inode
    return None


def connection_owner(sock: socket.socket, pids: Sequence[int], timeout: float = WAIT_TIMEOUT) -> int:
    """The PID (among `pids`) that accepted the server side of `sock`."""
    server_port = sock.getpeername()[1]
    client_port = sock.getsockname()[1]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inode = _tcp_inode(server_port, client_port)
        if inode is not None:
            for pid in pids:
                if inode in _socket_inodes(pid):
                    return pid
        time.sleep(0.02)  # accepted a moment later
    raise TimeoutError(f"no process of {list(pids)} holds the server side of port {client_port}")


def listening_inode(port: int) -> int | None:
    """Inode of the IPv4 socket listening on 127.0.0.1:port (state 0A)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] == "0A" and int(parts[1].split(":")[1], 16) == port:
            return int(parts[9])
    return None


def fd_inode(pid: int, fd: int) -> int | None:
    target = os.readlink(f"/proc/{pid}/fd/{fd}")
    return int(target[8:-1]) if target.startswith("socket:[") else None
