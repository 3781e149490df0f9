"""Mux streams end to end: clients -> POST /_mux -> muxproxy -> nginx and scripted origins.

The client side is tests.support.harness.MuxClient (a blocking socket that
sends inner requests as chunks of one chunked POST), curl for the duplex and
batch cases, and raw sockets for the outer errors.  Every inner response is
read with tests.support.muxwire, which is independent of the proxy's code;
responses are matched to requests by Content-Location and Request-Id only,
never by their position (they leave in completion order).

The scripted `timed` origin answers after a delay given in the query string
(`?delay=0.5`) and says in its body which request it answered, so timing
and correlation can be checked against a real, concurrent origin.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import select
import socket
import subprocess
import sys
import threading
import time
import zlib
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.garbage import CyclicGarbage
from tests.support.harness import MuxClient, free_port, inner_request
from tests.support.muxwire import InnerResponse, MuxReader, OuterReader
from tests.support.origins import DIRECTORY_PAGE, deterministic_bytes

CURL = "/usr/bin/curl"
TIMEOUT = 20.0


# --- origins and proxies -------------------------------------------------------------------


def timed_body(target: str, request_id: str | None) -> bytes:
    return f"target={target}\nrequest_id={request_id}\n".encode()


@pytest.fixture
def timed_origin(asyncio_origin):
    """Answers `/slow...?delay=S` after S seconds with a body naming the request."""

    async def app(request):
        query = parse_qs(urlsplit(request.target).query)
        await asyncio.sleep(float(query.get("delay", ["0"])[0]))
        headers = {"Content-Type": "text/plain"}
        if "origin_tags" in query:
            # An origin's own correlation fields must never pass for the proxy's.
            headers.update({"Request-Id": "set-by-origin", "Content-Location": "/set-by-origin"})
        return asyncio_origin.reply(200, timed_body(request.target, request.header("request-id")), headers)

    return asyncio_origin(app)


#: A route read timeout well above any delay the tests ask for, and well below
#: the 60 s default, so a stuck exchange shows up as a 504 rather than a hang.
READ_TIMEOUT = "10s"


def mux_config(proxy_config, nginx, timed_origin=None, **sections) -> str:
    origins = {"nginx": nginx}
    routes = [{"path": "/", "origin": "nginx", "read_timeout": READ_TIMEOUT}]
    if timed_origin is not None:
        origins["timed"] = timed_origin
        routes.insert(0, {"path": "/slow", "origin": "timed", "read_timeout": READ_TIMEOUT})
    return proxy_config(origins, routes, **sections)


@pytest.fixture
def mux_proxy(nginx, timed_origin, run_proxy, proxy_config):
    """nginx at "/", the timed origin at "/slow", default mux settings."""
    return run_proxy(mux_config(proxy_config, nginx, timed_origin))


def by_request_id(responses: list[InnerResponse]) -> dict[str, InnerResponse]:
    table = {}
    for response in responses:
        assert response.request_id is not None, f"untagged response {response}"
        assert response.request_id not in table, f"two responses for {response.request_id}"
        table[response.request_id] = response
    return table


def headers_seen_by_nginx(body: bytes) -> dict[str, str]:
    return dict(line.partition("=")[::2] for line in body.decode("latin-1").splitlines())


def raw_outer(port: int, head: bytes, body: bytes = b"") -> tuple[InnerResponse, bytes, bool]:
    """Send an outer request on a fresh socket: (response head, bytes after it, closed?)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(head + body)
        data = b""
        closed = False
        deadline = time.monotonic() + TIMEOUT
        while True:
            if b"\r\n\r\n" in data:
                response = MuxReader(lambda r: False).feed(data)
                if response:
                    break
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            piece = sock.recv(65536)
            if not piece:
                closed = True
                break
            data += piece
        responses = MuxReader(lambda r: False).feed(data)
        assert responses, f"no complete response in {data!r}"
        head_end = data.find(b"\r\n\r\n") + 4
        rest = data[head_end + len(responses[0].body):]
        if not closed:
            # Does the proxy close the connection after this answer?
            sock.settimeout(0.5)
            try:
                closed = sock.recv(65536) == b""
            except socket.timeout:
                closed = False
            except ConnectionResetError:
                closed = True
        return responses[0], rest, closed


def _closed_soon(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


# --- many requests, completion order, correlation ------------------------------------------


@pytest.mark.parametrize("use_gzip", [False, True], ids=["identity", "gzip"])
def test_thousand_inner_requests_over_one_connection(nginx, mux_proxy, use_gzip):
    files = ["100b.bin", "10k.bin", "index.html", "100b.bin", "10k.bin", "100k.bin"]
    expected: dict[str, tuple[str, bytes | None]] = {}
    requests = []
    for i in range(1000):
        if i % 7 == 3:
            target = f"/headers?i={i}"
            body = None
        else:
            name = files[i % len(files)]
            target = f"/{name}?i={i}"
            body = nginx.file(name)
        request_id = f"req-{i}"
        expected[request_id] = (target, body)
        requests.append(inner_request("GET", target, request_id=request_id))

    with MuxClient(mux_proxy.port, gzip=use_gzip, timeout=TIMEOUT) as client:
        # Send from a thread while this one reads, as a real duplex client does.
        def send_all() -> None:
            for start in range(0, len(requests), 25):
                client.send(b"".join(requests[start : start + 25]))
            client.end()

        sender = threading.Thread(target=send_all)
        sender.start()
        try:
            responses = client.receive_until_end(timeout=60)
        finally:
            sender.join(TIMEOUT)
        assert client.outer_head.status == 200
        assert client.outer_head.header("Content-Type") == "application/http"
        assert client.reader.ended

    assert len(responses) == 1000
    table = by_request_id(responses)
    assert set(table) == set(expected)
    for request_id, (target, body) in expected.items():
        response = table[request_id]
        assert response.status == 200, (request_id, response.status, response.body[:200])
        assert response.content_location == target
        if body is None:
            seen = headers_seen_by_nginx(response.body)
            assert seen["request_id"] == request_id
            assert seen["uri"] == target
        else:
            assert response.body == body, request_id
            # (Which framing each response got depends on timing here; the
            # framing rules have deterministic tests of their own below.)
    # One stream, one client connection: the origin side was pooled too.
    assert mux_proxy.pool_counters()["nginx"]["active"] == 0


def test_fast_responses_overtake_a_slow_one(nginx, mux_proxy):
    with MuxClient(mux_proxy.port, timeout=TIMEOUT) as client:
        started = time.monotonic()
        client.request("GET", "/slow?delay=1", request_id="slow")
        client.send(b"".join(inner_request("GET", f"/100b.bin?n={n}", request_id=f"fast-{n}") for n in range(50)))
        responses = client.receive(51, timeout=TIMEOUT)
        elapsed = time.monotonic() - started
        client.end()
        assert client.receive_until_end() == []

    assert responses[-1].request_id == "slow"
    assert responses[-1].body == timed_body("/slow?delay=1", "slow")
    assert {r.request_id for r in responses[:50]} == {f"fast-{n}" for n in range(50)}
    assert all(r.body == nginx.file("100b.bin") for r in responses[:50])
    assert elapsed >= 1.0
    assert elapsed < 1.0 + 5.0  # the slow one did not hold anything else up either


def test_same_target_in_flight_twice_told_apart_by_request_id(mux_proxy):
    target = "/slow?delay=0.5"
    with MuxClient(mux_proxy.port, timeout=TIMEOUT) as client:
        client.request("GET", target, request_id="first")
        client.request("GET", target, request_id="second")
        client.end()
        responses = client.receive_until_end()
    assert len(responses) == 2
    table = by_request_id(responses)
    for request_id in ("first", "second"):
        assert table[request_id].content_location == target
        assert table[request_id].body == timed_body(target, request_id)


def test_origin_correlation_fields_are_renamed(mux_proxy):
    target = "/slow?origin_tags=1"
    with MuxClient(mux_proxy.port, timeout=TIMEOUT) as client:
        client.request("GET", target, request_id="mine")
        response = client.receive(1)[0]
    assert response.content_location == target
    assert response.request_id == "mine"
    assert response.header("Origin-Request-Id") == "set-by-origin"
    assert response.header("Origin-Content-Location") == "/set-by-origin"
    assert [name for name, _ in response.headers].count("Request-Id") == 1


def test_head_and_get_to_the_same_target(nginx, mux_proxy):
    with MuxClient(mux_proxy.port, timeout=TIMEOUT) as client:
        client.request("HEAD", "/10k.bin", request_id="head")
        client.request("GET", "/10k.bin", request_id="get")
        client.request("HEAD", "/1m.bin", request_id="big-head")
        client.end()
        responses = client.receive_until_end()
    table = by_request_id(responses)
    assert set(table) == {"head", "get", "big-head"}
    assert table["head"].status == 200
    assert table["head"].content_location == "/10k.bin"
    assert table["head"].header("Content-Length") == str(10 * 1024)
    assert table["head"].body == b""
    assert table["big-head"].header("Content-Length") == str(1024 * 1024)
    assert table["big-head"].header("Transfer-Encoding") is None
    assert table["get"].body == nginx.file("10k.bin")


def test_requests_without_request_id_are_tagged_by_content_location(nginx, mux_proxy):
    with MuxClient(mux_proxy.port, timeout=TIMEOUT) as client:
        client.request("GET", "/100b.bin?a")
        client.request("GET", "/10k.bin?b")
        client.end()
        responses = client.receive_until_end()
    table = {r.content_location: r for r in responses}
    assert set(table) == {"/100b.bin?a", "/10k.bin?b"}
    assert all(r.request_id is None for r in responses)
    assert table["/100b.bin?a"].body == nginx.file("100b.bin")
    assert table["/10k.bin?b"].body == nginx.file("10k.bin")


def test_more_requests_than_max_in_flight_are_queued_not_refused(nginx, timed_origin, run_proxy, proxy_config):
    proxy = run_proxy(mux_config(proxy_config, nginx, timed_origin, mux={"max_in_flight": 4}))
    with MuxClient(proxy.port, timeout=TIMEOUT) as client:
        client.send(b"".join(inner_request("GET", f"/slow?delay=0.2&n={n}", request_id=f"q{n}") for n in range(20)))
        client.end()
        table = by_request_id(client.receive_until_end(timeout=30))
    assert set(table) == {f"q{n}" for n in range(20)}
    for n in range(20):
        assert table[f"q{n}"].status == 200
        assert table[f"q{n}"].body == timed_body(f"/slow?delay=0.2&n={n}", f"q{n}")
    # At most 4 were ever at the origin at once.
    assert timed_origin.connections <= 4


def test_several_streams_at_once_on_separate_connections(nginx, mux_proxy):
    clients = [MuxClient(mux_proxy.port, timeout=TIMEOUT) for _ in range(8)]
    try:
        for k, client in enumerate(clients):
            client.send(b"".join(inner_request("GET", f"/10k.bin?c={k}&n={n}", request_id=f"{k}-{n}") for n in range(20)))
            client.end()
        for k, client in enumerate(clients):
            table = by_request_id(client.receive_until_end())
            assert set(table) == {f"{k}-{n}" for n in range(20)}
            assert all(r.body == nginx.file("10k.bin") for r in table.values())
    finally:
        for client in clients:
            client.close()


# --- curl as a real client -----------------------------------------------------------------


class PipeReader:
    """Reads inner responses from a child's stdout (the decoded outer body)."""

    def __init__(self, stream) -> None:
        self.fd = stream.fileno()
        self.reader = MuxReader()
        self.eof = False

    def receive(self, count: int, timeout: float = TIMEOUT) -> list[InnerResponse]:
        got: list[InnerResponse] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and not self.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"got {len(got)} of {count} inner responses from curl")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if not ready:
                continue
            data = os.read(self.fd, 65536)
            if not data:
                self.eof = True
                break
            got.extend(self.reader.feed(data))
        return got


def test_curl_duplex_stream(nginx, mux_proxy, tmp_path):
    # "-T ." rather than "-T -": with "-" curl 7.88 blocks in read(stdin) and
    # reads no server output until more input (or EOF) arrives; "." reads
    # stdin in non-blocking mode "to allow reading server output while stdin
    # is being uploaded" (curl(1), --upload-file).  Both send the same chunked
    # POST; only "." lets curl act as a duplex client.  (curl 7.88 prints its
    # progress meter for "-T ." despite -s, hence stderr goes to a file.)
    stderr_path = tmp_path / "curl.stderr"
    with open(stderr_path, "wb") as stderr:
        curl = subprocess.Popen(
            [CURL, "-sS", "-N", "-T", ".", "-X", "POST", "-H", "Content-Type: application/http",
             f"http://127.0.0.1:{mux_proxy.port}/_mux"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        reader = PipeReader(curl.stdout)
        first_sent = time.monotonic()
        curl.stdin.write(inner_request("GET", "/100b.bin", request_id="one"))
        curl.stdin.flush()
        first = reader.receive(1)
        # The first answer came back while curl's request body is still open
        # and before the second request exists: a true duplex stream.
        assert [r.request_id for r in first] == ["one"]
        assert first[0].body == nginx.file("100b.bin")
        assert curl.poll() is None

        time.sleep(max(0.0, first_sent + 0.5 - time.monotonic()))
        curl.stdin.write(inner_request("GET", "/10k.bin", request_id="two"))
        curl.stdin.flush()
        second = reader.receive(1)
        assert [r.request_id for r in second] == ["two"]
        assert second[0].body == nginx.file("10k.bin")

        curl.stdin.close()
        assert reader.receive(1) == []  # the outer response ended, nothing more
        assert reader.eof
        assert curl.wait(TIMEOUT) == 0, stderr_path.read_text(errors="replace")
    finally:
        if curl.poll() is None:
            curl.kill()
            curl.wait()
        curl.stdout.close()
        if not curl.stdin.closed:
            curl.stdin.close()


def test_curl_batch_with_content_length(nginx, mux_proxy, tmp_path):
    names = ["100b.bin", "10k.bin", "100k.bin", "index.html", "1m.bin"]
    batch = b"".join(inner_request("GET", f"/{name}?batch", request_id=name) for name in names)
    path = tmp_path / "batch.http"
    path.write_bytes(batch)

    result = subprocess.run(
        [CURL, "-sS", "--dump-header", "/dev/stderr", "--data-binary", f"@{path}",
         "-H", "Content-Type: application/http", f"http://127.0.0.1:{mux_proxy.port}/_mux"],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"200 OK" in result.stderr.split(b"\r\n", 1)[0]
    assert b"Transfer-Encoding: chunked" in result.stderr
    reader = MuxReader()
    responses = reader.feed(result.stdout)
    assert reader.buffer == b""
    table = by_request_id(responses)
    assert set(table) == set(names)
    for name in names:
        assert table[name].content_location == f"/{name}?batch"
        assert table[name].body == nginx.file(name)


# --- gzip ----------------------------------------------------------------------------------


def test_gzip_response_each_inner_response_decodable_on_arrival(nginx, mux_proxy):
    with MuxClient(mux_proxy.port, gzip=True, timeout=TIMEOUT) as client:
        client.request("GET", "/10k.bin", request_id="a")
        first = client.receive(1)
        assert client.outer_head.header("Content-Encoding") == "gzip"
        assert "Accept-Encoding" in (client.outer_head.header("Vary") or "")
        assert [r.request_id for r in first] == ["a"]
        assert first[0].body == nginx.file("10k.bin")

        client.request("GET", "/100k.bin", request_id="b")
        second = client.receive(1)
        assert [r.request_id for r in second] == ["b"]
        assert second[0].body == nginx.file("100k.bin")

        client.end()
        assert client.receive_until_end() == []
        assert client.reader.ended
        # The gzip member was finished properly at the end of the stream.
        assert client.reader.mux._inflater.eof
        assert client.reader.mux._inflater.unused_data == b""


def test_gzip_response_streamed_with_a_zlib_decompressobj(nginx, mux_proxy):
    """The same check on a raw socket, with our own de-chunking and decompressobj:
    the first inner response is decoded before the second request is sent."""
    with socket.create_connection(("127.0.0.1", mux_proxy.port), timeout=TIMEOUT) as sock:
        sock.sendall(
            b"POST /_mux HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/http\r\n"
            b"Accept-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        stream = GzipOuterStream(sock)
        for n, name in enumerate(["100b.bin", "10k.bin", "100k.bin"]):
            request = inner_request("GET", f"/{name}", request_id=f"z{n}")
            sock.sendall(b"%x\r\n%b\r\n" % (len(request), request))
            responses = stream.receive(1)
            assert stream.head.header("Content-Encoding") == "gzip"
            assert [r.request_id for r in responses] == [f"z{n}"]
            assert responses[0].body == nginx.file(name)
        sock.sendall(b"0\r\n\r\n")
        assert stream.receive(1) == []
        assert stream.ended
        assert stream.inflater.eof


class GzipOuterStream:
    """Reads a gzip-coded chunked outer response from a socket by hand."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.raw = b""
        self.head: InnerResponse | None = None
        self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.mux = MuxReader()
        self.ended = False

    def receive(self, count: int) -> list[InnerResponse]:
        got: list[InnerResponse] = []
        deadline = time.monotonic() + TIMEOUT
        while len(got) < count and not self.ended:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            data = self.sock.recv(65536)
            assert data, "connection closed inside the outer response"
            self.raw += data
            if self.head is None:
                end = self.raw.find(b"\r\n\r\n")
                if end < 0:
                    continue
                self.head = MuxReader(lambda r: True).feed(self.raw[: end + 4])[0]
                self.raw = self.raw[end + 4 :]
            while not self.ended:
                line_end = self.raw.find(b"\r\n")
                if line_end < 0:
                    break
                size = int(self.raw[:line_end], 16)
                if size == 0:
                    self.ended = True
                    break
                if len(self.raw) < line_end + 2 + size + 2:
                    break
                payload = self.raw[line_end + 2 : line_end + 2 + size]
                self.raw = self.raw[line_end + 4 + size :]
                got += self.mux.feed(self.inflater.decompress(payload))
        return got


def test_gzip_request_body_duplex(nginx, mux_proxy):
    deflater = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    with MuxClient(mux_proxy.port, headers={"Content-Encoding": "gzip"}, timeout=TIMEOUT) as client:
        client.send(deflater.compress(inner_request("GET", "/100b.bin", request_id="g1")) + deflater.flush(zlib.Z_SYNC_FLUSH))
        first = client.receive(1)
        assert [r.request_id for r in first] == ["g1"]
        assert first[0].body == nginx.file("100b.bin")
        client.send(deflater.compress(inner_request("GET", "/10k.bin", request_id="g2")) + deflater.flush(zlib.Z_FINISH))
        client.end()
        rest = client.receive_until_end()
    assert [r.request_id for r in rest] == ["g2"]
    assert rest[0].body == nginx.file("10k.bin")


def test_gzip_request_body_batch_with_content_length(nginx, mux_proxy):
    body = gzip.compress(
        inner_request("GET", "/100b.bin", request_id="b1") + inner_request("GET", "/headers", request_id="b2")
    )
    head = (
        b"POST /_mux HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/http\r\n"
        b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", mux_proxy.port), timeout=TIMEOUT) as sock:
        sock.sendall(head + body)
        outer = OuterReader(MuxReader())
        responses = []
        while not outer.ended:
            data = sock.recv(65536)
            assert data, "connection closed before the outer response ended"
            responses += outer.feed(data)
    table = by_request_id(responses)
    assert table["b1"].body == nginx.file("100b.bin")
    assert headers_seen_by_nginx(table["b2"].body)["request_id"] == "b2"


def test_gzip_with_a_large_streamed_response(nginx, mux_proxy):
    with MuxClient(mux_proxy.port, gzip=True, timeout=TIMEOUT) as client:
        client.request("GET", "/1m.bin", request_id="big")
        client.request("GET", "/100b.bin", request_id="small")
        client.end()
        table = by_request_id(client.receive_until_end(timeout=30))
    assert table["big"].chunked
    assert table["big"].body == nginx.file("1m.bin")
    assert table["small"].body == nginx.file("100b.bin")


def test_heartbeat_on_a_gzip_stream(nginx, run_proxy, proxy_config):
    proxy = run_proxy(mux_config(proxy_config, nginx, mux={"heartbeat": "200ms"}))
    with MuxClient(proxy.port, gzip=True, timeout=TIMEOUT) as client:
        deadline = time.monotonic() + TIMEOUT
        while client.reader.mux.heartbeats < 2:
            assert time.monotonic() < deadline, "no heartbeat on an idle gzip stream"
            client.sock.settimeout(deadline - time.monotonic())
            data = client.sock.recv(65536)
            assert data, "stream closed while idle"
            assert client.reader.feed(data) == []
        client.request("GET", "/100b.bin", request_id="hb")
        assert client.receive(1)[0].body == nginx.file("100b.bin")
        client.end()
        assert client.receive_until_end() == []
        assert client.reader.mux._inflater.eof


def test_invalid_gzip_request_body_ends_the_stream(nginx, mux_proxy):
    deflater = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    with MuxClient(mux_proxy.port, headers={"Content-Encoding": "gzip"}, timeout=TIMEOUT) as client:
        client.send(deflater.compress(inner_request("GET", "/100b.bin", request_id="ok")) + deflater.flush(zlib.Z_SYNC_FLUSH))
        client.send(b"this is not deflate data at all")
        responses = client.receive_until_end()
        assert client.reader.ended
        assert client.closed_by_peer or _closed_soon(client.sock)
    statuses = {r.request_id: r.status for r in responses}
    assert statuses.get("ok") == 200
    assert any(r.status == 400 and "error=http_request_error" in r.header("Proxy-Status") for r in responses)


# --- large responses, buffering, backpressure ----------------------------------------------


def test_large_response_is_inner_chunked_and_never_interleaved(nginx, mux_proxy):
    with MuxClient(mux_proxy.port, timeout=TIMEOUT) as client:
        client.request("GET", "/1m.bin", request_id="big")
        client.request("GET", "/100b.bin", request_id="small-1")
        client.request("GET", "/slow?delay=0.05", request_id="small-2")
        client.request("GET", "/1m.bin?again", request_id="big-2")
        client.request("GET", "/10k.bin", request_id="small-3")
        client.end()
        responses = client.receive_until_end(timeout=30)
    # MuxReader is strict: a response spliced into another one's chunked body
    # would break its framing or corrupt a body compared below.
    table = by_request_id(responses)
    assert set(table) == {"big", "small-1", "small-2", "big-2", "small-3"}
    for big in ("big", "big-2"):
        assert table[big].chunked
        assert table[big].header("Transfer-Encoding") == "chunked"
        assert table[big].header("Content-Length") is None
        assert table[big].body == nginx.file("1m.bin")
    assert not table["small-1"].chunked
    assert table["small-1"].body == nginx.file("100b.bin")
    assert table["small-2"].body == timed_body("/slow?delay=0.05", "small-2")
    assert table["small-3"].body == nginx.file("10k.bin")


def test_many_whole_responses_of_large_and_small_bodies_arrive_intact(nginx, mux_proxy):
    """Dozens of whole responses in flight at once, bodies over and under the
    size from which they are written uncopied (one writev of many pieces,
    serialize.UNCOPIED_PIECE): every byte arrives, in its own response."""
    names = ["10k.bin", "100b.bin", "10k.bin", "index.html", "100k.bin"] * 12
    with MuxClient(mux_proxy.port, timeout=TIMEOUT) as client:
        client.send(b"".join(inner_request("GET", f"/{name}?n={n}", request_id=f"m{n}") for n, name in enumerate(names)))
        client.end()
        table = by_request_id(client.receive_until_end(timeout=30))
    assert set(table) == {f"m{n}" for n in range(len(names))}
    for n, name in enumerate(names):
        assert table[f"m{n}"].status == 200
        assert table[f"m{n}"].body == nginx.file(name), f"m{n}"
        assert table[f"m{n}"].chunked == (name == "100k.bin"), f"m{n}"  # over max_buffered_response (64 KiB)


def test_response_over_max_buffered_is_chunked_at_a_lower_limit(nginx, run_proxy, proxy_config):
    proxy = run_proxy(mux_config(proxy_config, nginx, mux={"max_buffered_response": "4KiB"}))
    with MuxClient(proxy.port, timeout=TIMEOUT) as client:
        client.request("GET", "/10k.bin", request_id="over")
        client.request("GET", "/100b.bin", request_id="under")
        client.end()
        table = by_request_id(client.receive_until_end())
    assert table["over"].chunked
    assert table["over"].body == nginx.file("10k.bin")
    assert not table["under"].chunked


@pytest.mark.parametrize(
    "mux_settings",
    [{"max_stream_buffer": "32KiB"}, {"max_buffered_response": 0}],
    ids=["small-stream-buffer", "always-stream"],
)
def test_responses_stay_intact_when_buffering_is_tight(nginx, run_proxy, proxy_config, mux_settings):
    proxy = run_proxy(mux_config(proxy_config, nginx, mux=mux_settings))
    names = ["10k.bin", "100b.bin", "100k.bin", "index.html"] * 8
    with MuxClient(proxy.port, timeout=TIMEOUT) as client:
        client.send(b"".join(inner_request("GET", f"/{name}?n={n}", request_id=f"t{n}") for n, name in enumerate(names)))
        client.request("GET", "/nocontent", request_id="nc")
        client.end()
        table = by_request_id(client.receive_until_end(timeout=30))
    for n, name in enumerate(names):
        assert table[f"t{n}"].body == nginx.file(name), f"t{n}"
    assert table["nc"].status == 204
    if mux_settings.get("max_buffered_response") == 0:
        assert all(table[f"t{n}"].chunked for n in range(len(names)))


def test_slow_reader_gets_every_large_response_intact(nginx, mux_proxy):
    """A client that does not read for a while: the proxy pauses the origins
    (backpressure) instead of buffering, and nothing is lost or reordered."""
    with MuxClient(mux_proxy.port, timeout=TIMEOUT) as client:
        client.send(b"".join(inner_request("GET", f"/1m.bin?n={n}", request_id=f"big-{n}") for n in range(8)))
        client.send(b"".join(inner_request("GET", f"/10k.bin?n={n}", request_id=f"small-{n}") for n in range(8)))
        client.end()
        time.sleep(1.0)  # not an assertion: lets every buffer on the way fill up
        table = by_request_id(client.receive_until_end(timeout=60))
    assert set(table) == {f"big-{n}" for n in range(8)} | {f"small-{n}" for n in range(8)}
    for n in range(8):
        assert table[f"big-{n}"].body == nginx.file("1m.bin")
        assert table[f"small-{n}"].body == nginx.file("10k.bin")


HELD_BODY = deterministic_bytes(200_000, "held")
BURST_BODY = deterministic_bytes(70_000, "burst")  # over 64 KiB: a streamed response


@pytest.fixture
def held_stream(asyncio_origin, run_proxy, proxy_config):
    """A stream whose outer side is owned by a streaming response (/held, which
    pauses 1 s mid-body) while /burst (over 64 KiB, sent by its origin in one
    write) and /small arrive; returns {request_id: response}."""

    async def app(request):
        if request.target == "/held":
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(HELD_BODY)
            return asyncio_origin.Reply([head + HELD_BODY[:100_000], 1.0, HELD_BODY[100_000:]])
        if request.target == "/burst":
            return asyncio_origin.reply(200, BURST_BODY)  # head and body in one write
        return asyncio_origin.reply(200, b"small")

    origin = asyncio_origin(app)
    routes = [{"path": "/", "origin": "o", "read_timeout": "3s"}]
    # Two connections: /held keeps one, so /small gets the one /burst used.
    proxy = run_proxy(proxy_config({"o": origin}, routes, origin_options={"o": {"max_connections": 2}}))
    with MuxClient(proxy.port, timeout=TIMEOUT) as client:
        client.request("GET", "/held", request_id="held")
        # Wait until the held response's head reached us: it owns the outer stream.
        deadline = time.monotonic() + TIMEOUT
        while b"Request-Id: held" not in client.reader.mux.buffer:
            assert time.monotonic() < deadline, "the held response never started"
            client.sock.settimeout(deadline - time.monotonic())
            assert client.reader.feed(client.sock.recv(65536)) == []
        client.request("GET", "/burst", request_id="burst")
        client.request("GET", "/small", request_id="small")
        client.end()
        table = by_request_id(client.receive_until_end())
    assert table["held"].body == HELD_BODY
    assert table["burst"].body == BURST_BODY
    return table


def test_origin_connection_paused_for_backpressure_is_not_reused_paused(held_stream):
    """/burst must wait for the outer stream, so its origin connection is
    paused; it completes meanwhile, and the connection goes back to the pool
    (to /small) and must read the next response it carries."""
    small = held_stream["small"]
    assert (small.status, small.body) == (200, b"small"), small.header("Proxy-Status")


def test_large_response_completed_while_waiting_is_still_inner_chunked(held_stream):
    """docs/protocol.md §6: a body over max_buffered_response is sent as an
    inner chunked message; only bodies up to it are sent with Content-Length."""
    burst = held_stream["burst"]
    assert burst.chunked
    assert burst.header("Content-Length") is None


def test_heartbeat_never_lands_inside_a_streamed_response(asyncio_origin, run_proxy, proxy_config):
    """A streamed response that stalls mid-body for longer than the heartbeat
    interval: a CRLF written then would be body bytes (and break the chunk
    framing), so heartbeats wait until the message ends."""

    async def app(request):
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(HELD_BODY)
        return asyncio_origin.Reply([head + HELD_BODY[:100_000], 0.8, HELD_BODY[100_000:]])

    origin = asyncio_origin(app)
    proxy = run_proxy(proxy_config({"o": origin}, mux={"heartbeat": "100ms"}))
    with MuxClient(proxy.port, timeout=TIMEOUT) as client:
        client.request("GET", "/held", request_id="held")
        response = client.receive(1)[0]
        seen = client.reader.mux.heartbeats
        deadline = time.monotonic() + TIMEOUT
        while client.reader.mux.heartbeats == seen:  # they resume after it
            assert time.monotonic() < deadline
            client.sock.settimeout(deadline - time.monotonic())
            assert client.reader.feed(client.sock.recv(65536)) == []
        client.end()
        assert client.receive_until_end() == []
    assert response.chunked
    assert response.body == HELD_BODY
    assert response.trailers == []


def test_http10_origin_behind_a_mux_stream(http10_origin, run_proxy, proxy_config):
    proxy = run_proxy(proxy_config({"old": http10_origin}))
    with MuxClient(proxy.port, timeout=TIMEOUT) as client:
        for n in range(10):
            name = ("small.txt", "large.bin")[n % 2]
            client.request("GET", f"/{name}?n={n}", request_id=f"old-{n}")
        client.end()
        table = by_request_id(client.receive_until_end(timeout=30))
    for n in range(10):
        name = ("small.txt", "large.bin")[n % 2]
        assert table[f"old-{n}"].status == 200
        assert table[f"old-{n}"].body == http10_origin.file(name)
        # large.bin is 200 KiB: over max_buffered_response, so streamed chunked.
        assert table[f"old-{n}"].chunked == (name == "large.bin")


def test_close_delimited_origin_responses_reframed_in_a_stream(asyncio_origin, run_proxy, proxy_config):
    async def app(request):
        size = int(parse_qs(urlsplit(request.target).query)["size"][0])
        body = deterministic_bytes(size, request.target)
        return asyncio_origin.reply(200, body, {"Content-Type": "text/plain"}, version="HTTP/1.0", length=False)

    origin = asyncio_origin(app)
    proxy = run_proxy(proxy_config({"old": origin}))
    with MuxClient(proxy.port, timeout=TIMEOUT) as client:
        client.request("GET", "/c?size=5000", request_id="small")
        client.request("GET", "/c?size=300000", request_id="large")
        client.request("GET", "/c?size=0", request_id="empty")
        client.end()
        table = by_request_id(client.receive_until_end())
    assert table["small"].header("Content-Length") == "5000"
    assert table["small"].body == deterministic_bytes(5000, "/c?size=5000")
    assert table["large"].chunked
    assert table["large"].body == deterministic_bytes(300000, "/c?size=300000")
    assert table["empty"].header("Content-Length") == "0"
    assert table["empty"].body == b""


# --- inner requests ------------------------------------------------------------------------


def test_empty_lines_between_inner_requests_are_ignored(nginx, mux_proxy):
    with MuxClient(mux_proxy.port, timeout=TIMEOUT) as client:
        client.send(
            b"\r\n"
            + inner_request("GET", "/100b.bin", request_id="e1")
            + b"\r\n\r\n"
            + inner_request("GET", "/10k.bin", request_id="e2")
        )
        client.send(b"\r\n")
        client.send(inner_request("GET", "/index.html", request_id="e3"))
        client.end()
        table = by_request_id(client.receive_until_end())
    assert set(table) == {"e1", "e2", "e3"}
    assert table["e1"].body == nginx.file("100b.bin")
    assert table["e2"].body == nginx.file("10k.bin")
    assert table["e3"].body == nginx.file("index.html")


def test_inner_requests_split_across_chunks_byte_by_byte(nginx, mux_proxy):
    data = inner_request("GET", "/100b.bin", request_id="s1") + inner_request("GET", "/headers", request_id="s2")
    with MuxClient(mux_proxy.port, timeout=TIMEOUT) as client:
        for i in range(len(data)):
            client.send(data[i : i + 1])
        client.end()
        table = by_request_id(client.receive_until_end())
    assert table["s1"].body == nginx.file("100b.bin")
    assert headers_seen_by_nginx(table["s2"].body)["request_id"] == "s2"


def test_inner_request_with_body(mux_proxy, timed_origin):
    with MuxClient(mux_proxy.port, timeout=TIMEOUT) as client:
        client.request("POST", "/slow?post", request_id="p", body=b"inner body bytes")
        client.request("GET", "/slow?after", request_id="q")
        client.end()
        table = by_request_id(client.receive_until_end())
    assert table["p"].body == timed_body("/slow?post", "p")
    assert table["q"].body == timed_body("/slow?after", "q")
    posted = [r for r in timed_origin.requests if r.target == "/slow?post"]
    assert [r.body for r in posted] == [b"inner body bytes"]


def test_inner_chunked_request_body_reaches_origin_whole(mux_proxy, timed_origin):
    with MuxClient(mux_proxy.port, timeout=TIMEOUT) as client:
        client.send(
            b"POST /slow?chunked HTTP/1.1\r\nRequest-Id: ch\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        response = client.receive(1)[0]
    assert response.request_id == "ch"
    (received,) = timed_origin.requests
    assert received.body == b"hello world"
    assert received.header("Transfer-Encoding") is None
    assert received.header("Content-Length") == "11"


def test_inner_expect_100_continue_is_not_answered_inside_the_stream(mux_proxy, timed_origin):
    with MuxClient(mux_proxy.port, timeout=TIMEOUT) as client:
        client.request("POST", "/slow?expect", request_id="exp", headers={"Expect": "100-continue"}, body=b"data")
        client.end()
        responses = client.receive_until_end()
    assert [(r.status, r.request_id) for r in responses] == [(200, "exp")]
    (received,) = timed_origin.requests
    assert received.header("Expect") is None
    assert received.body == b"data"


def test_inner_connection_close_and_http10_requests_do_not_end_the_stream(nginx, mux_proxy):
    with MuxClient(mux_proxy.port, timeout=TIMEOUT) as client:
        client.request("GET", "/100b.bin?close", request_id="close", headers={"Connection": "close"})
        client.send(b"GET /headers?v10 HTTP/1.0\r\nRequest-Id: v10\r\n\r\n")
        client.request("GET", "/10k.bin?after", request_id="after")
        client.end()
        table = by_request_id(client.receive_until_end())
    assert table["close"].body == nginx.file("100b.bin")
    assert table["close"].header("Connection") is None
    seen = headers_seen_by_nginx(table["v10"].body)
    assert seen["via"] == "1.0 muxproxy"
    assert seen["host"] == "127.0.0.1"  # inherited from the outer request
    assert table["after"].body == nginx.file("10k.bin")


def test_forwarding_fields_of_inner_requests(mux_proxy):
    port = mux_proxy.port
    with MuxClient(port, timeout=TIMEOUT) as client:
        client.request("GET", "/headers?fwd", request_id="fwd")
        response = client.receive(1)[0]
    seen = headers_seen_by_nginx(response.body)
    assert seen["xff"] == "127.0.0.1"
    assert seen["xfp"] == "http"
    assert seen["xfh"] == f"127.0.0.1:{port}"
    assert seen["forwarded"] == f'for=127.0.0.1;proto=http;host="127.0.0.1:{port}"'
    assert seen["via"] == "1.1 muxproxy"
    assert seen["host"] == "127.0.0.1"
    assert seen["request_id"] == "fwd"
    assert seen["uri"] == "/headers?fwd"


def test_inherit_headers_outer_cookie_unless_inner_has_one(mux_proxy):
    outer = {"Cookie": "session=outer", "User-Agent": "outer-agent/1"}
    with MuxClient(mux_proxy.port, headers=outer, timeout=TIMEOUT) as client:
        client.request("GET", "/headers?no-cookie", request_id="inherits")
        client.request("GET", "/headers?own-cookie", request_id="own", headers={"Cookie": "session=inner"})
        client.end()
        table = by_request_id(client.receive_until_end())
    inherits = headers_seen_by_nginx(table["inherits"].body)
    own = headers_seen_by_nginx(table["own"].body)
    assert inherits["cookie"] == "session=outer"
    assert inherits["user_agent"] == "outer-agent/1"
    assert own["cookie"] == "session=inner"
    assert own["user_agent"] == "outer-agent/1"


@pytest.mark.parametrize(
    ("host_header", "expected_host"),
    [("preserve", "app.example.test"), ("origin", "127.0.0.1"), ("backend.internal:8081", "backend.internal")],
)
def test_inner_route_host_header_modes(nginx, run_proxy, proxy_config, host_header, expected_host):
    routes = [{"path": "/", "origin": "nginx", "host_header": host_header}]
    proxy = run_proxy(proxy_config({"nginx": nginx}, routes))
    with MuxClient(proxy.port, host="127.0.0.1", headers={"Host": "app.example.test:8443"}, timeout=TIMEOUT) as client:
        client.request("GET", "/headers?h", request_id="h")
        response = client.receive(1)[0]
    seen = headers_seen_by_nginx(response.body)
    assert seen["host"] == expected_host
    assert seen["xfh"] == "app.example.test:8443"


def test_inner_absolute_form_target_is_echoed_as_received(nginx, mux_proxy):
    target = f"http://127.0.0.1:{mux_proxy.port}/100b.bin?abs"
    with MuxClient(mux_proxy.port, timeout=TIMEOUT) as client:
        client.request("GET", target, request_id="abs")
        response = client.receive(1)[0]
    assert response.status == 200
    assert response.content_location == target
    assert response.body == nginx.file("100b.bin")


def test_inner_204_and_304_have_no_body(nginx, mux_proxy):
    with MuxClient(mux_proxy.port, timeout=TIMEOUT) as client:
        client.request("GET", "/10k.bin?etag", request_id="etag")
        etag = client.receive(1)[0].header("ETag")
        client.request("GET", "/nocontent", request_id="204")
        client.request("GET", "/10k.bin", request_id="304", headers={"If-None-Match": etag})
        client.request("GET", "/100b.bin", request_id="after")
        client.end()
        table = by_request_id(client.receive_until_end())
    assert table["204"].status == 204
    assert table["204"].header("Content-Length") is None
    assert table["304"].status == 304
    assert table["304"].header("ETag") == etag
    assert table["after"].body == nginx.file("100b.bin")


# --- stream lifetime -----------------------------------------------------------------------


def test_heartbeat_on_an_idle_stream(nginx, run_proxy, proxy_config):
    proxy = run_proxy(mux_config(proxy_config, nginx, mux={"heartbeat": "200ms"}))
    with MuxClient(proxy.port, timeout=TIMEOUT) as client:
        deadline = time.monotonic() + TIMEOUT
        while client.reader.mux.heartbeats == 0:
            assert time.monotonic() < deadline, "no heartbeat on an idle stream"
            client.sock.settimeout(deadline - time.monotonic())
            data = client.sock.recv(65536)
            assert data, "stream closed while idle"
            assert client.reader.feed(data) == []
        assert client.outer_head.status == 200
        client.request("GET", "/100b.bin", request_id="after-heartbeat")
        response = client.receive(1)[0]
        assert response.request_id == "after-heartbeat"
        assert response.body == nginx.file("100b.bin")
        client.end()
        assert client.receive_until_end() == []


def read_one_plain_response(sock: socket.socket, timeout: float = TIMEOUT) -> InnerResponse:
    reader = MuxReader()
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        data = sock.recv(65536)
        assert data, "connection closed"
        got = reader.feed(data)
        if got:
            return got[0]


def open_second_stream(client: MuxClient) -> None:
    client.sock.sendall(
        b"POST /_mux HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/http\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    client.reader = OuterReader(MuxReader())


def test_end_of_body_with_requests_in_flight_then_keep_alive(nginx, mux_proxy):
    with MuxClient(mux_proxy.port, timeout=TIMEOUT) as client:
        client.request("GET", "/slow?delay=0.5&n=1", request_id="s1")
        client.request("GET", "/slow?delay=0.3&n=2", request_id="s2")
        client.request("GET", "/100k.bin", request_id="f1")
        client.end()  # everything above is still in flight
        responses = client.receive_until_end()
        assert client.reader.ended
        assert not client.closed_by_peer
        table = by_request_id(responses)
        assert set(table) == {"s1", "s2", "f1"}
        assert table["s1"].body == timed_body("/slow?delay=0.5&n=1", "s1")
        assert table["f1"].body == nginx.file("100k.bin")
        # Nothing after the last chunk but the end of its (empty) trailer
        # section, which OuterReader leaves unread.
        assert client.reader.raw == b"\r\n"

        # The connection is reusable: a plain request, then another stream.
        client.sock.sendall(b"GET /100b.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert read_one_plain_response(client.sock).body == nginx.file("100b.bin")
        open_second_stream(client)
        client.request("GET", "/slow?delay=0.2&n=3", request_id="second-stream")
        client.end()
        again = client.receive_until_end()
        assert [r.request_id for r in again] == ["second-stream"]
        assert client.reader.ended


def test_connection_is_reusable_after_a_stream_that_ends_with_nothing_in_flight(nginx, mux_proxy):
    """Here the last chunk arrives after every response has left, so it is the
    end of the body, not a response, that ends the stream."""
    with MuxClient(mux_proxy.port, timeout=TIMEOUT) as client:
        client.request("GET", "/10k.bin", request_id="first")
        assert client.receive(1)[0].body == nginx.file("10k.bin")
        client.end()
        assert client.receive_until_end() == []
        assert client.reader.ended

        client.sock.sendall(b"GET /100b.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
        # A proxy answers this in milliseconds; 5 s is only a bound.
        assert read_one_plain_response(client.sock, timeout=5.0).body == nginx.file("100b.bin")


def test_pipelined_outer_requests_on_one_connection(nginx, mux_proxy):
    first = inner_request("GET", "/100b.bin", request_id="first-batch")
    second = inner_request("GET", "/10k.bin", request_id="second-batch")
    data = (
        b"POST /_mux HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/http\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(first), first)
        + b"POST /_mux HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/http\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%b\r\n0\r\n\r\n" % (len(second), second)
        + b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", mux_proxy.port), timeout=TIMEOUT) as sock:
        sock.sendall(data)  # all three in one write
        received = b""
        results = []
        for _ in range(2):
            outer = OuterReader(MuxReader())
            responses = outer.feed(received)
            while not outer.ended:
                piece = sock.recv(65536)
                assert piece, "connection closed early"
                responses += outer.feed(piece)
            results.append(responses)
            received = outer.raw[2:]  # after the last chunk's CRLF
        plain = MuxReader()
        got = plain.feed(received)
        while not got:
            piece = sock.recv(65536)
            assert piece
            got = plain.feed(piece)
    assert [r.request_id for r in results[0]] == ["first-batch"]
    assert results[0][0].body == nginx.file("100b.bin")
    assert [r.request_id for r in results[1]] == ["second-batch"]
    assert results[1][0].body == nginx.file("10k.bin")
    assert got[0].body == nginx.file("index.html")


def test_idle_stream_is_ended_after_idle_timeout(nginx, run_proxy, proxy_config):
    proxy = run_proxy(mux_config(proxy_config, nginx, mux={"idle_timeout": "300ms"}))
    with MuxClient(proxy.port, timeout=TIMEOUT) as client:
        client.request("GET", "/100b.bin", request_id="before-idle")
        assert client.receive(1)[0].body == nginx.file("100b.bin")
        started = time.monotonic()
        assert client.receive_until_end() == []
        assert client.reader.ended
        assert time.monotonic() - started < 5.0
        assert client.closed_by_peer or _closed_soon(client.sock)


def test_client_gone_mid_stream_frees_origin_connections(nginx, timed_origin, run_proxy, proxy_config):
    proxy = run_proxy(mux_config(proxy_config, nginx, timed_origin))
    client = MuxClient(proxy.port, timeout=TIMEOUT)
    try:
        client.send(b"".join(inner_request("GET", f"/slow?delay=5&n={n}", request_id=f"x{n}") for n in range(5)))
        client.request("GET", "/1m.bin", request_id="big")
        assert proxy.wait_until(lambda: proxy.server.pool_counters()["timed"]["active"] == 5)
    finally:
        client.close()
    assert proxy.wait_until(
        lambda: all(c["active"] == 0 and c["connecting"] == 0 for c in proxy.server.pool_counters().values())
    ), proxy.pool_counters()
    assert proxy.wait_until(lambda: not proxy.server.connections)


def test_outer_connection_close_closes_after_the_stream(nginx, mux_proxy):
    with MuxClient(mux_proxy.port, headers={"Connection": "close"}, timeout=TIMEOUT) as client:
        client.request("GET", "/100b.bin", request_id="c")
        client.end()
        responses = client.receive_until_end()
        assert client.reader.ended
        assert client.closed_by_peer or _closed_soon(client.sock)
    assert responses[0].body == nginx.file("100b.bin")


def test_http10_outer_batch_is_close_delimited(nginx, mux_proxy):
    body = inner_request("GET", "/100b.bin", request_id="a") + inner_request("GET", "/10k.bin", request_id="b")
    head = (
        b"POST /_mux HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/http\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", mux_proxy.port), timeout=TIMEOUT) as sock:
        sock.sendall(head + body)
        data = b""
        while piece := sock.recv(65536):
            data += piece
    outer_head, _, rest = data.partition(b"\r\n\r\n")
    assert outer_head.startswith(b"HTTP/1.1 200 ")
    assert b"Transfer-Encoding" not in outer_head
    assert b"Connection: close" in outer_head
    table = by_request_id(MuxReader().feed(rest))
    assert table["a"].body == nginx.file("100b.bin")
    assert table["b"].body == nginx.file("10k.bin")


def test_outer_expect_100_continue_on_raw_socket(nginx, mux_proxy):
    with socket.create_connection(("127.0.0.1", mux_proxy.port), timeout=TIMEOUT) as sock:
        sock.sendall(
            b"POST /_mux HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/http\r\n"
            b"Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        request = inner_request("GET", "/100b.bin", request_id="c")
        sock.sendall(b"%x\r\n%b\r\n0\r\n\r\n" % (len(request), request))
        outer = OuterReader(MuxReader())
        responses = outer.feed(data)
        while not outer.ended:
            piece = sock.recv(65536)
            assert piece
            responses += outer.feed(piece)
    assert [r.request_id for r in responses] == ["c"]
    assert responses[0].body == nginx.file("100b.bin")


# --- outer request errors and negotiation --------------------------------------------------


def test_get_mux_is_405_with_allow(mux_proxy):
    response, _, closed = raw_outer(mux_proxy.port, b"GET /_mux HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert response.status == 405
    assert response.header("Allow") == "POST"
    assert "error=" in response.header("Proxy-Status")
    assert response.header("Proxy-Status").startswith("muxproxy;")
    assert not closed  # a bodiless refused request keeps the connection


def test_post_mux_without_application_http_is_415(mux_proxy):
    head = (
        b"POST /_mux HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    body = b"%x\r\n%b\r\n0\r\n\r\n" % (len(inner_request("GET", "/")), inner_request("GET", "/"))
    response, _, closed = raw_outer(mux_proxy.port, head, body)
    assert response.status == 415
    assert "error=http_request_error" in response.header("Proxy-Status")
    assert closed

    response, _, _ = raw_outer(
        mux_proxy.port, b"POST /_mux HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"
    )
    assert response.status == 415
    assert response.header("Proxy-Status") is not None


def test_post_mux_without_body_framing_is_411(mux_proxy):
    response, _, _ = raw_outer(
        mux_proxy.port, b"POST /_mux HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/http\r\n\r\n"
    )
    assert response.status == 411
    assert "error=http_request_error" in response.header("Proxy-Status")


def test_outer_unsupported_content_encoding_is_415(mux_proxy):
    response, _, _ = raw_outer(
        mux_proxy.port,
        b"POST /_mux HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/http\r\n"
        b"Content-Encoding: br\r\nContent-Length: 0\r\n\r\n",
    )
    assert response.status == 415
    assert response.header("Proxy-Status") is not None


def test_message_http_content_type_is_accepted(nginx, mux_proxy):
    with MuxClient(mux_proxy.port, headers={"Content-Type": "message/http"}, timeout=TIMEOUT) as client:
        client.request("GET", "/100b.bin", request_id="m")
        client.end()
        responses = client.receive_until_end()
        assert client.outer_head.status == 200
    assert [r.request_id for r in responses] == ["m"]
    assert responses[0].body == nginx.file("100b.bin")


def test_outer_content_type_parameters_and_case_are_accepted(nginx, mux_proxy):
    headers = {"Content-Type": "Application/HTTP; msgtype=request"}
    with MuxClient(mux_proxy.port, headers=headers, timeout=TIMEOUT) as client:
        client.request("GET", "/100b.bin", request_id="p")
        client.end()
        responses = client.receive_until_end()
        assert client.outer_head.status == 200
    assert responses[0].body == nginx.file("100b.bin")


def test_outer_accept_encoding_gzip_q0_means_no_gzip(nginx, mux_proxy):
    with MuxClient(mux_proxy.port, headers={"Accept-Encoding": "gzip;q=0, identity"}, timeout=TIMEOUT) as client:
        client.request("GET", "/100b.bin", request_id="q0")
        client.end()
        responses = client.receive_until_end()
        assert client.outer_head.header("Content-Encoding") is None
    assert responses[0].body == nginx.file("100b.bin")


def test_mux_path_with_query_is_the_endpoint(mux_proxy):
    response, _, _ = raw_outer(mux_proxy.port, b"GET /_mux?x=1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert response.status == 405


@pytest.mark.parametrize("target", ["/_mux/", "/_mux/anything", "/_mux/x?y"])
def test_paths_below_the_mux_endpoint_are_ordinary_paths_outside_a_stream(mux_proxy, target):
    """docs/protocol.md §1: only the exact path (with or without a query) is
    the endpoint; "/_mux/x is an ordinary path, routed like any other"."""
    for method, extra in (("GET", b""), ("POST", b"Content-Type: application/http\r\nContent-Length: 0\r\n")):
        response, _, _ = raw_outer(
            mux_proxy.port, b"%s %s HTTP/1.1\r\nHost: localhost\r\n%b\r\n" % (method.encode(), target.encode(), extra)
        )
        assert response.header("Server") is not None and response.header("Server").startswith("nginx/"), target
        assert response.status == 404  # nginx has no such file


@pytest.mark.parametrize("target", ["/_mux/", "/_mux/anything", "/_mux/x?y"])
def test_paths_below_the_mux_endpoint_are_ordinary_paths_inside_a_stream(mux_proxy, target):
    """The same path means the same thing inside a stream as outside it
    (docs/protocol.md §1); only the endpoint itself is refused (§10)."""
    with MuxClient(mux_proxy.port, timeout=TIMEOUT) as client:
        client.request("GET", target, request_id="below")
        client.request("GET", "/_mux", request_id="endpoint")
        client.end()
        table = by_request_id(client.receive_until_end())
    assert table["endpoint"].status == 400
    assert "error=http_request_denied" in table["endpoint"].header("Proxy-Status")
    below = table["below"]
    assert below.header("Proxy-Status") is None, below.header("Proxy-Status")
    assert below.status == 404
    assert below.header("Server").startswith("nginx/")


# --- inner errors --------------------------------------------------------------------------


@pytest.fixture
def routed_proxy(nginx, timed_origin, run_proxy, proxy_config):
    """Only /files/... (nginx, prefix stripped) and /slow (timed origin) are routed."""
    routes = [
        {"path": "/files", "origin": "nginx", "strip_prefix": True},
        {"path": "/slow", "origin": "timed"},
    ]
    return run_proxy(proxy_config({"nginx": nginx, "timed": timed_origin}, routes))


def test_inner_no_route_is_a_tagged_404_and_the_stream_goes_on(nginx, routed_proxy):
    with MuxClient(routed_proxy.port, timeout=TIMEOUT) as client:
        client.request("GET", "/nowhere?x", request_id="lost")
        missing = client.receive(1)[0]
        client.request("GET", "/files/100b.bin", request_id="found")
        found = client.receive(1)[0]
        client.end()
        assert client.receive_until_end() == []
    assert missing.status == 404
    assert missing.content_location == "/nowhere?x"
    assert missing.request_id == "lost"
    assert "error=destination_not_found" in missing.header("Proxy-Status")
    assert int(missing.header("Content-Length")) == len(missing.body)
    assert found.status == 200
    assert found.content_location == "/files/100b.bin"
    assert found.body == nginx.file("100b.bin")


def test_inner_request_to_the_mux_endpoint_is_400(nginx, routed_proxy):
    with MuxClient(routed_proxy.port, timeout=TIMEOUT) as client:
        client.request("POST", "/_mux", request_id="nested", headers={"Content-Type": "application/http"}, body=b"")
        client.request("GET", "/_mux?x", request_id="nested-get")
        client.request("GET", "/files/100b.bin", request_id="ok")
        client.end()
        table = by_request_id(client.receive_until_end())
    for request_id, target in (("nested", "/_mux"), ("nested-get", "/_mux?x")):
        assert table[request_id].status == 400
        assert table[request_id].content_location == target
        assert table[request_id].header("Proxy-Status") is not None
    assert table["ok"].body == nginx.file("100b.bin")


def test_inner_head_error_has_no_body(routed_proxy):
    with MuxClient(routed_proxy.port, timeout=TIMEOUT) as client:
        client.request("HEAD", "/nowhere", request_id="h404")
        client.request("GET", "/nowhere", request_id="g404")
        client.end()
        table = by_request_id(client.receive_until_end())
    assert table["h404"].status == 404
    assert table["h404"].body == b""
    assert table["g404"].body != b""


def test_inner_request_for_a_host_the_stream_does_not_serve_is_refused(mux_proxy):
    with MuxClient(mux_proxy.port, timeout=TIMEOUT) as client:
        client.request("GET", "/100b.bin", request_id="other-host", headers={"Host": "elsewhere.example"})
        client.request("GET", "http://elsewhere.example/100b.bin", request_id="other-authority")
        client.request("GET", "/100b.bin", request_id="same-host", headers={"Host": "127.0.0.1"})
        client.end()
        table = by_request_id(client.receive_until_end())
    assert table["other-host"].status == 400
    assert "error=http_request_denied" in table["other-host"].header("Proxy-Status")
    assert table["other-authority"].status == 400
    assert table["same-host"].status == 200


def test_inner_origin_down_is_a_tagged_502(nginx, run_proxy, proxy_config):
    routes = [{"path": "/down", "origin": "down"}, {"path": "/", "origin": "nginx"}]
    proxy = run_proxy(proxy_config({"nginx": nginx, "down": f"127.0.0.1:{free_port()}"}, routes))
    with MuxClient(proxy.port, timeout=TIMEOUT) as client:
        client.request("GET", "/down/x", request_id="down")
        client.request("GET", "/100b.bin", request_id="up")
        client.end()
        table = by_request_id(client.receive_until_end())
    assert table["down"].status == 502
    assert table["down"].content_location == "/down/x"
    assert "error=connection_refused" in table["down"].header("Proxy-Status")
    assert table["up"].body == nginx.file("100b.bin")


def test_inner_body_over_max_inner_body_is_a_tagged_413_and_the_stream_goes_on(
    nginx, timed_origin, run_proxy, proxy_config
):
    proxy = run_proxy(mux_config(proxy_config, nginx, timed_origin, mux={"max_inner_body": "1KiB"}))
    with MuxClient(proxy.port, timeout=TIMEOUT) as client:
        client.request("POST", "/slow?big", request_id="too-big", body=b"x" * 5000)
        client.send(
            b"POST /slow?chunked-big HTTP/1.1\r\nRequest-Id: too-big-chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"400\r\n" + b"y" * 1024 + b"\r\n" for _ in range(3))
            + b"0\r\n\r\n"
        )
        client.request("POST", "/slow?small", request_id="small", body=b"z" * 100)
        client.end()
        table = by_request_id(client.receive_until_end())
    assert table["too-big"].status == 413
    assert table["too-big"].content_location == "/slow?big"
    assert table["too-big"].header("Proxy-Status") is not None
    assert table["too-big-chunked"].status == 413
    assert table["small"].status == 200
    assert [r.target for r in timed_origin.requests] == ["/slow?small"]


def test_inner_head_too_large_is_a_tagged_431_and_the_stream_goes_on(nginx, run_proxy, proxy_config):
    proxy = run_proxy(mux_config(proxy_config, nginx, limits={"max_head_size": "1KiB"}))
    with MuxClient(proxy.port, timeout=TIMEOUT) as client:
        client.request("GET", "/100b.bin?big-head", request_id="big-head", headers={"X-Filler": "f" * 2000})
        client.request("GET", "/100b.bin?host", request_id="own-host", headers={"Host": "127.0.0.1"})
        client.send(b"GET /100b.bin?dup HTTP/1.1\r\nRequest-Id: dup-host\r\nHost: 127.0.0.1\r\nHost: 127.0.0.1\r\n\r\n")
        client.request("GET", "/100b.bin?fine", request_id="fine")
        client.end()
        table = {r.content_location: r for r in client.receive_until_end()}
    assert set(table) == {"/100b.bin?big-head", "/100b.bin?host", "/100b.bin?dup", "/100b.bin?fine"}
    big = table["/100b.bin?big-head"]
    assert big.status == 431
    assert "error=http_request_error" in big.header("Proxy-Status")
    assert table["/100b.bin?host"].status == 200
    assert table["/100b.bin?dup"].status == 400
    assert table["/100b.bin?dup"].request_id == "dup-host"
    assert table["/100b.bin?fine"].body == nginx.file("100b.bin")
    # docs/protocol.md §10: inner error responses are tagged with
    # Content-Location *and* Request-Id, like any other inner response.
    assert big.request_id == "big-head"


BROKEN_INNER_REQUEST = (
    # Content-Length together with Transfer-Encoding: the message's end is
    # ambiguous (RFC 9112 §6.3), so nothing after it can be trusted.
    b"POST /files/broken HTTP/1.1\r\nRequest-Id: broken\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
)


def test_inner_framing_error_answers_in_flight_requests_then_ends(nginx, routed_proxy):
    with MuxClient(routed_proxy.port, timeout=TIMEOUT) as client:
        client.request("GET", "/slow?delay=0.5", request_id="in-flight-slow")
        client.request("GET", "/files/10k.bin", request_id="in-flight-fast")
        client.send(BROKEN_INNER_REQUEST)
        # Anything after the broken request is never parsed.
        client.request("GET", "/files/100b.bin", request_id="after")
        responses = client.receive_until_end()
        ended = client.reader.ended
        leftover = client.reader.raw  # the end of the last chunk's empty trailer section
        closed = client.closed_by_peer or _closed_soon(client.sock)

    assert len(responses) == 3
    broken = [r for r in responses if r.status == 400]
    assert len(broken) == 1
    assert broken[0].content_location == "/files/broken"
    assert "error=http_request_error" in broken[0].header("Proxy-Status")
    table = {r.request_id: r for r in responses if r.status != 400}
    assert set(table) == {"in-flight-slow", "in-flight-fast"}
    assert table["in-flight-slow"].body == timed_body("/slow?delay=0.5", "in-flight-slow")
    assert table["in-flight-fast"].body == nginx.file("10k.bin")
    assert ended, "the outer response did not end with its last chunk"
    assert leftover == b"\r\n"
    assert closed, "the connection stayed open after the outer body was abandoned"


@pytest.mark.parametrize(
    "broken",
    # The stream ends after a complete field line: the parser has seen the
    # request line end, so the answer can be tagged (docs/protocol.md §10).
    [BROKEN_INNER_REQUEST, b"GET /files/broken HTTP/1.1\r\nRequest-Id: broken\r\nAccept: */*\r\n"],
    ids=["content-length-with-transfer-encoding", "stream-ends-inside-the-head"],
)
def test_inner_framing_error_response_carries_both_tags(routed_proxy, broken):
    """When framing is lost, the broken request's request line and fields up
    to the break (Request-Id included) have already been read, so its 400 can
    carry both correlation fields like every other inner response."""
    with MuxClient(routed_proxy.port, timeout=TIMEOUT) as client:
        client.send(broken)
        client.end()
        responses = client.receive_until_end()
    assert [r.status for r in responses] == [400]
    assert (responses[0].content_location, responses[0].request_id) == ("/files/broken", "broken")


def test_inner_chunked_request_body_with_bad_chunk_size_is_tagged(routed_proxy):
    with MuxClient(routed_proxy.port, timeout=TIMEOUT) as client:
        client.send(b"POST /files/x HTTP/1.1\r\nRequest-Id: badchunk\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        responses = client.receive_until_end()
    assert [(r.status, r.content_location, r.request_id) for r in responses] == [(400, "/files/x", "badchunk")]


def test_an_idle_stream_holds_no_more_than_a_fresh_one(nginx, mux_proxy):
    """What a long-lived stream holds between bursts: the connection keeps no
    timer entry of its own while the stream runs (the stream has its own),
    and the tables a burst of 100 requests grew are let go at the stream's
    next timer tick (a dict keeps its table when emptied)."""
    from proxy.shell.mux import MuxStream

    server = mux_proxy.server

    def the_stream():
        (conn,) = [c for c in server.connections if isinstance(c.handler, MuxStream)]
        return conn, conn.handler

    def tables() -> tuple[bool, bool, int, int]:
        conn, stream = the_stream()
        due = server.wheel._due
        return conn in due, stream in due, sys.getsizeof(stream.exchanges), sys.getsizeof(stream.session.streams)

    fresh = sys.getsizeof({})
    with MuxClient(mux_proxy.port, timeout=TIMEOUT) as client:
        client.send(b"".join(inner_request("GET", f"/100b.bin?n={n}", request_id=str(n)) for n in range(100)))
        assert len(client.receive(100, timeout=TIMEOUT)) == 100
        assert mux_proxy.wait_until(lambda: not the_stream()[1].exchanges)
        conn_timer, stream_timer, exchanges, streams = mux_proxy.call(tables)
        assert not conn_timer and stream_timer
        assert exchanges > 4 * fresh and streams > 4 * fresh  # grown by the burst, now empty
        mux_proxy.call(lambda: the_stream()[1].on_wheel())
        assert mux_proxy.call(tables)[2:] == (fresh, fresh)
        # The stream still works, and takes up its tables again.
        client.request("GET", "/100b.bin", request_id="again")
        (again,) = client.receive(1, timeout=TIMEOUT)
        assert again.status == 200 and again.body == nginx.file("100b.bin")


# --- memory: finished inner requests are freed at once -------------------------------------


def test_finished_inner_requests_leave_no_reference_cycles(every_kind_of_origin):
    """Inner requests' objects are freed by reference counting, not left to the collector.

    Answers from nginx and from a directory origin, a 404, and a 502 from an
    origin that is down.  A cycle per request costs a collection every ~1,200
    requests under load (docs/performance.md, the plain proxy's reference
    cycle); this keeps the mux path as free of them as it was measured.
    """
    from proxy.core.forwarding import OutboundRequest
    from proxy.core.http1.messages import RequestHead
    from proxy.shell.files import FileExchange
    from proxy.shell.mux import InnerSink, MuxStream
    from proxy.shell.origin import HttpExchange

    proxy = every_kind_of_origin
    with CyclicGarbage() as garbage:
        with MuxClient(proxy.port, timeout=TIMEOUT) as client:
            targets = [f"/100b.bin?n={n}" for n in range(30)] + [f"/files/page.txt?n={n}" for n in range(10)]
            targets += ["/missing", "/gone/x"]
            client.send(b"".join(inner_request("GET", target, request_id=target) for target in targets))
            client.end()
            responses = by_request_id(client.receive_until_end(timeout=TIMEOUT))
        assert sorted(responses) == sorted(targets)
        assert (responses["/missing"].status, responses["/gone/x"].status) == (404, 502)
        assert responses["/files/page.txt?n=3"].body == DIRECTORY_PAGE
        assert proxy.wait_until(lambda: not proxy.server.connections)
        garbage.collect()
        per_request = (MuxStream, InnerSink, HttpExchange, FileExchange, OutboundRequest, RequestHead)
        assert garbage.count(*per_request) == {}
