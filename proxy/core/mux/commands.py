"""Commands the mux session asks the I/O shell to carry out.

Commands are imperatives (mitmproxy's convention); each per-request command
carries its stream id.  Bytes for the client are not commands: the session
accumulates them and the shell collects them with `MuxSession.take_output()`
once per event-loop iteration, so many inner responses finishing together
leave in one write (and one gzip flush).
"""

from __future__ import annotations

from typing import Final
from dataclasses import dataclass

from proxy.core.forwarding import OutboundRequest
from proxy.core.record import Record


# ForwardRequest and InnerCompleted are made once per inner request: they are
# Records, not dataclasses (proxy/core/record.py says why).  Treat them as
# immutable all the same.


class ForwardRequest(Record):
    FIELDS = ("stream_id", "origin", "request")
    __slots__ = ("stream_id", "origin", "request")

    def __init__(self, stream_id: int, origin: str, request: OutboundRequest) -> None:
        self.stream_id = stream_id
        self.origin = origin
        self.request = request


@dataclass(frozen=True, slots=True)
class CancelExchange:
    stream_id: int


@dataclass(frozen=True, slots=True)
class PauseOrigin:
    """Stop reading this stream's origin response (its bytes cannot leave yet)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class ResumeOrigin:
    stream_id: int


@dataclass(frozen=True, slots=True)
class PauseReading:
    """Stop reading the client's outer request body."""


@dataclass(frozen=True, slots=True)
class ResumeReading:
    pass


@dataclass(frozen=True, slots=True)
class EndOuter:
    """End the outer response after the pending output.

    `close` is True when the client connection cannot be reused afterwards
    (the outer body was not read to its end).
    """

    close: bool


_INNER_COMPLETED_FIELDS: Final = ("stream_id", "method", "target", "route", "status", "body_bytes", "started", "error")


class InnerCompleted(Record):
    """One inner request got its final answer; the shell writes the access log.

    `target` is None when the framing broke before a target was read; `error`
    is the RFC 9209 error type when the proxy answered, else "".
    """

    FIELDS = _INNER_COMPLETED_FIELDS
    __slots__ = _INNER_COMPLETED_FIELDS

    def __init__(
        self,
        stream_id: int,
        method: bytes,
        target: bytes | None,
        route: str,
        status: int,
        body_bytes: int,
        started: float,
        error: str,
    ) -> None:
        self.stream_id = stream_id
        self.method = method
        self.target = target
        self.route = route
        self.status = status
        self.body_bytes = body_bytes
        self.started = started
        self.error = error


PAUSE_READING: Final = PauseReading()
RESUME_READING: Final = ResumeReading()
