"""The running proxy: listeners, the current runtime, reload and shutdown.

Strategy: everything a request needs that comes from the configuration
(compiled routes, origin upstreams, limits) lives in one `Runtime`.  A
client connection looks up `server.runtime` when a request starts and keeps
that runtime for the request's whole life, so replacing the runtime (a
reload) changes what new requests see and nothing else:
- an origin whose settings did not change keeps its pool (and its warm
  connections) in the new runtime; a changed or removed one is retired:
  closed once the requests still using it have finished;
- open mux streams adopt the new routes for the inner requests they read
  after the reload; inner requests already in flight finish where they are;
- listeners are diffed: added ones open, removed ones close, the others are
  never touched (their sockets and queued connections stay).

Graceful shutdown stops accepting at once, lets plain requests finish, asks
every mux stream to stop reading and end after its in-flight requests
(final chunk), and cuts whatever is left at `server.shutdown_timeout`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

from proxy import build
from proxy.config import Config, ListenerSettings
from proxy.core.http1.messages import RequestHead
from proxy.core.mux.session import MuxLimits
from proxy.core.routing import RouteTable
from proxy.shell.accesslog import AccessLog
from proxy.shell.activation import Inherited, bind_listener, same_address
from proxy.shell.client import ClientConnection
from proxy.shell.files import FileOrigin
from proxy.shell.metrics import Stats
from proxy.shell.mux import MuxStream
from proxy.shell.origin import OriginPool
from proxy.shell.timers import TimerWheel
from proxy.shell.tls import TlsListener
from proxy.shell.upstream import Upstream

log = logging.getLogger("muxproxy")

#: Listen backlog.  Long-lived connections arrive in bursts after a restart
#: (every client reconnects at once); 4096 is nginx's default on Linux since
#: 1.21 (net.core.somaxconn caps it anyway).
LISTEN_BACKLOG = 4096

_NO_FIELDS: dict[bytes, bytes] = {}


class Runtime:
    """Everything derived from one configuration (see module note)."""

    def __init__(self, config: Config, access_log: AccessLog, previous: "Runtime | None" = None) -> None:
        self.config = config
        self.access_log = access_log
        self.proxy_name = config.server.name.encode("ascii")
        self.routes = RouteTable.from_settings(config.routes)
        mux, limits = config.mux, config.limits
        self.mux_limits = MuxLimits(
            path=mux.path.encode("ascii"),
            max_in_flight=mux.max_in_flight,
            max_buffered_response=mux.max_buffered_response,
            max_stream_buffer=mux.max_stream_buffer,
            max_inner_body=mux.max_inner_body,
            max_head_size=limits.max_head_size,
            max_header_count=limits.max_header_count,
            heartbeat=mux.heartbeat,
            idle_timeout=mux.idle_timeout,
            header_timeout=limits.header_timeout,
            gzip_level=mux.gzip_level,
        )
        self._inherit = frozenset(name.encode("ascii") for name in mux.inherit_headers)
        self.upstreams: dict[str, Upstream] = {}  # origin name: its pool or file origin
        #: What an upstream was built from: an unchanged one is carried over.
        self.upstream_keys: dict = {}
        for name, origin in config.origins.items():
            key = (origin, limits.max_response_head_size)
            self.upstream_keys[name] = key
            if previous is not None and previous.upstream_keys.get(name) == key:
                self.upstreams[name] = previous.upstreams[name]
            elif origin.is_directory:
                self.upstreams[name] = FileOrigin(name, origin.directory, origin.index)
            else:
                self.upstreams[name] = OriginPool(
                    name,
                    [(address.host, address.port) for address in origin.servers],
                    max_connections=origin.max_connections,
                    idle_timeout=origin.idle_timeout,
                    queue_timeout=origin.queue_timeout,
                    max_queue=origin.max_queue,
                    max_fails=origin.max_fails,
                    fail_timeout=origin.fail_timeout,
                    max_response_head_size=limits.max_response_head_size,
                )

    def inherited_fields(self, outer: RequestHead) -> dict[bytes, bytes]:
        """Outer-request fields (by lower-case name) that inner requests
        lacking them inherit; repeated fields are combined (RFC 9110 §5.3)."""
        inherit = self._inherit
        fields: dict[bytes, bytes] = {}
        if not any(name.lower() in inherit for name, _ in outer.headers):
            return _NO_FIELDS  # shared and never written to: saves a dict per stream
        for name, value in outer.headers:
            low = name.lower()
            if low in inherit:
                # Cookie lines combine with "; " (RFC 6265 §5.4), others with ", ".
                separator = b"; " if low == b"cookie" else b", "
                fields[low] = fields[low] + separator + value if low in fields else value
        return fields

    async def close(self) -> None:
        await asyncio.gather(*(upstream.close() for upstream in self.upstreams.values()))


def listener_key(listener: ListenerSettings) -> tuple:
    """What identifies a listener across reloads (a TLS change reopens it)."""
    address = listener.address
    return (address.host, address.port, listener.tls_certificate, listener.tls_key)


class ProxyServer:
    """One event loop's worth of proxy (a whole process, or one worker).

    `inherited` are listening sockets to use instead of binding (socket
    activation, or a master's sockets); `reuse_port` makes the sockets bound
    here SO_REUSEPORT, so that several workers can each bind a listener added
    by a reload.
    """

    def __init__(
        self, config: Config, *, inherited: list[Inherited] = (), reuse_port: bool = False, stats: Stats | None = None
    ) -> None:
        self.config = config
        self.inherited = list(inherited)
        self.reuse_port = reuse_port
        self.stats = stats if stats is not None else Stats()
        #: Report every answered request (access log or metrics want it).
        self.collect = config.log.access != "off" or config.admin.address is not None
        # loop, runtime and wheel are None only until start(), and nothing
        # that reads them (connections, streams, exchanges) exists before it:
        # typed without None, so the compiled shell (setup.py) need not check.
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.runtime: Runtime = None  # type: ignore[assignment]
        self.access_log: AccessLog | None = None
        self.connections: set[ClientConnection] = set()
        #: Accepted TLS connections still in their handshake (tls.py): they
        #: count against limits.max_client_connections too.
        self.handshaking = 0
        self.listeners: dict[tuple, asyncio.base_events.Server | TlsListener] = {}
        self.ready = False
        self.draining = False
        self.wheel: TimerWheel = None  # type: ignore[assignment]
        self._retiring: set[asyncio.Task] = set()
        self._retired: set = set()

    def __repr__(self) -> str:
        return f"<ProxyServer {self.addresses} {len(self.connections)} connections>"

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.wheel = TimerWheel(self.loop)
        self.access_log = AccessLog(self.config.log.access)
        self.runtime = Runtime(self.config, self.access_log)
        try:
            self.listeners.update(await self._open_added(self.config))
            for inherited in self.inherited:
                # A passed socket no listener claimed: the socket unit says
                # to listen there, so it is served (plain HTTP).
                log.warning("serving passed socket %r on %s, which no [[listener]] names", inherited.name, inherited.address)
                server = await self.loop.create_server(
                    lambda: ClientConnection(self), sock=inherited.sock, backlog=LISTEN_BACKLOG
                )
                self.listeners[("inherited", inherited.name, inherited.address)] = server
            self.inherited.clear()
        except BaseException:
            await self.stop()
            raise
        for host, port in self.addresses:
            log.info("listening on %s:%d (mux endpoint %s; %s build)", host, port, self.config.mux.path, build())
        self.ready = True

    async def _open_added(self, config: Config) -> dict:
        """Open the listeners `config` has and we do not; all or none (an
        address that cannot be bound closes the others and raises OSError)."""
        opened: dict = {}
        wanted = {listener_key(listener) for listener in config.listeners}
        # A listener that changes in place (plain to TLS, another
        # certificate) keeps its address: the new one takes a duplicate of
        # the old socket, which _close_removed closes afterwards.
        leaving = {
            key[:2]: server for key, server in self.listeners.items() if key[0] != "inherited" and key not in wanted
        }
        try:
            for listener in config.listeners:
                key = listener_key(listener)
                if key not in self.listeners:
                    opened[key] = await self._open(listener, leaving.get(key[:2]))
        except BaseException:
            for server in opened.values():
                server.close()
            raise
        return opened

    def _close_removed(self, config: Config) -> None:
        """Close the listeners `config` no longer has; kept TLS listeners load
        their certificate files again (a renewed certificate)."""
        wanted = {listener_key(listener): listener for listener in config.listeners}
        for key in [key for key in self.listeners if key[0] != "inherited" and key not in wanted]:
            server = self.listeners.pop(key)
            server.close()
            log.info("closed listener %s:%d", key[0], key[1])
        for key, listener in wanted.items():
            if listener.is_tls and key in self.listeners:
                self.listeners[key].reload_certificate(listener)

    def admits_connection(self) -> bool:
        """Is there room for one more client connection?"""
        return len(self.connections) + self.handshaking < self.config.limits.max_client_connections

    async def _open(self, listener: ListenerSettings, replaced=None) -> asyncio.base_events.Server | TlsListener:
        """Start serving `listener`: on a passed socket, on a duplicate of
        the listener it `replaced` at the same address, or on a new one."""
        address = listener.address
        sock = None
        if replaced is not None and replaced.sockets:
            old = replaced.sockets[0]
            sock = socket.socket(old.family, old.type, old.proto, fileno=os.dup(old.fileno()))
            sock.setblocking(False)
        for inherited in self.inherited if sock is None else ():
            if same_address(inherited.address, address.host, address.port):
                sock = inherited.sock
                self.inherited.remove(inherited)
                break
        if sock is None:
            sock = bind_listener(address.host, address.port, reuse_port=self.reuse_port, backlog=LISTEN_BACKLOG)
        try:
            if listener.is_tls:
                return TlsListener(self, sock, listener)
            # backlog= again: create_server calls listen() itself, with 100 by
            # default, which would undo bind_listener's (or systemd's) backlog.
            return await self.loop.create_server(lambda: ClientConnection(self), sock=sock, backlog=LISTEN_BACKLOG)
        except BaseException:
            sock.close()
            raise

    @property
    def addresses(self) -> list[tuple[str, int]]:
        bound = []
        for server in self.listeners.values():
            for sock in server.sockets:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    bound.append(sock.getsockname()[:2])
        return bound

    # --- reload -----------------------------------------------------------------------

    async def reload(self, config: Config) -> None:
        """Apply a validated configuration (see module note).  All or
        nothing: if a new listener cannot be bound, OSError is raised and
        the running configuration stays as it was."""
        opened = await self._open_added(config)
        old = self.runtime
        new = Runtime(config, self.access_log, previous=old)
        self.runtime = new
        self.config = config
        self.collect = config.log.access != "off" or config.admin.address is not None
        self.access_log.retarget(config.log.access)
        for connection in list(self.connections):
            handler = connection.handler
            if isinstance(handler, MuxStream):
                handler.adopt(new)
        self._close_removed(config)
        self.listeners.update(opened)
        kept = set(map(id, new.upstreams.values()))
        for upstream in old.upstreams.values():
            if id(upstream) not in kept:
                self._retire(upstream)
        self.stats.reloads["ok"] += 1
        log.info("configuration reloaded: %d listener(s), %d origin(s), %d route(s)",
                 len(config.listeners), len(config.origins), len(config.routes))

    def _retire(self, upstream) -> None:
        """Close an upstream the new configuration dropped, once it is idle."""
        self._retired.add(upstream)

        async def retire() -> None:
            try:
                while isinstance(upstream, OriginPool) and any(
                    upstream.counters()[state] for state in ("active", "connecting", "queued")
                ):
                    await asyncio.sleep(0.5)
                await upstream.close()
            finally:
                self._retired.discard(upstream)

        task = self.loop.create_task(retire())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    # --- stop -------------------------------------------------------------------------

    async def shutdown(self, timeout: float) -> bool:
        """Stop gracefully (see module note); True if nothing had to be cut."""
        self.ready = False
        self.draining = True
        for server in self.listeners.values():
            server.close()
        for connection in list(self.connections):
            connection.drain()
        deadline = time.monotonic() + timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        clean = not self.connections
        if not clean:
            log.warning("shutdown timeout: cutting %d connection(s)", len(self.connections))
        await self.stop()
        return clean

    async def stop(self) -> None:
        """Stop listening and close every connection now."""
        self.ready = False
        self.draining = True
        for server in self.listeners.values():
            server.close()
        for connection in list(self.connections):
            connection.abort()
            connection.connection_lost(None)
        for server in self.listeners.values():
            await server.wait_closed()
        self.listeners.clear()
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        if self.runtime is not None:
            await self.runtime.close()
        for upstream in list(self._retired):
            await upstream.close()
        if self.access_log is not None:
            self.access_log.close()
        if self.wheel is not None:
            self.wheel.close()

    # --- figures ------------------------------------------------------------------------

    def record(
        self,
        conn_id: int,
        kind: str,
        method: bytes,
        target: bytes | None,
        route: str,
        origin: str,
        status: int,
        body_bytes: int,
        seconds: float,
        error: str,
    ) -> None:
        """One answered request: into the metrics and the access log.  kind is
        "mux" (inner), "http" (plain) or "stream" (a whole mux stream)."""
        if kind != "stream":
            self.stats.request(kind, route, status, seconds, error)
        access_log = self.access_log
        if access_log.enabled:
            access_log.request(conn_id, kind, method, target, route, origin, status, body_bytes, seconds, error)


    def pool_counters(self) -> dict[str, dict[str, int]]:
        """Per-origin pool counters (active, idle, connecting, queued)."""
        counters: dict[str, dict[str, int]] = {}
        pools = [(name, up) for name, up in self.runtime.upstreams.items() if isinstance(up, OriginPool)]
        pools += [(up.name, up) for up in self._retired if isinstance(up, OriginPool)]
        for name, pool in pools:
            merged = counters.setdefault(name, {"active": 0, "idle": 0, "connecting": 0, "queued": 0})
            for state, value in pool.counters().items():
                merged[state] += value
        return counters

    def live(self) -> dict:
        """Gauges for the metrics snapshot."""
        streams = inflight = 0
        for connection in self.connections:
            handler = connection.handler
            if isinstance(handler, MuxStream):
                streams += 1
                inflight += handler.session.in_flight
        return {"connections": len(self.connections), "streams": streams, "inflight": inflight,
                "pools": self.pool_counters()}

    def snapshot(self) -> dict:
        return self.stats.snapshot(self.live())
