"""Plain reverse proxying end to end: curl and raw sockets -> muxproxy -> real origins.

Everything that is not the mux endpoint is proxied the way nginx would: the
client is curl (/usr/bin/curl) wherever curl can express the case, and a raw
socket where it cannot (HTTP/1.0 clients, pipelining, malformed requests).
The origins are Debian's nginx, Python's http.server speaking HTTP/1.0, and
small scripted origins written here (an echo, a close-delimited HTTP/1.0
answer) where nginx cannot show what a test needs.

Raw responses are read with tests.support.muxwire.MuxReader, an independent
reader of consecutive HTTP/1.1 responses (the proxy's own parsers are never
used to check the proxy).
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import subprocess
import time

import pytest

from tests.support.garbage import CyclicGarbage
from tests.support.harness import free_port
from tests.support.muxwire import InnerResponse, MuxReader
from tests.support.origins import DIRECTORY_PAGE, deterministic_bytes

CURL = "/usr/bin/curl"
CURL_TIMEOUT = 60.0
SOCKET_TIMEOUT = 10.0


# --- clients -------------------------------------------------------------------------------


def curl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run curl (silent, errors shown, HTTP/1.1); fail the test if curl fails."""
    result = subprocess.run(
        [CURL, "-sS", "--http1.1", *args],
        input=input,
        capture_output=True,
        timeout=CURL_TIMEOUT,
    )
    assert result.returncode == 0, f"curl {args} exited {result.returncode}: {result.stderr.decode()}"
    return result


def parse_dumped_heads(text: bytes) -> list[tuple[int, list[tuple[str, str]]]]:
    """The response heads curl wrote with -D (interim 1xx heads included)."""
    heads = []
    for block in text.decode("latin-1").split("\r\n\r\n"):
        lines = [line for line in block.split("\r\n") if line]
        if not lines:
            continue
        status = int(lines[0].split(" ", 2)[1])
        fields = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields.append((name, value.strip()))
        heads.append((status, fields))
    return heads


def field(fields: list[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    values = [value for key, value in fields if key.lower() == name]
    assert len(values) <= 1, f"{name} appears {len(values)} times: {fields}"
    return values[0] if values else None


def curl_get(url: str, *args: str, input: bytes | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
    """GET (or whatever args say) with curl: (status, final head fields, body)."""
    completed = curl("--dump-header", "/dev/stderr", "--output", "-", url, *args, input=input)
    # -sS prints errors to stderr too, but a successful run prints none.
    heads = parse_dumped_heads(completed.stderr)
    status, fields = heads[-1]
    return status, fields, completed.stdout


def headers_seen_by_nginx(body: bytes) -> dict[str, str]:
    """The lines of nginx's /headers answer as a dict."""
    seen = {}
    for line in body.decode("latin-1").splitlines():
        key, _, value = line.partition("=")
        seen[key] = value
    return seen


class RawClient:
    """A raw client socket with a strict reader of the responses it gets."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
        self.head_requests: set[int] = set()  # indexes of responses that answer HEAD
        self._count = 0
        self.reader = MuxReader(self._is_head)
        self.raw = b""

    def _is_head(self, response: InnerResponse) -> bool:
        index = self._count
        self._count += 1
        return index in self.head_requests

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self, count: int, timeout: float = SOCKET_TIMEOUT) -> list[InnerResponse]:
        got: list[InnerResponse] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"got {len(got)} of {count} responses")
            self.sock.settimeout(remaining)
            data = self.sock.recv(1 << 16)
            if not data:
                raise AssertionError(f"connection closed after {len(got)} of {count} responses")
            self.raw += data
            got.extend(self.reader.feed(data))
        return got

    def read_until_closed(self, timeout: float = SOCKET_TIMEOUT) -> bytes:
        """Every byte until the proxy closes the connection (fails on timeout)."""
        data = b""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"connection still open after {timeout}s; got {data[:200]!r}")
            self.sock.settimeout(remaining)
            try:
                piece = self.sock.recv(1 << 16)
            except ConnectionResetError:
                return data
            if not piece:
                return data
            data += piece

    def is_closed_by_peer(self, timeout: float = SOCKET_TIMEOUT) -> bool:
        return self.read_until_closed(timeout) == b""


def split_raw_response(data: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    """(status line, fields, rest) of one raw response."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete head in {data[:300]!r}"
    lines = head.decode("latin-1").split("\r\n")
    fields = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields.append((name, value.strip()))
    return lines[0], fields, rest


def get(target: str, host: str = "localhost", extra: str = "", version: str = "1.1") -> bytes:
    return f"GET {target} HTTP/{version}\r\nHost: {host}\r\n{extra}\r\n".encode("latin-1")


# --- in-test origins -----------------------------------------------------------------------


@pytest.fixture
def echo_origin(asyncio_origin):
    """Answers every request with its own body, and says how it arrived."""

    async def app(request):
        digest = hashlib.sha256(request.body).hexdigest()
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Got-Length": str(len(request.body)),
            "X-Got-Sha256": digest,
            "X-Got-Framing": "chunked" if request.chunked else "length",
            "X-Got-Expect": request.header("expect") or "-",
        }
        return asyncio_origin.reply(200, request.body, headers)

    return asyncio_origin(app)


@pytest.fixture
def close_delimited_origin(asyncio_origin):
    """An HTTP/1.0 origin that ends every body by closing the connection."""

    async def app(request):
        body = deterministic_bytes(50_000, "close-delimited:" + request.target)
        return asyncio_origin.reply(200, body, {"Content-Type": "text/plain"}, version="HTTP/1.0", length=False)

    return asyncio_origin(app)


@pytest.fixture
def chunked_origin(asyncio_origin):
    """An HTTP/1.1 origin that sends a chunked body (several chunks)."""

    async def app(request):
        body = deterministic_bytes(30_000, "chunked:" + request.target)
        pieces = [body[i : i + 7000] for i in range(0, len(body), 7000)]
        data = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        data += b"".join(b"%x\r\n%b\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
        return asyncio_origin.Reply(data)

    return asyncio_origin(app)


@pytest.fixture
def nginx_proxy(nginx, run_proxy, proxy_config):
    """A proxy that sends everything to nginx."""
    return run_proxy(proxy_config({"nginx": nginx}))


# --- GET, keep-alive, streaming ------------------------------------------------------------


def test_get_through_curl_keeps_body_and_headers(nginx, nginx_proxy):
    status, fields, body = curl_get(f"http://127.0.0.1:{nginx_proxy.port}/10k.bin")

    assert status == 200
    assert body == nginx.file("10k.bin")
    assert field(fields, "Content-Length") == str(len(body))
    assert field(fields, "Content-Type") == "application/octet-stream"
    assert field(fields, "Server").startswith("nginx/")
    assert field(fields, "ETag")
    assert field(fields, "Last-Modified")
    assert field(fields, "Accept-Ranges") == "bytes"
    # nginx's "Connection: keep-alive" describes nginx's hop, not ours.
    assert field(fields, "Connection") is None


def test_index_and_small_file(nginx, nginx_proxy):
    status, _, body = curl_get(f"http://127.0.0.1:{nginx_proxy.port}/")
    assert (status, body) == (200, nginx.file("index.html"))
    status, _, body = curl_get(f"http://127.0.0.1:{nginx_proxy.port}/100b.bin")
    assert (status, body) == (200, nginx.file("100b.bin"))


def test_keep_alive_several_requests_one_connection_each_side(nginx, nginx_proxy):
    base = f"http://127.0.0.1:{nginx_proxy.port}"
    names = ["100b.bin", "10k.bin", "index.html", "100k.bin", "100b.bin"]
    accepted_before = nginx.accepted_connections()
    args = []
    for name in names:
        args += ["-o", "/dev/null", f"{base}/{name}"]
    result = curl("-w", "%{http_code} %{num_connects} %{size_download}\\n", *args)
    accepted_after = nginx.accepted_connections()

    lines = [line.split() for line in result.stdout.decode().splitlines()]
    assert [line[0] for line in lines] == ["200"] * len(names)
    # curl opened one connection to the proxy and reused it for the rest.
    assert [line[1] for line in lines] == ["1"] + ["0"] * (len(names) - 1)
    assert [int(line[2]) for line in lines] == [len(nginx.file(name)) for name in names]
    # The proxy used one pooled connection to nginx for all five
    # (the second stub_status query itself is the other accepted one).
    assert accepted_after - accepted_before == 2
    assert nginx_proxy.pool_counters()["nginx"] == {"active": 0, "idle": 1, "connecting": 0, "queued": 0}


def test_idle_keep_alive_connections_are_reused_by_later_clients(nginx, nginx_proxy):
    accepted_before = nginx.accepted_connections()
    for name in ("100b.bin", "10k.bin", "index.html"):
        status, _, body = curl_get(f"http://127.0.0.1:{nginx_proxy.port}/{name}")
        assert (status, body) == (200, nginx.file(name))
    # Three curl processes, three client connections, one origin connection.
    assert nginx.accepted_connections() - accepted_before == 2


def test_one_mebibyte_streamed_intact(nginx, nginx_proxy):
    status, fields, body = curl_get(f"http://127.0.0.1:{nginx_proxy.port}/1m.bin")
    assert status == 200
    assert field(fields, "Content-Length") == str(1024 * 1024)
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(nginx.file("1m.bin")).hexdigest()


def test_slow_reader_still_gets_one_mebibyte_intact(nginx, nginx_proxy):
    """A client that reads slowly (backpressure on the proxy) gets every byte."""
    with RawClient(nginx_proxy.port) as client:
        client.send(get("/1m.bin"))
        data = b""
        client.sock.settimeout(SOCKET_TIMEOUT)
        time.sleep(0.3)  # let the proxy fill the socket buffers and pause nginx
        while True:
            piece = client.sock.recv(1 << 16)
            assert piece, "connection closed before the body ended"
            data += piece
            if b"\r\n\r\n" in data:
                _, _, rest = data.partition(b"\r\n\r\n")
                if len(rest) >= 1024 * 1024:
                    break
        status_line, fields, rest = split_raw_response(data)
        assert status_line == "HTTP/1.1 200 OK"
        assert rest == nginx.file("1m.bin")


# --- request bodies ------------------------------------------------------------------------


def test_large_post_body_streamed_to_origin_intact(echo_origin, run_proxy, proxy_config, tmp_path):
    proxy = run_proxy(proxy_config({"echo": echo_origin}))
    payload = deterministic_bytes(3 * 1024 * 1024 + 17, "post-body")
    path = tmp_path / "payload.bin"
    path.write_bytes(payload)

    status, fields, body = curl_get(
        f"http://127.0.0.1:{proxy.port}/upload",
        "-X", "POST", "-H", "Expect:", "--data-binary", f"@{path}",
    )

    assert status == 200
    assert field(fields, "X-Got-Length") == str(len(payload))
    assert field(fields, "X-Got-Sha256") == hashlib.sha256(payload).hexdigest()
    assert field(fields, "X-Got-Framing") == "length"
    assert body == payload


def test_chunked_upload_from_stdin_reaches_origin_intact(echo_origin, run_proxy, proxy_config):
    proxy = run_proxy(proxy_config({"echo": echo_origin}))
    payload = deterministic_bytes(700_000, "chunked-upload")

    status, fields, body = curl_get(
        f"http://127.0.0.1:{proxy.port}/upload", "-X", "POST", "-H", "Expect:", "-T", "-", input=payload
    )

    assert status == 200
    assert field(fields, "X-Got-Framing") == "chunked"
    assert field(fields, "X-Got-Sha256") == hashlib.sha256(payload).hexdigest()
    assert body == payload


def test_chunked_request_with_trailers_is_forwarded(echo_origin, run_proxy, proxy_config):
    proxy = run_proxy(proxy_config({"echo": echo_origin}))
    with RawClient(proxy.port) as client:
        client.send(
            b"POST /t HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Trailer: yes\r\n\r\n" + get("/after")
        )
        first, second = client.receive(2)
    assert first.body == b"abcdefg"
    assert second.status == 200


def test_expect_100_continue(echo_origin, run_proxy, proxy_config, tmp_path):
    proxy = run_proxy(proxy_config({"echo": echo_origin}))
    payload = deterministic_bytes(2 * 1024 * 1024, "expect")
    path = tmp_path / "payload.bin"
    path.write_bytes(payload)

    completed = curl(
        "--dump-header", "/dev/stderr", "--output", "-",
        "-H", "Expect: 100-continue", "--data-binary", f"@{path}",
        f"http://127.0.0.1:{proxy.port}/upload",
    )

    heads = parse_dumped_heads(completed.stderr)
    assert [status for status, _ in heads] == [100, 200]
    fields = heads[-1][1]
    assert completed.stdout == payload
    assert field(fields, "X-Got-Length") == str(len(payload))
    # The proxy answered the expectation itself; the origin never saw it.
    assert field(fields, "X-Got-Expect") == "-"


def test_expect_100_continue_on_raw_socket_comes_before_the_body_is_sent(echo_origin, run_proxy, proxy_config):
    proxy = run_proxy(proxy_config({"echo": echo_origin}))
    body = b"x" * 5000
    with RawClient(proxy.port) as client:
        client.send(
            b"POST /upload HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        interim = client.receive(1)[0]
        assert interim.status == 100
        client.send(body)
        final = client.receive(1)[0]
    assert final.status == 200
    assert final.body == body


def test_expect_100_continue_refused_request_gets_final_status_without_100(nginx, run_proxy, proxy_config):
    proxy = run_proxy(proxy_config({"nginx": nginx}, [{"path": "/only", "origin": "nginx"}]))
    with RawClient(proxy.port) as client:
        client.send(
            b"POST /elsewhere HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        response = client.receive(1)[0]
        # The body was never sent, so the connection cannot carry on.
        assert client.is_closed_by_peer()
    assert response.status == 404
    assert "error=destination_not_found" in response.header("Proxy-Status")
    assert response.header("Connection") == "close"


# --- bodiless responses --------------------------------------------------------------------


def test_head_keeps_content_length_and_sends_no_body(nginx, nginx_proxy):
    status, fields, body = curl_get(f"http://127.0.0.1:{nginx_proxy.port}/1m.bin", "--head")
    assert status == 200
    assert field(fields, "Content-Length") == str(1024 * 1024)
    # With --head curl writes the head to its output too: nothing else came.
    assert body.endswith(b"\r\n\r\n") and body.count(b"\r\n\r\n") == 1

    # On a raw socket: nothing follows the HEAD response's head, so the next
    # pipelined response parses cleanly right after it.
    with RawClient(nginx_proxy.port) as client:
        client.head_requests.add(0)
        client.send(b"HEAD /100k.bin HTTP/1.1\r\nHost: localhost\r\n\r\n" + get("/100b.bin"))
        head, following = client.receive(2)
    assert head.status == 200
    assert head.header("Content-Length") == str(100 * 1024)
    assert head.body == b""
    assert following.status == 200
    assert following.body == nginx.file("100b.bin")


def test_204_from_nginx(nginx, nginx_proxy):
    status, fields, body = curl_get(f"http://127.0.0.1:{nginx_proxy.port}/nocontent")
    assert status == 204
    assert body == b""
    assert field(fields, "Content-Length") is None
    assert field(fields, "Transfer-Encoding") is None

    with RawClient(nginx_proxy.port) as client:
        client.send(get("/nocontent") + get("/100b.bin"))
        no_content, following = client.receive(2)
    assert no_content.status == 204
    assert following.body == nginx.file("100b.bin")


def test_304_with_nginx_etag(nginx, nginx_proxy):
    url = f"http://127.0.0.1:{nginx_proxy.port}/10k.bin"
    _, fields, _ = curl_get(url)
    etag = field(fields, "ETag")
    assert etag

    status, fields, body = curl_get(url, "-H", f"If-None-Match: {etag}")
    assert status == 304
    assert body == b""
    assert field(fields, "ETag") == etag
    assert field(fields, "Transfer-Encoding") is None

    with RawClient(nginx_proxy.port) as client:
        client.send(get("/10k.bin", extra=f"If-None-Match: {etag}\r\n") + get("/100b.bin"))
        not_modified, following = client.receive(2)
    assert not_modified.status == 304
    assert following.body == nginx.file("100b.bin")


# --- HTTP/1.0 on either side ---------------------------------------------------------------


def test_http10_client_without_keep_alive_gets_closed_connection(nginx, nginx_proxy):
    with RawClient(nginx_proxy.port) as client:
        client.send(b"GET /10k.bin HTTP/1.0\r\n\r\n")
        data = client.read_until_closed()
    status_line, fields, rest = split_raw_response(data)
    assert status_line.split(" ", 2)[1] == "200"
    assert field(fields, "Content-Length") == str(10 * 1024)
    assert field(fields, "Transfer-Encoding") is None
    assert rest == nginx.file("10k.bin")


def test_http10_client_with_keep_alive_stays_connected(nginx, nginx_proxy):
    with RawClient(nginx_proxy.port) as client:
        client.send(b"GET /100b.bin HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        first = client.receive(1)[0]
        assert first.status == 200
        assert first.header("Connection").lower() == "keep-alive"
        assert first.body == nginx.file("100b.bin")
        client.send(b"GET /10k.bin HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        second = client.receive(1)[0]
        assert second.body == nginx.file("10k.bin")
        client.send(b"GET /100b.bin HTTP/1.0\r\n\r\n")
        third_raw = client.read_until_closed()
    assert third_raw.endswith(nginx.file("100b.bin"))


def test_http10_client_gets_close_delimited_body_for_a_chunked_origin(chunked_origin, run_proxy, proxy_config):
    proxy = run_proxy(proxy_config({"chunked": chunked_origin}))
    with RawClient(proxy.port) as client:
        client.send(b"GET /c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        data = client.read_until_closed()
    _, fields, rest = split_raw_response(data)
    # No chunked coding for an HTTP/1.0 recipient: the close ends the body.
    assert field(fields, "Transfer-Encoding") is None
    assert field(fields, "Content-Length") is None
    assert rest == deterministic_bytes(30_000, "chunked:/c")


def test_http10_origin_via_http_server(http10_origin, run_proxy, proxy_config):
    proxy = run_proxy(proxy_config({"old": http10_origin}))
    base = f"http://127.0.0.1:{proxy.port}"
    args = []
    for name in ("small.txt", "large.bin", "small.txt"):
        args += ["-o", "/dev/null", f"{base}/{name}"]
    result = curl("-w", "%{http_code} %{num_connects} %{size_download}\\n", *args)
    lines = [line.split() for line in result.stdout.decode().splitlines()]
    assert [line[0] for line in lines] == ["200"] * 3
    # The origin closes after every response; the client's connection stays.
    assert [line[1] for line in lines] == ["1", "0", "0"]

    status, fields, body = curl_get(f"{base}/large.bin")
    assert status == 200
    assert field(fields, "Content-Length") == str(len(http10_origin.file("large.bin")))
    assert body == http10_origin.file("large.bin")
    # A connection the origin closes is never kept in the pool.
    assert proxy.wait_until(lambda: proxy.server.pool_counters()["old"]["idle"] == 0)


def test_close_delimited_origin_reframed_chunked_for_http11_client(close_delimited_origin, run_proxy, proxy_config):
    proxy = run_proxy(proxy_config({"old": close_delimited_origin}))
    with RawClient(proxy.port) as client:
        client.send(get("/one"))
        first = client.receive(1)[0]
        client.send(get("/two"))
        second = client.receive(1)[0]
    assert first.status == 200
    assert first.header("Transfer-Encoding") == "chunked"
    assert first.chunked
    assert first.body == deterministic_bytes(50_000, "close-delimited:/one")
    assert second.body == deterministic_bytes(50_000, "close-delimited:/two")
    assert close_delimited_origin.connections == 2

    status, _, body = curl_get(f"http://127.0.0.1:{proxy.port}/three")
    assert (status, body) == (200, deterministic_bytes(50_000, "close-delimited:/three"))


def test_close_delimited_origin_to_http10_client(close_delimited_origin, run_proxy, proxy_config):
    proxy = run_proxy(proxy_config({"old": close_delimited_origin}))
    with RawClient(proxy.port) as client:
        client.send(b"GET /old HTTP/1.0\r\n\r\n")
        data = client.read_until_closed()
    _, fields, rest = split_raw_response(data)
    assert field(fields, "Transfer-Encoding") is None
    assert rest == deterministic_bytes(50_000, "close-delimited:/old")


# --- pipelining and connection handling ----------------------------------------------------


def test_pipelined_requests_answered_in_order(nginx, nginx_proxy):
    names = ["100k.bin", "100b.bin", "10k.bin"]
    with RawClient(nginx_proxy.port) as client:
        client.send(b"".join(get(f"/{name}") for name in names))  # one write
        responses = client.receive(3)
        # The connection is still usable afterwards.
        client.send(get("/index.html"))
        last = client.receive(1)[0]
    assert [r.status for r in responses] == [200, 200, 200]
    assert [r.body for r in responses] == [nginx.file(name) for name in names]
    assert last.body == nginx.file("index.html")


def test_pipelined_requests_to_several_targets_and_methods(nginx, nginx_proxy):
    with RawClient(nginx_proxy.port) as client:
        client.head_requests.add(1)
        client.send(
            get("/headers?n=1")
            + b"HEAD /1m.bin HTTP/1.1\r\nHost: localhost\r\n\r\n"
            + get("/nocontent")
            + get("/headers?n=2")
        )
        responses = client.receive(4)
    assert [r.status for r in responses] == [200, 200, 204, 200]
    assert headers_seen_by_nginx(responses[0].body)["uri"] == "/headers?n=1"
    assert responses[1].body == b""
    assert headers_seen_by_nginx(responses[3].body)["uri"] == "/headers?n=2"


def test_pipelined_slow_then_fast_answered_in_order(nginx, asyncio_origin, run_proxy, proxy_config):
    async def app(request):
        await asyncio.sleep(0.5)
        return asyncio_origin.reply(200, b"slow " + request.target.encode())

    slow = asyncio_origin(app)
    routes = [{"path": "/slow", "origin": "slow"}, {"path": "/", "origin": "nginx"}]
    proxy = run_proxy(proxy_config({"nginx": nginx, "slow": slow}, routes))
    with RawClient(proxy.port) as client:
        client.send(get("/slow/1") + get("/100b.bin") + get("/slow/2") + get("/10k.bin"))
        responses = client.receive(4)
    assert [r.body for r in responses] == [
        b"slow /slow/1", nginx.file("100b.bin"), b"slow /slow/2", nginx.file("10k.bin")
    ]


def test_pipelined_post_with_body_then_get(echo_origin, run_proxy, proxy_config):
    proxy = run_proxy(proxy_config({"echo": echo_origin}))
    body = deterministic_bytes(20_000, "pipelined-post")
    with RawClient(proxy.port) as client:
        client.send(
            b"POST /one HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
            + b"POST /two HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"5\r\nhello\r\n0\r\n\r\n"
            + get("/three")
        )
        first, second, third = client.receive(3)
    assert first.body == body
    assert second.body == b"hello"
    assert second.header("X-Got-Framing") == "chunked"
    assert third.status == 200
    assert third.body == b""
    assert [r.target for r in echo_origin.requests] == ["/one", "/two", "/three"]


def test_client_half_close_after_request_still_gets_the_response(nginx, nginx_proxy):
    with RawClient(nginx_proxy.port) as client:
        client.send(get("/100k.bin") + get("/100b.bin"))
        client.sock.shutdown(socket.SHUT_WR)
        data = client.read_until_closed()
    responses = MuxReader().feed(data)
    assert [r.body for r in responses] == [nginx.file("100k.bin"), nginx.file("100b.bin")]


def test_client_connection_close_is_honoured(nginx, nginx_proxy):
    with RawClient(nginx_proxy.port) as client:
        client.send(get("/100b.bin", extra="Connection: close\r\n") + get("/10k.bin"))
        data = client.read_until_closed()
    responses = MuxReader().feed(data)
    assert len(responses) == 1  # the pipelined request after "close" is not answered
    assert responses[0].header("Connection") == "close"
    assert responses[0].body == nginx.file("100b.bin")


def test_origin_connection_close_is_not_passed_on_and_not_pooled(asyncio_origin, run_proxy, proxy_config):
    async def app(request):
        return asyncio_origin.reply(200, b"bye", {"Connection": "close"}, close=True)

    origin = asyncio_origin(app)
    proxy = run_proxy(proxy_config({"closing": origin}))
    with RawClient(proxy.port) as client:
        client.send(get("/a"))
        first = client.receive(1)[0]
        client.send(get("/b"))
        second = client.receive(1)[0]
    assert first.body == second.body == b"bye"
    assert first.header("Connection") is None  # the client's connection stays open
    assert origin.connections == 2
    assert proxy.wait_until(lambda: proxy.server.pool_counters()["closing"]["idle"] == 0)


# --- forwarding fields and routes ----------------------------------------------------------


def test_forwarding_fields_reach_nginx(nginx_proxy):
    port = nginx_proxy.port
    _, _, body = curl_get(
        f"http://127.0.0.1:{port}/headers",
        "-H", "Connection: keep-alive, Cookie",
        "-H", "Cookie: secret=1",
        "-H", "User-Agent: muxproxy-tests/1",
        "-H", "Request-Id: plain-1",
    )
    seen = headers_seen_by_nginx(body)
    assert seen["host"] == "127.0.0.1"
    assert seen["xff"] == "127.0.0.1"
    assert seen["xfp"] == "http"
    assert seen["xfh"] == f"127.0.0.1:{port}"
    assert seen["forwarded"] == f'for=127.0.0.1;proto=http;host="127.0.0.1:{port}"'
    assert seen["via"] == "1.1 muxproxy"
    # Connection is hop-by-hop, and so is every field it names (Cookie here).
    assert seen["connection"] == ""
    assert seen["cookie"] == ""
    assert seen["user_agent"] == "muxproxy-tests/1"
    assert seen["request_id"] == "plain-1"
    assert seen["uri"] == "/headers"


def test_forwarding_fields_append_to_what_the_client_sent(nginx_proxy):
    _, _, body = curl_get(
        f"http://127.0.0.1:{nginx_proxy.port}/headers",
        "-H", "Host: app.example.test",
        "-H", "X-Forwarded-For: 203.0.113.9",
        "-H", "Forwarded: for=203.0.113.9",
        "-H", "Via: 1.1 edge",
        "-H", "X-Forwarded-Proto: https",
        "-H", "Cookie: kept=yes",
    )
    seen = headers_seen_by_nginx(body)
    assert seen["xff"] == "203.0.113.9, 127.0.0.1"
    assert seen["forwarded"] == "for=203.0.113.9, for=127.0.0.1;proto=http;host=app.example.test"
    assert seen["via"] == "1.1 edge, 1.1 muxproxy"
    # The proxy states the protocol it saw; a client's claim is not passed on.
    assert seen["xfp"] == "http"
    assert seen["xfh"] == "app.example.test"
    assert seen["cookie"] == "kept=yes"


def test_http10_client_is_named_in_via(nginx_proxy):
    with RawClient(nginx_proxy.port) as client:
        client.send(b"GET /headers HTTP/1.0\r\n\r\n")
        data = client.read_until_closed()
    _, _, body = split_raw_response(data)
    assert headers_seen_by_nginx(body)["via"] == "1.0 muxproxy"


@pytest.mark.parametrize(
    ("prefix", "host_header", "expected_host"),
    [
        ("/preserve", "preserve", "app.example.test"),
        ("/origin", "origin", "127.0.0.1"),
        ("/literal", "backend.internal:8081", "backend.internal"),
    ],
)
def test_route_host_header_modes(nginx, run_proxy, proxy_config, prefix, host_header, expected_host):
    routes = [
        {"path": "/preserve", "origin": "nginx", "strip_prefix": True, "host_header": "preserve"},
        {"path": "/origin", "origin": "nginx", "strip_prefix": True, "host_header": "origin"},
        {"path": "/literal", "origin": "nginx", "strip_prefix": True, "host_header": "backend.internal:8081"},
    ]
    proxy = run_proxy(proxy_config({"nginx": nginx}, routes))
    status, _, body = curl_get(
        f"http://127.0.0.1:{proxy.port}{prefix}/headers", "-H", "Host: app.example.test:8443"
    )
    assert status == 200
    seen = headers_seen_by_nginx(body)
    assert seen["host"] == expected_host
    # Whatever reaches the origin as Host, the client's host is passed on.
    assert seen["xfh"] == "app.example.test:8443"
    assert seen["uri"] == "/headers"


def test_route_host_header_origin_sends_server_authority(nginx, asyncio_origin, run_proxy, proxy_config):
    """nginx's $host drops the port; an origin that prints the raw Host shows it."""

    async def app(request):
        return asyncio_origin.reply(200, (request.header("host") or "").encode())

    origin = asyncio_origin(app)
    routes = [
        {"path": "/o", "origin": "raw", "host_header": "origin"},
        {"path": "/l", "origin": "raw", "host_header": "backend.internal:8081"},
        {"path": "/p", "origin": "raw"},
    ]
    proxy = run_proxy(proxy_config({"raw": origin}, routes))
    base = f"http://127.0.0.1:{proxy.port}"
    assert curl_get(f"{base}/o", "-H", "Host: app.example.test")[2] == origin.address.encode()
    assert curl_get(f"{base}/l", "-H", "Host: app.example.test")[2] == b"backend.internal:8081"
    assert curl_get(f"{base}/p", "-H", "Host: app.example.test:99")[2] == b"app.example.test:99"


def test_strip_prefix(nginx, run_proxy, proxy_config):
    routes = [
        {"path": "/static", "origin": "nginx", "strip_prefix": True},
        {"path": "/kept", "origin": "nginx"},
        {"path": "/", "origin": "nginx"},
    ]
    proxy = run_proxy(proxy_config({"nginx": nginx}, routes))
    base = f"http://127.0.0.1:{proxy.port}"

    status, _, body = curl_get(f"{base}/static/10k.bin")
    assert (status, body) == (200, nginx.file("10k.bin"))
    _, _, body = curl_get(f"{base}/static/headers?q=1")
    assert headers_seen_by_nginx(body)["uri"] == "/headers?q=1"
    _, _, body = curl_get(f"{base}/static")
    assert body == nginx.file("index.html")
    # Whole segments only: /staticx is not under /static (it goes to "/").
    status, _, _ = curl_get(f"{base}/staticx/10k.bin")
    assert status == 404
    # A route without strip_prefix sends the path unchanged.
    status, _, _ = curl_get(f"{base}/kept/10k.bin")
    assert status == 404  # nginx has no /kept directory


# --- proxy-made errors ---------------------------------------------------------------------


def test_no_route_is_404_with_proxy_status(nginx, run_proxy, proxy_config):
    proxy = run_proxy(proxy_config({"nginx": nginx}, [{"path": "/only", "origin": "nginx"}]))
    status, fields, body = curl_get(f"http://127.0.0.1:{proxy.port}/elsewhere")
    assert status == 404
    proxy_status = field(fields, "Proxy-Status")
    assert proxy_status is not None
    assert proxy_status.startswith("muxproxy;")
    assert "error=destination_not_found" in proxy_status
    assert field(fields, "Content-Length") == str(len(body))

    # The connection stays usable after a 404 the proxy made itself.
    with RawClient(proxy.port) as client:
        client.send(get("/elsewhere") + get("/only"))
        missing, routed = client.receive(2)
    assert missing.status == 404
    assert "error=destination_not_found" in missing.header("Proxy-Status")
    assert routed.header("Proxy-Status") is None
    assert routed.header("Server").startswith("nginx/")


def test_content_length_with_transfer_encoding_is_400_and_closes(nginx_proxy):
    with RawClient(nginx_proxy.port) as client:
        client.send(
            b"POST /100b.bin HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            + get("/100b.bin")
        )
        data = client.read_until_closed()
    status_line, fields, rest = split_raw_response(data)
    assert status_line.split(" ", 2)[1] == "400"
    assert "error=http_request_error" in field(fields, "Proxy-Status")
    assert field(fields, "Connection") == "close"
    assert len(rest) == int(field(fields, "Content-Length"))  # nothing after it: no smuggled request answered


def test_http11_request_without_host_is_400(nginx_proxy):
    with RawClient(nginx_proxy.port) as client:
        client.send(b"GET /100b.bin HTTP/1.1\r\n\r\n")
        response = client.receive(1)[0]
    assert response.status == 400
    assert "error=http_request_error" in response.header("Proxy-Status")


@pytest.mark.parametrize("pieces", [1, 2, 20], ids=["one-write", "two-writes", "twenty-writes"])
def test_request_head_over_max_head_size_is_431_however_it_arrives(nginx, run_proxy, proxy_config, pieces):
    """The limit is on the head, not on how the client's writes split it."""
    proxy = run_proxy(proxy_config({"nginx": nginx}, limits={"max_head_size": "1KiB"}))
    head = get("/100b.bin", extra="X-Filler: " + "f" * 1500 + "\r\n")
    assert len(head) > 1500
    with RawClient(proxy.port) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        size = -(-len(head) // pieces)
        for start in range(0, len(head), size):
            client.send(head[start : start + size])
            time.sleep(0.05)  # separate reads on the proxy's side; not a timing assertion
        response = client.receive(1)[0]
    assert response.status == 431
    assert response.header("Proxy-Status") is not None


def test_origin_down_is_502_with_proxy_status(run_proxy, proxy_config):
    proxy = run_proxy(proxy_config({"gone": f"127.0.0.1:{free_port()}"}))
    status, fields, _ = curl_get(f"http://127.0.0.1:{proxy.port}/x")
    assert status == 502
    assert "error=connection_refused" in field(fields, "Proxy-Status")


# --- memory: finished requests are freed at once -------------------------------------------


def test_finished_requests_leave_no_reference_cycles(nginx, every_kind_of_origin):
    """Each request's objects are freed by reference counting, not left to the collector.

    Kept-alive responses from nginx and from a directory origin, a 404, a 502
    from an origin that is down, and a client that leaves mid-response: every
    way a plain request ends.  A cycle here costs a collection every ~1,200
    requests under load (docs/performance.md, eighth part); before the fix
    each request left 8 objects.
    """
    from proxy.core.forwarding import OutboundRequest
    from proxy.core.http1.messages import RequestHead
    from proxy.shell.files import FileExchange
    from proxy.shell.origin import HttpExchange
    from proxy.shell.plain import PlainRequest

    proxy = every_kind_of_origin
    with CyclicGarbage() as garbage:
        with RawClient(proxy.port) as client:
            for _ in range(20):
                client.send(get("/100b.bin") + get("/10k.bin") + get("/files/page.txt"))
                responses = client.receive(3)
                expected = [nginx.file("100b.bin"), nginx.file("10k.bin"), DIRECTORY_PAGE]
                assert [r.body for r in responses] == expected
            client.send(get("/missing") + get("/gone/x"))
            assert [r.status for r in client.receive(2)] == [404, 502]
        with RawClient(proxy.port) as client:
            client.send(get("/1m.bin"))
            client.sock.recv(1)  # the response has begun; then the client leaves
        assert proxy.wait_until(lambda: not proxy.server.connections)
        garbage.collect()
        per_request = (PlainRequest, HttpExchange, FileExchange, OutboundRequest, RequestHead)
        assert garbage.count(*per_request) == {}
