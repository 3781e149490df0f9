"""FileOrigin: transcripts of what a sink sees for requests against files in tmp_path.

No sockets: a recording sink stands in for the client side, and each test reads
the list of calls it received (head, data..., end or error) like a transcript.
"""

from __future__ import annotations

import asyncio
import errno
import io
import os
import time
from email.utils import formatdate
from pathlib import Path

import pytest

from proxy.core.forwarding import NO_PROXY_FIELDS, OutboundRequest
from proxy.core.http1.messages import FRAMING_LENGTH, FRAMING_NONE, ResponseHead
from proxy.core.routing import Timeouts
from proxy.errors import OriginError, OriginResponseIncomplete, OriginUnavailable, ProxyError
from proxy.shell import files
from proxy.shell.files import FileOrigin, parse_http_date, parse_range, parse_target

#: An mtime safely in the past, so If-Modified-Since dates after it are not "in the future".
MTIME = 1_700_000_000
MTIME_DATE = formatdate(MTIME, usegmt=True).encode()
TEN = b"0123456789"


class RecordingSink:
    """Records every call, in order; `done` is set by the final call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.done = asyncio.Event()
        self.on_data = None  # optional hook called after recording each data piece

    def on_response_head(self, head: ResponseHead) -> None:
        self.calls.append(("head", head))

    def on_response_data(self, data: bytes) -> None:
        self.calls.append(("data", data))
        if self.on_data is not None:
            self.on_data(data)

    def on_response_end(self) -> None:
        self.calls.append(("end",))
        self.done.set()

    def on_response_error(self, error: ProxyError) -> None:
        self.calls.append(("error", error))
        self.done.set()

    def pause_request_body(self) -> None:
        self.calls.append(("pause_request_body",))

    def resume_request_body(self) -> None:
        self.calls.append(("resume_request_body",))

    # -- views of the transcript --

    @property
    def kinds(self) -> list[str]:
        return [call[0] for call in self.calls]

    @property
    def head(self) -> ResponseHead:
        heads = [call[1] for call in self.calls if call[0] == "head"]
        assert len(heads) == 1, self.calls
        return heads[0]

    @property
    def body(self) -> bytes:
        return b"".join(call[1] for call in self.calls if call[0] == "data")

    @property
    def error(self) -> ProxyError:
        assert self.calls[-1][0] == "error", self.calls
        return self.calls[-1][1]

    def field(self, name: bytes) -> bytes | None:
        return self.head.get(name.lower())


def make_request(target: bytes, method: bytes = b"GET", headers=()) -> OutboundRequest:
    return OutboundRequest(
        method=method,
        target=target,
        host=b"example.test",
        headers=list(headers),
        proxy_fields=NO_PROXY_FIELDS,
        body=None,
        streams_body=False,
        content_length=-1,
        idempotent=True,
        timeouts=Timeouts(connect=1, read=1, total=1),
        route="files",
    )


async def fetch(origin: FileOrigin, target: bytes, method: bytes = b"GET", headers=()) -> RecordingSink:
    sink = RecordingSink()
    origin.start(make_request(target, method, headers), sink)
    await asyncio.wait_for(sink.done.wait(), 5)
    # The sink's contract: head at most once, then data, then exactly one ending, last.
    assert sink.kinds.count("head") <= 1
    assert sink.kinds.count("end") + sink.kinds.count("error") == 1
    assert sink.kinds[-1] in ("end", "error")
    return sink


def write(path: Path, data: bytes, mtime: int = MTIME) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def wait_for_fds(expected: int) -> None:
    # A cancelled open finishes in its executor thread and is closed right after.
    for _ in range(200):
        if open_fds() == expected:
            return
        await asyncio.sleep(0.01)
    assert open_fds() == expected


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts fds via /proc")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    write(site / "ten.txt", TEN)
    write(site / "data.json", b'{"a": 1}')
    write(site / "app.js", b"1;")
    write(site / "blob.unknownext", b"\x00\x01")
    write(site / "empty.txt", b"")
    write(site / "hello world.txt", b"hi")
    write(site / "sub" / "index.html", b"<p>sub</p>")
    (site / "bare").mkdir()
    write(tmp_path / "outside" / "secret.txt", b"secret")
    return site


@pytest.fixture
async def origin(root: Path):
    origin = FileOrigin("site", root)
    yield origin
    await origin.close()


# --- 200 and HEAD ---------------------------------------------------------------------


async def test_get_sends_every_header_and_the_exact_body(origin, root):
    sink = await fetch(origin, b"/ten.txt?x=1")
    head = sink.head
    assert (head.status, head.reason, head.version) == (200, b"OK", b"1.1")
    assert (head.framing, head.content_length, head.keep_alive) == (FRAMING_LENGTH, 10, True)
    names = [name for name, _ in head.headers]
    assert names == [b"Content-Type", b"Content-Length", b"Last-Modified", b"ETag", b"Accept-Ranges", b"Date"]
    assert sink.field(b"Content-Type") == b"text/plain; charset=utf-8"
    assert sink.field(b"Content-Length") == b"10"
    assert sink.field(b"Last-Modified") == MTIME_DATE
    assert sink.field(b"ETag") == b'"%x-%x"' % (MTIME, 10)
    assert sink.field(b"Accept-Ranges") == b"bytes"
    assert abs(parse_http_date(sink.field(b"Date")) - time.time()) < 5
    assert sink.kinds == ["head", "data", "end"]
    assert sink.body == TEN
    assert "proxy-status" not in [name.lower() for name in names]


@pytest.mark.parametrize(
    ("target", "content_type"),
    [
        (b"/data.json", b"application/json"),
        (b"/app.js", b"text/javascript; charset=utf-8"),
        (b"/blob.unknownext", b"application/octet-stream"),
        (b"/sub/", b"text/html; charset=utf-8"),
    ],
)
async def test_content_type_comes_from_the_extension(origin, target, content_type):
    sink = await fetch(origin, target)
    assert sink.field(b"Content-Type") == content_type


async def test_percent_encoded_name(origin):
    sink = await fetch(origin, b"/hello%20world.txt")
    assert (sink.head.status, sink.body) == (200, b"hi")


async def test_empty_file(origin):
    sink = await fetch(origin, b"/empty.txt")
    assert sink.head.content_length == 0
    assert sink.kinds == ["head", "end"]


async def test_head_has_the_get_head_and_no_body(origin):
    get = await fetch(origin, b"/ten.txt")
    head = await fetch(origin, b"/ten.txt", method=b"HEAD")
    assert head.kinds == ["head", "end"]
    assert head.head.status == 200
    assert (head.head.framing, head.head.content_length) == (FRAMING_LENGTH, 10)
    assert head.head.headers == get.head.headers


async def test_head_of_a_range_reports_the_ranged_length(origin):
    sink = await fetch(origin, b"/ten.txt", method=b"HEAD", headers=[(b"Range", b"bytes=2-5")])
    assert sink.kinds == ["head", "end"]
    assert (sink.head.status, sink.head.content_length) == (206, 4)
    assert sink.field(b"Content-Range") == b"bytes 2-5/10"


# --- Conditional requests -----------------------------------------------------------

ETAG = b'"%x-%x"' % (MTIME, 10)


def assert_not_modified(sink: RecordingSink) -> None:
    head = sink.head
    assert head.status == 304
    assert (head.framing, head.content_length) == (FRAMING_NONE, -1)
    assert [name for name, _ in head.headers] == [b"Last-Modified", b"ETag", b"Date"]
    assert sink.field(b"ETag") == ETAG
    assert sink.field(b"Last-Modified") == MTIME_DATE
    assert sink.kinds == ["head", "end"]


@pytest.mark.parametrize(
    "value",
    [ETAG, b"W/" + ETAG, b'"other", ' + ETAG, b'"a,b" ,, W/' + ETAG + b" ,", b"*"],
)
async def test_if_none_match_hit_is_304(origin, value):
    for method in (b"GET", b"HEAD"):
        assert_not_modified(await fetch(origin, b"/ten.txt", method, [(b"If-None-Match", value)]))


async def test_if_none_match_over_several_lines(origin):
    headers = [(b"If-None-Match", b'"nope"'), (b"If-None-Match", ETAG)]
    assert_not_modified(await fetch(origin, b"/ten.txt", headers=headers))


@pytest.mark.parametrize("value", [b'"nope"', b'W/"nope"', b"garbage", ETAG[:-1]])
async def test_if_none_match_miss_is_200(origin, value):
    sink = await fetch(origin, b"/ten.txt", headers=[(b"If-None-Match", value)])
    assert (sink.head.status, sink.body) == (200, TEN)


@pytest.mark.parametrize(
    "value",
    [
        MTIME_DATE,
        formatdate(MTIME + 3600, usegmt=True).encode(),
        # The two obsolete formats a recipient must accept (RFC 9110 §5.6.7).
        time.strftime("%A, %d-%b-%y %H:%M:%S GMT", time.gmtime(MTIME)).encode(),
        time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(MTIME)).encode(),
    ],
)
async def test_if_modified_since_not_modified_is_304(origin, value):
    assert_not_modified(await fetch(origin, b"/ten.txt", headers=[(b"If-Modified-Since", value)]))


@pytest.mark.parametrize(
    "value",
    [
        formatdate(MTIME - 1, usegmt=True).encode(),  # modified since then
        b"yesterday",  # invalid: ignored
        MTIME_DATE + b" extra",
        formatdate(time.time() + 86400, usegmt=True).encode(),  # in the future: invalid
    ],
)
async def test_if_modified_since_otherwise_is_200(origin, value):
    sink = await fetch(origin, b"/ten.txt", headers=[(b"If-Modified-Since", value)])
    assert sink.head.status == 200


async def test_if_none_match_takes_precedence_over_if_modified_since(origin):
    headers = [(b"If-None-Match", b'"nope"'), (b"If-Modified-Since", MTIME_DATE)]
    sink = await fetch(origin, b"/ten.txt", headers=headers)
    assert (sink.head.status, sink.body) == (200, TEN)


@pytest.mark.parametrize(
    "headers",
    [
        [(b"If-Match", b'"nope"')],
        [(b"If-Match", b"W/" + ETAG)],  # If-Match compares strongly
        [(b"If-Unmodified-Since", formatdate(MTIME - 1, usegmt=True).encode())],
    ],
)
async def test_failed_if_match_or_if_unmodified_since_is_412(origin, headers):
    sink = await fetch(origin, b"/ten.txt", headers=headers)
    assert sink.head.status == 412


@pytest.mark.parametrize(
    "headers",
    [[(b"If-Match", ETAG)], [(b"If-Match", b"*")], [(b"If-Unmodified-Since", MTIME_DATE)]],
)
async def test_passed_if_match_or_if_unmodified_since_is_200(origin, headers):
    sink = await fetch(origin, b"/ten.txt", headers=headers)
    assert sink.head.status == 200


# --- Ranges -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "content_range", "body"),
    [
        (b"bytes=0-3", b"bytes 0-3/10", b"0123"),
        (b"bytes=4-", b"bytes 4-9/10", b"456789"),
        (b"bytes=-3", b"bytes 7-9/10", b"789"),
        (b"bytes=8-100", b"bytes 8-9/10", b"89"),  # last-pos clamped (RFC 9110 §14.1.2)
        (b"bytes=-100", b"bytes 0-9/10", TEN),  # suffix longer than the file
        (b"BYTES=5-5", b"bytes 5-5/10", b"5"),  # the unit is case-insensitive
        (b"bytes=0-1,", b"bytes 0-1/10", b"01"),  # an empty list element is not a second range
    ],
)
async def test_single_range_is_206(origin, value, content_range, body):
    sink = await fetch(origin, b"/ten.txt", headers=[(b"Range", value)])
    head = sink.head
    assert (head.status, head.framing, head.content_length) == (206, FRAMING_LENGTH, len(body))
    assert sink.field(b"Content-Range") == content_range
    assert sink.field(b"Content-Length") == b"%d" % len(body)
    assert sink.body == body


@pytest.mark.parametrize("value", [b"bytes=10-", b"bytes=10-20", b"bytes=-0"])
async def test_unsatisfiable_range_is_416(origin, value):
    sink = await fetch(origin, b"/ten.txt", headers=[(b"Range", value)])
    assert sink.head.status == 416
    assert sink.field(b"Content-Range") == b"bytes */10"
    assert sink.field(b"Content-Type") == b"text/plain; charset=utf-8"


async def test_any_range_of_an_empty_file_is_416(origin):
    sink = await fetch(origin, b"/empty.txt", headers=[(b"Range", b"bytes=0-")])
    assert sink.head.status == 416
    assert sink.field(b"Content-Range") == b"bytes */0"


async def test_multiple_ranges_get_the_whole_file(origin):
    sink = await fetch(origin, b"/ten.txt", headers=[(b"Range", b"bytes=0-1,4-5")])
    assert (sink.head.status, sink.body) == (200, TEN)
    assert sink.field(b"Content-Range") is None


@pytest.mark.parametrize(
    "value",
    [
        b"bytes=5-2",  # last before first: an invalid range-spec
        b"bytes=abc",
        b"bytes=",
        b"bytes=-",
        b"items=0-1",
        b"bytes 0-1",
        b"bytes=1-2-3",
        b"bytes=\xff",
    ],
)
async def test_malformed_range_is_ignored(origin, value):
    sink = await fetch(origin, b"/ten.txt", headers=[(b"Range", value)])
    assert (sink.head.status, sink.body) == (200, TEN)


async def test_two_range_fields_are_ignored(origin):
    headers = [(b"Range", b"bytes=0-1"), (b"Range", b"bytes=2-3")]
    sink = await fetch(origin, b"/ten.txt", headers=headers)
    assert sink.head.status == 200


@pytest.mark.parametrize(
    ("if_range", "status"),
    [
        (ETAG, 206),
        (MTIME_DATE, 206),
        (b'"nope"', 200),
        (b"W/" + ETAG, 200),  # If-Range needs a strong match (RFC 9110 §13.1.5)
        (formatdate(MTIME - 1, usegmt=True).encode(), 200),
        (b"not a date", 200),
    ],
)
async def test_if_range(origin, if_range, status):
    headers = [(b"Range", b"bytes=0-3"), (b"If-Range", if_range)]
    sink = await fetch(origin, b"/ten.txt", headers=headers)
    assert sink.head.status == status
    assert sink.body == (b"0123" if status == 206 else TEN)


def test_parse_range_directly():
    assert parse_range(b"bytes=0-0", 1) == (0, 1)
    assert parse_range(b"bytes=1-", 3) == (1, 2)
    assert parse_range(b"bytes=0-" + b"9" * 5000, 3) is None  # too many digits to read
    with pytest.raises(files.RangeUnsatisfiable):
        parse_range(b"bytes=3-", 3)


# --- Directories, redirects, missing files --------------------------------------------


async def test_directory_without_slash_redirects(origin):
    sink = await fetch(origin, b"/sub?x=1&y")
    assert sink.head.status == 301
    assert sink.field(b"Location") == b"/sub/?x=1&y"
    assert sink.field(b"Content-Type") == b"text/plain; charset=utf-8"
    assert sink.body == b"301 Moved Permanently\n"


async def test_redirect_never_becomes_scheme_relative(origin, root):
    (root / "evil.example").mkdir()
    sink = await fetch(origin, b"//evil.example")
    assert sink.field(b"Location") == b"/evil.example/"


async def test_directory_with_slash_serves_its_index(origin):
    sink = await fetch(origin, b"/sub/")
    assert (sink.head.status, sink.body) == (200, b"<p>sub</p>")


async def test_root_serves_its_index(tmp_path):
    write(tmp_path / "index.html", b"home")
    origin = FileOrigin("t", tmp_path)
    assert (await fetch(origin, b"/")).body == b"home"
    await origin.close()


async def test_custom_index_name(root):
    write(root / "bare" / "start.txt", b"start")
    origin = FileOrigin("t", root, index="start.txt")
    sink = await fetch(origin, b"/bare/")
    assert (sink.body, sink.field(b"Content-Type")) == (b"start", b"text/plain; charset=utf-8")
    await origin.close()


@pytest.mark.parametrize(
    "target",
    [b"/missing.txt", b"/bare/", b"/ten.txt/", b"/sub/missing/x", b"/a%2fb", b"/ten.txt%2F"],
)
async def test_not_found_is_404(origin, target):
    sink = await fetch(origin, target)
    assert sink.head.status == 404
    assert sink.body == b"404 Not Found\n"
    assert sink.field(b"Content-Length") == b"14"


async def test_head_of_an_error_has_no_body(origin):
    sink = await fetch(origin, b"/missing.txt", method=b"HEAD")
    assert sink.kinds == ["head", "end"]
    assert (sink.head.status, sink.head.content_length) == (404, 14)


async def test_fifo_is_not_served_and_does_not_hang(origin, root):
    os.mkfifo(root / "pipe")
    assert (await fetch(origin, b"/pipe")).head.status == 404


@pytest.mark.parametrize(
    "method", [b"POST", b"PUT", b"DELETE", b"OPTIONS", b"get"]  # methods are case-sensitive
)
async def test_other_methods_are_405(origin, method):
    sink = await fetch(origin, b"/ten.txt", method=method)
    assert sink.head.status == 405
    assert sink.field(b"Allow") == b"GET, HEAD"


async def test_request_body_calls_are_ignored(origin):
    sink = RecordingSink()
    exchange = origin.start(make_request(b"/ten.txt"), sink)
    exchange.send_body(b"ignored")
    exchange.end_body()
    await asyncio.wait_for(sink.done.wait(), 5)
    assert (sink.body, exchange.server) == (TEN, "dir:site")


# --- Traversal ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "status"),
    [
        (b"/../outside/secret.txt", 400),
        (b"/sub/../../outside/secret.txt", 400),
        (b"/%2e%2e/outside/secret.txt", 400),
        (b"/%2E./outside/secret.txt", 400),
        (b"/sub/%2e/index.html", 400),
        (b"/./ten.txt", 400),
        (b"/..%2foutside/secret.txt", 404),  # decodes to "../outside": a "/" inside a segment
        (b"/ten.txt%00.html", 400),
        (b"/ten%zz.txt", 400),  # not a percent-escape
        (b"ten.txt", 400),  # not origin-form
        (b"*", 400),
    ],
)
async def test_traversal_and_bad_targets_are_refused(origin, target, status):
    sink = await fetch(origin, target)
    assert sink.head.status == status
    assert b"secret" not in sink.body


async def test_symlink_out_of_the_root_is_404(origin, root):
    (root / "escape.txt").symlink_to(root.parent / "outside" / "secret.txt")
    (root / "escape-dir").symlink_to(root.parent / "outside")
    for target in (b"/escape.txt", b"/escape-dir/secret.txt"):
        sink = await fetch(origin, target)
        assert sink.head.status == 404
        assert b"secret" not in sink.body


async def test_index_symlinked_out_of_the_root_is_404(origin, root):
    (root / "bare" / "index.html").symlink_to(root.parent / "outside" / "secret.txt")
    sink = await fetch(origin, b"/bare/")
    assert sink.head.status == 404


async def test_symlink_within_the_root_is_served(origin, root):
    (root / "alias.txt").symlink_to(root / "ten.txt")
    sink = await fetch(origin, b"/alias.txt")
    assert (sink.head.status, sink.body) == (200, TEN)


async def test_root_that_is_a_symlink_is_followed(tmp_path, root):
    link = tmp_path / "current"
    link.symlink_to(root)
    origin = FileOrigin("t", link)
    assert (await fetch(origin, b"/ten.txt")).body == TEN
    await origin.close()


def test_parse_target():
    target = parse_target(b"//a/%41%20b/?q=%2e")
    assert target == files.Target((b"a", b"A b"), True, b"q=%2e")
    assert parse_target(b"/x").query is None
    assert files.Target((b"a\\b", b"c d"), False, None).redirect_location() == b"/a%5Cb/c%20d/"


# --- File system errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status"),
    [(PermissionError(errno.EACCES, "denied"), 403), (OSError(errno.ELOOP, "loop"), 403)],
)
async def test_refusing_file_system_errors_become_responses(origin, monkeypatch, error, status):
    def fail(*args):
        raise error

    monkeypatch.setattr(files, "_resolve_and_open", fail)
    assert (await fetch(origin, b"/ten.txt")).head.status == status


async def test_other_file_system_errors_before_the_head_are_origin_errors(origin, monkeypatch):
    def fail(*args):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(files, "_resolve_and_open", fail)
    sink = await fetch(origin, b"/ten.txt")
    assert sink.kinds == ["error"]
    assert type(sink.error) is OriginError
    assert sink.error.status == 502


async def test_file_shrinking_after_the_head_is_an_incomplete_response(origin, root):
    sink = RecordingSink()
    exchange = origin.start(make_request(b"/ten.txt"), sink)
    exchange.pause_reading()
    while sink.kinds != ["head"]:
        await asyncio.sleep(0.001)
    (root / "ten.txt").write_bytes(b"")
    exchange.resume_reading()
    await asyncio.wait_for(sink.done.wait(), 5)
    assert sink.kinds == ["head", "error"]
    assert isinstance(sink.error, OriginResponseIncomplete)


async def test_read_error_after_the_head_is_an_incomplete_response(root, monkeypatch):
    write(root / "big.bin", b"x" * 100)
    origin = FileOrigin("t", root, chunk_size=10)

    class FailingSecondRead:
        """Wraps the opened file; its second read fails like a disk error."""

        def __init__(self, file) -> None:
            self.file = file
            self.reads = 0

        def read(self, n: int) -> bytes:
            self.reads += 1
            if self.reads == 2:
                raise OSError(errno.EIO, "I/O error")
            return self.file.read(n)

    real_wrap = files.aiofiles.threadpool.wrap
    monkeypatch.setattr(
        files.aiofiles.threadpool,
        "wrap",
        lambda file, *, loop: real_wrap.dispatch(io.BufferedReader)(FailingSecondRead(file), loop=loop),
    )
    sink = await fetch(origin, b"/big.bin")
    assert sink.kinds == ["head", "data", "error"]
    assert isinstance(sink.error, OriginResponseIncomplete)
    assert sink.error.proxy_status == "http_response_incomplete"
    await origin.close()


# --- Streaming, backpressure, cancellation -----------------------------------------------


async def test_large_file_arrives_in_chunks_with_the_exact_bytes(root):
    data = os.urandom(10_500)
    write(root / "big.bin", data)
    origin = FileOrigin("t", root, chunk_size=1000)
    sink = await fetch(origin, b"/big.bin")
    sizes = [len(call[1]) for call in sink.calls if call[0] == "data"]
    assert sizes == [1000] * 10 + [500]
    assert sink.body == data
    ranged = await fetch(origin, b"/big.bin", headers=[(b"Range", b"bytes=1500-3999")])
    assert [len(call[1]) for call in ranged.calls if call[0] == "data"] == [1000, 1000, 500]
    assert ranged.body == data[1500:4000]
    await origin.close()


async def test_pause_reading_stops_data_until_resumed(root):
    data = os.urandom(40)
    write(root / "big.bin", data)
    origin = FileOrigin("t", root, chunk_size=4)
    sink = RecordingSink()
    exchange = origin.start(make_request(b"/big.bin"), sink)
    sink.on_data = lambda _: exchange.pause_reading()  # a slow client: full after every piece

    while "data" not in sink.kinds:
        await asyncio.sleep(0.001)
    for _ in range(3):
        await asyncio.sleep(0.02)  # time for executor reads, were any still running
        assert sink.kinds == ["head", "data"]
    assert "paused" in repr(exchange)

    sink.on_data = None
    exchange.resume_reading()
    await asyncio.wait_for(sink.done.wait(), 5)
    assert sink.kinds == ["head"] + ["data"] * 10 + ["end"]
    assert sink.body == data
    await origin.close()


async def test_paused_before_the_first_read_sends_only_the_head(origin):
    sink = RecordingSink()
    exchange = origin.start(make_request(b"/ten.txt"), sink)
    exchange.pause_reading()
    exchange.pause_reading()  # idempotent
    await asyncio.sleep(0.05)
    assert sink.kinds == ["head"]
    exchange.resume_reading()
    await asyncio.wait_for(sink.done.wait(), 5)
    assert sink.body == TEN


@needs_proc
async def test_cancel_before_anything_happens_calls_nothing(origin):
    fds = open_fds()
    sink = RecordingSink()
    exchange = origin.start(make_request(b"/ten.txt"), sink)
    exchange.cancel()
    exchange.cancel()  # idempotent
    await asyncio.sleep(0.05)
    assert sink.calls == []
    await wait_for_fds(fds)


@needs_proc
@pytest.mark.parametrize("moment", ["while opening", "after the head", "while reading"])
async def test_cancel_closes_the_file_and_silences_the_sink(root, moment):
    write(root / "big.bin", b"x" * 100)
    origin = FileOrigin("t", root, chunk_size=10)
    fds = open_fds()
    sink = RecordingSink()
    exchange = origin.start(make_request(b"/big.bin"), sink)
    loop = asyncio.get_running_loop()
    if moment == "while opening":
        await asyncio.sleep(0)  # the task has handed the open to an executor thread
        exchange.cancel()
    elif moment == "after the head":
        exchange.pause_reading()
        while sink.kinds != ["head"]:
            await asyncio.sleep(0.001)
        exchange.cancel()
    else:
        # On the next loop iteration the task is waiting for its next executor read.
        sink.on_data = lambda _: loop.call_soon(exchange.cancel)
    await asyncio.sleep(0.02)
    seen = list(sink.calls)
    await origin.close()
    await asyncio.sleep(0.02)
    assert sink.calls == seen
    assert "end" not in sink.kinds
    if moment == "while reading":
        assert sink.kinds == ["head", "data"]
    await wait_for_fds(fds)


async def test_cancel_from_inside_the_sink_stops_the_calls(root):
    write(root / "big.bin", b"x" * 100)
    origin = FileOrigin("t", root, chunk_size=10)
    sink = RecordingSink()
    exchange = origin.start(make_request(b"/big.bin"), sink)
    sink.on_data = lambda _: exchange.cancel()
    await asyncio.sleep(0.05)
    assert sink.kinds == ["head", "data"]
    assert "cancelled" in repr(exchange)
    await origin.close()


@needs_proc
async def test_close_cancels_every_exchange_and_awaits_them(root):
    write(root / "big.bin", b"x" * 100)
    origin = FileOrigin("t", root, chunk_size=10)
    fds = open_fds()
    sinks = [RecordingSink() for _ in range(3)]
    exchanges = [origin.start(make_request(b"/big.bin"), sink) for sink in sinks]
    for exchange in exchanges:
        exchange.pause_reading()
    while any(sink.kinds != ["head"] for sink in sinks):
        await asyncio.sleep(0.001)
    assert "3 active" in repr(origin)

    await origin.close()
    assert all(exchange.is_done for exchange in exchanges)
    assert "closed" in repr(origin)
    for exchange in exchanges:
        exchange.resume_reading()
    await asyncio.sleep(0.02)
    assert all(sink.kinds == ["head"] for sink in sinks)
    await wait_for_fds(fds)

    late = await fetch(origin, b"/ten.txt")
    assert isinstance(late.error, OriginUnavailable)


async def test_close_with_nothing_running(origin):
    await origin.close()
    await origin.close()


def test_constructor_checks_its_arguments(tmp_path):
    with pytest.raises(ValueError):
        FileOrigin("t", tmp_path, chunk_size=0)
    with pytest.raises(ValueError):
        FileOrigin("t", tmp_path, index="../index.html")


# --- HTTP-date parsing -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"Sun, 06 Nov 1994 08:49:37 GMT",
        b"Sunday, 06-Nov-94 08:49:37 GMT",
        b"Sun Nov  6 08:49:37 1994",
    ],
)
def test_parse_http_date_accepts_the_three_formats(value):
    assert parse_http_date(value) == 784111777


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"Sun, 06 Nov 1994 08:49:37 UTC",
        b"Sun, 31 Feb 1994 08:49:37 GMT",
        b"Sun, 06 Nov 1994 25:49:37 GMT",
        b"Sun, 6 Nov 1994 08:49:37 GMT",
        b"1994-11-06T08:49:37Z",
    ],
)
def test_parse_http_date_refuses_everything_else(value):
    assert parse_http_date(value) is None


def test_two_digit_years_are_at_most_50_years_ahead():
    now = 1_700_000_000  # 2023
    assert time.gmtime(parse_http_date(b"Monday, 01-Jan-73 00:00:00 GMT", now)).tm_year == 2073
    assert time.gmtime(parse_http_date(b"Monday, 01-Jan-74 00:00:00 GMT", now)).tm_year == 1974
