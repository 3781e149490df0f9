"""The idle-connection holder of scenario 3.

    python -m bench.clients.idle --port P --kind h1|h2|mux --count N [--path /100b]

Opens N client connections to 127.0.0.1:P and leaves each in the state a
real client holds it in between requests:
* h1:  one GET answered, then an idle keep-alive connection;
* h2:  the HTTP/2 preface and SETTINGS exchanged, one GET answered on
       stream 1, then an idle h2 connection;
* mux: an open outer stream: POST /_mux with a chunked body started, the
       response head received, nothing in flight.
Then it prints one JSON line {"open": n, "failed": f} and holds everything
until a line (or EOF) arrives on stdin, closes every connection with a reset
(SO_LINGER 0, so 10,000 closes leave no TIME_WAIT behind), and exits.

Strategy: plain asyncio streams (the holder's speed does not matter), with
at most CONNECT_CONCURRENCY handshakes under way at once so no listen
backlog overflows.  The file limit is raised to the hard limit first.  The
HTTP/2 client is the minimum needed here, written by hand (no h2 library is
available): frames are read by their 9-byte header, SETTINGS and PING are
acknowledged, and the one request is HPACK-encoded with static-table indices
and literals, no Huffman coding.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import struct
import sys

import uvloop

#: Handshakes under way at once: below every server's listen backlog
#: (muxproxy 4096, nginx and HAProxy 4096 here, Python's default 100).
CONNECT_CONCURRENCY = 64
#: Seconds one connection may take to reach its idle state.
SETUP_TIMEOUT = 30.0

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS, H2_PING, H2_GOAWAY = 0x4, 0x6, 0x7
H2_FLAG_ACK = H2_FLAG_END_STREAM = 0x1
H2_FLAG_END_HEADERS = 0x4


def h2_frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def h2_get(path: str, authority: str) -> bytes:
    """HEADERS for `GET path` on stream 1 (RFC 7541: static indices 2, 6; literals for 4, 1)."""
    block = b"\x82\x86"  # :method GET, :scheme http
    for index, value in ((4, path), (1, authority)):  # literal without indexing, indexed name
        data = value.encode("ascii")
        if len(data) >= 127:
            raise ValueError(f"{value!r}: longer than a one-byte HPACK length")
        block += bytes([index, len(data)]) + data
    return h2_frame(0x1, H2_FLAG_END_STREAM | H2_FLAG_END_HEADERS, 1, block)


async def read_http1_response(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"unexpected response {head[:40]!r}")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            await reader.readexactly(int(value))


async def settle_h1(reader, writer, args) -> None:
    writer.write(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (args.path.encode(), args.port))
    await read_http1_response(reader)


async def settle_mux(reader, writer, args) -> None:
    writer.write(
        b"POST /_mux HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/http\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" % args.port
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"unexpected outer response {head[:40]!r}")


async def settle_h2(reader, writer, args) -> None:
    writer.write(H2_PREFACE + h2_frame(H2_SETTINGS, 0, 0) + h2_get(args.path, f"127.0.0.1:{args.port}"))
    while True:
        header = await reader.readexactly(9)
        length = int.from_bytes(header[:3], "big")
        kind, flags, stream = header[3], header[4], int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
        payload = await reader.readexactly(length)
        if kind == H2_SETTINGS and not flags & H2_FLAG_ACK:
            writer.write(h2_frame(H2_SETTINGS, H2_FLAG_ACK, 0))
        elif kind == H2_PING and not flags & H2_FLAG_ACK:
            writer.write(h2_frame(H2_PING, H2_FLAG_ACK, 0, payload))
        elif kind == H2_GOAWAY:
            raise ConnectionError("GOAWAY from the server")
        elif stream == 1 and kind in (0x0, 0x1) and flags & H2_FLAG_END_STREAM:
            return


SETTLE = {"h1": settle_h1, "h2": settle_h2, "mux": settle_mux}


async def open_one(args, gate: asyncio.Semaphore, held: list) -> bool:
    async with gate:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", args.port), SETUP_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            return False
        held.append(writer)
        try:
            await asyncio.wait_for(SETTLE[args.kind](reader, writer, args), SETUP_TIMEOUT)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return False
        return True


def reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def main(args: argparse.Namespace) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    held: list[asyncio.StreamWriter] = []
    results = await asyncio.gather(*(open_one(args, gate, held) for _ in range(args.count)))
    opened = sum(results)
    print(json.dumps({"open": opened, "failed": args.count - opened}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    for writer in held:
        reset(writer)
    await asyncio.sleep(0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.clients.idle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kind", choices=sorted(SETTLE), required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--path", default="/100b")
    uvloop.run(main(parser.parse_args()))
