"""A timer wheel for the many long-lived streams of one process.

Strategy: a mux stream needs a timer for its whole life (heartbeat, idle
end, inner head deadline), and a proxy holds thousands of streams, most of
them idle.  An event-loop TimerHandle per stream costs about 600 bytes and a
heap operation at every re-arm; here a stream is an entry in a bucket keyed
by its due tick, and one loop timer (armed only while some entry waits)
serves them all.  Timers fire late by at most one tick (`RESOLUTION`), never
early; nothing that uses the wheel needs more precision than that.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from typing import Final, Protocol

#: Tick length in seconds: the lateness bound.  A tenth of a second is far
#: below every interval the wheel serves (heartbeats and head deadlines are
#: seconds; tests use a few hundred milliseconds).
RESOLUTION: Final = 0.1


class Timed(Protocol):
    def on_wheel(self) -> None: ...


class TimerWheel:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._buckets: dict[int, set] = {}
        self._ticks: list[int] = []  # heap of the ticks that have a bucket
        self._due: dict[object, int] = {}
        self._handle: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._due)

    def schedule(self, item: Timed, when: float) -> None:
        """Call item.on_wheel() once, at loop time `when` or up to a tick later."""
        tick = math.ceil(when / RESOLUTION)
        old = self._due.get(item)
        if old == tick:
            return
        if old is not None:
            self._discard(old, item)
        self._due[item] = tick
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = set()
            heapq.heappush(self._ticks, tick)
            if self._ticks[0] == tick:
                self._arm()
        bucket.add(item)

    def schedule_by(self, item: Timed, when: float) -> None:
        """Like schedule, but never later than an existing entry for item."""
        tick = self._due.get(item)
        if tick is None or math.ceil(when / RESOLUTION) < tick:
            self.schedule(item, when)

    def cancel(self, item: Timed) -> None:
        tick = self._due.pop(item, None)
        if tick is not None:
            self._discard(tick, item)

    def _discard(self, tick: int, item: Timed) -> None:
        bucket = self._buckets.get(tick)
        if bucket is not None:  # None: the bucket is being fired right now
            bucket.discard(item)

    def _arm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        delay = max(self._ticks[0] * RESOLUTION - self.loop.time(), 0.0)
        self._handle = self.loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        now_tick = math.floor(self.loop.time() / RESOLUTION)
        ticks = self._ticks
        while ticks and ticks[0] <= now_tick:
            tick = heapq.heappop(ticks)
            bucket = self._buckets.pop(tick)
            for item in bucket:
                if self._due.get(item) == tick:
                    del self._due[item]
                    item.on_wheel()
        if ticks:
            self._arm()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._buckets.clear()
        self._ticks.clear()
        self._due.clear()
