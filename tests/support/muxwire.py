"""A small, strict reader of application/http response streams, for tests.

It is deliberately independent of the proxy's code (no httptools, no proxy
imports): tests use it to check what a client really receives.  Feed it the
decoded outer body; it yields `InnerResponse`s as they complete.

A response to HEAD has no body even when it carries Content-Length; the
reader cannot know which responses answer a HEAD, so the caller passes
`is_head(response) -> bool`, usually by looking at Request-Id.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable


class WireError(Exception):
    pass


@dataclass
class InnerResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    chunked: bool = False
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def trailer(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.trailers:
            if key.lower() == name:
                return value
        return None

    @property
    def content_location(self) -> str | None:
        return self.header("Content-Location")

    @property
    def request_id(self) -> str | None:
        return self.header("Request-Id")

    @property
    def proxy_error(self) -> str | None:
        """The `error` parameter of the proxy's Proxy-Status field (header
        or trailer), or None when the proxy added none."""
        value = self.header("Proxy-Status") or self.trailer("Proxy-Status")
        if value is None:
            return None
        name, *params = [part.strip() for part in value.split(";")]
        assert name == "muxproxy", value
        for param in params:
            key, _, item = param.partition("=")
            if key == "error":
                return item
        return None


class MuxReader:
    def __init__(self, is_head: Callable[[InnerResponse], bool] = lambda r: False, gzip: bool = False) -> None:
        self.is_head = is_head
        self.buffer = b""
        self.heartbeats = 0
        self._inflater = zlib.decompressobj(31) if gzip else None

    def feed(self, data: bytes) -> list[InnerResponse]:
        if self._inflater is not None:
            data = self._inflater.decompress(data)
        self.buffer += data
        out = []
        while True:
            response = self._next()
            if response is None:
                return out
            out.append(response)

    def _next(self) -> InnerResponse | None:
        buf = self.buffer
        while buf.startswith(b"\r\n"):
            buf = buf[2:]
            self.heartbeats += 1
        self.buffer = buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = buf[:end].decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise WireError(f"bad status line {lines[0]!r}")
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or name != name.strip():
                raise WireError(f"bad field line {line!r}")
            headers.append((name, value.strip()))
        response = InnerResponse(int(parts[1]), parts[2] if len(parts) > 2 else "", headers)
        rest = buf[end + 4 :]
        status = response.status
        length = response.header("Content-Length")
        te = response.header("Transfer-Encoding")
        if self.is_head(response) or status in (204, 304) or 100 <= status < 200:
            self.buffer = rest
            return response
        if te is not None:
            if te.lower() != "chunked" or length is not None:
                raise WireError(f"bad framing: TE {te!r} CL {length!r}")
            body, trailers, consumed = _dechunk(rest)
            if consumed < 0:
                return None
            response.body, response.trailers, response.chunked = body, trailers, True
            self.buffer = rest[consumed:]
            return response
        if length is None:
            raise WireError("inner response without length")
        n = int(length)
        if len(rest) < n:
            return None
        response.body = rest[:n]
        self.buffer = rest[n:]
        return response


def _dechunk(data: bytes) -> tuple[bytes, list[tuple[str, str]], int]:
    """(body, trailers, bytes consumed) or consumed = -1 when incomplete."""
    pos = 0
    body = []
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            return b"", [], -1
        size = int(data[pos:line_end].split(b";")[0], 16)
        pos = line_end + 2
        if size == 0:
            trailers = []
            while True:
                line_end = data.find(b"\r\n", pos)
                if line_end < 0:
                    return b"", [], -1
                line = data[pos:line_end]
                pos = line_end + 2
                if not line:
                    return b"".join(body), trailers, pos
                name, _, value = line.decode("latin-1").partition(":")
                trailers.append((name, value.strip()))
        if len(data) < pos + size + 2:
            return b"", [], -1
        body.append(data[pos : pos + size])
        if data[pos + size : pos + size + 2] != b"\r\n":
            raise WireError("chunk not followed by CRLF")
        pos += size + 2


class OuterReader:
    """Reads the outer HTTP/1.1 response of a mux stream from raw socket bytes:
    the head, then the chunked body, handing decoded body bytes to a MuxReader."""

    def __init__(self, mux: MuxReader) -> None:
        self.mux = mux
        self.raw = b""
        self.head: InnerResponse | None = None
        self.ended = False
        self._chunk_left = -1  # -1: expecting a size line

    def feed(self, data: bytes) -> list[InnerResponse]:
        self.raw += data
        out: list[InnerResponse] = []
        if self.head is None:
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                return out
            reader = MuxReader(lambda r: True)
            self.head = reader.feed(self.raw[: end + 4])[0]
            while self.head.status == 100:
                self.raw = self.raw[end + 4 :]
                end = self.raw.find(b"\r\n\r\n")
                if end < 0:
                    self.head = None
                    return out
                self.head = MuxReader(lambda r: True).feed(self.raw[: end + 4])[0]
            self.raw = self.raw[end + 4 :]
        while not self.ended:
            if self._chunk_left < 0:
                line_end = self.raw.find(b"\r\n")
                if line_end < 0:
                    break
                self._chunk_left = int(self.raw[:line_end].split(b";")[0], 16)
                self.raw = self.raw[line_end + 2 :]
                if self._chunk_left == 0:
                    self.ended = True
                    break
            if len(self.raw) < self._chunk_left + 2:
                break
            payload = self.raw[: self._chunk_left]
            self.raw = self.raw[self._chunk_left + 2 :]
            self._chunk_left = -1
            out.extend(self.mux.feed(payload))
        return out
