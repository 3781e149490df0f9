"""Failure modes end to end: misbehaving origins, clients and timers.

Each test runs a real proxy (`ProxyThread`, or `ProxyProcess` to measure
memory) in front of `ScriptedOrigin`s whose faults are chosen by path
(tests/support/faulty.py), and checks what a real client sees on the wire:
for plain requests, a proxy-made response or a connection cut short; for a
mux stream, an inner response tagged with Content-Location and Request-Id, or
a chunked inner message ending with a Proxy-Status trailer.  Where a failure
can reach both kinds of client, the test runs for both (`mode`).

Besides the status, tests check the invariants that make a failure safe: the
pool's counters come back to zero, an ambiguous origin connection is never
reused (counted on the origin's side), and the other requests on a mux
stream keep flowing.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from contextlib import ExitStack
from typing import Callable, Iterator

import pytest

from tests.support.faulty import ScriptedOrigin, UnacceptingListener, big_body, refused_port
from tests.support.harness import MuxClient, ProxyProcess, ProxyThread
from tests.support.muxwire import InnerResponse, MuxReader

MODES = ["plain", "mux"]

#: Generous limits for anything a test waits for; a passing run is far faster.
WAIT = 10.0


# --- clients ----------------------------------------------------------------------------


class PlainClient:
    """One keep-alive HTTP/1.1 client connection, one request at a time."""

    def __init__(self, port: int, timeout: float = WAIT) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.reader = MuxReader()
        self.ready: list[InnerResponse] = []

    def close(self) -> None:
        self.sock.close()

    def reset(self) -> None:
        """Disconnect abortively (RST)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def send(self, method: str, target: str, body: bytes | None = None) -> None:
        head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
        if body is not None:
            head += f"Content-Length: {len(body)}\r\n"
        self.sock.sendall(head.encode("latin-1") + b"\r\n" + (body or b""))

    def receive(self) -> InnerResponse:
        while not self.ready:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the proxy closed the connection before a complete response")
            self.ready.extend(self.reader.feed(data))
        return self.ready.pop(0)

    def request(self, method: str, target: str, body: bytes | None = None) -> InnerResponse:
        self.send(method, target, body)
        return self.receive()

    def read_until_closed(self, timeout: float = WAIT) -> tuple[bytes, str]:
        """Everything the proxy sends until it closes the connection, and how
        it ended: "eof", "reset", or "open" if it was still open at the timeout."""
        data = b""
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                piece = self.sock.recv(65536)
            except ConnectionResetError:
                return data, "reset"
            except TimeoutError:
                return data, "open"
            if not piece:
                return data, "eof"
            data += piece


class Client:
    """A plain or mux client sending one request at a time, for tests that run
    in both modes.  Mux responses are checked for their correlation tags."""

    def __init__(self, mode: str, port: int) -> None:
        self.mode = mode
        self.count = 0
        self.early: list[InnerResponse] = []  # mux responses that came in the same read
        if mode == "plain":
            self.plain = PlainClient(port)
        else:
            self.mux = MuxClient(port, timeout=WAIT)

    def close(self) -> None:
        if self.mode == "plain":
            self.plain.close()
        else:
            self.mux.close()

    def send(self, method: str, target: str, body: bytes | None = None) -> str:
        self.count += 1
        request_id = f"r{self.count}"
        if self.mode == "plain":
            self.plain.send(method, target, body)
        else:
            self.mux.request(method, target, request_id=request_id, body=body)
        return request_id

    def receive(self, request_id: str, target: str, timeout: float = WAIT) -> InnerResponse:
        if self.mode == "plain":
            return self.plain.receive()
        if not self.early:
            self.early = self.mux.receive(1, timeout)
        response = self.early.pop(0)
        assert response.content_location == target
        assert response.request_id == request_id
        return response

    def fetch(self, method: str, target: str, body: bytes | None = None, timeout: float = WAIT) -> InnerResponse:
        return self.receive(self.send(method, target, body), target, timeout)


# --- helpers ----------------------------------------------------------------------------


def assert_proxy_made(response: InnerResponse, status: int, error: str) -> None:
    assert (response.status, response.proxy_error) == (status, error), (
        response.status,
        response.headers,
        response.body[:200],
    )


def counters(proxy: ProxyThread) -> dict[str, int]:
    """Pool counters of origin "app"; call on the proxy's loop thread."""
    return proxy.server.pool_counters()["app"]


def counters_of(proxy: ProxyThread) -> dict[str, int]:
    """Pool counters of origin "app", from the test thread."""
    return proxy.pool_counters()["app"]


#: The pool with no connection left, and with one clean keep-alive connection.
EMPTY = {"active": 0, "idle": 0, "connecting": 0, "queued": 0}
ONE_IDLE = {"active": 0, "idle": 1, "connecting": 0, "queued": 0}


def assert_counters_settle(proxy: ProxyThread, expected: dict[str, int], timeout: float = 2.0) -> None:
    settled = proxy.wait_until(lambda: counters(proxy) == expected, timeout)
    assert settled, f"pool counters {counters_of(proxy)}, expected {expected}"


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedOrigin]]:
    """`scripted(name)` starts a ScriptedOrigin stopped when the test ends."""
    with ExitStack() as stack:
        yield lambda name="origin": stack.enter_context(ScriptedOrigin(name))


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    """`clients(mode, port)` opens a Client closed when the test ends."""
    opened: list[Client] = []

    def open_client(mode: str, port: int) -> Client:
        client = Client(mode, port)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


@pytest.fixture
def app_proxy(run_proxy, proxy_config) -> Callable[..., ProxyThread]:
    """`app_proxy(servers, route={...}, pool={...}, limits={...})`: a proxy with
    one origin "app" of these servers and one route for every path."""

    def start(servers, *, route: dict | None = None, pool: dict | None = None, **sections) -> ProxyThread:
        text = proxy_config(
            {"app": list(servers)},
            [{"path": "/", "origin": "app", **(route or {})}],
            origin_options={"app": pool or {}},
            **sections,
        )
        return run_proxy(text)

    return start


# --- origin failures: status and Proxy-Status ------------------------------------------

# name: (path, route timeouts, status, Proxy-Status error)
ORIGIN_FAILURES = {
    "refused": ("/ok", {}, 502, "connection_refused"),
    "connect-timeout": ("/ok", {"connect_timeout": "500ms"}, 504, "connection_timeout"),
    "reset": ("/reset", {}, 502, "connection_terminated"),
    "read-timeout": ("/hang", {"read_timeout": "1s"}, 504, "connection_read_timeout"),
    "total-timeout": ("/slow?ms=3000", {"read_timeout": "5s", "total_timeout": "1s"}, 504, "http_response_timeout"),
    "garbage": ("/garbage", {}, 502, "http_protocol_error"),
    "cl-te": ("/cl-te", {}, 502, "http_protocol_error"),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(ORIGIN_FAILURES))
def test_origin_failure_answers_with_its_status_and_proxy_status(case, mode, scripted, app_proxy, clients):
    path, route, status, error = ORIGIN_FAILURES[case]
    with ExitStack() as stack:
        if case == "refused":
            servers = [f"127.0.0.1:{refused_port()}"]
        elif case == "connect-timeout":
            servers = [stack.enter_context(UnacceptingListener()).address]
        else:
            servers = [scripted().address]
        proxy = app_proxy(servers, route=route)
        client = clients(mode, proxy.port)

        started = time.monotonic()
        response = client.fetch("GET", path)
        elapsed = time.monotonic() - started

        assert_proxy_made(response, status, error)
        assert response.header("Content-Type") == "text/plain; charset=utf-8"
        assert response.body.startswith(str(status).encode())
        if "timeout" in case:
            assert elapsed >= 0.4, "answered before the timeout could have expired"
        assert_counters_settle(proxy, EMPTY)  # a failed connection is never pooled
        # The client connection (or mux stream) is still usable afterwards.
        assert_proxy_made(client.fetch("GET", path), status, error)


def test_mux_siblings_keep_flowing_past_a_hanging_request(scripted, app_proxy):
    origin = scripted()
    proxy = app_proxy([origin.address], route={"read_timeout": "1s"})
    with MuxClient(proxy.port) as mux:
        mux.request("GET", "/hang", request_id="hang")
        for i in range(20):
            mux.request("GET", "/ok", request_id=f"ok{i}")
        responses = mux.receive(21, timeout=WAIT)
        mux.end()
        assert mux.receive_until_end() == []

    ids = [r.request_id for r in responses]
    assert sorted(ids[:20]) == sorted(f"ok{i}" for i in range(20)), ids
    assert all(r.status == 200 and r.body == b"ok" for r in responses[:20])
    hang = responses[20]
    assert (hang.request_id, hang.content_location) == ("hang", "/hang")
    assert_proxy_made(hang, 504, "connection_read_timeout")


def test_mux_total_timeout_fires_while_the_origin_keeps_trickling(scripted, app_proxy):
    # Every read comes well within read_timeout, so only the total deadline
    # can end this response; it is small, hence still buffered: an inner 504.
    origin = scripted()
    proxy = app_proxy([origin.address], route={"read_timeout": "1s", "total_timeout": "1500ms"})
    with MuxClient(proxy.port) as mux:
        mux.request("GET", "/drip?ms=200&count=20", request_id="drip")
        [response] = mux.receive(1, timeout=WAIT)
    assert (response.request_id, response.content_location) == ("drip", "/drip?ms=200&count=20")
    assert_proxy_made(response, 504, "http_response_timeout")


# --- responses that break off -------------------------------------------------------------


def test_mux_streamed_response_broken_off_ends_with_an_incomplete_trailer(scripted, app_proxy):
    origin = scripted()
    proxy = app_proxy([origin.address])
    broken = "/reset-mid?size=200000"
    with MuxClient(proxy.port) as mux:
        mux.request("GET", broken, request_id="broken")
        mux.request("GET", "/slow?ms=200", request_id="slow")
        first = {r.request_id: r for r in mux.receive(2, timeout=WAIT)}
        mux.request("GET", "/ok", request_id="after")
        [after] = mux.receive(1, timeout=WAIT)
        mux.end()
        assert mux.receive_until_end() == []

    response = first["broken"]
    assert response.content_location == broken
    assert response.status == 200 and response.chunked
    assert response.body == big_body(200000)[:100000]
    assert response.proxy_error == "http_response_incomplete"
    assert response.header("Proxy-Status") is None  # only the trailer says so
    # The stream stayed framed: the responses after it parse and are intact.
    assert (first["slow"].status, first["slow"].body) == (200, b"slow")
    assert (after.status, after.body, after.request_id) == (200, b"ok", "after")


@pytest.mark.parametrize("path", ["/reset-mid?size=1000", "/close-mid-chunked"])
def test_mux_small_response_broken_off_becomes_an_inner_502(path, scripted, app_proxy):
    origin = scripted()
    proxy = app_proxy([origin.address])
    with MuxClient(proxy.port) as mux:
        mux.request("GET", path, request_id="small")
        [response] = mux.receive(1, timeout=WAIT)
        mux.request("GET", "/ok", request_id="after")
        [after] = mux.receive(1, timeout=WAIT)
    assert (response.request_id, response.content_location) == ("small", path)
    assert not response.chunked
    assert_proxy_made(response, 502, "http_response_incomplete")
    assert (after.status, after.body) == (200, b"ok")


def test_plain_response_broken_off_after_its_head_closes_the_connection(scripted, app_proxy):
    origin = scripted()
    proxy = app_proxy([origin.address])
    client = PlainClient(proxy.port)
    try:
        client.send("GET", "/reset-mid?size=1000")
        data, how = client.read_until_closed()
    finally:
        client.close()
    assert how in ("eof", "reset"), "the proxy kept the connection open"
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nContent-Length: 1000" in head
    assert 0 < len(body) < 1000, (len(body), how)
    assert body == big_body(1000)[: len(body)]


def test_plain_chunked_response_broken_off_has_no_last_chunk(scripted, app_proxy):
    origin = scripted()
    proxy = app_proxy([origin.address])
    client = PlainClient(proxy.port)
    try:
        client.send("GET", "/close-mid-chunked")
        data, how = client.read_until_closed()
    finally:
        client.close()
    assert how in ("eof", "reset"), "the proxy kept the connection open"
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nTransfer-Encoding: chunked" in head
    assert body == b"5\r\nhello\r\n", (body, how)  # and never the last chunk "0\r\n\r\n"


@pytest.mark.parametrize("size", [1000, 200000])
@pytest.mark.parametrize("mode", MODES)
def test_close_delimited_response_is_relayed_complete(mode, size, scripted, app_proxy, clients):
    origin = scripted()
    proxy = app_proxy([origin.address])
    client = clients(mode, proxy.port)
    target = f"/close-delimited?size={size}"
    response = client.fetch("GET", target)
    assert response.status == 200
    assert response.body == big_body(size)
    assert response.proxy_error is None and response.trailers == []
    # A close-delimited response ends its connection; the next one is new.
    after = client.fetch("GET", "/ok")
    assert (after.status, after.body, after.header("X-Origin-Connection")) == (200, b"ok", "2")


# --- connection reuse, retries and ambiguity ----------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_get_on_a_reused_connection_the_origin_closed_is_retried_on_a_fresh_one(mode, scripted, app_proxy, clients):
    origin = scripted()
    proxy = app_proxy([origin.address])
    client = clients(mode, proxy.port)
    first = client.fetch("GET", "/close-after-response")
    assert (first.status, first.header("X-Origin-Connection")) == (200, "1")
    assert proxy.wait_until(lambda: counters(proxy)["idle"] == 1)

    response = client.fetch("GET", "/ok")

    assert (response.status, response.body) == (200, b"ok")
    assert response.header("X-Origin-Connection") == "2"
    assert origin.connection_count == 2
    # Seen twice: once on the reused connection (dropped unanswered), once on the fresh one.
    assert [r.connection for r in origin.requests_for("/ok")] == [1, 2]
    assert_counters_settle(proxy, ONE_IDLE)


@pytest.mark.parametrize("mode", MODES)
def test_post_on_a_reused_connection_the_origin_closed_is_not_retried(mode, scripted, app_proxy, clients):
    origin = scripted()
    proxy = app_proxy([origin.address])
    client = clients(mode, proxy.port)
    assert client.fetch("GET", "/close-after-response").status == 200
    assert proxy.wait_until(lambda: counters(proxy)["idle"] == 1)

    response = client.fetch("POST", "/echo", body=b"pay once")

    assert_proxy_made(response, 502, "connection_terminated")
    assert [(r.method, r.body, r.connection) for r in origin.requests_for("/echo")] == [("POST", b"pay once", 1)]
    assert origin.connection_count == 1
    assert_counters_settle(proxy, EMPTY)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", ["/extra", "/cl-te"])
def test_ambiguous_origin_response_is_never_followed_on_its_connection(path, mode, scripted, app_proxy, clients):
    origin = scripted()
    proxy = app_proxy([origin.address])
    client = clients(mode, proxy.port)
    response = client.fetch("GET", path)
    if path == "/extra":
        assert (response.status, response.body) == (200, b"ok")
    else:
        assert_proxy_made(response, 502, "http_protocol_error")

    after = client.fetch("GET", "/ok")

    # The next request gets its own response on a new connection, never the
    # bytes the origin left behind on the old one.
    assert (after.status, after.body, after.header("X-Smuggled")) == (200, b"ok", None)
    assert after.header("X-Origin-Connection") == "2"
    assert origin.connection_count == 2
    assert_counters_settle(proxy, ONE_IDLE)


# --- the pool under pressure ----------------------------------------------------------------

# path: (route timeouts, status, Proxy-Status error, times the origin sees it)
# when it fails on a reused connection
REUSED_FAILURES = {
    "/hang": ({"read_timeout": "1s"}, 504, "connection_read_timeout", 1),
    # Nothing came back on the reused connection: retried once on a fresh one.
    "/reset": ({}, 502, "connection_terminated", 2),
    # Response bytes came back: never retried.
    "/cl-te": ({}, 502, "http_protocol_error", 1),
}


@pytest.mark.parametrize("path", list(REUSED_FAILURES))
def test_a_failure_on_a_reused_connection_frees_its_pool_slot(path, scripted, app_proxy, clients):
    route, status, error, seen = REUSED_FAILURES[path]
    origin = scripted()
    proxy = app_proxy([origin.address], route=route, pool={"max_connections": 1, "queue_timeout": "300ms"})
    client = clients("plain", proxy.port)
    assert client.fetch("GET", "/ok").status == 200
    assert proxy.wait_until(lambda: counters(proxy)["idle"] == 1)

    assert_proxy_made(client.fetch("GET", path), status, error)  # on the pooled connection
    assert len(origin.requests_for(path)) == seen
    after = client.fetch("GET", "/ok")

    # The only slot is free again: the next request gets a new connection.
    assert (after.status, after.body, after.proxy_error) == (200, b"ok", None)
    assert_counters_settle(proxy, ONE_IDLE)


@pytest.mark.parametrize("mode", MODES)
def test_no_pool_slot_within_queue_timeout_answers_503(mode, scripted, app_proxy, clients):
    origin = scripted()
    proxy = app_proxy(
        [origin.address],
        route={"read_timeout": "30s"},
        pool={"max_connections": 1, "queue_timeout": "300ms"},
    )
    holder = clients(mode, proxy.port)
    holder.send("GET", "/hang")
    assert origin.wait_for(lambda: len(origin.requests_for("/hang")) == 1)
    waiter = clients(mode, proxy.port) if mode == "plain" else holder

    started = time.monotonic()
    response = waiter.fetch("GET", "/ok")
    elapsed = time.monotonic() - started

    assert_proxy_made(response, 503, "connection_limit_reached")
    assert 0.25 <= elapsed < 3, elapsed
    assert counters_of(proxy) == {"active": 1, "idle": 0, "connecting": 0, "queued": 0}
    assert origin.connection_count == 1


def test_round_robin_fails_over_and_skips_a_dead_server(scripted, app_proxy):
    a, b = scripted("a"), scripted("b")
    proxy = app_proxy([a.address, b.address], pool={"max_fails": 2, "fail_timeout": "30s"})
    client = PlainClient(proxy.port)
    try:
        answered = [client.request("GET", "/ok").header("X-Origin") for _ in range(4)]
        assert sorted(answered) == ["a", "a", "b", "b"]

        a.stop_listening()  # refuses connects; its pooled connections are closed
        assert proxy.wait_until(lambda: counters(proxy)["idle"] == 1)
        b_connections = b.connection_count
        # a is tried in turn, refuses, and the request moves on to b.
        for _ in range(2):
            response = client.request("GET", "/ok")
            assert (response.status, response.header("X-Origin")) == (200, "b")
        # After max_fails refusals a is skipped: b's pooled connections serve.
        assert b.connection_count == b_connections + 2
        a_connections = a.connection_count
        a.resume_listening()
        for _ in range(4):
            response = client.request("GET", "/ok")
            assert (response.status, response.header("X-Origin")) == (200, "b")
        assert a.connection_count == a_connections
        assert b.connection_count == b_connections + 2
    finally:
        client.close()


# --- clients that go away, stall or trickle ---------------------------------------------------


@pytest.mark.parametrize("pooled", [False, True], ids=["fresh-connections", "pooled-connections"])
def test_mux_client_disconnect_cancels_every_exchange(pooled, scripted, app_proxy):
    origin = scripted()
    proxy = app_proxy([origin.address], route={"read_timeout": "30s"})
    if pooled:  # ten idle keep-alive connections for the /hang requests to reuse
        with MuxClient(proxy.port) as warm:
            for i in range(10):
                warm.request("GET", "/slow?ms=300", request_id=f"w{i}")
            assert [r.status for r in warm.receive(10)] == [200] * 10
        assert proxy.wait_until(lambda: counters(proxy)["idle"] == 10)
    mux = MuxClient(proxy.port)
    try:
        for i in range(10):
            mux.request("GET", "/hang", request_id=f"h{i}")
        assert origin.wait_for(lambda: len(origin.requests_for("/hang")) == 10)
        assert counters_of(proxy)["active"] == 10
    finally:
        mux.close()
    assert_counters_settle(proxy, EMPTY)
    assert origin.wait_for(lambda: origin.open_connections == 0, timeout=2), origin
    assert origin.connection_count == 10


def test_plain_client_reset_cancels_its_exchange(scripted, app_proxy):
    origin = scripted()
    proxy = app_proxy([origin.address], route={"read_timeout": "30s"})
    client = PlainClient(proxy.port)
    client.send("GET", "/hang")
    assert origin.wait_for(lambda: len(origin.requests_for("/hang")) == 1)
    client.reset()
    assert_counters_settle(proxy, EMPTY)
    assert origin.wait_for(lambda: origin.open_connections == 0, timeout=2), origin


def test_client_that_stops_reading_holds_the_proxy_memory_bounded(tmp_path, scripted, capsys):
    count, size = 64, 1 << 20
    origin = scripted()
    config = f"""
[log]
access = "off"
level = "warning"

[origin.app]
servers = ["{origin.address}"]

[[route]]
origin = "app"
"""
    proxy = ProxyProcess(config, tmp_path)
    with ExitStack() as stack:
        # ProxyProcess leaves its stderr pipe open (a ResourceWarning, an
        # error here); close it once the process has exited.
        stack.callback(lambda: proxy.process and proxy.process.stderr.close())
        stack.enter_context(proxy)
        with MuxClient(proxy.port) as warmup:  # imports and first allocations
            warmup.request("GET", "/big?size=200000", request_id="warm")
            assert warmup.receive(1)[0].body == big_body(200000)
        baseline = proxy.rss_kib()
        with MuxClient(proxy.port, timeout=30) as mux:
            for i in range(count):
                mux.request("GET", f"/big?size={size}", request_id=f"b{i}")
            mux.end()
            samples = []
            for _ in range(12):  # ~3 s while the client reads nothing
                time.sleep(0.25)
                samples.append(proxy.rss_kib())
            responses = mux.receive_until_end(timeout=60)
        after = proxy.rss_kib()

    deltas = [sample - baseline for sample in samples]
    peak_delta = max(deltas)
    with capsys.disabled():
        print(
            f"\n[memory] stalled mux client, {count} x {size} B: baseline {baseline} KiB, "
            f"peak delta {peak_delta} KiB ({peak_delta / 1024:.1f} MiB), "
            f"after reading {after - baseline} KiB; deltas while stalled (KiB): {deltas}"
        )
    assert peak_delta < 48 * 1024, deltas
    assert sorted(r.request_id for r in responses) == sorted(f"b{i}" for i in range(count))
    expected = big_body(size)
    assert all(r.status == 200 and r.body == expected and r.trailers == [] for r in responses)


def test_stalled_mux_client_never_turns_into_origin_read_timeouts(scripted, app_proxy):
    # The origins are ready to send; it is the proxy that stops reading them
    # (backpressure from a client that reads nothing).  read_timeout measures
    # the origin's silence (nginx arms proxy_read_timeout only while it wants
    # to read), so this stall, longer than read_timeout, must not end any
    # response, nor count against the origin's health.  The client's own
    # bound is send_timeout.
    count, size = 32, 1 << 20  # more than the kernel's socket buffers absorb
    origin = scripted()
    proxy = app_proxy([origin.address], route={"read_timeout": "1s"})
    with MuxClient(proxy.port, timeout=30) as mux:
        for i in range(count):
            mux.request("GET", f"/big?size={size}", request_id=f"b{i}")
        mux.end()
        time.sleep(2.5)
        responses = mux.receive_until_end(timeout=30)
    outcome = sorted((r.status, r.proxy_error or "-") for r in responses)
    assert outcome == [(200, "-")] * count, outcome
    expected = big_body(size)
    assert all(r.body == expected for r in responses)


def test_slowloris_head_is_cut_off_at_the_header_deadline(scripted, app_proxy):
    origin = scripted()
    proxy = app_proxy([origin.address], limits={"header_timeout": "1s"})
    head = b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Trickle: " + b"a" * 100
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=WAIT)
    received = b""
    sent = 0
    started = time.monotonic()
    answered_at = None
    try:
        for byte in head:  # one byte every 100 ms, never the end of the head
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            sent += 1
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:
                answered_at = time.monotonic() - started
                break
        sock.settimeout(WAIT)
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            received += data
    finally:
        sock.close()

    assert answered_at is not None, "the proxy waited for the whole trickled head"
    assert 0.9 <= answered_at < 2.5, answered_at
    assert 8 <= sent < len(head)  # bytes kept arriving until the cut
    [response] = MuxReader().feed(received)
    assert_proxy_made(response, 408, "http_request_error")
    assert response.header("Connection") == "close"
    assert origin.request_count == 0
