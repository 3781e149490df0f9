"""The running proxy: listeners, the current runtime, and shutdown.

Strategy: everything a request needs that comes from the configuration
(compiled routes, origin upstreams, limits, the access log) lives in one
`Runtime`.  A client connection looks up `server.runtime` when a request
starts and keeps that runtime for the request's whole life, so replacing the
runtime (a reload) changes what new requests see and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from proxy.config import Config
from proxy.core.http1.messages import RequestHead
from proxy.core.mux.session import MuxLimits
from proxy.core.routing import RouteTable
from proxy.shell.accesslog import AccessLog
from proxy.shell.client import ClientConnection
from proxy.shell.files import FileOrigin
from proxy.shell.origin import OriginPool
from proxy.shell.timers import TimerWheel

log = logging.getLogger("muxproxy")

#: Listen backlog.  Long-lived connections arrive in bursts after a restart
#: (every client reconnects at once); 4096 is nginx's default on Linux since
#: 1.21 (net.core.somaxconn caps it anyway).
LISTEN_BACKLOG = 4096

_NO_FIELDS: dict[bytes, bytes] = {}


class Runtime:
    """Everything derived from one configuration (see module note)."""

    def __init__(self, config: Config, access_log: AccessLog) -> None:
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
        self.upstreams: dict = {}
        for name, origin in config.origins.items():
            if origin.is_directory:
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


class ProxyServer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop: asyncio.AbstractEventLoop | None = None
        self.runtime: Runtime | None = None
        self.access_log: AccessLog | None = None
        self.connections: set[ClientConnection] = set()
        self.listeners: list[asyncio.base_events.Server] = []
        self.draining = False
        self.wheel: TimerWheel | None = None

    def __repr__(self) -> str:
        return f"<ProxyServer {self.addresses} {len(self.connections)} connections>"

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.wheel = TimerWheel(self.loop)
        self.access_log = AccessLog(self.config.log.access)
        self.runtime = Runtime(self.config, self.access_log)
        try:
            for listener in self.config.listeners:
                address = listener.address
                server = await self.loop.create_server(
                    lambda: ClientConnection(self),
                    address.host,
                    address.port,
                    reuse_address=True,
                    backlog=LISTEN_BACKLOG,
                )
                self.listeners.append(server)
        except BaseException:
            await self.stop()
            raise
        for host, port in self.addresses:
            log.info("listening on http://%s:%d (mux endpoint %s)", host, port, self.config.mux.path)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        bound = []
        for server in self.listeners:
            for sock in server.sockets:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    bound.append(sock.getsockname()[:2])
        return bound

    async def stop(self) -> None:
        """Stop listening and close every connection now."""
        self.draining = True
        for server in self.listeners:
            server.close()
        for connection in list(self.connections):
            connection.abort()
            connection.connection_lost(None)
        for server in self.listeners:
            await server.wait_closed()
        self.listeners.clear()
        if self.runtime is not None:
            await self.runtime.close()
        if self.access_log is not None:
            self.access_log.close()
        if self.wheel is not None:
            self.wheel.close()

    def pool_counters(self) -> dict[str, dict[str, int]]:
        """Per-origin pool counters (active, idle, connecting, queued)."""
        return {
            name: upstream.counters()
            for name, upstream in self.runtime.upstreams.items()
            if isinstance(upstream, OriginPool)
        }
