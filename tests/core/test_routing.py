"""Route choice (proxy/core/routing.py): precedence, segment-aware prefixes,
host patterns, and the target sent to the origin."""

from __future__ import annotations

import pytest

from proxy.config import RouteSettings
from proxy.core.routing import Route, RouteTable, Timeouts, compile_route


def table(*routes: dict) -> RouteTable:
    """A RouteTable from RouteSettings keyword dicts, in file order."""
    return RouteTable.from_settings([RouteSettings(**settings) for settings in routes])


def chosen(routes: RouteTable, host: bytes | None, target: bytes) -> str | None:
    route = routes.match(host, target)
    return None if route is None else route.origin


def one_route(**settings) -> Route:
    settings.setdefault("origin", "web")
    return compile_route(1, RouteSettings(**settings))


# --- Compiling ---------------------------------------------------------------------


def test_compile_route_lowers_hosts_and_splits_wildcards():
    route = one_route(path="/api", host=["API.example", "*.Apps.example"], strip_prefix=True)
    assert route.name == "route[1]"
    assert route.prefix == b"/api"
    assert route.exact_hosts == frozenset({b"api.example"})
    assert route.wildcard_suffixes == (b".apps.example",)
    assert route.strip_prefix is True
    assert route.timeouts == Timeouts(connect=5.0, read=60.0, total=300.0)


def test_route_names_count_from_one_in_file_order():
    routes = table({"origin": "a", "path": "/a"}, {"origin": "b", "path": "/b"})
    assert {route.origin: route.name for route in routes.routes} == {"a": "route[1]", "b": "route[2]"}


# --- Precedence ----------------------------------------------------------------------


def test_host_specific_route_beats_host_less_route_even_with_a_shorter_prefix():
    routes = table(
        {"origin": "any-host-api", "path": "/api"},
        {"origin": "named-host", "path": "/", "host": "app.example"},
    )
    assert chosen(routes, b"app.example", b"/api/users") == "named-host"
    assert chosen(routes, b"other.example", b"/api/users") == "any-host-api"


def test_longest_prefix_wins():
    routes = table(
        {"origin": "root", "path": "/"},
        {"origin": "api", "path": "/api"},
        {"origin": "api-v2", "path": "/api/v2"},
    )
    assert chosen(routes, b"h", b"/api/v2/users") == "api-v2"
    assert chosen(routes, b"h", b"/api/v1/users") == "api"
    assert chosen(routes, b"h", b"/static/x.css") == "root"


def test_longest_prefix_wins_among_host_specific_routes():
    routes = table(
        {"origin": "short", "path": "/", "host": "app.example"},
        {"origin": "long", "path": "/api", "host": "app.example"},
    )
    assert chosen(routes, b"app.example", b"/api/x") == "long"


def test_ties_keep_file_order():
    routes = table(
        {"origin": "first", "path": "/api"},
        {"origin": "second", "path": "/api"},
    )
    assert chosen(routes, b"h", b"/api") == "first"


def test_ties_keep_file_order_for_host_routes():
    routes = table(
        {"origin": "first", "path": "/", "host": "*.example"},
        {"origin": "second", "path": "/", "host": "app.example"},
    )
    assert chosen(routes, b"app.example", b"/") == "first"


def test_no_matching_route_gives_none():
    routes = table({"origin": "api", "path": "/api"}, {"origin": "named", "host": "app.example"})
    assert routes.match(b"other.example", b"/static") is None


# --- Path prefixes match whole segments ------------------------------------------------


@pytest.mark.parametrize(
    ("target", "matches"),
    [
        (b"/api", True),
        (b"/api/", True),
        (b"/api/users", True),
        (b"/api?q=1", True),
        (b"/apix", False),
        (b"/api-v2", False),
        (b"/ap", False),
        (b"/API", False),  # paths are case-sensitive (RFC 3986 §6.2.2.1)
        (b"/", False),
    ],
)
def test_prefix_matches_whole_segments(target, matches):
    assert one_route(path="/api").matches_path(target) is matches


@pytest.mark.parametrize(
    ("target", "matches"),
    [(b"/api/", True), (b"/api/x", True), (b"/api/x/y", True), (b"/api", False), (b"/apix", False)],
)
def test_prefix_ending_in_slash_matches_below_it(target, matches):
    assert one_route(path="/api/").matches_path(target) is matches


@pytest.mark.parametrize("target", [b"/", b"/anything", b"/?q", b"*"])
def test_root_prefix_matches_everything_including_asterisk(target):
    assert one_route(path="/").matches_path(target) is True


def test_asterisk_target_only_matches_the_root_prefix():
    assert one_route(path="/api").matches_path(b"*") is False


# --- Hosts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "matches"),
    [
        (b"app.example", True),
        (b"APP.Example", True),  # RFC 9110 §4.2.3: host is case-insensitive
        (b"app.example:8443", True),  # the port is ignored
        (b"app.example.evil", False),
        (b"xapp.example", False),
        (b"other.example", False),
        (None, False),
    ],
)
def test_exact_host(host, matches):
    assert one_route(host="app.example").matches_host(host) is matches


@pytest.mark.parametrize(
    ("host", "matches"),
    [
        (b"a.apps.example", True),
        (b"a.b.apps.example", True),
        (b"A.Apps.Example:80", True),
        (b"apps.example", False),  # "*." needs at least one label
        (b"evilapps.example", False),
        (b"apps.example.evil", False),
    ],
)
def test_wildcard_host(host, matches):
    assert one_route(host="*.apps.example").matches_host(host) is matches


@pytest.mark.parametrize("host", [b"anything.example", None])
def test_route_without_hosts_matches_any_host_or_none(host):
    assert one_route().matches_host(host) is True


def test_ipv6_literal_host_port_is_ignored():
    routes = table({"origin": "v6", "host": "app.example"}, {"origin": "fallback"})
    assert chosen(routes, b"[::1]:8080", b"/") == "fallback"


# --- names_host ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "named"),
    [
        (b"app.example", True),
        (b"App.Example:8080", True),
        (b"x.apps.example", True),
        (b"apps.example", False),
        (b"unknown.example", False),
    ],
)
def test_names_host(host, named):
    routes = table({"origin": "a", "host": "app.example"}, {"origin": "b", "host": "*.apps.example"}, {"origin": "c"})
    assert routes.names_host(host) is named


# --- The target sent to the origin ------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "target", "sent"),
    [
        ("/api", b"/api/users", b"/users"),
        ("/api", b"/api", b"/"),
        ("/api", b"/api/", b"/"),
        ("/api", b"/api?q=1", b"/?q=1"),
        ("/api", b"/api/a?b=/api", b"/a?b=/api"),
        ("/api/", b"/api/users", b"/users"),
        ("/api/", b"/api/", b"/"),
        ("/a/b", b"/a/b/c", b"/c"),
        ("/", b"/x", b"/x"),
        ("/", b"*", b"*"),
    ],
)
def test_origin_target_strips_the_prefix(prefix, target, sent):
    assert one_route(path=prefix, strip_prefix=True).origin_target(target) == sent


@pytest.mark.parametrize("target", [b"/api/users", b"/api", b"/api?q=1"])
def test_origin_target_is_unchanged_without_strip_prefix(target):
    assert one_route(path="/api").origin_target(target) == target
