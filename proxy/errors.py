"""The one exception hierarchy of muxproxy.

Strategy: every failure the proxy can report to a client is a `ProxyError`
subclass that knows three things: the HTTP status to answer with, the RFC 9209
proxy error type to put in `Proxy-Status`, and whether the failure destroyed
the framing of the byte stream it came from (`loses_framing`).  Third-party
exceptions (httptools, OSError, timeouts) are translated into these classes at
the boundary where they occur, so the rest of the code only ever handles
`ProxyError`.

A per-request failure becomes a per-request response; only an error with
`loses_framing` set ends the whole stream (an outer connection, or a mux
stream), because after it nobody knows where the next message starts.
"""

from __future__ import annotations


class ProxyError(Exception):
    """Base class: something muxproxy will answer with a generated response."""

    status: int = 502
    #: RFC 9209 §2.3 proxy error type (the `error` parameter of Proxy-Status).
    proxy_status: str = "proxy_internal_error"
    #: True when the position of the next message in the stream is unknown.
    loses_framing: bool = False

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.__class__.__doc__ or self.__class__.__name__)
        self.detail = detail or (self.__class__.__doc__ or "").strip().splitlines()[0]

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.detail!r})"


# --- Request-side errors: the client sent something we will not forward. -----


class RequestError(ProxyError):
    """The request is malformed or not acceptable."""

    status = 400
    proxy_status = "http_request_error"


class FramingError(RequestError):
    """The request's framing is invalid; the next message boundary is unknown."""

    loses_framing = True


class UnsupportedTransferCoding(FramingError):
    """A transfer coding other than chunked was used (RFC 9112 §6.1: 501)."""

    status = 501


class CannotExpect(RequestError):
    """An Expect value other than 100-continue (RFC 9110 §10.1.1)."""

    status = 417


class ConnectNotSupported(FramingError):
    """CONNECT opens a tunnel; muxproxy is a reverse proxy and never tunnels."""

    status = 405


class UnsupportedMethod(FramingError):
    """llhttp does not know this method (RFC 9110 §9.1: 501)."""

    status = 501


class UnsupportedVersion(FramingError):
    """The HTTP version is not 1.0 or 1.1."""

    status = 505


class HeadTooLarge(FramingError):
    """The request head exceeds the configured size or field count."""

    status = 431


class HeadTimeout(FramingError):
    """The request head did not arrive within the deadline."""

    status = 408


class BodyTimeout(FramingError):
    """The request body stalled."""

    status = 408


class BodyTooLarge(RequestError):
    """The request body exceeds the configured limit."""

    status = 413


class RequestDenied(RequestError):
    """The request is well-formed but refused by policy."""

    proxy_status = "http_request_denied"


class NoRoute(RequestError):
    """No route matches the request's host and path."""

    status = 404
    proxy_status = "destination_not_found"


class MethodNotAllowed(RequestError):
    """The mux endpoint only accepts POST."""

    status = 405


class LengthRequired(RequestError):
    """The mux endpoint needs Content-Length or chunked framing."""

    status = 411


class UnsupportedMediaType(RequestError):
    """The mux endpoint needs Content-Type: application/http."""

    status = 415


class TooManyInFlight(RequestError):
    """The stream already has the maximum number of inner requests in flight."""

    status = 503
    proxy_status = "connection_limit_reached"


# --- Origin-side errors: we could not get a usable response. ------------------


class OriginError(ProxyError):
    """The origin did not produce a usable response."""

    status = 502
    proxy_status = "http_protocol_error"


class OriginConnectRefused(OriginError):
    """The origin refused the connection."""

    proxy_status = "connection_refused"


class OriginConnectTimeout(OriginError):
    """Connecting to the origin timed out."""

    status = 504
    proxy_status = "connection_timeout"


class OriginUnavailable(OriginError):
    """Every server of the origin is marked failed or unreachable."""

    proxy_status = "destination_unavailable"


class OriginClosed(OriginError):
    """The origin closed or reset the connection before a complete response."""

    proxy_status = "connection_terminated"


class OriginResponseIncomplete(OriginError):
    """The origin broke off its response after it had started."""

    proxy_status = "http_response_incomplete"


class OriginProtocolError(OriginError):
    """The origin's response is malformed or ambiguous."""

    proxy_status = "http_protocol_error"


class OriginReadTimeout(OriginError):
    """The origin sent nothing for longer than the read timeout."""

    status = 504
    proxy_status = "connection_read_timeout"


class OriginTotalTimeout(OriginError):
    """The origin's response took longer than the total timeout."""

    status = 504
    proxy_status = "http_response_timeout"


class PoolTimeout(OriginError):
    """No connection to the origin became free in time."""

    status = 503
    proxy_status = "connection_limit_reached"


class OriginResponseTooLarge(OriginError):
    """The origin's response head exceeds the configured size."""

    proxy_status = "http_response_header_section_size"


# --- Configuration errors never reach a client. --------------------------------


class ConfigError(Exception):
    """A configuration file is invalid; the message names file, key and problem."""
