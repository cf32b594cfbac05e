"""A stream's human-in-the-loop checkpoints: the projection of its checkpoint events and the
expiry timers, one per pending checkpoint.

The file is the truth: ``checkpoint.requested`` opens a checkpoint (its ``expires_at`` is the one
deadline there is), ``checkpoint.approved``/``checkpoint.rejected`` close it. The projection is
rebuilt from the file when the stream opens and kept current by every append. Each pending
checkpoint has exactly one timer, armed on the running event loop (or as soon as one is seen);
when it fires the checkpoint is rejected on the stream with reason ``"timeout"`` by its
``expires_by`` actor. An expiry whose rejection cannot be appended (a full disk, say) is retried
on the next append.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

from opencode_addons.background import running_loop
from opencode_addons.events import (
    CHECKPOINT_APPROVED,
    CHECKPOINT_REJECTED,
    CHECKPOINT_REQUESTED,
    CHECKPOINT_STATUS,
    SYSTEM_ACTOR,
    Event,
    checkpoint_id_of,
    new_id,
    now_ms,
    payload_of,
)
from opencode_addons.validation import positive_seconds, require_str

log = logging.getLogger(__name__)

TIMEOUT_REASON = "timeout"

Append = Callable[[Mapping[str, Any]], Event]


@dataclass
class Checkpoint:
    """A human-in-the-loop decision point; times are epoch milliseconds.

    ``expires_by`` is the actor named in the rejection when the checkpoint times out.
    """

    id: str
    stream_id: str
    decision_point: str
    options: list[str]
    requested_by: str
    requested_at: int
    expires_at: int
    status: str = "pending"
    expires_by: str = SYSTEM_ACTOR

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_event(cls, event: Mapping[str, Any], timeout_ms: int) -> Optional[Checkpoint]:
        """The checkpoint a ``checkpoint.requested`` event describes, or None if it has no id."""
        checkpoint_id = checkpoint_id_of(event)
        if checkpoint_id is None:
            return None
        payload = payload_of(event)
        requested_at = payload.get("requested_at")
        if not isinstance(requested_at, int):
            requested_at = int(event.get("timestamp") or now_ms())
        expires_at = payload.get("expires_at")
        options = payload.get("options")
        expires_by = payload.get("expires_by")
        return cls(
            id=checkpoint_id,
            stream_id=str(payload.get("stream_id") or event.get("stream_id") or ""),
            decision_point=str(payload.get("decision_point") or ""),
            options=[str(o) for o in options] if isinstance(options, list) else [],
            requested_by=str(payload.get("requested_by") or event.get("actor") or SYSTEM_ACTOR),
            requested_at=requested_at,
            expires_at=expires_at if isinstance(expires_at, int) else requested_at + timeout_ms,
            expires_by=expires_by if isinstance(expires_by, str) and expires_by else SYSTEM_ACTOR,
        )


class StreamCheckpoints:
    """The pending checkpoints of one stream and their timers.

    ``append`` is the stream's append: every change is made by appending an event, and the
    projection (``on_requested``/``on_resolved``) applies it when the stream dispatches it.
    """

    def __init__(self, append: Append, default_timeout: float) -> None:
        self._append = append
        self.default_timeout = positive_seconds("checkpoint_timeout", default_timeout)
        self._pending: dict[str, Checkpoint] = {}
        # The same dict, read-only, for a cheap "anything pending?" on every append (the dict
        # is only ever changed in place, never replaced).
        self.pending_by_id: Mapping[str, Checkpoint] = self._pending
        self._by_session: dict[str, set[str]] = {}
        # Objects handed to callers by request(), adopted by the projection so that later
        # status changes are visible on them.
        self._adopt: dict[str, Checkpoint] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        # Pending checkpoints whose timer waits for an event loop to be seen.
        self._unarmed: set[str] = set()
        self._next_expiry_ms = math.inf
        self._expiring = False
        self._closed = False
        self.expiry_errors = 0

    # -- the projection ----------------------------------------------------------------------

    def on_requested(self, event: Event) -> None:
        parsed = Checkpoint.from_event(event, int(self.default_timeout * 1000))
        if parsed is None or parsed.id in self._pending:
            return
        adopted = self._adopt.pop(parsed.id, None)
        checkpoint = adopted if adopted is not None else parsed
        self._pending[checkpoint.id] = checkpoint
        self._by_session.setdefault(checkpoint.stream_id, set()).add(checkpoint.id)
        self._next_expiry_ms = min(self._next_expiry_ms, checkpoint.expires_at)
        self._unarmed.add(checkpoint.id)
        self.arm_timers()

    def on_resolved(self, event: Event) -> None:
        checkpoint_id = checkpoint_id_of(event)
        if checkpoint_id is not None:
            self._forget(checkpoint_id, CHECKPOINT_STATUS[event["type"]])

    def drop_session(self, session_id: str) -> list[str]:
        """Forget the session's pending checkpoints (the session ended); return their ids."""
        dropped = list(self._by_session.get(session_id, ()))
        for checkpoint_id in dropped:
            self._forget(checkpoint_id, "dropped")
        return dropped

    def sessions(self) -> set[str]:
        """The sessions (streams) that have pending checkpoints."""
        return set(self._by_session)

    def _forget(self, checkpoint_id: str, status: str) -> None:
        checkpoint = self._pending.pop(checkpoint_id, None)
        if checkpoint is None:
            return
        checkpoint.status = status
        self._cancel_timer(checkpoint_id)
        ids = self._by_session.get(checkpoint.stream_id)
        if ids is not None:
            ids.discard(checkpoint_id)
            if not ids:
                del self._by_session[checkpoint.stream_id]

    # -- requesting and deciding -------------------------------------------------------------

    def request(
        self,
        stream_id: str,
        decision_point: str,
        options: Sequence[str],
        requested_by: str,
        *,
        timeout: float | None = None,
        expires_by: str = SYSTEM_ACTOR,
    ) -> Checkpoint:
        require_str("stream_id", stream_id)
        require_str("requested_by", requested_by)
        require_str("expires_by", expires_by)
        if isinstance(options, str) or not all(isinstance(o, str) for o in options):
            raise TypeError("options must be a sequence of str")
        seconds = self.default_timeout if timeout is None else timeout
        timeout_ms = int(positive_seconds("timeout", seconds) * 1000)
        now = now_ms()
        checkpoint = Checkpoint(
            id=new_id("cp"),
            stream_id=stream_id,
            decision_point=str(decision_point),
            options=list(options),
            requested_by=requested_by,
            requested_at=now,
            expires_at=now + timeout_ms,
            expires_by=expires_by,
        )
        event = {
            "type": CHECKPOINT_REQUESTED,
            "stream_id": stream_id,
            "actor": requested_by,
            "payload": checkpoint.to_dict(),
        }
        self._adopt[checkpoint.id] = checkpoint
        try:
            self._append(event)
        finally:
            self._adopt.pop(checkpoint.id, None)
        return checkpoint

    def approve(self, checkpoint_id: str, by: str, option: str | None = None) -> bool:
        checkpoint = self._pending.get(checkpoint_id)
        if checkpoint is None:
            return False
        if option is not None and checkpoint.options and option not in checkpoint.options:
            raise ValueError(f"option {option!r} is not one of {checkpoint.options}")
        if checkpoint.expires_at <= now_ms():
            self.reject(checkpoint_id, checkpoint.expires_by, reason=TIMEOUT_REASON)
            return False
        payload = {"checkpoint_id": checkpoint_id, "approved_by": by, "selected_option": option}
        self._append_resolution(checkpoint, CHECKPOINT_APPROVED, by, payload)
        return True

    def reject(self, checkpoint_id: str, by: str, reason: str | None = None) -> bool:
        checkpoint = self._pending.get(checkpoint_id)
        if checkpoint is None:
            return False
        payload = {"checkpoint_id": checkpoint_id, "rejected_by": by, "reason": reason}
        self._append_resolution(checkpoint, CHECKPOINT_REJECTED, by, payload)
        return True

    def _append_resolution(
        self, checkpoint: Checkpoint, event_type: str, by: str, payload: dict[str, Any]
    ) -> None:
        self._append(
            {"type": event_type, "stream_id": checkpoint.stream_id, "actor": by, "payload": payload}
        )

    def expire_overdue(self) -> int:
        """Reject every pending checkpoint past its ``expires_at``; return how many."""
        if self._closed:
            return 0
        now = now_ms()
        overdue = [c for c in self._pending.values() if c.expires_at <= now]
        expired = 0
        self._expiring = True
        try:
            for checkpoint in overdue:
                expired += self.reject(checkpoint.id, checkpoint.expires_by, TIMEOUT_REASON)
        finally:
            self._expiring = False
            self._next_expiry_ms = min(
                (c.expires_at for c in self._pending.values()), default=math.inf
            )
        if expired:
            log.info("expired %d checkpoint(s)", expired)
        return expired

    @property
    def pending(self) -> list[Checkpoint]:
        return list(self._pending.values())

    def get(self, checkpoint_id: str) -> Checkpoint | None:
        return self._pending.get(checkpoint_id)

    def __len__(self) -> int:
        return len(self._pending)

    def __bool__(self) -> bool:
        return bool(self._pending)

    # -- timers ------------------------------------------------------------------------------

    def arm_timers(self) -> None:
        """Arm the timers still waiting for a loop, on the running loop (if there is one)."""
        loop = running_loop()
        if loop is None or self._closed:
            return
        if loop is not self._timer_loop:
            # Timers armed on another (perhaps closed) loop would never fire on this one.
            for checkpoint_id in list(self._timers):
                self._cancel_timer(checkpoint_id)
                self._unarmed.add(checkpoint_id)
            self._timer_loop = loop
        if not self._unarmed:
            return
        unarmed, self._unarmed = self._unarmed, set()
        for checkpoint_id in unarmed:
            checkpoint = self._pending.get(checkpoint_id)
            if checkpoint is not None:
                delay = max(0.0, (checkpoint.expires_at - now_ms()) / 1000)
                self._timers[checkpoint_id] = loop.call_later(delay, self._on_timer, checkpoint_id)

    def _cancel_timer(self, checkpoint_id: str) -> None:
        self._unarmed.discard(checkpoint_id)
        timer = self._timers.pop(checkpoint_id, None)
        if timer is not None:
            timer.cancel()

    def timer_of(self, checkpoint_id: str) -> asyncio.TimerHandle | None:
        """The armed expiry timer of a pending checkpoint (None before a loop is seen)."""
        return self._timers.get(checkpoint_id)

    def _on_timer(self, checkpoint_id: str) -> None:
        self._timers.pop(checkpoint_id, None)
        checkpoint = self._pending.get(checkpoint_id)
        if self._closed or checkpoint is None:
            return
        try:
            self.reject(checkpoint_id, checkpoint.expires_by, reason=TIMEOUT_REASON)
        except Exception:
            # Still pending and overdue: housekeep() retries on the next append.
            self.expiry_errors += 1
            self._next_expiry_ms = min(self._next_expiry_ms, checkpoint.expires_at)
            log.exception("could not expire checkpoint %s", checkpoint_id)

    def housekeep(self) -> None:
        """After each append: arm timers on the running loop, expire overdue checkpoints."""
        if not self._pending:
            return
        self.arm_timers()
        if not self._expiring and now_ms() >= self._next_expiry_ms:
            try:
                self.expire_overdue()
            except Exception:
                self.expiry_errors += 1
                log.exception("could not expire overdue checkpoints")

    def close(self) -> None:
        """Cancel every timer (from any thread: it only cancels handles)."""
        self._closed = True
        timers, self._timers = self._timers, {}
        for timer in timers.values():
            timer.cancel()
        self._unarmed.clear()

    def stats(self) -> dict[str, int]:
        return {
            "pending_checkpoints": len(self._pending),
            "timers": len(self._timers),
            "unarmed_checkpoints": len(self._unarmed),
            "checkpoint_expiry_errors": self.expiry_errors,
        }
