"""Differential tests: muxproxy's HTTP/1.x parsers against h11, message by message.

Strategy: the same byte stream goes to muxproxy's parser and to h11 (an
independent, pure-Python parser with its own reading of RFC 9112), and the
two readings are compared message by message.  What matters most is where
each parser thinks message N ends: two parsers that disagree on that are
the whole of request smuggling (and of response desync on a pooled origin
connection).

The policy, applied by `compare_requests` and `compare_responses`:
- muxproxy may be STRICTER than h11: refusing what h11 accepts is fine, and
  ends the comparison (a framing failure) or skips that message (a framed
  refusal, `RequestHead.rejection`);
- muxproxy must never accept a message that h11 rejects, unless the
  difference is one of `ALLOWED_DIFFERENCES`: a leniency the RFC allows, each
  with an `undo` that rewrites the message into what a strict sender would
  have sent; h11 must accept the rewritten message and read it exactly as
  muxproxy read the original;
- whenever both accept a message (muxproxy's framed refusals included, for
  the boundary), the boundary must agree exactly, and so must the contents:
  method and target (or status and reason), the fields (names compared
  case-insensitively, values without the surrounding whitespace that is not
  part of a field value, RFC 9110 §5.5), the body and the trailer fields.

Reading the boundaries: muxproxy is fed byte by byte, so the offset of the
byte that completed a message is known exactly (and the byte-by-byte events
are checked against a whole feed).  h11 is fed the whole stream; after each
EndOfMessage `Connection.trailing_data` says how much of it is still unread.
Between requests, the h11 server answers with a dummy response and calls
`start_next_cycle()`; when h11 will not reuse the connection (Connection:
close, HTTP/1.0) a new h11 connection reads the rest, because muxproxy's
parsers leave that decision to the connection layer and a mux stream ignores
it.  Responses are read the same way with h11 as the client: it sends each
request first (a HEAD for a HEAD exchange), then reads the origin's bytes,
with `receive_data(b"")` for an origin that closed (close-delimited bodies).
muxproxy's response parser takes one exchange at a time: the next exchange
is started only when the last one is complete and reusable, as the pool
does; the bytes it would never read (after a non-reusable response) are not
compared.  1xx interim responses are dropped by muxproxy and skipped here,
and so are response trailers (muxproxy drops them by design).  When h11 has
read a head to its end while muxproxy is still inside it, muxproxy has
accepted nothing yet: the stream is probed with an empty line appended
(`HEAD_PROBE`), and muxproxy must then refuse the head, not end it elsewhere.

Inputs: the hand-written corpus of tests/core/corpus.py, then hypothesis
streams of valid messages, plain and mutated (profiles: tests/core/corpus.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core.http1.messages import Body, EndOfMessage, ParseFailed, RequestHead, ResponseHead
from proxy.core.http1.response_parser import AWAITING_HEAD, DONE
from proxy.errors import ProxyError
from tests.core.corpus import (
    FUZZ,
    REQUESTS,
    RESPONSES,
    ResponseCase,
    mutated_request_streams,
    mutated_responses,
    request_streams,
    response_cases,
)
from tests.core.feeding import normalise, request_parser, response_parser

#: The two kinds of request stream: a client connection (Host required) and
#: the inner stream of a mux request (Host inherited from the outer request).
MODES = {"outer": True, "inner": False}

#: h11 buffers at most this much of an incomplete head; far above anything
#: in the inputs, so that h11 never refuses for size where muxproxy would not.
H11_MAX_INCOMPLETE = 1 << 20

HOST_FOR_UNDO = b"example.com"


# --- What a parser read ------------------------------------------------------------------


def normal_fields(fields) -> tuple[tuple[bytes, bytes], ...]:
    """Field lines as compared: lower-case names, values without surrounding
    whitespace (not part of a value, RFC 9110 §5.5); a transfer coding name
    is case-insensitive (RFC 9112 §7) and h11 lower-cases it."""
    out = []
    for name, value in fields:
        name = bytes(name).lower()
        value = bytes(value).strip(b" \t")
        if name == b"transfer-encoding":
            value = value.lower()
        out.append((name, value))
    return tuple(out)


@dataclass(frozen=True)
class Message:
    """One complete message as a parser read it."""

    end: int  # offset just past its last byte in the stream
    start_line: tuple  # (method, target) or (status, reason)
    fields: tuple
    body: bytes
    trailers: tuple = ()
    #: muxproxy only: the framed refusal (`RequestHead.rejection`) it carries.
    refused: str | None = field(default=None, compare=False)

    @property
    def contents(self) -> tuple:
        return (self.start_line, self.fields, self.body, self.trailers)


@dataclass(frozen=True)
class Stop:
    """Why a reader has no further message."""

    kind: str  # "failed", "incomplete" (inside a message), "idle" (nothing left), "unread"
    reason: str = ""


IN_HEAD = "in the head"

#: Appended to a stream when muxproxy is still inside a head that h11 has
#: already read to its end: muxproxy has accepted nothing yet, and must not
#: accept a head that ends anywhere else once its own terminator comes.
HEAD_PROBE = b"\r\n\r\n"


@dataclass
class Reading:
    messages: list[Message]
    stop: Stop


@dataclass(frozen=True)
class Disagreement:
    index: int  # which message of the stream
    what: str
    muxproxy: object
    h11: object

    def __str__(self) -> str:
        return f"message {self.index}: {self.what}\n    muxproxy: {self.muxproxy!r}\n    h11:      {self.h11!r}"


# --- muxproxy, byte by byte ----------------------------------------------------------------


def muxproxy_requests(data: bytes, require_host: bool) -> Reading:
    parser = request_parser(require_host=require_host)
    messages: list[Message] = []
    head: RequestHead | None = None
    body = b""
    events_fed_bytewise: list = []
    for offset in range(len(data)):
        events = parser.feed(data[offset : offset + 1])
        events_fed_bytewise += events
        for event in events:
            if isinstance(event, RequestHead):
                head, body = event, b""
            elif isinstance(event, Body):
                body += event.data
            elif isinstance(event, EndOfMessage):
                assert head is not None
                refused = None if head.rejection is None else repr(head.rejection)
                fields = normal_fields(head.headers)
                messages.append(
                    Message(offset + 1, (head.method, head.target), fields, body, normal_fields(event.trailers), refused)
                )
                head = None
            else:
                assert isinstance(event, ParseFailed) and isinstance(event.error, ProxyError), event
                _check_feeding_independent(data, require_host, events_fed_bytewise)
                return Reading(messages, Stop("failed", repr(event.error)))
    _check_feeding_independent(data, require_host, events_fed_bytewise)
    if parser.is_idle:
        return Reading(messages, Stop("idle"))
    return Reading(messages, Stop("incomplete", IN_HEAD if parser.in_head else "in the body"))


def _check_feeding_independent(data: bytes, require_host: bool, bytewise: list) -> None:
    whole = request_parser(require_host=require_host).feed(data)
    assert normalise(whole) == normalise(bytewise), "muxproxy reads this stream differently fed whole and byte by byte"


def muxproxy_responses(case: ResponseCase) -> Reading:
    """One exchange per method; the next starts when the last is complete and
    reusable (as the pool would), so its bytes are never "extra"."""
    data, methods = case.data, case.methods
    parser = response_parser()
    parser.start(methods[0])
    exchange = 0
    messages: list[Message] = []
    head: ResponseHead | None = None
    body = b""

    def take(events: list, offset: int) -> Stop | None:
        nonlocal head, body
        for event in events:
            if isinstance(event, ResponseHead):
                head, body = event, b""
            elif isinstance(event, Body):
                body += event.data
            elif isinstance(event, EndOfMessage):
                assert head is not None
                messages.append(Message(offset, (head.status, head.reason), normal_fields(head.headers), body))
                head = None
            else:
                assert isinstance(event, ParseFailed) and isinstance(event.error, ProxyError), event
                return Stop("failed", repr(event.error))
        return None

    for offset in range(len(data)):
        if parser.state == DONE:
            if not parser.reusable or exchange + 1 == len(methods):
                return Reading(messages, Stop("unread", f"{len(data) - offset} bytes after a response it will not reuse"))
            exchange += 1
            parser.start(methods[exchange])
        stop = take(parser.feed(data[offset : offset + 1]), offset + 1)
        if stop is not None:
            return Reading(messages, stop)
    if case.eof:
        stop = take(parser.feed_eof(), len(data))
        if stop is not None:
            return Reading(messages, stop)
    if parser.state == DONE:
        return Reading(messages, Stop("idle"))
    return Reading(messages, Stop("incomplete", IN_HEAD if parser.state == AWAITING_HEAD else "in the body"))


# --- h11, the reference --------------------------------------------------------------------


class H11Requests:
    """h11 in the server role, reading one request at a time from `data`."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.resync(0)

    def resync(self, offset: int) -> None:
        """Read on from `offset` with a new connection."""
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=H11_MAX_INCOMPLETE)
        if offset < len(self.data):  # receive_data(b"") would mean the peer closed
            self.conn.receive_data(self.data[offset:])

    @property
    def position(self) -> int:
        return len(self.data) - len(self.conn.trailing_data[0])

    def next(self) -> Message | Stop:
        conn = self.conn
        request: h11.Request | None = None
        body = bytearray()
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    return Stop("incomplete" if request is not None or self.position < len(self.data) else "idle")
                if isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert request is not None
                    message = Message(
                        self.position,
                        (request.method, request.target),
                        normal_fields(request.headers),
                        bytes(body),
                        normal_fields(event.headers),
                    )
                    self._next_cycle()
                    return message
                else:
                    raise AssertionError(f"unexpected h11 event {event!r}")
        except h11.RemoteProtocolError as exc:
            return Stop("failed", str(exc))

    def _next_cycle(self) -> None:
        conn = self.conn
        # 404: a denial for CONNECT and Upgrade too, so h11 never switches.
        conn.send(h11.Response(status_code=404, headers=[("Content-Length", "0")]))
        conn.send(h11.EndOfMessage())
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            # h11 would close (Connection: close, HTTP/1.0); a mux stream does
            # not, so a new connection reads what follows.
            self.resync(self.position)


class H11Responses:
    """h11 in the client role: sends each request, then reads its response."""

    def __init__(self, case: ResponseCase) -> None:
        self.case = case
        self.resync(0)

    def resync(self, offset: int) -> None:
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=H11_MAX_INCOMPLETE)
        if offset < len(self.case.data):  # receive_data(b"") would mean the peer closed
            self.conn.receive_data(self.case.data[offset:])
        self.eof_sent = False

    @property
    def position(self) -> int:
        return len(self.case.data) - len(self.conn.trailing_data[0])

    def next(self, method: bytes) -> Message | Stop:
        conn = self.conn
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "example.com")]))
        conn.send(h11.EndOfMessage())
        response: h11.Response | None = None
        body = bytearray()
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    if self.case.eof and not self.eof_sent:
                        conn.receive_data(b"")
                        self.eof_sent = True
                        continue
                    return Stop("incomplete")
                if isinstance(event, h11.InformationalResponse):
                    continue
                if isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert response is not None
                    end = len(self.case.data) if self.eof_sent else self.position
                    message = Message(
                        end, (response.status_code, bytes(response.reason)), normal_fields(response.headers), bytes(body)
                    )
                    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                        conn.start_next_cycle()
                    else:
                        self.resync(end)
                    return message
                elif isinstance(event, h11.ConnectionClosed):
                    return Stop("idle")
                else:
                    raise AssertionError(f"unexpected h11 event {event!r}")
        except h11.RemoteProtocolError as exc:
            return Stop("failed", str(exc))


# --- The policy ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Leniency:
    """Something muxproxy (llhttp) accepts and h11 does not, allowed by the RFC.

    `undo(raw, method)` returns the message as a strict sender would have
    written it, or None when the leniency is not involved (`method` is the
    request method for a response, b"" for a request); h11 must read the
    result as muxproxy read `raw`.  The fields named in `ignored` are left
    out of that comparison (`undo` adds or removes them).
    """

    name: str
    applies_to: frozenset[str]  # "outer", "inner", "response"
    rfc: str
    undo: Callable[[bytes, bytes], bytes | None]
    ignored: frozenset[bytes] = frozenset()


_EMPTY_LINES = re.compile(rb"\A[\r\n]+")
_SP_RUNS = re.compile(rb"  +")


def _without_leading_empty_lines(raw: bytes, method: bytes) -> bytes | None:
    stripped = _EMPTY_LINES.sub(b"", raw)
    return stripped if stripped != raw else None


def _without_empty_lines_before_status(raw: bytes, method: bytes) -> bytes | None:
    """Without the CR and LF before the status line of each response: the
    final one and every 1xx before it."""
    pieces, rest = [], raw
    while True:
        rest = rest.lstrip(b"\r\n")
        end = rest.find(b"\r\n\r\n")
        if end < 0 or rest[9:10] != b"1":
            pieces.append(rest)
            break
        pieces.append(rest[: end + 4])
        rest = rest[end + 4 :]
    undone = b"".join(pieces)
    return undone if undone != raw else None


def _request_line_single_sp(raw: bytes, method: bytes) -> bytes | None:
    end = raw.find(b"\r\n")
    if end < 0:
        return None
    line = _SP_RUNS.sub(b" ", raw[:end])
    return line + raw[end:] if line != raw[:end] else None


def _with_host(raw: bytes, method: bytes) -> bytes | None:
    end = raw.find(b"\r\n")
    head_end = raw.find(b"\r\n\r\n")
    if end < 0 or not raw[:end].endswith(b" HTTP/1.1"):
        return None
    if re.search(rb"\r\nhost:", raw[: head_end + 2], re.IGNORECASE):
        return None
    return raw[: end + 2] + b"Host: " + HOST_FOR_UNDO + b"\r\n" + raw[end + 2 :]


def _bodyless_without_transfer_encoding(raw: bytes, method: bytes) -> bytes | None:
    start = 0
    while True:  # the final response's head, after any 1xx
        end = raw.find(b"\r\n\r\n", start)
        if end < 0:
            return None
        status = raw[start + 9 : start + 12]
        if not status.startswith(b"1"):
            break
        start = end + 4
    if status not in (b"204", b"304") and method != b"HEAD":
        return None
    lines = raw[start:end].split(b"\r\n")
    kept = [line for line in lines if not line.lower().startswith(b"transfer-encoding:")]
    if len(kept) == len(lines):
        return None
    return raw[:start] + b"\r\n".join(kept) + raw[end:]


#: Every case where muxproxy may accept what h11 rejects.  An entry must be a
#: leniency the RFC allows AND harmless behind a proxy that re-serialises
#: every message (serialize.py): the next hop never sees the lenient form.
ALLOWED_DIFFERENCES: tuple[Leniency, ...] = (
    Leniency(
        "empty lines before the request line",
        frozenset(MODES),
        "RFC 9112 §2.2: a server that is expecting to receive and parse a request-line SHOULD ignore "
        "at least one empty line (CRLF) received prior to the request-line (h11: 'no request line received', "
        "'illegal request line').  llhttp skips any run of CR and LF there, a bare CR included, which §2.2 "
        "does not allow; harmless here because the skipped bytes are outside every message: they are never "
        "forwarded, and a parser before muxproxy either skips them too or refuses the stream",
        _without_leading_empty_lines,
    ),
    Leniency(
        "empty lines before the status line",
        frozenset({"response"}),
        "RFC 9112 §2.2 allows them before a request line only; llhttp skips CR and LF before a status line "
        "too (h11: 'no response line received').  Old servers do send a CRLF after a body.  When it arrives "
        "with the response or while the connection is idle, the connection is not reused (bytes after the "
        "end); when it arrives after the next request went out it is skipped: the bytes carry nothing, "
        "are never forwarded, and the response after them is read exactly as without them",
        _without_empty_lines_before_status,
    ),
    Leniency(
        "several SP between the parts of the request line",
        frozenset(MODES),
        "RFC 9112 §3: recipients MAY instead parse on whitespace-delimited word boundaries "
        "(h11 requires exactly one SP: 'illegal request line'); llhttp collapses SP runs only",
        _request_line_single_sp,
    ),
    Leniency(
        "HTTP/1.1 inner request without Host",
        frozenset({"inner"}),
        "docs/protocol.md: an inner request inherits the Host of the outer request, which RFC 9112 §3.2 "
        "requires; the proxy always sends a Host to the origin (h11: 'Missing mandatory Host: header')",
        _with_host,
        frozenset({b"host"}),
    ),
    Leniency(
        "Transfer-Encoding of a response that has no body (HEAD, 204, 304)",
        frozenset({"response"}),
        "RFC 9112 §6.3 item 1: such a response is always terminated by the first empty line after the "
        "header fields, regardless of the header fields present; muxproxy never reads nor forwards its "
        "Transfer-Encoding (hop-by-hop).  h11 validates it anyway: 'Only Transfer-Encoding: chunked is "
        "supported', 'multiple Transfer-Encoding headers'",
        _bodyless_without_transfer_encoding,
        frozenset({b"transfer-encoding"}),
    ),
)


def _undo_leniencies(raw: bytes, method: bytes, kind: str) -> tuple[bytes, list[Leniency]]:
    used = []
    for leniency in ALLOWED_DIFFERENCES:
        if kind in leniency.applies_to:
            undone = leniency.undo(raw, method)
            if undone is not None:
                raw = undone
                used.append(leniency)
    return raw, used


def _same_but_ignored(mine: Message, reference: Message, used: list[Leniency]) -> bool:
    ignored = {name for leniency in used for name in leniency.ignored}

    def kept(fields: tuple) -> tuple:
        return tuple(f for f in fields if f[0] not in ignored)

    return (reference.start_line, kept(reference.fields), reference.body, reference.trailers) == (
        mine.start_line,
        kept(mine.fields),
        mine.body,
        mine.trailers,
    )


def allowed_difference(raw: bytes, mine: Message, mode: str) -> list[str] | None:
    """The leniencies that explain why h11 rejects the request `raw`, which
    muxproxy read as `mine`; None if they do not (h11 still rejects, or
    reads it otherwise)."""
    raw, used = _undo_leniencies(raw, b"", mode)
    if not used:
        return None
    reference = H11Requests(raw).next()
    if not isinstance(reference, Message) or reference.end != len(raw) or not _same_but_ignored(mine, reference, used):
        return None
    return [leniency.name for leniency in used]


def allowed_response_difference(raw: bytes, mine: Message, method: bytes, eof: bool) -> list[str] | None:
    """The same for the response `raw` to `method` (`eof`: the origin closed
    right after it)."""
    raw, used = _undo_leniencies(raw, method, "response")
    if not used:
        return None
    reference = H11Responses(ResponseCase((method,), raw, eof)).next(method)
    if not isinstance(reference, Message) or reference.end != len(raw) or not _same_but_ignored(mine, reference, used):
        return None
    return [leniency.name for leniency in used]


@dataclass
class Comparison:
    disagreements: list[Disagreement] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)  # leniencies used
    stricter: list[str] = field(default_factory=list)  # where muxproxy refused what h11 accepted
    agreed: int = 0  # messages both read identically


def compare_requests(data: bytes, mode: str) -> Comparison:
    mine = muxproxy_requests(data, MODES[mode])
    ref = H11Requests(data)
    result = Comparison()
    start = 0
    for index, message in enumerate(mine.messages):
        theirs = ref.next()
        if isinstance(theirs, Message):
            if theirs.end != message.end:
                result.disagreements.append(Disagreement(index, "the message ends elsewhere", message, theirs))
                return result
            if message.refused is None and theirs.contents != message.contents:
                result.disagreements.append(Disagreement(index, "the message reads differently", message, theirs))
            elif message.refused is not None:
                result.stricter.append(f"message {index} refused (framing kept): {message.refused}")
            else:
                result.agreed += 1
        elif theirs.kind == "failed":
            if message.refused is None:
                names = allowed_difference(data[start : message.end], message, mode)
                if names is None:
                    result.disagreements.append(
                        Disagreement(index, "muxproxy accepts a message h11 rejects", message, theirs)
                    )
                    return result
                result.allowed += names
            # h11 cannot tell where this message ends; muxproxy can, and reads on.
            ref.resync(message.end)
        else:
            result.disagreements.append(Disagreement(index, "muxproxy ends the message where h11 reads on", message, theirs))
            return result
        start = message.end
    theirs = ref.next()
    if mine.stop.kind == "failed":
        if isinstance(theirs, Message):
            result.stricter.append(f"message {len(mine.messages)}: {mine.stop.reason} (h11 accepts it)")
    elif isinstance(theirs, Message):
        if mine.stop.reason == IN_HEAD:
            probed = muxproxy_requests(data + HEAD_PROBE, MODES[mode])
            if probed.stop.kind == "failed" and len(probed.messages) == len(mine.messages):
                result.stricter.append(f"message {len(mine.messages)}: head refused once complete (h11 accepts it)")
                return result
        result.disagreements.append(
            Disagreement(len(mine.messages), "h11 ends a message where muxproxy reads on", mine.stop, theirs)
        )
    return result


def compare_responses(case: ResponseCase) -> Comparison:
    mine = muxproxy_responses(case)
    ref = H11Responses(case)
    result = Comparison()
    start = 0
    for index, message in enumerate(mine.messages):
        method = case.methods[index]
        theirs = ref.next(method)
        if isinstance(theirs, Message):
            if theirs.end != message.end:
                result.disagreements.append(Disagreement(index, "the response ends elsewhere", message, theirs))
                return result
            if theirs.contents != message.contents:
                result.disagreements.append(Disagreement(index, "the response reads differently", message, theirs))
            else:
                result.agreed += 1
        elif theirs.kind == "failed":
            eof = case.eof and message.end == len(case.data)
            names = allowed_response_difference(case.data[start : message.end], message, method, eof)
            if names is None:
                result.disagreements.append(Disagreement(index, "muxproxy accepts a response h11 rejects", message, theirs))
                return result
            result.allowed += names
            ref.resync(message.end)
        else:
            result.disagreements.append(Disagreement(index, "muxproxy ends the response where h11 reads on", message, theirs))
            return result
        start = message.end
    index = len(mine.messages)
    if index < len(case.methods) and mine.stop.kind != "unread":
        theirs = ref.next(case.methods[index])
        if mine.stop.kind == "failed":
            if isinstance(theirs, Message):
                result.stricter.append(f"response {index}: {mine.stop.reason} (h11 accepts it)")
        elif isinstance(theirs, Message):
            if mine.stop.reason == IN_HEAD:
                probed = muxproxy_responses(ResponseCase(case.methods, case.data + HEAD_PROBE))
                if probed.stop.kind == "failed" and len(probed.messages) == index:
                    result.stricter.append(f"response {index}: head refused once complete (h11 accepts it)")
                    return result
            result.disagreements.append(Disagreement(index, "h11 ends a response where muxproxy reads on", mine.stop, theirs))
    return result


def assert_agrees(result: Comparison, data) -> None:
    if result.disagreements:
        pytest.fail(f"for {data!r}:\n" + "\n".join(map(str, result.disagreements)), pytrace=False)


# --- The hand-written corpus -----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("data", REQUESTS.values(), ids=REQUESTS.keys())
def test_request_corpus_agrees_with_h11(data, mode):
    assert_agrees(compare_requests(data, mode), data)


@pytest.mark.parametrize("case", RESPONSES.values(), ids=RESPONSES.keys())
def test_response_corpus_agrees_with_h11(case):
    assert_agrees(compare_responses(case), case)


def test_every_allowed_difference_is_needed_by_the_corpus():
    # A leniency nobody needs any more must leave the table, not linger in it.
    used = {name for data in REQUESTS.values() for mode in MODES for name in compare_requests(data, mode).allowed}
    used |= {name for case in RESPONSES.values() for name in compare_responses(case).allowed}
    assert used == {leniency.name for leniency in ALLOWED_DIFFERENCES}


# --- Generated streams ------------------------------------------------------------------------


@FUZZ
@given(data=request_streams, mode=st.sampled_from(list(MODES)))
def test_valid_request_streams_agree_with_h11(data, mode):
    result = compare_requests(data, mode)
    assert_agrees(result, data)
    assert not result.stricter, result.stricter  # valid input: no refusal either


@FUZZ
@given(data=mutated_request_streams, mode=st.sampled_from(list(MODES)))
def test_mutated_request_streams_agree_with_h11(data, mode):
    assert_agrees(compare_requests(data, mode), data)


@FUZZ
@given(case=response_cases)
def test_valid_responses_agree_with_h11(case):
    assert_agrees(compare_responses(case), case)


@FUZZ
@given(case=mutated_responses)
def test_mutated_responses_agree_with_h11(case):
    assert_agrees(compare_responses(case), case)
