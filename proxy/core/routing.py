"""Choosing a route for a request: pure, synchronous, compiled once per config.

Strategy: routes are compiled into byte-level `Route` values and sorted once
by precedence, so matching is a short linear scan with no allocation:
1. routes naming the request's host beat routes for any host;
2. among those, the longest path prefix wins (like nginx prefix locations);
3. ties keep the order of the config file.
Prefixes match whole path segments: "/api" matches "/api", "/api/x" and
"/api?q", never "/apix", so a route can not leak into a sibling path.

The destination of a request is always an origin from the config: nothing in
a request (Host, absolute-form authority) can name a server to connect to,
which is what makes SSRF through muxproxy impossible by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Iterable

from proxy.core.http1.fields import host_without_port

HOST_PRESERVE: Final = "preserve"
HOST_ORIGIN: Final = "origin"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-route origin timeouts, in seconds."""

    connect: float
    read: float
    total: float


@dataclass(frozen=True, slots=True)
class Route:
    name: str  # "route[N]" as in the config file, for logs and errors
    origin: str
    prefix: bytes
    exact_hosts: frozenset[bytes]
    wildcard_suffixes: tuple[bytes, ...]  # b".example.com" for "*.example.com"
    strip_prefix: bool
    #: HOST_PRESERVE, HOST_ORIGIN, or a literal Host value to send.
    host_header: str
    timeouts: Timeouts

    @property
    def has_hosts(self) -> bool:
        return bool(self.exact_hosts or self.wildcard_suffixes)

    def matches_host(self, host: bytes | None) -> bool:
        if not self.has_hosts:
            return True
        if host is None:
            return False
        name = host_without_port(host)
        if name in self.exact_hosts:
            return True
        return any(name.endswith(suffix) for suffix in self.wildcard_suffixes)

    def matches_path(self, target: bytes) -> bool:
        prefix = self.prefix
        if not target.startswith(prefix):
            return target == b"*" and prefix == b"/"
        if len(target) == len(prefix) or prefix.endswith(b"/"):
            return True
        return target[len(prefix)] in b"/?"

    def origin_target(self, target: bytes) -> bytes:
        """The target to send to the origin (prefix stripped if configured)."""
        if not self.strip_prefix or self.prefix == b"/" or target == b"*":
            return target
        rest = target[len(self.prefix.rstrip(b"/")) :]
        if not rest.startswith(b"/"):
            rest = b"/" + rest
        return rest


def compile_route(index: int, settings) -> Route:
    """A Route from a config RouteSettings; `index` counts from 1 like the docs."""
    exact: set[bytes] = set()
    wildcards: list[bytes] = []
    for host in settings.host:
        encoded = host.lower().encode("ascii")
        if encoded.startswith(b"*."):
            wildcards.append(encoded[1:])
        else:
            exact.add(encoded)
    return Route(
        name=f"route[{index}]",
        origin=settings.origin,
        prefix=settings.path.encode("ascii"),
        exact_hosts=frozenset(exact),
        wildcard_suffixes=tuple(wildcards),
        strip_prefix=settings.strip_prefix,
        host_header=settings.host_header,
        timeouts=Timeouts(settings.connect_timeout, settings.read_timeout, settings.total_timeout),
    )


class RouteTable:
    def __init__(self, routes: Iterable[Route]) -> None:
        ordered = list(routes)
        position = {id(route): i for i, route in enumerate(ordered)}
        self.routes: tuple[Route, ...] = tuple(
            sorted(ordered, key=lambda r: (not r.has_hosts, -len(r.prefix), position[id(r)]))
        )
        self._named_hosts = frozenset(h for r in ordered for h in r.exact_hosts)
        self._named_suffixes = tuple(s for r in ordered for s in r.wildcard_suffixes)

    @classmethod
    def from_settings(cls, routes_settings) -> "RouteTable":
        return cls(compile_route(i, settings) for i, settings in enumerate(routes_settings, start=1))

    def match(self, host: bytes | None, target: bytes) -> Route | None:
        # Route.matches_path and matches_host, inlined: this runs for every
        # request, and two method calls per route cost more than the checks.
        name = None
        for route in self.routes:
            prefix = route.prefix
            if target.startswith(prefix):
                size = len(prefix)
                if not (len(target) == size or prefix[-1] == 0x2F or target[size] in b"/?"):
                    continue
            elif not (target == b"*" and prefix == b"/"):
                continue
            if route.exact_hosts or route.wildcard_suffixes:
                if host is None:
                    continue
                if name is None:
                    name = host_without_port(host)
                if name not in route.exact_hosts and not any(name.endswith(s) for s in route.wildcard_suffixes):
                    continue
            return route
        return None

    def names_host(self, host: bytes) -> bool:
        """True when some route names this host explicitly (port ignored)."""
        name = host_without_port(host)
        return name in self._named_hosts or any(name.endswith(s) for s in self._named_suffixes)
