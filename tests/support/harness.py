"""Running muxproxy for integration tests, and a blocking mux client.

`ProxyThread` runs a real `ProxyServer` on its own event loop (uvloop) in a
background thread, listening on 127.0.0.1 with a port chosen at run time.
Tests talk to it over real sockets, and read its internals (pool counters)
through `call()`, which runs a function on the proxy's loop thread.

`ProxyProcess` runs `python -m proxy` as a separate process, for tests that
measure the proxy's own memory (/proc/PID/status).

`MuxClient` opens one outer connection, sends inner requests as chunks of a
chunked POST /_mux, and reads inner responses as they arrive.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from proxy.config import parse_config_text
from tests.support.muxwire import InnerResponse, MuxReader, OuterReader

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


class ProxyThread:
    """A ProxyServer for `config_text` (TOML) on a background event loop."""

    def __init__(self, config_text: str, base_dir: Path | None = None) -> None:
        if "[[listener]]" not in config_text:
            config_text = '[[listener]]\naddress = "127.0.0.1:0"\n' + config_text
        if "[log]" not in config_text:
            config_text += '\n[log]\naccess = "off"\n'
        self.config = parse_config_text(config_text, "test.toml", base_dir or REPO)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> "ProxyThread":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        import uvloop

        from proxy.shell.server import ProxyServer

        def run() -> None:
            loop = uvloop.new_event_loop()
            self.loop = loop
            asyncio.set_event_loop(loop)
            self.server = ProxyServer(self.config)
            try:
                loop.run_until_complete(self.server.start())
            except BaseException as exc:  # reported to the test thread
                self._error = exc
                self._ready.set()
                loop.close()
                return
            self._ready.set()
            loop.run_forever()
            loop.run_until_complete(self.server.stop())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="muxproxy-test", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error

    @property
    def port(self) -> int:
        return self.server.addresses[0][1]

    def call(self, fn: Callable, *args):
        """Run fn(*args) on the proxy's loop thread and return its result."""
        done = threading.Event()
        result: list = []

        def runner() -> None:
            try:
                result.append(("ok", fn(*args)))
            except BaseException as exc:
                result.append(("error", exc))
            done.set()

        self.loop.call_soon_threadsafe(runner)
        if not done.wait(10):
            raise TimeoutError("the proxy's event loop did not answer")
        kind, value = result[0]
        if kind == "error":
            raise value
        return value

    def pool_counters(self) -> dict[str, dict[str, int]]:
        return self.call(self.server.pool_counters)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll predicate (run on the proxy thread) until true or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.call(predicate):
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        if self.loop is not None and self._thread is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


class ProxyProcess:
    """`python -m proxy --config FILE` as a child process."""

    def __init__(self, config_text: str, tmp_path: Path) -> None:
        self.port = free_port()
        text = f'[[listener]]\naddress = "127.0.0.1:{self.port}"\n' + config_text
        # One process and an admin listener on any free port, unless the
        # test says otherwise: parallel test runs must not meet on 9901.
        if "[server]" not in text:
            text += "\n[server]\nworkers = 1\n"
        if "[admin]" not in text:
            text += '\n[admin]\naddress = "127.0.0.1:0"\n'
        self.config_path = tmp_path / "muxproxy.toml"
        self.config_path.write_text(text)
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "ProxyProcess":
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "--config", str(self.config_path)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.process.kill()
            raise RuntimeError(self.process.stderr.read().decode())
        return self

    def __exit__(self, *exc_info) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            if self.process.stderr is not None:
                self.process.stderr.close()

    def rss_kib(self) -> int:
        """Resident memory of the proxy process, from /proc."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")


def inner_request(
    method: str,
    target: str,
    *,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    if request_id is not None:
        lines.append(f"Request-Id: {request_id}")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class MuxClient:
    """One outer connection carrying a chunked application/http request."""

    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        headers: dict[str, str] | None = None,
        head_ids: set[str] | None = None,
        gzip: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.head_ids = head_ids if head_ids is not None else set()
        self.reader = OuterReader(MuxReader(self._is_head, gzip=gzip))
        self.closed_by_peer = False
        fields = {"Host": f"{host}:{port}", "Content-Type": "application/http", "Transfer-Encoding": "chunked"}
        if gzip:
            fields["Accept-Encoding"] = "gzip"
        fields.update(headers or {})
        head = "POST /_mux HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
        self.sock.sendall(head.encode("latin-1"))

    def _is_head(self, response: InnerResponse) -> bool:
        return response.request_id in self.head_ids

    def __enter__(self) -> "MuxClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        """Send raw inner-stream bytes as one chunk of the outer body."""
        if data:
            self.sock.sendall(b"%x\r\n%b\r\n" % (len(data), data))

    def request(self, method: str, target: str, **kwargs) -> None:
        if method == "HEAD" and kwargs.get("request_id"):
            self.head_ids.add(kwargs["request_id"])
        self.send(inner_request(method, target, **kwargs))

    def end(self) -> None:
        """End the outer body (last chunk)."""
        self.sock.sendall(b"0\r\n\r\n")

    def receive(self, count: int, timeout: float = 10.0) -> list[InnerResponse]:
        """Read until `count` inner responses arrived (or the stream ended)."""
        got: list[InnerResponse] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and not self.reader.ended:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"got {len(got)} of {count} inner responses")
            self.sock.settimeout(remaining)
            data = self.sock.recv(1 << 16)
            if not data:
                self.closed_by_peer = True
                break
            got.extend(self.reader.feed(data))
        return got

    def receive_until_end(self, timeout: float = 10.0) -> list[InnerResponse]:
        """Read every remaining inner response until the outer response ends."""
        return self.receive(1 << 30, timeout)

    @property
    def outer_head(self) -> InnerResponse | None:
        return self.reader.head

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
