"""Joined write or writev: which costs the writer less CPU, by body size.

    python -m bench.writev                  # 50 responses per write, 5 rounds
    python -m bench.writev --sizes 1024,8192 --writes 100

The measurement behind `proxy.core.http1.serialize.UNCOPIED_PIECE`: a mux
stream's output is many inner responses, each a small head and a body.  It
can reach the kernel as one buffer joined in user space (a copy of every
byte, and for large batches fresh pages from malloc) or as one writev of the
pieces as they are (no copy, but the kernel's work per iovec).  This writes
`--responses` (head, body) pairs per write to a loopback TCP connection, both
ways, and reports the writer's CPU time per response (the median over the
rounds; the two ways alternate in each round).  A reader process on another
core drains the socket, as the client does; the writer is pinned to the
first core, the reader to the second, when there are two.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time

HEAD_SIZE = 300  # about an inner response head with a few fields
DEFAULT_SIZES = (256, 1024, 2048, 4096, 8192, 10240, 32768)


def _pin(core_index: int) -> None:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2:
        os.sched_setaffinity(0, {cores[core_index]})


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _one_write(fd: int, pieces: list[bytes], joined: bool) -> None:
    if joined:
        _write_all(fd, memoryview(b"".join(pieces)))
        return
    sent = os.writev(fd, pieces)
    if sent < sum(map(len, pieces)):  # the socket's buffer filled: the rest as one
        _write_all(fd, memoryview(b"".join(pieces))[sent:])


def measure(sizes: list[int], responses: int, writes: int, rounds: int) -> list[tuple[int, float, float]]:
    """(body size, joined µs, writev µs) per response, medians over rounds."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    address = listener.getsockname()
    reader = os.fork()
    if reader == 0:  # the reader: drain until the writer closes
        try:
            _pin(1)
            conn, _ = listener.accept()
            buffer = bytearray(1 << 20)
            while conn.recv_into(buffer):
                pass
        finally:
            os._exit(0)
    listener.close()
    writer = socket.create_connection(address)
    writer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as muxproxy's client sockets
    fd = writer.fileno()
    _pin(0)
    results = []
    try:
        for size in sizes:
            pieces: list[bytes] = []
            for _ in range(responses):
                pieces.append(b"h" * HEAD_SIZE)
                pieces.append(b"b" * size)
            times: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(rounds):
                for joined in (True, False):
                    started = time.process_time()
                    for _ in range(writes):
                        _one_write(fd, pieces, joined)
                    times[joined].append((time.process_time() - started) / (writes * responses) * 1e6)
            results.append((size, statistics.median(times[True]), statistics.median(times[False])))
    finally:
        writer.close()
        os.waitpid(reader, 0)
    return results


def render(results: list[tuple[int, float, float]], responses: int) -> str:
    lines = [
        f"writer CPU per response, {responses} responses ({HEAD_SIZE}-byte head + body) per write, loopback TCP",
        "| body bytes | joined, µs | writev, µs | writev / joined |",
        "|---|---|---|---|",
    ]
    for size, joined, vectored in results:
        lines.append(f"| {size:,} | {joined:.2f} | {vectored:.2f} | {vectored / joined:.2f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.writev", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="body sizes, comma-separated")
    parser.add_argument("--responses", type=int, default=50, help="responses per write")
    parser.add_argument("--writes", type=int, default=300, help="writes per round and way")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is reported")
    args = parser.parse_args(argv)
    try:
        sizes = [int(size) for size in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes: not a comma-separated list of integers: {args.sizes!r}")
    if min(sizes) < 1 or min(args.responses, args.writes, args.rounds) < 1:
        parser.error("sizes, --responses, --writes and --rounds must be at least 1")
    print(render(measure(sizes, args.responses, args.writes, args.rounds), args.responses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
