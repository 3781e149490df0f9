"""ResponseParser: one exchange at a time on an origin connection
(proxy/core/http1/response_parser.py).

Each test announces a request with `start(method)` and feeds the origin's
bytes through `parse_response()` (tests/core/feeding.py): whole, byte by byte
and split at every position, asserting the same events, `reusable` and
`bytes_received` every time.

The contract: exactly one final response per exchange, 1xx interim responses
dropped, and `reusable` False whenever anything is ambiguous: bytes after
the response, bytes nobody asked for, a close-delimited body, Connection:
close.  Failures are one final ParseFailed carrying an OriginError.
"""

from __future__ import annotations

import pytest

from proxy.core.http1.messages import (
    END_OF_MESSAGE,
    FRAMING_CHUNKED,
    FRAMING_CLOSE,
    FRAMING_LENGTH,
    FRAMING_NONE,
    Body,
    ResponseHead,
)
from proxy.core.http1.response_parser import HEAD_GUARD_FACTOR, reason_problem
from proxy.errors import (
    OriginClosed,
    OriginError,
    OriginProtocolError,
    OriginResponseIncomplete,
    OriginResponseTooLarge,
)
from tests.core.feeding import (
    Problem,
    body_of,
    chunked,
    failure,
    kinds,
    normalise,
    parse_response,
    response_parser,
)

OK_EMPTY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def response(status_line: bytes = b"HTTP/1.1 200 OK", *fields: bytes, body: bytes = b"") -> bytes:
    return status_line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body


def failed_with(exchange, kind) -> None:
    problem = failure(exchange.events).problem
    assert problem.kind is kind, problem
    assert issubclass(problem.kind, OriginError)
    assert exchange.reusable is False


# --- Body framing (RFC 9112 §6.3) ------------------------------------------------


def test_content_length_response():
    data = response(b"HTTP/1.1 200 OK", b"Content-Length: 5", b"X-Origin: a", body=b"hello")
    exchange = parse_response(b"GET", data)
    assert kinds(exchange.events) == ["head", "body", "end"]
    head = exchange.events[0]
    assert head == ResponseHead(200, b"OK", b"1.1", [(b"Content-Length", b"5"), (b"X-Origin", b"a")], FRAMING_LENGTH, 5, True)
    assert exchange.events[1] == Body(b"hello")
    assert exchange.reusable is True


def test_chunked_response_is_decoded_rfc9112_7_1():
    data = response(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked", body=chunked(b"hel", b"lo"))
    exchange = parse_response(b"GET", data)
    assert kinds(exchange.events) == ["head", "body", "end"]
    assert exchange.events[0].framing == FRAMING_CHUNKED
    assert body_of(exchange.events) == b"hello"
    assert exchange.reusable is True


def test_chunked_response_trailers_are_dropped():
    data = response(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked", body=chunked(b"x", trailers=b"X-T: 1\r\n"))
    exchange = parse_response(b"GET", data)
    assert exchange.events[-1] == END_OF_MESSAGE
    assert exchange.events[0].get(b"x-t") is None
    assert exchange.reusable is True


def test_close_delimited_body_ends_at_eof_rfc9112_6_3_item_8():
    exchange = parse_response(b"GET", response(b"HTTP/1.1 200 OK", body=b"all of it"), eof=True)
    assert kinds(exchange.events) == ["head", "body", "end"]
    assert exchange.events[0].framing == FRAMING_CLOSE
    assert exchange.events[0].keep_alive is False
    assert body_of(exchange.events) == b"all of it"
    assert exchange.reusable is False


def test_close_delimited_body_has_no_end_before_eof():
    exchange = parse_response(b"GET", response(b"HTTP/1.0 200 OK", body=b"partial"))
    assert kinds(exchange.events) == ["head", "body"]


def test_reason_phrase_is_kept():
    exchange = parse_response(b"GET", response(b"HTTP/1.1 404 Not Here At All", b"Content-Length: 0"))
    assert exchange.events[0].reason == b"Not Here At All"


def test_reason_phrase_may_hold_tabs_and_obs_text_rfc9112_4():
    exchange = parse_response(b"GET", response(b"HTTP/1.1 200 \tOK \xe9t\xe9", b"Content-Length: 0"))
    assert exchange.events[0].reason == b"\tOK \xe9t\xe9"


def test_reason_problem_allows_exactly_htab_sp_vchar_and_obs_text_rfc9112_4():
    # The set of registered phrases is a shortcut past the byte check: the
    # check itself must still hold for every byte in any other phrase.
    allowed = {9} | set(range(0x20, 0x7F)) | set(range(0x80, 0x100))
    for byte in range(256):
        assert reason_problem(b"Fine" + bytes([byte]) + b"Thanks") is (byte not in allowed), byte


@pytest.mark.parametrize("reason", [b"OK", b"Not Found", b"Partial Content", b"Gateway Timeout", b""])
def test_registered_and_empty_reasons_are_clean(reason):
    assert reason_problem(reason) is False


@pytest.mark.parametrize(
    ("field", "framing", "keep_alive"),
    [
        (b"Content-Length: 2 \t", FRAMING_LENGTH, True),
        (b"Transfer-Encoding: chunked  ", FRAMING_CHUNKED, True),
    ],
)
def test_trailing_whitespace_is_not_part_of_a_framing_field_rfc9110_5_5(field, framing, keep_alive):
    body = b"hi" if framing == FRAMING_LENGTH else chunked(b"hi")
    exchange = parse_response(b"GET", response(b"HTTP/1.1 200 OK", field, body=body))
    assert exchange.events[0].framing == framing
    assert body_of(exchange.events) == b"hi"
    assert exchange.reusable is keep_alive


@pytest.mark.parametrize("value", [b"chunked\t", b"chunked \t", b"Chunked\t "])
def test_the_framing_reported_is_the_framing_used_for_a_tab_after_chunked(value):
    """The head must not say chunked while llhttp reads the body another way
    (two parsers disagreeing on framing is how smuggling starts): the chunked
    body is decoded, or the response is refused.  Never raw chunk framing."""
    data = response(b"HTTP/1.1 200 OK", b"Transfer-Encoding: " + value, body=chunked(b"hi"))
    exchange = parse_response(b"GET", data)
    if kinds(exchange.events) == ["failed"]:
        assert issubclass(exchange.events[0].problem.kind, OriginProtocolError)
    else:
        assert kinds(exchange.events) == ["head", "body", "end"]
        assert body_of(exchange.events) == b"hi"


def test_trailing_whitespace_is_not_part_of_a_connection_option_rfc9110_5_5():
    exchange = parse_response(b"GET", response(b"HTTP/1.1 200 OK", b"Connection: close \t", b"Content-Length: 0"))
    assert exchange.events[0].keep_alive is False


# --- Responses without a body (RFC 9110 §6.4.1) -------------------------------------


def test_head_response_with_content_length_has_no_body_rfc9110_9_3_2():
    exchange = parse_response(b"HEAD", response(b"HTTP/1.1 200 OK", b"Content-Length: 1234"))
    assert kinds(exchange.events) == ["head", "end"]
    assert exchange.events[0].framing == FRAMING_NONE
    assert exchange.events[0].get(b"content-length") == b"1234"
    assert exchange.reusable is True


def test_head_response_with_chunked_has_no_body():
    exchange = parse_response(b"HEAD", response(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked"))
    assert kinds(exchange.events) == ["head", "end"]
    assert exchange.reusable is True


def test_bytes_after_a_head_response_make_the_connection_unusable():
    exchange = parse_response(b"HEAD", response(b"HTTP/1.1 200 OK", b"Content-Length: 5", body=b"hello"))
    assert kinds(exchange.events) == ["head", "end"]
    assert exchange.reusable is False


def test_head_response_with_connection_close_is_not_reusable():
    exchange = parse_response(b"HEAD", response(b"HTTP/1.1 200 OK", b"Connection: close", b"Content-Length: 5"))
    assert kinds(exchange.events) == ["head", "end"]
    assert exchange.reusable is False


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
def test_204_and_304_have_no_body_even_with_content_length(status):
    exchange = parse_response(b"GET", response(b"HTTP/1.1 " + status, b"Content-Length: 5"))
    assert kinds(exchange.events) == ["head", "end"]
    assert exchange.events[0].framing == FRAMING_NONE
    assert exchange.events[0].content_length == -1
    assert exchange.reusable is True


# --- Interim responses (RFC 9110 §15.2) ----------------------------------------------


@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
@pytest.mark.parametrize(
    "interim",
    [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"],
    ids=["100", "103"],
)
def test_interim_responses_are_dropped(method, interim):
    final = response(b"HTTP/1.1 200 OK", b"Content-Length: 2", body=b"" if method == b"HEAD" else b"hi")
    exchange = parse_response(method, interim + final)
    assert kinds(exchange.events)[0] == "head"
    assert exchange.events[0].status == 200
    assert exchange.events[0].get(b"link") is None  # 103's fields are not the final head's
    assert exchange.events[-1] == END_OF_MESSAGE
    assert exchange.reusable is True


def test_several_interim_responses_are_dropped():
    interims = b"HTTP/1.1 100 Continue\r\n\r\n" + b"HTTP/1.1 102 Processing\r\n\r\n" * 3
    exchange = parse_response(b"GET", interims + OK_EMPTY)
    assert kinds(exchange.events) == ["head", "end"]
    assert exchange.events[0].status == 200


def test_interim_responses_in_separate_reads_do_not_add_up_to_a_large_head():
    """RFC 9110 §15.2: a client MUST be able to parse one or more 1xx
    responses.  An origin sending 102 Processing now and then during a long
    request must not trip the head size limit, whose subject is one head."""
    parser = response_parser(max_head_size=100)
    parser.start(b"POST")
    for _ in range(10):
        assert parser.feed(b"HTTP/1.1 102 Processing\r\n\r\n") == []
    events = normalise(parser.feed(OK_EMPTY))
    assert kinds(events) == ["head", "end"]


@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ],
    ids=["with Upgrade", "bare"],
)
def test_unsolicited_101_is_a_protocol_error_rfc9110_15_2_2(method, data):
    failed_with(parse_response(method, data), OriginProtocolError)


# --- Connection reuse ----------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [b"HTTP/1.1 200 OK\r\n\r\n", b"\r\n", b"\n", b"\r", b"x"],
    ids=["a second response", "a stray CRLF", "a stray LF", "a stray CR", "one byte"],
)
@pytest.mark.parametrize(
    "data",
    [
        response(b"HTTP/1.1 200 OK", b"Content-Length: 2", body=b"hi"),
        response(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked", body=chunked(b"hi")),
        response(b"HTTP/1.1 204 No Content"),
    ],
    ids=["content-length", "chunked", "204"],
)
def test_bytes_after_a_complete_response_make_it_unusable_without_events(data, extra):
    if extra in (b"\r\n", b"\n", b"\r") and b"chunked" in data:
        pytest.skip("documented: after a chunked body a stray CRLF is tolerated (module note)")
    alone = parse_response(b"GET", data)
    exchange = parse_response(b"GET", data + extra)
    assert exchange.events == alone.events
    assert exchange.reusable is False


@pytest.mark.parametrize("body", [b"hi\r\n", b"hi\n", b"hi\r", b"\r\n"])
def test_a_body_ending_in_cr_or_lf_with_nothing_after_it_stays_reusable(body):
    # Such a read is searched for where its head ends (stray CR and LF are
    # what llhttp skips silently); the body's own line ends are not strays.
    data = response(b"HTTP/1.1 200 OK", b"Content-Length: %d" % len(body), body=body)
    exchange = parse_response(b"GET", data)
    assert body_of(exchange.events) == body
    assert exchange.reusable is True
    assert parse_response(b"GET", data + b"\n").reusable is False


def test_bytes_when_no_request_is_outstanding_make_it_unusable():
    parser = response_parser()
    assert parser.feed(OK_EMPTY) == []
    assert parser.reusable is False
    assert parser.bytes_received == 0


def test_bytes_between_exchanges_make_it_unusable():
    parser = response_parser()
    parser.start(b"GET")
    parser.feed(OK_EMPTY)
    assert parser.reusable is True
    assert parser.feed(b"late") == []
    assert parser.reusable is False


def test_a_reusable_parser_serves_the_next_exchange():
    parser = response_parser()
    for body in (b"one", b"second"):
        parser.start(b"GET")
        events = normalise(parser.feed(response(b"HTTP/1.1 200 OK", b"Content-Length: %d" % len(body), body=body)))
        assert body_of(events) == body
        assert parser.reusable is True


@pytest.mark.parametrize(
    ("version", "connection", "reusable"),
    [
        (b"1.1", None, True),  # RFC 9112 §9.3
        (b"1.1", b"close", False),
        (b"1.1", b"Keep-Alive, Close", False),
        (b"1.0", None, False),
        (b"1.0", b"keep-alive", True),
        (b"1.0", b"Keep-Alive", True),
        (b"1.0", b"keep-alive, close", False),  # RFC 9112 §9.3: "close" is checked first
    ],
)
def test_keep_alive_rfc9112_9_3(version, connection, reusable):
    fields = [b"Content-Length: 0"] + ([b"Connection: " + connection] if connection else [])
    exchange = parse_response(b"GET", response(b"HTTP/" + version + b" 200 OK", *fields))
    assert exchange.events[0].keep_alive is reusable
    assert exchange.reusable is reusable


@pytest.mark.parametrize(
    ("data", "version"),
    [
        (response(b"HTTP/1.1 200 OK", b"Content-Length: 0"), b"1.1"),
        (response(b"HTTP/1.0 200 OK", b"Content-Length: 0"), b"1.0"),
        (response(b"HTTP/1.0 200 OK", b"Content-Length: 0", b"Connection: keep-alive"), b"1.0"),
        # The first bytes give the version only for the exchange's first
        # message: after a 1xx of another version, llhttp is asked.
        (response(b"HTTP/1.1 100 Continue") + response(b"HTTP/1.0 200 OK", b"Content-Length: 0"), b"1.0"),
        # (llhttp reads an HTTP/1.0 1xx without keep-alive as the connection's last message.)
        (response(b"HTTP/1.0 103 Early Hints", b"Connection: keep-alive") + response(b"HTTP/1.1 200 OK", b"Content-Length: 0"), b"1.1"),
    ],
    ids=["1.1", "1.0", "1.0 keep-alive", "1.1 interim, 1.0 final", "1.0 interim, 1.1 final"],
)
def test_the_version_is_the_final_responses(data, version):
    # parse_response also splits the bytes at every position, so the version
    # read from the status line's first bytes and the one asked of llhttp
    # (a first read too short to hold "HTTP/1.x ") are both checked.
    exchange = parse_response(b"GET", data)
    assert exchange.events[0].version == version


def test_a_response_after_a_reused_exchange_has_its_own_version():
    parser = response_parser()
    for version in (b"1.1", b"1.0"):
        parser.start(b"GET")
        events = normalise(parser.feed(response(b"HTTP/" + version + b" 200 OK", b"Content-Length: 0", b"Connection: keep-alive")))
        assert events[0].version == version


@pytest.mark.parametrize("status_line", [b"HTTP/2.0 200 OK", b"HTTP/0.9 200 OK", b"HTTP/1.2 200 OK"])
def test_other_versions_are_refused(status_line):
    failed_with(parse_response(b"GET", response(status_line, b"Content-Length: 0")), OriginProtocolError)


def test_start_during_an_exchange_raises():
    parser = response_parser()
    parser.start(b"GET")
    with pytest.raises(RuntimeError):
        parser.start(b"GET")
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe")
    with pytest.raises(RuntimeError):
        parser.start(b"GET")


def test_start_after_an_unusable_exchange_raises():
    parser = response_parser()
    parser.start(b"GET")
    parser.feed(response(b"HTTP/1.1 200 OK", b"Connection: close", b"Content-Length: 0"))
    with pytest.raises(RuntimeError):
        parser.start(b"GET")


def test_repr_shows_state_and_reusability():
    parser = response_parser()
    assert repr(parser) == "<ResponseParser idle reusable=True>"
    parser.start(b"GET")
    assert repr(parser) == "<ResponseParser awaiting-head reusable=True>"
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe")
    assert repr(parser) == "<ResponseParser in-body reusable=True>"
    parser.feed(b"llo")
    assert repr(parser) == "<ResponseParser done reusable=True>"


# --- bytes_received (0 means a retry is safe) ------------------------------------------


def test_bytes_received_counts_every_byte_of_the_exchange():
    data = b"HTTP/1.1 100 Continue\r\n\r\n" + response(b"HTTP/1.1 200 OK", b"Content-Length: 3", body=b"abc")
    assert parse_response(b"GET", data).bytes_received == len(data)


def test_bytes_received_starts_at_zero_for_each_exchange():
    parser = response_parser()
    parser.start(b"GET")
    parser.feed(OK_EMPTY)
    parser.start(b"GET")
    assert parser.bytes_received == 0


def test_origin_closing_without_a_byte_leaves_bytes_received_zero():
    """0 is what tells the shell that retrying the request is safe."""
    parser = response_parser()
    parser.start(b"POST")
    assert kinds(normalise(parser.feed_eof())) == ["failed"]
    assert parser.bytes_received == 0


# --- The origin closes -------------------------------------------------------------


@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
@pytest.mark.parametrize("data", [b"", b"HTTP/1.1 200 OK\r\nContent-Le"], ids=["nothing", "half a head"])
def test_eof_before_a_complete_head_is_origin_closed(method, data):
    exchange = parse_response(method, data, eof=True)
    failed_with(exchange, OriginClosed)
    assert kinds(exchange.events) == ["failed"]


@pytest.mark.parametrize(
    "data",
    [
        response(b"HTTP/1.1 200 OK", b"Content-Length: 10", body=b"12345"),
        response(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked", body=b"5\r\nhello\r\n"),
        response(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked", body=b"5\r\nhel"),
    ],
    ids=["content-length", "chunked between chunks", "chunked inside a chunk"],
)
def test_eof_in_the_middle_of_the_body_is_response_incomplete(data):
    exchange = parse_response(b"GET", data, eof=True)
    assert kinds(exchange.events)[0] == "head"
    failed_with(exchange, OriginResponseIncomplete)


def test_eof_after_a_complete_response_changes_nothing_but_reuse():
    parser = response_parser()
    parser.start(b"GET")
    parser.feed(OK_EMPTY)
    assert parser.feed_eof() == []
    assert parser.reusable is False


# --- Malformed responses ---------------------------------------------------------------

MALFORMED = {
    # RFC 9112 §6.1, §6.3: ambiguous framing is never guessed.
    "CL then TE": response(b"HTTP/1.1 200 OK", b"Content-Length: 5", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
    "TE then CL": response(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked", b"Content-Length: 5", body=b"0\r\n\r\n"),
    "two CL": response(b"HTTP/1.1 200 OK", b"Content-Length: 1", b"Content-Length: 2", body=b"xy"),
    "CL not a number": response(b"HTTP/1.1 200 OK", b"Content-Length: 1x", body=b"x"),
    "TE gzip": response(b"HTTP/1.1 200 OK", b"Transfer-Encoding: gzip", body=b"x"),
    "TE gzip, chunked": response(b"HTTP/1.1 200 OK", b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"),
    "TE in HTTP/1.0": response(b"HTTP/1.0 200 OK", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
    "HTTP/2.0 status line": response(b"HTTP/2.0 200 OK", b"Content-Length: 0"),
    "HTTP/0.9-style body": b"<html>hello</html>",
    "status not a number": response(b"HTTP/1.1 2x0 OK", b"Content-Length: 0"),
    "obs-fold": response(b"HTTP/1.1 200 OK", b"X: a", b" b", b"Content-Length: 0"),
    "NUL in value": response(b"HTTP/1.1 200 OK", b"X: a\x00b", b"Content-Length: 0"),
    "bare LF": b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
    "NUL in reason": response(b"HTTP/1.1 200 O\x00K", b"Content-Length: 0"),
    "VT in reason": response(b"HTTP/1.1 200 O\x0bK", b"Content-Length: 0"),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_head_is_a_protocol_error(data):
    exchange = parse_response(b"GET", data)
    failed_with(exchange, OriginProtocolError)
    assert kinds(exchange.events) == ["failed"]


@pytest.mark.parametrize("name", ["CL then TE", "two CL", "HTTP/2.0 status line", "NUL in value", "VT in reason"])
def test_malformed_head_response_to_head_is_a_protocol_error(name):
    failed_with(parse_response(b"HEAD", MALFORMED[name]), OriginProtocolError)


def test_broken_chunk_after_the_head_is_response_incomplete():
    exchange = parse_response(b"GET", response(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked", body=b"zz\r\n"))
    assert kinds(exchange.events) == ["head", "failed"]
    failed_with(exchange, OriginResponseIncomplete)


def test_nothing_is_reported_after_a_failure():
    parser = response_parser()
    parser.start(b"GET")
    events = normalise(parser.feed(MALFORMED["CL then TE"]))
    assert kinds(events) == ["failed"]
    assert parser.feed(OK_EMPTY) == []
    assert parser.feed_eof() == []


# --- Head size (OriginResponseTooLarge) --------------------------------------------------


@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_too_many_fields_is_too_large(method):
    fields = [b"X-%d: v" % i for i in range(11)]
    failed_with(parse_response(method, response(b"HTTP/1.1 200 OK", *fields), max_header_count=10), OriginResponseTooLarge)


@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_head_over_max_head_size_is_too_large(method):
    data = response(b"HTTP/1.1 200 OK", b"X-Big: " + b"v" * 300, b"Content-Length: 0")
    failed_with(parse_response(method, data, max_head_size=200), OriginResponseTooLarge)


@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_one_huge_field_fed_in_pieces_fails_before_it_completes(method):
    parser = response_parser(max_head_size=8192)
    parser.start(method)
    assert parser.feed(b"HTTP/1.1 200 OK\r\nX-Big: ") == []
    piece = b"a" * 1024
    for count in range(1, 10 * 1024 + 1):
        events = normalise(parser.feed(piece))
        if events:
            break
    # The memory guard: HEAD_GUARD_FACTOR times the limit, plus one read.
    assert count <= 8192 * HEAD_GUARD_FACTOR // len(piece) + 2, f"failed only after {count} KiB"
    assert events[0].problem == Problem(OriginResponseTooLarge, 502)
    assert parser.reusable is False


@pytest.mark.parametrize(
    "over",
    [-10, 0, 2, 3, 10, 15, 30],
    ids=lambda n: f"raw head {n:+d} bytes around the limit",
)
def test_head_size_verdict_does_not_depend_on_how_the_head_is_fed(over):
    """parse_response asserts the same outcome whole, byte by byte and split."""
    limit = 200
    status_line = b"HTTP/1.1 200 OK\r\n"
    pad = limit + over - len(status_line) - len(b"Content-Length: 0\r\n") - len(b"X: \r\n") - len(b"\r\n")
    data = status_line + b"Content-Length: 0\r\nX: " + b"a" * pad + b"\r\n\r\n"
    assert len(data) == limit + over
    parse_response(b"GET", data, max_head_size=limit)
