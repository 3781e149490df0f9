"""The built-in file origin: static files from one directory, the way nginx serves them.

Strategy: an `Upstream` whose "server" is a directory.  Every outcome of a
request is a response to the sink, never an exception to the caller: a bad
path is a 400 or 404 made here, exactly as an origin server would answer.  The
decisions (target to path segments, preconditions, ranges, header values) are
plain functions over bytes and `os.stat_result`, so tests can pin them down;
the I/O runs in one asyncio task per exchange (files are not the hot path, so
the few microseconds a task costs do not matter here, unlike for HTTP origins).

File system calls block, so they run in the loop's default executor: one
executor job resolves and opens the file, aiofiles reads it chunk by chunk,
and one job closes it.  A thread cannot be interrupted, so cancellation is
made safe around the two jobs that own the file descriptor: a file opened by a
job whose waiter was cancelled is closed when the job finishes, and the close
is shielded so a second cancellation cannot leak the descriptor.

Containment: the decoded path is resolved with symlinks followed and must stay
inside the real path of the root, computed per request so that swapping a
"current -> release-N" root symlink during a deploy takes effect at once.  The
final open uses O_NOFOLLOW, so a symlink swapped in between the check and the
open fails (ELOOP -> 403) instead of escaping.  A symlink swapped into an
intermediate directory in that window is not caught (nginx needs
`disable_symlinks` and openat() walks for that); doing so needs write access
to the served tree, which is outside our threat model.

The route's timeouts are not applied: a local file has no connect phase, and
a read stuck in an executor thread (a hung network mount) cannot be
interrupted anyway; cancelling the exchange still frees the client at once.
"""

from __future__ import annotations

import asyncio
import calendar
import enum
import errno
import functools
import http
import logging
import mimetypes
import os
import re
import stat
import time
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote_to_bytes

import aiofiles.threadpool

from proxy.core.forwarding import OutboundRequest
from proxy.core.http1.fields import http_date
from proxy.core.http1.messages import (
    FRAMING_LENGTH,
    FRAMING_NONE,
    Headers,
    ResponseHead,
)
from proxy.errors import (
    OriginError,
    OriginResponseIncomplete,
    OriginUnavailable,
    ProxyError,
)
from proxy.shell.upstream import ResponseSink

log = logging.getLogger(__name__)

#: Bytes read from the file per executor job, and so the largest piece handed
#: to the sink at once.  64 KiB: nginx reads files in 32 KiB output buffers
#: (2 x 32k by default), aiohttp's FileResponse uses 256 KiB; 64 KiB is a
#: typical socket send buffer, so one chunk fills the socket without the
#: proxy holding much more than the client can take between two pauses.
DEFAULT_CHUNK_SIZE = 65536

ALLOWED_METHODS = (b"GET", b"HEAD")
_ALLOW_VALUE = b", ".join(ALLOWED_METHODS)

#: Sent for any file whose extension is unknown: nginx's `default_type`.
DEFAULT_CONTENT_TYPE = "application/octet-stream"

# Only Python's built-in table, not the host's /etc/mime.types, so that the
# same file gets the same Content-Type on every machine the proxy runs on.
_MIME = mimetypes.MimeTypes()
#: Corrections and additions to the built-in table of Python 3.11.
CONTENT_TYPE_OVERRIDES = {
    ".js": "text/javascript",  # RFC 9239 §6: text/javascript is the one to use
    ".mjs": "text/javascript",
    ".map": "application/json",
    ".md": "text/markdown",
    ".webp": "image/webp",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".gz": "application/gzip",  # the type of the file itself: no Content-Encoding is sent
}

# errno values that mean "there is nothing to serve here" (404) or "you may
# not see this" (403), after nginx's ngx_http_static_handler.  Any other
# OSError is a fault of the origin itself (502 with Proxy-Status).
_NOT_FOUND_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG})
_FORBIDDEN_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ELOOP})

# O_NOFOLLOW: see the module note.  O_NONBLOCK: opening a FIFO placed in the
# tree would otherwise block an executor thread until a writer appears; it has
# no effect on regular files, and anything not regular is refused after fstat.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_BINARY", 0)
)


# --- Request target -> path segments -------------------------------------------

_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_DOT_SEGMENTS = (b".", b"..")
# Separators other than "/" that the host's path functions understand ("\" on
# Windows): a decoded segment containing one would address another directory.
_OTHER_SEPARATORS = tuple(
    os.fsencode(sep) for sep in (os.sep, os.altsep) if sep and sep != "/"
)
#: Characters left unescaped when a decoded segment is written back into a
#: Location: RFC 3986 pchar minus "%" (quote() adds the unreserved set).
_PCHAR_SAFE = "!$&'()*+,;=:@"


@dataclass(frozen=True, slots=True)
class Target:
    """An origin-form request target, decoded and checked."""

    segments: tuple[bytes, ...]  # percent-decoded, non-empty, no "/" or NUL, no dot segments
    trailing_slash: bool
    query: bytes | None  # without the "?"; None when the target had no "?"

    def redirect_location(self) -> bytes:
        """The target of the "add a slash" redirect for a directory.

        Rebuilt from the decoded segments rather than echoed: empty segments
        are merged, so "//evil.example/" can never come out as a
        scheme-relative reference, and "\\" is escaped, which browsers would
        otherwise read as "/".
        """
        path = b"".join(b"/" + quote(seg, safe=_PCHAR_SAFE).encode("ascii") for seg in self.segments)
        location = path + b"/"
        if self.query is not None:
            location += b"?" + self.query
        return location


def parse_target(target: bytes) -> Target | int:
    """Decode an origin-form target; an int is the status to refuse it with.

    400 for what no origin would accept (not origin-form, a bad or NUL
    percent-escape, a dot segment raw or encoded: RFC 3986 §6.2.2.3 dot-segment
    removal is the client's job, and a dot segment that reaches us is an
    attempt to walk the tree), 404 for a segment that decodes to a separator
    (nginx resolves "%2F" to a name that no file can have).  Empty segments are
    merged, like nginx's default `merge_slashes on`.
    """
    path, has_query, query = target.partition(b"?")
    if not path.startswith(b"/"):
        return 400
    if _BAD_PERCENT.search(path):
        return 400
    segments: list[bytes] = []
    for raw in path.split(b"/"):
        if not raw:
            continue
        if raw in _DOT_SEGMENTS:
            return 400
        decoded = unquote_to_bytes(raw)
        if decoded in _DOT_SEGMENTS or b"\x00" in decoded:
            return 400
        if b"/" in decoded or any(sep in decoded for sep in _OTHER_SEPARATORS):
            return 404
        try:
            os.fsdecode(decoded)  # never fails on POSIX (surrogateescape); can on Windows
        except UnicodeDecodeError:
            return 400
        segments.append(decoded)
    return Target(tuple(segments), path.endswith(b"/"), query if has_query else None)


# --- Validators and preconditions (RFC 9110 §8.8, §13) -------------------------

_DAYS = rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAYS = rb"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH_NAMES = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun",
                b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")  # fmt: skip
_MONTHS = rb"(" + b"|".join(_MONTH_NAMES) + rb")"
_TIME = rb"(\d\d):(\d\d):(\d\d)"
# The three formats a recipient MUST accept (RFC 9110 §5.6.7), strictly.
_IMF_FIXDATE = re.compile(_DAYS + rb", (\d\d) " + _MONTHS + rb" (\d{4}) " + _TIME + rb" GMT\Z")
_RFC850_DATE = re.compile(_LONG_DAYS + rb", (\d\d)-" + _MONTHS + rb"-(\d\d) " + _TIME + rb" GMT\Z")
_ASCTIME_DATE = re.compile(_DAYS + rb" " + _MONTHS + rb" ([ \d]\d) " + _TIME + rb" (\d{4})\Z")


def parse_http_date(value: bytes, now: float | None = None) -> int | None:
    """Seconds since the epoch of an HTTP-date, or None when it is not one.

    The day name is not checked against the date (RFC 9110 §5.6.7 lets a
    recipient ignore it).  A two-digit rfc850 year that would lie more than 50
    years ahead means the most recent past year with those digits (§5.6.7).
    """
    value = value.strip(b" \t")
    if m := _IMF_FIXDATE.match(value):
        day, month, year, hh, mm, ss = m[1], m[2], int(m[3]), m[4], m[5], m[6]
    elif m := _RFC850_DATE.match(value):
        day, month, yy, hh, mm, ss = m[1], m[2], int(m[3]), m[4], m[5], m[6]
        this_year = time.gmtime(now if now is not None else time.time()).tm_year
        year = this_year - this_year % 100 + yy
        if year > this_year + 50:
            year -= 100
    elif m := _ASCTIME_DATE.match(value):
        month, day, hh, mm, ss, year = m[1], m[2].strip(), m[3], m[4], m[5], int(m[6])
    else:
        return None
    fields = (year, _MONTH_NAMES.index(month) + 1, int(day), int(hh), int(mm), int(ss))
    if not (1 <= fields[2] <= calendar.monthrange(year, fields[1])[1]):
        return None  # "31 Feb" matches the grammar but is no date
    if fields[3] > 23 or fields[4] > 59 or fields[5] > 60:  # 60: leap second (RFC 9110 §5.6.7)
        return None
    return calendar.timegm(fields)


# An entity-tag list (RFC 9110 §8.8.3, §5.6.1): etagc may contain ",", so the
# list is scanned tag by tag instead of being split on commas.  Empty list
# elements are allowed (§5.6.1.2: a recipient MUST accept them).
_LIST_GAP = re.compile(rb"[ \t]*(?:,[ \t]*)*")
_ENTITY_TAG = re.compile(rb'(W/)?("[\x21\x23-\x7e\x80-\xff]*")[ \t]*(?:,|\Z)')
_ANY = "*"


def parse_entity_tags(values: list[bytes]) -> list[tuple[bool, bytes]] | str | None:
    """Entity tags of one or more If-Match / If-None-Match lines.

    Returns "*", a list of (is_weak, opaque-tag with its quotes), or None when
    the value is not a valid list (no tag then matches).
    """
    value = b", ".join(values)
    if value.strip(b" \t") == b"*":
        return _ANY
    tags: list[tuple[bool, bytes]] = []
    pos = _LIST_GAP.match(value).end()  # type: ignore[union-attr]  # matches the empty string
    while pos < len(value):
        m = _ENTITY_TAG.match(value, pos)
        if m is None:
            return None
        tags.append((m[1] is not None, m[2]))
        pos = _LIST_GAP.match(value, m.end()).end()  # type: ignore[union-attr]
    return tags


def entity_tag(st: os.stat_result) -> bytes:
    """A strong ETag built like nginx's: mtime and size in hex."""
    return b'"%x-%x"' % (int(st.st_mtime), st.st_size)


def _field_values(headers: Headers, lower_name: bytes) -> list[bytes]:
    return [value for name, value in headers if name.lower() == lower_name]


def _is_match_strong(tags: list[tuple[bool, bytes]] | str | None, etag: bytes) -> bool:
    # Strong comparison (RFC 9110 §8.8.3.2): both tags strong and identical.
    if tags is _ANY:
        return True
    return any(not weak and opaque == etag for weak, opaque in tags or ())


def _is_match_weak(tags: list[tuple[bool, bytes]] | str | None, etag: bytes) -> bool:
    # Weak comparison: the opaque tags are identical, weakness ignored.
    if tags is _ANY:
        return True
    return any(opaque == etag for _, opaque in tags or ())


def _single_date(headers: Headers, lower_name: bytes, now: float) -> int | None:
    values = _field_values(headers, lower_name)
    if len(values) != 1:
        return None  # absent, or "more than one member": ignored (RFC 9110 §13.1.3, §13.1.4)
    date = parse_http_date(values[0], now)
    if date is None or date > now:
        return None  # invalid, or later than our clock, so not a date the client got from us
    return date


# --- Ranges (RFC 9110 §14) -------------------------------------------------------

_RANGE_SPEC = re.compile(rb"[ \t]*(\d*)-(\d*)[ \t]*\Z")


class RangeUnsatisfiable(Exception):
    """The single range requested lies entirely outside the file (416)."""


def parse_range(value: bytes, size: int) -> tuple[int, int] | None:
    """(first byte, length) of a single byte range, or None to ignore the field.

    None covers a malformed field, a unit other than bytes and a request for
    several ranges: RFC 9110 §14.2 lets a server ignore Range and send the
    whole representation, and we do rather than build multipart/byteranges
    (nginx does the same for ranges of several parts that it will not merge).
    Raises RangeUnsatisfiable when the one range requested cannot be served.
    """
    unit, equals, range_set = value.partition(b"=")
    if not equals or unit.lower() != b"bytes":  # range units are case-insensitive (§14.1)
        return None
    specs = [spec for spec in range_set.split(b",") if spec.strip(b" \t")]
    if len(specs) != 1:
        return None
    m = _RANGE_SPEC.match(specs[0])
    if m is None or not (m[1] or m[2]):
        return None
    try:
        first = int(m[1]) if m[1] else None
        last = int(m[2]) if m[2] else None
    except ValueError:  # more digits than int() accepts: not a range worth serving
        return None
    if first is None:  # suffix-range "-n": the last n bytes (§14.1.2)
        assert last is not None
        if last == 0 or size == 0:
            raise RangeUnsatisfiable(value.decode("latin-1"))
        length = min(last, size)
        return size - length, length
    if last is not None and last < first:
        return None  # an invalid range-spec makes the whole field invalid (§14.1.1)
    if first >= size:
        raise RangeUnsatisfiable(value.decode("latin-1"))
    end = size - 1 if last is None else min(last, size - 1)
    return first, end - first + 1


# --- Response planning ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """What to answer for an existing regular file."""

    status: int  # 200, 206, 304, 412 or 416
    first: int = 0  # first byte of the file to send
    length: int = 0  # bytes of the file to send (for 200/206)


def plan_response(headers: Headers, st: os.stat_result, now: float | None = None) -> Plan:
    """Evaluate preconditions and Range in the order of RFC 9110 §13.2.2.

    The caller has already refused every method but GET and HEAD.  HEAD gets
    the same answer as GET, ranges included (§9.3.2: same header fields as for
    GET), as nginx and Apache do, even though §14.2 defines Range for GET only.
    """
    now = time.time() if now is None else now
    size = st.st_size
    mtime = int(st.st_mtime)
    etag = entity_tag(st)

    # 1-2. If-Match, else If-Unmodified-Since: the client's copy is stale -> 412.
    if_match = _field_values(headers, b"if-match")
    if if_match:
        if not _is_match_strong(parse_entity_tags(if_match), etag):
            return Plan(412)
    else:
        since = _single_date(headers, b"if-unmodified-since", now)
        if since is not None and mtime > since:
            return Plan(412)

    # 3-4. If-None-Match, else If-Modified-Since: the client's copy is current -> 304.
    # When If-None-Match is present, If-Modified-Since MUST be ignored (§13.1.3).
    if_none_match = _field_values(headers, b"if-none-match")
    if if_none_match:
        if _is_match_weak(parse_entity_tags(if_none_match), etag):
            return Plan(304)
    else:
        since = _single_date(headers, b"if-modified-since", now)
        # "earlier than or equal to" (§13.1.3); nginx's default `if_modified_since
        # exact` only answers 304 on equality, which just costs clients more 200s.
        if since is not None and mtime <= since:
            return Plan(304)

    # 5. Range, if If-Range (when present) still names this representation.
    ranges = _field_values(headers, b"range")
    if len(ranges) == 1 and _is_if_range_current(headers, etag, mtime, now):
        try:
            byte_range = parse_range(ranges[0], size)
        except RangeUnsatisfiable:
            return Plan(416)
        if byte_range is not None:
            return Plan(206, *byte_range)
    return Plan(200, 0, size)


def _is_if_range_current(headers: Headers, etag: bytes, mtime: int, now: float) -> bool:
    values = _field_values(headers, b"if-range")
    if not values:
        return True
    if len(values) > 1:
        return False
    value = values[0].strip(b" \t")
    if value.startswith(b'"'):
        # An entity-tag: strong comparison, so a weak tag (W/...) never matches (§13.1.5).
        return value == etag
    # A date matches only when it is exactly Last-Modified.  (§13.1.5 also asks
    # that Last-Modified be at least a second older than Date to count as
    # strong; like nginx we do not track that.)
    return parse_http_date(value, now) == mtime


def content_type(file_name: str) -> bytes:
    """Content-Type for a file name; text types are declared UTF-8."""
    suffix = os.path.splitext(file_name)[1].lower()
    kind = CONTENT_TYPE_OVERRIDES.get(suffix) or _MIME.types_map[True].get(suffix) or DEFAULT_CONTENT_TYPE
    if kind.startswith("text/"):
        kind += "; charset=utf-8"
    return kind.encode("ascii")


# --- Opening a file -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Opened:
    file: BinaryIO
    stat: os.stat_result
    type_name: str  # the file name that decides the Content-Type


@dataclass(frozen=True, slots=True)
class _Refused:
    status: int


class _Redirect:
    """The target names a directory without the trailing slash."""


_REDIRECT = _Redirect()


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root if root.endswith(os.sep) else root + os.sep)


def _resolve_and_open(directory: str, target: Target, index: str) -> _Opened | _Refused | _Redirect:
    """Find and open the file a target names; runs in an executor thread.

    Raises OSError for the file system's own answers (ENOENT, EACCES, ...).
    """
    root = os.path.realpath(directory)
    path = os.path.realpath(os.path.join(root, *(os.fsdecode(seg) for seg in target.segments)))
    if not _is_within(path, root):
        return _Refused(404)  # a symlink leads out of the tree: as if it did not exist
    # The type comes from the name in the URL, as in nginx, not from where a symlink points.
    type_name = os.fsdecode(target.segments[-1]) if target.segments else ""
    if stat.S_ISDIR(os.stat(path).st_mode):
        if not target.trailing_slash:
            return _REDIRECT
        path = os.path.realpath(os.path.join(path, index))
        if not _is_within(path, root):
            return _Refused(404)
        type_name = index
    elif target.trailing_slash:
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))  # "/a.txt/": nginx answers 404

    fd = os.open(path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        is_regular = stat.S_ISREG(st.st_mode)
        file = open(fd, "rb", closefd=True) if is_regular else None  # noqa: SIM115 - the exchange closes it
    except BaseException:
        os.close(fd)
        raise
    if file is None:
        os.close(fd)
        return _Refused(404)  # a directory as index, a FIFO, a device: nginx answers 404
    return _Opened(file, st, type_name)


def _close_if_opened(job: asyncio.Future[_Opened | _Refused | _Redirect]) -> None:
    # Done callback of an open whose waiter was cancelled: nobody else will close it.
    if job.cancelled() or job.exception() is not None:
        return
    result = job.result()
    if isinstance(result, _Opened):
        result.file.close()  # never read from, so no executor read can be using it


def _status_for_os_error(exc: OSError) -> int | None:
    if exc.errno in _NOT_FOUND_ERRNOS:
        return 404
    if exc.errno in _FORBIDDEN_ERRNOS:
        return 403
    return None


# --- The exchange -------------------------------------------------------------------


class _Phase(enum.Enum):
    STARTING = "starting"  # nothing sent to the sink yet
    SENDING_BODY = "sending body"  # head sent
    FINISHED = "finished"  # on_response_end or on_response_error delivered
    CANCELLED = "cancelled"  # cancel() called: the sink is never called again


class FileExchange:
    """One request to a `FileOrigin`; the `Exchange` handle given to the caller."""

    __slots__ = ("server", "_origin", "_request", "_sink", "_phase", "_readable", "_task")

    def __init__(self, origin: FileOrigin, request: OutboundRequest, sink: ResponseSink) -> None:
        self.server = f"dir:{origin.name}"
        self._origin = origin
        self._request = request
        self._sink = sink
        self._phase = _Phase.STARTING
        # Set while the sink wants data; the read loop waits on it before every
        # read, so a paused client holds at most one chunk in the proxy.
        self._readable = asyncio.Event()
        self._readable.set()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"file-exchange {origin.name} {request.target[:200]!r}"
        )

    def __repr__(self) -> str:
        paused = "" if self._readable.is_set() else ", paused"
        method = self._request.method.decode("latin-1")
        return f"<FileExchange {self.server} {method} {self._request.target!r} {self._phase.value}{paused}>"

    @property
    def is_done(self) -> bool:
        """True once the exchange's task has ended (finished or cancelled)."""
        return self._task.done()

    # -- the Exchange protocol --

    def send_body(self, data: bytes) -> None:
        """Ignored: GET and HEAD have no body a file origin could use."""

    def end_body(self) -> None:
        """Ignored, like `send_body`."""

    def pause_reading(self) -> None:
        self._readable.clear()

    def resume_reading(self) -> None:
        self._readable.set()

    def cancel(self) -> None:
        """Stop the exchange; the sink is not called again.  Idempotent."""
        if self._phase is _Phase.CANCELLED:
            return
        self._phase = _Phase.CANCELLED
        self._task.cancel()

    # -- calls to the sink, guarded by the phase --

    def _emit_head(self, head: ResponseHead) -> None:
        if self._phase is _Phase.CANCELLED:
            return
        if self._phase is not _Phase.STARTING:
            raise RuntimeError(f"response head in phase {self._phase.value}")
        self._phase = _Phase.SENDING_BODY
        self._sink.on_response_head(head)

    def _emit_data(self, data: bytes) -> None:
        if self._phase is _Phase.CANCELLED:
            return
        if self._phase is not _Phase.SENDING_BODY:
            raise RuntimeError(f"response data in phase {self._phase.value}")
        self._sink.on_response_data(data)

    def _emit_end(self) -> None:
        if self._phase is _Phase.CANCELLED:
            return
        if self._phase is not _Phase.SENDING_BODY:
            raise RuntimeError(f"response end in phase {self._phase.value}")
        self._phase = _Phase.FINISHED  # before the call: a sink that raises gets no second ending
        self._sink.on_response_end()

    def _emit_error(self, error: ProxyError) -> None:
        if self._phase in (_Phase.CANCELLED, _Phase.FINISHED):
            return
        self._phase = _Phase.FINISHED
        self._sink.on_response_error(error)

    def _emit_whole(self, head: ResponseHead, body: bytes) -> None:
        self._emit_head(head)
        if body:
            self._emit_data(body)
        self._emit_end()

    # -- the task --

    async def _run(self) -> None:
        try:
            await self._serve()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Task boundary (STYLE habit 8): a bug must not leave the sink waiting forever.
            log.exception("%r failed", self)
            if self._phase is _Phase.STARTING:
                self._emit_error(OriginError("the file origin failed"))
            else:
                self._emit_error(OriginResponseIncomplete("the file origin failed mid-response"))

    async def _serve(self) -> None:
        request = self._request
        if self._origin.is_closed:
            self._emit_error(OriginUnavailable(f"file origin {self._origin.name!r} is closed"))
            return
        if request.method not in ALLOWED_METHODS:
            self._emit_whole(*_small_response(405, request.method, [(b"Allow", _ALLOW_VALUE)]))
            return
        target = parse_target(request.target)
        if isinstance(target, int):
            self._emit_whole(*_small_response(target, request.method))
            return

        try:
            found = await self._open(target)
        except OSError as exc:
            status = _status_for_os_error(exc)
            if status is None:
                self._emit_error(OriginError(f"cannot open {_shown(request.target)}: {exc.strerror}"))
            else:
                self._emit_whole(*_small_response(status, request.method))
            return
        if isinstance(found, _Redirect):
            location = [(b"Location", target.redirect_location())]
            self._emit_whole(*_small_response(301, request.method, location))
            return
        if isinstance(found, _Refused):
            self._emit_whole(*_small_response(found.status, request.method))
            return

        try:
            await self._send_file(found)
        finally:
            await _close_shielded(found.file)

    async def _open(self, target: Target) -> _Opened | _Refused | _Redirect:
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(
            None,
            _resolve_and_open,
            str(self._origin.directory),
            target,
            self._origin.index,
        )
        try:
            # Shielded: cancelling the executor future would drop a file the
            # thread still opens; keep the job alive and close its result.
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            job.add_done_callback(_close_if_opened)
            raise

    async def _send_file(self, opened: _Opened) -> None:
        request = self._request
        st = opened.stat
        plan = plan_response(request.headers, st)
        validators: Headers = [
            (b"Last-Modified", formatdate(int(st.st_mtime), usegmt=True).encode("ascii")),
            (b"ETag", entity_tag(st)),
        ]
        if plan.status == 304:
            # RFC 9110 §15.4.5: the validators and Date of a 200, no content fields.
            headers = [*validators, (b"Date", http_date())]
            self._emit_head(ResponseHead(304, _reason(304), b"1.1", headers, FRAMING_NONE, -1, True))
            self._emit_end()
            return
        if plan.status == 412:
            self._emit_whole(*_small_response(412, request.method))
            return
        if plan.status == 416:
            extra = [(b"Content-Range", b"bytes */%d" % st.st_size)]
            self._emit_whole(*_small_response(416, request.method, extra))
            return

        headers = [
            (b"Content-Type", content_type(opened.type_name)),
            (b"Content-Length", b"%d" % plan.length),
            *validators,
            (b"Accept-Ranges", b"bytes"),
            (b"Date", http_date()),
        ]
        if plan.status == 206:
            last = plan.first + plan.length - 1
            headers.insert(2, (b"Content-Range", b"bytes %d-%d/%d" % (plan.first, last, st.st_size)))
        head = ResponseHead(
            plan.status,
            _reason(plan.status),
            b"1.1",
            headers,
            FRAMING_LENGTH,
            plan.length,
            True,
        )
        if request.method == b"HEAD" or plan.length == 0:
            self._emit_head(head)
            self._emit_end()
            return

        reader = aiofiles.threadpool.wrap(opened.file, loop=asyncio.get_running_loop())
        if plan.first:
            try:
                await reader.seek(plan.first)
            except OSError as exc:
                self._emit_error(OriginError(f"cannot read {_shown(request.target)}: {exc.strerror}"))
                return
        self._emit_head(head)
        remaining = plan.length
        # The phase check ends the loop at once when the sink cancels from a callback.
        while remaining > 0 and self._phase is _Phase.SENDING_BODY:
            await self._readable.wait()
            try:
                chunk = await reader.read(min(self._origin.chunk_size, remaining))
            except OSError as exc:
                detail = f"reading {_shown(request.target)} failed: {exc.strerror}"
                self._emit_error(OriginResponseIncomplete(detail))
                return
            if not chunk:
                self._emit_error(OriginResponseIncomplete(f"{_shown(request.target)} shrank while it was sent"))
                return
            remaining -= len(chunk)
            self._emit_data(chunk)
        self._emit_end()


async def _close_shielded(file: BinaryIO) -> None:
    # In the executor: BufferedReader.close() takes the lock a read still
    # running in another thread holds, so the descriptor is never closed under
    # it.  Shielded: a cancellation during the close must not leak the file.
    job = asyncio.get_running_loop().run_in_executor(None, file.close)
    await asyncio.shield(job)


def _shown(target: bytes) -> str:
    """A request target for an error detail: quoted, and short enough for a log line."""
    return repr(target[:200].decode("latin-1"))


def _reason(status: int) -> bytes:
    return http.HTTPStatus(status).phrase.encode("ascii")


def _small_response(status: int, method: bytes, extra: Headers | None = None) -> tuple[ResponseHead, bytes]:
    """A response made here with a one-line text/plain body (none for HEAD).

    These are the origin's own answers, like nginx's error pages, not proxy
    errors: no Proxy-Status.
    """
    reason = _reason(status)
    body = b"%d %s\n" % (status, reason)
    headers: Headers = [
        *(extra or ()),
        (b"Content-Type", b"text/plain; charset=utf-8"),
        (b"Content-Length", b"%d" % len(body)),
        (b"Date", http_date()),
    ]
    head = ResponseHead(status, reason, b"1.1", headers, FRAMING_LENGTH, len(body), True)
    return head, b"" if method == b"HEAD" else body


# --- The origin ---------------------------------------------------------------------


class FileOrigin:
    """An `Upstream` that serves the files under one directory."""

    def __init__(
        self,
        name: str,
        directory: Path,
        index: str = "index.html",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        if not index or "/" in index or index in (".", ".."):
            raise ValueError(f"index must be a plain file name, not {index!r}")
        self.name = name
        self.directory = Path(directory)
        self.index = index
        self.chunk_size = chunk_size
        self.is_closed = False
        self._exchanges: set[FileExchange] = set()

    def __repr__(self) -> str:
        state = "closed" if self.is_closed else f"{len(self._exchanges)} active"
        return f"<FileOrigin {self.name!r} {str(self.directory)!r} {state}>"

    def start(self, request: OutboundRequest, sink: ResponseSink) -> FileExchange:
        """Begin serving `request`; the sink is first called on a later loop iteration."""
        exchange = FileExchange(self, request, sink)
        self._exchanges.add(exchange)
        exchange._task.add_done_callback(functools.partial(self._on_exchange_done, exchange))
        return exchange

    def _on_exchange_done(self, exchange: FileExchange, task: asyncio.Task[None]) -> None:
        self._exchanges.discard(exchange)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # Only a sink raising inside the task boundary's own error report gets here.
            log.error("%r ended with an exception", exchange, exc_info=exc)

    async def close(self) -> None:
        """Cancel every running exchange and wait until their tasks have ended."""
        self.is_closed = True
        exchanges = list(self._exchanges)
        for exchange in exchanges:
            exchange.cancel()
        if exchanges:
            await asyncio.wait([exchange._task for exchange in exchanges])
