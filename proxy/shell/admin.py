"""The admin listener: /metrics, /healthz and /readyz.

Strategy: a separate listener (loopback by default) so that operational
endpoints never share a route table with proxied traffic.  It reuses the
strict request parser; answers are small, complete responses.  What the
endpoints report comes from callables given by the owner (a single-process
server, or the master of several workers), so the same code serves both.

- /metrics: Prometheus text format, from prometheus_client's generate_latest.
- /healthz: 200 while the event loop runs (and, with workers, while every
  worker reports in); a liveness probe.
- /readyz: 200 while new requests are accepted, 503 while starting or
  draining; a readiness probe.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Callable, NamedTuple

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from proxy.core.http1.fields import http_date
from proxy.core.http1.messages import ParseFailed, RequestHead
from proxy.core.http1.request_parser import RequestParser
from proxy.core.http1.serialize import reason_phrase, response_head
from proxy.config import Address
from proxy.shell.activation import Inherited, bind_listener, same_address
from proxy.shell.metrics import SnapshotCollector

log = logging.getLogger("muxproxy.admin")

#: Listen backlog of the admin listener: scrapers and health probes, a
#: handful of connections at a time.
ADMIN_BACKLOG = 128


class Admin:
    def __init__(self, snapshot: Callable[[], dict], healthy: Callable[[], bool], ready: Callable[[], bool]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(snapshot))
        self.healthy = healthy
        self.ready = ready
        self.server: asyncio.base_events.Server | None = None

    async def start(self, sock) -> None:
        loop = asyncio.get_running_loop()
        # backlog= because create_server calls listen() again (100 by
        # default); a few scrapers and probes need no more than this.
        self.server = await loop.create_server(lambda: AdminConnection(self), sock=sock, backlog=ADMIN_BACKLOG)

    @property
    def address(self) -> tuple[str, int] | None:
        if self.server is None or not self.server.sockets:
            return None
        return self.server.sockets[0].getsockname()[:2]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    def answer(self, head: RequestHead) -> tuple[int, bytes, bytes]:
        """(status, content type, body) for one admin request."""
        if head.method not in (b"GET", b"HEAD"):
            return 405, b"text/plain; charset=utf-8", b"only GET and HEAD\n"
        path = head.target.split(b"?", 1)[0]
        if path == b"/metrics":
            return 200, CONTENT_TYPE_LATEST.encode("ascii"), generate_latest(self.registry)
        if path == b"/healthz":
            ok = self.healthy()
            return (200 if ok else 503), b"text/plain; charset=utf-8", b"ok\n" if ok else b"unhealthy\n"
        if path == b"/readyz":
            ok = self.ready()
            return (200 if ok else 503), b"text/plain; charset=utf-8", b"ready\n" if ok else b"not ready\n"
        return 404, b"text/plain; charset=utf-8", b"not found: /metrics, /healthz, /readyz\n"


class AdminPlan(NamedTuple):
    """What a configuration asks of the admin listener: keep it as it is, or
    replace it with one on `sock` (None: no admin listener)."""

    keep: bool
    sock: socket.socket | None = None


class AdminSlot:
    """The admin listener of a process, across reloads.

    A reload prepares first (binds the new address, which may fail) and
    applies only once the rest of the reload has worked, so a port that
    cannot be bound fails the reload with nothing changed.  A socket passed
    by systemd under the name "admin" is used instead of binding.
    """

    def __init__(self, make: Callable[[], Admin], passed: list[Inherited]) -> None:
        self.make = make
        self.passed = [inherited for inherited in passed if inherited.name == "admin"]
        self.admin: Admin | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        return self.admin.address if self.admin is not None else None

    def prepare(self, address: Address | None) -> AdminPlan:
        current = self.address
        if address is None:
            return AdminPlan(keep=current is None)
        if current is not None and (address.port == 0 or same_address(current, address.host, address.port)):
            return AdminPlan(keep=True)
        for inherited in self.passed:
            if same_address(inherited.address, address.host, address.port):
                self.passed.remove(inherited)
                return AdminPlan(keep=False, sock=inherited.sock)
        return AdminPlan(keep=False, sock=bind_listener(address.host, address.port))

    def discard(self, plan: AdminPlan) -> None:
        """The reload failed after `prepare`: let go of what it bound."""
        if plan.sock is not None:
            plan.sock.close()

    async def apply(self, plan: AdminPlan) -> None:
        if plan.keep:
            return
        await self.close()
        if plan.sock is not None:
            self.admin = self.make()
            await self.admin.start(plan.sock)
            log.info("admin listener on %s:%d (/metrics, /healthz, /readyz)", *self.admin.address)

    async def close(self) -> None:
        if self.admin is not None:
            await self.admin.close()
            self.admin = None


class AdminConnection(asyncio.Protocol):
    def __init__(self, admin: Admin) -> None:
        self.admin = admin
        self.transport: asyncio.Transport | None = None
        # Admin requests are tiny: small limits, no Host required.
        self.parser = RequestParser(max_head_size=8192, max_header_count=64, require_host=False, keep_head=False)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        for event in self.parser.feed(data):
            if isinstance(event, RequestHead):
                self._answer(event)
            elif isinstance(event, ParseFailed):
                self._reply(400, b"text/plain; charset=utf-8", b"bad request\n", keep_alive=False, head=False)
                return

    def _answer(self, head: RequestHead) -> None:
        try:
            status, kind, body = self.admin.answer(head)
        except Exception:  # a broken collector must not kill the admin listener
            log.exception("admin request %r failed", head.target)
            status, kind, body = 500, b"text/plain; charset=utf-8", b"internal error\n"
        self._reply(status, kind, body, keep_alive=head.keep_alive, head=head.method == b"HEAD")

    def _reply(self, status: int, kind: bytes, body: bytes, *, keep_alive: bool, head: bool) -> None:
        fields = [
            (b"Content-Type", kind),
            (b"Content-Length", b"%d" % len(body)),
            (b"Cache-Control", b"no-store"),
            (b"Date", http_date()),
        ]
        if not keep_alive:
            fields.append((b"Connection", b"close"))
        self.transport.write(response_head(status, reason_phrase(status), fields) + (b"" if head else body))
        if not keep_alive:
            self.transport.close()
