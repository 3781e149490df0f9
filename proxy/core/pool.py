"""Connection-pool decisions for one origin: pure and synchronous.

Strategy (after httpcore): the pool state decides, the shell acts.  Asked for
a connection, `PoolState.checkout()` answers with what to do (reuse this idle
connection, open a new one to this server, wait, or refuse), and the shell
reports back what happened (`connected`, `released`, `closed`,
`record_failure`).  Connections are opaque handles here; the pool only needs
them hashable.  Time comes in as an argument, so every rule is tested without
sleeping.

Rules:
- servers are taken round-robin, skipping servers marked failed; a server is
  marked failed for `fail_timeout` after `max_fails` failures within
  `fail_timeout` (nginx max_fails/fail_timeout); if every server is marked,
  the one whose mark ends first is tried anyway rather than failing outright
  (nginx does the same), so one bad minute never turns into a dead origin;
- a server's idle connections are reused most-recently-used first (the one
  least likely to have been closed by the origin), and an idle connection
  older than `idle_timeout` is closed, never reused;
- at most `max_connections` connections (open or opening) per origin; beyond
  that a request waits, FIFO, up to `max_queue` waiters.
"""

from __future__ import annotations

from collections import deque
from typing import Final, Hashable

from proxy.core.record import Record

# What checkout() tells the shell to do.
REUSE: Final = "reuse"
CONNECT: Final = "connect"
WAIT: Final = "wait"
REFUSE: Final = "refuse"


class Checkout(Record):
    """checkout()'s answer: an action, and the server and idle connection it
    concerns.  A Record: one is made per request (proxy/core/record.py)."""

    FIELDS = ("action", "server", "connection")
    __slots__ = ("action", "server", "connection")

    def __init__(self, action: str, server: ServerState | None = None, connection: Hashable | None = None) -> None:
        self.action = action
        self.server = server
        self.connection = connection


class ServerState:
    __slots__ = ("host", "port", "authority", "label", "fails", "first_fail_at", "down_until", "idle")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        shown = f"[{host}]" if ":" in host else host
        self.label = f"{shown}:{port}"  # for logs, made once
        self.authority = self.label.encode("ascii")
        self.fails = 0
        self.first_fail_at = 0.0
        self.down_until = 0.0
        # (connection, idle since); the end of the list is the most recent.
        self.idle: list[tuple[Hashable, float]] = []

    def __repr__(self) -> str:
        return f"<Server {self.authority.decode()} fails={self.fails} idle={len(self.idle)}>"

    def is_down(self, now: float) -> bool:
        return now < self.down_until


class PoolState:
    def __init__(
        self,
        name: str,
        servers: list[tuple[str, int]],
        *,
        max_connections: int,
        idle_timeout: float,
        max_queue: int,
        max_fails: int,
        fail_timeout: float,
    ) -> None:
        if not servers:
            raise ValueError("an origin pool needs at least one server")
        self.name = name
        self.servers = [ServerState(host, port) for host, port in servers]
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.max_queue = max_queue
        self.max_fails = max_fails
        self.fail_timeout = fail_timeout
        self._next = 0
        self.active = 0  # connections carrying an exchange
        self.connecting = 0
        self.idle_count = 0
        self.waiters: deque = deque()
        #: Idle connections found expired during checkout; the shell closes them.
        self.expired: list = []

    def __repr__(self) -> str:
        return (
            f"<Pool {self.name}: {self.active} active, {self.idle_count} idle, "
            f"{self.connecting} connecting, {len(self.waiters)} queued>"
        )

    @property
    def total(self) -> int:
        return self.active + self.connecting + self.idle_count

    def choose_server(self, now: float) -> ServerState:
        servers = self.servers
        count = len(servers)
        if count == 1:
            return servers[0]  # down or not, it is the only one to try
        for _ in range(count):
            server = servers[self._next % count]
            self._next += 1
            if not server.is_down(now):
                return server
        return min(servers, key=lambda s: s.down_until)

    def checkout(self, now: float, *, fresh: bool = False) -> Checkout:
        """What to do for one request.  `fresh` forbids reusing an idle
        connection (the retry after a failure on a reused one)."""
        servers = self.servers
        server = servers[0] if len(servers) == 1 else self.choose_server(now)
        if not fresh:
            # _take_idle, inlined: this is the path of nearly every request.
            idle = server.idle
            while idle:
                connection, since = idle.pop()
                self.idle_count -= 1
                if now - since < self.idle_timeout:
                    self.active += 1
                    return Checkout(REUSE, server, connection)
                self.expired.append(connection)
        if self.total < self.max_connections:
            self.connecting += 1
            return Checkout(CONNECT, server)
        if not fresh:
            # The chosen server has none idle but another one may.
            for other in self.servers:
                if other is not server and not other.is_down(now):
                    connection = self._take_idle(other, now)
                    if connection is not None:
                        return Checkout(REUSE, other, connection)
            if self.total < self.max_connections:
                # Expired idle connections found on the way freed a slot.
                self.connecting += 1
                return Checkout(CONNECT, server)
        if len(self.waiters) >= self.max_queue:
            return Checkout(REFUSE)
        return Checkout(WAIT)

    def _take_idle(self, server: ServerState, now: float) -> Hashable | None:
        idle = server.idle
        while idle:
            connection, since = idle.pop()
            self.idle_count -= 1
            if now - since < self.idle_timeout:
                self.active += 1
                return connection
            self.expired.append(connection)
        return None

    def take_expired(self) -> list:
        expired, self.expired = self.expired, []
        return expired

    def connected(self, server: ServerState) -> None:
        """A CONNECT decision succeeded; the new connection is active."""
        self.connecting -= 1
        self.active += 1

    def connect_failed(self, server: ServerState, now: float) -> None:
        self.connecting -= 1
        self.record_failure(server, now)

    def released(self, connection: Hashable, server: ServerState, now: float) -> None:
        """An exchange ended cleanly and the connection may be reused."""
        self.active -= 1
        server.idle.append((connection, now))
        self.idle_count += 1

    def closed(self, connection: Hashable, server: ServerState, *, was_active: bool) -> None:
        """A connection closed (after use, or while idle)."""
        if was_active:
            self.active -= 1
            return
        for i, (idle_connection, _) in enumerate(server.idle):
            if idle_connection is connection:
                del server.idle[i]
                self.idle_count -= 1
                return

    def expire_idle(self, now: float) -> list:
        """Idle connections past their expiry; removed here, closed by the shell."""
        expired = []
        for server in self.servers:
            keep = []
            for connection, since in server.idle:
                if now - since >= self.idle_timeout:
                    expired.append(connection)
                else:
                    keep.append((connection, since))
            self.idle_count -= len(server.idle) - len(keep)
            server.idle = keep
        return expired

    def record_failure(self, server: ServerState, now: float) -> None:
        if now - server.first_fail_at > self.fail_timeout:
            server.fails = 0
        if server.fails == 0:
            server.first_fail_at = now
        server.fails += 1
        if server.fails >= self.max_fails:
            server.down_until = now + self.fail_timeout
            server.fails = 0

    def record_success(self, server: ServerState) -> None:
        server.fails = 0
