"""systemd's notify protocol (sd_notify(3)), and its watchdog.

Strategy: the protocol is one datagram of "KEY=value" lines sent to the
AF_UNIX socket named by $NOTIFY_SOCKET (a leading "@" means the abstract
namespace).  That is a dozen lines, so they are written here: the maintained
binding (systemd-python) needs libsystemd headers and a compiler at install
time, and the small pure-Python packages on PyPI are unmaintained.  Without
$NOTIFY_SOCKET (not run by systemd) every call does nothing.

Sending never raises: a service must not die because its supervisor's socket
went away; the first failure is logged.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("muxproxy.sdnotify")


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if path.startswith("@"):
            self.address = "\0" + path[1:]
        elif path.startswith("/"):
            self.address = path
        self._socket: socket.socket | None = None
        self._warned = False
        #: Seconds between WATCHDOG=1 pings (half of WatchdogSec, as
        #: sd_watchdog_enabled(3) advises), or None when no watchdog is set
        #: for this process.
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> None:
        if self.address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto("\n".join(lines).encode("utf-8"), self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %r: %s", self.address, exc)

    def ready(self, status: str = "") -> None:
        self.notify("READY=1", *(("STATUS=" + status,) if status else ()), f"MAINPID={os.getpid()}")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd 253+ (Type=notify-reload) match the
        # READY=1 that ends the reload; older versions ignore it.
        usec = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6)
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def status(self, text: str) -> None:
        self.notify("STATUS=" + text.replace("\n", " "))

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
