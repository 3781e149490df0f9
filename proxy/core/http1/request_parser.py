"""Strict parser for a stream of HTTP/1.x requests.

Strategy: httptools (llhttp) does the byte-level work, including consecutive
messages on one stream, and already refuses most ambiguous input in its
default strict mode: Content-Length together with Transfer-Encoding, repeated
or non-numeric Content-Length, a request Transfer-Encoding that does not end
in chunked, obs-fold, whitespace before the colon, bare CR or LF, NUL and other
controls, bad chunk sizes (RFC 9112 §2.2, §5.1, §5.2, §6.1, §6.3, §7.1).
This module adds what llhttp does not check, and turns its callbacks into
events (`RequestHead`, `Body`, `EndOfMessage`, `ParseFailed`).

Two kinds of failure, matching `ProxyError.loses_framing`:
- the head is well framed but unacceptable (too large, two Host fields, bad
  target): the head event carries a `rejection`, its body is still parsed and
  delivered, and parsing continues with the next message;
- the framing itself is broken: a final `ParseFailed` event, after which the
  parser accepts nothing more (nobody knows where the next message starts).

Sizes: llhttp enforces no limits and httptools accumulates a field value in
memory until it is complete, so sizes are counted here.  The verdict on a
complete head uses its canonical size (the bytes it needs at the least:
request line, "name:value" + CRLF per field, the empty line), computed from
the parsed parts, so it does not depend on how the head was split into
reads.  While a head is incomplete, the raw bytes of the reads spent wholly
inside it are a memory guard (`HEAD_GUARD_FACTOR`): what httptools can hold
for one head is bounded by that plus one read.  Only a head padded with more
whitespace than `HEAD_GUARD_FACTOR` times the limit can meet the guard while
its canonical size would pass; it is then refused, as a head that trickles in
that much padding deserves.  That is also the one verdict that can depend
on where reads end: such a head with a syntax error past the guard is a 431
when a read ends inside the head, a 400 when one read holds all of it.
Both lose the framing at the same message, so nothing else differs.  (The
field count, by contrast, is checked per field: `on_header`.)
"""

from __future__ import annotations

from typing import Final
import re

import httptools

from proxy.core.http1.fields import host_without_port, is_valid_host
from proxy.core.http1.messages import (
    END_OF_MESSAGE,
    FRAMING_CHUNKED,
    FRAMING_LENGTH,
    FRAMING_NONE,
    Body,
    EndOfMessage,
    Headers,
    ParseFailed,
    RequestHead,
)
from proxy.errors import (
    CannotExpect,
    ConnectNotSupported,
    FramingError,
    HeadTooLarge,
    ProxyError,
    RequestError,
    UnsupportedMethod,
    UnsupportedTransferCoding,
    UnsupportedVersion,
)

#: A head larger than max_head_size is refused with 431 but still parsed to its
#: end so the stream stays usable; past this multiple of the limit we stop
#: parsing altogether (framing lost) rather than keep reading a hostile head.
HEAD_DISCARD_FACTOR: Final = 4

#: Raw bytes a head may occupy while incomplete, as a multiple of the limit
#: (see the module note); above HEAD_DISCARD_FACTOR so that only abusive
#: padding, never the canonical size, can make it the deciding check.
HEAD_GUARD_FACTOR: Final = 8

_NO_EVENTS: Final[list] = []  # shared and never appended to (callbacks run inside feed only)
_NO_FIELDS: Final[Headers] = []  # shared while no trailer field has arrived; never appended to

# llhttp error reasons that come from the request line itself: the target
# read so far may be partial or wrong, so an error response is not tagged.
_REQUEST_LINE_ERRORS: Final = ("url", "method", "HTTP/", "version", "start line")

#: Bytes of chunk framing (size line, extensions, CRLFs) allowed to pass with
#: no body byte in between.  llhttp validates chunk extensions but keeps none
#: of them, so this bounds CPU, not memory; 4 KiB is far above any real
#: extension (nginx limits the whole chunk size line to its 4 KiB buffer).
MAX_CHUNK_FRAMING_RUN: Final = 4096


#: RFC 9110 §9.2.2 idempotent methods.
IDEMPOTENT_METHODS: Final = frozenset({b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"})

# pct-encoded must be "%" HEXDIG HEXDIG (RFC 3986 §2.1); a stray "%" is read
# differently by different origin decoders.
_BAD_PERCENT: Final = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_ENCODED_DOT: Final = re.compile(rb"%2e", re.IGNORECASE)
#: A translate() table that turns the three single bytes target_problem()
#: looks at ("#", "\\", "%": a percent-encoded dot starts with one) into NUL
#: and leaves every other byte as it is.  A target that translates to itself
#: holds none of them (llhttp refuses NUL in a target).
_SUSPECT_BYTES_TO_NUL: Final = bytes(0 if byte in b"#\\%" else byte for byte in range(256))


def is_idempotent(method: bytes) -> bool:
    """RFC 9110 §9.2.2 idempotent methods."""
    return method in IDEMPOTENT_METHODS


def target_problem(target: bytes) -> str | None:
    """Why an origin-form or absolute-form target is refused, or None.

    llhttp accepts a few bytes that RFC 3986 does not: "#" (a fragment is never
    part of a request-target, RFC 9112 §3.2) and "\\" (some old servers treat
    it as a path separator, which turns it into a traversal).  Dot segments
    are refused outright, raw or percent-encoded: the route is chosen on the
    path as received, and an origin that resolves "/a/../b" would serve a
    path that no route check ever saw (RFC 3986 §5.2.4 is a client duty).
    This runs for every request, so nearly every target is cleared by two
    C-speed scans that each return the target itself when they find nothing:
    translate() for "#", "\\" and "%", replace() for "/." (every
    dot segment starts with it).  A regular-expression search for all four
    went one byte at a time in sre: 140 ns for a 5-byte target and 440 for
    a 40-byte one, against 65 and 105 for these two (CPython 3.11,
    interpreted; compiled, translate() is mypyc's own C loop).  replace()
    rather than find() for the pair: find() parses its arguments the old
    way, through a tuple, at 25-40 ns more.  The searches below use find():
    `sub in some_bytes` first tries to read `sub` as an integer and raises
    and clears a TypeError internally, which costs twice as much as the
    search itself.
    """
    if target.translate(_SUSPECT_BYTES_TO_NUL).replace(b"/.", b"") == target:
        return None
    if target.find(b"#") >= 0 or target.find(b"\\") >= 0:
        return "fragment or backslash in request target"
    query = target.find(b"?")
    path = target if query < 0 else target[:query]
    if target.find(b"%") >= 0:
        if _BAD_PERCENT.search(target):
            return "malformed percent-encoding in request target"
        if path.find(b"%2") >= 0:
            path = _ENCODED_DOT.sub(b".", path)
    if path.find(b"/.") >= 0:
        for segment in path.split(b"/"):
            if segment == b"." or segment == b"..":
                return "dot segment in request target"
    return None


def split_absolute_target(target: bytes) -> tuple[bytes, bytes] | None:
    """(authority, origin-form) for an http(s) absolute-form target, else None."""
    lower = target[:8].lower()
    if lower.startswith(b"http://"):
        rest = target[7:]
    elif lower.startswith(b"https://"):
        rest = target[8:]
    else:
        return None
    slash = rest.find(b"/")
    question = rest.find(b"?")
    ends = [i for i in (slash, question) if i >= 0]
    end = min(ends) if ends else len(rest)
    authority, path = rest[:end], rest[end:]
    if not path.startswith(b"/"):
        path = b"/" + path
    return authority, path


def target_path(target: bytes) -> bytes:
    """The path (with query) of a target this parser accepted: origin-form
    and "*" as they are, absolute-form without its scheme and authority."""
    if target.startswith(b"/") or target == b"*":
        return target
    split = split_absolute_target(target)
    if split is None:
        # _build_head lets no other form through (RFC 9112 §3.2).
        raise RequestError("unsupported request target")
    return split[1]


class RequestParser:
    """Parse consecutive requests from one byte stream.

    `feed(data)` returns the events that `data` completed.  `require_host`
    is True for requests from a client connection (RFC 9112 §3.2: an HTTP/1.1
    request without Host is a 400) and False for inner requests of a mux
    stream, which inherit the outer request's Host.
    """

    __slots__ = (
        "max_head_size",
        "max_header_count",
        "_field_cap",
        "require_host",
        "_parser",
        "_events",
        "failed",
        "_in_message",
        "_in_head",
        "_target",
        "_headers",
        "_head",
        "_feed_length",
        "_error_reason",
        "_progress",
        "_begun",
        "_head_seen",
        "_head_run",
        "_framing_run",
        "keep_head",
        "__weakref__",
    )

    def __init__(
        self, *, max_head_size: int, max_header_count: int, require_host: bool, keep_head: bool = True
    ) -> None:
        #: Keep the head of the message being parsed until its end, so that a
        #: failure in its body carries it (ParseFailed.head).  A client
        #: connection does not use it, and its one message may be a mux stream
        #: open for hours: it passes False and holds no head.
        self.keep_head = keep_head
        self.max_head_size = max_head_size
        self.max_header_count = max_header_count
        #: Fields (head or trailers) past which parsing stops altogether.
        self._field_cap = max_header_count * HEAD_DISCARD_FACTOR
        self.require_host = require_host
        self._parser = httptools.HttpRequestParser(self)
        # Connection: close and HTTP/1.0 are decided by the connection layer
        # (a mux stream ignores them); without this llhttp refuses any byte
        # after such a request instead of letting us decide.
        self._parser.set_dangerous_leniencies(lenient_keep_alive=True)
        self._events: list = _NO_EVENTS
        self.failed: ProxyError | None = None
        # State of the message being parsed.
        self._in_message = False
        self._in_head = False
        self._target = b""
        self._headers: Headers = _NO_FIELDS
        self._head: RequestHead | None = None
        # Feed-level accounting (see the module note).
        self._feed_length = 0
        self._error_reason = ""
        self._progress = 0  # bumped by callbacks that show a body is moving
        self._begun = 0  # messages begun, to tell one head from the next
        self._head_seen = 0
        self._head_run = 0
        self._framing_run = 0

    def __repr__(self) -> str:
        state = "failed" if self.failed else "head" if self._in_head else "body" if self._in_message else "idle"
        return f"<RequestParser {state}>"

    @property
    def is_idle(self) -> bool:
        """True between messages: nothing of a next message has been seen."""
        return not self._in_message and self.failed is None

    @property
    def in_head(self) -> bool:
        return self._in_head

    def feed(self, data: bytes | memoryview) -> list:
        # (A local, not the attribute, is tested: _feed may set it, and a
        # compiled build trusts a narrowed attribute to stay narrowed.)
        failed = self.failed
        if failed is not None or not data:
            return []
        events = self._events = []
        self._feed_length = len(data)
        self._error_reason = ""
        progress = self._progress
        begun = self._begun
        head_before = self._in_head
        try:
            self._feed(data)
        except ProxyError as error:
            self._fail(error)
        if self.failed is None and self._in_message:
            # "Wholly inside one head": it began in a head, and no message
            # began since (else the head it ends in is another one).
            in_one_head = head_before and begun == self._begun
            self._account(len(data), in_one_head, progress == self._progress and not events)
        # Callbacks only run inside feed(): let go of the events, so that a
        # long-lived parser does not keep its last message alive.
        self._events = _NO_EVENTS
        return events

    def _feed(self, data: bytes | memoryview) -> None:
        while True:
            try:
                self._parser.feed_data(data)
                return
            except httptools.HttpParserUpgrade as upgrade:
                # llhttp stops after a request with Upgrade + Connection:
                # upgrade (the message is complete) or a CONNECT head.
                data = self._after_upgrade(data, upgrade.args[0])
                if not data:
                    return
            except httptools.HttpParserCallbackError as exc:
                cause = exc.__context__
                if isinstance(cause, ProxyError):
                    raise cause from None
                raise
            except httptools.HttpParserInvalidMethodError as exc:
                self._error_reason = "method"
                raise UnsupportedMethod(f"unknown request method ({exc})") from None
            except httptools.HttpParserError as exc:
                reason = self._error_reason = str(exc)
                if reason == "Invalid HTTP version":
                    raise UnsupportedVersion(f"malformed request: {reason}") from None
                raise FramingError(f"malformed request: {reason}") from None

    def _after_upgrade(self, data: bytes | memoryview, offset: int) -> bytes | memoryview:
        # We never upgrade: the request is forwarded without its Upgrade
        # field (hop-by-hop).  CONNECT and an upgrade request with a body were
        # refused by _build_head; what is left is a complete request, and
        # the bytes after it are the next request.
        if not self._events or not isinstance(self._events[-1], EndOfMessage):
            raise FramingError("incomplete upgrade request")
        return data[offset:]

    def _account(self, length: int, in_one_head: bool, idle: bool) -> None:
        """Bound what a message that is still incomplete after a read can hold."""
        if self._in_head:
            # Every byte of this read may belong to the head: an upper bound,
            # used only to decide whether to measure the head exactly.
            self._head_seen += length
            if in_one_head:
                # The whole read was bytes of this head: never more than
                # its real raw size.
                self._head_run += length
            if self._head_run > self.max_head_size * HEAD_GUARD_FACTOR:
                self._fail(HeadTooLarge("request head too large"))
        elif idle:
            self._framing_run += length
            if self._framing_run > MAX_CHUNK_FRAMING_RUN:
                self._fail(FramingError("chunk framing too long (chunk extensions?)"))
        else:
            self._framing_run = 0

    def _fail(self, error: ProxyError) -> None:
        if not error.loses_framing:
            # A callback raised a per-message error where the stream cannot
            # continue (llhttp is in an error state after any raise).
            error = FramingError(error.detail)
        self.failed = error
        head = self._head if self._in_message else None
        if head is not None:
            self._events.append(ParseFailed(error, head, head.target))
        elif self._in_message and self._target and not any(m in self._error_reason for m in _REQUEST_LINE_ERRORS):
            # The failure came after the request line.
            self._events.append(ParseFailed(error, None, self._target, self._headers))
        else:
            self._events.append(ParseFailed(error))

    def unfinished(self) -> ParseFailed | None:
        """What is known of a message cut off by the end of its stream (for
        an error response), or None between messages."""
        if not self._in_message:
            return None
        head = self._head
        error = FramingError("the stream ended inside a request")
        if head is not None:
            return ParseFailed(error, head, head.target)
        if self._headers:  # a field was complete, so the request line was
            return ParseFailed(error, None, self._target, self._headers)
        return ParseFailed(error)

    # --- httptools callbacks ------------------------------------------------------

    def on_message_begin(self) -> None:
        self._begun += 1
        self._in_message = True
        self._in_head = True
        self._target = b""
        self._headers = []
        self._head = None
        self._head_run = 0
        self._head_seen = 0
        self._framing_run = 0

    def on_url(self, piece: bytes) -> None:
        self._target = self._target + piece if self._target else piece
        if len(self._target) > self.max_head_size * HEAD_DISCARD_FACTOR:
            raise HeadTooLarge("request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        # Called once per field.  Sizes are checked when the head is
        # complete, and per read while it is not (module note); the count is
        # checked here, per field, so that the field that crosses the cap
        # decides, wherever the reads end.  After the head, the same list
        # collects the trailer fields.
        headers = self._headers
        if headers is _NO_FIELDS:
            headers = self._headers = []
        headers.append((name, value))
        if len(headers) > self._field_cap:
            if self._in_head:
                raise HeadTooLarge("request head has too many fields")
            raise FramingError("too many trailer fields")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head = head = self._build_head()
        # Refused here, before llhttp completes the message, so that the
        # failure carries the head (an error response can be correlated).
        if head.method == b"CONNECT":
            raise ConnectNotSupported("CONNECT is not supported by a reverse proxy")
        if head.upgrade and (head.content_length > 0 or head.framing == FRAMING_CHUNKED):
            # llhttp takes what follows an upgrade head for the new protocol:
            # a body declared by it would never be read, and parsing it as the
            # next request would be request smuggling.  We never upgrade.
            raise FramingError("a request with Upgrade must not carry a body")
        # Trailers, if any, are collected from here: an empty list only once
        # one arrives (a mux stream's outer parser sits here for hours).
        self._headers = _NO_FIELDS
        if not self.keep_head:
            self._head = None
        self._events.append(head)

    def on_chunk_header(self) -> None:
        self._progress += 1

    def on_body(self, data: bytes) -> None:
        self._events.append(Body(data))

    def on_message_complete(self) -> None:
        self._in_message = False
        self._head = None
        trailers = self._headers
        self._events.append(EndOfMessage(trailers) if trailers else END_OF_MESSAGE)

    # --- head validation ----------------------------------------------------------

    def _build_head(self) -> RequestHead:
        parser = self._parser
        method = parser.get_method()
        target = self._target
        headers = self._headers

        host = None
        host_count = 0
        content_length = -1
        transfer_encoding = None
        connection = None
        proxy_connection = False
        expect = None
        upgrade = False
        request_id = None
        for name, value in headers:
            # Dispatch on length first: most fields match none of these.
            length = len(name)
            if length == 4:
                if name.lower() == b"host":
                    host_count += 1
                    # llhttp keeps trailing whitespace; a value has none (RFC 9110 §5.5).
                    host = value.rstrip(b" \t")
            elif length == 14:
                if name.lower() == b"content-length":
                    content_length = int(value)  # llhttp checked: digits only, once
            elif length == 17:
                if name.lower() == b"transfer-encoding":
                    # Several fields are one list (RFC 9110 §5.3): "gzip" then
                    # "chunked" is "gzip, chunked", never just the last one.
                    transfer_encoding = value if transfer_encoding is None else transfer_encoding + b", " + value
            elif length == 10:
                low = name.lower()
                if low == b"connection":
                    connection = value if connection is None else connection + b"," + value
                elif low == b"request-id":
                    request_id = value
            elif length == 6:
                if name.lower() == b"expect":
                    expect = value
            elif length == 7:
                if name.lower() == b"upgrade":
                    upgrade = True
            elif length == 16:
                if name.lower() == b"proxy-connection":
                    proxy_connection = True

        # llhttp's keep-alive verdict gives the version without asking
        # httptools for it (get_http_version builds a str with str.format on
        # every call, 0.3 µs, ten times should_keep_alive).  llhttp reads
        # keep-alive from Connection and Proxy-Connection only; without
        # either, it keeps a request alive only if it is HTTP/1.1 (1.0 would
        # need "keep-alive"; 0.9, 2.0 and 3.0 never are; it refuses any other
        # version).  Otherwise ask.
        if connection is None and not proxy_connection and parser.should_keep_alive():
            version_bytes = b"1.1"
        else:
            version = parser.get_http_version()
            if version == "1.1":
                version_bytes = b"1.1"
            elif version == "1.0":
                version_bytes = b"1.0"
            else:
                raise UnsupportedVersion(f"HTTP/{version} is not supported")

        oversized = False
        if self._head_seen + self._feed_length > self.max_head_size or len(headers) > self.max_header_count:
            # Only a head that may be over a limit (its reads hold more bytes
            # than the limit) is measured; the verdict then depends on the
            # canonical size alone, never on how the head was split.
            size = len(method) + len(target) + 14 + sum(len(name) + len(value) + 3 for name, value in headers)
            count = len(headers)
            if size > self.max_head_size * HEAD_DISCARD_FACTOR or count > self.max_header_count * HEAD_DISCARD_FACTOR:
                raise HeadTooLarge("request head too large")
            oversized = size > self.max_head_size or count > self.max_header_count

        framing = FRAMING_NONE
        if transfer_encoding is not None:
            if version_bytes == b"1.0":
                # RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means
                # the framing is faulty, even with a Content-Length.
                raise FramingError("Transfer-Encoding in an HTTP/1.0 request")
            # Exactly "chunked": llhttp reads no other spelling (not even with
            # a trailing tab) as chunked, and we must read it as llhttp does.
            if transfer_encoding.rstrip(b" ").lower() != b"chunked":
                # RFC 9112 §6.1: 501 for a transfer coding we do not
                # implement; we implement exactly one, chunked, once.
                raise UnsupportedTransferCoding(f"unsupported Transfer-Encoding {transfer_encoding!r}")
            framing = FRAMING_CHUNKED
        elif content_length >= 0:
            framing = FRAMING_LENGTH

        if connection is not None:
            tokens = {token.strip().lower() for token in connection.split(b",")}
            # RFC 9112 §9.3: "close" wins; HTTP/1.0 persists only if asked to.
            keep_alive = b"close" not in tokens and (version_bytes == b"1.1" or b"keep-alive" in tokens)
        else:
            keep_alive = version_bytes == b"1.1"
            tokens = None
        upgrade = upgrade and tokens is not None and b"upgrade" in tokens

        rejection: ProxyError | None = None
        expect_continue = False
        if expect is not None:
            if expect.strip().lower() == b"100-continue":
                expect_continue = True
            else:
                rejection = CannotExpect(f"Expect {expect!r} is not supported")

        if oversized:
            rejection = HeadTooLarge(
                f"request head over {self.max_head_size} bytes or {self.max_header_count} fields"
            )
        elif host_count > 1:
            # RFC 9112 §3.2: more than one Host field is a 400.
            rejection = RequestError("more than one Host field")
        elif host is not None and not is_valid_host(host):
            rejection = RequestError("invalid Host field")
        elif host is None and version_bytes == b"1.1" and self.require_host:
            rejection = RequestError("HTTP/1.1 request without Host")

        if rejection is None:
            if target.startswith(b"/"):
                problem = target_problem(target)
                if problem:
                    rejection = RequestError(problem)
            elif target == b"*":
                if method != b"OPTIONS":
                    rejection = RequestError("asterisk-form target is only for OPTIONS")
            else:
                split = split_absolute_target(target)
                if split is None:
                    rejection = RequestError("request target is neither origin-form nor absolute-form")
                else:
                    authority, path = split
                    if b"@" in authority or not authority or not is_valid_host(authority):
                        rejection = RequestError("invalid authority in absolute-form target")
                    elif host is not None and host_without_port(host) != host_without_port(authority):
                        rejection = RequestError("Host field disagrees with the absolute-form target")
                    else:
                        problem = target_problem(path)
                        if problem:
                            rejection = RequestError(problem)
                        # RFC 9112 §3.2.2: the target's authority is the host.
                        host = authority

        return RequestHead(
            method,
            target,
            version_bytes,
            headers,
            framing,
            content_length if framing == FRAMING_LENGTH else -1,
            keep_alive,
            expect_continue,
            host,
            rejection,
            upgrade,
            request_id,
        )
