"""The mux load client's receive path, fed bytes directly (no sockets).

The client is the benchmark's measuring instrument: it must match every
inner response to its request, count what it cannot match as an error, and
time a response by the read that completed it.  The benchmark runs it
compiled by mypyc (bench/compiled.py), so every test runs against both
builds.
"""

from __future__ import annotations

import asyncio
import zlib
from types import ModuleType

import pytest

from bench.clients import muxload as interpreted_muxload

OUTER_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/http\r\nTransfer-Encoding: chunked\r\n\r\n"


def inner_response(request_id: bytes, status: int = 200) -> bytes:
    body = b"x" * 10
    return (
        b"HTTP/1.1 %d OK\r\nContent-Location: /100b\r\nrequest-id: %s\r\nContent-Length: %d\r\n\r\n%s"
        % (status, request_id, len(body), body)
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class RecordingTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        pass


@pytest.fixture(params=["interpreted", "compiled"])
def muxload(request) -> ModuleType:
    if request.param == "compiled":
        return request.getfixturevalue("compiled_client").module()
    return interpreted_muxload


async def fed_stream(muxload: ModuleType, *reads: bytes, in_flight: int = 3):
    args = muxload.parse_args(["--port", "1", "--requests", str(in_flight), "--in-flight", str(in_flight)])
    run = muxload.Run(args)
    stream = muxload.MuxStream(run, b"")
    transport = RecordingTransport()
    stream.transport = transport
    stream.issue(run.take(in_flight))
    for data in reads:
        stream.data_received(data)
    return run, stream, transport


def test_responses_in_one_read_are_matched_by_id_and_timed_by_that_read(muxload) -> None:
    # Answered out of order, in one read, the id's field name in another case.
    read = OUTER_HEAD + chunk(inner_response(b"2") + inner_response(b"0") + inner_response(b"1"))

    async def scenario() -> None:
        run, stream, transport = await fed_stream(muxload, read)
        assert run.errors == 0
        assert len(run.latencies) == 3 and not stream.sent
        # One clock reading for the read: all three ended when it arrived.
        assert len(set(run.latencies)) == 1 and run.latencies[0] > 0
        assert run.last_done == stream.received_at
        assert run.statuses == {200: 3}
        # The request budget is spent, so the stream ends its body.
        assert transport.written[-1] == b"0\r\n\r\n"

    asyncio.run(scenario())


def test_a_response_split_over_reads_ends_with_the_read_that_completes_it(muxload) -> None:
    first, second = inner_response(b"0"), inner_response(b"1")
    half = len(second) // 2
    reads = [OUTER_HEAD + chunk(first + second[:half]), chunk(second[half:])]

    async def scenario() -> None:
        run, stream, _ = await fed_stream(muxload, *reads, in_flight=2)
        assert run.errors == 0 and len(run.latencies) == 2
        assert run.latencies[1] > run.latencies[0]  # the second read came later

    asyncio.run(scenario())


def test_unmatched_ids_and_error_statuses_count_as_errors(muxload) -> None:
    read = OUTER_HEAD + chunk(inner_response(b"0") + inner_response(b"7") + inner_response(b"1", status=502))

    async def scenario() -> None:
        run, stream, _ = await fed_stream(muxload, read)
        assert len(run.latencies) == 2  # "7" was never sent
        assert run.errors == 2  # the unknown id and the 502
        assert run.statuses == {200: 2, 502: 1}
        assert list(stream.sent) == [b"2"]

    asyncio.run(scenario())


def test_a_gzip_coded_stream_is_inflated_before_the_inner_responses_are_read(muxload) -> None:
    # Scenario 4's gzip-coded stream: the outer body is one gzip member, cut
    # anywhere across the outer chunks.
    head = OUTER_HEAD.replace(b"\r\n\r\n", b"\r\nContent-Encoding: gzip\r\n\r\n")
    coder = zlib.compressobj(wbits=31)
    coded = coder.compress(inner_response(b"0") + inner_response(b"1")) + coder.flush()
    reads = [head + chunk(coded[:7]), chunk(coded[7:])]

    async def scenario() -> None:
        run, stream, _ = await fed_stream(muxload, *reads, in_flight=2)
        assert run.errors == 0 and len(run.latencies) == 2 and not stream.sent
        assert run.statuses == {200: 2}

    asyncio.run(scenario())
