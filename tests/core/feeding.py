"""Feeding parsers the three ways every parser test uses (STYLE.md habit 9).

A parser's events must not depend on how its input was cut into reads, so
each helper here feeds the same bytes
- whole, in one `feed()`;
- byte by byte;
- split in two at every position (for inputs over `SPLIT_EVERY_POSITION_MAX`
  bytes, to keep the suite fast: at every position within `SPLIT_EDGE` bytes
  of either end and at about `SPLIT_SAMPLES` positions in between);
and asserts that every feeding gives the same *normalised* events: Body
pieces concatenated per message (a parser may deliver a body in any number
of pieces), and errors compared by class and status (a ProxyError instance
compares by identity, and its wording is not part of the contract).

`parse_requests()` also appends the start of another request to the input
and checks that it changes nothing: an incomplete next message produces no
event, and after a ParseFailed nothing is parsed at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from proxy.core.http1.messages import Body, EndOfMessage, ParseFailed, RequestHead, ResponseHead
from proxy.core.http1.request_parser import RequestParser
from proxy.core.http1.response_parser import ResponseParser
from proxy.errors import ProxyError

#: Limits used unless a test says otherwise: small enough to reach quickly,
#: large enough that ordinary test requests never come near them.
MAX_HEAD_SIZE = 8192
MAX_HEADER_COUNT = 100

#: Inputs up to this size are split at every position; longer ones near
#: both ends and at a sample of positions in between.
SPLIT_EVERY_POSITION_MAX = 400
SPLIT_EDGE = 64
SPLIT_SAMPLES = 64

#: The start of a request that follows the message under test.
NEXT_REQUEST_START = b"GET /next HTTP/1.1\r\nHo"


@dataclass(frozen=True)
class Problem:
    """A ProxyError reduced to what the contract fixes: class and status."""

    kind: type
    status: int

    @classmethod
    def of(cls, error: ProxyError | None) -> "Problem | None":
        return None if error is None else cls(type(error), error.status)


@dataclass(frozen=True)
class Failed:
    """A normalised ParseFailed."""

    problem: Problem
    head: RequestHead | None
    target: bytes | None


def normalise(events: list) -> list:
    """Events with Body pieces joined per message and errors made comparable."""
    out: list = []
    for event in events:
        if isinstance(event, Body):
            if out and isinstance(out[-1], Body):
                out[-1] = Body(out[-1].data + event.data)
            elif event.data:
                out.append(event)
        elif isinstance(event, RequestHead):
            out.append(_normal_head(event))
        elif isinstance(event, ParseFailed):
            assert isinstance(event.error, ProxyError), f"ParseFailed carries {event.error!r}"
            head = None if event.head is None else _normal_head(event.head)
            out.append(Failed(Problem.of(event.error), head, event.target))
        elif isinstance(event, (ResponseHead, EndOfMessage)):
            out.append(event)
        else:
            raise AssertionError(f"unexpected event {event!r}")
    return out


def _normal_head(head: RequestHead) -> RequestHead:
    return head.replace(rejection=Problem.of(head.rejection))  # type: ignore[return-value]


def feedings(data: bytes, *, split_everywhere: bool = True) -> Iterator[tuple[str, list[bytes]]]:
    """(name, pieces) for each way of cutting `data` into reads."""
    yield "whole", [data]
    yield "byte by byte", [data[i : i + 1] for i in range(len(data))]
    if not split_everywhere:
        return
    for i in split_positions(len(data)):
        yield f"split at {i}", [data[:i], data[i:]]


def split_positions(length: int) -> list[int]:
    if length <= SPLIT_EVERY_POSITION_MAX:
        return list(range(1, length))
    positions = set(range(1, SPLIT_EDGE)) | set(range(length - SPLIT_EDGE, length))
    positions |= set(range(1, length, max(1, length // SPLIT_SAMPLES)))
    return sorted(positions)


# --- Requests -------------------------------------------------------------------


def request_parser(**options) -> RequestParser:
    options.setdefault("max_head_size", MAX_HEAD_SIZE)
    options.setdefault("max_header_count", MAX_HEADER_COUNT)
    options.setdefault("require_host", True)
    return RequestParser(**options)


def feed_requests(pieces: list[bytes], **options) -> list:
    """Raw events of one parser fed `pieces` in order."""
    parser = request_parser(**options)
    events: list = []
    for piece in pieces:
        events += parser.feed(piece)
    return events


def parse_requests(data: bytes, *, trailing: bool = True, **options) -> list:
    """Normalised events for `data`, the same in every feeding (asserted).

    With `trailing`, `data` followed by the start of another request must
    give the same events too: `data` must end between messages or in a
    failure for that to hold.
    """
    expected = None
    inputs = [data, data + NEXT_REQUEST_START] if trailing else [data]
    for stream in inputs:
        for name, pieces in feedings(stream):
            events = normalise(feed_requests(pieces, **options))
            if expected is None:
                expected = events
            label = name if stream is data else f"{name}, with trailing data"
            assert events == expected, f"fed {label}: {events!r}\n  fed whole: {expected!r}"
    return expected  # type: ignore[return-value]


# --- Responses ------------------------------------------------------------------


def response_parser(**options) -> ResponseParser:
    options.setdefault("max_head_size", MAX_HEAD_SIZE)
    options.setdefault("max_header_count", MAX_HEADER_COUNT)
    return ResponseParser(**options)


@dataclass(frozen=True)
class Exchange:
    """What one response exchange produced.

    `bytes_received` is left out of comparisons: bytes that arrive after
    the exchange ended are not counted, so it depends on the feeding; its
    contract is only that 0 means "the origin sent nothing".
    """

    events: list
    reusable: bool
    bytes_received: int = field(compare=False)


def feed_response(method: bytes, pieces: list[bytes], *, eof: bool = False, **options) -> Exchange:
    parser = response_parser(**options)
    parser.start(method)
    events: list = []
    for piece in pieces:
        events += parser.feed(piece)
    if eof:
        events += parser.feed_eof()
    return Exchange(normalise(events), parser.reusable, parser.bytes_received)


def parse_response(method: bytes, data: bytes, *, eof: bool = False, **options) -> Exchange:
    """The exchange for `data`, the same in every feeding (asserted)."""
    expected = None
    for name, pieces in feedings(data):
        exchange = feed_response(method, pieces, eof=eof, **options)
        if expected is None:
            expected = exchange
        assert exchange == expected, f"fed {name}: {exchange!r}\n  fed whole: {expected!r}"
    return expected  # type: ignore[return-value]


# --- Reading events -------------------------------------------------------------


def kinds(events: list) -> list[str]:
    """Event class names, for asserting the shape of a transcript."""
    names = {RequestHead: "head", ResponseHead: "head", Body: "body", EndOfMessage: "end", Failed: "failed"}
    return [names[type(event)] for event in events]


def heads(events: list) -> list:
    return [event for event in events if isinstance(event, (RequestHead, ResponseHead))]


def body_of(events: list) -> bytes:
    return b"".join(event.data for event in events if isinstance(event, Body))


def failure(events: list) -> Failed:
    """The ParseFailed that must end `events`."""
    assert events and isinstance(events[-1], Failed), f"expected a final ParseFailed in {events!r}"
    assert sum(isinstance(event, Failed) for event in events) == 1
    return events[-1]


def chunked(*pieces: bytes, trailers: bytes = b"") -> bytes:
    """A chunked body with one chunk per piece (RFC 9112 §7.1)."""
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n" + trailers + b"\r\n"
