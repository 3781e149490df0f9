"""One client connection: outer requests in, responses out, in order.

Strategy: an `asyncio.Protocol` feeds bytes to the strict `RequestParser` and
hands each request to a handler: `MuxStream` for the mux endpoint,
`PlainRequest` for everything else, `RejectedRequest` for a refused head.
Requests are answered strictly in order (RFC 9112 §9.3.2): while a handler
is still responding, events of the next pipelined request wait in a queue and
the socket is paused, so at most one read is ever parsed ahead.

Reading is paused for several independent reasons at once (pipelining, a
handler's backpressure, a full origin socket); `set_reading(reason, on)` keeps
them apart so that one reason ending never resumes reading another one needs.

Timers, each a named limit from config.limits:
- header_timeout: a deadline for a whole request head from its first byte
  (not an inactivity timer: a slowloris trickling one byte at a time is cut
  off at the deadline all the same);
- keepalive_timeout: an idle connection between requests is closed;
- body_timeout: a plain request body that stalls longer than this is dropped;
- send_timeout: a client that accepts no bytes for this long is dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from typing import TYPE_CHECKING

from proxy.core.forwarding import ClientInfo, error_response
from proxy.core.http1.messages import Body, EndOfMessage, ParseFailed, RequestHead
from proxy.core.http1.request_parser import RequestParser
from proxy.core.mux.outer import is_mux_target, outer_request_problem
from proxy.errors import HeadTimeout, ProxyError
from proxy.shell.flow import HANDLER, ORIGIN, PIPELINE
from proxy.shell.mux import MuxStream
from proxy.shell.plain import PlainRequest, RejectedRequest

if TYPE_CHECKING:
    from proxy.shell.server import ProxyServer

log = logging.getLogger("muxproxy.client")

#: Client socket write-buffer marks.  Above the high mark the connection
#: stops pulling from origins; 64 KiB is asyncio's default high-water mark
#: and one typical socket send buffer, enough to keep a fast client busy.
CLIENT_WRITE_HIGH = 64 * 1024
CLIENT_WRITE_LOW = 16 * 1024

_connection_ids = itertools.count(1)



class ClientConnection(asyncio.Protocol):
    # Slots: one of these exists per open client connection, most of them
    # idle (bench scenario 3 measures the bytes each one costs).
    __slots__ = (
        "server",
        "runtime",
        "limits",
        "id",
        "proto",
        "loop",
        "transport",
        "client",
        "parser",
        "pending",
        "handler",
        "closing",
        "writable",
        "_paused_for",
        "_head_timer",
        "_idle_timer",
        "_send_timer",
        "_body_timer",
        "last_read",
        "requests",
        "peer_closed",
    )

    def __init__(self, server: "ProxyServer", *, proto: bytes = b"http") -> None:
        self.server = server
        self.runtime = server.runtime
        limits = self.runtime.config.limits
        self.limits = limits
        self.id = next(_connection_ids)
        self.proto = proto
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.client: ClientInfo | None = None
        self.parser = RequestParser(
            max_head_size=limits.max_head_size,
            max_header_count=limits.max_header_count,
            require_host=True,
            keep_head=False,
        )
        # Parser events waiting for their handler, in order: a deque while
        # there are any, else the empty tuple (an empty deque costs 600
        # bytes, and most connections have nothing queued most of the time).
        self.pending: deque | tuple = ()
        self.handler = None
        self.closing = False
        self.writable = True
        self._paused_for = 0  # flow.py bits: why reading is paused
        self._head_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self.last_read = 0.0
        self.requests = 0
        self.peer_closed = False  # the client half-closed its side

    def __repr__(self) -> str:
        return f"<ClientConnection {self.id} handler={self.handler!r} pending={len(self.pending)}>"

    # --- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        if len(server.connections) >= self.limits.max_client_connections:
            log.warning("refusing connection: %d client connections open", len(server.connections))
            transport.abort()
            return
        server.connections.add(self)
        transport.set_write_buffer_limits(high=CLIENT_WRITE_HIGH, low=CLIENT_WRITE_LOW)  # type: ignore[attr-defined]
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) else "unix"
        self.client = ClientInfo(address.encode("ascii"), self.proto, self.runtime.proxy_name)
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        self.last_read = self.loop.time()
        self._cancel(self._idle_timer)
        self._idle_timer = None
        events = self.parser.feed(data)
        if self.parser.in_head and self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)
        if events:
            if self.pending:
                self.pending.extend(events)
            else:
                self.pending = deque(events)
            self._drain()

    def eof_received(self) -> bool:
        # The client half-closed.  Requests it sent completely are still
        # answered (a mux stream whose body ended may have many in flight);
        # one cut off in the middle means the client is gone.
        self.peer_closed = True
        handler = self.handler
        if handler is not None and handler.receiving:
            self.connection_lost(None)
            return False
        if handler is None and not self.pending:
            self.close()
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closing and self.handler is None:
            self.server.connections.discard(self)
            return
        self.closing = True
        for timer in (self._head_timer, self._idle_timer, self._send_timer, self._body_timer):
            self._cancel(timer)
        handler = self.handler
        self.handler = None
        self.pending = ()
        if handler is not None:
            handler.on_client_lost()
        self.server.connections.discard(self)
        if self.transport is not None:
            self.transport.abort()

    def pause_writing(self) -> None:
        self.writable = False
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._send_timed_out)
        if self.handler is not None:
            self.handler.on_writable(False)

    def resume_writing(self) -> None:
        self.writable = True
        self._cancel(self._send_timer)
        self._send_timer = None
        if self.handler is not None:
            self.handler.on_writable(True)

    # --- request dispatch ---------------------------------------------------------------

    def _drain(self) -> None:
        """Give queued parser events to the handler they belong to."""
        pending = self.pending
        while pending and not self.closing:
            handler = self.handler
            event = pending[0]
            if handler is None:
                pending.popleft()
                if isinstance(event, RequestHead):
                    self._cancel(self._head_timer)
                    self._head_timer = None
                    self._start(event)
                elif isinstance(event, ParseFailed):
                    self._refuse(event.error)
                # A Body/EndOfMessage without a handler cannot happen: every
                # message starts with its head.
            elif handler.receiving:
                pending.popleft()
                if isinstance(event, Body):
                    handler.on_body(event.data)
                elif isinstance(event, EndOfMessage):
                    handler.on_end()
                elif isinstance(event, ParseFailed):
                    handler.on_body_failed(event.error)
                else:
                    # A head can only follow its predecessor's EndOfMessage,
                    # which ends `receiving`: this is a bug, not bad input.
                    raise RuntimeError(f"{event!r} while {handler!r} is still receiving")
            else:
                break  # the next request waits until this response is done
        if self.pending is not pending:
            return  # the connection was lost meanwhile and dropped its queue
        if not pending:
            self.pending = ()
        self.set_reading(PIPELINE, not pending)

    def _start(self, head: RequestHead) -> None:
        self.requests += 1
        runtime = self.server.runtime  # per request: a reload applies to new requests
        self.runtime = runtime
        if head.rejection is not None:
            self.handler = RejectedRequest(self, head, head.rejection)
        elif is_mux_target(head, runtime.mux_limits.path):
            problem = outer_request_problem(head)
            if problem is None:
                self.handler = MuxStream(self, head, runtime)
            else:
                allow = [(b"Allow", b"POST")] if problem.status == 405 else []
                self.handler = RejectedRequest(self, head, problem, allow)
        else:
            self.handler = PlainRequest(self, head, runtime)
        self.handler.start()

    def _refuse(self, error: ProxyError) -> None:
        """Framing is lost between requests: answer and close."""
        self.write(error_response(error, self.runtime.proxy_name, extra=[(b"Connection", b"close")]))
        self.server.access_log.request(self.id, "http", b"-", b"-", "-", "-", error.status, 0, 0.0, error.proxy_status)
        self.close()

    def finish(self, keep_alive: bool) -> None:
        """The current handler is done (response written completely)."""
        self.handler = None
        self._cancel(self._body_timer)
        self._body_timer = None
        self.set_reading(HANDLER, True)
        self.set_reading(ORIGIN, True)
        if not keep_alive or self.closing or self.server.draining:
            self.close()
            return
        if self.pending:
            self._drain()
        if self.peer_closed and self.handler is None and not self.pending:
            self.close()
            return
        if self.handler is None and not self.pending:
            if self.parser.in_head:
                pass  # the head timer is already running
            else:
                self._arm_idle()

    # --- services for handlers ----------------------------------------------------------

    def write(self, data: bytes) -> None:
        if data and not self.closing:
            self.transport.write(data)

    def set_reading(self, reason: int, reading: bool) -> None:
        was_paused = self._paused_for
        paused = self._paused_for = (was_paused & ~reason) if reading else (was_paused | reason)
        if self.closing or self.transport is None:
            return
        if paused and not was_paused:
            self.transport.pause_reading()
        elif not paused and was_paused:
            self.transport.resume_reading()

    def watch_body(self) -> None:
        """Start the body-stall timer for a plain request body."""
        self.last_read = self.loop.time()
        if self._body_timer is None:
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._check_body)

    def close(self) -> None:
        """Close after everything written has been sent."""
        if not self.closing:
            self.closing = True
            for timer in (self._head_timer, self._idle_timer, self._send_timer, self._body_timer):
                self._cancel(timer)
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    # --- timers -------------------------------------------------------------------------

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()

    def _arm_idle(self) -> None:
        self._cancel(self._idle_timer)
        self._idle_timer = self.loop.call_later(self.limits.keepalive_timeout, self._idle_timed_out)

    def _idle_timed_out(self) -> None:
        self._idle_timer = None
        if self.handler is None and not self.parser.in_head:
            self.close()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.parser.in_head:
            return
        if self.handler is None:
            error = HeadTimeout(f"request head not received within {self.limits.header_timeout:g}s")
            self._refuse(error)
        else:
            self.abort()

    def _check_body(self) -> None:
        self._body_timer = None
        handler = self.handler
        if handler is None or not handler.receiving or not handler.watches_body:
            return
        idle = self.loop.time() - self.last_read
        if idle >= self.limits.body_timeout:
            handler.on_body_timeout()
        else:
            self._body_timer = self.loop.call_later(self.limits.body_timeout - idle, self._check_body)

    def _send_timed_out(self) -> None:
        self._send_timer = None
        if not self.writable:
            log.info("connection %d: client accepted nothing for %gs, closing", self.id, self.limits.send_timeout)
            self.connection_lost(None)
