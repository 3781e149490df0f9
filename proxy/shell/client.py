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
from typing import Any, Final, TYPE_CHECKING, cast

from proxy.core.forwarding import ClientInfo, client_info, error_response
from proxy.core.http1.messages import Body, EndOfMessage, ParseFailed, RequestHead
from proxy.core.http1.request_parser import RequestParser
from proxy.core.http1.serialize import coalesce
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
CLIENT_WRITE_HIGH: Final = 64 * 1024
CLIENT_WRITE_LOW: Final = 16 * 1024

_connection_ids: Final = itertools.count(1)

#: A deadline not armed.  Compare with ==, never `is`: compiled (setup.py),
#: a float attribute is a C double and boxes to a new object at each read.
_NEVER: Final = float("inf")



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
        "_idle_due",
        "_head_due",
        "_send_due",
        "_watch_body",
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
        self.pending: Any = ()  # typed Any: a deque or the empty tuple
        # The current request's handler (a MuxStream, PlainRequest or
        # RejectedRequest: the same duck-typed interface), None between them.
        self.handler: Any = None
        self.closing = False
        self.writable = True
        self._paused_for = 0  # flow.py bits: why reading is paused
        # Deadlines (loop time; _NEVER when not armed), served by the
        # server's timer wheel: one wheel entry per connection instead of up
        # to four TimerHandles, and no handle made and cancelled per request.
        self._idle_due = _NEVER
        self._head_due = _NEVER
        self._send_due = _NEVER
        self._watch_body = False  # a plain request body is arriving (body_timeout)
        self.last_read = 0.0
        self.requests = 0
        self.peer_closed = False  # the client half-closed its side

    def __repr__(self) -> str:
        return f"<ClientConnection {self.id} handler={self.handler!r} pending={len(self.pending)}>"

    # --- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, base_transport: asyncio.BaseTransport) -> None:
        # A stream server's transports are asyncio.Transport.
        self.transport = transport = cast(asyncio.Transport, base_transport)
        server = self.server
        if not server.admits_connection():
            log.warning("refusing connection: %d client connections open", len(server.connections))
            transport.abort()
            return
        server.connections.add(self)
        server.stats.connections_accepted += 1
        transport.set_write_buffer_limits(high=CLIENT_WRITE_HIGH, low=CLIENT_WRITE_LOW)
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) else "unix"
        self.client = client_info(address.encode("ascii"), self.proto, self.runtime.proxy_name)
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        now = self.last_read = self.loop.time()
        self.server.stats.bytes_received += len(data)
        self._idle_due = _NEVER  # the wheel entry stays; on_wheel re-reads the deadlines
        events = self.parser.feed(data)
        if self.parser.in_head and self._head_due == _NEVER:
            self._head_due = now + self.limits.header_timeout
            self._schedule(self._head_due)
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
        self.server.wheel.cancel(self)
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
        if self._send_due == _NEVER:
            self._send_due = self.loop.time() + self.limits.send_timeout
            self._schedule(self._send_due)
        if self.handler is not None:
            self.handler.on_writable(False)

    def resume_writing(self) -> None:
        self.writable = True
        self._send_due = _NEVER
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
                    self._head_due = _NEVER
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
            if self._paused_for & PIPELINE:
                self.set_reading(PIPELINE, True)
        elif not self._paused_for & PIPELINE:
            self.set_reading(PIPELINE, False)

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
                if self.writable and not self._watch_body:
                    # No deadline of the connection's own is armed now (the
                    # stream keeps its own timer, possibly for hours): drop
                    # its wheel entry instead of carrying it until it fires.
                    self.server.wheel.cancel(self)
            else:
                allow = [(b"Allow", b"POST")] if problem.status == 405 else []
                self.handler = RejectedRequest(self, head, problem, allow)
        else:
            self.handler = PlainRequest(self, head, runtime)
        self.handler.start()

    def _refuse(self, error: ProxyError) -> None:
        """Framing is lost between requests: answer and close."""
        self.write(error_response(error, self.runtime.proxy_name, extra=[(b"Connection", b"close")]))
        self.server.record(self.id, "http", b"-", b"-", "-", "-", error.status, 0, 0.0, error.proxy_status)
        self.close()

    def finish(self, keep_alive: bool) -> None:
        """The current handler is done (response written completely)."""
        self.handler = None
        self._watch_body = False
        if self._paused_for & (HANDLER | ORIGIN):
            self.set_reading(HANDLER | ORIGIN, True)
        if not keep_alive or self.closing or self.server.draining:
            self.close()
            return
        if self.pending:
            self._drain()
        if self.peer_closed and self.handler is None and not self.pending:
            self.close()
            return
        if self.handler is None and not self.pending and not self.parser.in_head:
            self._arm_idle()  # (a head in progress has its own deadline)

    # --- services for handlers ----------------------------------------------------------

    def write(self, data: bytes) -> None:
        transport = self.transport
        if data and not self.closing and transport is not None:
            self.server.stats.bytes_sent += len(data)
            transport.write(data)

    def write_pieces(self, pieces: list[bytes]) -> None:
        """The pieces' bytes, in order, in one system call: small pieces are
        joined, large ones go to the kernel uncopied, one iovec of a writev
        each (serialize.coalesce; uvloop's writelines() is that writev)."""
        transport = self.transport
        if not pieces or self.closing or transport is None:
            return
        pieces = coalesce(pieces)
        if not pieces:
            return
        size = 0
        for piece in pieces:
            size += len(piece)
        self.server.stats.bytes_sent += size
        if len(pieces) == 1:
            transport.write(pieces[0])
        else:
            transport.writelines(pieces)

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
        """Start the body-stall deadline for a plain request body."""
        self.last_read = self.loop.time()
        if not self._watch_body:
            self._watch_body = True
            self._schedule(self.last_read + self.limits.body_timeout)

    def close(self) -> None:
        """Close after everything written has been sent."""
        if not self.closing:
            self.closing = True
            self.server.wheel.cancel(self)
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def drain(self) -> None:
        """The server is stopping: finish what is under way, then close."""
        handler = self.handler
        if handler is None:
            self.close()  # idle between requests (a head in progress is dropped too)
        elif isinstance(handler, MuxStream):
            handler.drain()
        # A plain request finishes; finish() then closes (server.draining).

    # --- timers -------------------------------------------------------------------------

    def _schedule(self, due: float) -> None:
        """Make sure the wheel calls on_wheel by `due` (it may call earlier:
        on_wheel re-reads every deadline and schedules the next one)."""
        self.server.wheel.schedule_by(self, due)

    def _arm_idle(self) -> None:
        self._idle_due = self.loop.time() + self.limits.keepalive_timeout
        self._schedule(self._idle_due)

    def on_wheel(self) -> None:
        if self.closing:
            return
        now = self.loop.time()
        limits = self.limits
        if not self.writable and now >= self._send_due:
            log.info("connection %d: client accepted nothing for %gs, closing", self.id, limits.send_timeout)
            self.connection_lost(None)
            return
        if now >= self._head_due:
            self._head_due = _NEVER
            if self.parser.in_head:
                if self.handler is None:
                    self._refuse(HeadTimeout(f"request head not received within {limits.header_timeout:g}s"))
                else:
                    self.abort()
                return
        handler = self.handler
        if self._watch_body:
            if handler is None or not handler.receiving or not handler.watches_body:
                self._watch_body = False
            elif now >= self.last_read + limits.body_timeout:
                self._watch_body = False
                handler.on_body_timeout()
                if self.closing:
                    return
        if now >= self._idle_due:
            self._idle_due = _NEVER
            if self.handler is None and not self.parser.in_head:
                self.close()
                return
        due = min(self._idle_due, self._head_due, self._send_due if not self.writable else _NEVER)
        if self._watch_body:
            due = min(due, self.last_read + limits.body_timeout)
        if due < _NEVER:
            self.server.wheel.schedule(self, due)
