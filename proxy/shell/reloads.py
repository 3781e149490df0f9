"""Reloads that never overlap.

Strategy: one task runs reloads.  A SIGHUP that arrives while one runs is
not dropped: the configuration file may have changed again after the
running reload read it, so exactly one more reload follows, however many
SIGHUPs came in between (the file is read whole each time; reading it once
more is enough).  Used by a single process (service.py) and by the master
of several workers (master.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

log = logging.getLogger("muxproxy")


class ReloadQueue:
    def __init__(self, reload: Callable[[], Awaitable[object]], stopping: Callable[[], bool]) -> None:
        self._reload = reload
        self._stopping = stopping
        self._again = False
        #: The task running reloads, while there is one.
        self.task: asyncio.Task | None = None

    def request(self) -> None:
        """A SIGHUP: reload now, or once more after the running reload."""
        if self.task is not None and not self.task.done():
            log.info("reload already in progress: reloading again after it")
            self._again = True
            return
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self._again = False
            await self._reload()
            if not self._again or self._stopping():
                return
