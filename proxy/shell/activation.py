"""Listening sockets: inherited from systemd (socket activation) or bound here.

Strategy: systemd passes the sockets of muxproxy.socket as file descriptors
3, 4, ... with $LISTEN_FDS, $LISTEN_PID and $LISTEN_FDNAMES (sd_listen_fds(3)).
A configured listener whose address equals an inherited socket's bound
address uses that socket, so the listeners survive a restart of the service
(connections queue in the kernel meanwhile); any other configured listener is
bound here.  An inherited socket that no listener claims is still served (the
socket unit is the operator's statement of where to listen), and logged.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

log = logging.getLogger("muxproxy.activation")

#: The first passed file descriptor (SD_LISTEN_FDS_START in sd-daemon.h).
LISTEN_FDS_START = 3


@dataclass(frozen=True)
class Inherited:
    sock: socket.socket
    name: str  # FileDescriptorName= of the socket unit ("unknown" if unnamed)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port


def inherited_sockets(environ: dict[str, str] | None = None, *, consume: bool = True) -> list[Inherited]:
    """The listening sockets systemd passed to this process ([] if none).

    With `consume`, the LISTEN_* variables are removed from os.environ
    (sd_listen_fds(3) unset_environment) so that child processes started
    later never take them for their own.
    """
    env = os.environ if environ is None else environ
    pid, count = env.get("LISTEN_PID"), env.get("LISTEN_FDS")
    if not count or not count.isdigit() or pid != str(os.getpid()):
        return []
    names = env.get("LISTEN_FDNAMES", "").split(":")
    if consume and environ is None:
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(key, None)
    found = []
    for index in range(int(count)):
        fd = LISTEN_FDS_START + index
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        if sock.type != socket.SOCK_STREAM:
            log.warning("ignoring passed fd %d: not a stream socket", fd)
            continue
        name = names[index] if index < len(names) and names[index] else "unknown"
        found.append(Inherited(sock, name))
    return found


def same_address(bound: tuple[str, int], host: str, port: int) -> bool:
    """Does a socket bound to `bound` serve the configured host:port?"""
    if bound[1] != port:
        return False
    try:
        wanted = {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except OSError:
        return False
    return bound[0] in wanted


def bind_listener(host: str, port: int, *, reuse_port: bool = False, backlog: int = 4096) -> socket.socket:
    """A listening TCP socket, non-blocking, like loop.create_server makes."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
