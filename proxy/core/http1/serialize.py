"""Serialising heads and framing bodies.

Strategy: the proxy never forwards bytes as received; every message it sends
is rebuilt here from parsed values, with exactly one framing (RFC 9112 §6).
Heads are built with one `b"".join` because that is the cheapest way to
assemble bytes in CPython (measured: about 3x faster than repeated `+=`).
Bodies are not: a body of `UNCOPIED_PIECE` bytes or more stays the bytes
object it arrived as, framed by pieces around it, and reaches the kernel as
one iovec of a writev (`coalesce`), so a large response is copied only by
the kernel.
"""

from __future__ import annotations

from typing import Final
from http import HTTPStatus

from proxy.core.http1.messages import Headers

CRLF: Final = b"\r\n"
LAST_CHUNK: Final = b"0\r\n\r\n"

#: Output pieces at least this large are written as they are, one iovec of a
#: writev each; smaller neighbours are joined into one piece first.  Measured
#: with `python -m bench.writev` (loopback TCP, 50 responses per write, a
#: 300-byte head before each body; 2026-12-08, AMD EPYC; docs/performance.md,
#: "ninth part"): the writev cost the writer more CPU than the join up to
#: 2 KiB bodies (the kernel's work per iovec outweighs the copy), less from
#: 4 or 8 KiB depending on the run, and less in every run from 8 KiB
#: (0.6–0.9 µs less per 8–10 KiB body).
UNCOPIED_PIECE: Final = 8192

_REASONS: Final = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}


def reason_phrase(status: int) -> bytes:
    return _REASONS.get(status, b"Unknown")


def _append_fields(parts: list[bytes], fields: Headers) -> None:
    """Each field as "name: value" CRLF, onto `parts` for one join."""
    for name, value in fields:
        # Appends, not `parts += (...)`: compiled, that builds a tuple per field.
        parts.append(name)
        parts.append(b": ")
        parts.append(value)
        parts.append(CRLF)


def request_head(method: bytes, target: bytes, headers: Headers) -> bytes:
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    _append_fields(parts, headers)
    parts.append(CRLF)
    return b"".join(parts)


def response_head(status: int, reason: bytes, headers: Headers, version: bytes = b"1.1") -> bytes:
    parts = [b"HTTP/", version, b" ", str(status).encode("ascii"), b" ", reason or reason_phrase(status), CRLF]
    _append_fields(parts, headers)
    parts.append(CRLF)
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    """One chunk of the chunked transfer coding (RFC 9112 §7.1)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def chunk_pieces(pieces: list[bytes], size: int) -> list[bytes]:
    """One chunk whose data is `pieces` (`size` bytes in all), left uncopied:
    the size line, the pieces, the CRLF (RFC 9112 §7.1).  No pieces, or only
    empty ones, make no chunk: an empty one would be the last chunk."""
    if not size:
        return []
    framed = [b"%x\r\n" % size]
    framed.extend(pieces)
    framed.append(CRLF)
    return framed


def append_chunk(out: list[bytes], data: bytes) -> None:
    """`chunk(data)` onto `out`; a large `data` is not copied into it.  An
    empty `data` adds nothing (its chunk would be the last chunk)."""
    size = len(data)
    if not size:
        return
    if size < UNCOPIED_PIECE:
        out.append(chunk(data))
    else:
        out.append(b"%x\r\n" % size)
        out.append(data)
        out.append(CRLF)


def coalesce(pieces: list[bytes]) -> list[bytes]:
    """`pieces` ready for one writev: each run of pieces smaller than
    `UNCOPIED_PIECE` joined into one, larger pieces passed through uncopied.
    The bytes, in order, are the same."""
    out: list[bytes] = []
    run: list[bytes] = []
    for piece in pieces:
        if len(piece) < UNCOPIED_PIECE:
            if piece:
                run.append(piece)
            continue
        if run:
            out.append(run[0] if len(run) == 1 else b"".join(run))
            run = []
        out.append(piece)
    if run:
        out.append(run[0] if len(run) == 1 else b"".join(run))
    return out


def last_chunk(trailers: Headers | None = None) -> bytes:
    if not trailers:
        return LAST_CHUNK
    parts = [b"0\r\n"]
    _append_fields(parts, trailers)
    parts.append(CRLF)
    return b"".join(parts)


class BodyEncoder:
    """Frames body bytes for one outgoing message: chunked, raw, or nothing.

    `chunked=False` is used both for Content-Length bodies and for
    close-delimited bodies (HTTP/1.0 peers); the caller decides which.
    """

    __slots__ = ("chunked",)

    def __init__(self, chunked: bool) -> None:
        self.chunked = chunked

    def encode(self, data: bytes) -> bytes:
        if not data:
            return b""
        return chunk(data) if self.chunked else data

    def encode_pieces(self, pieces: list[bytes], size: int) -> list[bytes]:
        """`encode()` of the pieces' bytes (`size` in all), left uncopied."""
        return chunk_pieces(pieces, size) if self.chunked else pieces

    def end(self, trailers: Headers | None = None) -> bytes:
        return last_chunk(trailers) if self.chunked else b""


#: BodyEncoder keeps no state: these two serve every message.
CHUNKED: Final = BodyEncoder(True)
RAW: Final = BodyEncoder(False)
