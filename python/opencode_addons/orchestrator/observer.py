"""TaskObserver: retries timed-out tasks, flags stuck ones, completes those whose session is idle.

One owned asyncio task runs the passes; its interval adapts (short while tasks are active, doubling
up to a maximum while idle). A failing pass is logged and counted and never ends the loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional, Protocol

from opencode_addons.events import (
    PLUGIN_SHUTDOWN_TYPES,
    SESSION_TERMINAL_TYPES,
    Event,
    EventStream,
    Unsubscribe,
    session_id_of,
)
from opencode_addons.orchestrator.task_registry import Task, TaskRegistry, TaskState

log = logging.getLogger(__name__)

OBSERVER_ACTOR = "task-observer"
SESSION_STATUSES = frozenset({"idle", "busy", "error", "unknown"})
CONTINUE_PROMPT = "Continue the task: {description}"
# The observer's polling interval in seconds: from the base, backing off up to the maximum.
BASE_INTERVAL = 5.0
MAX_INTERVAL = 60.0


class SessionClient(Protocol):
    """What the observer needs from the agent host."""

    async def session_status(self, session_id: str) -> str:
        """One of ``"idle"``, ``"busy"``, ``"error"``, ``"unknown"``."""
        ...

    async def last_assistant_text(self, session_id: str) -> str | None: ...

    async def delete_session(self, session_id: str) -> None: ...

    async def prompt(self, session_id: str, text: str) -> None: ...


class CheckpointRequester(Protocol):
    """Asks a human to decide; the result has an ``id`` (``DurableStream`` implements this)."""

    def request_checkpoint(
        self, stream_id: str, decision_point: str, options: Sequence[str], requested_by: str
    ) -> Any: ...


class InMemorySessionClient:
    """A ``SessionClient`` over plain dicts; records prompts and deletions."""

    def __init__(
        self,
        statuses: dict[str, str] | None = None,
        texts: dict[str, str] | None = None,
    ) -> None:
        self.statuses: dict[str, str] = {}
        self.texts: dict[str, str] = dict(texts or {})
        self.prompts: list[tuple[str, str]] = []
        self.deleted: list[str] = []
        for session_id, status in (statuses or {}).items():
            self.set_status(session_id, status)

    def set_status(self, session_id: str, status: str) -> None:
        if status not in SESSION_STATUSES:
            raise ValueError(f"status must be one of {sorted(SESSION_STATUSES)}, got {status!r}")
        self.statuses[session_id] = status

    async def session_status(self, session_id: str) -> str:
        return self.statuses.get(session_id, "unknown")

    async def last_assistant_text(self, session_id: str) -> str | None:
        return self.texts.get(session_id)

    async def delete_session(self, session_id: str) -> None:
        self.deleted.append(session_id)
        self.statuses.pop(session_id, None)
        self.texts.pop(session_id, None)

    async def prompt(self, session_id: str, text: str) -> None:
        self.prompts.append((session_id, text))
        self.statuses[session_id] = "busy"


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


class TaskObserver:
    """Periodically checks the registry's running tasks against their sessions."""

    name = "task_observer"

    @property
    def closed(self) -> bool:
        """True once ``shutdown()`` has run."""
        return self._closed

    def __init__(
        self,
        registry: TaskRegistry,
        client: SessionClient,
        *,
        checkpoints: CheckpointRequester | None = None,
        stream: EventStream | None = None,
        base_interval: float = BASE_INTERVAL,
        max_interval: float = MAX_INTERVAL,
        stuck_after: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._client = client
        self._checkpoints = checkpoints
        self._stream = stream
        self._base_interval = _positive("base_interval", base_interval)
        self._max_interval = _positive("max_interval", max_interval)
        if self._max_interval < self._base_interval:
            raise ValueError("max_interval must be >= base_interval")
        self._stuck_after = _positive("stuck_after", stuck_after)
        self._clock = clock
        self._interval = self._base_interval
        self._task: asyncio.Task[None] | None = None
        self._cancelled: asyncio.Task[None] | None = None
        self._unsubscribes: list[Unsubscribe] = []
        self._closed = False
        self._stats: dict[str, Any] = {
            "checks_performed": 0,
            "tasks_retried": 0,
            "tasks_completed": 0,
            "tasks_failed": 0,
            "tasks_stale": 0,
            "checkpoints_requested": 0,
            "sessions_dropped": 0,
            "errors": 0,
            "last_check": None,
        }

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start observing on the running loop; no-op if already running."""
        loop = asyncio.get_running_loop()
        if self.running:
            return
        self._closed = False  # restartable after shutdown
        self._task = loop.create_task(self._run(), name="task-observer")
        if self._stream is not None and not self._unsubscribes:
            for event_type in sorted(SESSION_TERMINAL_TYPES):
                self._unsubscribes.append(self._stream.subscribe(event_type, self._on_terminal))

    def stop(self) -> None:
        """Cancel the observing task and drop subscriptions; idempotent."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            self._cancelled = task
        unsubscribes, self._unsubscribes = self._unsubscribes, []
        for unsubscribe in unsubscribes:
            try:
                unsubscribe()
            except Exception:
                log.exception("task observer could not unsubscribe")

    async def shutdown(self) -> None:
        """``stop()`` and wait until the cancelled task has ended; idempotent."""
        self._closed = True
        self.stop()
        task, self._cancelled = self._cancelled, None
        if task is None or task is asyncio.current_task():
            return
        if task.get_loop() is asyncio.get_running_loop():
            await asyncio.wait({task})

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def current_interval(self) -> float:
        """Seconds until the next pass."""
        return self._interval

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check_once()
            except Exception:
                # check_once isolates per-task failures; this guards against anything else.
                self._stats["errors"] += 1
                log.exception("task observer pass failed")

    # -- one pass ----------------------------------------------------------------------------

    async def check_once(self) -> None:
        """Run one pass over the running tasks, then clean up the registry."""
        self._stats["checks_performed"] += 1
        self._stats["last_check"] = self._clock()
        running = [t for t in self._registry.active() if t.state is TaskState.RUNNING]
        for task in running:
            try:
                await self._check_task(task)
            except Exception:
                self._stats["errors"] += 1
                log.exception("task observer failed checking task %s", task.id)
        try:
            self._registry.cleanup()
        except Exception:
            self._stats["errors"] += 1
            log.exception("task registry cleanup failed during observer pass")
        self._adapt_interval()

    def _adapt_interval(self) -> None:
        if self._registry.active():
            self._interval = self._base_interval
        else:
            self._interval = min(self._interval * 2, self._max_interval)

    async def _check_task(self, task: Task) -> None:
        status = await self._session_status(task.session_id)
        # A session that is idle has finished its work, even if the task looks overdue.
        if status == "idle":
            await self._complete(task)
        elif status == "error":
            self._registry.fail(task.id, f"session {task.session_id} reported an error")
            self._stats["tasks_failed"] += 1
        elif self._timed_out(task):
            await self._retry_or_fail(task)
        elif self._stuck(task):
            await self._mark_stuck(task)

    async def _session_status(self, session_id: str) -> str:
        # A client failure must not stop timeouts and staleness from being detected.
        try:
            return await self._client.session_status(session_id)
        except Exception:
            self._stats["errors"] += 1
            log.exception("session_status failed for session %s", session_id)
            return "unknown"

    def _timed_out(self, task: Task) -> bool:
        started = task.started_at if task.started_at is not None else task.created_at
        return self._clock() - started >= task.timeout

    def _stuck(self, task: Task) -> bool:
        beat = task.last_heartbeat or task.started_at or task.created_at
        return self._clock() - beat >= self._stuck_after

    async def _complete(self, task: Task) -> None:
        text = await self._client.last_assistant_text(task.session_id)
        self._registry.complete(task.id, result=text)
        self._stats["tasks_completed"] += 1

    async def _retry_or_fail(self, task: Task) -> None:
        # The retry is counted before prompting so a failing prompt still moves toward the limit.
        if self._registry.retry(task.id):
            self._stats["tasks_retried"] += 1
            text = CONTINUE_PROMPT.format(description=task.description or task.id)
            await self._client.prompt(task.session_id, text)
            return
        self._registry.fail(
            task.id, f"timed out after {task.timeout:g}s and {task.retries} retries"
        )
        self._stats["tasks_failed"] += 1

    async def _mark_stuck(self, task: Task) -> None:
        self._registry.mark_stale(task.id)
        self._stats["tasks_stale"] += 1
        if self._checkpoints is None:
            return
        checkpoint = self._checkpoints.request_checkpoint(
            task.session_id,
            f"Task {task.id} ({task.description or 'no description'}) has had no heartbeat "
            f"for {self._stuck_after:g}s: retry or abort?",
            ["retry", "abort"],
            OBSERVER_ACTOR,
        )
        # A coroutine is awaited for its result; other awaitables (a pending checkpoint) are
        # handles that resolve only when a human decides, so they are kept, not awaited.
        if inspect.iscoroutine(checkpoint):
            checkpoint = await checkpoint
        checkpoint_id: Optional[str] = getattr(checkpoint, "id", None)
        task.metadata["checkpoint_id"] = checkpoint_id
        self._stats["checkpoints_requested"] += 1

    # -- session events ----------------------------------------------------------------------

    def _on_terminal(self, event: Event) -> None:
        if event.get("type") in PLUGIN_SHUTDOWN_TYPES:
            sessions = {t.session_id for t in self._registry.tasks.values()}
        else:
            session_id = session_id_of(event)
            sessions = {session_id} if session_id else set()
        for session_id in sessions:
            if self._registry.remove_session(session_id):
                self._stats["sessions_dropped"] += 1

    def stats(self) -> dict[str, Any]:
        stats = dict(self._stats)
        stats["running"] = self.running
        stats["interval"] = self._interval
        stats["closed"] = self._closed
        return stats

    def get_stats(self) -> dict[str, Any]:
        """``stats()`` under the reference's name (``observer.getStats()``)."""
        return self.stats()
