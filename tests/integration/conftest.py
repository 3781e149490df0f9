"""Fixtures for end-to-end tests: real origins, a real proxy, real clients.

- `nginx` (session): Debian's nginx as an origin (tests/support/origins.py).
- `http10_origin` (session): `python -m http.server --protocol HTTP/1.0`.
- `asyncio_origin` (per test): a factory for small scripted origins written
  inside a test module (an echo, a slow answer, a close-delimited HTTP/1.0
  response), each on its own event loop thread.
- `run_proxy` (per test): a factory that starts a `ProxyThread` for a config
  text and stops it when the test ends.
- `proxy_config` (per test): `build_proxy_config`, which writes the TOML text
  of a proxy configuration from origins and routes, so each test states only
  what it is about.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Iterator

import pytest

from tests.support.harness import ProxyThread, free_port
from tests.support.origins import DIRECTORY_PAGE, Http10Origin, NginxOrigin


# --- proxy configuration text ------------------------------------------------------


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _table(header: str, values: dict) -> str:
    lines = [header] + [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def build_proxy_config(
    origins: dict[str, object],
    routes: list[dict] | None = None,
    *,
    mux: dict | None = None,
    limits: dict | None = None,
    server: dict | None = None,
    origin_options: dict[str, dict] | None = None,
) -> str:
    """TOML text for a proxy with these origins and routes.

    An origin is given as anything with an `address` ("host:port": the
    origin fixtures), a "host:port" string, a list of those, or a `Path`
    (a directory origin).  Routes are dicts of route keys; without routes,
    everything goes to the first origin.  `origin_options` adds keys to an
    origin's table (pool settings).  The listener and the access log are
    filled in by `ProxyThread`.
    """
    parts = []
    if server:
        parts.append(_table("[server]", server))
    if mux:
        parts.append(_table("[mux]", mux))
    if limits:
        parts.append(_table("[limits]", limits))
    for name, origin in origins.items():
        values: dict = {}
        if isinstance(origin, Path):
            values["directory"] = origin
        elif isinstance(origin, (list, tuple)):
            values["servers"] = [getattr(item, "address", item) for item in origin]
        else:
            values["servers"] = [getattr(origin, "address", origin)]
        values.update((origin_options or {}).get(name, {}))
        parts.append(_table(f'[origin."{name}"]', values))
    if routes is None:
        routes = [{"path": "/", "origin": next(iter(origins))}]
    for route in routes:
        parts.append(_table("[[route]]", route))
    return "\n".join(parts)


@pytest.fixture
def proxy_config() -> Callable[..., str]:
    """`proxy_config(origins, routes, mux=..., ...)`: see `build_proxy_config`."""
    return build_proxy_config


@pytest.fixture
def run_proxy() -> Iterator[Callable[[str], ProxyThread]]:
    """`run_proxy(config_text)` starts a proxy that stops when the test ends."""
    started: list[ProxyThread] = []

    def start(config_text: str) -> ProxyThread:
        proxy = ProxyThread(config_text)
        started.append(proxy)
        proxy.start()
        return proxy

    yield start
    for proxy in reversed(started):
        proxy.stop()


# --- origins ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxOrigin]:
    with NginxOrigin(tmp_path_factory.mktemp("nginx")) as origin:
        yield origin


@pytest.fixture
def every_kind_of_origin(nginx, run_proxy, proxy_config, tmp_path) -> ProxyThread:
    """A proxy with each kind of origin: a directory at /files (serving
    page.txt), one that is down at /gone (502), nginx for the rest."""
    (tmp_path / "page.txt").write_bytes(DIRECTORY_PAGE)
    origins = {"nginx": nginx, "files": tmp_path, "gone": f"127.0.0.1:{free_port()}"}
    routes = [
        {"path": "/gone", "origin": "gone"},
        {"path": "/files", "origin": "files", "strip_prefix": True},
        {"path": "/", "origin": "nginx"},
    ]
    return run_proxy(proxy_config(origins, routes))


@pytest.fixture(scope="session")
def http10_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Http10Origin]:
    with Http10Origin(tmp_path_factory.mktemp("http10")) as origin:
        yield origin


@dataclass
class OriginRequest:
    """A request as an in-test origin received it (body de-chunked)."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    chunked: bool = False
    raw_head: bytes = b""

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


@dataclass
class OriginReply:
    """Raw response bytes to write, and whether to close the connection after.

    `data` may also be a list of pieces: bytes are written (and drained) in
    turn, a number is a pause in seconds, so a test can hold a response in
    the middle of its body.
    """

    data: bytes | list[bytes | float]
    close: bool = False


#: An in-test origin's application: one request in, one raw reply out.
OriginApp = Callable[[OriginRequest], Awaitable[OriginReply]]


class AsyncioOrigin:
    """A scripted HTTP/1.x origin on its own asyncio loop thread.

    It parses each request (Content-Length or chunked body) and writes
    whatever raw bytes the app returns, so a test controls the exact framing
    of the response.  `connections` counts accepted connections and
    `requests` records every request received, in order.
    """

    def __init__(self, app: OriginApp) -> None:
        self.app = app
        self.port = 0
        self.connections = 0
        self.requests: list[OriginRequest] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="asyncio-origin", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the in-test origin did not start")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._shutdown())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        await asyncio.sleep(0)  # let the transports' close callbacks run

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self.connections += 1
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                self.requests.append(request)
                reply = await self.app(request)
                for piece in reply.data if isinstance(reply.data, list) else [reply.data]:
                    if isinstance(piece, bytes):
                        writer.write(piece)
                        await writer.drain()
                    else:
                        await asyncio.sleep(piece)
                keep_alive = request.version == "HTTP/1.1" and (request.header("connection") or "").lower() != "close"
                if reply.close or not keep_alive:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> OriginRequest | None:
    """One request from `reader`, or None when the peer closed between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    lines = head[:-4].decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name, value.strip()))
    request = OriginRequest(method, target, version, headers, raw_head=head)
    if (request.header("transfer-encoding") or "").lower() == "chunked":
        request.chunked = True
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        request.body = b"".join(parts)
    elif request.header("content-length") is not None:
        request.body = await reader.readexactly(int(request.header("content-length")))
    return request


def http_reply(
    status: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    version: str = "HTTP/1.1",
    length: bool = True,
    close: bool = False,
) -> OriginReply:
    """A raw response: Content-Length framed, or close-delimited (length=False)."""
    lines = [f"{version} {status} {_REASONS.get(status, 'Unknown')}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if length:
        lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    return OriginReply(data, close=close or not length)


_REASONS = {200: "OK", 204: "No Content", 404: "Not Found", 500: "Internal Server Error"}


@dataclass
class _OriginFactory:
    started: list[AsyncioOrigin] = field(default_factory=list)

    def __call__(self, app: OriginApp) -> AsyncioOrigin:
        origin = AsyncioOrigin(app)
        self.started.append(origin)
        origin.start()
        return origin

    # Helpers for test modules, reachable through the fixture (conftest
    # modules are not imported by tests).
    reply = staticmethod(http_reply)
    Reply = OriginReply


@pytest.fixture
def asyncio_origin() -> Iterator[_OriginFactory]:
    """`asyncio_origin(app)` starts an `AsyncioOrigin` stopped when the test ends;
    `asyncio_origin.reply(...)` builds a raw `OriginReply`."""
    factory = _OriginFactory()
    yield factory
    for origin in reversed(factory.started):
        origin.stop()
