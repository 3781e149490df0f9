"""The outer request and response of a mux stream (docs/protocol.md §1-4, §9).

Strategy: pure checks on the outer request head, so that a request we will
not treat as a stream is refused with a plain response before anything is
read from its body or sent to an origin.
"""

from __future__ import annotations

from typing import Final
from proxy.core.http1.fields import http_date
from proxy.core.http1.messages import FRAMING_NONE, RequestHead
from proxy.core.http1.request_parser import split_absolute_target
from proxy.core.http1.serialize import response_head
from proxy.errors import LengthRequired, MethodNotAllowed, ProxyError, UnsupportedMediaType

#: application/http is the registered type (RFC 9112 §10.2); message/http is
#: what older clients and the founding proposal use for the same thing.
MUX_MEDIA_TYPES: Final = frozenset({b"application/http", b"message/http"})


def is_mux_target(head: RequestHead, mux_path: bytes) -> bool:
    """True when the request addresses the mux endpoint itself."""
    target = head.target
    if not target.startswith(b"/"):
        split = split_absolute_target(target)
        if split is None:
            return False
        target = split[1]
    if not target.startswith(mux_path):
        return False
    return len(target) == len(mux_path) or target[len(mux_path)] == ord("?")


def _media_type(value: bytes) -> bytes:
    return value.split(b";", 1)[0].strip().lower()


def outer_request_problem(head: RequestHead) -> ProxyError | None:
    """Why this request to the mux endpoint cannot open a stream, or None."""
    if head.method != b"POST":
        return MethodNotAllowed("the mux endpoint accepts only POST")
    content_type = head.get(b"content-type")
    if content_type is None or _media_type(content_type) not in MUX_MEDIA_TYPES:
        return UnsupportedMediaType("a mux stream needs Content-Type: application/http")
    if head.framing == FRAMING_NONE:
        return LengthRequired("a mux stream needs Transfer-Encoding: chunked or Content-Length")
    coding = head.get(b"content-encoding")
    if coding is not None and coding.strip().lower() not in (b"gzip", b"x-gzip", b"identity"):
        return UnsupportedMediaType(f"unsupported Content-Encoding {coding.decode('latin-1')!r}; only gzip")
    return None


def is_gzip_request(head: RequestHead) -> bool:
    coding = head.get(b"content-encoding")
    return coding is not None and coding.strip().lower() in (b"gzip", b"x-gzip")


def accepts_gzip(head: RequestHead) -> bool:
    """Accept-Encoding allows gzip (RFC 9110 §12.5.3).

    q=0 means "not acceptable", and "*" only speaks for codings the field does
    not name: an explicit gzip (or its alias x-gzip) decides over it.
    """
    qualities: dict[bytes, float] = {}
    for name, value in head.headers:
        if name.lower() != b"accept-encoding":
            continue
        for item in value.split(b","):
            parts = item.strip().split(b";")
            coding = parts[0].strip().lower()
            quality = 1.0
            for param in parts[1:]:
                key, _, val = param.strip().partition(b"=")
                if key.strip().lower() == b"q":
                    try:
                        quality = float(val)
                    except ValueError:
                        quality = 0.0
            qualities[coding] = quality
    named = [qualities[c] for c in (b"gzip", b"x-gzip") if c in qualities]
    if named:
        return max(named) > 0
    return qualities.get(b"*", 0.0) > 0


def outer_response_head(*, gzip: bool, http10: bool) -> bytes:
    """Sent at once, before any inner response (docs/protocol.md §4)."""
    headers = [
        (b"Content-Type", b"application/http"),
        (b"Cache-Control", b"no-store"),
        (b"Date", http_date()),
        (b"Vary", b"Accept-Encoding"),
        (b"X-Content-Type-Options", b"nosniff"),
    ]
    if gzip:
        headers.append((b"Content-Encoding", b"gzip"))
    if http10:
        # No chunked coding for HTTP/1.0: the stream ends when we close.
        headers.append((b"Connection", b"close"))
    else:
        headers.append((b"Transfer-Encoding", b"chunked"))
    return response_head(200, b"OK", headers)
