"""CheckpointManager: awaitable human-in-the-loop checkpoints, a facade over the stream's.

The stream owns the checkpoints (``stream_checkpoints``): their events, the one deadline of each
(``expires_at`` in the file) and the one timer that rejects it then. The manager passes each
request's timeout to the stream and hands out an awaitable ``PendingCheckpoint`` that resolves
when an approval or rejection is appended by anyone, the stream's own timeout rejection
included. Nothing is left behind on resolve.

Checkpoints an agent host's server asked for (requested with an ``origin``, e.g. the OpenCode
bridge's permissions and questions) are adopted: ``get(id)`` returns an awaitable for them too,
resolved when the server's reply is bridged. The manager never rejects them itself (only the
server decides; the stream still expires them): its shutdown leaves them pending, and their
session ending drops them.

When a session ends (deleted, aborted, ended, or a plugin shutdown), the stream forgets its
pending checkpoints without a closing event, so the manager lets go of them too: an adopted
one's awaitable is cancelled, a requested one resolves as rejected with reason
``"session_ended"`` (its handler runs), and both count as ``dropped``. Nothing waits forever on
a checkpoint the stream no longer has, and the manager holds no more than the stream does.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, Union

from opencode_addons.background import BackgroundTasks
from opencode_addons.events import (
    CHECKPOINT_APPROVED,
    CHECKPOINT_REJECTED,
    CHECKPOINT_REQUESTED,
    PLUGIN_SHUTDOWN_TYPES,
    SESSION_TERMINAL_TYPES,
    Event,
    Subscriber,
    Unsubscribe,
    checkpoint_id_of,
    session_id_of,
)
from opencode_addons.stream_checkpoints import TIMEOUT_REASON

log = logging.getLogger(__name__)

MANAGER_ACTOR = "checkpoint-manager"
# The reason of a requested checkpoint's outcome when its session ended before a decision.
SESSION_ENDED_REASON = "session_ended"


class CheckpointStream(Protocol):
    """The stream operations the manager uses (``DurableStream`` provides them)."""

    def append(self, event: Mapping[str, Any]) -> Event: ...

    def subscribe(self, event_type: str, callback: Subscriber) -> Unsubscribe: ...

    def request_checkpoint(
        self,
        stream_id: str,
        decision_point: str,
        options: Sequence[str],
        requested_by: str,
        *,
        timeout: Optional[float] = None,
        expires_by: str = ...,
    ) -> Any: ...

    def approve_checkpoint(
        self, checkpoint_id: str, by: str, option: Optional[str] = None
    ) -> bool: ...

    def reject_checkpoint(
        self, checkpoint_id: str, by: str, reason: Optional[str] = None
    ) -> bool: ...


@dataclass(frozen=True)
class CheckpointOutcome:
    """How a checkpoint was resolved."""

    checkpoint_id: str
    approved: bool
    by: Optional[str]
    option: Optional[str] = None
    reason: Optional[str] = None


OutcomeHandler = Callable[[CheckpointOutcome], Union[Any, None]]


class PendingCheckpoint:
    """A requested checkpoint; ``await`` it for its ``CheckpointOutcome``."""

    def __init__(
        self,
        checkpoint_id: str,
        stream_id: str,
        decision_point: str,
        options: Sequence[str],
        future: asyncio.Future[CheckpointOutcome],
    ) -> None:
        self.id = checkpoint_id
        self.stream_id = stream_id
        self.decision_point = decision_point
        self.options = tuple(options)
        self._future = future

    def done(self) -> bool:
        return self._future.done()

    @property
    def outcome(self) -> CheckpointOutcome | None:
        return self._future.result() if self._future.done() else None

    async def wait(self, timeout: float | None = None) -> CheckpointOutcome:
        """The outcome; ``asyncio.TimeoutError`` after ``timeout`` s (the checkpoint stays)."""
        return await asyncio.wait_for(asyncio.shield(self._future), timeout)

    def __await__(self) -> Generator[Any, None, CheckpointOutcome]:
        # Shielded so a cancelled waiter does not cancel the checkpoint for other waiters.
        return asyncio.shield(self._future).__await__()

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"PendingCheckpoint(id={self.id!r}, stream_id={self.stream_id!r}, {state})"


@dataclass
class _Entry:
    pending: PendingCheckpoint
    future: asyncio.Future[CheckpointOutcome]
    handler: Optional[OutcomeHandler]
    # Asked by a server (adopted), not through this manager.
    adopted: bool = False


class CheckpointManager:
    """Awaitable checkpoints of one stream, each with its own timeout (see the module)."""

    name = "checkpoint_manager"

    @property
    def closed(self) -> bool:
        """True once ``shutdown()`` has run."""
        return self._closed

    def __init__(
        self,
        stream: CheckpointStream,
        *,
        default_timeout: float = 300.0,
        handler_grace: float = 5.0,
    ) -> None:
        if isinstance(default_timeout, bool) or not default_timeout > 0:
            raise ValueError(f"default_timeout must be > 0, got {default_timeout!r}")
        self._handler_grace = float(handler_grace)
        self._stream = stream
        self._default_timeout = float(default_timeout)
        self._entries: dict[str, _Entry] = {}
        self._handler_tasks = BackgroundTasks("checkpoint handler")
        self._closed = False
        self._counts = {
            "requested": 0,
            "approved": 0,
            "rejected": 0,
            "timed_out": 0,
            "handler_errors": 0,
            "adopted": 0,
            "dropped": 0,
        }
        self._unsubscribes: list[Unsubscribe] = [
            stream.subscribe(CHECKPOINT_APPROVED, self._on_event),
            stream.subscribe(CHECKPOINT_REJECTED, self._on_event),
            stream.subscribe(CHECKPOINT_REQUESTED, self._on_requested),
        ]
        self._unsubscribes.extend(
            stream.subscribe(event_type, self._on_session_end)
            for event_type in sorted(SESSION_TERMINAL_TYPES)
        )

    # -- requesting and deciding -------------------------------------------------------------

    def request(
        self,
        stream_id: str,
        decision_point: str,
        options: Sequence[str],
        requested_by: str,
        *,
        timeout: float | None = None,
        handler: OutcomeHandler | None = None,
    ) -> PendingCheckpoint:
        """Request a checkpoint on the stream, expiring ``timeout`` s from now (default: the
        manager's ``default_timeout``); needs a running loop. On expiry the stream rejects it
        with reason ``"timeout"`` by ``"checkpoint-manager"``."""
        if self._closed:
            raise RuntimeError("checkpoint manager is shut down")
        seconds = self._default_timeout if timeout is None else timeout
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
            raise ValueError(f"timeout must be a number > 0, got {seconds!r}")
        if handler is not None and not callable(handler):
            raise TypeError("handler must be callable")
        loop = asyncio.get_running_loop()
        checkpoint = self._stream.request_checkpoint(
            stream_id,
            decision_point,
            list(options),
            requested_by,
            timeout=seconds,
            expires_by=MANAGER_ACTOR,
        )
        if inspect.isawaitable(checkpoint):
            raise TypeError("stream.request_checkpoint must return the checkpoint itself")
        checkpoint_id = str(checkpoint.id)
        future: asyncio.Future[CheckpointOutcome] = loop.create_future()
        pending = PendingCheckpoint(checkpoint_id, stream_id, decision_point, options, future)
        self._entries[checkpoint_id] = _Entry(pending, future, handler)
        self._counts["requested"] += 1
        return pending

    def request_checkpoint(
        self, stream_id: str, decision_point: str, options: Sequence[str], requested_by: str
    ) -> PendingCheckpoint:
        """``request`` with the default timeout, so the manager can serve a ``TaskObserver``."""
        return self.request(stream_id, decision_point, options, requested_by)

    def approve(self, checkpoint_id: str, by: str, option: str | None = None) -> bool:
        return bool(self._stream.approve_checkpoint(checkpoint_id, by, option))

    def reject(self, checkpoint_id: str, by: str, reason: str | None = None) -> bool:
        return bool(self._stream.reject_checkpoint(checkpoint_id, by, reason))

    def get(self, checkpoint_id: str) -> PendingCheckpoint | None:
        entry = self._entries.get(checkpoint_id)
        return entry.pending if entry is not None else None

    @property
    def pending(self) -> int:
        return len(self._entries)

    # -- adopted checkpoints (asked by a server) ----------------------------------------------

    def _on_requested(self, event: Event) -> None:
        payload = event.get("payload")
        if self._closed or not isinstance(payload, Mapping) or not payload.get("origin"):
            return
        checkpoint_id = checkpoint_id_of(event)
        if checkpoint_id is None or checkpoint_id in self._entries:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # nothing could await it without a loop; the stream still tracks it
        options = payload.get("options")
        future: asyncio.Future[CheckpointOutcome] = loop.create_future()
        pending = PendingCheckpoint(
            checkpoint_id,
            str(payload.get("stream_id") or event.get("stream_id") or ""),
            str(payload.get("decision_point") or ""),
            [str(o) for o in options] if isinstance(options, list) else [],
            future,
        )
        self._entries[checkpoint_id] = _Entry(pending, future, None, adopted=True)
        self._counts["adopted"] += 1

    def _on_session_end(self, event: Event) -> None:
        """Let go of the checkpoints of an ended session: the stream drops them silently."""
        ended = None if event.get("type") in PLUGIN_SHUTDOWN_TYPES else session_id_of(event)
        if ended is None and event.get("type") not in PLUGIN_SHUTDOWN_TYPES:
            return
        for checkpoint_id, entry in list(self._entries.items()):
            if ended not in (None, entry.pending.stream_id):
                continue
            if entry.adopted:
                self._drop_adopted(checkpoint_id)
            else:
                self._drop_requested(checkpoint_id)

    def _drop_adopted(self, checkpoint_id: str) -> None:
        entry = self._entries.pop(checkpoint_id, None)
        if entry is not None:
            entry.future.cancel()
            self._counts["dropped"] += 1

    def _drop_requested(self, checkpoint_id: str) -> None:
        """A requested checkpoint whose session ended: its requester gets a rejection."""
        entry = self._entries.pop(checkpoint_id, None)
        if entry is None:
            return
        self._counts["dropped"] += 1
        outcome = CheckpointOutcome(
            checkpoint_id, approved=False, by=MANAGER_ACTOR, reason=SESSION_ENDED_REASON
        )
        if not entry.future.done():
            entry.future.set_result(outcome)
        if entry.handler is not None:
            self._call_handler(entry.handler, outcome)

    # -- resolution --------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        payload = event.get("payload")
        if not isinstance(payload, Mapping):
            return
        checkpoint_id = checkpoint_id_of(event)
        if checkpoint_id is None or checkpoint_id not in self._entries:
            return
        if event.get("type") == CHECKPOINT_APPROVED:
            outcome = CheckpointOutcome(
                checkpoint_id,
                approved=True,
                by=payload.get("approved_by"),
                option=payload.get("selected_option"),
            )
        else:
            outcome = CheckpointOutcome(
                checkpoint_id,
                approved=False,
                by=payload.get("rejected_by"),
                reason=payload.get("reason"),
            )
            if outcome.reason == TIMEOUT_REASON:
                self._counts["timed_out"] += 1
                log.info("checkpoint %s timed out", checkpoint_id)
        self._resolve(outcome)

    def _reject_on_stream(self, checkpoint_id: str, reason: str) -> None:
        """Reject via the stream (its event resolves us); resolve locally if that fails."""
        try:
            self._stream.reject_checkpoint(checkpoint_id, MANAGER_ACTOR, reason=reason)
        except Exception:
            log.exception("could not reject checkpoint %s on the stream", checkpoint_id)
        if checkpoint_id in self._entries:
            outcome = CheckpointOutcome(
                checkpoint_id, approved=False, by=MANAGER_ACTOR, reason=reason
            )
            self._resolve(outcome)

    def _resolve(self, outcome: CheckpointOutcome) -> None:
        entry = self._entries.pop(outcome.checkpoint_id, None)
        if entry is None:
            return
        self._counts["approved" if outcome.approved else "rejected"] += 1
        if not entry.future.done():
            entry.future.set_result(outcome)
        if entry.handler is not None:
            self._call_handler(entry.handler, outcome)

    def _call_handler(self, handler: OutcomeHandler, outcome: CheckpointOutcome) -> None:
        try:
            result = handler(outcome)
        except Exception:
            self._counts["handler_errors"] += 1
            log.exception("checkpoint handler failed for %s", outcome.checkpoint_id)
            return
        if inspect.isawaitable(result):
            self._handler_tasks.spawn(result)

    async def shutdown(self) -> None:
        """Reject every pending checkpoint with reason ``"shutdown"``; idempotent."""
        if self._closed and not self._entries and not self._handler_tasks:
            return
        self._closed = True
        for checkpoint_id, entry in list(self._entries.items()):
            if entry.adopted:
                # Asked by a server: it stays pending there and in the stream's file.
                self._drop_adopted(checkpoint_id)
            else:
                self._reject_on_stream(checkpoint_id, "shutdown")
        unsubscribes, self._unsubscribes = self._unsubscribes, []
        for unsubscribe in unsubscribes:
            try:
                unsubscribe()
            except Exception:
                log.exception("checkpoint manager could not unsubscribe")
        await self._finish_handlers()

    async def _finish_handlers(self) -> None:
        # Handlers started by our resolutions get a grace period, then are cancelled.
        late = await self._handler_tasks.finish(self._handler_grace)
        if late:
            log.warning("cancelled %d checkpoint handler(s) still running at shutdown", late)

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = dict(self._counts)
        stats["handler_errors"] += self._handler_tasks.failures
        stats["pending"] = len(self._entries)
        stats["handlers_running"] = len(self._handler_tasks)
        stats["closed"] = self._closed
        return stats
