"""Message heads and parser events shared by every HTTP/1.x component.

Strategy: a parsed head is an immutable value that carries the raw fields as
received (names keep their case, because old origins sometimes care) plus the
framing facts the proxy derived from them, so that no later stage ever
re-derives framing from headers.  Events are facts produced by the parsers;
consumers dispatch on their type.

A record's field names serve as both its `FIELDS` and its `__slots__`:
compiled (setup.py), a class is a C struct and has no `__slots__` attribute
to read back.

Framing is an int constant rather than an Enum member: it is compared on every
message in the hot path, and the int comparison is measurably cheaper.
"""

from __future__ import annotations

from typing import Final
from dataclasses import dataclass, field

from proxy.core.record import Record
from proxy.errors import ProxyError

Headers = list[tuple[bytes, bytes]]

# Body framing of a message (RFC 9112 §6.3).
FRAMING_NONE: Final = 0  # no body at all
FRAMING_LENGTH: Final = 1  # Content-Length bytes
FRAMING_CHUNKED: Final = 2  # chunked transfer coding
FRAMING_CLOSE: Final = 3  # responses only: body ends when the connection closes

FRAMING_NAMES: Final = {
    FRAMING_NONE: "none",
    FRAMING_LENGTH: "length",
    FRAMING_CHUNKED: "chunked",
    FRAMING_CLOSE: "close",
}


_REQUEST_HEAD_FIELDS: Final = (
    "method",
    "target",
    "version",
    "headers",
    "framing",
    "content_length",
    "keep_alive",
    "expect_continue",
    "host",
    "rejection",
    "upgrade",
    "request_id",
)


class RequestHead(Record):
    """A request line and header section that passed the strict parser.

    `rejection` is set when the head is well framed (the parser knows where the
    message ends) but unacceptable, e.g. too many fields or two Host fields.
    The body is still delivered so the stream stays in sync; the consumer must
    answer with the rejection instead of forwarding.  `upgrade` says the
    request asks to switch protocols (Upgrade with Connection: upgrade);
    `request_id` is the Request-Id field (the mux echoes it), found while
    validating the head so that no one scans the fields for it again.

    A Record, not a dataclass: one is made per request (proxy/core/record.py
    says why).  Treat it as immutable all the same.
    """

    FIELDS = _REQUEST_HEAD_FIELDS
    __slots__ = _REQUEST_HEAD_FIELDS

    def __init__(
        self,
        method: bytes,
        target: bytes,
        version: bytes,  # b"1.0" or b"1.1"
        headers: Headers,
        framing: int,
        content_length: int,  # -1 unless framing is FRAMING_LENGTH
        keep_alive: bool,
        expect_continue: bool,
        host: bytes | None,
        rejection: ProxyError | None = None,
        upgrade: bool = False,
        request_id: bytes | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.framing = framing
        self.content_length = content_length
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.host = host
        self.rejection = rejection
        self.upgrade = upgrade
        self.request_id = request_id

    def get(self, lower_name: bytes) -> bytes | None:
        """First value of a field, by lower-case name; None when absent."""
        for name, value in self.headers:
            if name.lower() == lower_name:
                return value
        return None


_RESPONSE_HEAD_FIELDS: Final = (
    "status",
    "reason",
    "version",
    "headers",
    "framing",
    "content_length",
    "keep_alive",
    "fields",
    "has_correlation",
)


class ResponseHead(Record):
    """A final (non-1xx) response head as received from an origin or made here.

    `fields` are the end-to-end fields to pass on: no hop-by-hop or framing
    field, except that a response to HEAD, or a 304, keeps its Content-Length
    (it describes the representation; a 204 never has one).  The parser
    computes them while it validates the head; a head made by hand (the file
    origin, tests) leaves `fields` out and gets them derived here.
    `has_correlation` says whether the origin sent its own Content-Location
    or Request-Id (the mux renames those).

    A Record, not a dataclass: one is made per response (proxy/core/record.py
    says why).  Treat it as immutable all the same.
    """

    FIELDS = _RESPONSE_HEAD_FIELDS
    __slots__ = _RESPONSE_HEAD_FIELDS

    def __init__(
        self,
        status: int,
        reason: bytes,
        version: bytes,
        headers: Headers,
        framing: int,
        content_length: int,  # -1 unless framing is FRAMING_LENGTH
        keep_alive: bool,
        fields: Headers | None = None,
        has_correlation: bool = False,
    ) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.framing = framing
        self.content_length = content_length
        self.keep_alive = keep_alive
        if fields is None:
            from proxy.core.http1.fields import end_to_end

            fields = end_to_end(headers)
            if status == 304:  # its length describes the representation
                length = self.get(b"content-length")
                if length is not None:
                    fields.append((b"Content-Length", length))
            has_correlation = any(n.lower() in (b"content-location", b"request-id") for n, _ in fields)
        self.fields = fields
        self.has_correlation = has_correlation

    def get(self, lower_name: bytes) -> bytes | None:
        for name, value in self.headers:
            if name.lower() == lower_name:
                return value
        return None


class Body(Record):
    """A piece of message body, transfer coding already removed.

    A Record, not a frozen dataclass: one is made per body piece
    (proxy/core/record.py says why).  Treat it as immutable all the same.
    """

    FIELDS = ("data",)
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    """The message (request or response) ended where its framing said."""

    trailers: Headers = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ParseFailed:
    """The stream cannot be parsed any further.

    `head` is the head of the message that failed, when the failure came after
    its header section; `target` is its request target when at least that was
    read completely.  They let an error response still be correlated.
    """

    error: ProxyError
    head: RequestHead | None = None
    target: bytes | None = None
    #: The fields parsed before the failure, when `target` is set and `head`
    #: is not (a mux stream still finds the Request-Id there).
    headers: Headers = field(default_factory=list)


#: A bare EndOfMessage with no trailers; shared because it is the common case.
END_OF_MESSAGE: Final = EndOfMessage()
