"""A stream's intents: agents spawned to do something (``agent.spawned``) that have not finished.

``agent.completed``/``agent.failed``/``agent.aborted`` end an intent; the end of its session drops
it. Like checkpoints, the projection is rebuilt from the file when the stream opens and kept
current by every append.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional

from opencode_addons.events import (
    AGENT_COMPLETED,
    AGENT_FAILED,
    AGENT_SPAWNED,
    INTENT_END_STATUS,
    Event,
    intent_id_of,
    new_id,
    now_ms,
    payload_of,
    session_id_of,
)

# Stream of intents whose spec names neither a stream nor a session.
INTENT_STREAM = "intents"

Append = Callable[[Mapping[str, Any]], Event]


@dataclass
class Intent:
    """An agent spawned to do something (``agent.spawned``) that has not finished yet."""

    id: str
    stream_id: str
    spec: dict[str, Any]
    created_at: int
    session_id: Optional[str] = None
    status: str = "active"

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> Optional[Intent]:
        intent_id = intent_id_of(event)
        if intent_id is None:
            return None
        payload = payload_of(event)
        return cls(
            id=intent_id,
            stream_id=str(event.get("stream_id") or INTENT_STREAM),
            spec={k: v for k, v in payload.items() if k != "id"},
            created_at=int(event.get("timestamp") or now_ms()),
            session_id=session_id_of(event),
        )

    @property
    def session_key(self) -> str:
        """The session whose end drops this intent."""
        return self.session_id or self.stream_id


def intent_stream(spec: Mapping[str, Any]) -> str:
    """Where an intent's events go: its spec's stream, else its session, else ``intents``."""
    for key in ("stream_id", "session_id", "sessionID", "sessionId"):
        value = spec.get(key)
        if isinstance(value, str) and value:
            return value
    return INTENT_STREAM


class StreamIntents:
    """The active intents of one stream; every change is an appended event (see the module)."""

    def __init__(self, append: Append) -> None:
        self._append = append
        self._active: dict[str, Intent] = {}
        self._by_session: dict[str, set[str]] = {}
        # Objects handed to callers by create(), adopted by the projection.
        self._adopt: dict[str, Intent] = {}

    # -- the projection ----------------------------------------------------------------------

    def on_spawned(self, event: Event) -> None:
        parsed = Intent.from_event(event)
        if parsed is None or parsed.id in self._active:
            return
        adopted = self._adopt.pop(parsed.id, None)
        intent = adopted if adopted is not None else parsed
        self._active[intent.id] = intent
        self._by_session.setdefault(intent.session_key, set()).add(intent.id)

    def on_ended(self, event: Event) -> None:
        intent_id = intent_id_of(event)
        if intent_id is not None:
            self._forget(intent_id, INTENT_END_STATUS[event["type"]])

    def drop_session(self, session_id: str) -> list[str]:
        """Forget the session's active intents (the session ended); return their ids."""
        dropped = list(self._by_session.get(session_id, ()))
        for intent_id in dropped:
            self._forget(intent_id, "dropped")
        return dropped

    def sessions(self) -> set[str]:
        """The sessions that have active intents."""
        return set(self._by_session)

    def _forget(self, intent_id: str, status: str) -> None:
        intent = self._active.pop(intent_id, None)
        if intent is None:
            return
        intent.status = status
        ids = self._by_session.get(intent.session_key)
        if ids is not None:
            ids.discard(intent_id)
            if not ids:
                del self._by_session[intent.session_key]

    # -- creating and ending -----------------------------------------------------------------

    def create(self, spec: Mapping[str, Any]) -> Intent:
        if not isinstance(spec, Mapping):
            raise TypeError(f"spec must be a mapping, got {type(spec).__name__}")
        intent_id = new_id("intent")
        payload: dict[str, Any] = {"id": intent_id}
        payload.update((k, v) for k, v in spec.items() if k != "id")
        stream_id = intent_stream(spec)
        event = {"type": AGENT_SPAWNED, "stream_id": stream_id, "payload": payload}
        intent = Intent(
            id=intent_id,
            stream_id=stream_id,
            spec={k: v for k, v in payload.items() if k != "id"},
            created_at=now_ms(),
            session_id=session_id_of(event),
        )
        self._adopt[intent.id] = intent
        try:
            self._append(event)
        finally:
            self._adopt.pop(intent.id, None)
        return intent

    def complete(self, intent_id: str, result: Any = None) -> bool:
        return self._end(intent_id, AGENT_COMPLETED, {"result": result})

    def fail(self, intent_id: str, error: Any) -> bool:
        return self._end(intent_id, AGENT_FAILED, {"error": error})

    def _end(self, intent_id: str, event_type: str, detail: dict[str, Any]) -> bool:
        intent = self._active.get(intent_id)
        if intent is None:
            return False
        payload = {"intent_id": intent_id, **detail}
        self._append({"type": event_type, "stream_id": intent.stream_id, "payload": payload})
        return True

    @property
    def active(self) -> list[Intent]:
        return list(self._active.values())

    def __len__(self) -> int:
        return len(self._active)
