"""The typed, frozen settings of one muxproxy deployment.

Strategy: pydantic v2 models, frozen and with unknown keys forbidden, so a
typo in the file is an error and one loaded `Config` can be shared by every
task.  The value types TOML lacks (durations, sizes, "host:port") are parsed
by small `BeforeValidator`s into float seconds, int bytes and `Address`.

Every problem is a pydantic error whose `loc` points at the offending key, so
`load.py` can print "file: key: problem" for all of them at once.  Cross-field
checks report several keys by raising a `ValidationError` of their own from a
model validator; pydantic-core merges its line errors, with their locations,
into the outer error (pydantic-core PR #510 made that a supported path).  Our
own problems use the error type `PROBLEM` and carry their final wording.

Relative paths (origin directories, the access log) are resolved against the
configuration file's directory, passed as validation context
`{"base_dir": Path}`; without context they resolve against the working
directory.

Each default names its reason and precedent next to it; docs/configuration.md
repeats them for users.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from proxy.core.http1.fields import is_valid_host

#: pydantic error type of every problem this module words itself.
PROBLEM = "muxproxy_config"

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

_FROZEN = ConfigDict(frozen=True, extra="forbid")


def toml_repr(value: object) -> str:
    """A value as the user wrote it in TOML, on one line (for error messages)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # quotes it, escapes newlines
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "an array"
    return str(value)


def _problem(message: str) -> PydanticCustomError:
    # No context is passed, so pydantic uses `message` verbatim (braces in
    # user values are never treated as a template).
    return PydanticCustomError(PROBLEM, message)


def _problems(title: str, problems: list[tuple[tuple[str | int, ...], str, object]]) -> ValidationError:
    """One ValidationError with a line per (loc, message, input), loc relative
    to the model whose validator raises it."""
    line_errors = [{"type": _problem(why), "loc": loc, "input": value} for loc, why, value in problems]
    return ValidationError.from_exception_data(title, line_errors)


# --- Value types --------------------------------------------------------------

_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _parse_duration(value: object) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value) and value >= 0:
            return float(value)
    elif isinstance(value, str) and (match := _DURATION_RE.fullmatch(value)):
        return float(match[1]) * _DURATION_UNITS[match[2]]
    raise _problem(f'expected a duration like "15s" or a number of seconds, got {toml_repr(value)}')


def _require_positive_duration(seconds: float) -> float:
    if seconds <= 0:
        raise _problem("expected a duration greater than 0 (0 has no meaning here)")
    return seconds


#: Seconds, written as a number or as "250ms", "15s", "5m", "1h"; 0 allowed.
Duration = Annotated[float, BeforeValidator(_parse_duration)]
#: A Duration where 0 would make every attempt fail, so it is refused.
PositiveDuration = Annotated[Duration, AfterValidator(_require_positive_duration)]

# Units are case-sensitive: "kb" or "mb" could be read as bits, and strict
# beats guessing.  KB = 1000 and KiB = 1024, as in IEC 80000-13.
_SIZE_RE = re.compile(r"([0-9]+)(B|KB|MB|GB|KiB|MiB|GiB)?")
_SIZE_UNITS = {None: 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KiB": KiB, "MiB": MiB, "GiB": GiB}


def _parse_size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= 0:
            return value
    elif isinstance(value, str) and (match := _SIZE_RE.fullmatch(value)):
        return int(match[1]) * _SIZE_UNITS[match[2]]
    raise _problem(
        "expected a size in bytes: an integer or a string like"
        f' "512", "64KiB", "1MiB", "16KB" (units B, KB, MB, GB, KiB, MiB, GiB), got {toml_repr(value)}'
    )


def _require_positive_size(size: int) -> int:
    if size <= 0:
        raise _problem("expected a size greater than 0 (0 has no meaning here)")
    return size


#: Bytes, written as an integer or as "512", "64KiB", "1MiB", "16KB"; 0 allowed.
Size = Annotated[int, BeforeValidator(_parse_size)]
#: A Size where 0 would refuse everything, so it is refused.
PositiveSize = Annotated[Size, AfterValidator(_require_positive_size)]


# A host name or IPv4 address, or an IPv6 address in brackets (no zone ids).
_ADDRESS_RE = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+)):(?P<port>[0-9]{1,5})")


class Address(BaseModel):
    """A socket address; `host` is stored without the brackets of IPv6.

    Port 0 ("pick a free port") is only accepted for listeners.
    """

    model_config = _FROZEN

    host: str
    port: Annotated[int, Field(ge=0, le=65535)]

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse "host:port" or "[v6]:port"; raises ValueError with the problem."""
        match = _ADDRESS_RE.fullmatch(text)
        if match and match["ipv6"] is not None and not _is_ipv6(match["ipv6"]):
            match = None
        if match is None or int(match["port"]) > 65535:
            raise _problem(f'expected "host:port" (IPv6 in brackets: "[::1]:8080"), got {toml_repr(text)}')
        return cls(host=match["ipv6"] or match["name"], port=int(match["port"]))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _address_from_text(value: object) -> object:
    if isinstance(value, Address):
        return value
    if not isinstance(value, str):
        raise _problem(f'expected a string "host:port", got {toml_repr(value)}')
    return Address.parse(value)


def _require_port(address: Address) -> Address:
    if address.port == 0:
        raise _problem(f'port 0 ("pick a free port") is only allowed for listeners, got "{address}"')
    return address


#: "host:port"; port 0 lets the kernel pick a free port.
ListenAddress = Annotated[Address, BeforeValidator(_address_from_text)]
#: "host:port" of a server to connect to; port 1..65535.
ServerAddress = Annotated[ListenAddress, AfterValidator(_require_port)]


def _parse_workers(value: object) -> object:
    if value == "auto":
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 256:
        return value
    raise _problem(f'expected "auto" or a number of worker processes (1 to 256), got {toml_repr(value)}')


def _admin_address(value: object) -> object:
    if value == "off":
        return None
    if isinstance(value, str):
        try:
            return Address.parse(value)
        except PydanticCustomError:
            pass
    # "off" is half of what this key takes: someone who wrote "disabled" or
    # false wants the listener off, so the problem names both forms.
    raise _problem(f'expected "off" or "host:port" (IPv6 in brackets: "[::1]:9901"), got {toml_repr(value)}')


def _must_match(pattern: re.Pattern[str], expectation: str):
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise _problem(f"expected {expectation}, got {toml_repr(value)}")
        return value

    return AfterValidator(check)


# RFC 8941 §3.3.4 sf-token: ( ALPHA / "*" ) *( tchar / ":" / "/" ).
_SF_TOKEN_RE = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
# RFC 9110 §5.6.2 token (a field name).
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Visible ASCII (0x21-0x7E) except "#" and "?": a request target is ASCII
# (anything else arrives percent-encoded) and the router compares bytes; a
# prefix never contains a query or a fragment.
_PATH_RE = re.compile(r"/[!-\"$->@-~]*")
# One path segment: the index file can not climb out of its directory.
_FILE_NAME_RE = re.compile(r"[^/\x00]+")
_ORIGIN_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
# A DNS-style name, optionally "*." in front, or an IPv6 literal in brackets.
# re.ASCII: without it IGNORECASE lets [a-z] match the Kelvin sign and the
# long s, and the router encodes host names as ASCII.
_HOST_PATTERN_RE = re.compile(
    r"(?:\*\.)?[a-z0-9_-]+(?:\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\]", re.IGNORECASE | re.ASCII
)

PathPrefix = Annotated[
    StrictStr, _must_match(_PATH_RE, 'a path starting with "/" in visible ASCII, without "?" or "#"')
]
FieldName = Annotated[
    StrictStr, _must_match(_TOKEN_RE, "a header field name (an RFC 9110 token)"), AfterValidator(str.lower)
]
OriginName = Annotated[
    str, _must_match(_ORIGIN_NAME_RE, 'an origin name of letters, digits, "_", "." and "-"')
]
HostPattern = Annotated[
    StrictStr,
    _must_match(_HOST_PATTERN_RE, 'a host name without port, optionally starting with "*."'),
    AfterValidator(str.lower),
]


def _non_empty(value: object) -> object:
    # Checked on the raw array: pydantic's min_length counts items that passed
    # validation, so an array of bad items would also be reported as empty.
    if isinstance(value, list) and not value:
        raise _problem("expected at least one entry, got an empty array")
    return value


#: An array that must have at least one entry.
NonEmpty = BeforeValidator(_non_empty)


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _resolve(text: str, info: ValidationInfo) -> Path:
    base_dir = (info.context or {}).get("base_dir") or Path.cwd()
    return (Path(base_dir) / text).resolve()


# --- Sections -----------------------------------------------------------------


class ServerSettings(BaseModel):
    """[server]: who this deployment says it is."""

    model_config = _FROZEN

    #: Pseudonym in Via and Proxy-Status.  RFC 9209 §2 wants it to identify
    #: the deployment, not the product, so set it; the product name is only a
    #: placeholder.  An RFC 8941 sf-token because Proxy-Status requires one.
    name: Annotated[
        StrictStr, _must_match(_SF_TOKEN_RE, 'an RFC 8941 token (a letter or "*" first)')
    ] = "muxproxy"
    #: Worker processes sharing the listeners, or "auto" for one per core
    #: (nginx's worker_processes auto): the event loop runs on one core, so
    #: one worker per core uses the machine.  1 runs without a master.
    workers: Annotated[int | str, BeforeValidator(_parse_workers)] = "auto"
    #: On SIGTERM, how long in-flight requests and open streams get to
    #: finish before the rest is cut.  30 s: systemd's default
    #: TimeoutStopSec is 90 s, and a graceful stop must end well before it.
    shutdown_timeout: PositiveDuration = 30.0

    @property
    def worker_count(self) -> int:
        return (os.cpu_count() or 1) if self.workers == "auto" else int(self.workers)


class ListenerSettings(BaseModel):
    """One [[listener]]: an address to accept client connections on."""

    model_config = _FROZEN

    address: ListenAddress
    #: PEM certificate chain and private key: both make this a TLS listener
    #: (ALPN offers http/1.1 only).  Relative paths: from the config file.
    tls_certificate: Path | None = None
    tls_key: Path | None = None

    @field_validator("tls_certificate", "tls_key", mode="before")
    @classmethod
    def _resolve_tls_file(cls, value: object, info: ValidationInfo) -> Path:
        if not isinstance(value, str) or not value:
            raise _problem(f"expected a file path, got {toml_repr(value)}")
        path = _resolve(value, info)
        if not path.is_file():
            raise _problem(f"no such file: {toml_repr(str(path))}")
        return path

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_certificate is None) != (self.tls_key is None):
            missing = "tls_key" if self.tls_key is None else "tls_certificate"
            raise _problems(type(self).__name__, [((missing,), "TLS needs both tls_certificate and tls_key", None)])
        if self.tls_certificate is not None:
            # Load them now, so that a bad file is a config error at start or
            # reload rather than a failure when the listener opens.
            try:
                self.tls_context()
            except (ssl.SSLError, OSError) as exc:
                why = f"cannot load the certificate and key: {exc}"
                raise _problems(type(self).__name__, [(("tls_certificate",), why, str(self.tls_certificate))])
        return self

    @property
    def is_tls(self) -> bool:
        return self.tls_certificate is not None

    def tls_context(self) -> ssl.SSLContext:
        """A new server context for this listener: TLS 1.2 or later (RFC 8996
        deprecates 1.0 and 1.1), ALPN http/1.1 only."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.load_certificate(context)
        context.set_alpn_protocols(["http/1.1"])
        return context

    def load_certificate(self, context: ssl.SSLContext) -> None:
        """(Re)load the certificate and key into `context` (a reload serves a
        renewed certificate to new connections)."""
        # An empty pass phrase: without one, OpenSSL prompts on the terminal
        # for an encrypted key and blocks the start; with it, an encrypted
        # key is a clear load error (there is no pass phrase setting).
        context.load_cert_chain(self.tls_certificate, self.tls_key, password=b"")


class AdminSettings(BaseModel):
    """[admin]: /metrics, /healthz and /readyz on a listener of their own."""

    model_config = _FROZEN

    #: Loopback only by default: metrics show routes and origins, which are
    #: nobody else's business (Envoy's admin port is 9901 too).  "off"
    #: disables the admin listener.
    address: Annotated[Address | None, BeforeValidator(_admin_address)] = Address(host="127.0.0.1", port=9901)


class MuxSettings(BaseModel):
    """[mux]: the multiplexing endpoint and the bounds of each stream."""

    model_config = _FROZEN

    #: Served by the proxy itself, so no route may equal it (paths below it
    #: are ordinary paths).
    path: PathPrefix = "/_mux"
    #: A CRLF is written when an open outer response has been quiet this long,
    #: well under the 60 s idle timeouts of common load balancers (AWS ALB,
    #: nginx proxy_read_timeout); 0 disables.
    heartbeat: Duration = 15.0
    #: Inner requests in flight per stream; nginx http2_max_concurrent_streams
    #: is 128, RFC 9113 §6.5.2 recommends at least 100.
    max_in_flight: Annotated[StrictInt, Field(ge=1)] = 128
    #: Inner response bodies up to this size are buffered and sent with
    #: Content-Length; larger or unknown ones stream chunked (0: always stream).
    #: nginx proxy_buffers 8 x 8k = 64k.
    max_buffered_response: Size = 64 * KiB
    #: Buffered response bytes per stream, and separately held request body
    #: bytes per stream, before backpressure: 64 full buffered responses.
    max_stream_buffer: PositiveSize = 4 * MiB
    #: Inner request bodies are buffered whole; nginx client_max_body_size 1m.
    max_inner_body: PositiveSize = 1 * MiB
    #: A stream with nothing in flight that receives nothing this long is
    #: ended; 5 minutes lets a client keep a quiet stream open between bursts.
    idle_timeout: PositiveDuration = 300.0
    #: zlib's own default level, its balance of speed and ratio.
    gzip_level: Annotated[StrictInt, Field(ge=1, le=9)] = 6
    #: Fields of the outer request that inner requests inherit when they do
    #: not send their own: the client's identity, not the transport's.
    inherit_headers: tuple[FieldName, ...] = ("cookie", "authorization", "user-agent", "accept-language")


class LimitSettings(BaseModel):
    """[limits]: per-client bounds on the plain HTTP side."""

    model_config = _FROZEN

    #: Request line plus fields; h11 uses 16 KiB, Apache 8190 bytes per line,
    #: nginx 4 x 8k large_client_header_buffers.
    max_head_size: PositiveSize = 16 * KiB
    #: Apache LimitRequestFields 100.
    max_header_count: Annotated[StrictInt, Field(ge=1)] = 100
    #: Plain-proxy bodies stream and are never buffered, so this only protects
    #: origins; 0 means unlimited.
    max_request_body: Size = 1 * GiB
    #: Origin response heads; origins send big Set-Cookie fields, so 4 x the
    #: request head limit.
    max_response_head_size: PositiveSize = 64 * KiB
    #: A deadline for the whole request head, not an inactivity timer, so a
    #: slowloris client trickling bytes is still cut off; HAProxy timeout
    #: http-request, nginx client_header_timeout.
    header_timeout: PositiveDuration = 10.0
    #: Longest gap between two reads of a request body; nginx client_body_timeout 60s.
    body_timeout: PositiveDuration = 60.0
    #: Idle client connection between requests; nginx keepalive_timeout 75s.
    keepalive_timeout: PositiveDuration = 75.0
    #: A client that accepts no bytes this long is disconnected; nginx send_timeout 60s.
    send_timeout: PositiveDuration = 60.0
    #: Open client connections per process; beyond it new ones are closed at
    #: once rather than failing accept() with EMFILE for everyone.  The C10k
    #: scale one event loop handles; raise `ulimit -n` above it plus the
    #: origin connections.
    max_client_connections: Annotated[StrictInt, Field(ge=1)] = 10000


class LogSettings(BaseModel):
    """[log]: where access lines go and how chatty the error log is."""

    model_config = _FROZEN

    #: "off", "stderr", "stdout", or a file path, stored absolute (relative
    #: paths are resolved against the config file's directory).  stderr
    #: because a service manager (systemd, docker) collects it.
    access: str = "stderr"
    #: Python logging level name; info logs starts, stops and failures.
    level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("access", mode="before")
    @classmethod
    def _resolve_access(cls, value: object, info: ValidationInfo) -> str:
        if not isinstance(value, str) or not value:
            raise _problem(f'expected "off", "stderr", "stdout" or a file path, got {toml_repr(value)}')
        if value in ("off", "stderr", "stdout"):
            return value
        return str(_resolve(value, info))


#: Keys that configure the connection pool of an origin with servers.
POOL_KEYS = ("max_connections", "idle_timeout", "queue_timeout", "max_queue", "max_fails", "fail_timeout")


class OriginSettings(BaseModel):
    """One [origin.NAME]: HTTP/1.x `servers`, or a `directory` of files."""

    model_config = _FROZEN

    #: HTTP/1.x servers, used round-robin.
    servers: Annotated[tuple[ServerAddress, ...], NonEmpty] | None = None
    #: The built-in file origin's root, stored absolute and resolved.
    directory: Path | None = None

    # Pool keys (servers only).
    #: Connections per origin across its servers; must cover the expected
    #: concurrency or requests queue (nginx upstream keepalive guidance).
    max_connections: Annotated[StrictInt, Field(ge=1)] = 128
    #: Idle pooled connection expiry: shorter than Apache's 5 s KeepAliveTimeout,
    #: the shortest common origin default, so we never reuse a connection the
    #: origin is about to close.
    idle_timeout: PositiveDuration = 4.0
    #: Wait for a free connection before answering 503; HAProxy timeout queue
    #: defaults to timeout connect, which we default to 5 s.
    queue_timeout: PositiveDuration = 5.0
    #: Requests waiting for a connection before 503 at once (0: never wait);
    #: bounds queue memory at 8 x max_connections.
    max_queue: Annotated[StrictInt, Field(ge=0)] = 1024
    #: A server failing max_fails times within fail_timeout is skipped for
    #: fail_timeout; nginx max_fails=1 fail_timeout=10s, HAProxy fall 3.
    max_fails: Annotated[StrictInt, Field(ge=1)] = 3
    fail_timeout: PositiveDuration = 10.0

    # Directory keys.
    #: File served for a directory request; the nginx and Apache default.
    index: Annotated[StrictStr, _must_match(_FILE_NAME_RE, 'a file name without "/"')] = "index.html"

    @property
    def is_directory(self) -> bool:
        return self.directory is not None

    @field_validator("directory", mode="before")
    @classmethod
    def _resolve_directory(cls, value: object, info: ValidationInfo) -> Path:
        if not isinstance(value, str) or not value:
            raise _problem(f"expected a directory path, got {toml_repr(value)}")
        path = _resolve(value, info)
        resolved = f"(resolved to {toml_repr(str(path))})"
        if not path.exists():
            raise _problem(f"directory {toml_repr(value)} does not exist {resolved}")
        if not path.is_dir():
            raise _problem(f"{toml_repr(value)} is not a directory {resolved}")
        return path

    @model_validator(mode="after")
    def _check_kind(self) -> Self:
        if self.servers is not None and self.directory is not None:
            raise _problem("has both servers and directory; set exactly one")
        if self.servers is None and self.directory is None:
            raise _problem("needs servers (an HTTP origin) or directory (a file origin)")
        if self.is_directory:
            misplaced = [(key, "only applies to an origin with servers") for key in POOL_KEYS]
        else:
            misplaced = [("index", "only applies to an origin with a directory")]
        set_keys = self.model_fields_set
        problems = [((key,), why, getattr(self, key)) for key, why in misplaced if key in set_keys]
        if problems:
            raise _problems(type(self).__name__, problems)
        return self


def _check_host_header(value: str) -> str:
    if value in ("preserve", "origin"):
        return value
    if not value or not value.isascii() or not is_valid_host(value.encode("ascii")):
        raise _problem(f'expected "preserve", "origin" or a host[:port] to send, got {toml_repr(value)}')
    return value


class RouteSettings(BaseModel):
    """One [[route]]: which requests go to which origin, and how."""

    model_config = _FROZEN

    #: Name of an [origin.NAME].
    origin: StrictStr
    #: Segment-aware path prefix (matching: proxy/core/routing.py).
    path: PathPrefix = "/"
    #: Exact host names or "*.example.com", lower-cased; empty matches any host.
    host: Annotated[tuple[HostPattern, ...], BeforeValidator(_one_or_many)] = ()
    #: Forward "/api/x" as "/x" (and "/api" as "/").
    strip_prefix: StrictBool = False
    #: "preserve" (the client's Host), "origin" (the server's host:port) or a
    #: literal Host value; preserving is what origins behind a reverse proxy
    #: usually expect for absolute links and cookies.
    host_header: Annotated[StrictStr, AfterValidator(_check_host_header)] = "preserve"
    #: Timeouts apply to origins with servers; a directory origin ignores them.
    #: HAProxy's documentation recommends 5s for timeout connect.
    connect_timeout: PositiveDuration = 5.0
    #: Longest gap between two reads from the origin; nginx proxy_read_timeout 60s.
    read_timeout: PositiveDuration = 60.0
    #: The whole exchange, head to last body byte; long enough for a slow
    #: download, short enough that a stuck origin frees its connection.
    total_timeout: PositiveDuration = 300.0


# --- The whole file -----------------------------------------------------------

#: Used when the file has no [[listener]]: loopback only, so a fresh install
#: exposes nothing; 8080 is the customary unprivileged HTTP port.
DEFAULT_LISTENER = ListenerSettings(address=Address(host="127.0.0.1", port=8080))


class Config(BaseModel):
    """A validated configuration file.

    TOML keys are `listener`, `origin` and `route`; the attributes are the
    plural names.  `source` is the file path as given and `base_dir` the
    directory relative paths were resolved against; both are set by
    `parse_config_text`, never by the file.
    """

    model_config = _FROZEN

    server: ServerSettings = Field(default_factory=ServerSettings)
    listeners: Annotated[tuple[ListenerSettings, ...], NonEmpty, Field(alias="listener")] = (
        DEFAULT_LISTENER,
    )
    mux: MuxSettings = Field(default_factory=MuxSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    origins: dict[OriginName, OriginSettings] = Field(default_factory=dict, alias="origin")
    routes: Annotated[tuple[RouteSettings, ...], NonEmpty, Field(alias="route")]
    source: str
    base_dir: Path

    @model_validator(mode="after")
    def _check_references(self) -> Self:
        addresses = [listener.address for listener in self.listeners]
        problems = [
            (("listener", index, "address"), why, str(addresses[index]))
            for index, why in _duplicate_listeners(addresses)
        ]
        admin = self.admin.address
        if admin is not None:
            for index, address in enumerate(addresses):
                if _same_socket(admin, address):
                    # Both would bind it: refuse it now (and so in `check` and
                    # on reload), not with EADDRINUSE half-way through a start.
                    why = f'"{admin}" is also the address of listener[{index + 1}]'
                    problems.append((("admin", "address"), why, str(admin)))
                    break
        for index, route in enumerate(self.routes):
            if route.origin not in self.origins:
                why = f"unknown origin {toml_repr(route.origin)}"
                problems.append((("route", index, "origin"), why, route.origin))
            if route.path == self.mux.path:
                # Only the endpoint itself is the proxy's; paths below it are
                # ordinary paths, routed like any other (docs/protocol.md §1).
                why = f"{toml_repr(route.path)} is mux.path, which the proxy serves itself"
                problems.append((("route", index, "path"), why, route.path))
        if problems:
            raise _problems(type(self).__name__, problems)
        return self

    def with_listeners(self, addresses: Sequence[Address]) -> Config:
        """A copy listening on `addresses` instead (for --listen).

        Raises ValueError if `addresses` is empty or repeats an address.
        """
        if not addresses:
            raise ValueError("at least one listener address is needed")
        if duplicates := _duplicate_listeners(addresses):
            raise ValueError(duplicates[0][1])
        listeners = tuple(ListenerSettings(address=address) for address in addresses)
        return self.model_copy(update={"listeners": listeners})


def _duplicate_listeners(addresses: Sequence[Address]) -> list[tuple[int, str]]:
    """(0-based index, problem) for each address listed before.  Port 0
    never repeats: each such listener gets its own free port."""
    duplicates = []
    for index, address in enumerate(addresses):
        for earlier in range(index):
            if _same_socket(address, addresses[earlier]):
                why = f'duplicate listener address "{address}" (also listener[{earlier + 1}])'
                duplicates.append((index, why))
                break
    return duplicates


def _same_socket(a: Address, b: Address) -> bool:
    """Would binding both fail?  The same host and port, or a wildcard
    ("0.0.0.0", "::") and an address of its family on the same port.
    Port 0 never collides: each gets its own free port."""
    if a.port == 0 or a.port != b.port:
        return False
    host_a, host_b = a.host.lower(), b.host.lower()
    if host_a == host_b:
        return True
    family_a, family_b = _ip_family(host_a), _ip_family(host_b)
    wildcard = host_a in _WILDCARDS or host_b in _WILDCARDS
    return wildcard and family_a is not None and family_a == family_b


#: The "any address" of each family: it takes the port on every address.
_WILDCARDS = frozenset({"0.0.0.0", "::"})


def _ip_family(host: str) -> int | None:
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None  # a name: only an equal name is known to collide
