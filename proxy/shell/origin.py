"""HTTP origins: pooled keep-alive connections, one exchange at a time.

Strategy: `OriginPool` is the `Upstream` for an origin with HTTP servers.  Its
decisions come from the sans-IO `PoolState`; this module only connects,
writes, reads and arms timers.  Each connection is an `asyncio.Protocol`
(`OriginConnection`) whose bytes go through the strict `ResponseParser`; an
`HttpExchange` is the per-request state machine that ties one request to one
connection at a time and reports to the `ResponseSink`.

Everything runs in callbacks on the loop thread; only opening a connection
is a coroutine (it is rare with keep-alive).  Cleanup never depends on a
coroutine being scheduled: closing a transport and updating the pool state
happen synchronously.

Safety rules carried out here (decided by the parser or the pool):
- a connection is closed, never reused, after anything ambiguous: bytes after
  a response or when idle, a response that broke off, a request that was only
  partly sent, any timeout, or a cancelled exchange;
- a request that failed on a reused connection before the origin sent a
  single byte is retried once on a fresh connection, and only if its method
  is idempotent (RFC 9110 §9.2.2) and its body is still whole;
- a failed connect moves on to the next server (nothing was sent).
"""

from __future__ import annotations

import asyncio
import enum
import logging

from typing import Final, cast

from proxy.core.forwarding import OutboundRequest
from proxy.core.http1.messages import Body, EndOfMessage, ParseFailed, ResponseHead
from proxy.core.http1.response_parser import ResponseParser
from proxy.core.http1.serialize import BodyEncoder
from proxy.core.pool import CONNECT, REUSE, WAIT, PoolState, ServerState
from proxy.errors import (
    OriginClosed,
    OriginConnectRefused,
    OriginConnectTimeout,
    OriginReadTimeout,
    OriginTotalTimeout,
    PoolTimeout,
    ProxyError,
)
from proxy.shell.upstream import ResponseSink

log = logging.getLogger("muxproxy.origin")

#: Connection-level write buffer marks for origin sockets.  A streamed request
#: body stops reading its client above the high mark (asyncio's default high
#: mark is 64 KiB; we keep it).
ORIGIN_WRITE_HIGH: Final = 64 * 1024


#: How often attached exchanges are checked against their read and total
#: timeouts.  One periodic sweep replaces a timer per request: arming and
#: cancelling a TimerHandle per request cost about 2 us of the per-request
#: budget (measured with uvloop).  A timeout may fire up to this much late;
#: no origin timeout needs to be more precise than a quarter second.
SWEEP_INTERVAL: Final = 0.25


class DeadlineSweep:
    """Checks the deadlines of every attached exchange of a pool, periodically."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.exchanges: set[HttpExchange] = set()
        self._handle: asyncio.TimerHandle | None = None

    def add(self, exchange: "HttpExchange") -> None:
        self.exchanges.add(exchange)
        if self._handle is None:
            self._handle = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def discard(self, exchange: "HttpExchange") -> None:
        self.exchanges.discard(exchange)

    def _sweep(self) -> None:
        self._handle = None
        now = self.loop.time()
        for exchange in list(self.exchanges):
            exchange.check_deadline(now)
        if self.exchanges:
            self._handle = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class Slot(enum.Enum):
    ACTIVE = "active"
    IDLE = "idle"
    GONE = "gone"


class OriginConnection(asyncio.Protocol):
    """One TCP connection to an origin server."""

    def __init__(self, pool: "OriginPool", server: ServerState) -> None:
        self.pool = pool
        self.server = server
        # Set by connection_made, which runs before create_connection hands
        # the connection to the pool: no exchange ever sees it unset.
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = ResponseParser(
            max_head_size=pool.max_response_head_size, max_header_count=pool.max_response_header_count
        )
        self.exchange: HttpExchange | None = None
        self.slot = Slot.ACTIVE
        self.used = False  # served an exchange before: a retry is possible
        self.last_read = 0.0

    def __repr__(self) -> str:
        return f"<OriginConnection {self.server.authority.decode()} {self.slot.value} {self.parser.state}>"

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=ORIGIN_WRITE_HIGH)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.last_read = self.pool.loop.time()
        exchange = self.exchange
        if exchange is None:
            # Bytes while idle: an unsolicited response.  Never reuse.
            self.parser.feed(data)
            self.pool.discard(self)
            return
        events = self.parser.feed(data)
        if events:
            exchange.on_events(events)

    def eof_received(self) -> bool:
        exchange = self.exchange
        if exchange is not None:
            exchange.on_events(self.parser.feed_eof())
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        exchange = self.exchange
        if exchange is not None:
            events = self.parser.feed_eof()
            if events:
                exchange.on_events(events)
            if self.exchange is not None:
                exchange.fail(OriginClosed(f"connection to origin lost: {exc or 'closed'}"))
        self.pool.connection_lost(self)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.origin_write_paused(True)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.origin_write_paused(False)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class ExchangeState(enum.Enum):
    NEW = "new"
    WAITING = "waiting"  # queued for a pool slot
    CONNECTING = "connecting"
    ATTACHED = "attached"  # request written (or being written), response awaited or arriving
    DONE = "done"


class HttpExchange:
    """One request and its response on pooled connections (see module note)."""

    __slots__ = (
        "pool",
        "request",
        "sink",
        "server",
        "connection",
        "state",
        "retried",
        "tried",
        "timer",  # the queue wait only; attached exchanges use the pool's sweep
        "started",
        "paused",
        "head_seen",
        "sending",
        "body_sent",
        "pending_body",
        "body_ended",
        "encoder",
    )

    def __init__(self, pool: "OriginPool", request: OutboundRequest, sink: ResponseSink, now: float) -> None:
        self.pool = pool
        self.request = request
        self.sink = sink
        self.server = pool.name
        self.connection: OriginConnection | None = None
        self.state = ExchangeState.NEW
        self.retried = False
        self.tried: set[int] | None = None  # id() of servers a connect was tried on
        self.timer: asyncio.TimerHandle | None = None
        self.started = now
        self.paused = False
        self.head_seen = False
        # Streamed request bodies (plain proxy): bytes that arrive before a
        # connection is attached are held; the client is paused meanwhile.
        self.sending = request.streams_body
        self.body_sent = False  # any body byte written: a retry is impossible
        self.pending_body: list[bytes] = []
        self.body_ended = False
        self.encoder = BodyEncoder(request.content_length < 0) if request.streams_body else None

    def __repr__(self) -> str:
        return f"<HttpExchange {self.request.method.decode()} {self.request.target!r} {self.state.value}>"

    # --- the Exchange contract (called by the client side) ------------------------

    def send_body(self, data: bytes) -> None:
        if self.state is ExchangeState.DONE or not data:
            return
        connection = self.connection
        if self.state is ExchangeState.ATTACHED and connection is not None:
            encoder = self.encoder
            assert encoder is not None  # a body is sent only by a streaming request
            self.body_sent = True
            connection.transport.write(encoder.encode(data))
        else:
            self.pending_body.append(data)
            self.sink.pause_request_body()

    def end_body(self) -> None:
        if self.state is ExchangeState.DONE or self.body_ended:
            return
        self.body_ended = True
        if self.state is ExchangeState.ATTACHED and self.connection is not None:
            self._finish_sending()

    def pause_reading(self) -> None:
        if not self.paused:
            self.paused = True
            if self.connection is not None and self.state is ExchangeState.ATTACHED:
                self.connection.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.paused:
            self.paused = False
            if self.connection is not None and self.state is ExchangeState.ATTACHED:
                # The read timeout measures the origin's silence, not ours.
                self.connection.last_read = self.pool.loop.time()
                self.connection.transport.resume_reading()

    def cancel(self) -> None:
        """The client no longer wants the response: free everything now."""
        state = self.state
        if state is ExchangeState.DONE:
            return
        self.state = ExchangeState.DONE
        self._cancel_timer()
        if state is ExchangeState.WAITING:
            self.pool.remove_waiter(self)
        elif state is ExchangeState.ATTACHED and self.connection is not None:
            # Mid-exchange: the connection's position in the protocol is
            # unknown to anyone else, so it is closed, never reused.
            self.pool.sweep.discard(self)
            self.connection.exchange = None
            self.pool.discard(self.connection)
        self.connection = None

    # --- pool side ------------------------------------------------------------------

    def wait(self) -> None:
        self.state = ExchangeState.WAITING
        self.timer = self.pool.loop.call_later(self.pool.queue_timeout, self._wait_expired)

    def _wait_expired(self) -> None:
        self.timer = None
        if self.state is ExchangeState.WAITING:
            self.pool.remove_waiter(self)
            self.fail(PoolTimeout(f"no connection to origin {self.pool.name!r} free within {self.pool.queue_timeout:g}s"))

    def attach(self, connection: OriginConnection, now: float) -> None:
        """Run the request on `connection` (fresh or reused) from `now`."""
        self._cancel_timer()
        self.state = ExchangeState.ATTACHED
        self.connection = connection
        connection.exchange = self
        self.server = connection.server.label
        request = self.request
        connection.parser.start(request.method)
        # Serialised here in one join rather than through a header list:
        # this runs for every request (serialize.request_head is the same).
        parts = [
            request.method,
            b" ",
            request.target,
            b" HTTP/1.1\r\nHost: ",
            request.host if request.host is not None else connection.server.authority,
        ]
        for name, value in request.headers:
            # Appends, not `parts += (...)`: compiled, that builds a tuple per field.
            parts.append(b"\r\n")
            parts.append(name)
            parts.append(b": ")
            parts.append(value)
        parts.append(request.proxy_fields.wire)
        body = request.body
        if body is not None:
            parts.append(b"\r\nContent-Length: %d\r\n\r\n" % len(body))
        elif request.streams_body:
            if request.content_length >= 0:
                parts.append(b"\r\nContent-Length: %d\r\n\r\n" % request.content_length)
            else:
                parts.append(b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        else:
            parts.append(b"\r\n\r\n")
        head = b"".join(parts)
        transport = connection.transport
        if body:
            if len(body) < 16384:
                transport.write(head + body)
            else:
                transport.writelines((head, body))
        else:
            transport.write(head)
        connection.last_read = now
        if self.paused:
            transport.pause_reading()
        if self.sending:
            encoder = self.encoder
            assert encoder is not None  # sending: a streaming request
            if self.pending_body:
                self.body_sent = True
                transport.write(b"".join([encoder.encode(piece) for piece in self.pending_body]))
                self.pending_body = []
                self.sink.resume_request_body()
            if self.body_ended:
                self._finish_sending()
        self.pool.sweep.add(self)

    def connect_failed(self, error: ProxyError) -> None:
        if self.state is ExchangeState.DONE:
            return
        # Nothing was sent: another server of the origin may answer.
        tried = self.tried
        assert tried is not None  # checkout() recorded the server it tried
        if len(tried) < len(self.pool.state.servers):
            self.state = ExchangeState.NEW
            self.pool.checkout(self, fresh=True, now=self.pool.loop.time())
            return
        self.fail(error)

    def _finish_sending(self) -> None:
        connection = self.connection
        assert connection is not None  # called while attached
        self.sending = False
        if self.encoder is not None and self.encoder.chunked:
            connection.transport.write(self.encoder.end())
        # The read timeout counts from the end of the request (like nginx's
        # proxy_read_timeout): an origin is silent while it receives a body.
        connection.last_read = self.pool.loop.time()

    def origin_write_paused(self, paused: bool) -> None:
        if self.sending:
            if paused:
                self.sink.pause_request_body()
            else:
                self.sink.resume_request_body()

    # --- timers ---------------------------------------------------------------------

    def check_deadline(self, now: float) -> None:
        """Called by the pool's DeadlineSweep while attached."""
        connection = self.connection
        if self.state is not ExchangeState.ATTACHED or connection is None:
            self.pool.sweep.discard(self)
            return
        timeouts = self.request.timeouts
        if now >= self.started + timeouts.total:
            self._timed_out(OriginTotalTimeout(f"origin took longer than {timeouts.total:g}s"))
        elif not self.sending and not self.paused and now >= connection.last_read + timeouts.read:
            # Not while paused: then we are the ones not reading (a slow
            # client, bounded by limits.send_timeout), not the origin.
            self._timed_out(OriginReadTimeout(f"origin sent nothing for {timeouts.read:g}s"))

    def _timed_out(self, error: ProxyError) -> None:
        # A timeout poisons the connection: the origin may still answer later.
        connection = self.connection
        if connection is not None:
            self.pool.state.record_failure(connection.server, self.pool.loop.time())
        self.fail(error)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # --- connection side ------------------------------------------------------------

    def on_events(self, events: list) -> None:
        sink = self.sink
        if (
            len(events) <= 3
            and type(events[-1]) is EndOfMessage
            and type(events[0]) is ResponseHead
            and (len(events) == 2 or type(events[1]) is Body)
        ):
            # The whole response in one read, the common case for small
            # responses: one sink call instead of three.
            self.head_seen = True
            self._finish()
            # Cast: compiled, the body is then read from the struct, not by name.
            sink.on_response_complete(events[0], cast(Body, events[1]).data if len(events) == 3 else b"")
            return
        for event in events:
            if self.state is not ExchangeState.ATTACHED:
                return  # cancelled by the sink meanwhile
            kind = type(event)
            if kind is Body:
                sink.on_response_data(event.data)
            elif kind is ResponseHead:
                self.head_seen = True
                sink.on_response_head(event)
            elif kind is EndOfMessage:
                self._complete()
            elif kind is ParseFailed:
                self.fail(event.error)

    def _complete(self) -> None:
        self._finish()
        self.sink.on_response_end()

    def _finish(self) -> None:
        """The response ended where its framing said: give the connection back."""
        connection = self.connection
        assert connection is not None  # called while attached
        self.state = ExchangeState.DONE
        self.pool.sweep.discard(self)
        connection.exchange = None
        self.connection = None
        pool = self.pool
        server = connection.server
        if server.fails:
            pool.state.record_success(server)
        if connection.parser.reusable and not self.sending and not self.pending_body:
            connection.used = True
            if self.paused:
                # Our backpressure must not outlive the exchange: the next
                # request on this connection would wait for a read forever.
                connection.transport.resume_reading()
            # It went idle when the last bytes of the response were read.
            pool.release(connection, connection.last_read)
        else:
            # A request body still being sent means the origin answered early;
            # the connection's position in the request is unknown to it.
            pool.discard(connection)

    def fail(self, error: ProxyError) -> None:
        """The exchange failed on its connection (or before getting one)."""
        if self.state is ExchangeState.DONE:
            return
        connection = self.connection
        self._cancel_timer()
        if connection is not None:
            self.pool.sweep.discard(self)
            connection.exchange = None
            self.connection = None
            self.pool.discard(connection)
            if (
                isinstance(error, OriginClosed)
                and not self.head_seen
                and connection.parser.bytes_received == 0
                and connection.used
                and self.request.idempotent
                and not self.retried
                and not self.body_sent
            ):
                # The origin closed a keep-alive connection just as we reused
                # it (RFC 9112 §9.3.1 allows retrying idempotent requests).
                self.retried = True
                self.state = ExchangeState.NEW
                self.pool.checkout(self, fresh=True, now=self.pool.loop.time())
                return
            if not self.head_seen and isinstance(error, OriginClosed):
                self.pool.state.record_failure(connection.server, self.pool.loop.time())
        self.state = ExchangeState.DONE
        self.sink.on_response_error(error)


class OriginPool:
    """The `Upstream` for an origin of HTTP/1.x servers."""

    def __init__(
        self,
        name: str,
        servers: list[tuple[str, int]],
        *,
        max_connections: int,
        idle_timeout: float,
        queue_timeout: float,
        max_queue: int,
        max_fails: int,
        fail_timeout: float,
        max_response_head_size: int,
        max_response_header_count: int = 256,
    ) -> None:
        self.name = name
        self.loop = asyncio.get_running_loop()
        self.state = PoolState(
            name,
            servers,
            max_connections=max_connections,
            idle_timeout=idle_timeout,
            max_queue=max_queue,
            max_fails=max_fails,
            fail_timeout=fail_timeout,
        )
        self.queue_timeout = queue_timeout
        self.max_response_head_size = max_response_head_size
        self.max_response_header_count = max_response_header_count
        self.connections: set[OriginConnection] = set()
        self._connect_tasks: set[asyncio.Task] = set()
        self._expiry: asyncio.TimerHandle | None = None
        self.sweep = DeadlineSweep(self.loop)
        self.closing = False

    def __repr__(self) -> str:
        return repr(self.state)

    # --- Upstream -----------------------------------------------------------------

    def start(self, request: OutboundRequest, sink: ResponseSink) -> HttpExchange:
        # One clock read serves the exchange's start, the checkout and the
        # request's write: they happen in the same instant.
        now = self.loop.time()
        exchange = HttpExchange(self, request, sink, now)
        self.checkout(exchange, fresh=False, now=now)
        return exchange

    async def close(self) -> None:
        """Close every connection now and cancel pending connects."""
        self.closing = True
        for task in list(self._connect_tasks):
            task.cancel()
        if self._connect_tasks:
            await asyncio.gather(*self._connect_tasks, return_exceptions=True)
        for waiter in list(self.state.waiters):
            waiter.fail(PoolTimeout("proxy is shutting down"))
        self.state.waiters.clear()
        for connection in list(self.connections):
            connection.abort()
        self.sweep.close()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    # --- decisions carried out ----------------------------------------------------------

    def checkout(self, exchange: HttpExchange, *, fresh: bool, now: float) -> None:
        if self.closing:
            exchange.fail(PoolTimeout("proxy is shutting down"))
            return
        state = self.state
        decision = state.checkout(now, fresh=fresh)
        if state.expired:
            for expired in state.take_expired():
                self._close_idle(expired)
        action = decision.action
        if action is REUSE:
            # The pure pool holds connections as opaque keys; they are ours.
            connection = cast(OriginConnection, decision.connection)
            connection.slot = Slot.ACTIVE
            exchange.attach(connection, now)
        elif action is CONNECT:
            exchange.state = ExchangeState.CONNECTING
            if exchange.tried is None:
                exchange.tried = set()
            server = decision.server
            assert server is not None  # a CONNECT decision names its server
            exchange.tried.add(id(server))
            task = self.loop.create_task(self._connect(server, exchange))
            self._connect_tasks.add(task)
            task.add_done_callback(self._connect_tasks.discard)
        elif action is WAIT:
            state.waiters.append(exchange)
            exchange.wait()
        else:
            exchange.fail(PoolTimeout(f"too many requests waiting for origin {self.name!r}"))

    async def _connect(self, server: ServerState, exchange: HttpExchange) -> None:
        loop = self.loop
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: OriginConnection(self, server), server.host, server.port),
                exchange.request.timeouts.connect,
            )
        except asyncio.TimeoutError:
            self.state.connect_failed(server, loop.time())
            self._after_slot_freed()
            exchange.connect_failed(
                OriginConnectTimeout(f"connecting to {server.authority.decode()} timed out")
            )
            return
        except OSError as exc:
            self.state.connect_failed(server, loop.time())
            self._after_slot_freed()
            exchange.connect_failed(OriginConnectRefused(f"cannot connect to {server.authority.decode()}: {exc.strerror or exc}"))
            return
        except asyncio.CancelledError:
            self.state.connect_failed(server, loop.time())
            raise
        self.state.connected(server)
        self.connections.add(connection)
        if exchange.state is ExchangeState.CONNECTING:
            exchange.attach(connection, loop.time())
        else:
            self.release(connection, loop.time())  # the exchange was cancelled meanwhile

    def release(self, connection: OriginConnection, now: float) -> None:
        """A connection finished an exchange cleanly at `now`: next waiter, or idle."""
        if self.closing:
            self.discard(connection)
            return
        waiters = self.state.waiters
        if waiters:
            connection.used = True
            waiters.popleft().attach(connection, now)
            return
        connection.slot = Slot.IDLE
        self.state.released(connection, connection.server, now)
        if self._expiry is None:
            self._expiry = self.loop.call_later(self.state.idle_timeout, self._expire_idle)

    def discard(self, connection: OriginConnection) -> None:
        """Close a connection that must not be reused."""
        if connection.slot is Slot.GONE:
            return
        was_active = connection.slot is Slot.ACTIVE
        connection.slot = Slot.GONE
        self.connections.discard(connection)
        self.state.closed(connection, connection.server, was_active=was_active)
        connection.exchange = None
        connection.abort()
        self._after_slot_freed()

    def connection_lost(self, connection: OriginConnection) -> None:
        if connection.slot is not Slot.GONE:
            self.discard(connection)

    def remove_waiter(self, exchange: HttpExchange) -> None:
        try:
            self.state.waiters.remove(exchange)
        except ValueError:
            pass

    def _after_slot_freed(self) -> None:
        """A connection slot became free: a waiter may open a new connection."""
        state = self.state
        if state.waiters and state.total < state.max_connections and not self.closing:
            exchange = state.waiters.popleft()
            exchange._cancel_timer()
            exchange.state = ExchangeState.NEW
            self.checkout(exchange, fresh=False, now=self.loop.time())

    def _close_idle(self, connection: OriginConnection) -> None:
        connection.slot = Slot.GONE
        self.connections.discard(connection)
        connection.close()

    def _expire_idle(self) -> None:
        self._expiry = None
        for connection in self.state.expire_idle(self.loop.time()):
            self._close_idle(connection)
        if self.state.idle_count:
            self._expiry = self.loop.call_later(self.state.idle_timeout / 2, self._expire_idle)

    # --- introspection (tests, metrics) -------------------------------------------------

    def counters(self) -> dict[str, int]:
        state = self.state
        return {
            "active": state.active,
            "idle": state.idle_count,
            "connecting": state.connecting,
            "queued": len(state.waiters),
        }
