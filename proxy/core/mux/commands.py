"""Commands the mux session asks the I/O shell to carry out.

Commands are imperatives (mitmproxy's convention); each per-request command
carries its stream id.  Bytes for the client are not commands: the session
accumulates them and the shell collects them with `MuxSession.take_output()`
once per event-loop iteration, so many inner responses finishing together
leave in one write (and one gzip flush).
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.core.forwarding import OutboundRequest


# ForwardRequest and InnerCompleted are made once per inner request: they are
# not frozen, because a frozen dataclass costs three times as much to create
# (measured 0.7 us against 0.2 us).  Treat them as immutable all the same.


@dataclass(slots=True)
class ForwardRequest:
    stream_id: int
    origin: str
    request: OutboundRequest


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


@dataclass(slots=True)
class InnerCompleted:
    """One inner request got its final answer; the shell writes the access log."""

    stream_id: int
    method: bytes
    target: bytes | None  # None: the framing broke before a target was read
    route: str
    status: int
    body_bytes: int
    started: float
    error: str  # RFC 9209 error type when the proxy answered, else ""


PAUSE_READING = PauseReading()
RESUME_READING = ResumeReading()
