"""Field rules and serialisation (proxy/core/http1/fields.py, serialize.py).

Serialised messages are read back with the proxy's own strict parsers: what
the proxy writes must be what it would itself accept.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.core.http1.fields import (
    connection_tokens,
    end_to_end,
    host_without_port,
    http_date,
    is_valid_host,
    proxy_status,
    sf_string,
)
from proxy.core.http1.messages import FRAMING_CHUNKED, FRAMING_LENGTH
from proxy.core.http1.serialize import (
    UNCOPIED_PIECE,
    BodyEncoder,
    append_chunk,
    chunk,
    chunk_pieces,
    coalesce,
    last_chunk,
    reason_phrase,
    request_head,
    response_head,
)
from tests.core.feeding import body_of, feed_response, kinds, parse_requests

REPO = Path(__file__).resolve().parents[2]

# --- Host syntax (RFC 9110 §7.2, RFC 3986 §3.2.2) --------------------------------------------


@pytest.mark.parametrize(
    "value",
    [b"example.com", b"EXAMPLE.com:8080", b"127.0.0.1", b"[::1]", b"[2001:db8::1]:443", b"a-b_c~d", b"%41.example", b""],
)
def test_valid_hosts(value):
    assert is_valid_host(value)


@pytest.mark.parametrize(
    "value",
    [
        b"user@example.com",  # userinfo
        b"example.com/",
        b"example.com?",
        b"example.com#",
        b"exa mple.com",
        b"example.com:80:80",
        b"example.com:123456",
        b"[::1",
        b"[::1]x",
        b"example.com\r\n",
        b"\xc3\xa9.example",
    ],
)
def test_invalid_hosts(value):
    assert not is_valid_host(value)


@pytest.mark.parametrize(
    ("authority", "host"),
    [
        (b"Example.COM:8080", b"example.com"),
        (b"example.com", b"example.com"),
        (b"[::1]:8080", b"[::1]"),
        (b"[::1]", b"[::1]"),
        (b"127.0.0.1:80", b"127.0.0.1"),
    ],
)
def test_host_without_port(authority, host):
    assert host_without_port(authority) == host


# --- Connection and hop-by-hop fields (RFC 9110 §7.6.1) --------------------------------------


def test_connection_tokens_are_lower_cased_across_fields():
    headers = [(b"Connection", b"Keep-Alive, X-A"), (b"connection", b" close ,,"), (b"X-A", b"1")]
    assert connection_tokens(headers) == {b"keep-alive", b"x-a", b"close"}


def test_end_to_end_drops_hop_by_hop_and_connection_named_fields_keeping_order():
    headers = [
        (b"A", b"1"),
        (b"Connection", b"x-named"),
        (b"X-Named", b"2"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Length", b"3"),
        (b"Upgrade", b"h2c"),
        (b"B", b"4"),
    ]
    assert end_to_end(headers) == [(b"A", b"1"), (b"B", b"4")]


# --- Date (RFC 9110 §5.6.7) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "date"),
    [
        (784111777, b"Sun, 06 Nov 1994 08:49:37 GMT"),  # the example of RFC 9110 §5.6.7
        (784111777.9, b"Sun, 06 Nov 1994 08:49:37 GMT"),
        (0, b"Thu, 01 Jan 1970 00:00:00 GMT"),
    ],
)
def test_http_date_is_an_imf_fixdate(now, date):
    assert http_date(now) == date


def test_http_date_of_the_epoch_in_a_fresh_process():
    """An injected clock may well start at 0: the per-second cache must not
    mistake its initial state for a cached second 0."""
    code = "from proxy.core.http1.fields import http_date; print(http_date(0).decode())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == "Thu, 01 Jan 1970 00:00:00 GMT"


def test_http_date_cache_follows_the_clock():
    assert http_date(784111777) == b"Sun, 06 Nov 1994 08:49:37 GMT"
    assert http_date(784111778) == b"Sun, 06 Nov 1994 08:49:38 GMT"
    assert http_date(784111777) == b"Sun, 06 Nov 1994 08:49:37 GMT"


# --- Proxy-Status (RFC 9209, RFC 8941 sf-string) ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("plain", b'"plain"'),
        ('a "quote"', b'"a \\"quote\\""'),
        ("back\\slash", b'"back\\\\slash"'),
        ("tab\tand\nnewline", b'"tab?and?newline"'),
        ("caf\u00e9", b'"caf?"'),
        ("", b'""'),
    ],
)
def test_sf_string(text, encoded):
    assert sf_string(text) == encoded


def test_proxy_status_without_details():
    assert proxy_status(b"muxproxy", "connection_refused") == b"muxproxy; error=connection_refused"


def test_proxy_status_with_details():
    assert proxy_status(b"muxproxy", "http_request_error", 'bad "x"') == (
        b'muxproxy; error=http_request_error; details="bad \\"x\\""'
    )


# --- Serialising ---------------------------------------------------------------------------------


def test_request_head_parses_back():
    data = request_head(b"POST", b"/a?b", [(b"Host", b"example.com"), (b"Content-Length", b"2")]) + b"hi"
    events = parse_requests(data)
    assert kinds(events) == ["head", "body", "end"]
    head = events[0]
    assert (head.method, head.target, head.version, head.framing) == (b"POST", b"/a?b", b"1.1", FRAMING_LENGTH)
    assert body_of(events) == b"hi"


def test_chunked_body_encoding_parses_back_rfc9112_7_1():
    encoder = BodyEncoder(chunked=True)
    body = encoder.encode(b"hello") + encoder.encode(b"") + encoder.encode(b" world") + encoder.end([(b"X-T", b"1")])
    data = request_head(b"POST", b"/", [(b"Host", b"h"), (b"Transfer-Encoding", b"chunked")]) + body
    events = parse_requests(data)
    assert events[0].framing == FRAMING_CHUNKED
    assert body_of(events) == b"hello world"
    assert events[-1].trailers == [(b"X-T", b"1")]


def test_empty_data_never_makes_a_last_chunk():
    assert BodyEncoder(chunked=True).encode(b"") == b""


def test_raw_body_encoding_passes_data_through():
    encoder = BodyEncoder(chunked=False)
    assert encoder.encode(b"abc") == b"abc"
    assert encoder.end() == b""


def test_chunk_and_last_chunk_bytes():
    assert chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert last_chunk() == b"0\r\n\r\n"
    assert last_chunk([(b"A", b"1")]) == b"0\r\nA: 1\r\n\r\n"


def test_coalesce_joins_runs_of_small_pieces_and_passes_large_ones_uncopied():
    large, larger = b"L" * UNCOPIED_PIECE, b"M" * (UNCOPIED_PIECE + 1)
    pieces = [b"a", b"", b"bc", large, b"d", larger, b"", b"e", b"f" * (UNCOPIED_PIECE - 1)]
    out = coalesce(pieces)
    assert b"".join(out) == b"".join(pieces)
    assert out == [b"abc", large, b"d", larger, b"e" + b"f" * (UNCOPIED_PIECE - 1)]
    assert out[1] is large and out[3] is larger
    assert coalesce([b"", b""]) == []
    assert coalesce([large]) == [large]


def test_chunk_pieces_frame_the_pieces_as_one_chunk_rfc9112_7_1():
    data = [b"x" * 20, b"y" * UNCOPIED_PIECE]
    framed = chunk_pieces(data, 20 + UNCOPIED_PIECE)
    assert b"".join(framed) == chunk(b"".join(data))
    assert framed[2] is data[1]
    assert chunk_pieces([], 0) == [] and chunk_pieces([b""], 0) == []  # never a last chunk


@pytest.mark.parametrize("size", [0, 1, UNCOPIED_PIECE - 1, UNCOPIED_PIECE, 5 * UNCOPIED_PIECE])
def test_append_chunk_is_chunk_and_leaves_large_data_uncopied(size):
    data = b"z" * size
    out = [b"before"]
    append_chunk(out, data)
    assert b"".join(out[1:]) == (chunk(data) if size else b"")
    if size >= UNCOPIED_PIECE:
        assert out[2] is data


@pytest.mark.parametrize("chunked", [True, False])
def test_encode_pieces_is_encode_of_the_joined_pieces(chunked):
    encoder = BodyEncoder(chunked=chunked)
    pieces = [b"ab", b"c" * UNCOPIED_PIECE]
    assert b"".join(encoder.encode_pieces(pieces, 2 + UNCOPIED_PIECE)) == encoder.encode(b"".join(pieces))
    assert encoder.encode_pieces([], 0) == []


@pytest.mark.parametrize(("status", "reason"), [(200, b"OK"), (404, b"Not Found"), (599, b"Unknown")])
def test_response_head_uses_the_standard_reason(status, reason):
    assert reason_phrase(status) == reason
    assert response_head(status, b"", []).startswith(b"HTTP/1.1 %d %b\r\n" % (status, reason))


def test_response_head_parses_back():
    data = response_head(201, b"Made", [(b"Content-Length", b"2"), (b"X-A", b"1")]) + b"hi"
    exchange = feed_response(b"POST", [data])
    head = exchange.events[0]
    assert (head.status, head.reason, head.headers) == (201, b"Made", [(b"Content-Length", b"2"), (b"X-A", b"1")])
    assert body_of(exchange.events) == b"hi"
    assert exchange.reusable is True


def test_response_head_for_http10():
    assert response_head(200, b"OK", [], version=b"1.0") == b"HTTP/1.0 200 OK\r\n\r\n"
