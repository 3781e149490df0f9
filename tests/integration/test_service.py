"""muxproxy as a service: signals, systemd's notify protocol, the admin listener, workers.

Every test runs real `python -m proxy --config FILE` processes: one serving
process (`[server] workers = 1`) or a master with two workers (`workers = 2`),
each with a datagram socket in the test's directory as $NOTIFY_SOCKET (what
systemd gives a `Type=notify` service) and an admin listener on a port the
kernel picks.  Origins are `ScriptedOrigin`s ("a" and "b"), whose
`X-Origin` field tells which one answered, so a reload that moves a route is
visible on every response.  Every process is stopped by PID when its test
ends (tests/support/service.py).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from tests.support.faulty import ScriptedOrigin, refused_port
from tests.support.harness import REPO, MuxClient, free_port
from tests.support.service import (
    NotifySocket,
    ServiceProcess,
    connection_owner,
    write_config,
)

#: One serving process, and a master with two workers.
MODES = [pytest.param(1, id="single"), pytest.param(2, id="workers")]


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def origins() -> Iterator[tuple[ScriptedOrigin, ScriptedOrigin]]:
    with ScriptedOrigin("a") as a, ScriptedOrigin("b") as b:
        yield a, b


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    with NotifySocket(tmp_path) as sock:
        yield sock


class Services:
    """Starts proxies for a test; every one is stopped by PID at its end."""

    def __init__(self, tmp_path: Path, notify: NotifySocket) -> None:
        self.tmp_path = tmp_path
        self.notify = notify
        self.started: list[ServiceProcess] = []

    def config(self, body: str, *, listeners, name: str = "muxproxy.toml", **options) -> Path:
        return write_config(self.tmp_path / name, body, listeners=listeners, **options)

    def start(
        self,
        body: str,
        *,
        listeners=None,
        env: dict[str, str] | None = None,
        new_session: bool = False,
        **options,
    ) -> ServiceProcess:
        """A proxy for `body` (the `proxy_config` text); its first listener's
        port is `service.port`."""
        listeners = listeners if listeners is not None else [free_port()]
        path = self.config(body, listeners=listeners, **options)
        service = ServiceProcess(path, notify=self.notify, env=env, new_session=new_session)
        service.port = listeners[0]
        self.started.append(service)
        return service.start()

    def stop_all(self) -> None:
        for service in reversed(self.started):
            service.stop()


@pytest.fixture
def services(tmp_path: Path, notify: NotifySocket) -> Iterator[Services]:
    started = Services(tmp_path, notify)
    yield started
    started.stop_all()


# --- small clients ------------------------------------------------------------------------


class PlainConnection:
    """A keep-alive HTTP/1.1 client connection that reads Content-Length responses."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        self.sent = 0
        self.received = 0

    def send(self, path: str) -> None:
        data = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode("ascii")
        self.sock.sendall(data)
        self.sent += len(data)

    def read(self) -> tuple[int, dict[str, str], bytes]:
        """(status, lower-cased fields, body) of the next response."""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        length = int(fields.get("content-length", "0"))
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split(" ")[1]), fields, body

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        self.send(path)
        return self.read()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the proxy closed the connection")
        self.received += len(data)
        self.buffer += data

    def close(self) -> None:
        self.sock.close()


def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection."""
    connection = PlainConnection(port)
    try:
        return connection.get(path)
    finally:
        connection.close()


def origin_of(port: int, path: str = "/ok") -> str:
    status, fields, _ = get(port, path)
    assert status == 200, (status, fields)
    return fields["x-origin"]


def route_everything_to(proxy_config, origin: ScriptedOrigin, *, workers: int, **server) -> str:
    return proxy_config({origin.name: origin}, server={"workers": workers, **server})


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met after {timeout}s")
        time.sleep(0.02)


class StreamingClient(threading.Thread):
    """One mux stream kept busy: `window` inner requests always in flight
    until `stop` is set; records (request id, sent at, answered at, response)."""

    def __init__(self, port: int, path: str, window: int = 4) -> None:
        super().__init__(name="streaming-client", daemon=True)
        self.port = port
        self.path = path
        self.window = window
        self.stop = threading.Event()
        self.sent: dict[str, float] = {}
        self.answered: list[tuple[str, float, float, object]] = []
        self.error: BaseException | None = None
        self.ended_cleanly = False
        self._lock = threading.Lock()

    def count(self, predicate: Callable[[str, float], bool] = lambda rid, sent_at: True) -> int:
        with self._lock:
            return sum(1 for rid, sent_at, _, _ in self.answered if predicate(rid, sent_at))

    def run(self) -> None:
        try:
            with MuxClient(self.port) as client:
                number = 0

                def send() -> None:
                    nonlocal number
                    number += 1
                    rid = f"r{number}"
                    self.sent[rid] = time.monotonic()
                    client.request("GET", self.path, request_id=rid)

                for _ in range(self.window):
                    send()
                outstanding = self.window
                while outstanding:
                    responses = client.receive(1, timeout=10)
                    if not responses:
                        raise ConnectionError("the outer stream ended early")
                    now = time.monotonic()
                    for response in responses:
                        outstanding -= 1
                        with self._lock:
                            self.answered.append((response.request_id, self.sent[response.request_id], now, response))
                        if not self.stop.is_set():
                            send()
                            outstanding += 1
                client.end()
                rest = client.receive_until_end()
                if rest:
                    raise AssertionError(f"unexpected responses after the end: {rest}")
                self.ended_cleanly = client.reader.ended and not client.closed_by_peer
        except BaseException as exc:  # reported to the test
            self.error = exc

    def finish(self) -> None:
        self.stop.set()
        self.join(20)
        assert not self.is_alive(), "the streaming client is stuck"
        if self.error is not None:
            raise self.error


# --- systemd notify: READY, STATUS, WATCHDOG ---------------------------------------------------


@pytest.mark.parametrize("workers", MODES)
def test_ready_comes_once_listening_with_mainpid_and_status(workers, services, notify, origins, proxy_config):
    a, _ = origins
    service = services.start(route_everything_to(proxy_config, a, workers=workers))
    index = notify.wait_for("READY=1")
    ready = notify.messages[index]
    # Listening already: no connection attempt is refused once READY=1 arrived.
    assert origin_of(service.port) == "a"
    assert ready.value("MAINPID") == str(service.pid)
    status = ready.value("STATUS")
    assert status is not None
    if workers == 1:
        assert status.startswith("0 connections, 0 mux streams, 0 inner requests in flight")
    else:
        # READY=1 only once every worker said it is ready, and only once.
        assert status.startswith("2/2 workers")
        service.wait_log(r"all 2 workers ready")
        assert len(service.worker_pids()) == 2
        time.sleep(0.5)
        assert [m for m in notify.messages if m.has("READY=1")] == [ready]


def test_watchdog_pings_keep_coming_and_status_shows_live_figures(services, notify, origins, proxy_config):
    a, _ = origins
    # WatchdogSec=1s: a ping every 0.5 s (half of it, as sd_watchdog_enabled(3) advises).
    service = services.start(route_everything_to(proxy_config, a, workers=1), env={"WATCHDOG_USEC": "1000000"})
    start = notify.mark()
    with MuxClient(service.port) as client:
        client.request("GET", "/hang", request_id="h")
        assert a.wait_for(lambda: a.request_count == 1)
        # The periodic STATUS= (every 5 s) with the stream and its request.
        index = notify.wait_for(
            lambda m: not m.has("READY=1") and m.value("STATUS") is not None, start=start, timeout=8
        )
        status = notify.messages[index].value("STATUS")
        assert status.startswith("1 connections, 1 mux streams, 1 inner requests in flight"), status
        pings = [m.at for m in notify.since(start) if m.has("WATCHDOG=1")]
    # Several seconds of pings, none later than the watchdog's deadline.
    assert len(pings) >= 8, pings
    gaps = [later - earlier for earlier, later in pairwise(pings)]
    assert max(gaps) < 1.0, gaps


def test_no_watchdog_pings_for_a_watchdog_meant_for_another_process(services, notify, origins, proxy_config):
    a, _ = origins
    services.start(
        route_everything_to(proxy_config, a, workers=1), env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
    )
    time.sleep(0.6)  # three ping intervals
    assert not [m for m in notify.messages if m.has("WATCHDOG=1")]


def test_master_sends_watchdog_pings_while_workers_report(services, notify, origins, proxy_config):
    a, _ = origins
    services.start(route_everything_to(proxy_config, a, workers=2), env={"WATCHDOG_USEC": "600000"})
    start = notify.mark()
    deadline = time.monotonic() + 10
    while len([m for m in notify.since(start) if m.has("WATCHDOG=1")]) < 5:
        assert time.monotonic() < deadline, notify.since(start)
        time.sleep(0.05)
    pings = [m.at for m in notify.since(start) if m.has("WATCHDOG=1")]
    assert max(later - earlier for earlier, later in pairwise(pings)) < 0.6, pings


# --- reload ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", MODES)
def test_reload_under_load_moves_a_route_without_losing_a_response(
    workers, services, notify, origins, proxy_config
):
    a, b = origins
    service = services.start(route_everything_to(proxy_config, a, workers=workers))
    stream = StreamingClient(service.port, "/slow?ms=5", window=4)
    stream.start()
    try:
        wait_until(lambda: stream.count() >= 20 or stream.error is not None, what="20 responses before the reload")
        services.config(route_everything_to(proxy_config, b, workers=workers), listeners=[service.port])
        mark = notify.mark()
        hup_at = time.monotonic()
        service.send_signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING=1", start=mark)
        assert notify.messages[reloading].value("MONOTONIC_USEC") is not None
        ready = notify.messages[notify.wait_for("READY=1", start=reloading + 1)]
        assert not ready.value("STATUS").startswith("reload failed"), ready
        # Keep streaming a while on the new configuration.
        wait_until(
            lambda: stream.count(lambda rid, sent_at: sent_at > ready.at) >= 20 or stream.error is not None,
            what="20 responses after the reload",
        )
    finally:
        stream.finish()
    assert stream.ended_cleanly
    answered = [rid for rid, *_ in stream.answered]
    assert sorted(answered) == sorted(stream.sent), "lost or repeated responses"
    assert len(answered) == len(set(answered))
    for rid, sent_at, answered_at, response in stream.answered:
        assert response.status == 200, (rid, response)
        if answered_at < hup_at:  # read, routed and answered before the reload
            assert response.header("X-Origin") == "a", rid
        elif sent_at > ready.at:
            assert response.header("X-Origin") == "b", rid
    # The stream reads its requests in order, and switches routes once.
    in_order = sorted(stream.answered, key=lambda item: int(item[0][1:]))
    sequence = "".join(response.header("X-Origin") for *_, response in in_order)
    assert sequence == "a" * sequence.count("a") + "b" * sequence.count("b"), sequence
    # New connections, on any worker, use the new route too.
    assert {origin_of(service.port) for _ in range(6)} == {"b"}


@pytest.mark.parametrize("workers", MODES)
def test_an_invalid_config_on_sighup_keeps_the_running_one(workers, services, notify, origins, proxy_config):
    a, b = origins
    service = services.start(route_everything_to(proxy_config, a, workers=workers))
    with MuxClient(service.port) as client:
        client.request("GET", "/ok", request_id="before")
        assert client.receive(1)[0].header("X-Origin") == "a"
        service.config_path.write_text(service.config_path.read_text() + "\n[mux]\nheartbeat = \"soon\"\n")
        mark = notify.mark()
        service.send_signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING=1", start=mark)
        ready = notify.messages[notify.wait_for("READY=1", start=reloading + 1)]
        assert ready.value("STATUS").startswith("reload failed: "), ready
        assert "mux.heartbeat" in ready.value("STATUS")
        service.wait_log(r"reload failed, keeping the running configuration")
        # The open stream and new connections still use the old configuration.
        client.request("GET", "/ok", request_id="after")
        assert client.receive(1)[0].header("X-Origin") == "a"
    assert {origin_of(service.port) for _ in range(4)} == {"a"}
    metrics = service.wait_metrics(lambda m: m.value("muxproxy_reloads_total", result="failed") == 1)
    assert metrics.value("muxproxy_reloads_total", result="ok") == 0
    # The process is not wedged: a valid configuration applies.
    services.config(route_everything_to(proxy_config, b, workers=workers), listeners=[service.port])
    mark = notify.mark()
    service.send_signal(signal.SIGHUP)
    ready = notify.messages[notify.wait_for("READY=1", start=mark)]
    assert not ready.value("STATUS").startswith("reload failed"), ready
    assert {origin_of(service.port) for _ in range(4)} == {"b"}


@pytest.mark.parametrize("workers", MODES)
def test_one_reload_counts_once_in_the_metrics(workers, services, notify, origins, proxy_config):
    a, _ = origins
    service = services.start(route_everything_to(proxy_config, a, workers=workers))
    mark = notify.mark()
    service.send_signal(signal.SIGHUP)
    ready = notify.messages[notify.wait_for("READY=1", start=mark)]
    assert not ready.value("STATUS").startswith("reload failed"), ready
    service.wait_metrics(lambda m: m.value("muxproxy_reloads_total", result="ok") >= 1)
    time.sleep(1.5)  # every worker has reported since (once a second)
    metrics = service.scrape()
    assert metrics.value("muxproxy_reloads_total", result="ok") == 1
    assert metrics.value("muxproxy_reloads_total", result="failed") == 0


def test_two_quick_sighups_to_a_master_are_two_good_reloads(services, notify, origins, proxy_config):
    """`systemctl reload` twice in a row: each RELOADING=1 gets its READY=1
    promptly, and neither reports a failure that did not happen."""
    a, b = origins
    service = services.start(route_everything_to(proxy_config, a, workers=2))
    service.wait_log(r"all 2 workers ready")
    services.config(route_everything_to(proxy_config, b, workers=2), listeners=[service.port])
    mark = notify.mark()
    service.send_signal(signal.SIGHUP)
    first = notify.wait_for("RELOADING=1", start=mark)
    service.send_signal(signal.SIGHUP)  # while the first reload waits for the workers' answers
    second = notify.wait_for("RELOADING=1", start=first + 1)
    first_ready = notify.wait_for("READY=1", start=mark)
    second_ready = notify.wait_for("READY=1", start=max(first_ready, second) + 1, timeout=5)
    for index in (first_ready, second_ready):
        assert not notify.messages[index].value("STATUS").startswith("reload failed"), notify.messages[index]
    assert {origin_of(service.port) for _ in range(4)} == {"b"}
    metrics = service.scrape()
    assert metrics.value("muxproxy_reloads_total", result="failed") == 0


@pytest.mark.parametrize("workers", MODES)
def test_a_reload_that_cannot_bind_a_new_listener_keeps_the_running_configuration(
    workers, services, notify, origins, proxy_config
):
    a, b = origins
    service = services.start(route_everything_to(proxy_config, a, workers=workers))
    with socket.socket() as taken:  # someone else's port (no SO_REUSEPORT)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        # A valid file, but its new listener cannot be bound.
        services.config(
            route_everything_to(proxy_config, b, workers=workers), listeners=[service.port, busy]
        )
        mark = notify.mark()
        service.send_signal(signal.SIGHUP)
        ready = notify.messages[notify.wait_for("READY=1", start=notify.wait_for("RELOADING=1", start=mark) + 1)]
        assert ready.value("STATUS").startswith("reload failed"), ready
        # "reload failed" means the running configuration stays: routes too.
        assert {origin_of(service.port) for _ in range(4)} == {"a"}


@pytest.mark.parametrize("workers", MODES)
def test_a_reload_adds_and_removes_listeners_and_kept_ones_keep_their_connections(
    workers, services, notify, origins, proxy_config
):
    a, b = origins
    kept, removed, added = free_port(), free_port(), free_port()
    service = services.start(route_everything_to(proxy_config, a, workers=workers), listeners=[kept, removed])
    plain = PlainConnection(kept)
    stream = MuxClient(kept)
    try:
        assert plain.get("/ok")[1]["x-origin"] == "a"
        stream.request("GET", "/ok", request_id="1")
        assert stream.receive(1)[0].header("X-Origin") == "a"
        services.config(route_everything_to(proxy_config, b, workers=workers), listeners=[kept, added])
        mark = notify.mark()
        service.send_signal(signal.SIGHUP)
        ready = notify.messages[notify.wait_for("READY=1", start=mark)]
        assert not ready.value("STATUS").startswith("reload failed"), ready
        # The connections opened before the reload still work, on the new route.
        status, fields, _ = plain.get("/ok")
        assert (status, fields["x-origin"]) == (200, "b")
        stream.request("GET", "/ok", request_id="2")
        response = stream.receive(1)[0]
        assert (response.status, response.header("X-Origin")) == (200, "b")
        assert origin_of(kept) == "b"
        assert origin_of(added) == "b"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", removed), timeout=5).close()
    finally:
        plain.close()
        stream.close()


# --- stop ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", MODES)
def test_sigterm_answers_every_request_in_flight_then_exits_zero(workers, services, notify, origins, proxy_config):
    a, _ = origins
    service = services.start(route_everything_to(proxy_config, a, workers=workers, shutdown_timeout=15))
    stream = MuxClient(service.port)
    plain = PlainConnection(service.port)
    try:
        for number in range(3):
            stream.request("GET", "/slow?ms=1500", request_id=f"s{number}")
        plain.send("/slow?ms=1500")
        assert a.wait_for(lambda: a.request_count == 4)
        mark = notify.mark()
        stopped_at = time.monotonic()
        service.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1", start=mark)
        # Draining: not ready (a load balancer takes it out), still alive.
        assert service.admin_get("/readyz")[:2] == (503, "not ready\n")
        assert service.admin_get("/healthz")[:2] == (200, "ok\n")
        responses = stream.receive_until_end(timeout=15)
        assert sorted((r.request_id, r.status, r.body) for r in responses) == [
            (f"s{number}", 200, b"slow") for number in range(3)
        ]
        assert stream.reader.ended, "the outer response did not end with its last chunk"
        status, _, body = plain.read()
        assert (status, body) == (200, b"slow")
        assert service.wait_exit(15) == 0
        assert time.monotonic() - stopped_at < 15
    finally:
        stream.close()
        plain.close()


@pytest.mark.parametrize("workers", MODES)
def test_no_new_connection_is_taken_while_draining(workers, services, notify, origins, proxy_config):
    a, _ = origins
    service = services.start(route_everything_to(proxy_config, a, workers=workers, shutdown_timeout=15))
    with MuxClient(service.port) as stream:
        stream.request("GET", "/slow?ms=1500", request_id="slow")
        assert a.wait_for(lambda: a.request_count == 1)
        mark = notify.mark()
        service.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1", start=mark)
        service.wait_log(r"stopping")
        time.sleep(0.3)  # (a worker closes its listeners when the signal reaches it)
        # Refused at once, so a client or load balancer tries elsewhere,
        # rather than left waiting in a queue nobody accepts from.
        try:
            probe = socket.create_connection(("127.0.0.1", service.port), timeout=5)
        except ConnectionRefusedError:
            pass
        else:
            with probe:
                probe.sendall(b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                probe.settimeout(2)
                try:
                    answer = probe.recv(100)
                except TimeoutError:
                    answer = "nothing in 2 s"
            pytest.fail(f"a new connection was accepted while draining; its request got {answer!r}")
        assert stream.receive_until_end(timeout=15)[0].status == 200
    assert service.wait_exit() == 0


def test_shutdown_timeout_cuts_what_is_left(services, notify, origins, proxy_config):
    a, _ = origins
    service = services.start(route_everything_to(proxy_config, a, workers=1, shutdown_timeout=1))
    with MuxClient(service.port) as stream:
        stream.request("GET", "/hang", request_id="h")
        assert a.wait_for(lambda: a.request_count == 1)
        stopped_at = time.monotonic()
        service.send_signal(signal.SIGTERM)
        assert service.wait_exit(15) == 0
        elapsed = time.monotonic() - stopped_at
        try:
            leftovers = stream.receive_until_end(timeout=5)
        except ConnectionResetError:
            leftovers = []
        assert leftovers == []
    assert 0.9 <= elapsed < 5, elapsed
    service.wait_log(r"shutdown timeout: cutting 1 connection")


@pytest.mark.parametrize(
    "workers, second",
    [pytest.param(1, signal.SIGINT, id="single-SIGINT"), pytest.param(2, signal.SIGTERM, id="workers-SIGTERM")],
)
def test_a_second_stop_signal_stops_at_once(workers, second, services, notify, origins, proxy_config):
    a, _ = origins
    service = services.start(route_everything_to(proxy_config, a, workers=workers, shutdown_timeout=60))
    with MuxClient(service.port) as stream:
        stream.request("GET", "/hang", request_id="h")
        assert a.wait_for(lambda: a.request_count == 1)
        mark = notify.mark()
        service.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1", start=mark)
        service.wait_log(r"stopping: 1 connection\(s\) get up to 60s")
        stopped_at = time.monotonic()
        service.send_signal(second)
        assert service.wait_exit(15) == 0
        assert time.monotonic() - stopped_at < 5
    service.wait_log(r"second stop signal: stopping at once")


def test_ctrl_c_on_a_master_and_its_workers_still_stops_gracefully(services, notify, origins, proxy_config):
    """Ctrl-C in a terminal sends SIGINT to the whole foreground process
    group: the master and every worker at once.  That is one stop request,
    so requests in flight are still answered."""
    a, _ = origins
    service = services.start(
        route_everything_to(proxy_config, a, workers=2, shutdown_timeout=15), new_session=True
    )
    with MuxClient(service.port) as stream:
        stream.request("GET", "/slow?ms=1500", request_id="slow")
        assert a.wait_for(lambda: a.request_count == 1)
        os.killpg(service.pid, signal.SIGINT)
        responses = stream.receive_until_end(timeout=15)
        assert service.wait_exit() == 0
        assert [(r.request_id, r.status) for r in responses] == [("slow", 200)], service.log


# --- access log ------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", MODES)
def test_sigusr1_reopens_the_access_log_after_logrotate_moved_it(
    workers, services, notify, origins, proxy_config, tmp_path
):
    a, _ = origins
    log_path = tmp_path / "access.log"
    service = services.start(route_everything_to(proxy_config, a, workers=workers), access=str(log_path))

    def logged(path: Path, needle: str) -> bool:
        return path.exists() and needle in path.read_text()

    assert get(service.port, "/ok?n=1")[0] == 200
    wait_until(lambda: logged(log_path, "/ok?n=1"), what="the first line")
    rotated = log_path.with_name("access.log.1")
    log_path.rename(rotated)  # logrotate's default: move, then signal
    assert get(service.port, "/ok?n=2")[0] == 200
    wait_until(lambda: logged(rotated, "/ok?n=2"), what="a line in the moved file")
    service.send_signal(signal.SIGUSR1)
    # Every serving process reopens (with workers, the master passes it on).
    wait_until(lambda: len(service.log_lines(r"reopening the access log")) == workers, what="the reopens")
    for number in range(3, 7):
        assert get(service.port, f"/ok?n={number}")[0] == 200
    wait_until(lambda: all(logged(log_path, f"/ok?n={n}") for n in range(3, 7)), what="lines in the new file")
    new, old = log_path.read_text(), rotated.read_text()
    assert "/ok?n=1" not in new and "/ok?n=2" not in new
    assert "/ok?n=1" in old and "/ok?n=2" in old and "/ok?n=3" not in old


# --- admin listener ---------------------------------------------------------------------------------


def test_healthz_readyz_and_what_else_the_admin_listener_answers(services, notify, origins, proxy_config):
    a, _ = origins
    service = services.start(route_everything_to(proxy_config, a, workers=1))
    assert service.admin_get("/healthz")[:2] == (200, "ok\n")
    assert service.admin_get("/readyz")[:2] == (200, "ready\n")
    status, _, fields = service.admin_get("/metrics")
    assert status == 200
    assert fields["content-type"] == CONTENT_TYPE_LATEST  # prometheus_client's own
    assert fields["cache-control"] == "no-store"
    assert service.admin_get("/nope")[0] == 404
    # The admin listener is not the proxy: its paths are never routed.
    assert get(service.port, "/metrics")[1].get("x-origin") == "a"
    assert a.requests_for("/healthz") == []


def test_prometheus_client_is_a_declared_dependency():
    """The admin listener and the metrics import prometheus_client (and every
    serving process imports them): a clean `pip install` must bring it."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
             for requirement in project["dependencies"]}
    assert "prometheus-client" in names, project["dependencies"]


def test_admin_off_opens_no_admin_listener(services, notify, origins, proxy_config):
    a, _ = origins
    service = services.start(route_everything_to(proxy_config, a, workers=1), admin="off")
    assert origin_of(service.port) == "a"
    assert service.log_lines(r"admin listener") == []


# --- metrics ---------------------------------------------------------------------------------------------


def test_metrics_of_one_process(services, notify, origins, proxy_config):
    a, _ = origins
    down = f"127.0.0.1:{refused_port()}"
    body = proxy_config(
        {"a": a, "down": down},
        [{"path": "/", "origin": "a"}, {"path": "/down", "origin": "down"}],
        server={"workers": 1},
        mux={"heartbeat": "100ms"},
    )
    service = services.start(body)
    port = service.port

    with MuxClient(port) as stream:
        for number in range(3):
            stream.request("GET", "/ok", request_id=f"ok{number}")
        stream.request("GET", "/slow?ms=300", request_id="slow300")
        stream.request("GET", "/slow?ms=700", request_id="slow700")  # quiet long enough for heartbeats
        stream.request("GET", "/down/x", request_id="down")
        stream.end()
        responses = {r.request_id: r for r in stream.receive_until_end()}
    assert {rid: r.status for rid, r in responses.items()} == {
        "ok0": 200, "ok1": 200, "ok2": 200, "slow300": 200, "slow700": 200, "down": 502,
    }
    assert "connection_refused" in responses["down"].header("Proxy-Status")
    heartbeats_seen = stream.reader.mux.heartbeats
    assert heartbeats_seen >= 1  # 700 ms of quiet, 100 ms heartbeats

    plain = PlainConnection(port)
    assert plain.get("/ok")[0] == 200
    assert plain.get("/ok")[0] == 200
    assert plain.get("/down")[0] == 502
    plain.close()

    # Bytes on the wire, exactly: a request and its response, nothing else.
    before = service.wait_metrics(lambda m: m.value("muxproxy_client_connections") == 0)
    counted = PlainConnection(port)
    assert counted.get("/ok")[0] == 200
    counted.close()
    after = service.wait_metrics(lambda m: m.value("muxproxy_client_connections") == 0)
    assert after.value("muxproxy_client_bytes_received_total") - before.value(
        "muxproxy_client_bytes_received_total"
    ) == counted.sent
    assert after.value("muxproxy_client_bytes_sent_total") - before.value(
        "muxproxy_client_bytes_sent_total"
    ) == counted.received

    with MuxClient(port) as hanging:
        hanging.request("GET", "/hang", request_id="h")
        metrics = service.wait_metrics(lambda m: m.value("muxproxy_inner_requests_in_flight") == 1)

    requests = {
        (s.labels["kind"], s.labels["route"], s.labels["status"]): s.value
        for s in metrics.samples("muxproxy_requests_total")
    }
    assert requests == {
        ("mux", "route[1]", "200"): 5,
        ("mux", "route[2]", "502"): 1,
        ("http", "route[1]", "200"): 3,
        ("http", "route[2]", "502"): 1,
    }
    # The duration histogram: cumulative buckets, count and sum agree with the requests.
    labels = {"kind": "mux", "route": "route[1]"}
    buckets = {
        float(s.labels["le"]): s.value
        for s in metrics.samples("muxproxy_request_duration_seconds_bucket")
        if {k: v for k, v in s.labels.items() if k != "le"} == labels
    }
    assert list(buckets.values()) == sorted(buckets.values())
    assert buckets[0.25] == 3  # the /ok ones
    assert buckets[0.5] == 4  # + /slow?ms=300
    assert buckets[1.0] == 5 and buckets[float("inf")] == 5  # + /slow?ms=700
    assert metrics.value("muxproxy_request_duration_seconds_count", **labels) == 5
    assert 1.0 <= metrics.value("muxproxy_request_duration_seconds_sum", **labels) < 3.0
    assert metrics.value("muxproxy_request_duration_seconds_count", kind="http", route="route[1]") == 3

    assert metrics.value("muxproxy_errors_total", error="connection_refused") == 2
    assert metrics.value("muxproxy_origin_connections", origin="a", state="active") == 1
    assert metrics.value("muxproxy_origin_connections", origin="a", state="connecting") == 0
    assert metrics.value("muxproxy_origin_connections", origin="a", state="idle") >= 1
    assert metrics.value("muxproxy_origin_queued", origin="a") == 0
    assert metrics.value("muxproxy_client_connections") == 1
    assert metrics.value("muxproxy_mux_streams") == 1
    assert metrics.value("muxproxy_connections_accepted_total") == 4
    assert metrics.value("muxproxy_streams_started_total") == 2
    assert metrics.value("muxproxy_heartbeats_total") >= heartbeats_seen
    assert metrics.value("muxproxy_reloads_total", result="ok") == 0
    assert metrics.value("muxproxy_workers") is None  # one process: no workers to count


def test_metrics_are_summed_across_workers(services, notify, origins, proxy_config):
    a, _ = origins
    body = proxy_config({"a": a}, server={"workers": 2}, mux={"heartbeat": "100ms"})
    service = services.start(body)
    service.wait_log(r"all 2 workers ready")
    pids = service.worker_pids()
    assert len(pids) == 2
    # Open streams until each worker holds at least one.
    streams: list[MuxClient] = []
    owners: list[int] = []
    try:
        while set(owners) != set(pids):
            assert len(streams) < 60, f"every stream landed on one worker: {owners}"
            stream = MuxClient(service.port)
            streams.append(stream)
            owners.append(connection_owner(stream.sock, pids))
        for number, stream in enumerate(streams):
            stream.request("GET", "/ok", request_id=f"{number}.1")
            stream.request("GET", "/ok", request_id=f"{number}.2")
            assert [r.status for r in stream.receive(2)] == [200, 200]
            stream.request("GET", "/hang", request_id=f"{number}.h")
        count = len(streams)
        metrics = service.wait_metrics(
            lambda m: m.value("muxproxy_inner_requests_in_flight") == count
            and m.value("muxproxy_requests_total", kind="mux", route="route[1]", status="200") == 2 * count
        )
    finally:
        for stream in streams:
            stream.close()
    assert metrics.value("muxproxy_workers") == 2
    assert metrics.value("muxproxy_mux_streams") == count
    assert metrics.value("muxproxy_client_connections") == count
    assert metrics.value("muxproxy_connections_accepted_total") == count
    assert metrics.value("muxproxy_streams_started_total") == count
    assert metrics.value("muxproxy_origin_connections", origin="a", state="active") == count
    assert metrics.value("muxproxy_request_duration_seconds_count", kind="mux", route="route[1]") == 2 * count
    assert metrics.value("muxproxy_request_duration_seconds_bucket", kind="mux", route="route[1]", le="+Inf") == (
        2 * count
    )
    assert metrics.value("muxproxy_heartbeats_total") > 0
    assert metrics.value("muxproxy_client_bytes_received_total") > 0
    assert metrics.value("muxproxy_client_bytes_sent_total") > 0


# --- workers -----------------------------------------------------------------------------------------------


def test_a_killed_worker_is_started_again(services, notify, origins, proxy_config):
    a, _ = origins
    service = services.start(route_everything_to(proxy_config, a, workers=2))
    service.wait_log(r"all 2 workers ready")
    first, second = service.worker_pids()
    mark = service.log_mark()
    os.kill(first, signal.SIGKILL)
    service.wait_log(rf"worker 0 \(pid {first}\) exited with -9; starting it again", start=mark)
    replacement = int(service.wait_log(r"worker 0 started \(pid (\d+)\)", start=mark)[1])
    assert replacement not in (first, second)
    service.wait_log(rf"muxproxy\[{replacement}\]: listening on", start=mark)
    # The replacement serves: open connections until one lands on it.
    connections = []
    try:
        while True:
            assert len(connections) < 60, "no connection reached the new worker"
            connection = PlainConnection(service.port)
            connections.append(connection)
            if connection_owner(connection.sock, [replacement, second]) == replacement:
                status, fields, _ = connection.get("/ok")
                assert (status, fields["x-origin"]) == (200, "a")
                break
    finally:
        for connection in connections:
            connection.close()
    service.wait_metrics(lambda m: m.value("muxproxy_workers") == 2)
    assert service.admin_get("/healthz")[0] == 200
    assert service.admin_get("/readyz")[0] == 200


def test_a_dead_worker_is_neither_counted_nor_healthy_until_its_replacement_reports(
    services, notify, origins, proxy_config
):
    a, _ = origins
    service = services.start(route_everything_to(proxy_config, a, workers=2))
    service.wait_log(r"all 2 workers ready")
    service.wait_metrics(lambda m: m.value("muxproxy_workers") == 2)
    first, _ = service.worker_pids()
    mark = service.log_mark()
    os.kill(first, signal.SIGKILL)
    service.wait_log(rf"worker 0 \(pid {first}\) exited", start=mark)
    # The master restarts it after a delay (0.5 s at least) and the new
    # interpreter takes a while to report: meanwhile one worker reports.
    metrics = service.scrape()
    # Unhealthy after the scrape: the replacement was not even started when it ran.
    assert service.admin_get("/healthz")[0] == 503
    assert metrics.value("muxproxy_workers") == 1, "muxproxy_workers (Worker processes reporting) counts a dead worker"
