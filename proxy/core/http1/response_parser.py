"""Strict parser for the responses on one origin connection.

Strategy: one exchange at a time.  `start(method)` announces a request; the
parser then accepts exactly one final response (after any 1xx interim ones,
which are dropped) and reports whether the connection may carry another
exchange (`reusable`).  Anything ambiguous makes the connection unusable:
bytes after the end of a response, bytes when no request is outstanding,
Content-Length together with Transfer-Encoding, a transfer coding other than
a single chunked, Transfer-Encoding in an HTTP/1.0 response (RFC 9112 §6.1,
§6.3), a status outside 100-599 (RFC 9110 §15), an unsolicited 101, a 1xx
that declares content (RFC 9110 §15.2: `_check_interim`).

llhttp cannot be told that a response answers a HEAD (httptools does not
expose its skip-body return value), so HEAD responses take a separate path:
the head is located here (llhttp requires CRLF line ends, so the first empty
line ends it), validated by a fresh llhttp parser, and whatever follows it is
by definition extra.
"""

from __future__ import annotations

from typing import Final
from http import HTTPStatus

import httptools

from proxy.core.http1.fields import HOP_BY_HOP
from proxy.core.http1.messages import (
    END_OF_MESSAGE,
    FRAMING_CHUNKED,
    FRAMING_CLOSE,
    FRAMING_LENGTH,
    FRAMING_NONE,
    Body,
    Headers,
    ParseFailed,
    ResponseHead,
)
from proxy.errors import (
    OriginClosed,
    OriginProtocolError,
    OriginResponseIncomplete,
    OriginResponseTooLarge,
    ProxyError,
)

#: Lengths of the field names _build_head acts on: hop-by-hop fields
#: (te 2, trailer/upgrade 7, connection/keep-alive 10, content-length 14,
#: proxy-connection 16, transfer-encoding 17, proxy-authenticate 18,
#: proxy-authorization 19) and the mux correlation fields (request-id 10,
#: content-location 16).
_SPECIAL_LENGTHS: Final = frozenset({2, 7, 10, 14, 16, 17, 18, 19})
#: The same as a table indexed by length (1: one of them), read for every
#: field: compiled, indexing bytes is a C read where a set lookup hashes a
#: boxed int.
_IS_SPECIAL_LENGTH: Final = bytes(1 if length in _SPECIAL_LENGTHS else 0 for length in range(20))
_CORRELATION: Final = frozenset({b"content-location", b"request-id"})
_CONNECTION_OPTIONS: Final = frozenset({b"close", b"keep-alive", b""})

#: Bytes a reason phrase may hold (RFC 9112 §4: HTAB, SP, VCHAR, obs-text).
_REASON_BYTES: Final = bytes([9] + list(range(0x20, 0x7F)) + list(range(0x80, 0x100)))

#: The registered phrases ("OK", "Not Found", ...), which hold only those
#: bytes: nearly every origin sends one, and a set lookup proves it clean at
#: a twentieth of the cost of translate(), which builds its table per call.
_REGISTERED_REASONS: Final = frozenset(status.phrase.encode("ascii") for status in HTTPStatus)


def reason_problem(reason: bytes) -> bool:
    """Whether a reason phrase holds a byte RFC 9112 §4 does not allow
    (reason-phrase = *( HTAB / SP / VCHAR / obs-text )); llhttp lets
    controls through, and the reason is passed on."""
    return reason not in _REGISTERED_REASONS and bool(reason.translate(None, _REASON_BYTES))

#: Raw bytes a response head (with the 1xx heads before it; on the HEAD
#: path, each head alone) may occupy before it ends, as a multiple of the
#: limit: a memory guard.  A head that
#: has not ended within it is "too large", and a read that reaches past it
#: is cut there, so the verdict never depends on where reads end.  The
#: verdict on a complete head is its canonical size, for the same reason.
HEAD_GUARD_FACTOR: Final = 8

#: 1xx responses that llhttp (like RFC 9110 §15.2) reads without content.
#: For any other 1xx it would read a body declared by Content-Length or
#: Transfer-Encoding, which no other parser does (see _check_interim).
_BODILESS_INTERIM: Final = frozenset({100, 102, 103})

# Exchange states.
IDLE: Final = "idle"  # no request outstanding
AWAITING_HEAD: Final = "awaiting-head"
IN_BODY: Final = "in-body"
DONE: Final = "done"  # response complete; `reusable` says what comes next


class _HeadCollector:
    """Callbacks of the throwaway parser that validates a HEAD response head."""

    __slots__ = ("reason", "headers", "complete")

    def __init__(self) -> None:
        self.reason = b""
        self.headers: Headers = []
        self.complete = False

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        self.complete = True


class ResponseParser:
    __slots__ = (
        "_events",
        "_feed_length",
        "_head",
        "_head_buffer",
        "_head_run",
        "_head_tail",
        "_headers",
        "_interim",
        "_interim_seen",
        "_is_head_request",
        "_parser",
        "_read_body",
        "_reason",
        "_version_hint",
        "bytes_received",
        "max_head_size",
        "max_header_count",
        "reusable",
        "state",
        "__weakref__",
    )

    def __init__(self, *, max_head_size: int, max_header_count: int) -> None:
        self.max_head_size = max_head_size
        self.max_header_count = max_header_count
        self._parser = self._new_parser()
        self.state = IDLE
        self.reusable = True
        self._is_head_request = False
        self._events: list = []
        self._head: ResponseHead | None = None
        self._reason = b""
        self._headers: Headers = []
        self._interim = False
        self._head_buffer = b""
        self._head_run = 0
        self._feed_length = 0
        self._read_body = 0
        self._interim_seen = False
        self._head_tail = b""
        self._version_hint: bytes | None = None
        #: Bytes received for the current exchange; 0 means the origin sent
        #: nothing, which is what makes a retry safe.
        self.bytes_received = 0

    def __repr__(self) -> str:
        return f"<ResponseParser {self.state} reusable={self.reusable}>"

    def _new_parser(self) -> httptools.HttpResponseParser:
        return httptools.HttpResponseParser(self)

    def start(self, method: bytes) -> None:
        if self.state not in (IDLE, DONE) or not self.reusable:
            raise RuntimeError(f"cannot start an exchange in state {self.state}")
        self.state = AWAITING_HEAD
        self._is_head_request = method == b"HEAD"
        self._head = None
        self._head_run = 0
        self._interim_seen = False
        self.bytes_received = 0
        # _interim and _head_buffer are reset where they are consumed,
        # _head_tail is read only once _head_run shows this exchange wrote
        # it, and on_message_begin resets the head's own fields.

    def _begin_head(self) -> None:
        self._reason = b""
        self._headers = []

    # --- input ------------------------------------------------------------------

    def feed(self, data: bytes) -> list:
        """Events for `data`; a ParseFailed event, if any, is last."""
        if not data:
            return []
        if self.state in (IDLE, DONE):
            # Bytes nobody asked for: an unsolicited response, or bytes after
            # the end of the last one.  Never guess what they belong to.
            self.reusable = False
            return []
        self.bytes_received += len(data)
        self._feed_length = len(data)
        events = self._events = []
        if self._is_head_request:
            self._feed_head_response(data)
            return events
        if self.state == AWAITING_HEAD:
            room = self.max_head_size * HEAD_GUARD_FACTOR - self._head_run
            if len(data) > room:
                return self._feed_past_guard(data, room)
        head_before = self.state != AWAITING_HEAD
        if not head_before and not self._head_run:
            # The exchange's first bytes begin with its status line (unless
            # llhttp skips CRLFs before it: then there is no hint), so they
            # give its version without asking httptools (_http_version).
            self._version_hint = (
                b"1.1" if data.startswith(b"HTTP/1.1 ") else b"1.0" if data.startswith(b"HTTP/1.0 ") else None
            )
        # The last bytes of a head still arriving: its terminating empty line
        # may straddle two reads.
        tail = self._head_tail if (not head_before and self._head_run) else b""
        self._read_body = 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._stop(cause if isinstance(cause, ProxyError) else OriginProtocolError(str(exc)))
        except httptools.HttpParserUpgrade:
            self._stop(OriginProtocolError("origin switched protocols without being asked"))
        except httptools.HttpParserError as exc:
            self._stop(OriginProtocolError(f"malformed response: {exc}"))
        state = self.state
        if state == AWAITING_HEAD:
            # httptools holds an unfinished field in memory; count every read
            # that ends inside a head so one huge field cannot grow unseen.
            self._head_run += len(data)
            self._head_tail = (tail + data)[-3:]
        elif state == IN_BODY:
            if len(self._headers) > self.max_header_count:
                self._stop(OriginResponseTooLarge("too many trailer fields"))
        elif (
            state == DONE
            and self.reusable
            and not self._interim_seen
            and self._head is not None
            and self._head.framing <= FRAMING_LENGTH
            and (data[-1] == 0x0A or data[-1] == 0x0D)
        ):
            # llhttp skips stray CRLFs between messages without a callback,
            # so count: a response of known length (and no 1xx before it)
            # must end exactly where this read ends, or bytes follow it.  The
            # head begins at the exchange's first byte, so the first empty
            # line seen since then ends it.  (After a chunked body the count
            # is unknown: a stray CRLF there is tolerated, as llhttp does.)
            # CR and LF are the only bytes llhttp skips (any other begins a
            # message, refused in on_message_begin), so a read that ends in
            # neither ends with the response, and is not searched.
            if head_before:
                consumed = self._read_body
            else:
                consumed = (tail + data).find(b"\r\n\r\n") + 4 - len(tail) + self._read_body
            if len(data) > consumed:
                self.reusable = False
        return events

    def _feed_past_guard(self, data: bytes, room: int) -> list:
        """Feed a read that reaches past the head guard in two parts: the
        bytes up to the guard, then (if the head ended within it) the rest.
        A head still unfinished at the guard is too large, even when a
        syntax error follows in the same read: the error it gets must not
        depend on how the origin's bytes were split."""
        events = self.feed(data[:room]) if room > 0 else []
        if self.state == AWAITING_HEAD:
            self._events = events
            self._stop(OriginResponseTooLarge("response head too large"))
            return events
        return events + self.feed(data[room:])

    def feed_eof(self) -> list:
        """The origin closed its side; events that this completes or breaks."""
        events = self._events = []
        if self.state == IN_BODY and self._head is not None and self._head.framing == FRAMING_CLOSE:
            self.state = DONE
            self.reusable = False
            events.append(END_OF_MESSAGE)
        elif self.state == IN_BODY:
            self._stop(OriginResponseIncomplete("origin closed the connection in the middle of the body"))
        elif self.state == AWAITING_HEAD:
            self._stop(OriginClosed("origin closed the connection before a complete response head"))
        self.reusable = False
        return events

    def _stop(self, error: ProxyError) -> None:
        if self.state == DONE:
            # The response was complete; what failed came after it.
            self.reusable = False
            return
        if self.state == IN_BODY and not isinstance(error, OriginResponseIncomplete):
            error = OriginResponseIncomplete(f"response broke off: {error.detail}")
        self.state = DONE
        self.reusable = False
        self._events.append(ParseFailed(error))

    # --- HEAD responses ---------------------------------------------------------

    def _feed_head_response(self, data: bytes) -> None:
        buffer = self._head_buffer + data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0 or end + 4 > self.max_head_size * HEAD_GUARD_FACTOR:
                # A head that does not end within the guard is too large,
                # whether or not its end has arrived (HEAD_GUARD_FACTOR).
                if len(buffer) > self.max_head_size * HEAD_GUARD_FACTOR:
                    self._stop(OriginResponseTooLarge("response head too large"))
                self._head_buffer = buffer
                return
            raw_head, buffer = buffer[: end + 4], buffer[end + 4 :]
            # The raw size of this head is known here: it decides, as
            # _feed_length does on the other path, whether to measure.
            self._head_run, self._feed_length = 0, len(raw_head)
            collector = _HeadCollector()
            parser = httptools.HttpResponseParser(collector)
            try:
                parser.feed_data(raw_head)
            except httptools.HttpParserUpgrade:
                self._stop(OriginProtocolError("origin switched protocols without being asked"))
                return
            except httptools.HttpParserError as exc:
                self._stop(OriginProtocolError(f"malformed response: {exc}"))
                return
            if not collector.complete:
                self._stop(OriginProtocolError("malformed response head"))
                return
            status = parser.get_status_code()
            try:
                if not 200 <= status <= 599 and _check_interim(status, collector.reason, collector.headers):
                    continue  # interim response: dropped, the final one follows
                self._reason, self._headers = collector.reason, collector.headers
                head = self._build_head(status, _http_version(parser))
            except ProxyError as error:
                self._stop(error)
                return
            self._events.append(head)
            self._events.append(END_OF_MESSAGE)
            self.state = DONE
            # A HEAD response has no body (RFC 9110 §9.3.2): anything after its
            # head is extra, so the connection cannot be trusted any more.
            self.reusable = head.keep_alive and not buffer
            self._head_buffer = b""
            return

    # --- httptools callbacks ------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.state != AWAITING_HEAD:
            raise OriginProtocolError("bytes after the end of the response")
        self._reason = b""
        self._headers = []

    def on_status(self, reason: bytes) -> None:
        self._reason = self._reason + reason if self._reason else reason

    def on_header(self, name: bytes, value: bytes) -> None:
        # Called once per field: kept to one append.  Sizes are checked when
        # the head is complete, and by the per-read guard in feed() while it
        # is not; trailer fields land in a list that is thrown away.
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        # Final responses take the fast path; the rest are checked apart.
        if not 200 <= status <= 599 and _check_interim(status, self._reason, self._headers):
            self._interim = True
            return
        version = self._version_hint
        if version is None or self._interim_seen:  # the hint was the first message's: a 1xx
            version = _http_version(self._parser)
        head = self._build_head(status, version)
        self._head = head
        self.state = IN_BODY
        self._headers = []  # trailers, if any, are collected here and dropped
        self._events.append(head)

    def on_body(self, data: bytes) -> None:
        self._read_body += len(data)
        self._events.append(Body(data))

    def on_message_complete(self) -> None:
        if self._interim:
            # RFC 9110 §15.2: any number of 1xx may precede the response;
            # each is its own head and counts alone against the size limit
            # (the guard counts them all: HEAD_GUARD_FACTOR).
            self._interim = False
            self._interim_seen = True
            return
        self.state = DONE
        head = self._head
        self.reusable = head is not None and head.keep_alive
        self._events.append(END_OF_MESSAGE)

    # --- head validation ----------------------------------------------------------

    def _build_head(self, status: int, version_bytes: bytes) -> ResponseHead:
        """Validate the framing fields and sort the fields in one pass.

        This runs once per response on the hot path: names are lower-cased
        only when their length is one of the fields we act on (it skips
        lower() for most fields, such as Date, Server, Content-Type).
        """
        headers = self._headers
        if len(headers) > self.max_header_count:
            raise OriginResponseTooLarge(f"response head has more than {self.max_header_count} fields")
        if reason_problem(self._reason):
            raise OriginProtocolError("control character in the reason phrase")
        if self._head_run + self._feed_length > self.max_head_size:
            # Only a head that may be over the limit is measured, and by its
            # canonical size ("HTTP/1.1 200 " reason CRLF, "name:value" CRLF
            # per field, CRLF): the verdict never depends on how it was read.
            size = 15 + len(self._reason) + 2 + sum(len(name) + len(value) + 3 for name, value in headers)
            if size > self.max_head_size:
                raise OriginResponseTooLarge(f"response head over {self.max_head_size} bytes")
        no_body = status in (204, 304) or self._is_head_request
        # HEAD and 304 keep Content-Length as a field: it describes the
        # representation (RFC 9110 §8.6); a 204 must not carry one at all.
        keeps_length = status == 304 or self._is_head_request
        fields: Headers = []
        content_length = -1
        transfer_encoding = None
        connection = None
        correlation = False
        # Trailing whitespace that llhttp leaves in a value is passed on as
        # received: it is not part of the value (RFC 9110 §5.5), and every
        # framing field below is stripped where it is read.
        # No `append = fields.append`: compiled, that makes a bound method
        # and calls it generically, where `fields.append()` is a C call.
        for item in headers:
            name = item[0]
            length = len(name)
            if length < 20 and _IS_SPECIAL_LENGTH[length]:
                low = name.lower()
                if low in HOP_BY_HOP:
                    value = item[1]
                    if low == b"content-length":
                        content_length = int(value)  # llhttp checked: digits, once
                        if keeps_length:
                            # HEAD/304: the representation's length, not framing (RFC 9110 §8.6).
                            fields.append(item)
                    elif low == b"transfer-encoding":
                        # Several fields are one list (RFC 9110 §5.3): "gzip" then
                        # "chunked" is "gzip, chunked", never just the last one.
                        transfer_encoding = value if transfer_encoding is None else transfer_encoding + b", " + value
                    elif low == b"connection":
                        connection = value if connection is None else connection + b"," + value
                    continue
                if low in _CORRELATION:
                    correlation = True
            fields.append(item)

        if no_body:
            framing = FRAMING_NONE
        elif transfer_encoding is not None:
            if version_bytes == b"1.0":
                raise OriginProtocolError("Transfer-Encoding in an HTTP/1.0 response")
            # Exactly "chunked": llhttp reads no other spelling (not even with
            # a trailing tab) as chunked, and we must read it as llhttp does.
            if transfer_encoding.rstrip(b" ").lower() != b"chunked":
                raise OriginProtocolError(f"unsupported Transfer-Encoding {transfer_encoding!r}")
            framing = FRAMING_CHUNKED
        elif content_length >= 0:
            framing = FRAMING_LENGTH
        else:
            framing = FRAMING_CLOSE

        if connection is not None and connection.lower() == b"keep-alive":
            keep_alive = True  # the common case, without the token set below
        elif connection is not None:
            tokens = {t.strip().lower() for t in connection.split(b",")}
            # RFC 9112 §9.3: "close" wins; HTTP/1.0 persists only if asked to.
            keep_alive = b"close" not in tokens and (version_bytes == b"1.1" or b"keep-alive" in tokens)
            tokens -= _CONNECTION_OPTIONS
            if tokens:  # fields named by Connection are hop-by-hop too (RFC 9110 §7.6.1)
                fields = [(n, v) for n, v in fields if n.lower() not in tokens]
        else:
            keep_alive = version_bytes == b"1.1"
        if framing == FRAMING_CLOSE:
            keep_alive = False
        return ResponseHead(
            status,
            self._reason,
            version_bytes,
            headers,
            framing,
            content_length if framing == FRAMING_LENGTH else -1,
            keep_alive,
            fields,
            correlation,
        )


def _http_version(parser: httptools.HttpResponseParser) -> bytes:
    """b"1.1" or b"1.0", the version llhttp read; any other is refused.

    httptools builds this string with str.format on every call (0.3 µs,
    fifteen times get_status_code), which is why the hot path takes the
    version from the status line's first bytes when it can (feed)."""
    version = parser.get_http_version()
    if version == "1.1":
        return b"1.1"
    if version == "1.0":
        return b"1.0"
    raise OriginProtocolError(f"origin answered with HTTP/{version}")


def _check_interim(status: int, reason: bytes, headers: Headers) -> bool:
    """For a status outside 200-599: True for an interim (1xx) response,
    which is dropped; raise for one that must not be read further."""
    if not 100 <= status <= 599:
        # RFC 9110 §15: "All valid status codes are within the range of 100
        # to 599, inclusive."  llhttp reads any three digits; "000" would be
        # passed on as a status no client can read.
        raise OriginProtocolError(f"invalid status code {status:03d}")
    if status == 101:
        raise OriginProtocolError("origin switched protocols without being asked")
    if status not in _BODILESS_INTERIM:
        # RFC 9110 §15.2: a 1xx response "cannot contain content", and a
        # server MUST NOT send Content-Length or Transfer-Encoding in one
        # (RFC 9110 §8.6, RFC 9112 §6.1).  llhttp nevertheless reads a body
        # they declare after a 1xx other than 100, 102 and 103, where any
        # other reader would take those bytes for the next response: refuse.
        for name, _ in headers:
            if len(name) in (14, 17) and name.lower() in (b"content-length", b"transfer-encoding"):
                raise OriginProtocolError(f"{status} response declares content")
    if reason_problem(reason):
        # As for a final response (_build_head): a 1xx is dropped, but a
        # control character there is as malformed as anywhere.
        raise OriginProtocolError("control character in the reason phrase")
    return True
