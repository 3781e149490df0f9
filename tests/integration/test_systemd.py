"""The shipped systemd units, and socket activation, with Debian's systemd tools.

`systemd-analyze verify` checks both units as shipped, except that ExecStart
names the `muxproxy` installed here instead of /usr/local/bin/muxproxy
(verify checks that the binary exists).  Socket activation runs under
`systemd-socket-activate`, which binds the sockets, sets $LISTEN_FDS,
$LISTEN_PID and $LISTEN_FDNAMES and execs the proxy in place, as systemd does
for a service with a socket unit (without --accept: one process for all
connections, like muxproxy.socket).  Whether the proxy really serves the
passed socket rather than a socket of its own is read from /proc: its file
descriptor 3 is the one socket listening on that port.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.faulty import ScriptedOrigin
from tests.support.harness import REPO, free_port
from tests.support.service import (
    NotifySocket,
    ServiceProcess,
    connection_owner,
    fd_inode,
    listening_inode,
    write_config,
)

SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"
SOCKET_ACTIVATE = "/usr/bin/systemd-socket-activate"
UNITS = REPO / "systemd"
SHIPPED_BINARY = "/usr/local/bin/muxproxy"


# --- systemd-analyze verify ---------------------------------------------------------------


def muxproxy_binary(tmp_path: Path) -> str:
    """The installed console script, or a shim that runs `python -m proxy`."""
    installed = shutil.which("muxproxy")
    if installed is not None:
        return installed
    shim = tmp_path / "muxproxy"
    shim.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -m proxy "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(shim)


def installed_units(tmp_path: Path, binary: str) -> Path:
    """Copies of both units, ExecStart pointing at `binary`; nothing else changed."""
    directory = tmp_path / "units"
    directory.mkdir()
    for name in ("muxproxy.service", "muxproxy.socket"):
        text = (UNITS / name).read_text()
        if name == "muxproxy.service":
            assert text.count(f"ExecStart={SHIPPED_BINARY} ") == 1
            text = text.replace(f"ExecStart={SHIPPED_BINARY} ", f"ExecStart={binary} ")
        (directory / name).write_text(text)
    return directory


def verify(directory: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "muxproxy.socket", "muxproxy.service"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_systemd_analyze_verify_accepts_both_shipped_units(tmp_path: Path):
    directory = installed_units(tmp_path, muxproxy_binary(tmp_path))
    result = verify(directory)
    assert result.returncode == 0, result.stdout + result.stderr
    # No warning about our units either (verify reports some with status 0).
    assert "muxproxy" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_systemd_analyze_verify_does_check_the_units_here(tmp_path: Path):
    """The check above means something: a unit whose binary is missing fails."""
    directory = installed_units(tmp_path, str(tmp_path / "no-such-binary"))
    result = verify(directory)
    assert result.returncode != 0
    assert "no-such-binary" in result.stderr


def test_the_units_agree_with_each_other():
    service = (UNITS / "muxproxy.service").read_text()
    sock = (UNITS / "muxproxy.socket").read_text()
    assert "Service=muxproxy.service" in sock
    assert "Type=notify" in service and "ExecReload=/bin/kill -HUP $MAINPID" in service
    # The master speaks for the service; workers are not the main process.
    assert "NotifyAccess=main" in service


# --- socket activation --------------------------------------------------------------------------


@pytest.fixture
def origin() -> Iterator[ScriptedOrigin]:
    with ScriptedOrigin("a") as origin:
        yield origin


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    with NotifySocket(tmp_path) as sock:
        yield sock


@pytest.fixture
def activated(tmp_path: Path, notify: NotifySocket) -> Iterator:
    """`activated(config_path, ["127.0.0.1:P", ...], fdnames)`: the proxy under
    systemd-socket-activate, stopped by PID when the test ends.  Returns the
    service and a connection to the first address made before the proxy
    started: without --accept, systemd-socket-activate waits for the first
    connection and then execs the proxy (like systemd starting a service when
    its socket gets traffic)."""
    started: list[ServiceProcess] = []

    def start(config_path: Path, addresses: list[str], fdnames: list[str]) -> tuple[ServiceProcess, socket.socket]:
        command = [SOCKET_ACTIVATE]
        for address in addresses:
            command += ["-l", address]
        command += [f"--fdname={':'.join(fdnames)}"]
        # systemd-socket-activate passes only PATH, TERM, USER, HOME and these.
        command += ["-E", f"PYTHONPATH={REPO}", "-E", f"NOTIFY_SOCKET={notify.path}"]
        command += ServiceProcess.proxy_command(config_path)
        service = ServiceProcess(config_path, notify=notify, command=command)
        started.append(service)
        service.start(wait_ready=False)
        port = int(addresses[0].rsplit(":", 1)[1])
        deadline = time.monotonic() + 10
        while listening_inode(port) is None:
            assert time.monotonic() < deadline, service.log
            time.sleep(0.01)
        # Nothing of the proxy runs yet: the process is still the activator.
        assert Path(f"/proc/{service.pid}/cmdline").read_bytes().split(b"\0")[0] == SOCKET_ACTIVATE.encode()
        early = socket.create_connection(("127.0.0.1", port), timeout=10)
        opened.append(early)
        service.wait_ready()
        return service, early

    opened: list[socket.socket] = []
    yield start
    for sock in opened:
        sock.close()
    for service in reversed(started):
        service.stop()


def config_for(tmp_path: Path, origin: ScriptedOrigin, listeners: list[int], *, workers: int = 1, admin="127.0.0.1:0"):
    body = f'[server]\nworkers = {workers}\n\n[origin.a]\nservers = ["{origin.address}"]\n\n[[route]]\norigin = "a"\n'
    return write_config(tmp_path / "muxproxy.toml", body, listeners=listeners, admin=admin)


def http_get(port: int, path: str = "/ok", sock: socket.socket | None = None) -> tuple[int, str]:
    """(status, X-Origin) of one request (Connection: close), on `sock` if given."""
    sock = sock or socket.create_connection(("127.0.0.1", port), timeout=10)
    with sock:
        sock.settimeout(10)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    fields = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in head[1:])}
    return int(head[0].split(" ")[1]), fields.get("x-origin", "")


def test_the_proxy_serves_the_passed_socket_and_binds_the_other_listener(tmp_path, origin, notify, activated):
    passed, own = free_port(), free_port()
    config = config_for(tmp_path, origin, [passed, own])
    service, early = activated(config, [f"127.0.0.1:{passed}"], ["http"])
    # The connection made before the proxy started waited in the kernel.
    assert http_get(passed, sock=early) == (200, "a")
    # The one socket listening on the passed port is the proxy's fd 3
    # (SD_LISTEN_FDS_START): it did not bind one of its own.
    assert fd_inode(service.pid, 3) == listening_inode(passed)
    # The listener systemd did not pass is bound by the proxy itself.
    assert listening_inode(own) is not None and listening_inode(own) != fd_inode(service.pid, 3)
    assert http_get(own) == (200, "a")
    assert http_get(passed) == (200, "a")
    assert service.log_lines(r"serving passed socket") == []


def test_a_passed_socket_that_no_listener_names_is_still_served(tmp_path, origin, notify, activated):
    passed, own = free_port(), free_port()
    config = config_for(tmp_path, origin, [own])
    service, early = activated(config, [f"127.0.0.1:{passed}"], ["http"])
    assert http_get(passed, sock=early) == (200, "a")
    assert fd_inode(service.pid, 3) == listening_inode(passed)
    assert http_get(passed) == (200, "a")
    assert http_get(own) == (200, "a")
    service.wait_log(r"serving passed socket 'http'")


def test_socket_activation_with_workers_shares_the_passed_socket(tmp_path, origin, notify, activated):
    passed = free_port()
    config = config_for(tmp_path, origin, [passed], workers=2)
    service, early = activated(config, [f"127.0.0.1:{passed}"], ["http"])
    assert http_get(passed, sock=early) == (200, "a")
    service.wait_log(r"all 2 workers ready")
    pids = service.worker_pids()
    inode = listening_inode(passed)
    assert fd_inode(service.pid, 3) == inode
    # Every worker accepts on the very socket systemd passed.
    for pid in pids:
        assert inode in {fd_inode(pid, int(fd)) for fd in os.listdir(f"/proc/{pid}/fd") if _is_socket(pid, fd)}
    owners = set()
    for _ in range(60):
        with socket.create_connection(("127.0.0.1", passed), timeout=10) as sock:
            owners.add(connection_owner(sock, pids))
            assert http_get(passed, sock=sock) == (200, "a")
        if owners == set(pids):
            break
    assert owners == set(pids), "one worker took every connection"


@pytest.mark.parametrize("workers", [pytest.param(1, id="single"), pytest.param(2, id="workers")])
def test_an_admin_socket_passed_by_name_serves_only_the_admin_endpoints(workers, tmp_path, origin, notify, activated):
    passed, admin = free_port(), free_port()
    config = config_for(tmp_path, origin, [passed], admin=f"127.0.0.1:{admin}", workers=workers)
    service, early = activated(config, [f"127.0.0.1:{passed}", f"127.0.0.1:{admin}"], ["http", "admin"])
    assert http_get(passed, sock=early) == (200, "a")
    assert service.admin == ("127.0.0.1", admin)
    assert fd_inode(service.pid, 4) == listening_inode(admin)
    # Every connection to the admin port reaches the admin listener, never the proxy.
    for _ in range(20):
        status, body, _ = service.admin_get("/healthz")
        assert (status, body) == (200, "ok\n")
    assert origin.requests_for("/healthz") == []
    assert service.log_lines(r"serving passed socket 'admin'") == []
    assert http_get(passed) == (200, "a")


def _is_socket(pid: int, fd: str) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")
    except OSError:
        return False
