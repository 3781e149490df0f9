"""The master of several worker processes (`server.workers > 1`).

Strategy: the master binds the listeners once (or takes them from systemd),
starts each worker as `python -m proxy --worker ...` with those sockets
passed as file descriptors, and then only supervises; it serves no traffic.
Workers are fresh interpreters rather than forks, so no event-loop or lock
state is ever copied into a child.

What the master does:
- READY=1 to systemd once every worker has said it is ready;
- WATCHDOG=1 from its own event loop, and only while every worker has
  reported within the last few seconds; a worker that stops reporting (a
  stuck loop) is killed and started again, so one stuck worker never costs
  the service its listeners;
- a worker that exits unexpectedly is started again (with a growing delay if
  it keeps dying at start);
- SIGHUP: validates the configuration first (an invalid one is reported and
  nothing else happens), then passes SIGHUP to every worker, which reloads
  in place; READY=1 when they have all answered.  Reloads never overlap: a
  SIGHUP during one makes another one follow it;
- SIGTERM / SIGINT: passed on; every worker stops gracefully; the master
  closes the listening sockets it bound, so that no connection is accepted
  that no one will serve, and exits once the workers are gone (a second
  signal is passed on too: stop at once).  Sockets systemd passed stay open:
  systemd holds them for the next start;
- SIGUSR1: passed on (reopen the access log);
- /metrics, /healthz, /readyz on the admin listener, from the figures every
  worker reports once a second over its control socket.

A listener added by a reload is bound by each worker itself with
SO_REUSEPORT; the master never holds a socket nobody accepts on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time

from proxy.config import Config
from proxy.errors import ConfigError
from proxy.shell.activation import Inherited, bind_listener, same_address
from proxy.shell.admin import Admin, AdminSlot
from proxy.shell.metrics import merge
from proxy.shell.reloads import ReloadQueue
from proxy.shell.sdnotify import Notifier
from proxy.shell.server import LISTEN_BACKLOG

log = logging.getLogger("muxproxy.master")

#: Environment of a worker: its listening sockets ("fd=name,fd=name") and its
#: control socket's fd.
WORKER_FDS_ENV = "MUXPROXY_WORKER_FDS"
WORKER_CONTROL_ENV = "MUXPROXY_CONTROL_FD"

#: How long a reload waits for every worker to say it applied the new
#: configuration: loading it takes milliseconds; binding a new listener or
#: a stuck worker is what could take longer.
RELOAD_ANSWER_TIMEOUT = 10.0
#: A worker that has not reported for this long is considered stuck.
STUCK_AFTER = 10.0
#: Restart delays for a worker that keeps dying soon after start.
RESTART_DELAY_MIN = 0.5
RESTART_DELAY_MAX = 30.0


class Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task | None = None
        self.control: socket.socket | None = None
        self.buffer = b""
        self.ready = False
        self.last_report = 0.0
        self.started = 0.0
        self.snapshot: dict | None = None
        self.restart_delay = RESTART_DELAY_MIN
        self.reload_answer: asyncio.Future | None = None

    def __repr__(self) -> str:
        pid = self.process.pid if self.process else None
        return f"<Worker {self.index} pid={pid} ready={self.ready}>"


class Master:
    def __init__(self, config: Config, argv: list[str], load, *, inherited: list[Inherited], notifier: Notifier) -> None:
        self.config = config
        self.argv = argv  # the command line a worker gets (config path, --listen ...)
        self.load = load
        self.notifier = notifier
        self.workers = [Worker(i) for i in range(config.server.worker_count)]
        self.sockets: list[tuple[socket.socket, str]] = []
        self._bound: set[socket.socket] = set()  # sockets we bound, not systemd
        self.admin = AdminSlot(lambda: Admin(self.snapshot, healthy=self.healthy, ready=self.ready), list(inherited))
        self.stopping = False
        self.signals = 0
        self.exit_code = 0
        #: Reloads as the operator sees them: one per SIGHUP, whatever the
        #: number of workers (their own counts are not summed).
        self.reloads = {"ok": 0, "failed": 0}
        self._inherited = [i for i in inherited if i.name != "admin"]
        self._done = asyncio.Event()
        self._announced_ready = False
        self.reloader = ReloadQueue(self.reload, lambda: self.stopping)

    # --- start ------------------------------------------------------------------------

    def _open_sockets(self) -> None:
        for index, listener in enumerate(self.config.listeners):
            address = listener.address
            sock = None
            for inherited in self._inherited:
                if same_address(inherited.address, address.host, address.port):
                    sock = inherited.sock
                    self._inherited.remove(inherited)
                    break
            if sock is None:
                # SO_REUSEPORT so that workers can bind listeners a reload
                # adds beside these; this socket itself is shared by all.
                sock = bind_listener(address.host, address.port, reuse_port=True, backlog=LISTEN_BACKLOG)
                self._bound.add(sock)
            self.sockets.append((sock, f"listener{index}"))
        for inherited in self._inherited:
            self.sockets.append((inherited.sock, inherited.name))

    async def _run_worker(self, worker: Worker) -> None:
        """Start a worker, and again whenever it exits while we are not stopping."""
        loop = asyncio.get_running_loop()
        while not self.stopping:
            parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            env = dict(os.environ)
            env[WORKER_FDS_ENV] = ",".join(f"{sock.fileno()}={name}" for sock, name in self.sockets)
            env[WORKER_CONTROL_ENV] = str(child.fileno())
            fds = [sock.fileno() for sock, _ in self.sockets] + [child.fileno()]
            # A process group of its own: a terminal's Ctrl-C (SIGINT to the
            # foreground group) reaches the master alone, which passes one
            # SIGTERM on; were it to reach the workers too, they would count
            # two signals and stop at once instead of gracefully.  A worker
            # whose master dies stops by itself (its control socket closes).
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "proxy", *self.argv, "--worker",
                env=env, pass_fds=fds, close_fds=True, start_new_session=True,
            )
            child.close()
            parent.setblocking(False)
            worker.process, worker.control, worker.buffer, worker.ready = process, parent, b"", False
            worker.started = worker.last_report = time.monotonic()
            loop.add_reader(parent.fileno(), self._on_control, worker)
            log.info("worker %d started (pid %d)", worker.index, process.pid)
            code = await process.wait()
            loop.remove_reader(parent.fileno())
            parent.close()
            worker.process, worker.control, worker.ready = None, None, False
            worker.snapshot = None  # its figures died with it
            if self.stopping:
                break
            log.error("worker %d (pid %d) exited with %s; starting it again", worker.index, process.pid, code)
            quick = time.monotonic() - worker.started < 5.0
            delay = worker.restart_delay if quick else RESTART_DELAY_MIN
            worker.restart_delay = min(delay * 2, RESTART_DELAY_MAX) if quick else RESTART_DELAY_MIN
            await asyncio.sleep(delay)
        if all(w.process is None for w in self.workers):
            self._done.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._open_sockets()
        await self.admin.apply(self.admin.prepare(self.config.admin.address))
        for worker in self.workers:
            worker.task = loop.create_task(self._run_worker(worker))
            worker.task.add_done_callback(self._on_worker_task_done)
        for signum, handler in (
            (signal.SIGHUP, self._on_sighup),
            (signal.SIGTERM, self._on_stop),
            (signal.SIGINT, self._on_stop),
            (signal.SIGUSR1, self._on_sigusr1),
        ):
            loop.add_signal_handler(signum, handler)
        supervisor = loop.create_task(self._supervise())
        await self._done.wait()
        supervisor.cancel()
        await asyncio.gather(supervisor, *(w.task for w in self.workers), return_exceptions=True)
        await self.admin.close()
        for sock, _ in self.sockets:
            sock.close()
        log.info("master stopped")
        return self.exit_code

    def _on_worker_task_done(self, task: asyncio.Task) -> None:
        # Supervising a worker must never fail silently (a worker that can
        # never be started would leave the service without READY forever).
        if task.cancelled() or task.exception() is None:
            return
        log.error("cannot run workers: %r; stopping", task.exception())
        self.exit_code = 1
        self._on_stop()
        self._done.set()

    # --- control messages -------------------------------------------------------------------

    def _on_control(self, worker: Worker) -> None:
        try:
            data = worker.control.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(worker.control.fileno())
            return
        worker.buffer += data
        while b"\n" in worker.buffer:
            line, worker.buffer = worker.buffer.split(b"\n", 1)
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("worker %d sent an unreadable report", worker.index)
                continue
            self._on_message(worker, message)

    def _on_message(self, worker: Worker, message: dict) -> None:
        worker.last_report = time.monotonic()
        event = message.get("event")
        if event == "ready":
            worker.ready = True
            worker.restart_delay = RESTART_DELAY_MIN
            if not self._announced_ready and all(w.ready for w in self.workers):
                self._announced_ready = True
                self.notifier.ready(self.status_text())
                log.info("all %d workers ready", len(self.workers))
        elif event == "stats":
            worker.snapshot = message.get("snapshot")
        elif event == "reloaded":
            if worker.reload_answer is not None and not worker.reload_answer.done():
                worker.reload_answer.set_result(bool(message.get("ok")))

    # --- supervision --------------------------------------------------------------------------

    async def _supervise(self) -> None:
        interval = self.notifier.watchdog_interval or 1.0
        next_status = 0.0
        while True:
            now = time.monotonic()
            for worker in self.workers:
                process = worker.process
                if process is not None and now - worker.last_report > STUCK_AFTER:
                    log.error("worker %d (pid %d) stopped reporting: killing it", worker.index, process.pid)
                    worker.last_report = now
                    process.kill()
            # From the master's own loop, and only while every worker is
            # alive: a stuck master, or workers that cannot be brought back,
            # make systemd restart the service.
            if self.notifier.watchdog_interval and self.healthy():
                self.notifier.watchdog()
            if now >= next_status and self._announced_ready:
                self.notifier.status(self.status_text())
                next_status = now + 5.0
            await asyncio.sleep(min(interval, 1.0))

    def healthy(self) -> bool:
        now = time.monotonic()
        return all(w.process is not None and now - w.last_report < STUCK_AFTER for w in self.workers)

    def ready(self) -> bool:
        return not self.stopping and all(w.ready for w in self.workers)

    def snapshot(self) -> dict:
        merged = merge(w.snapshot for w in self.workers if w.snapshot is not None)
        merged["reloads"] = dict(self.reloads)
        return merged

    def status_text(self) -> str:
        snap = self.snapshot()
        alive = sum(1 for w in self.workers if w.process is not None)
        return (
            f"{alive}/{len(self.workers)} workers, {snap['connections']} connections, "
            f"{snap['streams']} mux streams, {snap['inflight']} inner requests in flight"
        )

    # --- signals ----------------------------------------------------------------------------

    def _signal_workers(self, signum: int) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signum)

    def _on_stop(self) -> None:
        self.signals += 1
        if not self.stopping:
            self.stopping = True
            self.notifier.stopping()
            log.info("stopping %d workers", len(self.workers))
            grace = self.config.server.shutdown_timeout + 5.0
            asyncio.get_running_loop().call_later(grace, self._kill_stragglers)
            self._stop_accepting()
        self._signal_workers(signal.SIGTERM)
        if all(w.process is None for w in self.workers):
            self._done.set()

    def _stop_accepting(self) -> None:
        """Close our copies of the listening sockets we bound: once the
        workers have closed theirs, the kernel refuses new connections
        instead of queueing them for no one."""
        keep = []
        for sock, name in self.sockets:
            if sock in self._bound:
                sock.close()
            else:
                keep.append((sock, name))
        self.sockets = keep

    def _kill_stragglers(self) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                log.error("worker %d did not stop in time: killing it", worker.index)
                worker.process.kill()

    def _on_sigusr1(self) -> None:
        self._signal_workers(signal.SIGUSR1)

    def _on_sighup(self) -> None:
        if not self.stopping:
            self.reloader.request()

    async def reload(self) -> bool:
        self.notifier.reloading()
        try:
            config = self.load()
            plan = self.admin.prepare(config.admin.address)
        except (ConfigError, OSError) as exc:
            self.reloads["failed"] += 1
            log.error("reload failed, keeping the running configuration:\n%s", exc)
            self.notifier.ready("reload failed: " + (str(exc).splitlines() or ["invalid configuration"])[0])
            return False
        loop = asyncio.get_running_loop()
        answers = []
        for worker in self.workers:
            if worker.process is not None:
                worker.reload_answer = loop.create_future()
                answers.append(worker.reload_answer)
        self._signal_workers(signal.SIGHUP)
        done, pending = await asyncio.wait(answers, timeout=RELOAD_ANSWER_TIMEOUT) if answers else (set(), set())
        ok = all(future.result() for future in done) and not pending
        self.reloads["ok" if ok else "failed"] += 1
        if not ok:
            # A worker kept its configuration (each reload is all or nothing
            # in a worker), so the master keeps its own too.
            self.admin.discard(plan)
            self.notifier.ready("reload failed in a worker, see the log")
            return False
        self._close_removed_listeners(config)
        await self.admin.apply(plan)
        self.config = config
        self.notifier.ready(self.status_text())
        return True

    def _close_removed_listeners(self, config: Config) -> None:
        keep = []
        for sock, name in self.sockets:
            host, port = sock.getsockname()[:2]
            wanted = any(same_address((host, port), l.address.host, l.address.port) for l in config.listeners)
            if wanted or not name.startswith("listener"):
                keep.append((sock, name))
            else:
                self._bound.discard(sock)
                sock.close()  # the workers closed their copies in their reload
        self.sockets = keep


def worker_sockets(environ: dict[str, str] | None = None) -> tuple[list[Inherited], socket.socket | None]:
    """In a worker: the listening sockets and control socket the master passed."""
    env = os.environ if environ is None else environ
    listeners = []
    for item in filter(None, env.get(WORKER_FDS_ENV, "").split(",")):
        fd, _, name = item.partition("=")
        listeners.append(Inherited(socket.socket(fileno=int(fd)), name))
    control = env.get(WORKER_CONTROL_ENV)
    control_sock = socket.socket(fileno=int(control)) if control else None
    return listeners, control_sock
