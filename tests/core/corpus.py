"""Hand-written tricky HTTP/1.x messages, shared by the differential tests,
the hypothesis fuzz tests (as seeds for mutation) and fuzz/fuzz_parsers.py
(as the atheris seed corpus).

Strategy: each entry is one byte stream with a name that says what it
probes; most come from request-smuggling and response-splitting write-ups
(CL.TE / TE.CL, duplicate or malformed Content-Length, Transfer-Encoding
spelled so that two parsers read it differently, obs-fold, bare CR/LF, NUL,
chunk-size tricks, leading empty lines, pipelining).  Nothing here says what
the right answer is: the differential test asks h11, and the policy table in
tests/core/test_differential.py says which differences are acceptable.

Some streams hold several messages back to back: where each one ends is the
point of the comparison.

The second half holds the generated inputs (hypothesis strategies built on
the generators of tests/core/test_properties.py, with more mutations) and
the two hypothesis profiles every fuzz test uses:

- "muxproxy-ci", the default: `CI_EXAMPLES` examples per test, derandomized,
  so the suite stays fast and gives the same verdict on every run;
- "muxproxy-deep", when MUXPROXY_FUZZ_EXAMPLES=N is set: N examples per test,
  randomized (a new search each run), e.g.
      MUXPROXY_FUZZ_EXAMPLES=20000 python -m pytest tests/core/test_fuzz.py tests/core/test_differential.py
  (timings in tests/core/test_fuzz.py).

They are not called "ci" and "deep": hypothesis registers a "ci" profile of
its own and loads it when it detects a CI run, and re-registering the active
profile reloads it, which would change the settings of every hypothesis test
in the suite.  The profiles are applied as decorators (`@FUZZ`), never loaded
globally, for the same reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.core.test_properties import INTERESTING, mutate, requests, responses

# --- Requests ------------------------------------------------------------------------

_GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
_NEXT = b"GET /next HTTP/1.1\r\nHost: example.com\r\n\r\n"


def _post(fields: bytes, body: bytes, version: bytes = b"1.1") -> bytes:
    return b"POST /p HTTP/" + version + b"\r\nHost: example.com\r\n" + fields + b"\r\n" + body


_CHUNKED = b"Transfer-Encoding: chunked\r\n"

#: name -> byte stream of one or more requests.
REQUESTS: dict[str, bytes] = {
    # Plain, for a baseline.
    "get": _GET,
    "get-http10-no-host": b"GET / HTTP/1.0\r\n\r\n",
    "post-length": _post(b"Content-Length: 5\r\n", b"hello"),
    "post-chunked": _post(_CHUNKED, b"5\r\nhello\r\n0\r\n\r\n"),
    "post-chunked-trailers": _post(_CHUNKED, b"5\r\nhello\r\n0\r\nX-Sum: 1\r\nX-Other: two words\r\n\r\n"),
    "get-with-length-body": b"GET / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\nabc",
    "post-length-zero-then-get": _post(b"Content-Length: 0\r\n", b"") + _NEXT,
    "incomplete-body": _post(b"Content-Length: 10\r\n", b"hello"),
    # CL and TE together, both orders (RFC 9112 §6.3 item 3).
    "cl-then-te": _post(b"Content-Length: 4\r\n" + _CHUNKED, b"5\r\nhello\r\n0\r\n\r\n") + _NEXT,
    "te-then-cl": _post(_CHUNKED + b"Content-Length: 4\r\n", b"5\r\nhello\r\n0\r\n\r\n") + _NEXT,
    "cl-te-smuggled-get": _post(b"Content-Length: 6\r\n" + _CHUNKED, b"0\r\n\r\nG") + _NEXT,
    "te-cl-smuggled-get": _post(_CHUNKED + b"Content-Length: 3\r\n", b"8\r\nSMUGGLED\r\n0\r\n\r\n") + _NEXT,
    # Content-Length spelled many ways (RFC 9110 §8.6: 1*DIGIT).
    "two-cl-same": _post(b"Content-Length: 3\r\nContent-Length: 3\r\n", b"abc") + _NEXT,
    "two-cl-differ": _post(b"Content-Length: 3\r\nContent-Length: 5\r\n", b"abcde") + _NEXT,
    "cl-list-same": _post(b"Content-Length: 3, 3\r\n", b"abc") + _NEXT,
    "cl-list-differ": _post(b"Content-Length: 3, 5\r\n", b"abcde") + _NEXT,
    "cl-leading-zeros": _post(b"Content-Length: 0003\r\n", b"abc") + _NEXT,
    "cl-plus": _post(b"Content-Length: +3\r\n", b"abc") + _NEXT,
    "cl-minus": _post(b"Content-Length: -3\r\n", b"abc") + _NEXT,
    "cl-hex": _post(b"Content-Length: 0x3\r\n", b"abc") + _NEXT,
    "cl-inner-space": _post(b"Content-Length: 1 2\r\n", b"abcdefghijkl") + _NEXT,
    "cl-leading-space": _post(b"Content-Length:    3\r\n", b"abc") + _NEXT,
    "cl-trailing-space": _post(b"Content-Length: 3  \r\n", b"abc") + _NEXT,
    "cl-trailing-tab": _post(b"Content-Length: 3\t\r\n", b"abc") + _NEXT,
    "cl-empty": _post(b"Content-Length:\r\n", b"") + _NEXT,
    "cl-overflow": _post(b"Content-Length: 99999999999999999999999\r\n", b"abc"),
    "cl-2-pow-64": _post(b"Content-Length: 18446744073709551616\r\n", b"abc"),
    "cl-space-before-colon": _post(b"Content-Length : 3\r\n", b"abc") + _NEXT,
    # Transfer-Encoding spelled many ways (RFC 9112 §6.1, §7).
    "te-trailing-space": _post(b"Transfer-Encoding: chunked \r\n", b"3\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "te-trailing-tab": _post(b"Transfer-Encoding: chunked\t\r\n", b"3\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "te-leading-tab": _post(b"Transfer-Encoding:\tchunked\r\n", b"3\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "te-uppercase": _post(b"Transfer-Encoding: CHUNKED\r\n", b"3\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "te-chunked-chunked": _post(b"Transfer-Encoding: chunked, chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "te-two-fields": _post(_CHUNKED + _CHUNKED, b"3\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "te-gzip-field-then-chunked-field": _post(b"Transfer-Encoding: gzip\r\n" + _CHUNKED, b"3\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "te-chunked-field-then-gzip-field": _post(_CHUNKED + b"Transfer-Encoding: gzip\r\n", b"3\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "te-gzip-chunked": _post(b"Transfer-Encoding: gzip, chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "te-chunked-gzip": _post(b"Transfer-Encoding: chunked, gzip\r\n", b"3\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "te-identity": _post(b"Transfer-Encoding: identity\r\n", b"abc") + _NEXT,
    "te-xchunked": _post(b"Transfer-Encoding: xchunked\r\n", b"3\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "te-vertical-tab": _post(b"Transfer-Encoding: \x0bchunked\r\n", b"3\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "te-space-before-colon": _post(b"Transfer-Encoding : chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "te-obs-fold": _post(b"Transfer-Encoding:\r\n chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "te-empty": _post(b"Transfer-Encoding:\r\n", b"") + _NEXT,
    "te-in-http10": _post(_CHUNKED, b"3\r\nabc\r\n0\r\n\r\n", b"1.0") + _NEXT,
    "te-cl-in-http10": _post(_CHUNKED + b"Content-Length: 3\r\n", b"3\r\nabc\r\n0\r\n\r\n", b"1.0") + _NEXT,
    # Field syntax (RFC 9112 §5, RFC 9110 §5.5).
    "obs-fold": b"GET / HTTP/1.1\r\nHost: example.com\r\nX-A: one\r\n two\r\n\r\n" + _NEXT,
    "obs-fold-tab": b"GET / HTTP/1.1\r\nHost: example.com\r\nX-A: one\r\n\ttwo\r\n\r\n" + _NEXT,
    "space-before-first-field": b"GET / HTTP/1.1\r\n Host: example.com\r\n\r\n" + _NEXT,
    "name-space-before-colon": b"GET / HTTP/1.1\r\nHost: example.com\r\nX-A : b\r\n\r\n" + _NEXT,
    "name-tab-before-colon": b"GET / HTTP/1.1\r\nHost: example.com\r\nX-A\t: b\r\n\r\n" + _NEXT,
    "name-with-space": b"GET / HTTP/1.1\r\nHost: example.com\r\nX A: b\r\n\r\n" + _NEXT,
    "name-with-colon-in-value": b"GET / HTTP/1.1\r\nHost: example.com\r\nX:Y: b\r\n\r\n" + _NEXT,
    "name-empty": b"GET / HTTP/1.1\r\nHost: example.com\r\n: b\r\n\r\n" + _NEXT,
    "name-no-colon": b"GET / HTTP/1.1\r\nHost: example.com\r\nX-A\r\n\r\n" + _NEXT,
    "name-non-token": b"GET / HTTP/1.1\r\nHost: example.com\r\nX(A): b\r\n\r\n" + _NEXT,
    "value-empty": b"GET / HTTP/1.1\r\nHost: example.com\r\nX-A:\r\n\r\n" + _NEXT,
    "value-trailing-whitespace": b"GET / HTTP/1.1\r\nHost: example.com\r\nX-A: b \t \r\n\r\n" + _NEXT,
    "value-inner-whitespace": b"GET / HTTP/1.1\r\nHost: example.com\r\nX-A: b \t c\r\n\r\n" + _NEXT,
    "value-obs-text": b"GET / HTTP/1.1\r\nHost: example.com\r\nX-A: caf\xe9\r\n\r\n" + _NEXT,
    "value-ctl": b"GET / HTTP/1.1\r\nHost: example.com\r\nX-A: a\x01b\r\n\r\n" + _NEXT,
    "value-del": b"GET / HTTP/1.1\r\nHost: example.com\r\nX-A: a\x7fb\r\n\r\n" + _NEXT,
    "value-nul": b"GET / HTTP/1.1\r\nHost: example.com\r\nX-A: a\x00b\r\n\r\n" + _NEXT,
    "value-bare-cr": b"GET / HTTP/1.1\r\nHost: example.com\r\nX-A: a\rb\r\n\r\n" + _NEXT,
    "value-bare-cr-smuggle": b"GET / HTTP/1.1\r\nHost: example.com\r\nX-A: a\rContent-Length: 5\r\n\r\nhello" + _NEXT,
    "line-bare-lf": b"GET / HTTP/1.1\r\nHost: example.com\nX-A: b\r\n\r\n" + _NEXT,
    "all-bare-lf": b"GET / HTTP/1.1\nHost: example.com\n\n" + _NEXT,
    "head-ends-lf-crlf": b"GET / HTTP/1.1\r\nHost: example.com\n\r\n" + _NEXT,
    "request-line-bare-cr": b"GET / HTTP/1.1\rHost: example.com\r\n\r\n" + _NEXT,
    # Host (RFC 9112 §3.2).
    "no-host": b"GET / HTTP/1.1\r\n\r\n" + _NEXT,
    "two-hosts": b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n" + _NEXT,
    "host-with-userinfo": b"GET / HTTP/1.1\r\nHost: user@example.com\r\n\r\n" + _NEXT,
    "host-with-path": b"GET / HTTP/1.1\r\nHost: example.com/x\r\n\r\n" + _NEXT,
    # Request line (RFC 9112 §3).
    "http09": b"GET /\r\n" + _NEXT,
    "http09-with-empty-line": b"GET /\r\n\r\n" + _NEXT,
    "http12": b"GET / HTTP/1.2\r\nHost: example.com\r\n\r\n" + _NEXT,
    "http20": b"GET / HTTP/2.0\r\nHost: example.com\r\n\r\n" + _NEXT,
    "http-two-digit-minor": b"GET / HTTP/1.10\r\nHost: example.com\r\n\r\n" + _NEXT,
    "http-lowercase": b"GET / http/1.1\r\nHost: example.com\r\n\r\n" + _NEXT,
    "method-lowercase": b"get / HTTP/1.1\r\nHost: example.com\r\n\r\n" + _NEXT,
    "method-unknown": b"FROB / HTTP/1.1\r\nHost: example.com\r\n\r\n" + _NEXT,
    "method-leading-space": b" GET / HTTP/1.1\r\nHost: example.com\r\n\r\n" + _NEXT,
    "two-spaces-after-method": b"GET  / HTTP/1.1\r\nHost: example.com\r\n\r\n" + _NEXT,
    "two-spaces-before-version": b"GET /  HTTP/1.1\r\nHost: example.com\r\n\r\n" + _NEXT,
    "tab-separator": b"GET\t/ HTTP/1.1\r\nHost: example.com\r\n\r\n" + _NEXT,
    "space-after-version": b"GET / HTTP/1.1 \r\nHost: example.com\r\n\r\n" + _NEXT,
    "target-space": b"GET /a b HTTP/1.1\r\nHost: example.com\r\n\r\n" + _NEXT,
    "target-obs-text": b"GET /caf\xe9 HTTP/1.1\r\nHost: example.com\r\n\r\n" + _NEXT,
    "target-nul": b"GET /a\x00b HTTP/1.1\r\nHost: example.com\r\n\r\n" + _NEXT,
    "target-fragment": b"GET /a#b HTTP/1.1\r\nHost: example.com\r\n\r\n" + _NEXT,
    "target-dot-segment": b"GET /a/../b HTTP/1.1\r\nHost: example.com\r\n\r\n" + _NEXT,
    "target-asterisk-get": b"GET * HTTP/1.1\r\nHost: example.com\r\n\r\n" + _NEXT,
    "target-asterisk-options": b"OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n" + _NEXT,
    "absolute-form": b"GET http://example.com/a?b HTTP/1.1\r\nHost: example.com\r\n\r\n" + _NEXT,
    "absolute-form-no-host": b"GET http://example.com/a HTTP/1.1\r\n\r\n" + _NEXT,
    "absolute-form-other-host": b"GET http://other.example/a HTTP/1.1\r\nHost: example.com\r\n\r\n" + _NEXT,
    "absolute-form-userinfo": b"GET http://u@example.com/a HTTP/1.1\r\nHost: example.com\r\n\r\n" + _NEXT,
    "authority-form-get": b"GET example.com:80 HTTP/1.1\r\nHost: example.com\r\n\r\n" + _NEXT,
    "connect": b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n" + _NEXT,
    # Empty lines before a request (RFC 9112 §2.2).
    "leading-crlf": b"\r\n" + _GET,
    "leading-lf": b"\n" + _GET,
    "leading-two-crlf": b"\r\n\r\n" + _GET,
    "leading-bare-cr": b"\r" + _GET,
    "leading-lf-cr": b"\n\r" + _GET,
    "bare-cr-between-requests": _GET + b"\r" + _NEXT,
    "crlf-between-requests": _GET + b"\r\n" + _NEXT,
    "trailing-crlf": _GET + b"\r\n",
    # Chunk sizes and chunk framing (RFC 9112 §7.1).
    "chunk-ext": _post(_CHUNKED, b"3;name=value\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "chunk-ext-quoted": _post(_CHUNKED, b'3;name="a b;c"\r\nabc\r\n0\r\n\r\n') + _NEXT,
    "chunk-ext-no-value": _post(_CHUNKED, b"3;name\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "chunk-ext-ctl": _post(_CHUNKED, b"3;n=\x01\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "chunk-ext-bare-lf": _post(_CHUNKED, b"3;n=v\nabc\r\n0\r\n\r\n") + _NEXT,
    "chunk-ext-smuggled-lf": _post(_CHUNKED, b"3;\nxx\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "chunk-space-before-ext": _post(_CHUNKED, b"3 ;n=v\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "chunk-trailing-space": _post(_CHUNKED, b"3 \r\nabc\r\n0\r\n\r\n") + _NEXT,
    "chunk-leading-space": _post(_CHUNKED, b" 3\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "chunk-leading-zeros": _post(_CHUNKED, b"0003\r\nabc\r\n0000\r\n\r\n") + _NEXT,
    "chunk-uppercase-hex": _post(_CHUNKED, b"A\r\n0123456789\r\n0\r\n\r\n") + _NEXT,
    "chunk-lowercase-hex": _post(_CHUNKED, b"a\r\n0123456789\r\n0\r\n\r\n") + _NEXT,
    "chunk-hex-prefix": _post(_CHUNKED, b"0x3\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "chunk-negative": _post(_CHUNKED, b"-3\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "chunk-empty-size": _post(_CHUNKED, b"\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "chunk-overflow": _post(_CHUNKED, b"fffffffffffffffff\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "chunk-overflow-wraps-to-3": _post(_CHUNKED, b"10000000000000003\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "chunk-16-digits": _post(_CHUNKED, b"0000000000000003\r\nabc\r\n0\r\n\r\n") + _NEXT,
    "chunk-data-without-crlf": _post(_CHUNKED, b"3\r\nabcX0\r\n\r\n") + _NEXT,
    "chunk-data-lf-only": _post(_CHUNKED, b"3\r\nabc\n0\r\n\r\n") + _NEXT,
    "chunk-data-too-long": _post(_CHUNKED, b"3\r\nabcdef\r\n0\r\n\r\n") + _NEXT,
    "chunk-size-bare-lf": _post(_CHUNKED, b"3\nabc\r\n0\r\n\r\n") + _NEXT,
    "last-chunk-ext": _post(_CHUNKED, b"3\r\nabc\r\n0;n=v\r\n\r\n") + _NEXT,
    "last-chunk-no-final-crlf": _post(_CHUNKED, b"3\r\nabc\r\n0\r\n") + _NEXT,
    "trailer-obs-fold": _post(_CHUNKED, b"0\r\nX-T: a\r\n b\r\n\r\n") + _NEXT,
    "trailer-content-length": _post(_CHUNKED, b"0\r\nContent-Length: 5\r\n\r\n") + _NEXT,
    "trailer-bare-lf": _post(_CHUNKED, b"0\r\nX-T: a\n\r\n") + _NEXT,
    "trailer-space-before-colon": _post(_CHUNKED, b"0\r\nX-T : a\r\n\r\n") + _NEXT,
    # Connection management and Expect/Upgrade.
    "connection-close-then-get": b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n" + _NEXT,
    "http10-then-get": b"GET / HTTP/1.0\r\n\r\n" + _NEXT,
    "expect-continue": _post(b"Expect: 100-continue\r\nContent-Length: 3\r\n", b"abc") + _NEXT,
    "expect-other": _post(b"Expect: something\r\nContent-Length: 3\r\n", b"abc") + _NEXT,
    "upgrade-no-body": b"GET / HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n" + _NEXT,
    "upgrade-with-body": _post(b"Upgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 3\r\n", b"abc") + _NEXT,
    # Pipelines with bodies that look like requests.
    "pipeline-three": _GET + _post(b"Content-Length: 5\r\n", b"hello") + _NEXT,
    "pipeline-chunked-body-looks-like-request": _post(_CHUNKED, b"16\r\nGET /x HTTP/1.1\r\n\r\n\r\n0\r\n\r\n") + _NEXT,
    "pipeline-length-body-looks-like-request": _post(b"Content-Length: 22\r\n", b"GET /x HTTP/1.1\r\n\r\nabc") + _NEXT,
    "pipeline-trailers-then-get": _post(_CHUNKED, b"1\r\na\r\n0\r\nX-T: 1\r\n\r\n") + _NEXT,
}


# --- Responses -----------------------------------------------------------------------


@dataclass(frozen=True)
class ResponseCase:
    """Responses on one origin connection: one request method per exchange,
    the bytes the origin sent, and whether it then closed the connection."""

    methods: tuple[bytes, ...]
    data: bytes
    eof: bool = False


_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
_TE = b"Transfer-Encoding: chunked\r\n"


def _ok(fields: bytes, body: bytes, status: bytes = b"200 OK", version: bytes = b"1.1") -> bytes:
    return b"HTTP/" + version + b" " + status + b"\r\n" + fields + b"\r\n" + body


RESPONSES: dict[str, ResponseCase] = {
    "length": ResponseCase((b"GET",), _OK),
    "chunked": ResponseCase((b"GET",), _ok(_TE, b"2\r\nok\r\n0\r\n\r\n")),
    "chunked-trailers": ResponseCase((b"GET",), _ok(_TE, b"2\r\nok\r\n0\r\nX-T: 1\r\n\r\n")),
    "close-delimited": ResponseCase((b"GET",), _ok(b"", b"body until close"), eof=True),
    "close-delimited-http10": ResponseCase((b"GET",), _ok(b"", b"body", version=b"1.0"), eof=True),
    "close-delimited-no-eof": ResponseCase((b"GET",), _ok(b"", b"body so far")),
    "length-short-eof": ResponseCase((b"GET",), _ok(b"Content-Length: 10\r\n", b"short"), eof=True),
    "chunked-short-eof": ResponseCase((b"GET",), _ok(_TE, b"5\r\nsho"), eof=True),
    "head-eof-only": ResponseCase((b"GET",), b"HTTP/1.1 200 OK\r\n", eof=True),
    "no-reason": ResponseCase((b"GET",), b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"),
    "empty-reason": ResponseCase((b"GET",), b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n"),
    "reason-obs-text": ResponseCase((b"GET",), b"HTTP/1.1 200 \xe9\r\nContent-Length: 0\r\n\r\n"),
    "reason-nul": ResponseCase((b"GET",), b"HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n"),
    "reason-vertical-tab": ResponseCase((b"GET",), b"HTTP/1.1 200 O\x0bK\r\nContent-Length: 0\r\n\r\n"),
    "reason-ctl": ResponseCase((b"GET",), b"HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n"),
    "reason-nul-to-head": ResponseCase((b"HEAD",), b"HTTP/1.1 200 O\x00K\r\nContent-Length: 5\r\n\r\n"),
    "status-two-digits": ResponseCase((b"GET",), b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n"),
    "status-four-digits": ResponseCase((b"GET",), b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n"),
    "status-999": ResponseCase((b"GET",), b"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n"),
    "status-000": ResponseCase((b"GET",), b"HTTP/1.1 000 Zero\r\nContent-Length: 0\r\n\r\n"),
    "status-099": ResponseCase((b"GET",), b"HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n"),
    "status-000-to-head": ResponseCase((b"HEAD",), b"HTTP/1.1 000 Zero\r\nContent-Length: 5\r\n\r\n"),
    "http20": ResponseCase((b"GET",), b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"),
    "http12": ResponseCase((b"GET",), b"HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n"),
    "http09-style": ResponseCase((b"GET",), b"<html>hello</html>", eof=True),
    # Bodiless by status or method (RFC 9112 §6.3 item 1).
    "204-no-length": ResponseCase((b"GET", b"GET"), b"HTTP/1.1 204 No Content\r\n\r\n" + _OK),
    "204-with-length": ResponseCase((b"GET", b"GET"), b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n" + _OK),
    "204-with-chunked": ResponseCase((b"GET", b"GET"), b"HTTP/1.1 204 No Content\r\n" + _TE + b"\r\n" + _OK),
    "304-with-length": ResponseCase((b"GET", b"GET"), b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n" + _OK),
    "head-with-length": ResponseCase((b"HEAD", b"GET"), b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + _OK),
    "head-with-chunked": ResponseCase((b"HEAD", b"GET"), b"HTTP/1.1 200 OK\r\n" + _TE + b"\r\n" + _OK),
    "head-close-delimited": ResponseCase((b"HEAD",), b"HTTP/1.1 200 OK\r\n\r\n", eof=True),
    "head-with-body-anyway": ResponseCase((b"HEAD",), b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
    "204-with-unknown-te": ResponseCase((b"GET", b"GET"), b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: gzip\r\n\r\n" + _OK),
    "304-with-two-te": ResponseCase((b"GET", b"GET"), b"HTTP/1.1 304 Not Modified\r\n" + _TE + _TE + b"\r\n" + _OK),
    "head-with-unknown-te": ResponseCase((b"HEAD", b"GET"), b"HTTP/1.1 200 OK\r\nTransfer-Encoding: br\r\n\r\n" + _OK),
    # Interim responses (RFC 9110 §15.2).
    "100-then-200": ResponseCase((b"POST",), b"HTTP/1.1 100 Continue\r\n\r\n" + _OK),
    "100-103-then-200": ResponseCase(
        (b"GET",), b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n" + _OK
    ),
    "100-to-head": ResponseCase((b"HEAD",), b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"),
    "1xx-with-length": ResponseCase((b"GET",), b"HTTP/1.1 100 Continue\r\nContent-Length: 3\r\n\r\n" + _OK),
    "101-unsolicited": ResponseCase((b"GET",), b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n" + _OK),
    "1xx-reason-nul": ResponseCase((b"GET",), b"HTTP/1.1 100 Cont\x00inue\r\n\r\n" + _OK),
    "1xx-reason-nul-to-head": ResponseCase(
        (b"HEAD",), b"HTTP/1.1 100 Cont\x00inue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
    ),
    "head-ends-lf-crlf-to-head": ResponseCase((b"HEAD",), b"HTTP/1.1 200 OK\r\nX-A: b\n\r\n"),
    "head-ends-lf-crlf": ResponseCase((b"GET",), b"HTTP/1.1 200 OK\r\nX-A: b\n\r\n"),
    "1xx-http10": ResponseCase((b"GET",), b"HTTP/1.0 100 Continue\r\n\r\n" + _OK),
    "1xx-150-with-length-hides-a-response": ResponseCase(
        (b"GET",),
        b"HTTP/1.1 150 Odd\r\nContent-Length: 40\r\n\r\n"
        + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 403 No\r\nContent-Length: 2\r\n\r\nno",
    ),
    "1xx-104-chunked": ResponseCase(
        (b"GET",), b"HTTP/1.1 104 Odd\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + _OK
    ),
    # Framing conflicts (RFC 9112 §6.3).
    "cl-and-te": ResponseCase((b"GET", b"GET"), _ok(b"Content-Length: 3\r\n" + _TE, b"2\r\nok\r\n0\r\n\r\n") + _OK),
    "te-and-cl": ResponseCase((b"GET", b"GET"), _ok(_TE + b"Content-Length: 3\r\n", b"2\r\nok\r\n0\r\n\r\n") + _OK),
    "two-cl-same": ResponseCase((b"GET", b"GET"), _ok(b"Content-Length: 2\r\nContent-Length: 2\r\n", b"ok") + _OK),
    "two-cl-differ": ResponseCase((b"GET", b"GET"), _ok(b"Content-Length: 2\r\nContent-Length: 4\r\n", b"okok") + _OK),
    "cl-list": ResponseCase((b"GET", b"GET"), _ok(b"Content-Length: 2, 2\r\n", b"ok") + _OK),
    "cl-plus": ResponseCase((b"GET", b"GET"), _ok(b"Content-Length: +2\r\n", b"ok") + _OK),
    "cl-leading-zeros": ResponseCase((b"GET", b"GET"), _ok(b"Content-Length: 002\r\n", b"ok") + _OK),
    "cl-trailing-space": ResponseCase((b"GET", b"GET"), _ok(b"Content-Length: 2 \r\n", b"ok") + _OK),
    "cl-overflow": ResponseCase((b"GET",), _ok(b"Content-Length: 99999999999999999999999\r\n", b"ok")),
    "te-gzip": ResponseCase((b"GET",), _ok(b"Transfer-Encoding: gzip\r\n", b"zz"), eof=True),
    "te-gzip-chunked": ResponseCase((b"GET",), _ok(b"Transfer-Encoding: gzip, chunked\r\n", b"2\r\nzz\r\n0\r\n\r\n")),
    "te-chunked-gzip": ResponseCase((b"GET",), _ok(b"Transfer-Encoding: chunked, gzip\r\n", b"2\r\nzz\r\n0\r\n\r\n"), eof=True),
    "te-gzip-field-then-chunked-field": ResponseCase(
        (b"GET", b"GET"), _ok(b"Transfer-Encoding: gzip\r\n" + _TE, b"2\r\nzz\r\n0\r\n\r\n") + _OK
    ),
    "te-trailing-tab": ResponseCase((b"GET", b"GET"), _ok(b"Transfer-Encoding: chunked\t\r\n", b"2\r\nok\r\n0\r\n\r\n") + _OK),
    "te-uppercase": ResponseCase((b"GET", b"GET"), _ok(b"Transfer-Encoding: CHUNKED\r\n", b"2\r\nok\r\n0\r\n\r\n") + _OK),
    "te-in-http10": ResponseCase((b"GET",), _ok(_TE, b"2\r\nok\r\n0\r\n\r\n", version=b"1.0"), eof=True),
    "obs-fold": ResponseCase((b"GET", b"GET"), _ok(b"X-A: one\r\n two\r\nContent-Length: 2\r\n", b"ok") + _OK),
    "bare-lf": ResponseCase((b"GET", b"GET"), b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok" + _OK),
    "value-bare-cr": ResponseCase((b"GET", b"GET"), _ok(b"X-A: a\rb\r\nContent-Length: 2\r\n", b"ok") + _OK),
    "value-nul": ResponseCase((b"GET", b"GET"), _ok(b"X-A: a\x00b\r\nContent-Length: 2\r\n", b"ok") + _OK),
    "value-ctl": ResponseCase((b"GET", b"GET"), _ok(b"X-A: a\x01b\r\nContent-Length: 2\r\n", b"ok") + _OK),
    "name-space-before-colon": ResponseCase((b"GET", b"GET"), _ok(b"X-A : b\r\nContent-Length: 2\r\n", b"ok") + _OK),
    "chunk-ext": ResponseCase((b"GET", b"GET"), _ok(_TE, b"2;a=b\r\nok\r\n0\r\n\r\n") + _OK),
    "chunk-overflow": ResponseCase((b"GET",), _ok(_TE, b"fffffffffffffffff\r\nok\r\n0\r\n\r\n")),
    "chunk-data-without-crlf": ResponseCase((b"GET", b"GET"), _ok(_TE, b"2\r\nokX0\r\n\r\n") + _OK),
    # Connection reuse and what follows a response.
    "two-responses": ResponseCase((b"GET", b"GET"), _OK + _OK),
    "chunked-then-length": ResponseCase((b"GET", b"GET"), _ok(_TE, b"2\r\nok\r\n0\r\n\r\n") + _OK),
    "crlf-between-responses": ResponseCase((b"GET", b"GET"), _OK + b"\r\n" + _OK),
    "crlf-after-chunked": ResponseCase((b"GET", b"GET"), _ok(_TE, b"2\r\nok\r\n0\r\n\r\n") + b"\r\n" + _OK),
    "leading-crlf": ResponseCase((b"GET",), b"\r\n" + _OK),
    "extra-bytes": ResponseCase((b"GET",), _OK + b"garbage"),
    "connection-close": ResponseCase((b"GET",), _ok(b"Connection: close\r\nContent-Length: 2\r\n", b"ok")),
    "http10-keep-alive": ResponseCase((b"GET", b"GET"), _ok(b"Connection: keep-alive\r\nContent-Length: 2\r\n", b"ok", version=b"1.0") + _OK),
}


# --- Generated inputs ------------------------------------------------------------------

#: Examples per fuzz test in the default (CI) profile: the whole of
#: test_fuzz.py runs in a few seconds with it.
CI_EXAMPLES = 60

_DEEP_EXAMPLES = os.environ.get("MUXPROXY_FUZZ_EXAMPLES")
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("muxproxy-ci", max_examples=CI_EXAMPLES, derandomize=True, database=None, **_COMMON)
settings.register_profile("muxproxy-deep", max_examples=int(_DEEP_EXAMPLES or 20000), **_COMMON)
#: The profile of this run, as a decorator.
FUZZ = settings.get_profile("muxproxy-deep" if _DEEP_EXAMPLES else "muxproxy-ci")

#: More bytes worth inserting than test_properties.INTERESTING: a whole empty
#: line ends a head early, and the rest are separators that parsers disagree on.
INSERTIONS = INTERESTING + [b"\r\n\r\n", b"\r\n ", b"\n\n", b"\x0b", b"\x0c", b"\x7f", b"\xff", b",", b";", b"  "]

mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.sampled_from(INSERTIONS) | st.binary(min_size=1, max_size=3)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 4)),
    st.tuples(st.just("duplicate-line"), st.integers(0, 10_000), st.integers(1, 2)),
)


def apply_mutations(data: bytes, steps: list) -> bytes:
    """`data` after each step: flips, insertions and deletions as in
    test_properties.mutate, and duplications of a whole line (a field
    line given twice: Host, Content-Length, Transfer-Encoding...)."""
    for step in steps:
        kind, position, count = step
        if kind == "duplicate-line":
            lines = data.split(b"\r\n")
            index = position % len(lines)
            lines[index:index] = [lines[index]] * count
            data = b"\r\n".join(lines)
        else:
            data = mutate(data, [step])
    return data


#: One to four valid requests back to back, as bytes.
request_streams = st.lists(requests(), min_size=1, max_size=4).map(lambda reqs: b"".join(wire for wire, _ in reqs))
#: Valid streams and the corpus, mutated.
mutated_request_streams = st.builds(
    apply_mutations,
    request_streams | st.sampled_from(list(REQUESTS.values())),
    st.lists(mutations, min_size=1, max_size=6),
)

_METHODS = st.sampled_from([b"GET", b"HEAD", b"POST"])


@st.composite
def response_cases(draw) -> ResponseCase:
    """One to three valid responses (each possibly after 1xx) on one connection."""
    wires = draw(st.lists(responses(), min_size=1, max_size=3))
    methods = tuple(draw(_METHODS) for _ in wires)
    return ResponseCase(methods, b"".join(wires), draw(st.booleans()))


response_cases = response_cases()
mutated_responses = st.builds(
    lambda case, steps, eof: ResponseCase(case.methods, apply_mutations(case.data, steps), eof),
    response_cases | st.sampled_from(list(RESPONSES.values())),
    st.lists(mutations, min_size=1, max_size=6),
    st.booleans(),
)
