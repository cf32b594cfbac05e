"""Test doubles: a small in-memory EventStream for unit tests of orchestrator components.

Integration tests use the real ``DurableStream``; this keeps component tests independent of disk.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import secrets
import time
from collections.abc import Mapping
from typing import Any

from opencode_addons.events import WILDCARD, Event, Subscriber, Unsubscribe

log = logging.getLogger(__name__)


class FakeComponent:
    """The ``Component`` contract's members, for test doubles that only care about shutdown()."""

    name = "fake"
    closed = False

    def stats(self) -> dict[str, Any]:
        return {}

    def shutdown(self) -> None:
        self.closed = True


class MemoryEventStream:
    """Appends to a list and notifies subscribers synchronously, like DurableStream does."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._subscribers: dict[str, list[Subscriber]] = {}
        self._seq = itertools.count(1)
        self.run_id = secrets.token_hex(8)

    def append(self, event: Mapping[str, Any]) -> Event:
        if not isinstance(event.get("type"), str):
            raise ValueError("event needs a string 'type'")
        stored = dict(event)
        stored.setdefault("id", f"evt_{secrets.token_hex(8)}")
        stored.setdefault("timestamp", int(time.time() * 1000))
        stored.setdefault("correlation_id", self.run_id)
        stored.setdefault("actor", "system")
        stored["seq"] = next(self._seq)
        self.events.append(stored)
        for key in (stored["type"], WILDCARD):
            for callback in list(self._subscribers.get(key, ())):
                try:
                    result = callback(stored)
                    if inspect.isawaitable(result):
                        import asyncio

                        asyncio.get_running_loop().create_task(result)  # type: ignore[arg-type]
                except Exception:
                    log.exception("subscriber failed")
        return stored

    def subscribe(self, event_type: str, callback: Subscriber) -> Unsubscribe:
        self._subscribers.setdefault(event_type, []).append(callback)

        def unsubscribe() -> None:
            callbacks = self._subscribers.get(event_type, [])
            if callback in callbacks:
                callbacks.remove(callback)
            if not callbacks:
                self._subscribers.pop(event_type, None)

        return unsubscribe

    def of_type(self, event_type: str) -> list[Event]:
        return [e for e in self.events if e["type"] == event_type]

    def subscriber_count(self) -> int:
        return sum(len(v) for v in self._subscribers.values())


class FakeCheckpoint:
    """A checkpoint record as ``MemoryCheckpointStream`` keeps it."""

    def __init__(
        self, checkpoint_id: str, stream_id: str, decision_point: str, options: list[str]
    ) -> None:
        self.id = checkpoint_id
        self.stream_id = stream_id
        self.decision_point = decision_point
        self.options = options
        self.status = "pending"
        self.timer: asyncio.TimerHandle | None = None


class MemoryCheckpointStream(MemoryEventStream):
    """``MemoryEventStream`` plus DurableStream's checkpoint methods and their events."""

    def __init__(self) -> None:
        super().__init__()
        self.checkpoints: dict[str, FakeCheckpoint] = {}
        self.closed = False

    def append(self, event: Mapping[str, Any]) -> Event:
        if self.closed:
            raise RuntimeError("stream is closed")
        return super().append(event)

    def request_checkpoint(
        self,
        stream_id: str,
        decision_point: str,
        options: list[str],
        requested_by: str,
        *,
        timeout: float | None = None,
        expires_by: str = "system",
    ) -> FakeCheckpoint:
        """Like DurableStream's: one timer per checkpoint rejects it at its deadline."""
        checkpoint_id = f"cp_{secrets.token_hex(6)}"
        checkpoint = FakeCheckpoint(checkpoint_id, stream_id, decision_point, list(options))
        self.append(
            {
                "type": "checkpoint.requested",
                "stream_id": stream_id,
                "actor": requested_by,
                "payload": {
                    "checkpoint_id": checkpoint.id,
                    "decision_point": decision_point,
                    "options": list(options),
                    "requested_by": requested_by,
                },
            }
        )
        self.checkpoints[checkpoint.id] = checkpoint
        if timeout is not None:
            checkpoint.timer = asyncio.get_running_loop().call_later(
                timeout, self.reject_checkpoint, checkpoint.id, expires_by, "timeout"
            )
        return checkpoint

    def approve_checkpoint(self, checkpoint_id: str, by: str, option: str | None = None) -> bool:
        checkpoint = self._pending(checkpoint_id)
        if checkpoint is None:
            return False
        self._close(checkpoint, "approved")
        payload = {"checkpoint_id": checkpoint_id, "approved_by": by, "selected_option": option}
        self.append(
            {"type": "checkpoint.approved", "stream_id": checkpoint.stream_id, "payload": payload}
        )
        return True

    def reject_checkpoint(self, checkpoint_id: str, by: str, reason: str | None = None) -> bool:
        checkpoint = self._pending(checkpoint_id)
        if checkpoint is None:
            return False
        self._close(checkpoint, "rejected")
        payload = {"checkpoint_id": checkpoint_id, "rejected_by": by, "reason": reason}
        self.append(
            {"type": "checkpoint.rejected", "stream_id": checkpoint.stream_id, "payload": payload}
        )
        return True

    def _close(self, checkpoint: FakeCheckpoint, status: str) -> None:
        checkpoint.status = status
        if checkpoint.timer is not None:
            checkpoint.timer.cancel()

    def _pending(self, checkpoint_id: str) -> FakeCheckpoint | None:
        checkpoint = self.checkpoints.get(checkpoint_id)
        return checkpoint if checkpoint is not None and checkpoint.status == "pending" else None


async def eventually(condition, timeout: float = 5.0, step: float = 0.01) -> bool:
    """Wait until ``condition()`` is true (a timer has fired, a write happened), up to a
    generous ``timeout``, so a busy machine delays the test instead of failing it."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(step)
    return True
