"""RequestParser: the strict HTTP/1.x request parser (proxy/core/http1/request_parser.py).

Every input goes through `parse_requests()` (tests/core/feeding.py), which
feeds it whole, byte by byte and split at every position, and again with the
start of a further request appended, and asserts that all of these give the
same events.  So each test here also checks that the rule it names does not
depend on how the bytes arrived.

The contract under test (module docstring):
- an acceptable request gives RequestHead, Body*, EndOfMessage;
- a well framed but unacceptable head carries a `rejection`; its body is still
  delivered and the next message parses;
- broken framing gives one final ParseFailed, and nothing after it.
"""

from __future__ import annotations

import pytest

from proxy.core.http1.messages import FRAMING_CHUNKED, FRAMING_LENGTH, FRAMING_NONE, Body, EndOfMessage
from proxy.core.http1.request_parser import (
    HEAD_DISCARD_FACTOR,
    HEAD_GUARD_FACTOR,
    MAX_CHUNK_FRAMING_RUN,
    CannotExpect,
    ConnectNotSupported,
    UnsupportedMethod,
    target_problem,
)
from proxy.errors import (
    FramingError,
    HeadTooLarge,
    RequestError,
    UnsupportedTransferCoding,
    UnsupportedVersion,
)
from tests.core.feeding import (
    Problem,
    body_of,
    chunked,
    failure,
    feed_requests,
    heads,
    kinds,
    normalise,
    parse_requests,
    request_parser,
)

HOST_FIELD = b"Host: example.com"
HOST = HOST_FIELD + b"\r\n"
GET = b"GET / HTTP/1.1\r\n" + HOST + b"\r\n"
#: A complete, valid request used to show that parsing continues (or not).
NEXT = b"GET /next HTTP/1.1\r\n" + HOST + b"\r\n"

BAD_REQUEST = Problem(RequestError, 400)


def request(line: bytes = b"GET / HTTP/1.1", *fields: bytes, body: bytes = b"") -> bytes:
    """A request: `line`, then each field (without CRLF), then `body`."""
    return line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body


def answers(events: list) -> list[Problem]:
    """The error answers a consumer gives for `events`: each rejection and
    the final failure, in order."""
    found = []
    for event in events:
        if kinds([event]) == ["failed"]:
            found.append(event.problem)
        elif kinds([event]) == ["head"] and event.rejection is not None:
            found.append(event.rejection)
    return found


def only_head(data: bytes, **options):
    """The head of the single message in `data`, after checking its shape."""
    events = parse_requests(data, **options)
    assert kinds(events) in (["head", "end"], ["head", "body", "end"]), events
    return events[0]


# --- Accepted messages ------------------------------------------------------------


def test_simple_get_gives_head_then_end():
    events = parse_requests(GET)
    assert kinds(events) == ["head", "end"]
    head = events[0]
    assert (head.method, head.target, head.version) == (b"GET", b"/", b"1.1")
    assert head.headers == [(b"Host", b"example.com")]
    assert head.host == b"example.com"
    assert head.framing == FRAMING_NONE
    assert head.content_length == -1
    assert head.rejection is None


def test_consecutive_requests_parse_in_order_rfc9112_9_3_2():
    events = parse_requests(GET + NEXT + b"GET /third HTTP/1.1\r\n" + HOST + b"\r\n")
    assert [head.target for head in heads(events)] == [b"/", b"/next", b"/third"]
    assert kinds(events) == ["head", "end"] * 3


def test_empty_lines_before_a_request_are_ignored_rfc9112_2_2():
    events = parse_requests(GET + b"\r\n" + NEXT)
    assert [head.target for head in heads(events)] == [b"/", b"/next"]


def test_field_name_case_is_kept():
    head = only_head(request(b"GET / HTTP/1.1", b"hOsT: example.com", b"X-MiXeD: v"))
    assert head.headers == [(b"hOsT", b"example.com"), (b"X-MiXeD", b"v")]


def test_trailing_whitespace_is_not_part_of_the_host_rfc9110_5_5():
    head = only_head(request(b"GET / HTTP/1.1", b"Host: example.com \t"))
    assert head.rejection is None
    assert head.host == b"example.com"


@pytest.mark.parametrize(
    ("field", "attribute", "value"),
    [
        (b"Connection: close \t", "keep_alive", False),
        (b"Expect: 100-continue \t", "expect_continue", True),
        (b"Content-Length: 0 \t", "framing", FRAMING_LENGTH),
        (b"Transfer-Encoding: chunked  ", "framing", FRAMING_CHUNKED),
    ],
)
def test_trailing_whitespace_is_not_part_of_a_field_the_parser_reads_rfc9110_5_5(field, attribute, value):
    body = b"0\r\n\r\n" if b"chunked" in field else b""
    head = only_head(request(b"POST / HTTP/1.1", HOST_FIELD, field, body=body))
    assert head.rejection is None
    assert getattr(head, attribute) == value


def test_content_length_body_is_delivered_rfc9112_6_2():
    data = request(b"POST /upload HTTP/1.1", HOST_FIELD, b"Content-Length: 11", body=b"hello world")
    events = parse_requests(data + NEXT)
    assert kinds(events) == ["head", "body", "end", "head", "end"]
    assert (events[0].framing, events[0].content_length) == (FRAMING_LENGTH, 11)
    assert events[1] == Body(b"hello world")


def test_content_length_zero_means_no_body_bytes():
    events = parse_requests(request(b"POST / HTTP/1.1", HOST_FIELD, b"Content-Length: 0") + NEXT)
    assert kinds(events) == ["head", "end", "head", "end"]
    assert (events[0].framing, events[0].content_length) == (FRAMING_LENGTH, 0)


def test_body_bytes_that_look_like_a_request_stay_body():
    data = request(b"POST / HTTP/1.1", HOST_FIELD, b"Content-Length: %d" % len(NEXT), body=NEXT)
    events = parse_requests(data)
    assert kinds(events) == ["head", "body", "end"]
    assert body_of(events) == NEXT


def test_chunked_body_is_decoded_rfc9112_7_1():
    data = request(b"POST / HTTP/1.1", HOST_FIELD, b"Transfer-Encoding: chunked", body=chunked(b"hello", b" ", b"world"))
    events = parse_requests(data + NEXT)
    assert kinds(events) == ["head", "body", "end", "head", "end"]
    assert (events[0].framing, events[0].content_length) == (FRAMING_CHUNKED, -1)
    assert body_of(events) == b"hello world"


def test_chunked_transfer_coding_name_is_case_insensitive_rfc9112_7():
    head = only_head(request(b"POST / HTTP/1.1", HOST_FIELD, b"Transfer-Encoding: Chunked", body=chunked(b"x")))
    assert head.framing == FRAMING_CHUNKED


def test_chunk_extensions_are_ignored_rfc9112_7_1_1():
    body = b"5;name=value;flag\r\nhello\r\n0;last=yes\r\n\r\n"
    events = parse_requests(request(b"POST / HTTP/1.1", HOST_FIELD, b"Transfer-Encoding: chunked", body=body))
    assert body_of(events) == b"hello"


def test_trailer_fields_come_with_end_of_message_rfc9112_7_1_2():
    body = chunked(b"data", trailers=b"X-Checksum: abc\r\nX-Other: 1\r\n")
    events = parse_requests(request(b"POST / HTTP/1.1", HOST_FIELD, b"Transfer-Encoding: chunked", body=body) + NEXT)
    assert events[2] == EndOfMessage([(b"X-Checksum", b"abc"), (b"X-Other", b"1")])
    assert events[0].get(b"x-checksum") is None  # trailers never join the head


def test_http10_request_needs_no_host_rfc9112_3_2():
    head = only_head(request(b"GET / HTTP/1.0"))
    assert head.version == b"1.0"
    assert head.host is None
    assert head.rejection is None


def test_http10_request_with_content_length_body():
    events = parse_requests(request(b"POST / HTTP/1.0", b"Content-Length: 3", body=b"abc") + NEXT)
    assert kinds(events) == ["head", "body", "end", "head", "end"]
    assert body_of(events[:3]) == b"abc"


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        (b"1.1", None, True),  # RFC 9112 §9.3: persistent by default
        (b"1.1", b"close", False),
        (b"1.1", b"Close", False),
        (b"1.1", b"keep-alive, close", False),
        (b"1.1", b"keep-alive", True),
        (b"1.1", b"x-custom", True),
        (b"1.0", None, False),  # RFC 9112 §9.3: 1.0 persists only with keep-alive
        (b"1.0", b"keep-alive", True),
        (b"1.0", b"Keep-Alive", True),
        (b"1.0", b"close", False),
        (b"1.0", b"keep-alive, close", False),  # RFC 9112 §9.3: "close" is checked first
    ],
)
def test_keep_alive_rfc9112_9_3(version, connection, keep_alive):
    fields = [HOST_FIELD] + ([b"Connection: " + connection] if connection else [])
    head = only_head(request(b"GET / HTTP/" + version, *fields))
    assert head.keep_alive is keep_alive


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
@pytest.mark.parametrize("connection", [None, b"Connection: close", b"Connection: keep-alive", b"Connection: x-y"])
@pytest.mark.parametrize("proxy_connection", [None, b"Proxy-Connection: close", b"Proxy-Connection: keep-alive"])
def test_version_whatever_the_connection_fields(version, connection, proxy_connection):
    # _build_head takes HTTP/1.1 from llhttp's keep-alive verdict when neither
    # field is present (the fields llhttp reads it from); with either, it asks.
    fields = [f for f in (HOST_FIELD, connection, proxy_connection) if f]
    assert only_head(request(b"GET / HTTP/" + version, *fields)).version == version


@pytest.mark.parametrize("version", [b"2.0", b"3.0"])
@pytest.mark.parametrize("field", [b"Connection: keep-alive", b"Proxy-Connection: keep-alive"])
def test_an_unsupported_version_kept_alive_by_llhttp_is_still_refused(version, field):
    # llhttp keeps these alive when asked to, as it would HTTP/1.0: the
    # verdict alone must not be taken for HTTP/1.1.
    events = parse_requests(request(b"GET / HTTP/" + version, HOST_FIELD, field))
    assert issubclass(failure(events).problem.kind, UnsupportedVersion)


# --- Expect (RFC 9110 §10.1.1) ---------------------------------------------------


@pytest.mark.parametrize("value", [b"100-continue", b"100-Continue"])
def test_expect_100_continue_is_reported_rfc9110_10_1_1(value):
    data = request(b"POST / HTTP/1.1", HOST_FIELD, b"Expect: " + value, b"Content-Length: 2", body=b"hi")
    head = only_head(data)
    assert head.expect_continue is True
    assert head.rejection is None


def test_no_expect_means_no_continue():
    assert only_head(GET).expect_continue is False


def test_other_expectation_is_rejected_with_417_rfc9110_10_1_1():
    data = request(b"POST / HTTP/1.1", HOST_FIELD, b"Expect: something-else", b"Content-Length: 2", body=b"hi")
    events = parse_requests(data + NEXT)
    assert kinds(events) == ["head", "body", "end", "head", "end"]  # body kept, stream continues
    assert events[0].rejection == Problem(CannotExpect, 417)
    assert events[0].expect_continue is False


# --- Host (RFC 9112 §3.2) ----------------------------------------------------------


def test_http11_request_without_host_is_rejected_rfc9112_3_2():
    events = parse_requests(request(b"GET / HTTP/1.1") + NEXT)
    assert events[0].rejection == BAD_REQUEST
    assert events[2].rejection is None  # the stream goes on


def test_missing_host_is_fine_without_require_host():
    head = only_head(request(b"GET / HTTP/1.1"), require_host=False)
    assert head.rejection is None
    assert head.host is None


def test_two_host_fields_are_rejected_rfc9112_3_2():
    events = parse_requests(request(b"GET / HTTP/1.1", b"Host: a.example", b"Host: a.example") + NEXT)
    assert events[0].rejection == BAD_REQUEST
    assert events[2].rejection is None


def test_two_host_fields_are_rejected_without_require_host_too():
    head = only_head(request(b"GET / HTTP/1.1", b"Host: a.example", b"Host: b.example"), require_host=False)
    assert head.rejection == BAD_REQUEST


@pytest.mark.parametrize(
    "value",
    [b"user@example.com", b"example.com/path", b"example.com?q", b"a b", b"example.com:80x", b"example.com:123456", b"[::1"],
)
def test_invalid_host_value_is_rejected_rfc9110_7_2(value):
    events = parse_requests(request(b"GET / HTTP/1.1", b"Host: " + value) + NEXT)
    assert events[0].rejection == BAD_REQUEST
    assert events[2].rejection is None


@pytest.mark.parametrize("value", [b"example.com", b"Example.COM:8080", b"127.0.0.1:80", b"[::1]:8443", b"xn--bcher-kva.example"])
def test_valid_host_value_is_taken_as_is(value):
    head = only_head(request(b"GET / HTTP/1.1", b"Host: " + value))
    assert head.rejection is None
    assert head.host == value


# --- Request targets (RFC 9112 §3.2) ------------------------------------------------


def test_absolute_form_takes_host_from_the_authority_rfc9112_3_2_2():
    head = only_head(request(b"GET http://api.example:8080/x?q=1 HTTP/1.1", b"Host: api.example"))
    assert head.rejection is None
    assert head.host == b"api.example:8080"
    assert head.target == b"http://api.example:8080/x?q=1"


def test_absolute_form_host_comparison_ignores_case_and_port():
    head = only_head(request(b"GET http://API.example/x HTTP/1.1", b"Host: api.EXAMPLE:80"))
    assert head.rejection is None


def test_absolute_form_without_path_is_accepted():
    head = only_head(request(b"GET https://api.example HTTP/1.1", b"Host: api.example"))
    assert head.rejection is None
    assert head.host == b"api.example"


def test_absolute_form_with_host_disagreeing_is_rejected():
    events = parse_requests(request(b"GET http://internal.example/ HTTP/1.1", b"Host: public.example") + NEXT)
    assert events[0].rejection == BAD_REQUEST
    assert events[2].rejection is None


@pytest.mark.parametrize(
    "target",
    [
        b"http://user@api.example/",  # RFC 9110 §4.2.4: userinfo is not allowed
        b"http://user:pw@api.example/",
        b"http:///x",  # empty authority
        b"http://api.example/a/../b",
        b"http://api.example/a#frag",
        b"ftp://api.example/",  # only http and https
        b"https://user@api.example/",
    ],
)
def test_bad_absolute_or_unknown_form_is_rejected(target):
    events = parse_requests(request(b"GET " + target + b" HTTP/1.1", b"Host: api.example") + NEXT)
    assert events[0].rejection == BAD_REQUEST
    assert events[2].rejection is None


def test_asterisk_form_is_accepted_for_options_rfc9112_3_2_4():
    head = only_head(request(b"OPTIONS * HTTP/1.1", HOST_FIELD))
    assert head.rejection is None
    assert head.target == b"*"


@pytest.mark.parametrize("method", [b"GET", b"POST", b"HEAD", b"DELETE"])
def test_asterisk_form_is_rejected_for_other_methods_rfc9112_3_2_4(method):
    events = parse_requests(request(method + b" * HTTP/1.1", HOST_FIELD) + NEXT)
    assert events[0].rejection == BAD_REQUEST
    assert events[2].rejection is None


@pytest.mark.parametrize(
    "target",
    [
        b"/a#fragment",  # RFC 9112 §3.2: a fragment is never sent
        b"/a/b#",
        b"/a\\..\\b",  # backslash: a path separator to some servers
        b"/a\\",
        b"/a%zz",  # RFC 3986 §2.1: "%" HEXDIG HEXDIG
        b"/a%2",
        b"/a%",
        b"/a?q=%x1",
        b"/../etc/passwd",  # RFC 3986 §5.2.4 dot segments
        b"/a/../b",
        b"/a/./b",
        b"/a/..",
        b"/a/.",
        b"/a/..?q",
        b"/a/%2e%2e/b",  # the same, percent-encoded
        b"/a/%2E%2E/b",
        b"/a/.%2e/b",
        b"/a/%2e./b",
        b"/a/%2e/b",
    ],
)
def test_unsafe_target_is_rejected_with_framing_intact(target):
    data = request(b"POST " + target + b" HTTP/1.1", HOST_FIELD, b"Content-Length: 4", body=b"body")
    events = parse_requests(data + NEXT)
    assert kinds(events) == ["head", "body", "end", "head", "end"]
    assert events[0].rejection == BAD_REQUEST
    assert events[3].target == b"/next"
    assert events[3].rejection is None


@pytest.mark.parametrize("target", [b"/a/..b", b"/a/b..", b"/.well-known/x", b"/a?x=/../", b"/%41%2F", b"/a.b/c.d"])
def test_targets_that_only_look_unsafe_are_accepted(target):
    head = only_head(request(b"GET " + target + b" HTTP/1.1", HOST_FIELD))
    assert head.rejection is None
    assert head.target == target


def test_target_precheck_flags_exactly_the_three_suspect_bytes():
    # target_problem() clears most targets with translate() and one find();
    # every other visible byte passes, wherever it stands.
    for byte in range(0x21, 0x7F):
        for target in (b"/a" + bytes([byte]) + b"b", b"/a" + bytes([byte])):
            problem = target_problem(target)
            if byte in b"#\\%":
                assert problem is not None, target
            else:
                assert problem is None, target


# --- Head size limits ---------------------------------------------------------------


def test_head_over_max_head_size_is_rejected_with_431_and_the_stream_continues():
    data = request(b"POST / HTTP/1.1", HOST_FIELD, b"X-Big: " + b"v" * 300, b"Content-Length: 2", body=b"ok")
    events = parse_requests(data + NEXT, max_head_size=200)
    assert kinds(events) == ["head", "body", "end", "head", "end"]
    assert events[0].rejection == Problem(HeadTooLarge, 431)
    # Its fields are kept for correlation (a mux answer carries its Request-Id);
    # a rejected head is never forwarded.
    assert (b"X-Big", b"v" * 300) in events[0].headers
    assert body_of(events) == b"ok"
    assert events[3].rejection is None


def test_head_over_max_header_count_is_rejected_with_431_and_the_stream_continues():
    fields = [HOST_FIELD] + [b"X-%d: v" % i for i in range(10)]
    events = parse_requests(request(b"GET / HTTP/1.1", *fields) + NEXT, max_header_count=10)
    assert kinds(events) == ["head", "end", "head", "end"]
    assert events[0].rejection == Problem(HeadTooLarge, 431)
    assert events[2].rejection is None


def test_head_at_max_header_count_is_accepted():
    fields = [HOST_FIELD] + [b"X-%d: v" % i for i in range(9)]
    head = only_head(request(b"GET / HTTP/1.1", *fields), max_header_count=10)
    assert head.rejection is None
    assert len(head.headers) == 10


def test_head_past_discard_factor_times_max_head_size_loses_framing():
    value = b"v" * (200 * HEAD_DISCARD_FACTOR)
    events = parse_requests(request(b"GET / HTTP/1.1", HOST_FIELD, b"X-Big: " + value) + NEXT, max_head_size=200)
    assert kinds(events) == ["failed"]
    assert failure(events).problem == Problem(HeadTooLarge, 431)


def test_head_past_discard_factor_times_max_header_count_loses_framing():
    fields = [b"X-%d: v" % i for i in range(10 * HEAD_DISCARD_FACTOR + 1)]
    events = parse_requests(request(b"GET / HTTP/1.1", HOST_FIELD, *fields) + NEXT, max_header_count=10)
    assert kinds(events) == ["failed"]
    assert failure(events).problem == Problem(HeadTooLarge, 431)


@pytest.mark.parametrize(
    ("start", "what"),
    [
        (b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Big: ", "field value"),
        (b"GET / HTTP/1.1\r\nHost: example.com\r\nX-", "field name"),
        (b"GET /", "request target"),
    ],
)
def test_one_huge_head_element_fed_in_pieces_fails_before_it_completes(start, what):
    """llhttp holds an unfinished element in memory: the parser must give up
    long before a 10 MB element has arrived, not when it ends."""
    parser = request_parser(max_head_size=8192)
    assert parser.feed(start) == []
    piece = b"a" * 1024
    pieces_allowed = (8192 * HEAD_GUARD_FACTOR) // len(piece) + 2
    for count in range(1, 10 * 1024 + 1):
        events = parser.feed(piece)
        if events:
            break
    assert count <= pieces_allowed, f"{what}: failed only after {count} KiB"
    assert kinds(normalise(events)) == ["failed"]
    assert normalise(events)[0].problem == Problem(HeadTooLarge, 431)


@pytest.mark.parametrize(
    "over",
    [-30, -10, 0, 5, 10, 14],
    ids=lambda n: f"raw head {n:+d} bytes around {HEAD_DISCARD_FACTOR}x the limit",
)
def test_head_size_verdict_does_not_depend_on_how_the_head_is_fed(over):
    """A head near the discard limit gets the same verdict (431 rejection or
    ParseFailed) whole and byte by byte; parse_requests asserts that."""
    limit = 100
    raw_size = limit * HEAD_DISCARD_FACTOR + over
    line = b"GET / HTTP/1.1\r\n"
    pad = raw_size - len(line) - len(b"X: \r\n") - len(b"\r\n")
    data = line + b"X: " + b"a" * pad + b"\r\n\r\n"
    assert len(data) == raw_size
    parse_requests(data, max_head_size=limit, require_host=False)


def test_whitespace_padding_is_not_canonical_size_but_trickled_padding_meets_the_guard():
    """The verdict on a complete head is its canonical size (module note):
    optional whitespace (RFC 9110 §5.6.3) is not counted, so a padded head fed
    whole passes.  Trickled in, padding beyond HEAD_GUARD_FACTOR times the
    limit meets the memory guard first and the head is refused."""
    data = b"GET / HTTP/1.1\r\nHost:" + b" " * 1000 + b"example.com\r\n\r\n"
    whole = request_parser(max_head_size=100).feed(data)
    assert [type(e).__name__ for e in whole] == ["RequestHead", "EndOfMessage"]
    assert whole[0].rejection is None and whole[0].host == b"example.com"
    trickled = feed_requests([data[i : i + 1] for i in range(len(data))], max_head_size=100)
    assert normalise(trickled)[-1].problem == Problem(HeadTooLarge, 431)
    # Padding within the guard gets the same verdict however it is fed.
    data = b"GET / HTTP/1.1\r\nHost:" + b" " * (100 * HEAD_GUARD_FACTOR - 100) + b"example.com\r\n\r\n"
    assert parse_requests(data, max_head_size=100)[0].rejection is None


# --- Framing errors: ParseFailed, then nothing ---------------------------------------

CL = b"Content-Length: "
TE = b"Transfer-Encoding: "

FRAMING_ERRORS = {
    # RFC 9112 §6.1, §6.3 item 3: Content-Length with Transfer-Encoding is smuggling.
    "CL then TE": (request(b"POST / HTTP/1.1", HOST_FIELD, CL + b"3", TE + b"chunked", body=b"abc"), 400),
    "TE then CL": (request(b"POST / HTTP/1.1", HOST_FIELD, TE + b"chunked", CL + b"3", body=b"0\r\n\r\n"), 400),
    # RFC 9112 §6.3 item 5: an invalid Content-Length is unrecoverable.
    "two CL, equal": (request(b"POST / HTTP/1.1", HOST_FIELD, CL + b"3", CL + b"3", body=b"abc"), 400),
    "two CL, different": (request(b"POST / HTTP/1.1", HOST_FIELD, CL + b"3", CL + b"4", body=b"abcd"), 400),
    "CL with plus sign": (request(b"POST / HTTP/1.1", HOST_FIELD, CL + b"+3", body=b"abc"), 400),
    "CL negative": (request(b"POST / HTTP/1.1", HOST_FIELD, CL + b"-1"), 400),
    "CL hex": (request(b"POST / HTTP/1.1", HOST_FIELD, CL + b"0x3", body=b"abc"), 400),
    "CL list": (request(b"POST / HTTP/1.1", HOST_FIELD, CL + b"3, 3", body=b"abc"), 400),
    "CL empty": (request(b"POST / HTTP/1.1", HOST_FIELD, CL[:-1]), 400),
    "CL two numbers": (request(b"POST / HTTP/1.1", HOST_FIELD, CL + b"3 3", body=b"abc"), 400),
    "CL overflow": (request(b"POST / HTTP/1.1", HOST_FIELD, CL + b"9" * 30), 400),
    # RFC 9112 §6.1: a coding we do not implement is a 501.
    "TE gzip": (request(b"POST / HTTP/1.1", HOST_FIELD, TE + b"gzip", body=b"x"), 501),
    "TE gzip, chunked": (request(b"POST / HTTP/1.1", HOST_FIELD, TE + b"gzip, chunked", body=b"0\r\n\r\n"), 501),
    "TE identity": (request(b"POST / HTTP/1.1", HOST_FIELD, TE + b"identity", body=b"x"), 501),
    "TE twice": (request(b"POST / HTTP/1.1", HOST_FIELD, TE + b"chunked", TE + b"chunked", body=b"0\r\n\r\n"), 400),
    "TE chunked, chunked": (request(b"POST / HTTP/1.1", HOST_FIELD, TE + b"chunked, chunked", body=b"0\r\n\r\n"), 400),
    # RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means faulty framing.
    "TE in HTTP/1.0": (request(b"POST / HTTP/1.0", TE + b"chunked", body=b"0\r\n\r\n"), 400),
    "TE and CL in HTTP/1.0": (request(b"POST / HTTP/1.0", TE + b"chunked", CL + b"5", body=b"0\r\n\r\n"), 400),
    # RFC 9112 §7.1: chunk-size is hex digits, each chunk ends in CRLF.
    "bad chunk size": (request(b"POST / HTTP/1.1", HOST_FIELD, TE + b"chunked", body=b"zz\r\nab\r\n0\r\n\r\n"), 400),
    "chunk size with space": (request(b"POST / HTTP/1.1", HOST_FIELD, TE + b"chunked", body=b"1 \r\na\r\n0\r\n\r\n"), 400),
    "chunk size overflow": (request(b"POST / HTTP/1.1", HOST_FIELD, TE + b"chunked", body=b"f" * 20 + b"\r\n"), 400),
    "no CRLF after chunk data": (request(b"POST / HTTP/1.1", HOST_FIELD, TE + b"chunked", body=b"1\r\naXX0\r\n\r\n"), 400),
    "control char in chunk extension": (
        request(b"POST / HTTP/1.1", HOST_FIELD, TE + b"chunked", body=b"1;ext=\x01\r\na\r\n0\r\n\r\n"),
        400,
    ),
    "bad trailer field": (request(b"POST / HTTP/1.1", HOST_FIELD, TE + b"chunked", body=b"0\r\nX : y\r\n\r\n"), 400),
    # RFC 9112 §5.2: obs-fold is refused.
    "obs-fold": (request(b"GET / HTTP/1.1", HOST_FIELD, b"X: a", b" b"), 400),
    "obs-fold with tab": (request(b"GET / HTTP/1.1", HOST_FIELD, b"X: a", b"\tb"), 400),
    # RFC 9112 §5.1: no whitespace between field name and colon.
    "whitespace before colon": (request(b"GET / HTTP/1.1", b"Host : example.com"), 400),
    # RFC 9112 §2.2: CRLF line ends only; a bare CR is invalid.
    "bare LF after request line": (b"GET / HTTP/1.1\n" + HOST + b"\r\n", 400),
    "bare LF after field": (b"GET / HTTP/1.1\r\nHost: example.com\n\r\n", 400),
    "bare LF ending head": (b"GET / HTTP/1.1\r\n" + HOST + b"\n", 400),
    "bare CR in field": (b"GET / HTTP/1.1\r\nHost: example.com\rX: y\r\n\r\n", 400),
    "bare CR after request line": (b"GET / HTTP/1.1\r" + HOST + b"\r\n", 400),
    # RFC 9110 §5.5: no NUL or other CTL in field values.
    "NUL in value": (request(b"GET / HTTP/1.1", b"Host: exa\x00mple.com"), 400),
    "CTL in value": (request(b"GET / HTTP/1.1", b"Host: exa\x01mple.com"), 400),
    "DEL in value": (request(b"GET / HTTP/1.1", b"Host: exa\x7fmple.com"), 400),
    "space in field name": (request(b"GET / HTTP/1.1", b"X Y: z"), 400),
    # RFC 9110 §15.6.6: versions other than 1.0 and 1.1 get 505.
    "HTTP/0.9": (b"GET /\r\n\r\n", 505),
    "HTTP/2.0": (request(b"GET / HTTP/2.0", HOST_FIELD), 505),
    "HTTP/1.2": (request(b"GET / HTTP/1.2", HOST_FIELD), 505),
    "HTTP/3.0": (request(b"GET / HTTP/3.0", HOST_FIELD), 505),
    # RFC 9110 §9.1: an unknown method is a 501.
    "unknown method": (request(b"BREW / HTTP/1.1", HOST_FIELD), 501),
    "lower-case method": (request(b"get / HTTP/1.1", HOST_FIELD), 501),
}


@pytest.mark.parametrize(("data", "status"), FRAMING_ERRORS.values(), ids=FRAMING_ERRORS.keys())
def test_framing_error_ends_the_stream(data, status):
    events = parse_requests(data + NEXT)
    failed = failure(events)
    assert failed.problem.status == status
    assert failed.problem.kind.loses_framing
    assert b"/next" not in [head.target for head in heads(events)]


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (FRAMING_ERRORS["TE gzip"][0], UnsupportedTransferCoding),
        (FRAMING_ERRORS["HTTP/2.0"][0], UnsupportedVersion),
        (FRAMING_ERRORS["unknown method"][0], UnsupportedMethod),
        (FRAMING_ERRORS["CL then TE"][0], FramingError),
    ],
    ids=["TE gzip", "HTTP/2.0", "unknown method", "CL then TE"],
)
def test_framing_error_class(data, kind):
    assert issubclass(failure(parse_requests(data)).problem.kind, kind)


def test_nothing_is_parsed_after_a_failure_even_in_a_later_feed():
    parser = request_parser()
    events = normalise(parser.feed(FRAMING_ERRORS["CL then TE"][0]))
    assert kinds(events) == ["failed"]
    assert parser.failed is not None
    assert parser.feed(NEXT) == []
    assert parser.feed(GET) == []


def test_messages_before_a_framing_error_are_still_delivered():
    events = parse_requests(GET + FRAMING_ERRORS["TE then CL"][0])
    assert kinds(events) == ["head", "end", "failed"]
    assert events[0].rejection is None


def test_connect_is_refused_with_405():
    """A reverse proxy never tunnels: the client's answer to CONNECT, the
    first rejection or failure it causes, is a 405."""
    events = parse_requests(request(b"CONNECT api.example:443 HTTP/1.1", b"Host: api.example:443") + NEXT)
    assert answers(events)[0] == Problem(ConnectNotSupported, 405)
    assert b"/next" not in [head.target for head in heads(events)]


def test_connect_is_never_delivered_as_an_acceptable_request():
    """Even with an origin-form target, CONNECT must not reach a consumer as
    a head without rejection (it would be forwarded)."""
    events = parse_requests(request(b"CONNECT / HTTP/1.1", HOST_FIELD))
    assert all(head.rejection is not None for head in heads(events)), events
    assert failure(events).problem == Problem(ConnectNotSupported, 405)


# --- Upgrade (RFC 9110 §7.8: a server may ignore it; we always do) -----------------

UPGRADE = [HOST_FIELD, b"Upgrade: websocket", b"Connection: Upgrade"]


@pytest.mark.parametrize(
    "extra",
    [[], [b"Content-Length: 0"], [b"Connection: keep-alive"]],
    ids=["no framing", "Content-Length: 0", "two Connection fields"],
)
def test_upgrade_request_without_body_is_followed_by_the_next_request(extra):
    """RFC 9112 §6.3: Content-Length: 0 declares an empty body, which is no body."""
    events = parse_requests(request(b"GET /chat HTTP/1.1", *UPGRADE, *extra) + NEXT)
    assert kinds(events) == ["head", "end", "head", "end"]
    assert [head.target for head in heads(events)] == [b"/chat", b"/next"]
    assert events[0].rejection is None


@pytest.mark.parametrize(
    ("framing", "body"),
    [
        (b"Content-Length: %d" % len(NEXT), NEXT),
        (b"Transfer-Encoding: chunked", chunked(NEXT)),
    ],
    ids=["content-length", "chunked"],
)
def test_upgrade_request_with_body_never_parses_the_body_as_a_request(framing, body):
    """Smuggling: llhttp hands over everything after an upgrade head, body
    included; a body that is a request must never come out as one."""
    smuggled = body.replace(b"/next", b"/smuggled")
    events = parse_requests(request(b"POST /chat HTTP/1.1", *UPGRADE, framing, body=smuggled) + NEXT)
    assert b"/smuggled" not in [head.target for head in heads(events)]
    assert b"/next" not in [head.target for head in heads(events)]
    assert failure(events).problem.kind.loses_framing


def test_upgrade_request_with_body_is_never_reported_complete():
    """EndOfMessage means the message ended where its framing said; a head
    declaring 5 body bytes whose body was never read did not."""
    data = request(b"POST /chat HTTP/1.1", *UPGRADE, b"Content-Length: 5", body=b"hello")
    events = parse_requests(data)
    assert "end" not in kinds(events), events
    assert failure(events).problem.kind.loses_framing


# --- Chunk framing without data ----------------------------------------------------


def test_long_chunk_extension_fed_in_pieces_fails():
    """Chunk framing that never yields a body byte is bounded by
    MAX_CHUNK_FRAMING_RUN even though llhttp keeps none of it."""
    parser = request_parser()
    head = request(b"POST / HTTP/1.1", HOST_FIELD, b"Transfer-Encoding: chunked") + b"1;ext="
    assert kinds(normalise(parser.feed(head))) == ["head"]
    piece = b"v" * 64
    for count in range(1, 100_000):
        events = normalise(parser.feed(piece))
        if events:
            break
    assert count * len(piece) <= MAX_CHUNK_FRAMING_RUN + 2 * len(piece)
    assert kinds(events) == ["failed"]
    assert events[0].problem.kind.loses_framing


def test_many_small_chunks_are_not_a_framing_run():
    body = chunked(*[b"x"] * 3000)  # ~15 KB of framing, but a data byte in every chunk
    data = request(b"POST / HTTP/1.1", HOST_FIELD, b"Transfer-Encoding: chunked", body=body)
    events = normalise(feed_requests([data[i : i + 7] for i in range(0, len(data), 7)]))
    assert kinds(events) == ["head", "body", "end"]
    assert body_of(events) == b"x" * 3000


# --- What ParseFailed tells about the failed message --------------------------------


@pytest.mark.parametrize(
    "data",
    [
        request(b"POST /t HTTP/1.1", HOST_FIELD, b"Transfer-Encoding: chunked", body=b"zz\r\n"),
        request(b"POST /t HTTP/1.1", HOST_FIELD, b"Transfer-Encoding: chunked", body=b"1\r\naXX"),
        request(b"POST /t HTTP/1.1", HOST_FIELD, b"Transfer-Encoding: chunked", body=b"0\r\nX : y\r\n\r\n"),
        request(b"POST /t HTTP/1.1", *UPGRADE, b"Content-Length: 5", body=b"hello"),
    ],
    ids=["bad chunk size", "no CRLF after chunk", "bad trailer", "upgrade with body"],
)
def test_failure_after_the_head_carries_the_head(data):
    events = parse_requests(data)
    failed = failure(events)
    assert failed.head is not None
    assert failed.head.target == b"/t"
    assert failed.target == b"/t"


@pytest.mark.parametrize(
    "data",
    [
        b"GET /t HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip\r\n\r\n",
        b"GET /t HTTP/1.1\r\n" + HOST + b"X: a\x00b\r\n\r\n",
        b"GET /t HTTP/2.0\r\n" + HOST + b"\r\n",
        b"GET /t HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"GET /t HTTP/1.1\r\nHost: example.com\rX: y\r\n\r\n",
        b"GET /t HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
        b"GET /t HTTP/2.0\r\n\r\n",
    ],
    ids=[
        "TE gzip",
        "NUL in second field",
        "HTTP/2.0",
        "NUL in first field",
        "bare CR in first field",
        "obs-fold of first field",
        "HTTP/2.0 without fields",
    ],
)
def test_failure_inside_the_header_section_carries_the_target(data):
    failed = failure(parse_requests(data, require_host=False))
    assert failed.head is None
    assert failed.target == b"/t"


def test_failure_inside_the_header_section_reports_the_same_target_however_fed():
    """"Host : x" after a complete field: the target must not depend on
    whether the bad name was cut by a read boundary."""
    parse_requests(b"GET /t HTTP/1.1\r\n" + HOST + b"X : y\r\n\r\n")


@pytest.mark.parametrize("data", [b"BREW /t HTTP/1.1\r\n\r\n", b"GET /t HTTP/1.1\n\r\n", b"GET /t\x00 HTTP/1.1\r\n\r\n"])
def test_failure_in_the_request_line_carries_neither(data):
    failed = failure(parse_requests(data))
    assert (failed.head, failed.target) == (None, None)


# --- Parser state --------------------------------------------------------------------


def test_parser_is_idle_between_messages_only():
    parser = request_parser()
    assert parser.is_idle and repr(parser) == "<RequestParser idle>"
    parser.feed(GET[:10])
    assert not parser.is_idle and parser.in_head and repr(parser) == "<RequestParser head>"
    parser.feed(GET[10:])
    assert parser.is_idle


def test_parser_reports_body_state_and_failed_state():
    parser = request_parser()
    parser.feed(request(b"POST / HTTP/1.1", HOST_FIELD, b"Content-Length: 5", body=b"ab"))
    assert repr(parser) == "<RequestParser body>"
    assert not parser.is_idle and not parser.in_head
    parser = request_parser()
    parser.feed(b"BREW / HTTP/1.1\r\n")
    assert repr(parser) == "<RequestParser failed>"
    assert not parser.is_idle


def test_empty_feed_gives_no_events():
    parser = request_parser()
    assert parser.feed(b"") == []
    assert parser.is_idle
