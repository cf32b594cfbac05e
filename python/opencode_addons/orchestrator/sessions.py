"""SessionStateTracker: per-session state that is dropped when the session ends or goes idle.

State is created on a session's first event and dropped on ``session.deleted``, ``session.end``
and ``plugin.shutdown`` (all sessions) under either spelling, on TTL expiry, or when
``max_sessions`` is exceeded (least recently seen first). The ids of the last ``max_ended``
sessions to end are remembered, so that their late events do not bring them back. Other
components register ``on_drop`` callbacks to drop their own per-session maps at the same moment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from opencode_addons.background import running_loop
from opencode_addons.events import (
    PLUGIN_SHUTDOWN_TYPES,
    SESSION_CREATED,
    SESSION_TERMINAL_TYPES,
    WILDCARD,
    Event,
    EventStream,
    Unsubscribe,
    session_id_of,
)

log = logging.getLogger(__name__)

DropCallback = Callable[[str, str], None]
_SESSION_START_TYPES = frozenset({SESSION_CREATED, "session.created"})
# How many ended session ids are remembered by default, so late events cannot resurrect them.
DEFAULT_MAX_ENDED = 4096


@dataclass
class SessionState:
    """What is kept for one session; ``data`` is free for components to use."""

    session_id: str
    created_at: float
    last_seen: float
    data: dict[str, Any] = field(default_factory=dict)


class SessionStateTracker:
    """Tracks live sessions seen on the stream, bounded by TTL and an optional count."""

    name = "session_state_tracker"

    @property
    def closed(self) -> bool:
        """True once ``shutdown()`` has run."""
        return self._closed

    @property
    def max_ended(self) -> int:
        """How many ended session ids are remembered (the oldest are let go of first)."""
        return self._max_ended

    def __init__(
        self,
        stream: EventStream | None = None,
        *,
        ttl: float = 3600.0,
        clock: Callable[[], float] = time.time,
        max_sessions: int | None = None,
        max_ended: int = DEFAULT_MAX_ENDED,
    ) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0:
            raise ValueError(f"ttl must be a number > 0, got {ttl!r}")
        if max_sessions is not None and (isinstance(max_sessions, bool) or max_sessions < 1):
            raise ValueError(f"max_sessions must be >= 1 or None, got {max_sessions!r}")
        if isinstance(max_ended, bool) or not isinstance(max_ended, int) or max_ended < 0:
            raise ValueError(f"max_ended must be an int >= 0, got {max_ended!r}")
        self._ttl = float(ttl)
        # Opportunistic sweeps happen at most this often, so observing stays O(1) amortised.
        self._sweep_every = min(self._ttl, 60.0)
        self._clock = clock
        self._max_sessions = max_sessions
        self._max_ended = max_ended
        self._sessions: OrderedDict[str, SessionState] = OrderedDict()
        self._recently_ended: OrderedDict[str, None] = OrderedDict()
        self._callbacks: list[DropCallback] = []
        self._unsubscribes: list[Unsubscribe] = []
        self._timer: asyncio.TimerHandle | None = None
        self._last_sweep = clock()
        self._closed = False
        self._counts = {"created": 0, "dropped": 0, "expired": 0, "evicted": 0}
        if stream is not None:
            self.attach(stream)

    # -- feeding -----------------------------------------------------------------------------

    def attach(self, stream: EventStream) -> None:
        """Observe every event of ``stream``."""
        if self._closed:
            raise RuntimeError("session tracker is shut down")
        self._unsubscribes.append(stream.subscribe(WILDCARD, self.observe))

    def observe(self, event: Event) -> None:
        """Create or touch the event's session, or drop sessions on a terminal event."""
        if self._closed:
            return
        event_type = event.get("type")
        if event_type in PLUGIN_SHUTDOWN_TYPES:
            self.drop_all(str(event_type))
            return
        session_id = session_id_of(event)
        if event_type in SESSION_TERMINAL_TYPES:
            if session_id is not None:
                self.drop(session_id, str(event_type))
            return
        if session_id is not None and not self._ended_recently(session_id, event_type):
            self.touch(session_id)
        self._maybe_sweep()
        self._ensure_timer()

    def touch(self, session_id: str) -> SessionState:
        """The session's state, created if new, marked as seen now."""
        now = self._clock()
        state = self._sessions.get(session_id)
        if state is None:
            state = SessionState(session_id, created_at=now, last_seen=now)
            self._sessions[session_id] = state
            self._counts["created"] += 1
            self._evict_over_limit()
        else:
            state.last_seen = now
            self._sessions.move_to_end(session_id)
        return state

    # -- lookup ------------------------------------------------------------------------------

    def get(self, session_id: str) -> SessionState | None:
        return self._sessions.get(session_id)

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def sessions(self) -> list[str]:
        return list(self._sessions)

    # -- dropping ----------------------------------------------------------------------------

    def on_drop(self, callback: DropCallback) -> Unsubscribe:
        """Call ``callback(session_id, reason)`` whenever a session is dropped."""
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe

    def _ended_recently(self, session_id: str, event_type: object) -> bool:
        """Whether an event is an echo of a session that just ended.

        Components may append after a session's terminal event (a final learning capture, say);
        such events must not bring the session back. Only a new ``created`` event does.
        """
        if session_id not in self._recently_ended:
            return False
        if event_type in _SESSION_START_TYPES:
            del self._recently_ended[session_id]
            return False
        return True

    def _remember_ended(self, session_id: str) -> None:
        self._recently_ended[session_id] = None
        self._recently_ended.move_to_end(session_id)
        while len(self._recently_ended) > self._max_ended:
            self._recently_ended.popitem(last=False)

    def drop(self, session_id: str, reason: str = "dropped") -> bool:
        """Forget ``session_id`` and tell the ``on_drop`` callbacks; ``False`` if unknown."""
        self._remember_ended(session_id)
        if self._sessions.pop(session_id, None) is None:
            return False
        self._counts["dropped"] += 1
        log.debug("dropped session %s (%s)", session_id, reason)
        for callback in list(self._callbacks):
            try:
                callback(session_id, reason)
            except Exception:
                log.exception("on_drop callback failed for session %s", session_id)
        return True

    def drop_all(self, reason: str) -> int:
        dropped = 0
        for session_id in list(self._sessions):
            dropped += self.drop(session_id, reason)
        return dropped

    def expire(self) -> int:
        """Drop sessions not seen for ``ttl`` seconds; return how many."""
        now = self._clock()
        self._last_sweep = now
        expired: list[str] = []
        # Sessions are kept in last-seen order, so the scan stops at the first fresh one.
        for session_id, state in self._sessions.items():
            if now - state.last_seen < self._ttl:
                break
            expired.append(session_id)
        for session_id in expired:
            self.drop(session_id, "expired")
        self._counts["expired"] += len(expired)
        return len(expired)

    def _evict_over_limit(self) -> None:
        if self._max_sessions is None:
            return
        while len(self._sessions) > self._max_sessions:
            oldest = next(iter(self._sessions))
            self.drop(oldest, "evicted")
            self._counts["evicted"] += 1

    def _maybe_sweep(self) -> None:
        if self._clock() - self._last_sweep >= self._sweep_every:
            self.expire()

    # -- the owned expiry timer --------------------------------------------------------------

    def start_expiry(self) -> None:
        """Arm the periodic expiry timer on the running loop (no-op if armed)."""
        if self._closed:
            raise RuntimeError("session tracker is shut down")
        loop = asyncio.get_running_loop()
        if self._timer is not None and not self._timer.cancelled():
            return
        self._timer = loop.call_later(self._sweep_every, self._on_timer)

    def _ensure_timer(self) -> None:
        if self._timer is not None or self._closed or running_loop() is None:
            return
        self.start_expiry()

    def _on_timer(self) -> None:
        self._timer = None
        try:
            self.expire()
        except Exception:
            log.exception("session expiry failed")
        if not self._closed:
            self.start_expiry()

    def stop_expiry(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    @property
    def expiry_armed(self) -> bool:
        return self._timer is not None

    # -- shutdown and stats ------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Drop every session, cancel the timer and unsubscribe; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.stop_expiry()
        unsubscribes, self._unsubscribes = self._unsubscribes, []
        for unsubscribe in unsubscribes:
            try:
                unsubscribe()
            except Exception:
                log.exception("session tracker could not unsubscribe")
        self.drop_all("shutdown")

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = dict(self._counts)
        stats["sessions"] = len(self._sessions)
        stats["recently_ended"] = len(self._recently_ended)
        stats["ttl"] = self._ttl
        stats["expiry_armed"] = self.expiry_armed
        return stats
