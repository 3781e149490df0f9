"""Open-loop pacing shared by the constant-rate clients (scenario 5).

A timer wakes every TICK seconds at most and issues every request that has
fallen due since the last wake-up, stamped with the wake-up time.  Latency is
measured from that stamp, so a request never waits for an earlier response
(no coordinated omission), and a late wake-up shows as lag, which is
returned so a run where the client fell behind can be seen.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

#: The shortest sleep between wake-ups.  uvloop (libuv) timers have 1 ms
#: resolution: asking for less returns at once, and a loop that does so
#: spins a core that the origin shares with the load generator.
TICK = 0.001


async def pace(rate: float, duration: float, issue: Callable[[int, float], None]) -> float:
    """Call `issue(count, stamp)` so that `rate` requests per second go out for
    `duration` seconds; returns the largest lag (seconds) of a wake-up behind
    the first request it issued."""
    start = time.perf_counter()
    issued = 0
    max_lag = 0.0
    while (now := time.perf_counter()) < start + duration:
        due = int((now - start) * rate) - issued
        if due > 0:
            max_lag = max(max_lag, now - (start + (issued + 1) / rate))
            issue(due, now)
            issued += due
        await asyncio.sleep(max(TICK, start + (issued + 1) / rate - time.perf_counter()))
    return max_lag
