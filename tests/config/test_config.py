"""Configuration loading: value types, defaults, and the exact error lines.

Every error test compares whole "file: key: problem" lines, because those
lines are the user interface of a configuration file.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from proxy.config import (
    Address,
    AdminSettings,
    Config,
    LimitSettings,
    ListenerSettings,
    LogSettings,
    MuxSettings,
    OriginSettings,
    RouteSettings,
    ServerSettings,
    default_config_path,
    load_config,
    load_default_config,
    parse_config_text,
)
from proxy.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

# The smallest valid file: one HTTP origin and one route to it.
MINIMAL = """
[origin.web]
servers = ["127.0.0.1:8081"]

[[route]]
origin = "web"
"""


def parse(text: str, base_dir: Path) -> Config:
    return parse_config_text(text, "test.toml", base_dir)


def problems(text: str, base_dir: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, base_dir)
    return str(caught.value).splitlines()


def with_key(section: str, key: str, value: str) -> str:
    """MINIMAL plus `key = value` (a TOML literal) in [section]."""
    return f"{MINIMAL}\n[{section}]\n{key} = {value}\n"


def write_tls_pair(ca: trustme.CA, certificate: Path, key: Path) -> None:
    """A PEM chain for "localhost" and its key, issued by `ca`, at these paths."""
    issued = ca.issue_cert("localhost", "127.0.0.1")
    for path in (certificate, key):
        path.parent.mkdir(parents=True, exist_ok=True)
    certificate.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    key.write_bytes(issued.private_key_pem.bytes())


def tls_listener(certificate: str | None, key: str | None) -> str:
    """MINIMAL plus one [[listener]] with these TLS keys (None: left out)."""
    lines = ["[[listener]]", 'address = "127.0.0.1:0"']
    if certificate is not None:
        lines.append(f"tls_certificate = {certificate}")
    if key is not None:
        lines.append(f"tls_key = {key}")
    return MINIMAL + "\n" + "\n".join(lines) + "\n"


# --- Defaults and the shipped files -------------------------------------------


def test_defaults_of_a_minimal_file(tmp_path: Path) -> None:
    config = parse(MINIMAL, tmp_path)
    assert config.server == ServerSettings() and config.server.name == "muxproxy"
    assert [str(listener.address) for listener in config.listeners] == ["127.0.0.1:8080"]
    assert config.mux == MuxSettings(
        path="/_mux",
        heartbeat=15.0,
        max_in_flight=128,
        max_buffered_response=64 * 1024,
        max_stream_buffer=4 * 1024 * 1024,
        max_inner_body=1024 * 1024,
        idle_timeout=300.0,
        gzip_level=6,
        inherit_headers=("cookie", "authorization", "user-agent", "accept-language"),
    )
    assert config.limits == LimitSettings(
        max_head_size=16 * 1024,
        max_header_count=100,
        max_request_body=1024**3,
        max_response_head_size=64 * 1024,
        header_timeout=10.0,
        body_timeout=60.0,
        keepalive_timeout=75.0,
        send_timeout=60.0,
        max_client_connections=10000,
    )
    assert config.log == LogSettings(access="stderr", level="info")
    web = config.origins["web"]
    assert web.servers == (Address(host="127.0.0.1", port=8081),) and not web.is_directory
    assert (web.max_connections, web.idle_timeout, web.queue_timeout) == (128, 4.0, 5.0)
    assert (web.max_queue, web.max_fails, web.fail_timeout) == (1024, 3, 10.0)
    assert config.routes == (
        RouteSettings(
            origin="web",
            path="/",
            host=(),
            strip_prefix=False,
            host_header="preserve",
            connect_timeout=5.0,
            read_timeout=60.0,
            total_timeout=300.0,
        ),
    )
    assert (config.source, config.base_dir) == ("test.toml", tmp_path)


def test_packaged_default_loads() -> None:
    path = default_config_path()
    assert path == REPO / "proxy" / "config" / "default.toml"
    config = load_default_config()
    assert config.source == str(path) and config.base_dir == path.parent
    assert [str(listener.address) for listener in config.listeners] == ["127.0.0.1:8080"]
    demo = config.origins["demo"]
    assert demo.is_directory and demo.directory == (REPO / "proxy" / "demo").resolve()
    assert [(route.path, route.origin) for route in config.routes] == [("/", "demo")]


def test_example_file_loads_and_states_the_real_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    config = load_config("conf/muxproxy.toml")
    assert config.source == "conf/muxproxy.toml"
    # The example sets every key; where it claims a default, it must be one.
    assert (config.server, config.mux, config.admin, config.limits, config.log) == (
        ServerSettings(),
        MuxSettings(),
        AdminSettings(),
        LimitSettings(),
        LogSettings(),
    )
    # Its only active listener is the default one, plain HTTP.
    assert config.listeners == (ListenerSettings(address=Address(host="127.0.0.1", port=8080)),)
    app, demo = config.origins["app"], config.origins["demo"]
    assert app == OriginSettings(servers=app.servers)
    assert demo.directory == (REPO / "proxy" / "demo").resolve()
    first, second = config.routes
    assert (first.origin, first.path, first.strip_prefix) == ("app", "/app/", True)
    assert (second.origin, second.path) == ("demo", "/")


def with_tls_example_enabled(example: str) -> str:
    """The example file with its commented-out TLS [[listener]] switched on:
    the block of "# " lines from "# [[listener]]" on, one "# " removed from
    each (so "# # why" stays a comment)."""
    lines = example.splitlines()
    start = lines.index("# [[listener]]")
    end = start
    while end < len(lines) and lines[end].startswith("# "):
        end += 1
    return "\n".join(lines[:start] + [line[2:] for line in lines[start:end]] + lines[end:]) + "\n"


def test_example_file_and_reference_cover_every_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    config = load_config("conf/muxproxy.toml")
    app, demo = config.origins["app"], config.origins["demo"]
    sections = [config.server, config.mux, config.admin, config.limits, config.log, config.routes[0]]
    for section in sections:
        assert section.model_fields_set == set(type(section).model_fields), type(section).__name__
    assert app.model_fields_set | demo.model_fields_set == set(OriginSettings.model_fields)

    # TLS keys name files the example cannot ship (and TOML has no null), so
    # the example shows them in a commented-out listener.  That block must be
    # a valid listener setting every key once switched on and given files.
    text = with_tls_example_enabled((REPO / "conf" / "muxproxy.toml").read_text(encoding="utf-8"))
    (tmp_path / "conf").mkdir()
    (tmp_path / "proxy").symlink_to(REPO / "proxy")  # for directory = "../proxy/demo"
    (tmp_path / "conf" / "muxproxy.toml").write_text(text, encoding="utf-8")
    tls_table = tomllib.loads(text)["listener"][1]
    write_tls_pair(trustme.CA(), tmp_path / "conf" / tls_table["tls_certificate"],
                   tmp_path / "conf" / tls_table["tls_key"])
    enabled = load_config(tmp_path / "conf" / "muxproxy.toml")
    plain, tls = enabled.listeners
    assert plain == config.listeners[0] and not plain.is_tls
    assert tls.is_tls and tls.model_fields_set == set(ListenerSettings.model_fields)
    assert tls.tls_certificate == (tmp_path / "conf" / tls_table["tls_certificate"]).resolve()

    reference = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    models = [ServerSettings, ListenerSettings, MuxSettings, AdminSettings, LimitSettings, LogSettings,
              OriginSettings, RouteSettings]
    for model in models:
        for key in model.model_fields:
            assert f"| `{key}` |" in reference, f"{model.__name__}.{key} is not in docs/configuration.md"


# --- Value types ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "seconds"),
    [("0", 0.0), ("15", 15.0), ("2.5", 2.5), ('"250ms"', 0.25), ('"15s"', 15.0), ('"1.5s"', 1.5),
     ('"5m"', 300.0), ('"1h"', 3600.0)],
)
def test_duration_accepts(literal: str, seconds: float, tmp_path: Path) -> None:
    assert parse(with_key("mux", "heartbeat", literal), tmp_path).mux.heartbeat == seconds


@pytest.mark.parametrize(
    ("literal", "shown"),
    [('"soon"', '"soon"'), ('"15"', '"15"'), ('"15 s"', '"15 s"'), ('"1d"', '"1d"'), ('"-1s"', '"-1s"'),
     ("-1", "-1"), ("inf", "inf"), ("nan", "nan"), ("true", "true"), ("[15]", "an array")],
)
def test_duration_rejects(literal: str, shown: str, tmp_path: Path) -> None:
    assert problems(with_key("mux", "heartbeat", literal), tmp_path) == [
        f'test.toml: mux.heartbeat: expected a duration like "15s" or a number of seconds, got {shown}'
    ]


def test_zero_is_refused_where_it_has_no_meaning(tmp_path: Path) -> None:
    assert problems(with_key("limits", "header_timeout", '"0s"'), tmp_path) == [
        "test.toml: limits.header_timeout: expected a duration greater than 0 (0 has no meaning here)"
    ]
    assert problems(with_key("mux", "max_stream_buffer", "0"), tmp_path) == [
        "test.toml: mux.max_stream_buffer: expected a size greater than 0 (0 has no meaning here)"
    ]
    assert parse(with_key("limits", "max_request_body", "0"), tmp_path).limits.max_request_body == 0


@pytest.mark.parametrize(
    ("literal", "size"),
    [("0", 0), ("512", 512), ('"512"', 512), ('"10B"', 10), ('"16KB"', 16_000), ('"64KiB"', 65_536),
     ('"1MB"', 1_000_000), ('"1MiB"', 1_048_576), ('"1GB"', 10**9), ('"1GiB"', 2**30)],
)
def test_size_accepts(literal: str, size: int, tmp_path: Path) -> None:
    config = parse(with_key("mux", "max_buffered_response", literal), tmp_path)
    assert config.mux.max_buffered_response == size


@pytest.mark.parametrize(
    ("literal", "shown"),
    [('"64kib"', '"64kib"'), ('"64 KiB"', '"64 KiB"'), ('"1.5MiB"', '"1.5MiB"'), ('"1TiB"', '"1TiB"'),
     ('""', '""'), ("-1", "-1"), ("1.5", "1.5"), ("true", "true")],
)
def test_size_rejects(literal: str, shown: str, tmp_path: Path) -> None:
    assert problems(with_key("mux", "max_buffered_response", literal), tmp_path) == [
        "test.toml: mux.max_buffered_response: expected a size in bytes: an integer or a string like"
        f' "512", "64KiB", "1MiB", "16KB" (units B, KB, MB, GB, KiB, MiB, GiB), got {shown}'
    ]


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [("127.0.0.1:8080", "127.0.0.1", 8080), ("[::1]:8080", "::1", 8080), ("localhost:1", "localhost", 1),
     ("origin.example-1.com:65535", "origin.example-1.com", 65535), ("0.0.0.0:0", "0.0.0.0", 0)],
)
def test_address_accepts(text: str, host: str, port: int, tmp_path: Path) -> None:
    config = parse(f'{MINIMAL}\n[[listener]]\naddress = "{text}"\n', tmp_path)
    address = config.listeners[0].address
    assert (address.host, address.port) == (host, port)
    assert str(address) == text and Address.parse(text) == address


@pytest.mark.parametrize(
    "text", ["127.0.0.1", "::1:8080", "[::1]", "[zz::1]:80", "[::1%eth0]:80", "host:65536", "host:", ":80",
             "a b:80", "host:8o", "host:+80"],
)
def test_address_rejects(text: str, tmp_path: Path) -> None:
    message = f'expected "host:port" (IPv6 in brackets: "[::1]:8080"), got "{text}"'
    assert problems(f'{MINIMAL}\n[[listener]]\naddress = "{text}"\n', tmp_path) == [
        f"test.toml: listener[1].address: {message}"
    ]
    with pytest.raises(ValueError, match="expected"):
        Address.parse(text)


def test_address_must_be_a_string(tmp_path: Path) -> None:
    assert problems(f"{MINIMAL}\n[[listener]]\naddress = 8080\n", tmp_path) == [
        'test.toml: listener[1].address: expected a string "host:port", got 8080'
    ]


def test_port_zero_only_for_listeners(tmp_path: Path) -> None:
    text = '[origin.web]\nservers = ["127.0.0.1:0"]\n[[route]]\norigin = "web"\n'
    assert problems(text, tmp_path) == [
        'test.toml: origin.web.servers[1]: port 0 ("pick a free port") is only allowed for listeners,'
        ' got "127.0.0.1:0"'
    ]


PATH_PROBLEM = 'expected a path starting with "/" in visible ASCII, without "?" or "#", got'


@pytest.mark.parametrize(
    ("key", "literal", "problem"),
    [
        ("max_in_flight", "0", "max_in_flight: expected a number >= 1, got 0"),
        ("max_in_flight", '"128"', 'max_in_flight: expected an integer, got "128"'),
        ("max_in_flight", "1.5", "max_in_flight: expected an integer, got 1.5"),
        ("max_in_flight", "true", "max_in_flight: expected an integer, got true"),
        ("gzip_level", "10", "gzip_level: expected a number <= 9, got 10"),
        ("gzip_level", "0", "gzip_level: expected a number >= 1, got 0"),
        ("path", '"mux"', f'path: {PATH_PROBLEM} "mux"'),
        ("path", '"/a?b"', f'path: {PATH_PROBLEM} "/a?b"'),
        ("path", '"/a#b"', f'path: {PATH_PROBLEM} "/a#b"'),
        ("path", '"/a b"', f'path: {PATH_PROBLEM} "/a b"'),
        ("path", '"/é"', f'path: {PATH_PROBLEM} "/é"'),
        ("path", "1", "path: expected a string, got 1"),
        ("inherit_headers", '"cookie"', 'inherit_headers: expected an array, got "cookie"'),
        (
            "inherit_headers",
            '["cookie", "bad header"]',
            'inherit_headers[2]: expected a header field name (an RFC 9110 token), got "bad header"',
        ),
    ],
)
def test_mux_value_problems(key: str, literal: str, problem: str, tmp_path: Path) -> None:
    assert problems(with_key("mux", key, literal), tmp_path) == [f"test.toml: mux.{problem}"]


def test_inherit_headers_are_stored_lower_case(tmp_path: Path) -> None:
    config = parse(with_key("mux", "inherit_headers", '["Cookie", "X-Tenant"]'), tmp_path)
    assert config.mux.inherit_headers == ("cookie", "x-tenant")


@pytest.mark.parametrize("name", ["edge-1.example", "*proxy", "a:b/c", "Proxy_9"])
def test_server_name_accepts_sf_tokens(name: str, tmp_path: Path) -> None:
    assert parse(with_key("server", "name", f'"{name}"'), tmp_path).server.name == name


@pytest.mark.parametrize("name", ["1edge", "a b", "", "é", "a,b"])
def test_server_name_rejects_non_tokens(name: str, tmp_path: Path) -> None:
    assert problems(with_key("server", "name", f'"{name}"'), tmp_path) == [
        f'test.toml: server.name: expected an RFC 8941 token (a letter or "*" first), got "{name}"'
    ]


# --- [server] workers and shutdown_timeout ----------------------------------------

WORKERS_PROBLEM = 'expected "auto" or a number of worker processes (1 to 256), got'


def test_workers_auto_is_one_per_core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for text in (MINIMAL, with_key("server", "workers", '"auto"')):
        server = parse(text, tmp_path).server
        assert server.workers == "auto" and server.worker_count == os.cpu_count()
    # Counted when asked, not when parsed; a platform that cannot tell gets one.
    server = parse(MINIMAL, tmp_path).server
    monkeypatch.setattr(os, "cpu_count", lambda: 12)
    assert server.worker_count == 12
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert server.worker_count == 1


@pytest.mark.parametrize("count", [1, 2, 256])
def test_workers_accepts_1_to_256(count: int, tmp_path: Path) -> None:
    server = parse(with_key("server", "workers", str(count)), tmp_path).server
    assert (server.workers, server.worker_count) == (count, count)


@pytest.mark.parametrize(
    ("literal", "shown"),
    [("0", "0"), ("257", "257"), ("-1", "-1"), ('"many"', '"many"'), ("true", "true"), ("false", "false"),
     ('"4"', '"4"'), ('"AUTO"', '"AUTO"'), ('""', '""'), ("2.0", "2.0"), ("[2]", "an array")],
)
def test_workers_rejects(literal: str, shown: str, tmp_path: Path) -> None:
    assert problems(with_key("server", "workers", literal), tmp_path) == [
        f"test.toml: server.workers: {WORKERS_PROBLEM} {shown}"
    ]


@pytest.mark.parametrize(
    ("literal", "seconds"), [("10", 10.0), ("0.5", 0.5), ('"45s"', 45.0), ('"1.5m"', 90.0), ('"250ms"', 0.25)]
)
def test_shutdown_timeout_accepts(literal: str, seconds: float, tmp_path: Path) -> None:
    assert parse(MINIMAL, tmp_path).server.shutdown_timeout == 30.0
    assert parse(with_key("server", "shutdown_timeout", literal), tmp_path).server.shutdown_timeout == seconds


@pytest.mark.parametrize(
    ("literal", "problem"),
    [
        ("0", "expected a duration greater than 0 (0 has no meaning here)"),
        ('"0s"', "expected a duration greater than 0 (0 has no meaning here)"),
        ('"30"', 'expected a duration like "15s" or a number of seconds, got "30"'),
        ("-5", 'expected a duration like "15s" or a number of seconds, got -5'),
        ('"forever"', 'expected a duration like "15s" or a number of seconds, got "forever"'),
    ],
)
def test_shutdown_timeout_rejects(literal: str, problem: str, tmp_path: Path) -> None:
    assert problems(with_key("server", "shutdown_timeout", literal), tmp_path) == [
        f"test.toml: server.shutdown_timeout: {problem}"
    ]


def test_server_problems_are_reported_together(tmp_path: Path) -> None:
    text = f'{MINIMAL}\n[server]\nworkers = 0\nshutdown_timeout = "soon"\nthreads = 4\n'
    assert problems(text, tmp_path) == [
        f"test.toml: server.workers: {WORKERS_PROBLEM} 0",
        'test.toml: server.shutdown_timeout: expected a duration like "15s" or a number of seconds, got "soon"',
        "test.toml: server.threads: unknown key",
    ]


# --- [admin] --------------------------------------------------------------------------


def test_admin_address_default_off_and_values(tmp_path: Path) -> None:
    assert parse(MINIMAL, tmp_path).admin.address == Address(host="127.0.0.1", port=9901)
    assert parse(with_key("admin", "address", '"off"'), tmp_path).admin.address is None
    assert parse(with_key("admin", "address", '"[::1]:9901"'), tmp_path).admin.address == Address(
        host="::1", port=9901
    )
    # Port 0 picks a free port, as for listeners (the tests use it).
    assert parse(with_key("admin", "address", '"127.0.0.1:0"'), tmp_path).admin.address == Address(
        host="127.0.0.1", port=0
    )


@pytest.mark.parametrize(
    ("literal", "shown"),
    [('"9901"', '"9901"'), ('"::1:9901"', '"::1:9901"'), ('"localhost:65536"', '"localhost:65536"'),
     ('"[::1]"', '"[::1]"'), ('""', '""'), ('"Off"', '"Off"'), ("9901", "9901"), ("false", "false"),
     ("{}", "a table")],
)
def test_admin_address_rejects(literal: str, shown: str, tmp_path: Path) -> None:
    # One line naming the key and the value as written; what "expected ..."
    # says is test_admin_address_problem_names_off's business.
    [line] = problems(with_key("admin", "address", literal), tmp_path)
    assert line.startswith("test.toml: admin.address: expected ") and line.endswith(f", got {shown}"), line


@pytest.mark.parametrize("literal", ['"disabled"', "false"])
def test_admin_address_problem_names_off(literal: str, tmp_path: Path) -> None:
    # "off" is half of what admin.address accepts, so a refusal must say so,
    # as workers names "auto" and log.access names "off": someone who writes
    # "disabled" or false is trying to turn the listener off.
    [line] = problems(with_key("admin", "address", literal), tmp_path)
    assert line.startswith("test.toml: admin.address: expected ") and '"off"' in line, line


def test_admin_address_may_not_be_a_listener_address(tmp_path: Path) -> None:
    # Both would bind it, so this can never start: validation (and so
    # `muxproxy check` and a reload) must refuse it, as it refuses two equal
    # listeners, rather than the start failing with EADDRINUSE once the proxy
    # listener is already open.
    text = f'{MINIMAL}\n[[listener]]\naddress = "127.0.0.1:9000"\n[admin]\naddress = "127.0.0.1:9000"\n'
    lines = problems(text, tmp_path)
    assert len(lines) == 1 and lines[0].startswith("test.toml: admin.address: "), lines
    assert "listener[1]" in lines[0], lines
    # Port 0 never collides, as between listeners.
    text = f'{MINIMAL}\n[[listener]]\naddress = "127.0.0.1:0"\n[admin]\naddress = "127.0.0.1:0"\n'
    assert parse(text, tmp_path).admin.address == Address(host="127.0.0.1", port=0)


def test_admin_unknown_key(tmp_path: Path) -> None:
    assert problems(with_key("admin", "port", "9901"), tmp_path) == ["test.toml: admin.port: unknown key"]


# --- [[listener]] TLS ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


def test_tls_listener_loads_both_files_relative_to_the_config(tmp_path: Path, tls_ca: trustme.CA) -> None:
    write_tls_pair(tls_ca, tmp_path / "tls" / "chain.pem", tmp_path / "tls" / "key.pem")
    config = parse(tls_listener('"tls/chain.pem"', '"tls/key.pem"'), tmp_path)
    [listener] = config.listeners
    assert listener.is_tls
    assert listener.tls_certificate == (tmp_path / "tls" / "chain.pem").resolve()
    assert listener.tls_key == (tmp_path / "tls" / "key.pem").resolve()
    # Absolute paths are taken as they are.
    config = parse(tls_listener(f'"{tmp_path}/tls/chain.pem"', f'"{tmp_path}/tls/key.pem"'), tmp_path)
    assert config.listeners[0].tls_certificate == (tmp_path / "tls" / "chain.pem").resolve()
    assert not parse(tls_listener(None, None), tmp_path).listeners[0].is_tls


def test_plain_and_tls_listeners_side_by_side(tmp_path: Path, tls_ca: trustme.CA) -> None:
    write_tls_pair(tls_ca, tmp_path / "chain.pem", tmp_path / "key.pem")
    text = tls_listener('"chain.pem"', '"key.pem"') + '[[listener]]\naddress = "127.0.0.1:8080"\n'
    assert [listener.is_tls for listener in parse(text, tmp_path).listeners] == [True, False]


def test_tls_needs_both_keys_and_names_the_missing_one(tmp_path: Path, tls_ca: trustme.CA) -> None:
    write_tls_pair(tls_ca, tmp_path / "chain.pem", tmp_path / "key.pem")
    assert problems(tls_listener('"chain.pem"', None), tmp_path) == [
        "test.toml: listener[1].tls_key: TLS needs both tls_certificate and tls_key"
    ]
    assert problems(tls_listener(None, '"key.pem"'), tmp_path) == [
        "test.toml: listener[1].tls_certificate: TLS needs both tls_certificate and tls_key"
    ]


def test_tls_file_that_does_not_exist(tmp_path: Path, tls_ca: trustme.CA) -> None:
    write_tls_pair(tls_ca, tmp_path / "chain.pem", tmp_path / "key.pem")
    missing = (tmp_path / "tls" / "missing.pem").resolve()
    assert problems(tls_listener('"tls/missing.pem"', '"key.pem"'), tmp_path) == [
        f'test.toml: listener[1].tls_certificate: no such file: "{missing}"'
    ]
    assert problems(tls_listener('"chain.pem"', '"tls/missing.pem"'), tmp_path) == [
        f'test.toml: listener[1].tls_key: no such file: "{missing}"'
    ]
    # A directory is not a file either; both keys are reported at once.
    (tmp_path / "tls").mkdir()
    assert problems(tls_listener('"tls"', '"tls/missing.pem"'), tmp_path) == [
        f'test.toml: listener[1].tls_certificate: no such file: "{(tmp_path / "tls").resolve()}"',
        f'test.toml: listener[1].tls_key: no such file: "{missing}"',
    ]


@pytest.mark.parametrize(("literal", "shown"), [('""', '""'), ("443", "443"), ('["a.pem"]', "an array")])
def test_tls_file_must_be_a_path(literal: str, shown: str, tmp_path: Path, tls_ca: trustme.CA) -> None:
    write_tls_pair(tls_ca, tmp_path / "chain.pem", tmp_path / "key.pem")
    assert problems(tls_listener(literal, '"key.pem"'), tmp_path) == [
        f"test.toml: listener[1].tls_certificate: expected a file path, got {shown}"
    ]


CANNOT_LOAD = "test.toml: listener[1].tls_certificate: cannot load the certificate and key: "


@pytest.mark.parametrize(
    ("certificate", "key"),
    [
        ("key.pem", "key.pem"),  # a key where the certificate belongs
        ("garbage.pem", "garbage.pem"),
        ("chain.pem", "garbage.pem"),
        ("chain.pem", "chain.pem"),  # a certificate where the key belongs
        ("chain.pem", "other-key.pem"),  # a key, but not this certificate's
        ("empty.pem", "key.pem"),
    ],
)
def test_tls_files_that_are_not_a_certificate_and_its_key(
    certificate: str, key: str, tmp_path: Path, tls_ca: trustme.CA
) -> None:
    write_tls_pair(tls_ca, tmp_path / "chain.pem", tmp_path / "key.pem")
    write_tls_pair(tls_ca, tmp_path / "other-chain.pem", tmp_path / "other-key.pem")
    (tmp_path / "garbage.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    (tmp_path / "empty.pem").write_bytes(b"")
    [line] = problems(tls_listener(f'"{certificate}"', f'"{key}"'), tmp_path)
    # The rest is OpenSSL's own reason ("[SSL] PEM lib", "key values mismatch").
    assert line.startswith(CANNOT_LOAD), line


def test_tls_files_are_checked_at_every_load(tmp_path: Path, tls_ca: trustme.CA) -> None:
    # Validation is what a reload runs: a file broken since the last load is
    # a config error then, not a listener failing later.
    write_tls_pair(tls_ca, tmp_path / "chain.pem", tmp_path / "key.pem")
    text = tls_listener('"chain.pem"', '"key.pem"')
    assert parse(text, tmp_path).listeners[0].is_tls
    (tmp_path / "key.pem").write_bytes(b"truncated\n")
    [line] = problems(text, tmp_path)
    assert line.startswith(CANNOT_LOAD), line


def test_encrypted_key_is_refused_without_prompting_for_a_pass_phrase(tmp_path: Path, tls_ca: trustme.CA) -> None:
    # A config check must never wait for someone at a terminal: `muxproxy`
    # run from a shell, or a reload, would hang on "Enter PEM pass phrase:".
    # The check runs in a child whose controlling terminal is a pty we watch.
    write_tls_pair(tls_ca, tmp_path / "chain.pem", tmp_path / "key.pem")
    plain_key = serialization.load_pem_private_key((tmp_path / "key.pem").read_bytes(), password=None)
    (tmp_path / "key.pem").write_bytes(
        plain_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    script = textwrap.dedent(
        """
        import os, sys
        from pathlib import Path
        os.close(os.open(sys.argv[1], os.O_RDWR))  # after setsid: our controlling terminal
        from proxy.config import parse_config_text
        from proxy.errors import ConfigError
        try:
            parse_config_text(sys.argv[2], "test.toml", Path(sys.argv[3]))
        except ConfigError as exc:
            print(exc)
        else:
            print("loaded")
        """
    )
    master, slave = os.openpty()
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", script, os.ttyname(slave), tls_listener('"chain.pem"', '"key.pem"'),
             str(tmp_path)],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        os.close(slave)
        slave = -1
        try:
            out, err = child.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
        terminal = b""
        while select.select([master], [], [], 0)[0]:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child's side is closed
                break
            if not data:
                break
            terminal += data
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert terminal == b"" and child.returncode == 0, (terminal, err.decode()[-500:])
    assert out.decode().startswith(CANNOT_LOAD), out


def test_log_settings(tmp_path: Path) -> None:
    assert parse(with_key("log", "access", '"off"'), tmp_path).log.access == "off"
    resolved = parse(with_key("log", "access", '"logs/access.log"'), tmp_path).log.access
    assert resolved == str((tmp_path / "logs" / "access.log").resolve())
    assert problems(with_key("log", "access", '""'), tmp_path) == [
        'test.toml: log.access: expected "off", "stderr", "stdout" or a file path, got ""'
    ]
    assert problems(with_key("log", "level", '"verbose"'), tmp_path) == [
        'test.toml: log.level: expected one of "debug", "info", "warning" or "error", got "verbose"'
    ]


def route(extra: str) -> str:
    return f'[origin.web]\nservers = ["127.0.0.1:8081"]\n[[route]]\norigin = "web"\n{extra}\n'


def test_route_hosts_are_lower_cased_and_one_host_may_be_a_string(tmp_path: Path) -> None:
    assert parse(route('host = "Example.COM"'), tmp_path).routes[0].host == ("example.com",)
    hosts = parse(route('host = ["a.example", "*.Example.com", "[::1]"]'), tmp_path).routes[0].host
    assert hosts == ("a.example", "*.example.com", "[::1]")


@pytest.mark.parametrize(
    "host",
    ["Example.com:80", "*example.com", "a.*.com", "a/b", "", "example.com.", "é.example", "\u212a.example"],
)
def test_route_host_rejects(host: str, tmp_path: Path) -> None:
    assert problems(route(f'host = ["ok.example", "{host}"]'), tmp_path) == [
        f'test.toml: route[1].host[2]: expected a host name without port, optionally starting with "*.",'
        f' got "{host}"'
    ]


@pytest.mark.parametrize("value", ["preserve", "origin", "app.internal", "app.internal:8081", "[::1]:8081"])
def test_route_host_header_accepts(value: str, tmp_path: Path) -> None:
    assert parse(route(f'host_header = "{value}"'), tmp_path).routes[0].host_header == value


@pytest.mark.parametrize("value", ["a b", "a/b", "", "user@host"])
def test_route_host_header_rejects(value: str, tmp_path: Path) -> None:
    assert problems(route(f'host_header = "{value}"'), tmp_path) == [
        f'test.toml: route[1].host_header: expected "preserve", "origin" or a host[:port] to send, got "{value}"'
    ]


def test_route_values(tmp_path: Path) -> None:
    settings = parse(route('path = "/api/"\nstrip_prefix = true\nread_timeout = "2m"'), tmp_path).routes[0]
    assert (settings.path, settings.strip_prefix, settings.read_timeout) == ("/api/", True, 120.0)
    assert problems(route("strip_prefix = 1"), tmp_path) == [
        "test.toml: route[1].strip_prefix: expected true or false, got 1"
    ]


# --- Error messages: file, key, problem -----------------------------------------


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    assert problems("a = 1\n[mux\nb = 2\n", tmp_path) == [
        "test.toml: line 2 column 5: Expected ']' at the end of a table declaration"
    ]
    # tomllib reports some errors "at end of document"; we still give a position.
    assert problems('[server]\nname = "x', tmp_path) == ["test.toml: line 2 column 10: Unterminated string"]


def test_unknown_keys_are_errors(tmp_path: Path) -> None:
    text = f'colour = "red"\nsource = "x"\n{MINIMAL}typo = 1\n[mux]\nheart_beat = 1\n[origin.web.x]\n'
    assert problems(text, tmp_path) == [
        "test.toml: source: unknown key",
        "test.toml: mux.heart_beat: unknown key",
        "test.toml: origin.web.x: unknown key",
        "test.toml: route[1].typo: unknown key",
        "test.toml: colour: unknown key",
    ]


def test_plural_attribute_names_are_not_toml_keys(tmp_path: Path) -> None:
    text = f'{MINIMAL}\n[[routes]]\norigin = "web"\n'
    assert problems(text, tmp_path) == ["test.toml: routes: unknown key"]


def test_unknown_origin_names_the_route_counting_from_one(tmp_path: Path) -> None:
    text = f'{MINIMAL}\n[[route]]\npath = "/api"\norigin = "api"\n'
    assert problems(text, tmp_path) == ['test.toml: route[2].origin: unknown origin "api"']


def test_missing_directory(tmp_path: Path) -> None:
    text = '[origin.site]\ndirectory = "nowhere"\n[[route]]\norigin = "site"\n'
    resolved = (tmp_path / "nowhere").resolve()
    assert problems(text, tmp_path) == [
        f'test.toml: origin.site.directory: directory "nowhere" does not exist (resolved to "{resolved}")'
    ]
    (tmp_path / "file").write_text("")
    text = '[origin.site]\ndirectory = "file"\n[[route]]\norigin = "site"\n'
    resolved = (tmp_path / "file").resolve()
    assert problems(text, tmp_path) == [
        f'test.toml: origin.site.directory: "file" is not a directory (resolved to "{resolved}")'
    ]


def test_directory_origin(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    text = '[origin.site]\ndirectory = "site"\nindex = "home.html"\n[[route]]\norigin = "site"\n'
    site = parse(text, tmp_path).origins["site"]
    assert site.is_directory and site.directory == (tmp_path / "site").resolve() and site.index == "home.html"
    assert site.servers is None


def test_origin_needs_exactly_one_of_servers_or_directory(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    text = """
[origin.both]
servers = ["127.0.0.1:8081"]
directory = "site"
[origin.neither]
[[route]]
origin = "both"
"""
    assert problems(text, tmp_path) == [
        "test.toml: origin.both: has both servers and directory; set exactly one",
        "test.toml: origin.neither: needs servers (an HTTP origin) or directory (a file origin)",
    ]


def test_keys_of_the_other_kind_of_origin_are_errors(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    text = """
[origin.site]
directory = "site"
max_connections = 4
fail_timeout = "1s"
[origin.web]
servers = ["127.0.0.1:8081"]
index = "index.htm"
[[route]]
origin = "site"
"""
    assert problems(text, tmp_path) == [
        "test.toml: origin.site.max_connections: only applies to an origin with servers",
        "test.toml: origin.site.fail_timeout: only applies to an origin with servers",
        "test.toml: origin.web.index: only applies to an origin with a directory",
    ]


def test_origin_names_and_empty_servers(tmp_path: Path) -> None:
    text = '[origin."my api"]\nservers = []\n[[route]]\norigin = "my api"\n'
    assert problems(text, tmp_path) == [
        'test.toml: origin."my api": expected an origin name of letters, digits, "_", "." and "-", got "my api"',
        'test.toml: origin."my api".servers: expected at least one entry, got an empty array',
    ]


def test_route_must_not_be_the_mux_path(tmp_path: Path) -> None:
    assert problems(route('path = "/_mux"'), tmp_path) == [
        'test.toml: route[1].path: "/_mux" is mux.path, which the proxy serves itself'
    ]


@pytest.mark.parametrize("path", ["/", "/_muxer", "/_mu", "/_mux/", "/_mux/inner"])
def test_routes_beside_or_above_the_mux_path_are_fine(path: str, tmp_path: Path) -> None:
    assert parse(route(f'path = "{path}"'), tmp_path).routes[0].path == path


def test_duplicate_listener(tmp_path: Path) -> None:
    text = f'{MINIMAL}\n[[listener]]\naddress = "[::1]:8080"\n[[listener]]\naddress = "Localhost:8080"\n'
    text += '[[listener]]\naddress = "[::1]:8080"\n[[listener]]\naddress = "localhost:8080"\n'
    assert problems(text, tmp_path) == [
        'test.toml: listener[3].address: duplicate listener address "[::1]:8080" (also listener[1])',
        'test.toml: listener[4].address: duplicate listener address "localhost:8080" (also listener[2])',
    ]


def test_a_wildcard_listener_collides_with_an_address_of_its_family(tmp_path: Path) -> None:
    # Binding 0.0.0.0:8080 takes port 8080 on every IPv4 address, so a second
    # listener on 127.0.0.1:8080 could never open; "::" is bound IPv6-only,
    # so it leaves IPv4 alone.
    text = f'{MINIMAL}\n[[listener]]\naddress = "0.0.0.0:8080"\n[[listener]]\naddress = "[::]:8080"\n'
    text += '[[listener]]\naddress = "127.0.0.1:8080"\n[[listener]]\naddress = "[::1]:8080"\n'
    assert problems(text, tmp_path) == [
        'test.toml: listener[3].address: duplicate listener address "127.0.0.1:8080" (also listener[1])',
        'test.toml: listener[4].address: duplicate listener address "[::1]:8080" (also listener[2])',
    ]
    assert len(parse(text.split("[[listener]]\naddress = \"127")[0], tmp_path).listeners) == 2


def test_port_zero_listeners_never_collide(tmp_path: Path) -> None:
    text = f'{MINIMAL}\n[[listener]]\naddress = "127.0.0.1:0"\n[[listener]]\naddress = "127.0.0.1:0"\n'
    assert len(parse(text, tmp_path).listeners) == 2


def test_required_and_non_empty_sections(tmp_path: Path) -> None:
    assert problems("", tmp_path) == ["test.toml: route: required key is missing"]
    assert problems(f"listener = []\n{MINIMAL}", tmp_path) == [
        "test.toml: listener: expected at least one entry, got an empty array"
    ]
    assert problems("[mux]\n[route]\n", tmp_path) == ['test.toml: route: expected an array, got a table']
    assert problems(f'mux = "fast"\n{MINIMAL}', tmp_path) == ['test.toml: mux: expected a table, got "fast"']


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = f"""
[server]
name = "my proxy"
[[listener]]
address = "nowhere"
[mux]
heartbeat = "soon"
gzip_level = 11
{MINIMAL}
[[route]]
origin = "web"
connect_timeout = "forever"
"""
    assert problems(text, tmp_path) == [
        'test.toml: server.name: expected an RFC 8941 token (a letter or "*" first), got "my proxy"',
        'test.toml: listener[1].address: expected "host:port" (IPv6 in brackets: "[::1]:8080"), got "nowhere"',
        'test.toml: mux.heartbeat: expected a duration like "15s" or a number of seconds, got "soon"',
        "test.toml: mux.gzip_level: expected a number <= 9, got 11",
        'test.toml: route[2].connect_timeout: expected a duration like "15s" or a number of seconds,'
        ' got "forever"',
    ]


def test_cross_field_problems_are_reported_together(tmp_path: Path) -> None:
    text = f"""
{MINIMAL}
[[route]]
origin = "api"
path = "/_mux"
[[listener]]
address = "127.0.0.1:9000"
[[listener]]
address = "127.0.0.1:9000"
"""
    assert problems(text, tmp_path) == [
        'test.toml: listener[2].address: duplicate listener address "127.0.0.1:9000" (also listener[1])',
        'test.toml: route[2].origin: unknown origin "api"',
        'test.toml: route[2].path: "/_mux" is mux.path, which the proxy serves itself',
    ]


def test_user_values_cannot_break_the_one_line_per_problem_format(tmp_path: Path) -> None:
    assert problems(with_key("mux", "heartbeat", r'"1\n{x}"'), tmp_path) == [
        r'test.toml: mux.heartbeat: expected a duration like "15s" or a number of seconds, got "1\n{x}"'
    ]
    assert problems(f'{MINIMAL}\n[mux]\n"a\\nb" = 1\n', tmp_path) == [r'test.toml: mux."a\nb": unknown key']


# --- load_config ------------------------------------------------------------------


def test_load_config_names_the_file_as_given_and_resolves_against_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "site").mkdir()
    (tmp_path / "conf" / "proxy.toml").write_text(
        '[origin.site]\ndirectory = "../site"\n[[route]]\norigin = "site"\n[log]\naccess = "access.log"\n'
    )
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    config = load_config("../conf/proxy.toml")
    assert config.source == "../conf/proxy.toml"
    assert config.origins["site"].directory == (tmp_path / "site").resolve()
    assert config.log.access == str((tmp_path / "conf" / "access.log").resolve())

    (tmp_path / "conf" / "proxy.toml").write_text('[[route]]\norigin = "nope"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(Path("../conf/proxy.toml"))
    assert str(caught.value) == '../conf/proxy.toml: route[1].origin: unknown origin "nope"'


def test_load_config_unreadable_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config("missing.toml")
    assert str(caught.value) == "missing.toml: cannot read: No such file or directory"
    (tmp_path / "latin1.toml").write_bytes(b'[server]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError) as caught:
        load_config("latin1.toml")
    assert str(caught.value) == "latin1.toml: line 2 column 12: not UTF-8 (TOML files are UTF-8)"


# --- The loaded Config ----------------------------------------------------------


def test_with_listeners_returns_a_copy(tmp_path: Path) -> None:
    config = parse(MINIMAL, tmp_path)
    addresses = [Address.parse("127.0.0.1:0"), Address.parse("[::1]:0")]
    changed = config.with_listeners(addresses)
    assert [listener.address for listener in changed.listeners] == addresses
    assert [str(listener.address) for listener in config.listeners] == ["127.0.0.1:8080"]
    assert changed.model_dump(exclude={"listeners"}) == config.model_dump(exclude={"listeners"})


def test_with_listeners_refuses_empty_or_repeated_addresses(tmp_path: Path) -> None:
    config = parse(MINIMAL, tmp_path)
    with pytest.raises(ValueError, match="at least one"):
        config.with_listeners([])
    with pytest.raises(ValueError) as caught:
        config.with_listeners([Address.parse("127.0.0.1:80"), Address.parse("127.0.0.1:80")])
    assert str(caught.value) == 'duplicate listener address "127.0.0.1:80" (also listener[1])'


def test_config_is_frozen(tmp_path: Path) -> None:
    config = parse(MINIMAL, tmp_path)
    with pytest.raises(ValidationError):
        config.mux.heartbeat = 1.0  # type: ignore[misc]
    with pytest.raises(ValidationError):
        config.routes = ()  # type: ignore[misc]
