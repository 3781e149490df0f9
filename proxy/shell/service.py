"""One serving process: a ProxyServer with signals, systemd and admin around it.

Strategy: `Service` is what runs in a process that serves traffic: the whole
muxproxy when `server.workers = 1`, or one worker under a master.  It owns
the reactions to signals:

- SIGHUP: read and validate the configuration file again; an invalid one is
  logged and reported, and the running configuration stays; a valid one is
  applied by `ProxyServer.reload` (nothing open is disturbed);
- SIGTERM / SIGINT: graceful stop within `server.shutdown_timeout`; a second
  one stops at once;
- SIGUSR1: reopen the access log (after logrotate moved it).

Standing alone it also talks to systemd (READY, RELOADING, STOPPING, STATUS,
and WATCHDOG pings from its own event loop, so a stuck loop is restarted) and
serves the admin listener.  As a worker it leaves both to the master and
reports to it over the control socket instead (`WorkerLink`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
from typing import Callable

from proxy.config import Config
from proxy.errors import ConfigError
from proxy.shell.activation import Inherited
from proxy.shell.admin import Admin, AdminSlot
from proxy.shell.reloads import ReloadQueue
from proxy.shell.sdnotify import Notifier
from proxy.shell.server import ProxyServer

log = logging.getLogger("muxproxy")

#: How often a worker reports its figures (and that it is alive) to the
#: master, and how often a standalone process updates systemd's STATUS.
REPORT_INTERVAL = 1.0
STATUS_INTERVAL = 5.0


class WorkerLink:
    """A worker's end of the control socket to its master (JSON lines)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(False)

    def send(self, message: dict) -> None:
        try:
            self.sock.send((json.dumps(message, separators=(",", ":")) + "\n").encode("utf-8"))
        except (BlockingIOError, InterruptedError):
            pass  # the master is behind; the next report says it all again
        except OSError:
            pass  # the master is gone: on_master_gone stops us


class Service:
    def __init__(
        self,
        config: Config,
        load: Callable[[], Config],
        *,
        inherited: list[Inherited] = (),
        link: WorkerLink | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.load = load
        self.link = link
        self.notifier = notifier if notifier is not None else Notifier({})
        # A worker binds listeners added by a reload with SO_REUSEPORT, so
        # that its siblings can bind them too.
        # A socket systemd passes under the name "admin" is the admin
        # listener's, never a proxy listener.
        proxy_sockets = [i for i in inherited if i.name != "admin"]
        self.server = ProxyServer(config, inherited=proxy_sockets, reuse_port=link is not None)
        server = self.server
        self.admin = AdminSlot(
            lambda: Admin(server.snapshot, healthy=lambda: True, ready=lambda: server.ready), list(inherited)
        )
        self._stopping = asyncio.Event()
        self._second = asyncio.Event()  # a second stop signal: stop at once
        self._signals = 0
        self.reloader = ReloadQueue(self.reload, self._stopping.is_set)
        self._requests_seen = 0

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        server = self.server
        await server.start()
        if self.link is None:
            await self.admin.apply(self.admin.prepare(self.config.admin.address))
        for signum, handler in (
            (signal.SIGHUP, self._on_sighup),
            (signal.SIGTERM, self._on_stop_signal),
            (signal.SIGINT, self._on_stop_signal),
            (signal.SIGUSR1, self._on_sigusr1),
        ):
            loop.add_signal_handler(signum, handler)
        timers = []
        if self.link is not None:
            self.link.send({"event": "ready"})
            timers.append(loop.create_task(self._report()))
            loop.add_reader(self.link.sock.fileno(), self._on_master_readable)
        else:
            self.notifier.ready(self.status_text())
            if self.notifier.watchdog_interval:
                timers.append(loop.create_task(self._watchdog(self.notifier.watchdog_interval)))
            if self.notifier.enabled:
                timers.append(loop.create_task(self._status()))
        try:
            await self._stopping.wait()
        finally:
            for task in timers:
                task.cancel()
            await asyncio.gather(*timers, return_exceptions=True)
        self.notifier.stopping()
        if self.reloader.task is not None:
            await asyncio.gather(self.reloader.task, return_exceptions=True)
        if self._signals > 1:
            await server.stop()
        else:
            timeout = self.config.server.shutdown_timeout
            log.info("stopping: %d connection(s) get up to %gs to finish", len(server.connections), timeout)
            stop = loop.create_task(server.shutdown(timeout))
            second = loop.create_task(self._second_signal())
            done, _ = await asyncio.wait({stop, second}, return_when=asyncio.FIRST_COMPLETED)
            if second in done:
                log.info("second stop signal: stopping at once")
                await server.stop()
            second.cancel()
            await asyncio.gather(stop, second, return_exceptions=True)
        await self.admin.close()
        if self.link is not None:
            loop.remove_reader(self.link.sock.fileno())
        log.info("stopped")
        return 0

    # --- signals ----------------------------------------------------------------------

    def _on_stop_signal(self) -> None:
        self._signals += 1
        self._stopping.set()
        if self._signals > 1:
            self._second.set()

    async def _second_signal(self) -> None:
        await self._second.wait()

    def _on_sigusr1(self) -> None:
        log.info("reopening the access log")
        self.server.access_log.open()

    def _on_sighup(self) -> None:
        # A worker answers the master once per reload it runs.
        self.reloader.request()

    async def reload(self) -> bool:
        """Read the configuration again and apply it if valid."""
        self.notifier.reloading()
        try:
            config = self.load()
        except ConfigError as exc:
            self.server.stats.reloads["failed"] += 1
            log.error("reload failed, keeping the running configuration:\n%s", exc)
            first = str(exc).splitlines()[0] if str(exc) else "invalid configuration"
            self.notifier.ready("reload failed: " + first)
            if self.link is not None:
                self.link.send({"event": "reloaded", "ok": False, "error": str(exc)})
            return False
        try:
            # The new admin address is bound before anything is applied, and
            # a new listener that cannot be bound undoes the whole reload.
            plan = self.admin.prepare(config.admin.address) if self.link is None else None
            try:
                await self.server.reload(config)
            except BaseException:
                if plan is not None:
                    self.admin.discard(plan)
                raise
            if plan is not None:
                await self.admin.apply(plan)
        except OSError as exc:  # a new listener could not be bound
            self.server.stats.reloads["failed"] += 1
            log.error("reload failed while applying it: %s", exc)
            self.notifier.ready(f"reload failed: {exc}")
            if self.link is not None:
                self.link.send({"event": "reloaded", "ok": False, "error": str(exc)})
            return False
        self.config = config
        self.notifier.ready(self.status_text())
        if self.link is not None:
            self.link.send({"event": "reloaded", "ok": True})
        return True

    # --- admin, systemd, master -------------------------------------------------------

    def status_text(self) -> str:
        live = self.server.live()
        total = sum(count for *_, count in self.server.stats.snapshot({})["requests"])
        rate = (total - self._requests_seen) / STATUS_INTERVAL
        self._requests_seen = total
        return (
            f"{live['connections']} connections, {live['streams']} mux streams, "
            f"{live['inflight']} inner requests in flight, {rate:.0f} req/s"
        )

    async def _status(self) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            self.notifier.status(self.status_text())

    async def _watchdog(self, interval: float) -> None:
        # From the event loop itself: if the loop is stuck, no ping leaves
        # and systemd restarts the service (WatchdogSec=).
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def _report(self) -> None:
        while True:
            self.link.send({"event": "stats", "snapshot": self.server.snapshot()})
            await asyncio.sleep(REPORT_INTERVAL)

    def _on_master_readable(self) -> None:
        try:
            data = self.link.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            # The master is gone (killed?): stop gracefully rather than
            # serve unsupervised.
            log.warning("master is gone: stopping")
            asyncio.get_running_loop().remove_reader(self.link.sock.fileno())
            self._on_stop_signal()
