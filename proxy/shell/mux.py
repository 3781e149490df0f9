"""The I/O side of one mux stream: runs a `MuxSession`'s commands.

Strategy: `MuxStream` is the handler of an outer mux request on a client
connection.  It feeds the session with the outer body, origin events,
writability and timer ticks, then carries out the commands the session
queued (start or cancel origin exchanges, pause or resume reading, end the
stream).  Output is collected once per event-loop iteration (`call_soon`),
so inner responses finishing in the same iteration leave in one write.

Each inner request gets an `InnerSink`, the `ResponseSink` its origin
exchange reports to; it only adds the stream id and hands the fact to the
session.  Command processing is not re-entrant: a command whose execution
produces more commands (an origin that refuses synchronously) is picked up
by the same loop, in order.
"""

from __future__ import annotations

import time
from typing import Any, Final, TYPE_CHECKING, cast

from proxy.core.http1.messages import RequestHead, ResponseHead
from proxy.core.http1.serialize import CHUNKED, RAW
from proxy.core.mux.commands import (
    CancelExchange,
    EndOuter,
    ForwardRequest,
    InnerCompleted,
    PauseOrigin,
    PauseReading,
    ResumeOrigin,
    ResumeReading,
)
from proxy.core.mux.outer import accepts_gzip, is_gzip_request, outer_response_head
from proxy.core.mux.session import MuxSession
from proxy.errors import ProxyError
from proxy.shell.flow import HANDLER
from proxy.shell.origin import OriginPool
from proxy.shell.plain import CONTINUE
from proxy.shell.upstream import Exchange, Upstream

if TYPE_CHECKING:
    from proxy.shell.client import ClientConnection
    from proxy.shell.server import Runtime

#: Shared by streams that never started an exchange; only read, never written.
_NO_EXCHANGES: Final[dict] = {}
_NEVER: Final = float("inf")  # one shared float, not one per stream


class InnerSink:
    """The ResponseSink of one inner request."""

    __slots__ = ("stream", "stream_id")

    def __init__(self, stream: "MuxStream", stream_id: int) -> None:
        self.stream = stream
        self.stream_id = stream_id

    def on_response_head(self, head: ResponseHead) -> None:
        stream = self.stream
        stream.session.response_started(self.stream_id, head)
        stream.run()

    def on_response_data(self, data: bytes) -> None:
        stream = self.stream
        stream.session.response_data(self.stream_id, data)
        stream.run()

    def on_response_end(self) -> None:
        stream = self.stream
        stream.forget(self.stream_id)
        stream.session.response_ended(self.stream_id)
        stream.run()

    def on_response_error(self, error: ProxyError) -> None:
        stream = self.stream
        stream.forget(self.stream_id)
        stream.session.response_failed(self.stream_id, error)
        stream.run()

    def on_response_complete(self, head: ResponseHead, body: bytes) -> None:
        stream = self.stream
        stream.forget(self.stream_id)
        stream.session.response_complete(self.stream_id, head, body)
        stream.run()

    def pause_request_body(self) -> None:
        pass  # inner request bodies are complete before they are forwarded

    def resume_request_body(self) -> None:
        pass


class MuxStream:
    """Handler of one outer application/http request (see module note)."""

    watches_body = False  # a duplex stream may be quiet for long; mux.idle_timeout applies

    # Slots, and only the facts of the outer head it needs (not its fields):
    # a stream may sit idle for hours, and idle streams are what a proxy
    # holds most of (bench scenario 3: bytes per idle outer connection).
    __slots__ = (
        "conn",
        "runtime",
        "upstreams",
        "http10",
        "keep_alive",
        "expect_continue",
        "method",
        "target",
        "receiving",
        "exchanges",
        "_running",
        "_again",
        "_flush_scheduled",
        "_timer_at",
        "ended",
        "started",
        "encoder",
        "bytes_out",
        "session",
    )

    def __init__(self, conn: "ClientConnection", head: RequestHead, runtime: "Runtime") -> None:
        self.conn = conn
        self.runtime = runtime
        # Read once per stream, not per inner request: Runtime is not a
        # compiled class, so each read of its attributes is a dict lookup.
        self.upstreams: dict[str, Upstream] = runtime.upstreams
        self.http10 = head.version == b"1.0"
        self.keep_alive = head.keep_alive and not self.http10
        self.expect_continue = head.expect_continue and not self.http10
        self.method = head.method
        self.target = head.target
        self.receiving = True
        self.exchanges: dict[int, Any] = _NO_EXCHANGES  # a dict of its own once one starts
        self._running = False
        self._again = False
        self._flush_scheduled = False
        self._timer_at = _NEVER  # when the wheel calls on_wheel next
        self.ended = False
        self.started = time.monotonic()
        self.encoder = RAW if self.http10 else CHUNKED
        self.bytes_out = 0  # outer body bytes (after gzip), for the access log
        client = conn.client
        assert client is not None  # set when the connection was made
        self.session = MuxSession(
            limits=runtime.mux_limits,
            routes=runtime.routes,
            client=client,
            outer_host=head.host,
            inherited=runtime.inherited_fields(head),
            proxy_name=runtime.proxy_name,
            gzip_response=accepts_gzip(head),
            gzip_request=is_gzip_request(head),
            clock=time.monotonic,
            report_completions=conn.server.collect,
        )

    def __repr__(self) -> str:
        return f"<MuxStream {self.session!r}>"


    def start(self) -> None:
        conn = self.conn
        conn.server.stats.streams_started += 1
        if self.expect_continue:
            conn.write(CONTINUE)
        conn.write(outer_response_head(gzip=self.session.gzip_response, http10=self.http10))
        self._arm_timer(self.session.on_timer())

    # --- facts from the client connection ---------------------------------------------

    def on_body(self, data: bytes) -> None:
        session = self.session
        session.receive_data(data)
        self.run()
        if session.next_check < self._timer_at:
            # An inner head began: its deadline may come before the timer.
            self._arm_timer(session.next_check - session.clock())

    def on_end(self) -> None:
        self.receiving = False
        self.session.receive_end()
        self.run()

    def on_body_failed(self, error: ProxyError) -> None:
        # The outer framing broke: finish what is in flight, then close.
        self.receiving = False
        self.session.abandon_input()
        self.run()

    def on_body_timeout(self) -> None:
        pass  # not watched (watches_body is False)

    def on_writable(self, writable: bool) -> None:
        self.session.outer_writable(writable)
        self.run()

    def adopt(self, runtime: "Runtime") -> None:
        """A reload happened: inner requests read from now on use its routes
        and origins; those in flight finish where they are."""
        self.runtime = runtime
        self.upstreams = runtime.upstreams
        self.session.routes = runtime.routes

    def drain(self) -> None:
        """The server is stopping: read no more inner requests, answer the
        ones in flight, then end the stream (last chunk) and close."""
        self.session.abandon_input()
        self.run()

    def on_client_lost(self) -> None:
        self.receiving = False
        self.session.client_gone()
        self.run()
        self._stop()

    def forget(self, stream_id: int) -> None:
        """An exchange is over.  With an access log, InnerCompleted drops it
        (the log line needs its server); without one, nothing else will."""
        if not self.session.report_completions:
            # `in` and `del`, not pop(key, None): compiled, dict.pop with a
            # default is a generic method call, looked up by name each time.
            exchanges = self.exchanges
            if stream_id in exchanges:
                del exchanges[stream_id]

    # --- commands -------------------------------------------------------------------------

    def run(self) -> None:
        """Carry out the session's queued commands, then schedule a flush."""
        session = self.session
        if session.commands:
            if self._running:
                self._again = True
                return
            self._running = True
            try:
                while True:
                    self._again = False
                    for command in session.take_commands():
                        self._execute(command)
                    if not self._again and not session.commands:
                        break
            finally:
                self._running = False
        if not self._flush_scheduled and session.has_output and not self.ended:
            self._flush_scheduled = True
            self.conn.loop.call_soon(self._flush)

    def _execute(self, command) -> None:
        # The two per-request commands are cast to their classes: compiled,
        # their fields are then read from the struct, not looked up by name.
        kind = type(command)
        if kind is ForwardRequest:
            forward = cast(ForwardRequest, command)
            stream_id = forward.stream_id
            upstream = self.upstreams[forward.origin]
            sink = InnerSink(self, stream_id)
            if type(upstream) is OriginPool:
                # A direct call into the compiled method; through the
                # Upstream protocol it would be a generic Python-level call.
                started: Exchange = cast(OriginPool, upstream).start(forward.request, sink)
            else:
                started = upstream.start(forward.request, sink)
            if stream_id in self.session.streams:
                if self.exchanges is _NO_EXCHANGES:
                    self.exchanges = {}
                self.exchanges[stream_id] = started
        elif kind is InnerCompleted:
            completed = cast(InnerCompleted, command)
            exchange = self.exchanges.pop(completed.stream_id, None)
            conn = self.conn
            conn.server.record(
                conn.id,
                "mux",
                completed.method,
                completed.target,
                completed.route,
                exchange.server if exchange is not None else "-",
                completed.status,
                completed.body_bytes,
                time.monotonic() - completed.started,
                completed.error,
            )
        elif kind is PauseOrigin:
            exchange = self.exchanges.get(command.stream_id)
            if exchange is not None:
                exchange.pause_reading()
        elif kind is ResumeOrigin:
            exchange = self.exchanges.get(command.stream_id)
            if exchange is not None:
                exchange.resume_reading()
        elif kind is CancelExchange:
            exchange = self.exchanges.pop(command.stream_id, None)
            if exchange is not None:
                exchange.cancel()
        elif kind is PauseReading:
            if not self.ended:  # after the end the connection owns its socket
                self.conn.set_reading(HANDLER, False)
        elif kind is ResumeReading:
            if not self.ended:
                self.conn.set_reading(HANDLER, True)
        elif kind is EndOuter:
            self._end(command.close)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.ended:
            return
        session = self.session
        framed = self._framed_output()
        if framed:
            self.conn.write_pieces(framed)
        if session.commands or session.has_output:
            # Taking the output let the session parse further (it stops at
            # max_in_flight answers not yet taken): run what that produced;
            # its output leaves in the next iteration, so a long run of
            # refused requests never holds the event loop.
            self.run()

    def _framed_output(self) -> list[bytes]:
        """The session's output since the last call, framed for the outer
        body and counted; large bodies in it uncopied (write_pieces)."""
        pieces = self.session.take_output_pieces()
        size = 0
        for piece in pieces:
            size += len(piece)
        self.bytes_out += size
        return self.encoder.encode_pieces(pieces, size)

    def _end(self, close: bool) -> None:
        """The session is over: last bytes, last chunk, next request or close."""
        if self.ended:
            return
        conn = self.conn
        if not conn.closing:
            framed = self._framed_output()
            framed.append(self.encoder.end())
            conn.write_pieces(framed)
        self.ended = True
        self._stop()
        conn.server.record(
            conn.id,
            "stream",
            self.method,
            self.target,
            "-",
            "-",
            200,
            self.bytes_out,
            time.monotonic() - self.started,
            "",
        )
        keep_alive = not close and self.keep_alive
        if self.receiving:
            # We stopped reading before the end of the outer body.
            self.receiving = False
            keep_alive = False
        if not conn.closing:
            conn.finish(keep_alive)

    # --- timer ----------------------------------------------------------------------------

    def _arm_timer(self, delay: float) -> None:
        wheel = self.conn.server.wheel
        if delay > 0 and not self.ended:
            # The session's clock and the loop's differ: convert the delay.
            self._timer_at = self.session.clock() + delay
            wheel.schedule(self, self.conn.loop.time() + delay)
        else:
            self._timer_at = _NEVER
            wheel.cancel(self)

    def on_wheel(self) -> None:
        self._timer_at = _NEVER
        if not self.exchanges:
            # A dict keeps the table a burst grew (about 4.6 KiB after 100
            # in flight); an idle stream should not hold it for hours.
            self.exchanges = _NO_EXCHANGES
        session = self.session
        beats = session.heartbeats
        delay = session.on_timer()
        self.conn.server.stats.heartbeats += session.heartbeats - beats
        self.run()
        if self.session.has_output and not self.ended:
            self._flush()
        self._arm_timer(delay)

    def _stop(self) -> None:
        self.conn.server.wheel.cancel(self)
        self._timer_at = _NEVER
