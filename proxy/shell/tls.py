"""TLS listeners: a connection counts from accept, not from its handshake.

Strategy: `loop.create_server(ssl=...)` calls the protocol's
`connection_made` only once the handshake is done, so connections still in
their handshake would escape `limits.max_client_connections` (each one a
file descriptor, for as long as the client cares to trickle its hello), and
a failed handshake never reaches the protocol at all.  A `TlsListener`
therefore accepts by itself: each accepted socket takes a slot at once
(`ProxyServer.handshaking`), is handed to `loop.connect_accepted_socket`
with `limits.header_timeout` as the handshake deadline (the same total
deadline a plain request head gets; asyncio's default is 60 s), and gives
the slot back when the handshake fails or turns into a counted
`ClientConnection`.

A `TlsListener` quacks like the `asyncio.Server` of a plain listener
(`sockets`, `close`, `wait_closed`), and keeps its `SSLContext`, so a reload
can load a renewed certificate into it: new handshakes get the new
certificate, open connections keep theirs (nginx does the same on reload).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from typing import Final, TYPE_CHECKING

from proxy.config import ListenerSettings
from proxy.shell.client import ClientConnection

if TYPE_CHECKING:
    from proxy.shell.server import ProxyServer

log = logging.getLogger("muxproxy")

#: After accept() fails for want of descriptors or memory (EMFILE, ENFILE,
#: ENOBUFS, ENOMEM), wait this long before accepting again rather than spin;
#: asyncio's own accept loop waits 1 s too.
ACCEPT_RETRY_DELAY: Final = 1.0

_RESOURCE_ERRORS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class TlsClientConnection(ClientConnection):
    """A client connection that holds a handshake slot until it is made."""

    __slots__ = ("reserved",)

    def __init__(self, server: "ProxyServer") -> None:
        super().__init__(server, proto=b"https")
        self.reserved = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The handshake slot becomes a connection: give the slot back first,
        # so the limit check in ClientConnection does not count it twice.
        self.release()
        super().connection_made(transport)

    def release(self) -> None:
        if self.reserved:
            self.reserved = False
            self.server.handshaking -= 1


class TlsListener:
    """Accept TLS connections on a listening socket (see module note)."""

    def __init__(self, server: "ProxyServer", sock: socket.socket, listener: ListenerSettings) -> None:
        self.server = server
        self.sock = sock
        self.settings = listener
        self.context = listener.tls_context()
        self.sockets = [sock]
        self._handshakes: set[asyncio.Task] = set()
        self._accepting = server.loop.create_task(self._accept())
        self._closed = False

    def reload_certificate(self, listener: ListenerSettings) -> None:
        """Serve the certificate the files hold now (they may have been renewed)."""
        try:
            listener.load_certificate(self.context)
        except (ssl.SSLError, OSError) as exc:
            # Validation loaded them a moment ago; if they changed since,
            # keep serving the certificate already loaded.
            log.error("listener %s: keeping the old certificate: %s", listener.address, exc)

    async def _accept(self) -> None:
        loop = self.server.loop
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRORS:
                    raise
                log.error("accept failed on %s: %s; retrying in %gs", self.settings.address, exc, ACCEPT_RETRY_DELAY)
                await asyncio.sleep(ACCEPT_RETRY_DELAY)
                continue
            if not self.server.admits_connection():
                conn.close()
                continue
            self.server.handshaking += 1
            task = loop.create_task(self._handshake(conn))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: socket.socket) -> None:
        server = self.server
        made: list[TlsClientConnection] = []

        def connection() -> TlsClientConnection:
            made.append(TlsClientConnection(server))
            return made[0]

        try:
            await server.loop.connect_accepted_socket(
                connection, conn, ssl=self.context, ssl_handshake_timeout=server.config.limits.header_timeout
            )
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as exc:
            # A client that speaks no TLS, offers only old versions, or is
            # too slow: nothing was read, so nothing is owed to it.
            log.debug("TLS handshake failed on %s: %s", self.settings.address, exc)
            conn.close()
        finally:
            if made:
                made[0].release()
            else:
                server.handshaking -= 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._accepting.cancel()
        for task in self._handshakes:
            task.cancel()
        self.sock.close()

    async def wait_closed(self) -> None:
        await asyncio.gather(self._accepting, *self._handshakes, return_exceptions=True)
