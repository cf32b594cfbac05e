"""Background asyncio tasks owned by a component.

The event loop keeps only weak references to tasks, so whoever starts one must hold it until it
finishes; a failure must be logged and counted rather than lost with the task; and shutdown must
cancel what is left. Components that run callbacks' coroutines share this one implementation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

log = logging.getLogger(__name__)


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop, or None outside one."""
    # asyncio's own "running loop or None" (what get_running_loop wraps): it runs on every
    # append while a checkpoint is pending, and outside a loop get_running_loop's RuntimeError
    # costs about 0.4 us where this costs 0.04 us.
    return asyncio._get_running_loop()


class BackgroundTasks:
    """A component's running tasks; ``what`` names them in logs ("async subscriber", ...)."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._tasks: set[asyncio.Future[Any]] = set()
        self.failures = 0

    def spawn(self, awaitable: Awaitable[Any]) -> asyncio.Future[Any]:
        """Run ``awaitable`` on the running loop, holding it until it is done."""
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self.failures += 1
            log.error("%s failed", self._what, exc_info=error)

    def __len__(self) -> int:
        return len(self._tasks)

    def cancel_threadsafe(self) -> None:
        """Cancel every task, from any thread (each on its own loop, if that loop still runs)."""
        for task in list(self._tasks):
            loop = task.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(task.cancel)

    async def finish(self, grace: float) -> int:
        """Wait up to ``grace`` seconds for the tasks, then cancel the rest; return how many."""
        if not self._tasks:
            return 0
        _, late = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
        return len(late)
