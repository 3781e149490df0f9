"""Plain reverse proxying: one request, streamed both ways.

Strategy: `PlainRequest` is the handler of one ordinary request on a client
connection and the `ResponseSink` of its origin exchange.  Request bodies go
to the origin as they arrive and responses come back as they arrive; neither
is ever held whole.  Backpressure is symmetric: a full origin socket pauses
reading the client, a full client socket pauses reading the origin.

What a client sees when something fails:
- before any response byte was sent: a proxy-made response with the error's
  status and Proxy-Status (RFC 9209);
- after the response head was sent: the connection is closed without the
  final chunk or before Content-Length bytes, so the client can tell the
  response is incomplete (RFC 9112 §8).
"""

from __future__ import annotations

import time
from typing import Final, TYPE_CHECKING

from proxy.core.forwarding import (
    OutboundRequest,
    client_response_framing,
    error_response,
    forward_fields,
    response_headers,
)
from proxy.core.http1.messages import FRAMING_NONE, RequestHead, ResponseHead
from proxy.core.http1.request_parser import is_idempotent, target_path
from proxy.core.http1.serialize import CHUNKED, RAW, BodyEncoder, response_head
from proxy.core.routing import HOST_ORIGIN, HOST_PRESERVE
from proxy.errors import BodyTimeout, BodyTooLarge, NoRoute, ProxyError
from proxy.shell.flow import ORIGIN

if TYPE_CHECKING:
    from proxy.shell.client import ClientConnection
    from proxy.shell.upstream import Exchange
    from proxy.shell.server import Runtime

CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


class RejectedRequest:
    """A request refused before forwarding: answer at once.

    A refused request with a body closes the connection after the answer
    rather than reading a body nobody wants (and that may be huge).
    """

    watches_body = False

    def __init__(self, conn: "ClientConnection", head: RequestHead, error: ProxyError, extra=()) -> None:
        self.conn = conn
        self.head = head
        self.error = error
        self.extra = list(extra)
        self.receiving = True

    def __repr__(self) -> str:
        return f"<RejectedRequest {self.error.status}>"

    def start(self) -> None:
        head = self.head
        keep_alive = head.keep_alive and head.framing == FRAMING_NONE
        extra = self.extra + ([] if keep_alive else [(b"Connection", b"close")])
        conn = self.conn
        conn.write(
            error_response(self.error, conn.runtime.proxy_name, extra=extra, head_only=head.method == b"HEAD")
        )
        conn.server.record(
            conn.id, "http", head.method, head.target, "-", "-", self.error.status, 0, 0.0, self.error.proxy_status
        )
        if not keep_alive:
            self.receiving = False
            conn.finish(False)

    def on_body(self, data: bytes) -> None:
        pass

    def on_end(self) -> None:
        self.receiving = False
        self.conn.finish(self.head.keep_alive)

    def on_body_failed(self, error: ProxyError) -> None:
        self.receiving = False
        self.conn.finish(False)

    def on_body_timeout(self) -> None:
        self.conn.abort()

    def on_writable(self, writable: bool) -> None:
        pass

    def on_client_lost(self) -> None:
        pass


class PlainRequest:
    """Forward one request to its route's origin (see module note)."""

    watches_body = True

    def __init__(self, conn: "ClientConnection", head: RequestHead, runtime: "Runtime") -> None:
        self.conn = conn
        self.head = head
        self.runtime = runtime
        self.receiving = True  # until EndOfMessage of the request
        self.exchange: Exchange | None = None  # an origin's or the file origin's
        self.encoder: BodyEncoder = RAW  # the response's, chosen with its head
        self.keep_alive = head.keep_alive
        self.responded = False  # response head written
        self.finished = False
        self.request_bytes = 0
        self.response_bytes = 0
        self.status = 0
        self.route = "-"
        self.started = time.monotonic()

    def __repr__(self) -> str:
        return f"<PlainRequest {self.head.method.decode()} {self.head.target!r} status={self.status}>"

    def start(self) -> None:
        head = self.head
        runtime = self.runtime
        path = target_path(head.target)
        route = runtime.routes.match(head.host, path)
        if route is None:
            self._fail(NoRoute(f"no route for {path.decode('latin-1')!r}"))
            return
        self.route = route.name
        max_body = runtime.config.limits.max_request_body
        if max_body and head.content_length > max_body:
            self._fail(BodyTooLarge(f"request body over {max_body} bytes"))
            return
        if route.host_header == HOST_PRESERVE:
            send_host = head.host
        elif route.host_header == HOST_ORIGIN:
            send_host = None
        else:
            send_host = route.host_header.encode("ascii")
        has_body = head.framing != FRAMING_NONE
        client = self.conn.client
        assert client is not None  # set when the connection was made
        fields, proxy_fields = forward_fields(head, client, head.host)
        request = OutboundRequest(
            method=head.method,
            target=route.origin_target(path),
            host=send_host,
            headers=fields,
            proxy_fields=proxy_fields,
            body=None,
            streams_body=has_body,
            content_length=head.content_length,
            idempotent=is_idempotent(head.method),
            timeouts=route.timeouts,
            route=route.name,
        )
        if head.expect_continue and head.version == b"1.1":
            # We read the body ourselves, so we answer the expectation
            # (RFC 9110 §10.1.1); the origin never sees Expect.
            self.conn.write(CONTINUE)
        self.exchange = runtime.upstreams[route.origin].start(request, self)
        if has_body:
            self.conn.watch_body()

    # --- request body (from the client connection) ------------------------------------

    def on_body(self, data: bytes) -> None:
        if self.finished and self.responded:
            return
        self.request_bytes += len(data)
        max_body = self.runtime.config.limits.max_request_body
        if max_body and self.request_bytes > max_body:
            self.receiving = False
            self._abandon(BodyTooLarge(f"request body over {max_body} bytes"))
            return
        if self.exchange is not None:
            self.exchange.send_body(data)

    def on_end(self) -> None:
        self.receiving = False
        if self.exchange is not None and self.head.framing != FRAMING_NONE:
            self.exchange.end_body()
        if self.finished:
            self.conn.finish(self.keep_alive)

    def on_body_failed(self, error: ProxyError) -> None:
        self.receiving = False
        self._abandon(error)

    def on_body_timeout(self) -> None:
        self.receiving = False
        self._abandon(BodyTimeout(f"request body stalled for {self.runtime.config.limits.body_timeout:g}s"))

    def _abandon(self, error: ProxyError) -> None:
        """The request body cannot be completed: stop the exchange."""
        if self.exchange is not None:
            self.exchange.cancel()
        if self.responded:
            self.conn.abort()
            self._log(error.proxy_status)
        else:
            self.keep_alive = False
            self._fail(error)

    def on_writable(self, writable: bool) -> None:
        if self.exchange is not None:
            if writable:
                self.exchange.resume_reading()
            else:
                self.exchange.pause_reading()

    def on_client_lost(self) -> None:
        if self.exchange is not None and not self.finished:
            self.exchange.cancel()
            self.status = self.status or 499  # nginx's "client closed request"
            self._log("")
        self.finished = True
        self._drop_exchange()

    # --- ResponseSink (from the origin exchange) ------------------------------------------

    def on_response_head(self, head: ResponseHead) -> None:
        self.conn.write(self._head_bytes(head))

    def _head_bytes(self, head: ResponseHead) -> bytes:
        # An unfinished request body at this point means the origin answered
        # early; we will not know where it ends, so the connection closes.
        keep_alive = self.keep_alive and not self.receiving
        fields, chunked, keep_alive = client_response_framing(self.head, head, keep_alive)
        self.keep_alive = keep_alive
        self.encoder = CHUNKED if chunked else RAW
        self.status = head.status
        self.responded = True
        headers = response_headers(head, self.head.method)
        headers += fields  # a new list: response_headers copies
        return response_head(head.status, head.reason, headers)

    def on_response_data(self, data: bytes) -> None:
        self.response_bytes += len(data)
        self.conn.write(self.encoder.encode(data))

    def on_response_end(self) -> None:
        self.conn.write(self.encoder.end())
        self._done()

    def on_response_complete(self, head: ResponseHead, body: bytes) -> None:
        # One write for the whole response (one syscall, one TCP segment).
        data = self._head_bytes(head)
        encoder = self.encoder
        if body:
            self.response_bytes = len(body)
            data += encoder.encode(body)
        self.conn.write(data + encoder.end())
        self._done()

    def on_response_error(self, error: ProxyError) -> None:
        if self.responded:
            # Too late for a status: cut the connection so the client sees a
            # short body or a missing last chunk, never a silently short one.
            self._log(error.proxy_status)
            self.finished = True
            self._drop_exchange()
            self.conn.abort()
            return
        if self.receiving:
            self.keep_alive = False
        self._fail(error)

    def pause_request_body(self) -> None:
        self.conn.set_reading(ORIGIN, False)

    def resume_request_body(self) -> None:
        self.conn.set_reading(ORIGIN, True)

    # --- endings --------------------------------------------------------------------------

    def _fail(self, error: ProxyError) -> None:
        """Answer with a proxy-made response."""
        self.status = error.status
        if self.receiving and self.head.framing != FRAMING_NONE:
            self.keep_alive = False
        extra = [] if self.keep_alive else [(b"Connection", b"close")]
        self.responded = True
        self.conn.write(
            error_response(
                error, self.runtime.proxy_name, extra=extra, head_only=self.head.method == b"HEAD"
            )
        )
        self._done(error.proxy_status)

    def _done(self, error: str = "") -> None:
        self.finished = True
        self._log(error)
        self._drop_exchange()
        if self.receiving:
            if self.keep_alive and self.head.framing == FRAMING_NONE:
                return  # EndOfMessage is next in the queue; on_end finishes
            self.receiving = False
            self.conn.finish(False)
        else:
            self.conn.finish(self.keep_alive)

    def _drop_exchange(self) -> None:
        """The response is over (or abandoned): let go of the exchange.

        The exchange holds this request as its sink, so keeping it would leave
        a reference cycle (with the request head, the outbound request and
        their lists) that only the garbage collector frees: under load, a
        collection every ~1,200 requests and about 6 % of the CPU
        (docs/performance.md, eighth part).  Every caller reaches here once
        the exchange is done or cancelled, and every later use of
        `self.exchange` allows None.
        """
        self.exchange = None

    def _log(self, error: str) -> None:
        conn = self.conn
        if not conn.server.collect:
            return
        server = getattr(self.exchange, "server", "-") if self.exchange is not None else "-"
        conn.server.record(
            conn.id,
            "http",
            self.head.method,
            self.head.target,
            self.route,
            server,
            self.status,
            self.response_bytes,
            time.monotonic() - self.started,
            error,
        )
