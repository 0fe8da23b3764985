"""daemon/tasks.py: every task stays referenced until it ends; a group cancels its own."""

from __future__ import annotations

import asyncio
import gc

from daemon import tasks


async def test_a_spawned_task_survives_garbage_collection() -> None:
    done = asyncio.Event()

    async def work() -> None:
        await asyncio.sleep(0)
        done.set()

    tasks.spawn(work(), name="t")  # the caller keeps no reference
    gc.collect()
    async with asyncio.timeout(5):
        await done.wait()


async def test_a_group_cancels_what_still_runs() -> None:
    group = tasks.TaskGroup()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    group.spawn(forever(), name="forever")
    async with asyncio.timeout(5):
        await started.wait()
        await group.cancel()
    assert cancelled.is_set()
