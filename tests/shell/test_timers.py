"""The timer wheel, driven by a fake loop: time moves only when the test says."""

from __future__ import annotations

import pytest

from proxy.shell.timers import RESOLUTION, TimerWheel


class FakeLoop:
    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[list] = []  # [when, callback, cancelled]

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback):
        entry = [self.now + delay, callback, False]
        self.timers.append(entry)

        class Handle:
            def cancel(self_inner) -> None:
                entry[2] = True

        return Handle()

    def advance(self, seconds: float) -> None:
        """Move time on, firing due timers in order (as an event loop would)."""
        target = self.now + seconds
        while True:
            due = [t for t in self.timers if not t[2] and t[0] <= target]
            if not due:
                break
            entry = min(due, key=lambda t: t[0])
            entry[2] = True
            self.now = max(self.now, entry[0])
            entry[1]()
        self.now = target


class Item:
    def __init__(self, log: list, name: str) -> None:
        self.log, self.name = log, name

    def on_wheel(self) -> None:
        self.log.append(self.name)


@pytest.fixture
def loop() -> FakeLoop:
    return FakeLoop()


def test_fires_once_never_early_at_most_a_tick_late(loop):
    wheel, log = TimerWheel(loop), []
    wheel.schedule(Item(log, "a"), loop.time() + 1.0)
    loop.advance(0.99)
    assert log == []
    loop.advance(RESOLUTION + 0.011)
    assert log == ["a"]
    loop.advance(10)
    assert log == ["a"] and len(wheel) == 0


def test_rescheduling_moves_the_item_and_cancel_removes_it(loop):
    wheel, log = TimerWheel(loop), []
    a, b = Item(log, "a"), Item(log, "b")
    wheel.schedule(a, loop.time() + 1)
    wheel.schedule(b, loop.time() + 1)
    wheel.schedule(a, loop.time() + 5)  # moved later
    wheel.cancel(b)
    loop.advance(2)
    assert log == []
    loop.advance(3.2)
    assert log == ["a"]


def test_items_fire_in_time_order_and_an_item_may_reschedule_itself(loop):
    wheel, log = TimerWheel(loop), []

    class Periodic(Item):
        def on_wheel(self) -> None:
            super().on_wheel()
            if len(self.log) < 3:
                wheel.schedule(self, loop.time() + 1)

    wheel.schedule(Item(log, "late"), loop.time() + 10)
    wheel.schedule(Periodic(log, "tick"), loop.time() + 1)
    loop.advance(12)
    assert log == ["tick", "tick", "tick", "late"]


def test_cancel_from_inside_a_firing_bucket_is_safe(loop):
    wheel, log = TimerWheel(loop), []
    victim = Item(log, "victim")

    class Canceller(Item):
        def on_wheel(self) -> None:
            super().on_wheel()
            wheel.cancel(victim)

    when = loop.time() + 1
    wheel.schedule(Canceller(log, "canceller"), when)
    wheel.schedule(victim, when)
    loop.advance(2)
    assert "canceller" in log and len(log) in (1, 2)  # the victim fired first or not at all
    assert len(wheel) == 0


def test_one_loop_timer_serves_many_items(loop):
    wheel, log = TimerWheel(loop), []
    for i in range(1000):
        wheel.schedule(Item(log, str(i)), loop.time() + 5)
    live = [t for t in loop.timers if not t[2]]
    assert len(live) == 1
    loop.advance(6)
    assert len(log) == 1000
