"""The access log: one line per request, inner or plain.

Strategy: lines are formatted into a list and written once per event-loop
iteration (a `call_soon` flush), because a write per inner request would cost
more than proxying it.  Python's `logging` is not used here for the same
reason (a LogRecord per line costs several microseconds); the operational
log (warnings, errors) does use `logging`.

Line format (space-separated, values never contain spaces):

    2026-11-23T14:02:03.123Z conn=12 mux GET /api/x route=route[2] origin=127.0.0.1:8081 status=200 bytes=512 ms=1.9 error=-

`kind` is "mux" for an inner request, "stream" for a whole mux stream (its
line comes when the stream ends; `bytes` is then the whole outer body), and
"http" for a plain request; `bytes` counts response body bytes; `error` is
the RFC 9209 error type when the proxy answered instead of an origin.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO


class AccessLog:
    def __init__(self, destination: str) -> None:
        self.destination = destination
        self._file: TextIO | None = None
        self._owns_file = False
        self._lines: list[str] = []
        self._flush_scheduled = False
        self._second = -1
        self._stamp = ""
        self.enabled = destination != "off"
        self.open()

    def open(self) -> None:
        """(Re)open the destination; a file is appended to (logrotate friendly)."""
        self.close()
        destination = self.destination
        if destination == "off":
            self._file = None
        elif destination == "stderr":
            self._file = sys.stderr
        elif destination == "stdout":
            self._file = sys.stdout
        else:
            self._file = open(destination, "a", encoding="utf-8", buffering=1 << 16)
            self._owns_file = True

    def retarget(self, destination: str) -> None:
        """Write to another destination from now on (a reload changed it)."""
        if destination != self.destination:
            self.destination = destination
            self.enabled = destination != "off"
            self.open()

    def close(self) -> None:
        self.flush()
        if self._owns_file and self._file is not None:
            self._file.close()
        self._file = None
        self._owns_file = False

    def request(
        self,
        conn_id: int,
        kind: str,
        method: bytes,
        target: bytes | None,
        route: str,
        server: str,
        status: int,
        body_bytes: int,
        duration: float,
        error: str,
    ) -> None:
        if not self.enabled:
            return
        # An inner request whose framing broke before its request line was
        # read has no method (b"") and no target (None): logged as "-", so
        # that every line keeps its fields.
        method_text = method.decode("latin-1") if method else "-"
        target_text = target.decode("latin-1") if target is not None else "-"
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        self._lines.append(
            f"{self._stamp}.{int((now - second) * 1000):03d}Z conn={conn_id} {kind} "
            f"{method_text} {target_text} route={route} origin={server} "
            f"status={status} bytes={body_bytes} ms={duration * 1000:.1f} error={error or '-'}\n"
        )
        if not self._flush_scheduled:
            self._flush_scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        self._flush_scheduled = False
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        if self._file is not None:
            self._file.write("".join(lines))
            self._file.flush()
