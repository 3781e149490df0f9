"""ReloadQueue: SIGHUPs during a reload make exactly one more reload."""

import asyncio

from proxy.shell.reloads import ReloadQueue


def run_reloads(sighups_during_first: int, stopping: bool = False) -> int:
    async def scenario() -> int:
        runs = 0
        release = asyncio.Event()

        async def reload() -> None:
            nonlocal runs
            runs += 1
            if runs == 1:
                await release.wait()

        queue = ReloadQueue(reload, lambda: stopping)
        queue.request()
        await asyncio.sleep(0)  # the first reload is running and waits
        for _ in range(sighups_during_first):
            queue.request()
        release.set()
        await queue.task
        return runs

    return asyncio.run(scenario())


def test_one_sighup_is_one_reload():
    assert run_reloads(0) == 1


def test_sighups_during_a_reload_make_exactly_one_more():
    assert run_reloads(1) == 2
    assert run_reloads(5) == 2


def test_no_further_reload_once_stopping():
    assert run_reloads(3, stopping=True) == 1


def test_a_sighup_after_a_reload_ended_starts_a_new_one():
    async def scenario() -> int:
        runs = 0

        async def reload() -> None:
            nonlocal runs
            runs += 1

        queue = ReloadQueue(reload, lambda: False)
        queue.request()
        await queue.task
        queue.request()
        await queue.task
        return runs

    assert asyncio.run(scenario()) == 2
