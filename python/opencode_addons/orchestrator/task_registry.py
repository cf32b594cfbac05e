"""TaskRegistry: the tasks delegated to agent sessions, with their state and bounded lifetime.

The reference let finished tasks accumulate until an interval timer removed some of them; here
every finished state is cleaned up, cleanup also runs every few registrations (so the registry is
bounded even without an event loop), and the number of finished tasks kept is capped.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, Callable, Optional

from opencode_addons.background import running_loop
from opencode_addons.events import EventStream

log = logging.getLogger(__name__)

TASK_ACTOR = "task-registry"


class TaskState(str, Enum):
    """Where a task is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    BLOCKED = "blocked"
    STALE = "stale"


ACTIVE_STATES = frozenset({TaskState.PENDING, TaskState.RUNNING})
FINISHED_STATES = frozenset(set(TaskState) - ACTIVE_STATES)
# No transition leaves these; timeout/stale/blocked tasks may still be retried or resolved late.
FINAL_STATES = frozenset({TaskState.COMPLETED, TaskState.FAILED})


@dataclass
class Task:
    """One task; times are epoch seconds from the registry's clock."""

    id: str
    session_id: str
    description: str
    state: TaskState
    created_at: float
    updated_at: float
    timeout: float
    max_retries: int
    started_at: Optional[float] = None
    last_heartbeat: Optional[float] = None
    finished_at: Optional[float] = None
    retries: int = 0
    result: Any = None
    error: Optional[str] = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly snapshot."""
        return {
            "id": self.id,
            "session_id": self.session_id,
            "description": self.description,
            "state": self.state.value,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "started_at": self.started_at,
            "last_heartbeat": self.last_heartbeat,
            "finished_at": self.finished_at,
            "retries": self.retries,
            "max_retries": self.max_retries,
            "timeout": self.timeout,
            "result": self.result,
            "error": self.error,
            "metadata": dict(self.metadata),
        }


def _positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def _non_negative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def _non_empty_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    return value


class TaskRegistry:
    """Holds tasks by id and by session; appends ``task.*`` events when given a stream."""

    name = "task_registry"

    @property
    def closed(self) -> bool:
        """True once ``shutdown()`` has run."""
        return self._closed

    def __init__(
        self,
        stream: EventStream | None = None,
        *,
        max_age: float = 3600.0,
        cleanup_interval: float = 60.0,
        default_timeout: float = 300.0,
        max_retries: int = 2,
        clock: Callable[[], float] = time.time,
        cleanup_every: int = 100,
        max_finished: int | None = 10_000,
    ) -> None:
        self._stream = stream
        self._max_age = _positive_number("max_age", max_age)
        self._cleanup_interval = _positive_number("cleanup_interval", cleanup_interval)
        self._default_timeout = _positive_number("default_timeout", default_timeout)
        self._default_max_retries = _non_negative_int("max_retries", max_retries)
        self._cleanup_every = max(1, _non_negative_int("cleanup_every", cleanup_every))
        if max_finished is not None:
            _non_negative_int("max_finished", max_finished)
        self._max_finished = max_finished
        self._clock = clock
        self._tasks: dict[str, Task] = {}
        self._by_session: dict[str, dict[str, None]] = {}
        self._registrations_since_cleanup = 0
        self._last_cleanup = clock()
        self._cleaned_up = 0
        self._event_errors = 0
        self._cleanup_task: asyncio.Task[None] | None = None
        self._closed = False

    # -- registration and lookup -------------------------------------------------------------

    def register(
        self,
        task_id: str | None = None,
        *,
        session_id: str,
        description: str = "",
        timeout: float | None = None,
        max_retries: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Task:
        """Add a pending task; ``ValueError`` if ``task_id`` is already registered."""
        task_id = f"task_{secrets.token_hex(8)}" if task_id is None else task_id
        _non_empty_str("task_id", task_id)
        _non_empty_str("session_id", session_id)
        if not isinstance(description, str):
            raise TypeError(f"description must be a str, got {type(description).__name__}")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
        task_timeout = self._default_timeout if timeout is None else timeout
        retries = self._default_max_retries if max_retries is None else max_retries
        if task_id in self._tasks:
            raise ValueError(f"task {task_id!r} is already registered")
        now = self._clock()
        task = Task(
            id=task_id,
            session_id=session_id,
            description=description,
            state=TaskState.PENDING,
            created_at=now,
            updated_at=now,
            timeout=_positive_number("timeout", task_timeout),
            max_retries=_non_negative_int("max_retries", retries),
            metadata=dict(metadata or {}),
        )
        self._tasks[task_id] = task
        self._by_session.setdefault(session_id, {})[task_id] = None
        self._emit("task.registered", task, description=description, timeout=task.timeout)
        self._maybe_cleanup()
        self._ensure_auto_cleanup()
        return task

    def get(self, task_id: str) -> Task:
        """The task with ``task_id``; ``KeyError`` naming the id if unknown."""
        try:
            return self._tasks[task_id]
        except KeyError:
            raise KeyError(f"unknown task id {task_id!r}") from None

    @property
    def tasks(self) -> Mapping[str, Task]:
        """A read-only live view of every task by id."""
        return MappingProxyType(self._tasks)

    def by_session(self, session_id: str) -> list[Task]:
        return [self._tasks[i] for i in self._by_session.get(session_id, {})]

    def active(self) -> list[Task]:
        """Pending and running tasks."""
        return [t for t in self._tasks.values() if t.state in ACTIVE_STATES]

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tasks

    # -- state changes -----------------------------------------------------------------------

    def start(self, task_id: str) -> Task:
        task = self._transition(task_id, TaskState.RUNNING, allowed={TaskState.PENDING})
        task.started_at = task.last_heartbeat = task.updated_at
        self._emit("task.started", task)
        return task

    def heartbeat(self, task_id: str) -> Task:
        """Record that the task's session is making progress."""
        task = self.get(task_id)
        if task.state not in ACTIVE_STATES:
            raise ValueError(f"task {task_id!r} is {task.state.value}; only active tasks beat")
        task.last_heartbeat = task.updated_at = self._clock()
        return task

    def complete(self, task_id: str, result: Any = None) -> Task:
        task = self._finish(task_id, TaskState.COMPLETED)
        task.result = result
        self._emit("task.completed", task, result=result)
        return task

    def fail(self, task_id: str, error: str) -> Task:
        task = self._finish(task_id, TaskState.FAILED)
        task.error = str(error)
        self._emit("task.failed", task, error=task.error)
        return task

    def mark_timeout(self, task_id: str) -> Task:
        task = self._finish(task_id, TaskState.TIMEOUT)
        self._emit("task.timeout", task, timeout=task.timeout)
        return task

    def mark_stale(self, task_id: str) -> Task:
        task = self._finish(task_id, TaskState.STALE)
        self._emit("task.stale", task, last_heartbeat=task.last_heartbeat)
        return task

    def block(self, task_id: str, reason: str) -> Task:
        task = self._finish(task_id, TaskState.BLOCKED)
        task.error = str(reason)
        self._emit("task.blocked", task, reason=task.error)
        return task

    def retry(self, task_id: str) -> bool:
        """Run the task again; ``False`` (and no change) once ``max_retries`` is reached."""
        task = self.get(task_id)
        if task.state is TaskState.COMPLETED:
            raise ValueError(f"task {task_id!r} is completed; it cannot be retried")
        if task.retries >= task.max_retries:
            return False
        now = self._clock()
        task.retries += 1
        task.state = TaskState.RUNNING
        task.updated_at = task.started_at = task.last_heartbeat = now
        task.finished_at = None
        task.error = None
        self._emit("task.retried", task, retries=task.retries, max_retries=task.max_retries)
        return True

    def _transition(self, task_id: str, state: TaskState, *, allowed: set[TaskState]) -> Task:
        task = self.get(task_id)
        if task.state not in allowed:
            raise ValueError(f"task {task_id!r} cannot go from {task.state.value} to {state.value}")
        task.state = state
        task.updated_at = self._clock()
        return task

    def _finish(self, task_id: str, state: TaskState) -> Task:
        allowed = set(TaskState) - FINAL_STATES
        task = self._transition(task_id, state, allowed=allowed)
        task.finished_at = task.updated_at
        return task

    # -- removal and cleanup -----------------------------------------------------------------

    def remove_session(self, session_id: str) -> int:
        """Forget every task of ``session_id``; return how many were removed."""
        ids = self._by_session.pop(session_id, {})
        for task_id in ids:
            self._tasks.pop(task_id, None)
        return len(ids)

    def cleanup(self, max_age: float | None = None) -> int:
        """Remove finished tasks (any finished state) idle for ``max_age`` s; return the count."""
        age = self._max_age if max_age is None else max_age
        if isinstance(age, bool) or not isinstance(age, (int, float)) or age < 0:
            raise ValueError(f"max_age must be a number >= 0, got {age!r}")
        now = self._clock()
        expired = [
            t.id
            for t in self._tasks.values()
            if t.state in FINISHED_STATES and now - self._finished_time(t) >= age
        ]
        removed = self._remove(expired)
        removed += self._enforce_finished_cap()
        self._last_cleanup = now
        self._registrations_since_cleanup = 0
        if removed:
            log.debug("task registry cleanup removed %d task(s)", removed)
        return removed

    @staticmethod
    def _finished_time(task: Task) -> float:
        return task.finished_at if task.finished_at is not None else task.updated_at

    def _enforce_finished_cap(self) -> int:
        """Drop the oldest finished tasks beyond ``max_finished``, whatever their age."""
        if self._max_finished is None:
            return 0
        finished = [t for t in self._tasks.values() if t.state in FINISHED_STATES]
        excess = len(finished) - self._max_finished
        if excess <= 0:
            return 0
        finished.sort(key=self._finished_time)
        return self._remove([t.id for t in finished[:excess]])

    def _remove(self, task_ids: list[str]) -> int:
        for task_id in task_ids:
            task = self._tasks.pop(task_id)
            session_tasks = self._by_session.get(task.session_id)
            if session_tasks is not None:
                session_tasks.pop(task_id, None)
                if not session_tasks:
                    del self._by_session[task.session_id]
        self._cleaned_up += len(task_ids)
        return len(task_ids)

    def _maybe_cleanup(self) -> None:
        # Registration-driven cleanup keeps the registry bounded with or without an event loop.
        self._registrations_since_cleanup += 1
        due_by_count = self._registrations_since_cleanup >= self._cleanup_every
        due_by_time = self._clock() - self._last_cleanup >= self._cleanup_interval
        if due_by_count or due_by_time:
            self.cleanup()

    # -- the owned cleanup task --------------------------------------------------------------

    def start_auto_cleanup(self) -> None:
        """Start the periodic cleanup task on the running loop (no-op if already running)."""
        if self._closed:
            raise RuntimeError("task registry is shut down")
        loop = asyncio.get_running_loop()
        current = self._cleanup_task
        if current is not None and not current.done() and current.get_loop() is loop:
            return
        self._cleanup_task = loop.create_task(
            self._auto_cleanup_loop(), name="task-registry-cleanup"
        )

    def _ensure_auto_cleanup(self) -> None:
        if self._closed or running_loop() is None:
            return
        self.start_auto_cleanup()

    async def _auto_cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self._cleanup_interval)
            try:
                self.cleanup()
            except Exception:
                log.exception("task registry cleanup failed")

    @property
    def auto_cleanup_running(self) -> bool:
        return self._cleanup_task is not None and not self._cleanup_task.done()

    async def shutdown(self) -> None:
        """Cancel the cleanup task and wait for it; idempotent. Tasks stay readable."""
        self._closed = True
        task, self._cleanup_task = self._cleanup_task, None
        if task is None or task.done():
            return
        task.cancel()
        if task.get_loop() is asyncio.get_running_loop():
            await asyncio.wait({task})

    # -- events and stats --------------------------------------------------------------------

    def _emit(self, event_type: str, task: Task, **extra: Any) -> None:
        if self._stream is None:
            return
        payload = {"task_id": task.id, "session_id": task.session_id, "state": task.state.value}
        payload.update(extra)
        event = {
            "type": event_type,
            "stream_id": task.session_id,
            "actor": TASK_ACTOR,
            "payload": payload,
        }
        # The registry's state is authoritative; a stream that refuses an event must not
        # leave a task half-updated, so the failure is logged and counted instead.
        try:
            self._stream.append(event)
        except Exception:
            self._event_errors += 1
            log.exception("could not append %s for task %s", event_type, task.id)

    def stats(self) -> dict[str, Any]:
        counts = {state.value: 0 for state in TaskState}
        for task in self._tasks.values():
            counts[task.state.value] += 1
        counts_any: dict[str, Any] = dict(counts)
        counts_any.update(
            total=len(self._tasks),
            active=counts["pending"] + counts["running"],
            sessions=len(self._by_session),
            cleaned_up=self._cleaned_up,
            event_errors=self._event_errors,
            auto_cleanup_running=self.auto_cleanup_running,
        )
        return counts_any
