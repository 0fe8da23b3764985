"""Background tasks that are never lost: the one place the daemon creates an asyncio task.

The event loop keeps only a weak reference to a task, so a task nobody holds can vanish
mid-run (mitmproxy's ``utils/asyncio_utils.py:create_task`` for the same reason). `spawn` keeps
each task referenced until it ends and logs one that fails. ruff's TID251 bans
``asyncio.create_task`` and ``asyncio.ensure_future`` elsewhere; ``loop.create_task``, which
ruff cannot see, is caught by ``tests/test_layout.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog

log = structlog.get_logger("xai_meter.tasks")
T = TypeVar("T")

_running: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
    """Start `coro` as a task in the running loop, referenced until it ends."""
    task = asyncio.create_task(coro, name=name)  # noqa: TID251 (the one allowed place)
    _running.add(task)
    task.add_done_callback(_done)
    return task


def _done(task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("background_task_failed", task=task.get_name(), error=repr(task.exception()))


class TaskGroup:
    """Tasks one owner starts and, at its shutdown, cancels together."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> None:
        task = spawn(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel(self) -> None:
        """Cancel every task still running and wait until each has ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
