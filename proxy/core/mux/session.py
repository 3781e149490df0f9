"""The stream table of one application/http stream (sans-IO).

Strategy: a `MuxSession` owns everything about one outer mux request: the
inner request parser, the table of inner streams, the order in which inner
responses leave, and every backpressure decision.  The I/O shell feeds it
facts (outer body bytes, origin response events, writability, timer ticks)
and carries out the commands it queues (`commands.py`); bytes for the client
are collected with `take_output_pieces()`.  Nothing here performs I/O or imports
asyncio, so every behaviour is tested byte by byte (tests/core/).

Life of an inner stream (`InnerState`):

    RECEIVING --> QUEUED --> FORWARDED --> BUFFERING --> READY --> (emitted)
        |            '-----------^            |            ^
        |                                     v            |
        '--(rejected)--> READY         STREAM_WAITING --> STREAMING --> (emitted)

A response is buffered until it is complete (then it leaves whole, with a
Content-Length) or until it outgrows `max_buffered_response` or the stream's
buffer budget; then it waits in the ready queue (its origin paused) until the
outer stream is free, and is sent as an inner chunked message that holds the
outer stream until it ends (the head-of-line cost documented in
docs/protocol.md).  Responses leave in completion order.  After a stream's
response leaves, the stream is done; a later issue (subscriptions) lets a
stream go back to FORWARDED for its next response (`final=False`).
"""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Final

from proxy.core.forwarding import (
    ClientInfo,
    OutboundRequest,
    error_response,
    append_inner_message,
    forward_fields,
    inner_message,
    inner_response_head,
)
from proxy.core.http1.fields import host_without_port, proxy_status
from proxy.core.http1.messages import (
    FRAMING_NONE,
    Body,
    EndOfMessage,
    Headers,
    ParseFailed,
    RequestHead,
    ResponseHead,
)
from proxy.core.http1.request_parser import IDEMPOTENT_METHODS, RequestParser, target_path
from proxy.core.http1.serialize import CRLF, LAST_CHUNK, append_chunk, chunk, last_chunk
from proxy.core.mux.commands import (
    PAUSE_READING,
    RESUME_READING,
    CancelExchange,
    EndOuter,
    ForwardRequest,
    InnerCompleted,
    PauseOrigin,
    ResumeOrigin,
)
from proxy.core.routing import HOST_ORIGIN, HOST_PRESERVE, RouteTable
from proxy.errors import BodyTooLarge, FramingError, HeadTimeout, NoRoute, ProxyError, RequestDenied

#: Outer body bytes handed to the inner parser at a time.  The session checks
#: its in-flight and buffer marks between slices, so at most one slice of
#: requests (about 100 minimal ones) is parsed beyond the marks; the rest of a
#: read stays unparsed, and the outer connection is paused, until there is room.
FEED_SLICE: Final = 2048

_CHUNKED: Final = [(b"Transfer-Encoding", b"chunked")]
_NOTHING: Final = memoryview(b"")  # shared: a memoryview costs 184 bytes per session
_NO_PAUSES: Final[dict[int, bool]] = {}  # shared while no origin is paused; never written
#: Shared while a session has no inner stream; never written.  A dict does
#: not shrink when its entries go: after a burst of 100 requests in flight
#: its table holds about 4.6 KiB, so an idle session drops it (on_timer).
_NO_STREAMS: Final[dict] = {}

#: Decompressed bytes produced from a gzip-coded outer body at a time, so a
#: small compressed body can never expand into memory all at once.
INFLATE_STEP: Final = 65536


@dataclass(frozen=True, slots=True)
class MuxLimits:
    """The settings a session needs (built from config.mux and config.limits)."""

    path: bytes = b"/_mux"
    max_in_flight: int = 128
    max_buffered_response: int = 64 * 1024
    max_stream_buffer: int = 4 * 1024 * 1024
    max_inner_body: int = 1024 * 1024
    max_head_size: int = 16 * 1024
    max_header_count: int = 100
    heartbeat: float = 15.0
    idle_timeout: float = 300.0
    header_timeout: float = 10.0
    gzip_level: int = 6


class InnerState(enum.Enum):
    RECEIVING = "receiving"  # head parsed, body arriving
    QUEUED = "queued"  # complete, waiting for an in-flight slot
    FORWARDED = "forwarded"  # handed to the origin, no response head yet
    BUFFERING = "buffering"  # response arriving, held back
    READY = "ready"  # a complete message waits in the ready queue
    STREAM_WAITING = "stream-waiting"  # too large to buffer: waits for the outer stream
    STREAMING = "streaming"  # owns the outer stream until its body ends
    DONE = "done"


class InnerStream:
    """One inner request and the response(s) it gets."""

    __slots__ = (
        "stream_id",
        "head",
        "target",
        "request_id",
        "method",
        "state",
        "route",
        "origin",
        "request",
        "rejection",
        "body_parts",
        "body_size",
        "held",
        "dispatched",
        "response",
        "buffer",
        "buffered",
        "message",
        "complete",
        "more",
        "status",
        "body_bytes",
        "error",
        "started",
    )

    def __init__(
        self,
        stream_id: int,
        head: RequestHead | None,
        target: bytes | None,
        started: float,
        request_id: bytes | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.head = head
        self.target = target
        self.request_id = head.request_id if head is not None else request_id
        self.method = head.method if head is not None else b""
        self.state = InnerState.RECEIVING
        self.route = ""
        self.origin = ""
        self.request: OutboundRequest | None = None
        self.rejection: ProxyError | None = None
        self.body_parts: list[bytes] = []
        self.body_size = 0
        self.held = 0  # request body bytes counted against the stream's budget
        self.dispatched = False
        self.response: ResponseHead | None = None
        self.buffer: list[bytes] = []
        self.buffered = 0
        self.message = b""  # the complete inner message, once READY
        self.complete = False  # the origin finished while STREAM_WAITING
        self.more = False  # the response in the ready queue is not the last one
        self.status = 0
        self.body_bytes = 0
        self.error = ""
        self.started = started

    def __repr__(self) -> str:
        return f"<InnerStream {self.stream_id} {self.method.decode()} {self.target!r} {self.state.value}>"

    @property
    def tags(self) -> Headers:
        """The correlation fields every inner response carries (none when the
        stream broke before a request target could be read)."""
        if self.target is None:
            return []
        if self.request_id is None:
            return [(b"Content-Location", self.target)]
        return [(b"Content-Location", self.target), (b"Request-Id", self.request_id)]


class MuxSession:
    # Slots: a session lives as long as its stream, possibly for hours and
    # mostly idle; a per-instance dict would triple its size.
    __slots__ = (
        "_buffered_response_bytes",
        "_committed",
        "_compressed",
        "_current",
        "_deflater",
        "_dispatched",
        "_head_since",
        "_held_request_bytes",
        "_inflater",
        "_input_abandoned",
        "_input_done",
        "_next_id",
        "_out",
        "_outer_writable",
        "_parser",
        "_paused_origins",
        "_pending",
        "_pumping",
        "_reading",
        "_ready",
        "_left_untaken",
        "_unparsed",
        "client",
        "clock",
        "commands",
        "ended",
        "gzip_response",
        "heartbeats",
        "inherited",
        "last_input_at",
        "last_output_at",
        "limits",
        "next_check",
        "outer_host",
        "peak_in_flight",
        "proxy_name",
        "report_completions",
        "routes",
        "streams",
    )

    def __init__(
        self,
        *,
        limits: MuxLimits,
        routes: RouteTable,
        client: ClientInfo,
        outer_host: bytes | None,
        inherited: dict[bytes, bytes],
        proxy_name: bytes,
        gzip_response: bool,
        gzip_request: bool,
        clock: Callable[[], float],
        report_completions: bool = True,
    ) -> None:
        self.limits = limits
        self.routes = routes
        self.client = client
        self.outer_host = outer_host
        self.inherited = inherited
        self.proxy_name = proxy_name
        self.clock = clock
        #: Queue InnerCompleted for each answered request (for the access
        #: log); off when nobody logs, to save a command per request.
        self.report_completions = report_completions
        self.commands: list = []
        self.streams: dict[int, InnerStream] = _NO_STREAMS
        # The inner parser exists only while there is inner input to parse:
        # an idle stream (between messages, nothing buffered) drops it at its
        # next timer tick, and it is made again when bytes arrive.  About a
        # kilobyte per idle stream (httptools keeps a bound method per
        # callback), for about two microseconds per re-creation.
        self._parser: RequestParser | None = None
        self._next_id = 1
        self._current: InnerStream | None = None  # stream whose body is arriving
        # Lists, not deques: an empty deque allocates a 64-slot block at
        # once, and these are short (at most max_in_flight plus one slice).
        # Empty tuples until used: an idle stream should not pay for lists.
        # (Typed Any: a list of InnerStream once used, the empty tuple before;
        # every use tests it for emptiness first.)
        self._pending: Any = ()  # QUEUED streams
        self._ready: Any = ()  # READY / STREAM_WAITING, completion order
        # Responses written to _out since the shell last took it: with the
        # ready ones they are answers the client has not been given yet,
        # and parsing stops while there are max_in_flight of them (a flood
        # of refused requests costs no origin slot, so the in-flight mark
        # alone would let one read turn into any number of error responses).
        self._left_untaken = 0
        self._committed: InnerStream | None = None  # the STREAMING one
        self._dispatched = 0
        self._held_request_bytes = 0
        self._buffered_response_bytes = 0
        self._paused_origins: dict[int, bool] = _NO_PAUSES  # a dict of its own once one pauses
        self._out: list[bytes] = []
        self.gzip_response = gzip_response
        self._deflater = zlib.compressobj(limits.gzip_level, zlib.DEFLATED, 31) if gzip_response else None
        self._inflater = zlib.decompressobj(31) if gzip_request else None
        self._compressed = b""
        self._unparsed: memoryview = _NOTHING
        self._pumping = False
        self._reading = True
        self._outer_writable = True
        # The client ended its body / we stopped reading it before its end
        # (framing lost, idle timeout): either way no more inner requests.
        self._input_done = False
        self._input_abandoned = False
        self.ended = False
        now = clock()
        self.last_output_at = now
        self.last_input_at = now
        #: When an inner head began arriving (None between heads): a head
        #: must be complete within limits.header_timeout, however slowly it
        #: trickles in (a deadline, not an inactivity timer: slowloris).
        self._head_since: float | None = None
        #: Clock time by which on_timer() must run next; the shell re-arms
        #: its timer when this moves earlier.
        self.next_check = now
        #: Highest number of inner requests in flight at once (for the record).
        self.peak_in_flight = 0
        self.heartbeats = 0  # CRLFs written (for the metrics)

    def __repr__(self) -> str:
        return (
            f"<MuxSession {len(self.streams)} streams, {self._dispatched} in flight, "
            f"{len(self._pending)} queued, {len(self._ready)} ready, "
            f"{'streaming ' + str(self._committed.stream_id) if self._committed else 'outer free'}"
            f"{', ended' if self.ended else ''}>"
        )

    # --- facts from the shell -----------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Outer request body bytes (transfer coding removed)."""
        if self.ended or self._input_abandoned or not data:
            return
        self.last_input_at = self.clock()
        if self._inflater is not None:
            self._compressed += data
        elif self._unparsed:
            self._unparsed = memoryview(bytes(self._unparsed) + data)
        else:
            self._unparsed = memoryview(data)
        self._pump()
        self._update_reading()

    def receive_end(self) -> None:
        """The client ended the outer request body."""
        if self.ended:
            return
        self._input_done = True
        self._pump()
        self._maybe_end()
        self._update_reading()

    def response_started(self, stream_id: int, head: ResponseHead) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.state is not InnerState.FORWARDED:
            return
        stream.response = head
        stream.status = head.status
        stream.state = InnerState.BUFFERING
        self._release_request_body(stream)

    def response_data(self, stream_id: int, data: bytes) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or not data:
            return
        state = stream.state
        if state is InnerState.STREAMING:
            append_chunk(self._out, data)
            stream.body_bytes += len(data)
            if not self._outer_writable:
                self._pause_origin(stream)
            return
        if state is not InnerState.BUFFERING and state is not InnerState.STREAM_WAITING:
            return
        size = len(data)
        stream.buffer.append(data)
        stream.buffered += size
        self._buffered_response_bytes += size
        if state is InnerState.BUFFERING and (
            stream.buffered > self.limits.max_buffered_response
            or self._buffered_response_bytes > self.limits.max_stream_buffer
        ):
            stream.state = InnerState.STREAM_WAITING
            self._queue_ready(stream)
            self._emit()
        if stream.state is InnerState.STREAM_WAITING:
            self._pause_origin(stream)
        if self._reading and self._buffered_response_bytes >= self.limits.max_stream_buffer:
            self._update_reading()

    def response_ended(self, stream_id: int, *, final: bool = True) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        state = stream.state
        if state is InnerState.STREAMING:
            self._out.append(LAST_CHUNK)
            self._committed = None
            self._response_left(stream, final)
            self._emit()
        elif state is InnerState.BUFFERING:
            message = self._buffered_message(stream)
            if self._committed is None and not self._ready and self._outer_writable:
                # The common case, kept short: the outer stream is free and
                # nothing waits, so the message leaves at once.
                self._out.append(message)
                self._buffered_response_bytes -= stream.buffered
                stream.buffered = 0
                stream.buffer = []
                self._response_left(stream, final)
            else:
                stream.more = not final
                self._make_ready(stream, message)
                self._emit()
        elif state is InnerState.STREAM_WAITING:
            # Everything is here after all; it is still larger than a
            # buffered response, so it leaves as an inner chunked message
            # (docs/protocol.md §6), in one piece.
            stream.more = not final
            stream.complete = True
            stream.message = self._streamed_message(stream)
        if not self._reading:
            self._update_reading()

    def response_complete(self, stream_id: int, head: ResponseHead, body: bytes) -> None:
        """A whole response at once (same as started + data + ended)."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.state is not InnerState.FORWARDED:
            return
        size = len(body)
        if size > self.limits.max_buffered_response:
            self.response_started(stream_id, head)
            self.response_data(stream_id, body)
            self.response_ended(stream_id)
            return
        stream.response = head
        stream.status = head.status
        if stream.held:
            self._release_request_body(stream)
        stream.body_bytes = size
        target = stream.target
        assert target is not None  # a forwarded stream has its target
        if self._committed is None and not self._ready and self._outer_writable:
            append_inner_message(self._out, head, stream.method, target, stream.request_id, body)
            self._response_left(stream, True)
        else:
            stream.buffered = size
            self._buffered_response_bytes += size
            self._make_ready(stream, inner_message(head, stream.method, target, stream.request_id, body))
            self._emit()
        if not self._reading:
            self._update_reading()

    def response_failed(self, stream_id: int, error: ProxyError) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        state = stream.state
        if state is InnerState.STREAMING:
            # The head already left: end the chunked message with a trailer
            # that says the body is incomplete (docs/protocol.md, "Broken
            # responses"), so the client can tell and the stream stays framed.
            trailer = proxy_status(self.proxy_name, error.proxy_status, error.detail)
            self._out.append(last_chunk([(b"Proxy-Status", trailer)]))
            stream.error = error.proxy_status
            self._committed = None
            self._response_left(stream, True)
            self._emit()
        elif state in (InnerState.FORWARDED, InnerState.BUFFERING, InnerState.STREAM_WAITING):
            self._drop_buffer(stream)
            self._release_request_body(stream)
            message = self._error_message(stream, error)
            if state is InnerState.STREAM_WAITING:
                stream.complete = True
                stream.message = message
                stream.state = InnerState.READY  # already in the ready queue
                self._forget_pause(stream)
            else:
                self._make_ready(stream, message)
            self._emit()
        self._update_reading()

    def outer_writable(self, writable: bool) -> None:
        """The client's socket buffer went over (False) / under (True) its marks."""
        if writable == self._outer_writable:
            return
        self._outer_writable = writable
        committed = self._committed
        if writable:
            if committed is not None:
                self._resume_origin(committed)
            self._emit()
            if self._unparsed or self._compressed:
                self._pump()  # it stopped while the client's socket was full
        elif committed is not None:
            self._pause_origin(committed)
        self._update_reading()

    def abandon_input(self) -> None:
        """The outer body cannot be read any further (its own framing broke):
        finish the inner requests already complete, then end."""
        if self.ended:
            return
        self._current = None
        self._abandon_input()
        self._update_reading()

    def client_gone(self) -> None:
        """The client disconnected: cancel everything still with an origin."""
        # Latest first: cancelling an earlier exchange frees a pool slot, and
        # a later one of ours still waiting for a slot must not take it.
        for stream in reversed(list(self.streams.values())):
            if stream.dispatched and stream.state is not InnerState.DONE:
                self.commands.append(CancelExchange(stream.stream_id))
            stream.state = InnerState.DONE
        self.streams.clear()
        self._current = None
        self._pending = ()
        self._ready = ()
        self._committed = None
        self._out.clear()
        self.ended = True

    def on_timer(self) -> float:
        """Heartbeat and idle decisions; returns seconds until the next check."""
        if self.ended:
            return 0.0
        now = self.clock()
        limits = self.limits
        delays = []
        parser = self._parser
        if parser is not None and parser.is_idle and not self._unparsed and not self._compressed:
            self._parser = None  # nothing of a next message yet (see __init__)
        if not self.streams:
            self.streams = _NO_STREAMS  # let go of the table a burst grew
        if limits.heartbeat > 0:
            due = self.last_output_at + limits.heartbeat
            if now >= due and self._committed is None and not self._out:
                # Only between inner messages: a CRLF inside a streamed
                # message would be body bytes.
                self._out.append(CRLF)
                self.heartbeats += 1
                self.last_output_at = now
                due = now + limits.heartbeat
            delays.append(max(due - now, 0.05))
        if limits.idle_timeout > 0 and not self.streams and not self._input_done:
            due = self.last_input_at + limits.idle_timeout
            if now >= due:
                self._abandon_input()
                return 0.0
            delays.append(due - now)
        if self._head_since is not None and not self._input_abandoned:
            due = self._head_since + limits.header_timeout
            if now >= due:
                error = HeadTimeout(f"inner request head not complete within {limits.header_timeout:g}s")
                # Tagged like any framing error when the request line (and
                # maybe a Request-Id) already arrived: the client can tell
                # which request was cut off.
                cut = self._parser.unfinished() if self._parser is not None else None
                if cut is not None and cut.target is not None:
                    self._on_parse_failed(ParseFailed(error, cut.head, cut.target, cut.headers))
                else:
                    self._lose_framing(error)
                self._update_reading()
                return 0.0
            delays.append(due - now)
        delay = min(delays) if delays else 0.0
        self.next_check = now + delay if delays else float("inf")
        return delay

    # --- output -------------------------------------------------------------------

    def take_output(self) -> bytes:
        """`take_output_pieces()` as one bytes object."""
        return b"".join(self.take_output_pieces())

    def take_output_pieces(self) -> list[bytes]:
        """Bytes for the outer response body since the last call, as the
        pieces they were made in (gzip-coded and sync-flushed if negotiated,
        so everything taken is decodable).  Large bodies are among them
        uncopied; the shell writes the pieces with one writev
        (serialize.coalesce)."""
        deflater = self._deflater
        if not self._out and (deflater is None or not self.ended):
            return []
        pieces = self._out
        self._out = []
        if deflater is not None:
            data = b"".join(pieces)
            if self.ended:
                data = deflater.compress(data) + deflater.flush(zlib.Z_FINISH)
                self._deflater = None
            else:
                data = deflater.compress(data) + deflater.flush(zlib.Z_SYNC_FLUSH)
            pieces = [data]
        self.last_output_at = self.clock()
        if self._left_untaken:
            self._left_untaken = 0
            if self._unparsed or self._compressed:
                # Parsing stopped for the answers just taken: go on.  What it
                # produces is taken next time (has_output, commands).
                self._pump()
            if not self._reading:
                self._update_reading()
        return pieces

    @property
    def has_output(self) -> bool:
        return bool(self._out)

    def take_commands(self) -> list:
        commands = self.commands
        self.commands = []
        return commands

    @property
    def in_flight(self) -> int:
        return self._dispatched

    # --- inner request side -------------------------------------------------------

    def _new_parser(self) -> RequestParser:
        limits = self.limits
        return RequestParser(
            max_head_size=limits.max_head_size, max_header_count=limits.max_header_count, require_host=False
        )

    def _pump(self) -> None:
        """Parse buffered outer body bytes while the marks allow."""
        if self._pumping:
            return
        self._pumping = True
        try:
            parser = self._parser
            if parser is None:
                parser = self._parser = self._new_parser()
            while not self._input_abandoned and self._may_parse():
                if not self._unparsed:
                    if not self._compressed or not self._inflate():
                        break
                piece = self._unparsed[:FEED_SLICE]
                self._unparsed = self._unparsed[FEED_SLICE:]
                for event in parser.feed(piece):
                    kind = type(event)
                    if kind is RequestHead:
                        self._on_head(event)
                    elif kind is EndOfMessage:
                        stream = self._current
                        self._current = None
                        if stream is not None:
                            self._on_request_complete(stream)
                    elif kind is Body:
                        self._on_body(event.data)
                    else:
                        self._on_parse_failed(event)
            if parser.in_head:
                if self._head_since is None:
                    self._head_since = now = self.clock()
                    self.next_check = min(self.next_check, now + self.limits.header_timeout)
            else:
                self._head_since = None
            if self._input_done and not self._input_abandoned and not self._unparsed and not self._compressed:
                unfinished = parser.unfinished()
                if unfinished is not None:
                    self._on_parse_failed(unfinished)
                elif self._inflater is not None and not self._inflater.eof:
                    self._lose_framing(FramingError("the gzip request body ended early"))
        finally:
            self._pumping = False

    def _inflate(self) -> bool:
        inflater = self._inflater
        assert inflater is not None  # only gzip-coded bodies are inflated
        try:
            data = inflater.decompress(self._compressed, INFLATE_STEP)
        except zlib.error as exc:
            self._lose_framing(FramingError(f"invalid gzip request body: {exc}"))
            return False
        self._compressed = inflater.unconsumed_tail
        if inflater.eof and inflater.unused_data:
            self._lose_framing(FramingError("bytes after the end of the gzip request body"))
            return False
        self._unparsed = memoryview(data)
        return bool(data)

    def _may_parse(self) -> bool:
        """Is there room to parse another inner request?  Requests in flight
        or queued, answers not yet given to the client, and held request
        bodies are all bounded; and nothing is parsed while the client's
        socket is full (the answers could only pile up)."""
        limits = self.limits
        return (
            self._dispatched + len(self._pending) < limits.max_in_flight
            and len(self._ready) + self._left_untaken < limits.max_in_flight
            and self._held_request_bytes < limits.max_stream_buffer
            and self._outer_writable
        )

    def _on_body(self, data: bytes) -> None:
        stream = self._current
        if stream is None or stream.rejection is not None:
            return
        stream.body_size += len(data)
        if stream.body_size > self.limits.max_inner_body:
            # The rest of the body is still parsed (the framing is fine)
            # but dropped; the answer is a 413 once it has passed.
            stream.rejection = BodyTooLarge(f"inner request body over {self.limits.max_inner_body} bytes")
            self._release_request_body(stream)
            return
        stream.body_parts.append(data)
        stream.held += len(data)
        self._held_request_bytes += len(data)

    def _new_stream(self, head: RequestHead | None, target: bytes | None, request_id: bytes | None = None) -> InnerStream:
        stream = InnerStream(self._next_id, head, target, self.clock(), request_id)
        self._next_id += 1
        if self.streams is _NO_STREAMS:
            self.streams = {}
        self.streams[stream.stream_id] = stream
        return stream

    def _on_head(self, head: RequestHead) -> None:
        self._head_since = None  # the next head's deadline starts when it does
        stream_id = self._next_id
        self._next_id = stream_id + 1
        streams = self.streams
        if streams is _NO_STREAMS:
            streams = self.streams = {}
        stream = self._current = streams[stream_id] = InnerStream(stream_id, head, head.target, self.clock())
        if head.rejection is not None:
            stream.rejection = head.rejection
            return
        try:
            self._route(stream, head)
        except ProxyError as error:
            stream.rejection = error

    def _route(self, stream: InnerStream, head: RequestHead) -> None:
        """Decide where an inner request goes, or raise why it goes nowhere."""
        path = target_path(head.target)
        mux_path = self.limits.path
        if path.startswith(mux_path) and (len(path) == len(mux_path) or path[len(mux_path)] == 0x3F):
            # Exactly the endpoint (a query allowed), as outside a stream:
            # paths below it are ordinary paths (docs/protocol.md §1).
            raise RequestDenied("an inner request cannot address the mux endpoint")
        if head.upgrade:
            raise RequestDenied("an inner request cannot upgrade the protocol")
        host = head.host
        if host is None:
            host = self.outer_host
        elif not self._serves_host(host):
            # No smuggling through Host or an absolute-form authority: an
            # inner request may only address what the outer one could.
            raise RequestDenied("inner request addresses a host this stream does not serve")
        route = self.routes.match(host, path)
        if route is None:
            raise NoRoute(f"no route for {path.decode('latin-1')!r}")
        if head.content_length > self.limits.max_inner_body:
            raise BodyTooLarge(f"inner request body over {self.limits.max_inner_body} bytes")
        stream.route = route.name
        stream.origin = route.origin
        if route.host_header == HOST_PRESERVE:
            send_host = host
        elif route.host_header == HOST_ORIGIN:
            send_host = None
        else:
            send_host = route.host_header.encode("ascii")
        method = head.method
        fields, proxy_fields = forward_fields(head, self.client, host, self.inherited)
        stream.request = OutboundRequest(
            method,
            route.origin_target(path) if route.strip_prefix else path,
            send_host,
            fields,
            proxy_fields,
            None,  # body: set when the request is complete
            False,
            -1,
            method in IDEMPOTENT_METHODS,
            route.timeouts,
            route.name,
        )

    def _serves_host(self, host: bytes) -> bool:
        outer = self.outer_host
        if outer is not None and host_without_port(host) == host_without_port(outer):
            return True
        return self.routes.names_host(host)

    def _on_request_complete(self, stream: InnerStream) -> None:
        if stream.rejection is not None:
            self._make_ready(stream, self._error_message(stream, stream.rejection))
            self._emit()
            return
        request = stream.request
        head = stream.head
        assert request is not None and head is not None  # routed: both are set
        if head.framing != FRAMING_NONE:
            request.body = b"".join(stream.body_parts)
            request.content_length = len(request.body)
        stream.body_parts = []
        if self._pending or self._dispatched >= self.limits.max_in_flight:
            stream.state = InnerState.QUEUED
            if self._pending:
                self._pending.append(stream)
            else:
                self._pending = [stream]
        else:
            self._dispatch(stream)

    def _dispatch(self, stream: InnerStream) -> None:
        stream.state = InnerState.FORWARDED
        stream.dispatched = True
        self._dispatched += 1
        if self._dispatched > self.peak_in_flight:
            self.peak_in_flight = self._dispatched
        request = stream.request
        assert request is not None  # only routed streams are dispatched
        self.commands.append(ForwardRequest(stream.stream_id, stream.origin, request))

    def _on_parse_failed(self, event: ParseFailed) -> None:
        request_id = None
        for name, value in event.headers:
            if len(name) == 10 and name.lower() == b"request-id":
                request_id = value
        self._lose_framing(event.error, event.target, request_id)

    def _lose_framing(self, error: ProxyError, target: bytes | None = None, request_id: bytes | None = None) -> None:
        """The next message boundary is unknown: answer the broken message
        (tagged when its target is known), stop reading, finish the rest."""
        stream = self._current
        self._current = None
        if stream is None:
            stream = self._new_stream(None, target, request_id)
        self._release_request_body(stream)
        self._make_ready(stream, self._error_message(stream, error))
        self._abandon_input()
        self._emit()

    def _abandon_input(self) -> None:
        """Read no more of the outer body; requests already complete still run."""
        self._input_abandoned = True
        self._unparsed = _NOTHING
        self._compressed = b""
        self._maybe_end()

    # --- response side ------------------------------------------------------------

    def _buffered_message(self, stream: InnerStream) -> bytes:
        buffer = stream.buffer
        body = buffer[0] if len(buffer) == 1 else b"".join(buffer)
        stream.body_bytes = len(body)
        response, target = stream.response, stream.target
        assert response is not None and target is not None  # it has been answered
        return inner_message(response, stream.method, target, stream.request_id, body)

    def _streamed_message(self, stream: InnerStream) -> bytes:
        body = b"".join(stream.buffer)
        stream.body_bytes = len(body)
        response = stream.response
        assert response is not None  # it has been answered
        head = inner_response_head(response, stream.method, stream.tags, _CHUNKED)
        return head + (chunk(body) if body else b"") + LAST_CHUNK

    def _error_message(self, stream: InnerStream, error: ProxyError) -> bytes:
        stream.status = error.status
        stream.error = error.proxy_status
        return error_response(error, self.proxy_name, tags=stream.tags, head_only=stream.method == b"HEAD")

    def _make_ready(self, stream: InnerStream, message: bytes) -> None:
        """Queue a complete message; its buffered body bytes stay counted
        until it leaves (they are still in memory, inside `message`)."""
        stream.message = message
        stream.state = InnerState.READY
        stream.buffer = []
        self._queue_ready(stream)

    def _queue_ready(self, stream: InnerStream) -> None:
        if self._ready:
            self._ready.append(stream)
        else:
            self._ready = [stream]

    def _emit(self) -> None:
        """Move ready messages to the output while the outer stream is free."""
        while self._committed is None and self._ready and self._outer_writable:
            # Declared: _ready is typed Any, and compiled, a stream read from
            # it would have each of its fields below looked up by name.
            stream: InnerStream = self._ready.pop(0)
            if stream.state is InnerState.READY or stream.complete:
                self._out.append(stream.message)
                stream.message = b""
                self._drop_buffer(stream)
                self._response_left(stream, not stream.more)
            elif stream.state is InnerState.STREAM_WAITING:
                response = stream.response
                assert response is not None  # STREAM_WAITING follows the head
                self._out.append(inner_response_head(response, stream.method, stream.tags, _CHUNKED))
                if stream.buffer:
                    data = b"".join(stream.buffer)
                    append_chunk(self._out, data)
                    stream.body_bytes += len(data)
                self._drop_buffer(stream)
                stream.state = InnerState.STREAMING
                self._committed = stream
                self._resume_origin(stream)

    def _response_left(self, stream: InnerStream, final: bool) -> None:
        """A response of `stream` has been written out completely."""
        self._left_untaken += 1
        if self._paused_origins:
            self._paused_origins.pop(stream.stream_id, None)
        if not final:
            stream.state = InnerState.FORWARDED
            stream.response = None
            stream.complete = stream.more = False
            return
        stream.state = InnerState.DONE
        del self.streams[stream.stream_id]
        if stream.held:
            self._release_request_body(stream)
        if self.report_completions:
            self.commands.append(
                InnerCompleted(
                    stream.stream_id,
                    stream.method,
                    stream.target,
                    stream.route or "-",
                    stream.status,
                    stream.body_bytes,
                    stream.started,
                    stream.error,
                )
            )
        if stream.dispatched:
            self._dispatched -= 1
            if self._pending:
                self._dispatch(self._pending.pop(0))
        if self._unparsed or self._compressed:
            self._pump()
        if self._input_done or self._input_abandoned:
            self._maybe_end()

    def _drop_buffer(self, stream: InnerStream) -> None:
        self._buffered_response_bytes -= stream.buffered
        stream.buffered = 0
        stream.buffer = []

    def _release_request_body(self, stream: InnerStream) -> None:
        """The stream's request body no longer counts against the budget (it
        was refused, or the origin has begun to answer, so no retry needs it)."""
        self._held_request_bytes -= stream.held
        stream.held = 0
        stream.body_parts = []

    def _pause_origin(self, stream: InnerStream) -> None:
        if stream.dispatched and stream.stream_id not in self._paused_origins:
            if self._paused_origins is _NO_PAUSES:
                self._paused_origins = {}
            self._paused_origins[stream.stream_id] = True
            self.commands.append(PauseOrigin(stream.stream_id))

    def _resume_origin(self, stream: InnerStream) -> None:
        if stream.stream_id in self._paused_origins:
            self._paused_origins.pop(stream.stream_id, None)
            self.commands.append(ResumeOrigin(stream.stream_id))

    def _forget_pause(self, stream: InnerStream) -> None:
        self._paused_origins.pop(stream.stream_id, None)

    # --- the outer stream as a whole ----------------------------------------------

    def _maybe_end(self) -> None:
        if self.ended or self.streams or self._pending:
            return
        if self._input_abandoned or (self._input_done and not self._unparsed and not self._compressed):
            self.ended = True
            self.commands.append(EndOuter(close=self._input_abandoned))

    def _update_reading(self) -> None:
        if self.ended:
            return  # the connection decides once the stream is over
        wanted = (
            not self.ended
            and not self._input_abandoned
            and not self._input_done
            and self._outer_writable
            and not self._unparsed
            and not self._compressed
            and self._may_parse()
            and self._buffered_response_bytes < self.limits.max_stream_buffer
        )
        if wanted != self._reading:
            self._reading = wanted
            self.commands.append(RESUME_READING if wanted else PAUSE_READING)
