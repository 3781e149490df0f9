"""Hostile clients and faulty origins end to end: every inner request gets
exactly one final answer.

Each test runs a real proxy (`ProxyThread`, or `ProxyProcess` to measure its
memory) on 127.0.0.1 in front of real origins (nginx, `ScriptedOrigin`s whose
faults are chosen by path), drives it with real sockets, and reads what a
client really receives with tests/support/muxwire.py, which shares no code
with the proxy.

The one invariant every test here holds (`assert_each_answered_once`): each
inner request gets exactly one final answer, its own response or a tagged
proxy-made error, never zero, never two, never someone else's; no response
carries an id nobody sent, and each is tagged with the target it answers.
What the origins received is checked too: a request the proxy refused, or
bytes that were only ever a body, never reach an origin.

Covered here (test_failures.py and test_mux_stream.py hold the single-fault
cases): faults mixed with healthy requests on one stream; a flood of 10,000
pipelined inner requests (in-flight and memory bounded, plain and gzip-coded,
with a client that reads at once or stalls); a slowloris inner
head (a deadline, not an inactivity timer); the mux framing hazards
(Expect: 100-continue bodies of refused requests, origin bodies that look
like HTTP, an origin's own correlation fields, absolute-form and Host
smuggling, CR/LF/NUL injection); and response mix-ups between requests and
clients on pooled origin connections (late, extra and interleaved responses).
"""

from __future__ import annotations

import gzip
import json
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack

import pytest

from tests.support.faulty import ScriptedOrigin, big_body
from tests.support.harness import MuxClient, ProxyProcess, ProxyThread, inner_request
from tests.support.muxwire import InnerResponse, MuxReader, WireError

#: Generous limit for anything a test waits for; a passing run is far faster.
WAIT = 10.0

# RFC 9110 §5.1, §5.5: a field name is a token; a value has no control
# characters but HTAB (obs-text, 0x80-0xFF, is allowed).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_VALUE_CHAR = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


# --- the invariant ------------------------------------------------------------------------


def assert_well_formed(response: InnerResponse) -> None:
    """Every field line of an inner response is a valid field: nothing a
    hostile request or origin sent can have split or corrupted it."""
    for name, value in response.headers + response.trailers:
        assert _TOKEN.match(name), f"bad field name {name!r} in {response.headers}"
        assert not _BAD_VALUE_CHAR.search(value), f"control character in {name}: {value!r}"
    for name in ("Content-Location", "Request-Id"):
        count = sum(1 for key, _ in response.headers if key.lower() == name.lower())
        assert count <= 1, f"{count} {name} fields in {response.headers}"


def assert_each_answered_once(
    sent_request_ids: Mapping[str, str], responses: Iterable[InnerResponse]
) -> dict[str, InnerResponse]:
    """Every inner request answered exactly once, by its own response.

    `sent_request_ids` maps each Request-Id sent to the target it was sent
    with.  Every id must come back exactly once (its response or a tagged
    proxy-made error), no response may carry an id nobody sent (or none at
    all), and each response's Content-Location must be the target sent, as
    sent.  Returns the responses by Request-Id.
    """
    table: dict[str, InnerResponse] = {}
    problems: list[str] = []
    for response in responses:
        assert_well_formed(response)
        request_id = response.request_id
        summary = f"{response.status} {response.content_location!r} {response.body[:80]!r}"
        if request_id is None:
            problems.append(f"untagged response: {summary}")
        elif request_id not in sent_request_ids:
            problems.append(f"response for a Request-Id nobody sent ({request_id!r}): {summary}")
        elif request_id in table:
            problems.append(f"second response for {request_id!r}: {summary}")
        else:
            table[request_id] = response
            if response.content_location != sent_request_ids[request_id]:
                problems.append(
                    f"{request_id!r} tagged {response.content_location!r}, sent as {sent_request_ids[request_id]!r}"
                )
    missing = [request_id for request_id in sent_request_ids if request_id not in table]
    if missing:
        problems.append(f"{len(missing)} requests never answered: {missing[:20]}")
    assert not problems, "\n".join(problems[:30])
    return table


def assert_proxy_made(response: InnerResponse, status: int, error: str) -> None:
    assert (response.status, response.proxy_error) == (status, error), (
        response.status,
        response.headers,
        response.body[:200],
    )


# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedOrigin]]:
    """`scripted(name)` starts a ScriptedOrigin stopped when the test ends."""
    with ExitStack() as stack:
        yield lambda name="origin": stack.enter_context(ScriptedOrigin(name))


@pytest.fixture
def mux_clients() -> Iterator[Callable[..., MuxClient]]:
    """`mux_clients(port, **kwargs)` opens a MuxClient closed when the test ends."""
    opened: list[MuxClient] = []

    def open_client(port: int, **kwargs) -> MuxClient:
        kwargs.setdefault("timeout", WAIT)
        client = MuxClient(port, **kwargs)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


class BackgroundSend:
    """Sends pieces of inner-stream bytes on a MuxClient from a thread, as a
    real duplex client does, while the test thread reads.  `join()` re-raises
    what the thread failed with."""

    def __init__(self, client: MuxClient, pieces: list[bytes], *, end: bool = True) -> None:
        self.client = client
        self.pieces = pieces
        self.end = end
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="mux-sender", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for piece in self.pieces:
                self.client.send(piece)
            if self.end:
                self.client.end()
        except BaseException as exc:  # reported by join()
            self.error = exc

    def join(self) -> None:
        self.thread.join(WAIT * 6)
        assert not self.thread.is_alive(), "the sender thread is still blocked"
        if self.error is not None:
            raise self.error


def wait_closed(sock: socket.socket, timeout: float = WAIT) -> bool:
    """Whether the peer closes the connection within `timeout` (what it sends meanwhile is dropped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            if sock.recv(65536) == b"":
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def echoed(response: InnerResponse) -> dict:
    """The request as the ScriptedOrigin's /echo saw it, with headers as a dict."""
    document = json.loads(response.body)
    document["fields"] = {name.lower(): value for name, value in document["headers"]}
    return document


class IncrementalOuterReader:
    """muxwire.OuterReader for very large outer chunks: it hands chunk bytes
    to the MuxReader as they arrive, a slice at a time, so reading a stream
    costs time linear in its size however the proxy chunks it.  (OuterReader
    waits for a whole outer chunk, and MuxReader copies its buffer once per
    response: quadratic for one chunk of tens of megabytes.)"""

    SLICE = 4096

    def __init__(self, mux: MuxReader) -> None:
        self.mux = mux
        self.pending = b""  # framing bytes not parsed yet (a few at most)
        self.head: InnerResponse | None = None
        self.ended = False
        self._chunk_left = 0
        self._skip = 0  # the CRLF after chunk data still to skip

    def feed(self, data: bytes) -> list[InnerResponse]:
        out: list[InnerResponse] = []
        buf = self.pending + data
        pos = 0
        if self.head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.pending = buf
                return out
            self.head = MuxReader(lambda r: True).feed(buf[: end + 4])[0]
            pos = end + 4
        while not self.ended:
            if self._skip:
                expected = b"\r\n"[2 - self._skip :]
                got = buf[pos : pos + len(expected)]
                if not expected.startswith(got):
                    raise WireError(f"outer chunk followed by {got!r}, not CRLF")
                pos += len(got)
                self._skip -= len(got)
                if self._skip:
                    break
            if self._chunk_left == 0:
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    break
                size = int(buf[pos:line_end].split(b";")[0], 16)
                pos = line_end + 2
                if size == 0:
                    self.ended = True
                    break
                self._chunk_left = size
            take = min(self._chunk_left, len(buf) - pos)
            if take == 0:
                break
            for start in range(pos, pos + take, self.SLICE):
                out.extend(self.mux.feed(buf[start : min(start + self.SLICE, pos + take)]))
            pos += take
            self._chunk_left -= take
            if self._chunk_left == 0:
                self._skip = 2
        self.pending = buf[pos:]
        return out


def session_stats(proxy: ProxyThread) -> list[tuple[int, int, int]]:
    """(peak in flight, in flight now, inner streams held) of every open mux
    session, read on the proxy's loop thread."""

    def read() -> list[tuple[int, int, int]]:
        stats = []
        for connection in proxy.server.connections:
            session = getattr(connection.handler, "session", None)
            if session is not None:
                stats.append((session.peak_in_flight, session.in_flight, len(session.streams)))
        return stats

    return proxy.call(read)


# --- faults mixed with healthy requests on one stream ----------------------------------------------

# path (a query "r=N" is added per round, so each target is unique) ->
# the acceptable (status, Proxy-Status error) outcomes; body checks below.
MIXED_FAULTS: dict[str, set[tuple[int, str | None]]] = {
    "/ok": {(200, None)},
    "/slow?ms=150": {(200, None)},
    "/reset": {(502, "connection_terminated")},
    "/reset-mid?size=1000": {(502, "http_response_incomplete")},
    # Streamed if it owns the outer stream when the reset comes (then a
    # Proxy-Status trailer), an inner 502 if it was still waiting its turn.
    "/reset-mid?size=200000": {(200, "http_response_incomplete"), (502, "http_response_incomplete")},
    "/close-mid-chunked": {(502, "http_response_incomplete")},
    "/hang": {(504, "connection_read_timeout")},
    "/garbage": {(502, "http_protocol_error")},
    "/cl-te": {(502, "http_protocol_error")},
    "/extra": {(200, None)},
    "/close-delimited?size=5000": {(200, None)},
    "/big?size=100000": {(200, None)},
}


def test_faults_mixed_with_healthy_requests_on_one_stream_are_each_answered_once(scripted, run_proxy, proxy_config):
    origin = scripted()
    proxy = run_proxy(proxy_config({"app": origin}, [{"path": "/", "origin": "app", "read_timeout": "1s"}]))
    sent: dict[str, str] = {}
    pieces = []
    for round_number in range(3):
        for path in MIXED_FAULTS:
            for copy in range(3 if path == "/ok" else 1):
                separator = "&" if "?" in path else "?"
                target = f"{path}{separator}r={round_number}.{copy}"
                request_id = f"{round_number}-{len(sent)}"
                sent[request_id] = target
                pieces.append(inner_request("GET", target, request_id=request_id))

    with MuxClient(proxy.port, timeout=WAIT) as client:
        sender = BackgroundSend(client, pieces)
        responses = client.receive_until_end(timeout=30)
        sender.join()
        assert client.reader.ended

    table = assert_each_answered_once(sent, responses)
    for request_id, target in sent.items():
        response = table[request_id]
        path = target.rpartition("r=")[0][:-1]
        outcome = (response.status, response.proxy_error)
        assert outcome in MIXED_FAULTS[path], (target, response.status, response.headers)
        # Nobody ever gets the response /extra's origin sent unasked.
        assert response.header("X-Smuggled") is None and response.body != b"smuggled", target
        if response.status == 200 and response.proxy_error is None:
            expected = {
                "/ok": b"ok",
                "/slow?ms=150": b"slow",
                "/extra": b"ok",
                "/close-delimited?size=5000": big_body(5000),
                "/big?size=100000": big_body(100000),
            }[path]
            assert response.body == expected, target
        elif path == "/reset-mid?size=200000" and response.status == 200:
            assert response.chunked and response.body == big_body(200000)[: len(response.body)]
    # Each request reached the origin once, except an idempotent one that
    # failed on a reused connection before any response byte: retried once.
    for request_id, target in sent.items():
        seen = [r for r in origin.requests if r.target == target]
        assert 1 <= len(seen) <= (2 if target.startswith("/reset?") else 1), (target, len(seen))


# --- a flood of pipelined inner requests -------------------------------------------------------------

FLOOD_COUNT = 10_000
FLOOD_MAX_IN_FLIGHT = 64


def flood_requests(count: int, path: str = "/100b.bin") -> tuple[dict[str, str], list[bytes]]:
    sent = {}
    requests = []
    for i in range(count):
        target = f"{path}?i={i}"
        sent[str(i)] = target
        requests.append(inner_request("GET", target, request_id=str(i)))
    return sent, requests


def assert_flood_answered(nginx, sent: dict[str, str], responses: list[InnerResponse]) -> dict[str, int]:
    """Each request answered once: nginx's file, or an explicit, tagged
    proxy-made answer (a refusal); returns how many got which outcome."""
    table = assert_each_answered_once(sent, responses)
    outcomes: dict[str, int] = {}
    expected = nginx.file("100b.bin")
    for request_id, response in table.items():
        error = response.proxy_error
        if error is None:
            outcome = (response.status, response.body)
            assert outcome == (200, expected), (request_id, response.status, response.body[:100])
        else:
            assert response.status in (404, 429, 503), (request_id, response.status, error)
        key = f"{response.status} {error or ''}".strip()
        outcomes[key] = outcomes.get(key, 0) + 1
    return outcomes


# pool settings of nginx's origin: "tight" leaves room for 4 + 8 of the 64
# requests in flight, so most are refused at once (a tagged 503).
FLOOD_POOLS = {"roomy-pool": {}, "tight-pool": {"max_connections": 4, "max_queue": 8}}


@pytest.mark.parametrize("pool", list(FLOOD_POOLS))
def test_flood_of_pipelined_inner_requests_keeps_in_flight_bounded(pool, nginx, run_proxy, proxy_config, capsys):
    """10,000 tiny inner requests in one write: every one answered once, and
    the proxy never has more than mux.max_in_flight at the origin, nor more
    than that plus one parsed slice held as inner streams."""
    proxy = run_proxy(
        proxy_config(
            {"nginx": nginx}, mux={"max_in_flight": FLOOD_MAX_IN_FLIGHT}, origin_options={"nginx": FLOOD_POOLS[pool]}
        )
    )
    sent, requests = flood_requests(FLOOD_COUNT)
    # The session parses at most one FEED_SLICE (2 KiB) beyond its marks.
    slice_allowance = 2048 // min(len(r) for r in requests) + 1
    samples: list[tuple[int, int, int]] = []
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.wait(0.01):
            samples.extend(session_stats(proxy))

    with MuxClient(proxy.port, timeout=WAIT) as client:
        sampler = threading.Thread(target=sample, name="flood-sampler", daemon=True)
        started = time.monotonic()
        sender = BackgroundSend(client, [b"".join(requests)], end=False)
        sampler.start()
        try:
            responses = client.receive(FLOOD_COUNT, timeout=60)
        finally:
            stop_sampling.set()
            sampler.join(WAIT)
        duration = time.monotonic() - started
        sender.join()
        [(peak, in_flight, held)] = session_stats(proxy)  # read before the stream ends
        client.end()
        assert client.receive_until_end() == []

    outcomes = assert_flood_answered(nginx, sent, responses)
    max_held = max((s[2] for s in samples), default=0)
    with capsys.disabled():
        print(
            f"\n[flood] {FLOOD_COUNT} inner requests in one write, max_in_flight {FLOOD_MAX_IN_FLIGHT}, {pool}: "
            f"peak in flight {peak}, most inner streams held {max_held} ({len(samples)} samples), "
            f"{duration:.2f} s ({FLOOD_COUNT / duration:.0f} requests/s), outcomes {outcomes}"
        )
    assert 1 <= peak <= FLOOD_MAX_IN_FLIGHT
    assert (in_flight, held) == (0, 0)
    assert samples, "the sampler never saw the session"
    assert max_held <= FLOOD_MAX_IN_FLIGHT + slice_allowance, (max_held, slice_allowance)
    assert set(outcomes) <= {"200", "503 connection_limit_reached"}, outcomes
    assert proxy.pool_counters()["nginx"]["active"] == 0


# variant: (path of every request, seconds the client reads nothing at first)
FLOOD_MEMORY_VARIANTS = {
    "prompt-reader": ("/100b.bin", 0.0),
    "stalled-reader": ("/100b.bin", 2.0),
    # No route: every request is refused at once, never in flight.
    "stalled-reader-all-refused": ("/missing", 2.0),
}


def flood_config(nginx) -> str:
    """The config of the flood tests run against `python -m proxy`: no
    access log (the flood would be written out line by line), in flight
    capped at FLOOD_MAX_IN_FLIGHT, one route to nginx's 100-byte file."""
    return f"""
[log]
access = "off"
level = "warning"

[mux]
max_in_flight = {FLOOD_MAX_IN_FLIGHT}

[origin.nginx]
servers = ["{nginx.address}"]

[[route]]
path = "/100b.bin"
origin = "nginx"
"""


@pytest.mark.parametrize("variant", list(FLOOD_MEMORY_VARIANTS))
def test_flood_of_pipelined_inner_requests_keeps_memory_bounded(variant, nginx, tmp_path, capsys):
    """The same flood, in 100-request chunks, against `python -m proxy`, its
    RSS sampled while the flood runs; the client reads at once, or only
    after a stall (then backpressure must hold the flood back)."""
    path, stall = FLOOD_MEMORY_VARIANTS[variant]
    config = flood_config(nginx)
    sent, requests = flood_requests(FLOOD_COUNT, path)
    pieces = [b"".join(requests[i : i + 100]) for i in range(0, len(requests), 100)]
    with ProxyProcess(config, tmp_path) as proxy:
        with MuxClient(proxy.port, timeout=WAIT) as warmup:  # imports, first allocations, pool
            warmup.send(b"".join(flood_requests(200)[1] + flood_requests(200, "/missing")[1]))
            warmup.end()
            assert len(warmup.receive_until_end()) == 400
        baseline = proxy.rss_kib()
        samples: list[int] = []
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.wait(0.02):
                samples.append(proxy.rss_kib())

        sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
        sampler.start()
        with MuxClient(proxy.port, timeout=WAIT) as client:
            started = time.monotonic()
            sender = BackgroundSend(client, pieces)
            try:
                time.sleep(stall)
                responses = client.receive_until_end(timeout=60)
            finally:
                stop_sampling.set()
                sampler.join(WAIT)
            duration = time.monotonic() - started
            sender.join()
            assert client.reader.ended
        after = proxy.rss_kib()

    outcomes = assert_flood_answered(nginx, sent, responses)
    peak_delta = max(samples, default=after) - baseline
    with capsys.disabled():
        print(
            f"\n[flood] {FLOOD_COUNT} inner requests in 100-request chunks, python -m proxy, {variant}: "
            f"RSS baseline {baseline} KiB, peak delta {peak_delta} KiB ({peak_delta / 1024:.1f} MiB) "
            f"over {len(samples)} samples, after {after - baseline} KiB, "
            f"{duration:.2f} s ({FLOOD_COUNT / duration:.0f} requests/s), outcomes {outcomes}"
        )
    assert len(samples) >= 5, "the flood ended before memory could be sampled"
    assert set(outcomes) == ({"200"} if path == "/100b.bin" else {"404 destination_not_found"}), outcomes
    # 64 in flight of 100-byte responses, one slice, one socket read and the
    # client's socket buffers: a few MiB at most.  Buffering the flood
    # (10,000 requests, about 3 MiB of responses, and the objects around
    # them) would show far more; the bound leaves room for allocator noise.
    assert peak_delta < 24 * 1024, samples


GZIP_FLOOD_COUNT = 100_000


def test_gzip_flood_of_refused_inner_requests_keeps_memory_bounded(nginx, tmp_path, capsys):
    """A gzip-coded outer body (docs/protocol.md §9: decoded "a bounded step
    at a time, so a small compressed body cannot blow up in memory") that
    decodes to 100,000 inner requests no route serves, sent while the client
    reads nothing: refused requests are never in flight, so only the
    backpressure on what they produce can bound them (§11: "bounded by
    these limits plus one socket read")."""
    config = flood_config(nginx)
    sent = {str(i): "/missing" for i in range(GZIP_FLOOD_COUNT)}
    decoded = b"".join(inner_request("GET", "/missing", request_id=str(i)) for i in range(GZIP_FLOOD_COUNT))
    body = gzip.compress(decoded, 9)
    with ProxyProcess(config, tmp_path) as proxy:
        with MuxClient(proxy.port, timeout=WAIT, headers={"Content-Encoding": "gzip"}) as warmup:
            warmup.send(gzip.compress(b"".join(flood_requests(200)[1] + flood_requests(200, "/missing")[1])))
            warmup.end()
            assert len(warmup.receive_until_end()) == 400
        baseline = proxy.rss_kib()
        samples: list[int] = []
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.wait(0.02):
                samples.append(proxy.rss_kib())

        sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
        sampler.start()
        with MuxClient(proxy.port, timeout=30, headers={"Content-Encoding": "gzip"}) as client:
            client.reader = IncrementalOuterReader(client.reader.mux)
            started = time.monotonic()
            sender = BackgroundSend(client, [body[i : i + 65536] for i in range(0, len(body), 65536)])
            try:
                time.sleep(2.0)  # the client reads nothing yet
                responses = client.receive_until_end(timeout=120)
            finally:
                stop_sampling.set()
                sampler.join(WAIT)
            duration = time.monotonic() - started
            sender.join()
            assert client.reader.ended

    table = assert_each_answered_once(sent, responses)
    assert {(r.status, r.proxy_error) for r in table.values()} == {(404, "destination_not_found")}
    peak_delta = max(samples, default=baseline) - baseline
    with capsys.disabled():
        print(
            f"\n[flood] {GZIP_FLOOD_COUNT} refused inner requests, {len(decoded)} bytes gzip-coded to {len(body)}, "
            f"client stalled 2 s, python -m proxy: RSS baseline {baseline} KiB, peak delta {peak_delta} KiB "
            f"({peak_delta / 1024:.1f} MiB) over {len(samples)} samples, {duration:.2f} s"
        )
    assert peak_delta < 24 * 1024, f"peak RSS delta {peak_delta / 1024:.1f} MiB"


# --- slowloris inside a stream ---------------------------------------------------------------------


TRICKLED_HEAD = b"GET /ok?trickle HTTP/1.1\r\nRequest-Id: trickle\r\nX-Trickle: " + b"a" * 100


@pytest.mark.parametrize("at_once", [0, TRICKLED_HEAD.index(b"X-Trickle")], ids=["from-first-byte", "after-request-id"])
def test_inner_head_trickled_a_byte_at_a_time_is_cut_off_at_the_header_deadline(
    at_once, scripted, run_proxy, proxy_config
):
    """A head must be complete within limits.header_timeout of its first
    byte, however steadily its bytes keep coming (a deadline, not an
    inactivity timer).  Either the whole head trickles, or its request line
    and Request-Id come at once and the rest trickles."""
    origin = scripted()
    proxy = run_proxy(proxy_config({"app": origin}, limits={"header_timeout": "1s"}))
    sent = {f"before-{i}": f"/ok?before={i}" for i in range(3)}
    sent["in-flight"] = "/slow?ms=2000"
    with MuxClient(proxy.port, timeout=WAIT) as client:
        for request_id in ("before-0", "before-1", "before-2"):
            client.request("GET", sent[request_id], request_id=request_id)
        responses = client.receive(3)
        client.request("GET", sent["in-flight"], request_id="in-flight")
        assert origin.wait_for(lambda: len(origin.requests_for("/slow")) == 1)

        started = time.monotonic()
        client.send(TRICKLED_HEAD[:at_once])
        answered_at = None
        trickled_bytes = 0
        for byte in TRICKLED_HEAD[at_once:]:  # one byte every 200 ms, never the end of the head
            try:
                client.send(bytes([byte]))
            except OSError:
                break
            trickled_bytes += 1
            readable, _, _ = select.select([client.sock], [], [], 0.2)
            if readable:
                answered_at = time.monotonic() - started
                break
        responses += client.receive_until_end(timeout=WAIT)
        ended = client.reader.ended
        closed = client.closed_by_peer or wait_closed(client.sock)

    assert answered_at is not None, "the proxy waited for the whole trickled head"
    assert 0.9 <= answered_at < 2.5, answered_at
    assert trickled_bytes >= 4, "bytes kept arriving until the deadline"
    cut = [r for r in responses if r.status == 408]
    assert len(cut) == 1, [(r.status, r.request_id) for r in responses]
    assert_proxy_made(cut[0], 408, "http_request_error")
    assert_well_formed(cut[0])
    if cut[0].request_id is None and cut[0].content_location is None:
        responses.remove(cut[0])  # untagged: the proxy names no request it answers
    else:
        sent["trickle"] = "/ok?trickle"  # tagged: then with what was really sent
    table = assert_each_answered_once(sent, responses)
    assert all(table[f"before-{i}"].body == b"ok" for i in range(3))
    # The request in flight when the head was cut off still got its answer.
    assert (table["in-flight"].status, table["in-flight"].body) == (200, b"slow")
    assert ended, "the outer response did not end after the 408"
    assert closed, "the connection stayed open after the stream's input was abandoned"
    assert not [r.target for r in origin.requests if "trickle" in r.target]


# --- Expect: 100-continue: the body of a refused request is still a body ------------------------------

def smuggled_request(case: str, pad: int = 0) -> bytes:
    """A complete inner request: sent as a body, it must never be parsed as one."""
    fields = f"Request-Id: smuggled-{case}\r\n" + (f"X-Pad: {'p' * pad}\r\n" if pad else "")
    return f"GET /echo?smuggled-{case} HTTP/1.1\r\n{fields}\r\n".encode()


MAX_INNER_BODY = 256
_EXPECT = [("Expect", "100-continue")]

# case: (method, target, fields, expected (status, Proxy-Status error)); each
# is sent with a body that is (or, chunked, carries) a complete inner request.
EXPECT_REFUSALS = {
    "no-route": ("POST", "/nowhere?expect", _EXPECT, (404, "destination_not_found")),
    "mux-endpoint": ("POST", "/_mux", _EXPECT + [("Content-Type", "application/http")], (400, "http_request_denied")),
    "host-not-served": ("POST", "/echo?host", _EXPECT + [("Host", "evil.example")], (400, "http_request_denied")),
    "dot-segment": ("POST", "/echo/../ok?dots", _EXPECT, (400, "http_request_error")),
    "two-hosts": (
        "POST", "/echo?hosts", _EXPECT + [("Host", "127.0.0.1"), ("Host", "127.0.0.1")], (400, "http_request_error")
    ),
    "body-too-large": ("POST", "/echo?big", _EXPECT, (413, "http_request_error")),
    "head-too-large": ("POST", "/echo?bighead", _EXPECT + [("X-Filler", "f" * 1500)], (431, "http_request_error")),
    "head-method": ("HEAD", "/nowhere?head", _EXPECT, (404, "destination_not_found")),
    "other-expectation": ("POST", "/echo?other", [("Expect", "something-else")], (417, "http_request_error")),
}


def raw_inner(
    method: str, target: str, request_id: str, fields: list[tuple[str, str]], body: bytes, *, chunked: bool
) -> bytes:
    """An inner request with a body, framed by Content-Length or chunked."""
    lines = [f"{method} {target} HTTP/1.1", f"Request-Id: {request_id}"]
    lines += [f"{name}: {value}" for name, value in fields]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        framed = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
    else:
        lines.append(f"Content-Length: {len(body)}")
        framed = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + framed


def test_refused_expect_100_continue_request_body_is_never_parsed_as_a_request(scripted, run_proxy, proxy_config):
    origin = scripted()
    routes = [{"path": p, "origin": "app"} for p in ("/ok", "/echo", "/mirror", "/slow")]
    proxy = run_proxy(
        proxy_config({"app": origin}, routes, mux={"max_inner_body": MAX_INNER_BODY}, limits={"max_head_size": "1KiB"})
    )
    sent: dict[str, str] = {}
    expected: dict[str, tuple[int, str | None]] = {}
    head_ids: set[str] = set()
    pieces = []
    for chunked in (False, True):
        suffix = "-chunked" if chunked else ""
        for case, (method, target, fields, outcome) in EXPECT_REFUSALS.items():
            if method == "HEAD" and chunked:
                continue
            request_id = case + suffix
            sent[request_id] = target
            expected[request_id] = outcome
            if method == "HEAD":
                head_ids.add(request_id)
            body = smuggled_request(request_id, pad=MAX_INNER_BODY if case == "body-too-large" else 0)
            pieces.append(raw_inner(method, target, request_id, fields, body, chunked=chunked))
            ok_id = f"ok-after-{request_id}"
            sent[ok_id] = f"/ok?after={request_id}"
            expected[ok_id] = (200, None)
            pieces.append(inner_request("GET", sent[ok_id], request_id=ok_id))
        # Accepted: the body reaches the origin as a body, once, verbatim.
        accepted = "accepted" + suffix
        sent[accepted] = f"/mirror?{accepted}"
        expected[accepted] = (200, None)
        pieces.append(raw_inner("POST", sent[accepted], accepted, _EXPECT, smuggled_request(accepted), chunked=chunked))

    with MuxClient(proxy.port, timeout=WAIT, head_ids=head_ids) as client:
        for piece in pieces:  # one chunk each: bodies arrive with their heads, "at once"
            client.send(piece)
        client.end()
        responses = client.receive_until_end()

    table = assert_each_answered_once(sent, responses)
    for request_id, (status, error) in expected.items():
        response = table[request_id]
        assert (response.status, response.proxy_error) == (status, error), (request_id, response.status, response.body)
    accepted = ["accepted", "accepted-chunked"]
    assert [table[i].body for i in accepted] == [smuggled_request(i) for i in accepted]
    mirrored = sorted(r.body for r in origin.requests_for("/mirror"))
    assert mirrored == sorted(smuggled_request(i) for i in accepted)
    # The smuggled requests were only ever bodies: the origin never saw one.
    assert not [r.target for r in origin.requests if "smuggled" in r.target]
    assert sorted(r.target for r in origin.requests if r.path != "/mirror") == sorted(
        t for i, t in sent.items() if i.startswith("ok-after-")
    )


# --- an origin body that looks like HTTP -----------------------------------------------------------

#: Response-shaped bytes inside a body: a complete response that claims to
#: answer another request, a bare chunked terminator, a heartbeat-like
#: CRLF, and the start of another response.
FAKE_MESSAGES = (
    b"\r\n\r\n0\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Location: /slow?victim\r\nRequest-Id: victim\r\nContent-Length: 6\r\n\r\nforged"
    b"\r\nHTTP/1.1 204 No Content\r\nRequest-Id: victim\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nRequest-Id: victim\r\n\r\n5\r\nforge\r\n0\r\n\r\n"
)


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_origin_body_that_looks_like_http_never_surfaces_as_a_response(framing, scripted, run_proxy, proxy_config):
    origin = scripted()
    proxy = run_proxy(proxy_config({"app": origin}, mux={"max_inner_body": "1MiB"}))
    bodies = {
        "small": FAKE_MESSAGES,
        # Larger than max_buffered_response: relayed as an inner chunked
        # message, fake messages on both sides of the proxy's chunk
        # boundaries and at the very end.
        "large": (FAKE_MESSAGES + big_body(4093)) * 40 + FAKE_MESSAGES,
        "only-terminator": b"0\r\n\r\n",
    }
    sent = {"victim": "/slow?victim&ms=500"}
    with MuxClient(proxy.port, timeout=WAIT) as client:
        client.request("GET", sent["victim"], request_id="victim")
        for name, body in bodies.items():
            sent[name] = f"/mirror?framing={framing}&body={name}"
            client.request("POST", sent[name], request_id=name, body=body)
        client.request("GET", "/ok?after", request_id="after")
        sent["after"] = "/ok?after"
        client.end()
        responses = client.receive_until_end()

    table = assert_each_answered_once(sent, responses)
    for name, body in bodies.items():
        response = table[name]
        assert (response.status, response.proxy_error) == (200, None), (name, response.status, response.body[:200])
        assert response.body == body, name
    assert (table["victim"].status, table["victim"].body) == (200, b"slow")
    assert table["after"].body == b"ok"


# --- an origin's own correlation fields ---------------------------------------------------------------

TAGGED_CASES = {
    # request id: (method, target)
    "small": ("GET", "/tagged?size=10"),
    "small-chunked": ("GET", "/tagged?size=10&chunked=1"),
    "streamed": ("GET", "/tagged?size=200000"),
    "streamed-chunked": ("GET", "/tagged?size=200000&chunked=1"),
    "empty": ("GET", "/tagged?size=0"),
    "head": ("HEAD", "/tagged?size=123"),
    "no-content": ("GET", "/tagged?status=204"),
    "not-modified": ("GET", "/tagged?status=304"),
    "server-error": ("GET", "/tagged?status=500&size=20"),
    # Interim responses are not passed on (docs/protocol.md §6): one that
    # was would be a second answer to the same request.
    "interim": ("GET", "/tagged?size=10&interim=1"),
    "interims-streamed": ("GET", "/tagged?size=200000&chunked=1&interim=3"),
}


def test_origin_correlation_fields_never_tag_a_response(scripted, run_proxy, proxy_config):
    origin = scripted()
    proxy = run_proxy(proxy_config({"app": origin}))
    sent = {request_id: target for request_id, (_, target) in TAGGED_CASES.items()}
    with MuxClient(proxy.port, timeout=WAIT, head_ids={"head"}) as client:
        for request_id, (method, target) in TAGGED_CASES.items():
            client.request(method, target, request_id=request_id)
        # Without a Request-Id of its own, a response carries none at all:
        # the origin's never stands in for it.
        client.request("GET", "/tagged?size=5&untagged")
        client.end()
        responses = client.receive_until_end()

    untagged = [r for r in responses if r.content_location == "/tagged?size=5&untagged"]
    assert len(untagged) == 1
    assert untagged[0].request_id is None, untagged[0].headers
    assert_well_formed(untagged[0])
    table = assert_each_answered_once(sent, [r for r in responses if r not in untagged])
    for response in [*table.values(), *untagged]:
        names = [name for name, _ in response.headers]
        assert response.header("Origin-Request-Id") is not None, names
        assert response.header("Origin-Content-Location") is not None, names
        assert "set-by-origin" not in (response.request_id or "")
        assert "set-by-origin" not in response.content_location
        assert response.trailer("Request-Id") is None and response.trailer("Content-Location") is None
    assert table["streamed"].chunked and table["streamed"].body == big_body(200000)
    assert table["streamed-chunked"].body == big_body(200000)
    assert table["small"].body == big_body(10) and table["small-chunked"].body == big_body(10)
    assert table["interim"].body == big_body(10) and table["interims-streamed"].body == big_body(200000)
    assert table["head"].body == b"" and table["head"].header("Content-Length") == "123"
    assert [table[i].status for i in ("no-content", "not-modified", "server-error")] == [204, 304, 500]


# --- absolute-form and Host smuggling ----------------------------------------------------------------


def test_absolute_form_and_host_smuggling_never_reach_a_host_no_route_names(scripted, run_proxy, proxy_config):
    named, default, bystander = scripted("named"), scripted("default"), scripted("bystander")
    # "named" serves the host api.internal; "default" any host this stream
    # serves.  The bystander listens on 127.0.0.1 but no route names it.
    routes = [
        {"path": "/", "origin": "named", "host": "api.internal"},
        {"path": "/", "origin": "default"},
    ]
    proxy = run_proxy(proxy_config({"named": named, "default": default}, routes))
    port, b_port = proxy.port, bystander.port
    # request id: (target, extra fields, expected: an origin name or (status, error))
    denied = (400, "http_request_denied")
    bad = (400, "http_request_error")
    cases: dict[str, tuple[str, list[tuple[str, str]], str | tuple[int, str]]] = {
        "abs-outer-host": (f"http://127.0.0.1:{port}/echo?1", [], "default"),
        "abs-named": ("http://api.internal/echo?2", [], "named"),
        "abs-named-port": ("http://api.internal:8443/echo?3", [], "named"),
        "host-named": ("/echo?4", [("Host", "api.internal")], "named"),
        "host-named-case": ("/echo?5", [("Host", "API.Internal")], "named"),
        # The outer host on another port is still the outer host: served by
        # a configured origin, never by whatever listens on that port.
        "abs-bystander-port": (f"http://127.0.0.1:{b_port}/echo?6", [], "default"),
        "host-bystander-port": ("/echo?7", [("Host", f"127.0.0.1:{b_port}")], "default"),
        "origin-form-double-slash": ("//evil.example/echo?8", [], "default"),
        "abs-evil": ("http://evil.example/echo?9", [], denied),
        "abs-evil-https": ("https://evil.example/echo?10", [], denied),
        "abs-evil-upper": ("HTTP://EVIL.EXAMPLE/echo?11", [], denied),
        "abs-localhost-bystander": (f"http://localhost:{b_port}/echo?12", [], denied),
        "abs-ipv6-bystander": (f"http://[::1]:{b_port}/echo?13", [], denied),
        "host-evil": ("/echo?14", [("Host", "evil.example")], denied),
        "host-localhost-bystander": ("/echo?15", [("Host", f"localhost:{b_port}")], denied),
        "host-trailing-dot": ("/echo?16", [("Host", "api.internal.")], denied),
        "host-list": ("/echo?17", [("Host", "api.internal,evil.example")], denied),
        "abs-named-host-evil": ("http://api.internal/echo?18", [("Host", "evil.example")], bad),
        "abs-evil-host-named": ("http://evil.example/echo?19", [("Host", "api.internal")], bad),
        "abs-userinfo-named": ("http://api.internal@evil.example/echo?20", [], bad),
        "abs-userinfo-evil": ("http://evil.example@api.internal/echo?21", [], bad),
        "host-with-path": ("/echo?22", [("Host", "api.internal/evil")], bad),
        "host-with-userinfo": ("/echo?23", [("Host", "evil.example@api.internal")], bad),
        "two-hosts": ("/echo?24", [("Host", "api.internal"), ("Host", "evil.example")], bad),
        "options-asterisk-evil": ("*", [("Host", "evil.example")], denied),
    }
    sent = {request_id: target for request_id, (target, _, _) in cases.items()}
    with MuxClient(proxy.port, timeout=WAIT) as client:
        for request_id, (target, fields, _) in cases.items():
            method = "OPTIONS" if target == "*" else "GET"
            head = f"{method} {target} HTTP/1.1\r\nRequest-Id: {request_id}\r\n"
            head += "".join(f"{name}: {value}\r\n" for name, value in fields)
            client.send(head.encode() + b"\r\n")
        client.end()
        responses = client.receive_until_end()

    table = assert_each_answered_once(sent, responses)
    for request_id, (target, fields, expected) in cases.items():
        response = table[request_id]
        if isinstance(expected, str):
            assert (response.status, response.proxy_error) == (200, None), (request_id, response.body)
            assert response.header("X-Origin") == expected, request_id
        else:
            assert (response.status, response.proxy_error) == expected, (request_id, response.status, response.body)
    for origin in (named, default):
        expected_here = sorted(
            cases[i][0].partition("?")[2] for i in cases if cases[i][2] == origin.name
        )
        assert sorted(r.target.partition("?")[2] for r in origin.requests) == expected_here, origin.name
        for request in origin.requests:  # always origin-form on the wire
            assert request.target.startswith("/"), request.target
    assert bystander.connection_count == 0


# --- header injection: CR, LF and NUL ------------------------------------------------------------------

#: Inner requests that try to split a field or a request line.  Each is
#: sent for the target "/ok?inj" with the Request-Id "x".
INJECTIONS = {
    "cr-in-request-id": b"GET /ok?inj HTTP/1.1\r\nRequest-Id: x\rContent-Location: /victim\r\n\r\n",
    "lf-in-request-id": b"GET /ok?inj HTTP/1.1\r\nRequest-Id: x\nHTTP/1.1 200 OK\r\n\r\n",
    "nul-in-request-id": b"GET /ok?inj HTTP/1.1\r\nRequest-Id: x\x00y\r\n\r\n",
    "crlf-response-in-request-id": (
        b"GET /ok?inj HTTP/1.1\r\nRequest-Id: x\r\r\nHTTP/1.1 200 OK\r\nRequest-Id: victim\r\n\r\n"
    ),
    "cr-in-target": b"GET /ok?inj\rRequest-Id: victim HTTP/1.1\r\nRequest-Id: x\r\n\r\n",
    "lf-in-target": b"GET /ok?inj\nHTTP/1.1 200 OK HTTP/1.1\r\nRequest-Id: x\r\n\r\n",
    "nul-in-target": b"GET /ok?inj\x00 HTTP/1.1\r\nRequest-Id: x\r\n\r\n",
    "ctl-in-target": b"GET /ok?inj\x0c HTTP/1.1\r\nRequest-Id: x\r\n\r\n",
    "cr-in-field-name": b"GET /ok?inj HTTP/1.1\r\nRequest-Id: x\r\nX\rY: z\r\n\r\n",
    "nul-in-other-field": b"GET /ok?inj HTTP/1.1\r\nRequest-Id: x\r\nX-Other: a\x00b\r\n\r\n",
}


@pytest.mark.parametrize("case", list(INJECTIONS))
def test_cr_lf_nul_injection_is_refused_and_the_stream_stays_framed(case, scripted, run_proxy, proxy_config):
    origin = scripted()
    proxy = run_proxy(proxy_config({"app": origin}))
    sent = {"answered": "/ok?answered", "slow-1": "/slow?ms=300&n=1", "slow-2": "/slow?ms=400&n=2"}
    with MuxClient(proxy.port, timeout=WAIT) as client:
        client.request("GET", sent["answered"], request_id="answered")
        responses = client.receive(1)
        client.request("GET", sent["slow-1"], request_id="slow-1")
        client.request("GET", sent["slow-2"], request_id="slow-2")
        assert origin.wait_for(lambda: len(origin.requests_for("/slow")) == 2)
        # The injection and, in the same chunk, a request that must never run.
        client.send(INJECTIONS[case] + inner_request("GET", "/ok?after", request_id="after"))
        responses += client.receive_until_end()
        ended = client.reader.ended
        closed = client.closed_by_peer or wait_closed(client.sock)

    refused = [r for r in responses if r.request_id not in sent]
    assert len(refused) == 1, [(r.status, r.request_id, r.content_location) for r in responses]
    assert_well_formed(refused[0])
    assert refused[0].status == 400 and refused[0].proxy_error == "http_request_error", refused[0].headers
    # Tagged at most with what was complete before the break (the target
    # once the request line has ended, a field once the next line began):
    # never with a piece of the injection.
    assert refused[0].content_location in (None, "/ok?inj"), refused[0].headers
    assert refused[0].request_id in (None, "x"), refused[0].headers
    table = assert_each_answered_once(sent, [r for r in responses if r is not refused[0]])
    assert [table[i].body for i in sent] == [b"ok", b"slow", b"slow"]
    assert ended and closed, "a framing error ends the stream once the requests in flight are answered"
    assert sorted(r.target for r in origin.requests) == sorted(sent.values())


def test_client_correlation_fields_inside_an_inner_request_never_retag_it(scripted, run_proxy, proxy_config):
    origin = scripted()
    proxy = run_proxy(proxy_config({"app": origin}))
    sent = {"mine": "/echo?own-fields", "plain": "/ok?plain"}
    with MuxClient(proxy.port, timeout=WAIT) as client:
        client.request("GET", sent["mine"], request_id="mine", headers={"Content-Location": "/victim"})
        client.request("GET", sent["plain"], request_id="plain")
        client.end()
        table = assert_each_answered_once(sent, client.receive_until_end())
    assert echoed(table["mine"])["fields"]["request-id"] == "mine"


# --- response mix-ups on pooled origin connections --------------------------------------------------


# case: (method, target, what the stray request itself may get: its own
# (status, body), or a proxy-made 502 when the proxy refuses the response).
STRAY_RESPONSES = {
    # A second complete response in the same write as the first.
    "extra": ("GET", "/extra", {(200, b"ok")}),
    # A second response in a write of its own, at once or 200 ms later,
    # while the connection sits idle in the pool.
    "late-0ms": ("GET", "/late?ms=0", {(200, b"ok")}),
    "late-200ms": ("GET", "/late?ms=200", {(200, b"ok")}),
    # A body after a response that has none: for the proxy these bytes are
    # the start of the next response.
    "head-with-body": ("HEAD", "/bodiless-with-body?status=200", {(200, b"")}),
    "204-with-body": ("GET", "/bodiless-with-body?status=204", {(204, b""), (502, None)}),
    "304-with-body": ("GET", "/bodiless-with-body?status=304", {(304, b"")}),
}


@pytest.mark.parametrize("case", list(STRAY_RESPONSES))
def test_stray_origin_response_never_reaches_a_later_request(case, scripted, run_proxy, proxy_config, mux_clients):
    """One origin connection at most (max_connections = 1), so every later
    request, from the same client or another one, would reuse the connection
    the stray response sits on if the proxy kept it."""
    method, path, stray_outcomes = STRAY_RESPONSES[case]
    origin = scripted()
    proxy = run_proxy(proxy_config({"app": origin}, origin_options={"app": {"max_connections": 1}}))
    stray_ids = {f"stray-{n}" for n in range(3)}
    first = mux_clients(proxy.port, head_ids=stray_ids if method == "HEAD" else set())
    second = mux_clients(proxy.port)
    sent: dict[str, dict[str, str]] = {"first": {}, "second": {}}
    got: dict[str, list[InnerResponse]] = {"first": [], "second": []}
    for round_number in range(3):
        target = f"{path}&round={round_number}" if "?" in path else f"{path}?round={round_number}"
        sent["first"][f"stray-{round_number}"] = target
        first.request(method, target, request_id=f"stray-{round_number}")
        got["first"] += first.receive(1)
        if path.startswith("/late"):
            # The stray response has left the origin while its connection
            # sits idle in the pool; give the proxy time to read it.
            assert origin.wait_for(lambda n=round_number + 1: origin.late_responses == n)
            time.sleep(0.1)
        for name, client in (("second", second), ("first", first)):
            request_id = f"{name}-{round_number}"
            target = f"/echo-after?ms=0&secret={request_id}"
            sent[name][request_id] = target
            client.request("GET", target, request_id=request_id, headers={"X-Secret": request_id})
            got[name] += client.receive(1)

    for name in ("first", "second"):
        table = assert_each_answered_once(sent[name], got[name])
        for request_id, response in table.items():
            assert response.header("X-Late") is None and response.header("X-Smuggled") is None, request_id
            assert response.body not in (b"late response", b"smuggled"), request_id
            if request_id in stray_ids:
                outcome = (response.status, response.body if response.proxy_error is None else None)
                assert outcome in stray_outcomes, (request_id, response.status, response.headers)
            else:
                assert response.status == 200, (request_id, response.body)
                assert echoed(response)["fields"]["x-secret"] == request_id
    # Every stray response cost its connection, which was never read from
    # again: round k's stray request reused the connection of round k-1's
    # healthy ones, and round k's healthy requests needed a new one.
    assert [r.connection for r in origin.requests if r.path != "/echo-after"] == [1, 2, 3]
    assert sorted(r.connection for r in origin.requests if r.path == "/echo-after") == [2, 2, 3, 3, 4, 4]
    assert origin.connection_count == 4


def test_streams_interleaving_on_pooled_connections_never_swap_responses(
    scripted, run_proxy, proxy_config, mux_clients
):
    """Three streams send at once to one origin over four pooled connections,
    with faults mixed in; each request carries its stream's secret, which
    the origin echoes: every response lands on the stream that asked."""
    origin = scripted()
    proxy = run_proxy(proxy_config({"app": origin}, origin_options={"app": {"max_connections": 4}}))
    names = ["alpha", "beta", "gamma"]
    faults = ["/extra", "/cl-te", "/reset", "/garbage"]
    plans: dict[str, dict[str, str]] = {}
    senders = {}
    clients = {}
    for name in names:
        client = clients[name] = mux_clients(proxy.port)
        plan = plans[name] = {}
        pieces = []
        for i in range(150):
            request_id = f"{name}-{i}"
            if i % 15 == 7:
                target = f"{faults[(i // 15) % len(faults)]}?{name}={i}"
                pieces.append(inner_request("GET", target, request_id=request_id))
            else:
                target = f"/echo-after?ms={i % 4 * 3}&{name}={i}"
                pieces.append(inner_request("GET", target, request_id=request_id, headers={"X-Secret": f"{name}:{i}"}))
            plan[request_id] = target
        senders[name] = (client, pieces)
    started = [BackgroundSend(client, pieces) for client, pieces in senders.values()]
    results = {name: clients[name].receive_until_end(timeout=60) for name in names}
    for sender in started:
        sender.join()

    for name in names:
        table = assert_each_answered_once(plans[name], results[name])
        for request_id, response in table.items():
            target = plans[name][request_id]
            assert response.header("X-Smuggled") is None, request_id
            if target.startswith("/echo-after"):
                assert response.status == 200, (request_id, response.status, response.body[:200])
                seen = echoed(response)
                assert seen["target"] == target, (request_id, seen["target"])
                assert seen["fields"]["x-secret"] == f"{name}:{request_id.rpartition('-')[2]}"
                assert seen["fields"]["request-id"] == request_id
            elif target.startswith("/extra"):
                assert (response.status, response.body) == (200, b"ok"), request_id
            else:
                assert response.status == 502 and response.proxy_error is not None, (request_id, response.status)
