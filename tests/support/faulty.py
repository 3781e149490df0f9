"""Misbehaving origins for failure-mode tests: real sockets, scripted faults.

`ScriptedOrigin` is an HTTP/1.1 server on 127.0.0.1 whose behaviour is chosen
by the request path (see `ScriptedOrigin` for the list).  It runs on plain
blocking sockets, one thread per connection, because a fault is easiest to
script as a straight sequence of writes, sleeps and closes; and it is
independent of the proxy's code (no httptools, no asyncio) so that it can not
share a bug with what it tests.  It records what it saw: connections
accepted, connections the peer closed, and every request (method, target,
headers, body, connection number).

`UnacceptingListener` is a local socket that never completes a TCP handshake
(its accept queue is full), for connect timeouts without any network.
`refused_port()` is a port on 127.0.0.1 where nothing listens.

Every thread started here is stopped by `stop()` / `close()` (the context
managers call them): blocked reads and writes are woken with shutdown(), and
sleeping behaviours wait on the stop event, so teardown takes milliseconds.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence
from urllib.parse import parse_qs, urlsplit

#: Longest request head the origin reads; tests never send more.
MAX_HEAD = 64 * 1024

#: Pause between the last bytes of a broken response and the reset/close, so
#: the proxy has read what was sent before the fault arrives (on loopback
#: the bytes are in the proxy's socket buffer at once; the pause only makes
#: the proxy's *reading* order deterministic).
FAULT_PAUSE = 0.1

_PATTERN = bytes(range(251))  # a prime length: a shifted slice never matches


def big_body(size: int) -> bytes:
    """The fixed content /big?size=N sends: byte i is i % 251."""
    reps = size // len(_PATTERN) + 1
    return (_PATTERN * reps)[:size]


@dataclass
class RecordedRequest:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    connection: int  # 1-based number of the connection it arrived on

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


@dataclass
class _Connection:
    number: int
    sock: socket.socket
    thread: threading.Thread | None = None
    requests: int = 0
    closed: threading.Event = field(default_factory=threading.Event)
    #: Set by /close-after-response: the next request is read, then dropped.
    doomed: bool = False


class _PeerClosed(Exception):
    pass


class _Reader:
    """Buffered reads of HTTP/1.1 requests from a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise _PeerClosed()
        self.buffer += data

    def read_until(self, marker: bytes, limit: int = MAX_HEAD) -> bytes:
        while True:
            end = self.buffer.find(marker)
            if end >= 0:
                out, self.buffer = self.buffer[:end], self.buffer[end + len(marker) :]
                return out
            if len(self.buffer) > limit:
                raise ValueError("request head too large")
            self._fill()

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out

    def read_request(self) -> tuple[str, str, list[tuple[str, str]], bytes] | None:
        """(method, target, headers, body), or None if the peer closed between requests."""
        try:
            head = self.read_until(b"\r\n\r\n")
        except _PeerClosed:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name, value.strip()))
        fields = {name.lower(): value for name, value in headers}
        if fields.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    while self.read_until(b"\r\n"):
                        pass  # trailer fields, ignored
                    break
                parts.append(self.read_exactly(size))
                self.read_until(b"\r\n")
            body = b"".join(parts)
        else:
            body = self.read_exactly(int(fields.get("content-length", "0")))
        return method, target, headers, body

    def wait_closed(self, stop: threading.Event) -> None:
        """Read and drop everything until the peer closes (or we stop)."""
        while not stop.is_set():
            try:
                self._fill()
            except _PeerClosed:
                return
            self.buffer = b""


def _response(status: int, body: bytes, headers: Sequence[tuple[str, str]] = (), *, length: bool = True) -> bytes:
    reasons = {200: "OK", 404: "Not Found"}
    lines = [f"HTTP/1.1 {status} {reasons.get(status, 'Whatever')}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN: SO_LINGER on, timeout 0."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# What a behaviour tells the connection loop to do next.
KEEP = "keep"  # read the next request
CLOSE = "close"  # graceful close (FIN)
RESET = "reset"  # abortive close (RST)
HANG = "hang"  # answer nothing more; keep the socket open until the peer closes


class ScriptedOrigin:
    """An HTTP/1.1 origin whose behaviour is chosen by the request path.

    Normal paths keep the connection alive; the faulty ones do what their
    name says:

    /ok                    200 "ok" (Content-Length), keep-alive
    /slow?ms=N             the same, after N ms
    /hang                  reads the request, never answers, keeps the socket open
    /reset                 RST before any response byte (SO_LINGER 0, close)
    /reset-mid?size=N      head with Content-Length N, N//2 body bytes, then RST
    /close-mid-chunked     chunked head and one chunk "hello", then close (FIN)
    /garbage               bytes that are not HTTP, then waits for the peer to close
    /cl-te                 a response with both Content-Length and Transfer-Encoding
                           (a valid chunked body), then keeps the connection open
    /extra                 a complete response and, in the same write, a second
                           complete response nobody asked for; then keeps the
                           connection open (a reuse would hand it to the next request)
    /close-delimited?size=N  HTTP/1.1 200 without Content-Length or chunked: N bytes
                           (default 1000) of big_body, then close
    /big?size=N            N bytes of big_body, Content-Length, keep-alive
    /drip?ms=M&count=C     chunked; C chunks "drip\\n", one every M ms
    /echo                  200 with JSON {method, target, headers, body (latin-1)}
    /close-after-response  200 "ok" keep-alive, then see `_serve` for the next request
    /echo-after?ms=N       /echo, after N ms
    /mirror?framing=F      200 whose body is the request body verbatim, framed by
                           F = length (default), chunked or close (then close)
    /tagged?size=N&chunked=1&status=S&interim=K
                           status S (default 200) with the origin's own
                           Content-Location and Request-Id fields (several
                           spellings), then N bytes of big_body (default 2),
                           Content-Length or chunked (with the same fields again
                           as trailer fields); no body for HEAD/204/304.  First K
                           interim responses (103 Early Hints, default 0) that
                           carry those fields too
    /late?ms=N             200 "ok" keep-alive; N ms later (default 100), with
                           no request outstanding, an unsolicited complete
                           response "late response" (X-Late: yes); counted in
                           `late_responses`; then reads the next request as usual
    /bodiless-with-body?status=S
                           a response that has no body (status S = 204 or 304, or
                           any status to a HEAD request) followed, in the same
                           write, by bytes that form a complete response
                           ("smuggled", X-Smuggled: yes); then keeps the connection
                           open: a reuse would hand them to the next request
    anything else          404

    Every response carries `X-Origin: <name>` and `X-Origin-Connection: <n>`
    so a test can tell which server and which connection answered.
    """

    def __init__(self, name: str = "origin", host: str = "127.0.0.1", port: int = 0) -> None:
        self.name = name
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._accepting = threading.Event()
        self._connections: list[_Connection] = []
        self.requests: list[RecordedRequest] = []
        #: Unsolicited responses /late has written so far.
        self.late_responses = 0

    def __repr__(self) -> str:
        return (
            f"<ScriptedOrigin {self.name} {self.address} {self.connection_count} connections "
            f"({self.open_connections} open), {len(self.requests)} requests>"
        )

    # --- life cycle ---------------------------------------------------------------

    def __enter__(self) -> "ScriptedOrigin":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        self._stop.clear()
        self._listen()

    def stop(self) -> None:
        """Stop listening, cut every connection and join every thread."""
        self._stop.set()
        self.stop_listening(close_connections=True)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
            listener.listen(128)
        except OSError:
            listener.close()
            raise
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accepting.set()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, args=(listener,), name=f"{self.name}-accept", daemon=True
        )
        self._accept_thread.start()

    def stop_listening(self, *, close_connections: bool = True) -> None:
        """Close the listening socket, so connects to this port are refused;
        with `close_connections`, also close every open connection (FIN)."""
        self._accepting.clear()
        if self._accept_thread is not None:
            self._accept_thread.join(5)
            self._accept_thread = None
        self._listener = None
        if close_connections:
            with self._lock:
                connections = list(self._connections)
            for connection in connections:
                try:
                    connection.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed by its thread
            for connection in connections:
                if connection.thread is not None:
                    connection.thread.join(5)

    def resume_listening(self) -> None:
        """Listen again on the same port."""
        if self._listener is None:
            self._listen()

    def _accept_loop(self, listener: socket.socket) -> None:
        listener.settimeout(0.02)
        try:
            while self._accepting.is_set():
                try:
                    sock, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with self._lock:
                    connection = _Connection(len(self._connections) + 1, sock)
                    self._connections.append(connection)
                connection.thread = threading.Thread(
                    target=self._serve, args=(connection,), name=f"{self.name}-conn{connection.number}", daemon=True
                )
                connection.thread.start()
        finally:
            listener.close()

    # --- what the tests read ----------------------------------------------------------

    @property
    def connection_count(self) -> int:
        """Connections accepted so far."""
        with self._lock:
            return len(self._connections)

    @property
    def open_connections(self) -> int:
        """Accepted connections not yet closed (by either side)."""
        with self._lock:
            return sum(1 for c in self._connections if not c.closed.is_set())

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def requests_for(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    # --- one connection -------------------------------------------------------------

    def _serve(self, connection: _Connection) -> None:
        sock = connection.sock
        reader = _Reader(sock)
        action = CLOSE
        try:
            while not self._stop.is_set():
                request = reader.read_request()
                if request is None:
                    action = CLOSE
                    break
                method, target, headers, body = request
                connection.requests += 1
                with self._lock:
                    self.requests.append(RecordedRequest(method, target, headers, body, connection.number))
                if connection.doomed:
                    # /close-after-response came before on this connection:
                    # the request that reuses it is read and dropped, and the
                    # connection closed (FIN) without a response byte.  To the
                    # proxy this is exactly the keep-alive race (the origin
                    # closed an idle connection just as it was reused), but
                    # deterministic: closing earlier, while the connection sits
                    # idle in the pool, would race with the proxy noticing the
                    # FIN and dropping it before the reuse.
                    action = CLOSE
                    break
                action = self._respond(sock, reader, connection, method, target, headers, body)
                if action is not KEEP:
                    break
            if action is HANG:
                reader.wait_closed(self._stop)
                action = CLOSE
        except (OSError, _PeerClosed, ValueError):
            action = CLOSE
        finally:
            connection.closed.set()
            try:
                if action is RESET:
                    _reset(sock)
                else:
                    sock.close()
            except OSError:
                sock.close()

    def _respond(self, sock, reader, connection, method, target, headers, body) -> str:
        url = urlsplit(target)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        path = url.path
        tag = [("X-Origin", self.name), ("X-Origin-Connection", str(connection.number))]
        stop = self._stop
        if path == "/ok":
            sock.sendall(_response(200, b"ok", tag))
            return KEEP
        if path == "/slow":
            if stop.wait(int(query.get("ms", "1000")) / 1000):
                return CLOSE
            sock.sendall(_response(200, b"slow", tag))
            return KEEP
        if path == "/hang":
            return HANG
        if path == "/reset":
            return RESET
        if path == "/reset-mid":
            size = int(query.get("size", "1000"))
            sock.sendall(_response(200, b"", tag + [("Content-Length", str(size))], length=False))
            sock.sendall(big_body(size)[: size // 2])
            stop.wait(FAULT_PAUSE)
            return RESET
        if path == "/close-mid-chunked":
            sock.sendall(_response(200, b"", tag + [("Transfer-Encoding", "chunked")], length=False))
            sock.sendall(b"5\r\nhello\r\n")
            stop.wait(FAULT_PAUSE)
            sock.shutdown(socket.SHUT_WR)
            return CLOSE
        if path == "/garbage":
            sock.sendall(b"\x16\x03\x01\x00 this is not HTTP at all\r\n\r\n")
            return HANG
        if path == "/cl-te":
            head = tag + [("Content-Length", "5"), ("Transfer-Encoding", "chunked")]
            sock.sendall(_response(200, b"5\r\nhello\r\n0\r\n\r\n", head, length=False))
            return KEEP
        if path == "/extra":
            smuggled = _response(200, b"smuggled", [("X-Origin", self.name), ("X-Smuggled", "yes")])
            sock.sendall(_response(200, b"ok", tag) + smuggled)
            return KEEP
        if path == "/close-delimited":
            size = int(query.get("size", "1000"))
            sock.sendall(_response(200, big_body(size), tag, length=False))
            sock.shutdown(socket.SHUT_WR)
            return CLOSE
        if path == "/big":
            size = int(query.get("size", "1048576"))
            sock.sendall(_response(200, b"", tag + [("Content-Length", str(size))], length=False))
            sock.sendall(big_body(size))
            return KEEP
        if path == "/drip":
            interval = int(query.get("ms", "100")) / 1000
            count = int(query.get("count", "10"))
            sock.sendall(_response(200, b"", tag + [("Transfer-Encoding", "chunked")], length=False))
            for _ in range(count):
                if stop.wait(interval):
                    return CLOSE
                sock.sendall(b"5\r\ndrip\n\r\n")
            sock.sendall(b"0\r\n\r\n")
            return KEEP
        if path == "/echo":
            document = {
                "method": method,
                "target": target,
                "headers": [[name, value] for name, value in headers],
                "body": body.decode("latin-1"),
            }
            data = json.dumps(document).encode()
            sock.sendall(_response(200, data, tag + [("Content-Type", "application/json")]))
            return KEEP
        if path == "/close-after-response":
            connection.doomed = True
            sock.sendall(_response(200, b"ok", tag))
            return KEEP
        if path == "/echo-after":
            if stop.wait(int(query.get("ms", "0")) / 1000):
                return CLOSE
            document = {
                "method": method,
                "target": target,
                "headers": [[name, value] for name, value in headers],
                "body": body.decode("latin-1"),
            }
            data = json.dumps(document).encode()
            sock.sendall(_response(200, data, tag + [("Content-Type", "application/json")]))
            return KEEP
        if path == "/mirror":
            framing = query.get("framing", "length")
            if framing == "chunked":
                data = (b"%x\r\n%b\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
                sock.sendall(_response(200, data, tag + [("Transfer-Encoding", "chunked")], length=False))
                return KEEP
            if framing == "close":
                sock.sendall(_response(200, body, tag, length=False))
                sock.shutdown(socket.SHUT_WR)
                return CLOSE
            sock.sendall(_response(200, body, tag))
            return KEEP
        if path == "/tagged":
            status = int(query.get("status", "200"))
            own = [
                ("Content-Location", "/set-by-origin"),
                ("Request-Id", "set-by-origin"),
                ("request-id", "set-by-origin-lower"),
                ("CONTENT-LOCATION", "/set-by-origin-upper"),
            ]
            interim = b"".join(
                _response(103, b"", own + [("Link", "</style.css>; rel=preload")], length=False)
                for _ in range(int(query.get("interim", "0")))
            )
            if interim:
                sock.sendall(interim)
            if method == "HEAD" or status in (204, 304):
                length = [] if status == 204 else [("Content-Length", query.get("size", "2"))]
                sock.sendall(_response(status, b"", tag + own + length, length=False))
                return KEEP
            data = big_body(int(query.get("size", "2")))
            if query.get("chunked") == "1":
                trailer = "".join(f"{name}: {value}\r\n" for name, value in own).encode("latin-1")
                chunked = (b"%x\r\n%b\r\n" % (len(data), data) if data else b"") + b"0\r\n" + trailer + b"\r\n"
                sock.sendall(_response(status, chunked, tag + own + [("Transfer-Encoding", "chunked")], length=False))
            else:
                sock.sendall(_response(status, data, tag + own))
            return KEEP
        if path == "/late":
            sock.sendall(_response(200, b"ok", tag))
            if stop.wait(int(query.get("ms", "100")) / 1000):
                return CLOSE
            late = _response(200, b"late response", [("X-Origin", self.name), ("X-Late", "yes")])
            try:
                sock.sendall(late)
            finally:
                with self._lock:
                    self.late_responses += 1
            return KEEP
        if path == "/bodiless-with-body":
            status = int(query.get("status", "200"))
            smuggled = _response(200, b"smuggled", [("X-Origin", self.name), ("X-Smuggled", "yes")])
            head = _response(status, b"", tag + [("Content-Length", str(len(smuggled)))], length=False)
            sock.sendall(head + smuggled)
            return KEEP
        sock.sendall(_response(404, b"no such behaviour", tag))
        return KEEP


def refused_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connects are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class UnacceptingListener:
    """A listening socket that completes no handshake: connects to it time out.

    listen(0) with an accept queue filled by our own connects that nobody
    accepts: Linux then drops further SYNs (tcp_conn_request: "accept queue
    full"), so a connect stays in SYN-SENT until the caller's timeout, with
    no network and no unroutable address needed.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.fillers: list[socket.socket] = []
        try:
            self.sock.bind(("127.0.0.1", 0))
            self.sock.listen(0)
            self.port = self.sock.getsockname()[1]
            for _ in range(64):
                filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                self.fillers.append(filler)
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", self.port))
                _, writable, _ = select.select([], [filler], [], 0.3)
                if not writable:
                    return  # this one hangs: the queue is full
            raise RuntimeError("could not fill the accept queue")
        except BaseException:
            self.close()
            raise

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> "UnacceptingListener":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        for filler in self.fillers:
            filler.close()
        self.sock.close()
