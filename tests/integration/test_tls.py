"""TLS listeners end to end: real TLS clients -> muxproxy (TLS) -> nginx and scripted origins.

A trustme CA issues a certificate for "localhost" and 127.0.0.1; the proxy's
[[listener]] names the chain and key files (port 0), and clients trust only
that CA.  Clients are curl (/usr/bin/curl, OpenSSL), Python's ssl module for
what curl cannot express (the ALPN offer, the protocol version, raw mux
streams) and raw TCP for the client that never speaks TLS.

What a TLS listener promises (docs/configuration.md, "TLS"): TLS 1.2 or
later, ALPN http/1.1, everything else exactly as on a plain listener except
that requests are forwarded with X-Forwarded-Proto: https and proto=https in
Forwarded.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import ssl
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from proxy.config import parse_config_text
from tests.support.harness import free_port, inner_request
from tests.support.muxwire import InnerResponse, MuxReader, OuterReader

CURL = "/usr/bin/curl"
TIMEOUT = 10.0


# --- certificates, configurations, clients ----------------------------------------------


@dataclass
class TlsFiles:
    ca: trustme.CA
    ca_path: Path
    certificate: Path
    key: Path


def issue(ca: trustme.CA, directory: Path) -> TlsFiles:
    """A chain and key for "localhost" and 127.0.0.1 from `ca`, in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    issued = ca.issue_cert("localhost", "127.0.0.1")
    files = TlsFiles(ca, directory / "ca.pem", directory / "chain.pem", directory / "key.pem")
    ca.cert_pem.write_to_path(str(files.ca_path))
    files.certificate.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    files.key.write_bytes(issued.private_key_pem.bytes())
    return files


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return issue(trustme.CA(), tmp_path_factory.mktemp("tls"))


def tls_listener(files: TlsFiles, address: str = "127.0.0.1:0") -> str:
    return (
        f'[[listener]]\naddress = "{address}"\n'
        f'tls_certificate = "{files.certificate}"\ntls_key = "{files.key}"\n'
    )


PLAIN_LISTENER = '[[listener]]\naddress = "127.0.0.1:0"\n'


def client_context(files: TlsFiles, alpn: list[str] | None = None) -> ssl.SSLContext:
    """A verifying client context that trusts only the test CA."""
    context = ssl.create_default_context(cafile=str(files.ca_path))
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    return context


def tls_connect(port: int, context: ssl.SSLContext, host: str = "localhost") -> ssl.SSLSocket:
    """A TCP connection to 127.0.0.1:port with the TLS handshake done."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


def https_get(port: int, files: TlsFiles, target: str, headers: dict[str, str] | None = None):
    """GET over TLS with http.client: (status, headers, body)."""
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=TIMEOUT, context=client_context(files))
    try:
        connection.request("GET", target, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        connection.close()


def curl(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([CURL, "-sS", "--http1.1", *args], check=False, capture_output=True, timeout=TIMEOUT * 2)
    assert result.returncode == 0, f"curl {args} exited {result.returncode}: {result.stderr.decode()}"
    return result


def headers_seen_by_nginx(body: bytes) -> dict[str, str]:
    return dict(line.partition("=")[::2] for line in body.decode("latin-1").splitlines())


def listener_ports(proxy) -> list[int]:
    """Bound ports in [[listener]] order (the server opens them in that order)."""
    return [port for _, port in proxy.server.addresses]


def peer_closes(sock: socket.socket, timeout: float) -> bool:
    """Does the peer close `sock` (EOF or reset) within `timeout`, sending nothing?"""
    sock.settimeout(timeout)
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    assert data == b"", f"the proxy answered {data[:200]!r}"
    return True


@pytest.fixture
def recording_origin(asyncio_origin):
    """A scripted origin that answers 200 "ok" and records what reached it."""

    async def app(request):
        return asyncio_origin.reply(200, b"ok", {"Content-Type": "text/plain"})

    return asyncio_origin(app)


def reload(proxy, text: str) -> None:
    """Validate `text` as a reload does and apply it on the proxy's loop."""
    config = parse_config_text(text + '\n[log]\naccess = "off"\n', "test.toml", Path.cwd())
    asyncio.run_coroutine_threadsafe(proxy.server.reload(config), proxy.loop).result(TIMEOUT)


# --- plain requests over TLS -----------------------------------------------------------------


@pytest.fixture
def tls_proxy(nginx, run_proxy, proxy_config, tls):
    """One TLS listener in front of nginx."""
    return run_proxy(tls_listener(tls) + proxy_config({"nginx": nginx}))


def test_curl_gets_the_page_over_https(nginx, tls_proxy, tls):
    port = tls_proxy.port
    for url in (f"https://localhost:{port}/", f"https://127.0.0.1:{port}/index.html"):
        result = curl("--cacert", str(tls.ca_path), "--resolve", f"localhost:{port}:127.0.0.1",
                      "--write-out", "\n%{http_code} %{http_version} %{scheme}", url)
        body, _, summary = result.stdout.rpartition(b"\n")
        assert summary.lower() == b"200 1.1 https"
        assert body == nginx.file("index.html")
    # A larger body, read whole through TLS records.
    result = curl("--cacert", str(tls.ca_path), f"https://127.0.0.1:{port}/1m.bin")
    assert result.stdout == nginx.file("1m.bin")


def test_curl_refuses_the_proxy_without_the_test_ca(tls_proxy):
    # The listener serves the configured chain: a client that trusts only the
    # system CAs cannot verify it (curl exit 60, "SSL certificate problem").
    result = subprocess.run([CURL, "-sS", f"https://127.0.0.1:{tls_proxy.port}/"], check=False, capture_output=True,
                            timeout=TIMEOUT * 2)
    assert result.returncode == 60, result.stderr


def test_forwarded_proto_is_https(tls_proxy, tls):
    port = tls_proxy.port
    # A client's own claims about the scheme are not believed: the proxy
    # states the scheme of the connection it accepted.
    status, _, body = https_get(port, tls, "/headers", {"X-Forwarded-Proto": "http"})
    assert status == 200
    seen = headers_seen_by_nginx(body)
    assert seen["xfp"] == "https"
    assert seen["forwarded"] == f'for=127.0.0.1;proto=https;host="127.0.0.1:{port}"'
    assert seen["xfh"] == f"127.0.0.1:{port}"
    assert seen["via"] == "1.1 muxproxy"


# --- ALPN and protocol versions ---------------------------------------------------------------


@pytest.mark.parametrize("offer", [["h2", "http/1.1"], ["http/1.1"], ["http/1.1", "h2"]])
def test_alpn_negotiates_http11(nginx, tls_proxy, tls, offer):
    with tls_connect(tls_proxy.port, client_context(tls, offer)) as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        sock.sendall(b"GET /100b.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < 100:
            piece = sock.recv(65536)
            assert piece, data
            data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and body == nginx.file("100b.bin")


def test_client_without_alpn_is_served(nginx, tls_proxy, tls):
    with tls_connect(tls_proxy.port, client_context(tls)) as sock:
        assert sock.selected_alpn_protocol() is None
    assert https_get(tls_proxy.port, tls, "/100b.bin")[2] == nginx.file("100b.bin")


def test_h2_only_client_gets_no_alpn_and_its_preface_is_refused(recording_origin, run_proxy, proxy_config, tls):
    proxy = run_proxy(tls_listener(tls) + proxy_config({"app": recording_origin}))
    with tls_connect(proxy.port, client_context(tls, ["h2"])) as sock:
        # What happens: the handshake completes and no protocol is selected.
        # Python's ssl answers a list with no overlap with "no ALPN" (OpenSSL
        # SSL_TLSEXT_ERR_NOACK) rather than the no_application_protocol alert
        # of RFC 7301 §3.2.  That is safe: a client that asked for h2 and did
        # not get it must not speak h2 (RFC 9113 §3.2), and if it sends the
        # preface anyway it reaches a strict HTTP/1.1 parser, is refused with
        # 400 and the connection closes.  Nothing reaches an origin.
        assert sock.selected_alpn_protocol() is None
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        data = b""
        while piece := sock.recv(65536):
            data += piece
    assert data.startswith(b"HTTP/1.1 400 "), data
    assert b"\r\nConnection: close\r\n" in data
    assert recording_origin.requests == []


class Tls11Server:
    """A bare TLS server that accepts TLS 1.1 (one connection): it shows the
    client context below really offers TLS 1.1, so the proxy's refusal is the
    proxy's and not the client's own policy."""

    def __init__(self, files: TlsFiles) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1_1
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.minimum_version = ssl.TLSVersion.TLSv1_1
        self.context.set_ciphers("DEFAULT:@SECLEVEL=0")
        self.context.load_cert_chain(files.certificate, files.key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.version: str | None = None
        self.error: OSError | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(TIMEOUT)
        try:
            conn, _ = self.listener.accept()
            with self.context.wrap_socket(conn, server_side=True) as tls_conn:
                self.version = tls_conn.version()
        except OSError as exc:  # ssl.SSLError included: reported by the test
            self.error = exc

    def close(self) -> None:
        self.thread.join(TIMEOUT)
        self.listener.close()


def old_client_context(files: TlsFiles, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = client_context(files)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = version
        context.maximum_version = version
    # OpenSSL 3 allows TLS < 1.2 only at security level 0.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def test_tls11_client_is_refused(tls_proxy, tls):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tls10, tls11 = ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1
    control = Tls11Server(tls)
    try:
        with tls_connect(control.port, old_client_context(tls, tls11)) as sock:
            assert sock.version() == "TLSv1.1"
    finally:
        control.close()
    assert (control.version, control.error) == ("TLSv1.1", None)

    # The proxy refuses it in the handshake.  (It closes without a
    # protocol_version alert, so the client sees an unexpected EOF rather than
    # "unsupported protocol": asyncio's SSL transport does not flush the alert
    # OpenSSL writes when a server handshake fails; the refusal is the point.)
    for version in (tls11, tls10):
        with pytest.raises(ssl.SSLError):
            tls_connect(tls_proxy.port, old_client_context(tls, version)).close()
    assert tls_proxy.call(lambda: len(tls_proxy.server.connections)) == 0


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls12_and_tls13_clients_are_served(nginx, tls_proxy, tls, version):
    context = client_context(tls)
    context.minimum_version = context.maximum_version = version
    with tls_connect(tls_proxy.port, context) as sock:
        assert sock.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
        sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while not data.endswith(nginx.file("index.html")):
            piece = sock.recv(65536)
            assert piece, data
            data += piece
    assert data.startswith(b"HTTP/1.1 200 ")


# --- mux streams over TLS ----------------------------------------------------------------------


class TlsMuxClient:
    """One mux stream (chunked POST /_mux) over a TLS connection."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.sock = tls_connect(port, context)
        self.reader = OuterReader(MuxReader())
        head = (
            f"POST /_mux HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Type: application/http\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        )
        self.sock.sendall(head.encode("ascii"))

    def send(self, data: bytes) -> None:
        self.sock.sendall(b"%x\r\n%b\r\n" % (len(data), data))

    def end(self) -> None:
        self.sock.sendall(b"0\r\n\r\n")

    def receive(self, count: int) -> list[InnerResponse]:
        got: list[InnerResponse] = []
        deadline = time.monotonic() + TIMEOUT
        while len(got) < count and not self.reader.ended:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            data = self.sock.recv(65536)
            if not data:
                break
            got.extend(self.reader.feed(data))
        return got

    def close(self) -> None:
        self.sock.close()


def test_mux_stream_over_tls(nginx, tls_proxy, tls):
    port = tls_proxy.port
    files = ["index.html", "100b.bin", "10k.bin", "100k.bin", "1m.bin"]
    client = TlsMuxClient(port, client_context(tls, ["h2", "http/1.1"]))
    try:
        assert client.sock.selected_alpn_protocol() == "http/1.1"
        # Two inner requests in one chunk, then one chunk each, then a few
        # more while the first answers are arriving.
        client.send(inner_request("GET", "/index.html", request_id="r0")
                    + inner_request("GET", "/headers?mux", request_id="headers"))
        for n, name in enumerate(files[1:], start=1):
            client.send(inner_request("GET", f"/{name}", request_id=f"r{n}"))
        first = client.receive(3)
        client.send(b"".join(inner_request("GET", "/10k.bin", request_id=f"late{n}") for n in range(5)))
        client.end()
        responses = first + client.receive(1 << 30)
        assert client.reader.ended
        assert client.reader.head.status == 200
        assert client.reader.head.header("Content-Type") == "application/http"
    finally:
        client.close()

    table = {response.request_id: response for response in responses}
    assert len(responses) == len(table) == len(files) + 1 + 5
    for n, name in enumerate(files):
        assert table[f"r{n}"].status == 200 and table[f"r{n}"].body == nginx.file(name), name
    for n in range(5):
        assert table[f"late{n}"].body == nginx.file("10k.bin")
    # Every inner request of a stream that arrived over TLS is https too.
    seen = headers_seen_by_nginx(table["headers"].body)
    assert seen["xfp"] == "https"
    assert seen["forwarded"] == f'for=127.0.0.1;proto=https;host="localhost:{port}"'
    assert seen["uri"] == "/headers?mux"


# --- plain and TLS side by side, and mistaken clients ------------------------------------------


def test_plain_and_tls_listeners_side_by_side(nginx, run_proxy, proxy_config, tls):
    proxy = run_proxy(tls_listener(tls) + PLAIN_LISTENER + proxy_config({"nginx": nginx}))
    tls_port, plain_port = listener_ports(proxy)

    _, _, body = https_get(tls_port, tls, "/headers")
    seen = headers_seen_by_nginx(body)
    assert (seen["xfp"], seen["forwarded"]) == ("https", f'for=127.0.0.1;proto=https;host="127.0.0.1:{tls_port}"')

    plain = curl(f"http://127.0.0.1:{plain_port}/headers").stdout
    seen = headers_seen_by_nginx(plain)
    assert (seen["xfp"], seen["forwarded"]) == ("http", f'for=127.0.0.1;proto=http;host="127.0.0.1:{plain_port}"')

    secure = curl("--cacert", str(tls.ca_path), f"https://127.0.0.1:{tls_port}/10k.bin").stdout
    assert secure == nginx.file("10k.bin")
    assert curl(f"http://127.0.0.1:{plain_port}/10k.bin").stdout == nginx.file("10k.bin")

    # Each port speaks only its own protocol: a TLS ClientHello on the plain
    # port is not TLS to it (the handshake fails, curl exit 35).
    wrong = subprocess.run([CURL, "-sS", "--cacert", str(tls.ca_path), f"https://127.0.0.1:{plain_port}/"],
                           check=False, capture_output=True, timeout=TIMEOUT * 2)
    assert wrong.returncode == 35, wrong.stderr


def test_plain_http_on_a_tls_listener_fails_the_handshake_and_forwards_nothing(
    recording_origin, run_proxy, proxy_config, tls
):
    proxy = run_proxy(tls_listener(tls) + proxy_config({"app": recording_origin}))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /secret HTTP/1.1\r\nHost: localhost\r\n\r\n")
        # Not a ClientHello: the handshake fails and the connection closes
        # without a byte of HTTP in answer.
        assert peer_closes(sock, TIMEOUT)
    # curl says the same from the client side: "http://" to the TLS port.
    result = subprocess.run([CURL, "-sS", f"http://127.0.0.1:{proxy.port}/secret"], check=False,
                            capture_output=True, timeout=TIMEOUT * 2)
    assert result.returncode in (52, 56), result  # empty reply / receive failure
    assert recording_origin.requests == []
    assert proxy.call(lambda: len(proxy.server.connections)) == 0
    # The listener is unharmed and serves the next, proper client.
    assert https_get(proxy.port, tls, "/fine")[0] == 200
    assert [request.target for request in recording_origin.requests] == ["/fine"]


# --- reloads -------------------------------------------------------------------------------------


def test_reload_turns_a_plain_listener_into_a_tls_one(recording_origin, run_proxy, proxy_config, tls):
    port = free_port()
    rest = proxy_config({"app": recording_origin})
    proxy = run_proxy(f'[[listener]]\naddress = "127.0.0.1:{port}"\n' + rest)
    assert curl(f"http://127.0.0.1:{port}/before").stdout == b"ok"
    reload(proxy, tls_listener(tls, f"127.0.0.1:{port}") + rest)
    assert https_get(port, tls, "/after")[2] == b"ok"
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /plain HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert peer_closes(sock, TIMEOUT)
    assert [request.target for request in recording_origin.requests] == ["/before", "/after"]


def test_reload_serves_a_renewed_certificate(recording_origin, run_proxy, proxy_config, tmp_path):
    # The everyday renewal: certbot (or an operator) replaces the files in
    # place, under the same names, and reloads.  Validation at reload reads
    # the new files; the listener must then serve them, as nginx does after
    # `nginx -s reload`.  Otherwise the old certificate is served until a full
    # restart, and expires in service although the operator renewed it.
    old = issue(trustme.CA(), tmp_path)
    text = tls_listener(old, f"127.0.0.1:{free_port()}") + proxy_config({"app": recording_origin})
    proxy = run_proxy(text)
    with tls_connect(proxy.port, client_context(old)):
        pass
    new = issue(trustme.CA(), tmp_path)  # same paths, new CA, certificate and key
    assert (new.certificate, new.key) == (old.certificate, old.key)
    reload(proxy, text)
    with tls_connect(proxy.port, client_context(new)) as sock:
        assert sock.version() is not None


# --- bounds that must hold on a TLS listener too --------------------------------------------------

#: A ClientHello cut short: the 5-byte record header of a handshake record
#: announcing 512 bytes, which never come.
PARTIAL_CLIENT_HELLO = bytes([0x16, 0x03, 0x01, 0x02, 0x00])


def test_connections_in_the_handshake_count_against_max_client_connections(
    recording_origin, run_proxy, proxy_config, tls
):
    # limits.max_client_connections: "beyond it new connections are closed at
    # once, rather than accept() failing with EMFILE for everyone".  A TCP
    # connection to a TLS listener holds a descriptor from accept() on,
    # whether or not it ever finishes the handshake.
    limits = {"max_client_connections": 2}
    proxy = run_proxy(tls_listener(tls) + PLAIN_LISTENER + proxy_config({"app": recording_origin}, limits=limits))
    tls_port, plain_port = listener_ports(proxy)

    # Control: on the plain listener the third silent connection is closed at once.
    plain = [socket.create_connection(("127.0.0.1", plain_port), timeout=TIMEOUT) for _ in range(3)]
    try:
        assert [peer_closes(sock, 1.0) for sock in plain] == [False, False, True]
    finally:
        for sock in plain:
            sock.close()
    assert proxy.wait_until(lambda: not proxy.server.connections)

    silent = [socket.create_connection(("127.0.0.1", tls_port), timeout=TIMEOUT) for _ in range(5)]
    try:
        closed = [peer_closes(sock, 1.0) for sock in silent]
    finally:
        for sock in silent:
            sock.close()
    assert closed.count(True) >= 3, f"{closed.count(False)} handshaking connections kept open (limit 2)"


def test_a_trickled_handshake_is_cut_at_the_header_deadline(recording_origin, run_proxy, proxy_config, tls):
    # docs/threat-model.md §6: a client gets limits.header_timeout from its
    # first byte to a complete head, a deadline that cuts a slowloris off.
    # On a TLS listener the first bytes are the ClientHello; a client that
    # trickles it must be cut off just as soon as one trickling a plain head.
    limits = {"header_timeout": "1s"}
    proxy = run_proxy(tls_listener(tls) + PLAIN_LISTENER + proxy_config({"app": recording_origin}, limits=limits))
    tls_port, plain_port = listener_ports(proxy)
    for port, first_bytes in ((plain_port, b"GET /slow"), (tls_port, PARTIAL_CLIENT_HELLO)):
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(first_bytes)
            started = time.monotonic()
            sock.settimeout(5.0)
            try:
                while sock.recv(65536):  # the plain side answers 408 first
                    pass
                closed = True
            except ConnectionResetError:
                closed = True
            except TimeoutError:
                closed = False
            waited = time.monotonic() - started
        kind = "plain" if port == plain_port else "TLS"
        assert closed, f"{kind} connection still open {waited:.1f}s after its first bytes (header_timeout 1s)"
    assert recording_origin.requests == []
