"""The null mux server: answers every inner request at once with a canned response.

    python -m bench.servers.nullmux --port P

It speaks just enough of docs/protocol.md to measure the mux load client's
ceiling: POST /_mux with a chunked body, the outer 200 head at once, and for
every inner GET a canned inner response with the same fields muxproxy sends
in front of the nginx origin (so the client parses what it parses in a real
run), tagged with Content-Location and Request-Id.  Nothing is routed and
nothing is validated: it expects what bench/clients/muxload.py sends
(bodiless GETs whose first field is Request-Id, no trailers, no gzip).  The
end of the request body ends the outer response.

Strategy: the work per inner request must stay well below the client's, so
that the ceiling measures the client, not this server.  One regular
expression finds every (target, Request-Id) in the de-chunked body in C, the
responses are pre-built halves joined around the id, and all the responses
to one read go out as a single outer chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import re

import uvloop

#: Inner requests as the load client writes them.
INNER_REQUEST = re.compile(rb"GET (\S+) HTTP/1\.1\r\nRequest-Id: ([^\r]*)\r\n")
#: The fields muxproxy sends for a static file from nginx (docs/protocol.md §5),
#: in the same order, with fixed values.
RESPONSE_FIELDS = (
    b"Server: nginx/1.22.1\r\n"
    b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
    b'ETag: "65920080-64"\r\n'
    b"Accept-Ranges: bytes\r\n"
)
OUTER_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/http\r\nCache-Control: no-store\r\n"
    b"Vary: Accept-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n"
)
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
#: Largest outer request head accepted: docs/configuration.md limits.max_head_size.
MAX_HEAD = 16 * 1024


def _halves(target: bytes, status: bytes, body: bytes) -> tuple[bytes, bytes]:
    """An inner response split where its Request-Id value goes."""
    before = b"HTTP/1.1 %s\r\nContent-Location: %s\r\nRequest-Id: " % (status, target)
    after = b"\r\n%sContent-Length: %d\r\n\r\n%s" % (RESPONSE_FIELDS, len(body), body)
    return before, after


RESPONSES = {
    b"/100b": _halves(b"/100b", b"200 OK", b"x" * 100),
    b"/10k": _halves(b"/10k", b"200 OK", b"x" * 10240),
}


def inner_response(target: bytes, request_id: bytes) -> bytes:
    before, after = RESPONSES.get(target) or _halves(target, b"404 Not Found", b"")
    return before + request_id + after


class NullMux(asyncio.Protocol):
    """One client connection: an outer head, then a chunked body of inner requests."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.raw = b""  # received, not yet de-chunked
        self.inner = b""  # de-chunked, not yet answered
        self.in_body = False
        self.chunk_left = 0  # body bytes left in the current chunk; -1: the chunk's CRLF is next

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.raw += data
        if not self.in_body:
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                if len(self.raw) > MAX_HEAD:
                    self.transport.close()
                return
            if not self.raw.startswith(b"POST /_mux "):
                self.transport.write(NOT_FOUND)
                self.transport.close()
                return
            self.raw = self.raw[end + 4 :]
            self.in_body = True
            self.transport.write(OUTER_HEAD)
        ended = self._dechunk()
        self._answer()
        if ended:
            self.transport.write(b"0\r\n\r\n")
            self.in_body = False

    def _dechunk(self) -> bool:
        """Move chunk data from `raw` to `inner`; True at the last chunk."""
        raw, pieces, pos = self.raw, [], 0
        ended = False
        while pos < len(raw):
            if self.chunk_left > 0:
                take = min(self.chunk_left, len(raw) - pos)
                pieces.append(raw[pos : pos + take])
                pos += take
                self.chunk_left -= take
                if self.chunk_left == 0:
                    self.chunk_left = -1
            elif self.chunk_left == -1:
                if len(raw) - pos < 2:
                    break
                pos += 2
                self.chunk_left = 0
            else:
                line_end = raw.find(b"\r\n", pos)
                if line_end < 0:
                    break
                size = int(raw[pos:line_end].split(b";", 1)[0], 16)
                pos = line_end + 2
                if size == 0:  # the load client sends no trailers and nothing after the body
                    pos, ended = len(raw), True
                    break
                self.chunk_left = size
        self.raw = raw[pos:]
        self.inner += b"".join(pieces)
        return ended

    def _answer(self) -> None:
        buf = self.inner
        cut = buf.rfind(b"\r\n\r\n") + 4
        if cut < 4:
            return
        self.inner = buf[cut:]
        out = [inner_response(target, request_id) for target, request_id in INNER_REQUEST.findall(buf, 0, cut)]
        if out:
            body = b"".join(out)
            self.transport.write(b"%x\r\n%s\r\n" % (len(body), body))


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(NullMux, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.servers.nullmux", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(serve(parser.parse_args().port))
