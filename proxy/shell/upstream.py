"""The contract between the request side and the origin side of the shell.

Strategy: a client-side component (a plain HTTP connection or a mux stream)
hands an `OutboundRequest` to an `Upstream` (an HTTP origin pool, or the
built-in file origin) together with a `ResponseSink`.  The upstream calls the
sink back as the response arrives and returns an `Exchange` handle through
which the caller streams the request body, applies backpressure and cancels.

Callbacks instead of one coroutine per request: an inner request is the hot
path, and a task per request costs several microseconds of the CPU budget per
inner message (see bench/); the callbacks run on the event loop thread only.

Contract for a sink, in order: at most one `on_response_head`, then any
number of `on_response_data`, then exactly one of `on_response_end` or
`on_response_error`; or, instead of all of these, one `on_response_complete`
(a whole response that arrived in one piece).  `on_response_error` may come before the head (nothing
was received: the caller answers with the error's status) or after it (the
response broke off).  After `Exchange.cancel()` the sink is never called again.
"""

from __future__ import annotations

from typing import Protocol

from proxy.core.forwarding import OutboundRequest
from proxy.core.http1.messages import ResponseHead
from proxy.errors import ProxyError


class ResponseSink(Protocol):
    def on_response_head(self, head: ResponseHead) -> None: ...

    def on_response_data(self, data: bytes) -> None: ...

    def on_response_end(self) -> None: ...

    def on_response_error(self, error: ProxyError) -> None: ...

    def on_response_complete(self, head: ResponseHead, body: bytes) -> None:
        """A whole response at once: the same as on_response_head(head),
        on_response_data(body) if body, then on_response_end().  An upstream
        may use it when one read held the whole response."""

    # Flow control of a streamed request body: the origin's socket is full /
    # has drained.  Only called for requests with `streams_body`.
    def pause_request_body(self) -> None: ...

    def resume_request_body(self) -> None: ...


class Exchange(Protocol):
    #: "host:port" of the server that answered, or the origin's name; for logs.
    server: str

    def send_body(self, data: bytes) -> None: ...

    def end_body(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def cancel(self) -> None: ...


class Upstream(Protocol):
    name: str

    def start(self, request: OutboundRequest, sink: ResponseSink) -> Exchange: ...

    async def close(self) -> None: ...
