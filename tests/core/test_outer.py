"""The outer request and response of a mux stream (proxy/core/mux/outer.py,
docs/protocol.md §1, §2, §4, §9)."""

from __future__ import annotations

import pytest

from proxy.core.http1.messages import FRAMING_CHUNKED, FRAMING_LENGTH, FRAMING_NONE, RequestHead
from proxy.core.mux.outer import accepts_gzip, is_gzip_request, is_mux_target, outer_request_problem, outer_response_head
from proxy.errors import LengthRequired, MethodNotAllowed, UnsupportedMediaType
from tests.core.feeding import parse_requests

MUX_PATH = b"/_mux"


def outer(
    *headers: tuple[bytes, bytes],
    method: bytes = b"POST",
    target: bytes = MUX_PATH,
    framing: int = FRAMING_CHUNKED,
    version: bytes = b"1.1",
) -> RequestHead:
    return RequestHead(
        method=method,
        target=target,
        version=version,
        headers=list(headers),
        framing=framing,
        content_length=10 if framing == FRAMING_LENGTH else -1,
        keep_alive=True,
        expect_continue=False,
        host=b"example.com",
    )


MUX_TYPE = (b"Content-Type", b"application/http")


# --- §1: only the exact path is the endpoint ---------------------------------------------


@pytest.mark.parametrize(
    ("target", "is_mux"),
    [
        (b"/_mux", True),
        (b"/_mux?client=42", True),  # a query string is allowed
        (b"/_mux?", True),
        (b"/_mux/x", False),  # an ordinary path, routed like any other
        (b"/_mux/", False),
        (b"/_muxx", False),
        (b"/_mu", False),
        (b"/", False),
        (b"/x/_mux", False),
        (b"*", False),
        (b"http://example.com/_mux", True),  # absolute-form (RFC 9112 §3.2.2)
        (b"https://example.com:8443/_mux?client=1", True),
        (b"http://example.com/_mux/x", False),
        (b"http://example.com", False),
        (b"http://example.com/", False),
    ],
)
def test_is_mux_target(target, is_mux):
    assert is_mux_target(outer(target=target), MUX_PATH) is is_mux


def test_mux_path_in_the_query_of_an_absolute_target_is_not_the_endpoint():
    """RFC 3986 §3.3: the path of "http://example.com?x=/_mux" is empty (so
    "/"), and "/_mux" is in its query.  The request parser and router read
    it that way; the endpoint check must not disagree with them."""
    events = parse_requests(
        b"POST http://example.com?x=/_mux HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n"
    )
    head = events[0]
    assert head.rejection is None
    assert is_mux_target(head, MUX_PATH) is False


# --- §2: the outer request ----------------------------------------------------------------


def test_valid_outer_request_has_no_problem():
    assert outer_request_problem(outer(MUX_TYPE)) is None


@pytest.mark.parametrize("method", [b"GET", b"PUT", b"HEAD", b"OPTIONS"])
def test_method_other_than_post_is_405(method):
    problem = outer_request_problem(outer(MUX_TYPE, method=method))
    assert isinstance(problem, MethodNotAllowed)
    assert problem.status == 405


@pytest.mark.parametrize(
    "content_type",
    [b"application/http", b"message/http", b"Application/HTTP", b"application/http; msgtype=request", b" application/http ;x=y"],
)
def test_accepted_media_types(content_type):
    assert outer_request_problem(outer((b"Content-Type", content_type))) is None


@pytest.mark.parametrize("content_type", [None, b"text/plain", b"application/json", b"application/https", b"http", b""])
def test_other_media_type_is_415(content_type):
    headers = [] if content_type is None else [(b"Content-Type", content_type)]
    problem = outer_request_problem(outer(*headers))
    assert isinstance(problem, UnsupportedMediaType)
    assert problem.status == 415


def test_method_is_checked_before_media_type():
    assert isinstance(outer_request_problem(outer(method=b"GET")), MethodNotAllowed)


@pytest.mark.parametrize("framing", [FRAMING_CHUNKED, FRAMING_LENGTH])
def test_chunked_or_content_length_framing_opens_a_stream(framing):
    assert outer_request_problem(outer(MUX_TYPE, framing=framing)) is None


def test_no_body_framing_is_411():
    problem = outer_request_problem(outer(MUX_TYPE, framing=FRAMING_NONE))
    assert isinstance(problem, LengthRequired)
    assert problem.status == 411


@pytest.mark.parametrize("coding", [b"gzip", b"x-gzip", b"GZIP", b"identity", b" gzip "])
def test_accepted_request_content_codings(coding):
    assert outer_request_problem(outer(MUX_TYPE, (b"Content-Encoding", coding))) is None


@pytest.mark.parametrize("coding", [b"br", b"deflate", b"gzip, br", b"compress"])
def test_other_request_content_coding_is_415(coding):
    problem = outer_request_problem(outer(MUX_TYPE, (b"Content-Encoding", coding)))
    assert isinstance(problem, UnsupportedMediaType)
    assert problem.status == 415


@pytest.mark.parametrize(("coding", "gzip"), [(b"gzip", True), (b"X-Gzip", True), (b"identity", False), (None, False)])
def test_is_gzip_request(coding, gzip):
    headers = [] if coding is None else [(b"Content-Encoding", coding)]
    assert is_gzip_request(outer(*headers)) is gzip


# --- §9: Accept-Encoding (RFC 9110 §12.5.3) ------------------------------------------------


@pytest.mark.parametrize(
    ("values", "accepts"),
    [
        ([b"gzip"], True),
        ([b"GZIP"], True),
        ([b"x-gzip"], True),
        ([b"br, gzip"], True),
        ([b"gzip;q=0.5"], True),
        ([b"gzip; Q=0.001"], True),
        ([b"gzip ; q=1.0"], True),
        ([b"*"], True),
        ([b"gzip;q=0"], False),  # q=0 means "not acceptable"
        ([b"gzip;q=0.000"], False),
        ([b"*;q=0"], False),
        ([b"br, deflate"], False),
        ([b"identity"], False),
        ([], False),
        ([b""], False),
        ([b"gzip;q=bogus"], False),
        ([b"br", b"gzip"], True),  # several fields are one list (RFC 9110 §5.3)
    ],
)
def test_accepts_gzip(values, accepts):
    head = outer(*[(b"Accept-Encoding", value) for value in values])
    assert accepts_gzip(head) is accepts


@pytest.mark.parametrize("value", [b"gzip;q=0, *", b"*, gzip;q=0", b"x-gzip;q=0, gzip;q=0, *;q=1"])
def test_explicit_refusal_of_gzip_beats_the_wildcard_rfc9110_12_5_3(value):
    """"*" matches any coding not listed in the field: gzip;q=0 stays refused."""
    assert accepts_gzip(outer((b"Accept-Encoding", value))) is False


# --- §4: the outer response head -------------------------------------------------------------


def head_fields(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    assert data.endswith(b"\r\n\r\n")
    status, *lines = data[:-4].split(b"\r\n")
    return status, [tuple(line.split(b": ", 1)) for line in lines]


def test_outer_response_head_for_http11_is_chunked():
    status, fields = head_fields(outer_response_head(gzip=False, http10=False))
    assert status == b"HTTP/1.1 200 OK"
    names = [name for name, _ in fields]
    assert (b"Content-Type", b"application/http") in fields
    assert (b"Cache-Control", b"no-store") in fields
    assert (b"Vary", b"Accept-Encoding") in fields
    assert (b"Transfer-Encoding", b"chunked") in fields
    assert b"Content-Encoding" not in names
    assert b"Connection" not in names
    assert b"Content-Length" not in names
    assert b"Date" in names


def test_outer_response_head_for_http10_ends_by_closing():
    _, fields = head_fields(outer_response_head(gzip=False, http10=True))
    assert (b"Connection", b"close") in fields
    assert b"Transfer-Encoding" not in [name for name, _ in fields]


@pytest.mark.parametrize("http10", [False, True])
def test_outer_response_head_with_gzip(http10):
    _, fields = head_fields(outer_response_head(gzip=True, http10=http10))
    assert (b"Content-Encoding", b"gzip") in fields
    assert (b"Vary", b"Accept-Encoding") in fields
