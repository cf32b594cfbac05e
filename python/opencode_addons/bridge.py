"""The OpenCode bridge: OpenCode server events mapped to stream events.

Server events look like ``{"type": "...", "properties": {...}}``; the session is named in
``properties.sessionID``, ``properties.info.id`` or ``properties.part.sessionID``. The bridge
remembers which tool calls it has seen start and finish (bounded per session and in sessions),
so a tool call is announced once and finished once however often the server repeats it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Optional

from opencode_addons.events import (
    AGENT_PART,
    FILES_CHANGED,
    FILES_PATCHED,
    MESSAGE_COMPLETED,
    REASONING_DELTA,
    REASONING_SNAPSHOT,
    RETRY,
    SESSION_COMPACTED,
    SESSION_CREATED,
    SESSION_DELETED,
    SESSION_ERROR,
    SESSION_IDLE,
    SNAPSHOT,
    STEP_FINISH,
    STEP_START,
    SYSTEM_ACTOR,
    TEXT_DELTA,
    TEXT_SNAPSHOT,
    TOOL_FINISH,
    TOOL_START,
    Event,
)

# Stream of events that belong to no session (e.g. a file edit, a global server error).
BRIDGE_STREAM = "opencode"
# Bookkeeping bounds: tool calls remembered per session, sessions remembered.
MAX_TOOL_CALLS_PER_SESSION = 1024
MAX_BRIDGE_SESSIONS = 10_000

_SESSION_SDK_TYPES = {
    "session.created": SESSION_CREATED,
    "session.idle": SESSION_IDLE,
    "session.compacted": SESSION_COMPACTED,
    "session.error": SESSION_ERROR,
    "session.deleted": SESSION_DELETED,
}
_SIMPLE_PART_TYPES = {
    "step-start": STEP_START,
    "step-finish": STEP_FINISH,
    "agent": AGENT_PART,
    "snapshot": SNAPSHOT,
    "retry": RETRY,
    "patch": FILES_PATCHED,
}
# part type -> (delta event type, snapshot event type)
_STREAMED_PART_TYPES = {
    "text": (TEXT_DELTA, TEXT_SNAPSHOT),
    "reasoning": (REASONING_DELTA, REASONING_SNAPSHOT),
}
_FINISHED_TOOL_STATUSES = frozenset({"completed", "error"})


def as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def str_or_none(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value else None


class OpenCodeBridge:
    """Maps server events to stream events; remembers tool calls per session, bounded."""

    def __init__(self) -> None:
        self._tool_calls: OrderedDict[str, OrderedDict[str, bool]] = OrderedDict()

    def map(self, sdk_event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The stream events for one server event (none for unknown ones)."""
        if not isinstance(sdk_event, Mapping):
            raise TypeError(f"sdk_event must be a mapping, got {type(sdk_event).__name__}")
        sdk_type = sdk_event.get("type")
        properties = as_mapping(sdk_event.get("properties"))
        if sdk_type in _SESSION_SDK_TYPES:
            return _session_events(str(sdk_type), properties)
        if sdk_type == "message.updated":
            return _message_events(properties)
        if sdk_type == "message.part.updated":
            return self._part_events(properties)
        if sdk_type == "file.edited":
            session_id = str_or_none(properties.get("sessionID"))
            return [_bridged(FILES_CHANGED, session_id, dict(properties))]
        return []

    def _part_events(self, properties: Mapping[str, Any]) -> list[dict[str, Any]]:
        part = as_mapping(properties.get("part"))
        session_id = str_or_none(part.get("sessionID"))
        part_type = part.get("type")
        if session_id is None or not isinstance(part_type, str):
            return []
        simple = _SIMPLE_PART_TYPES.get(part_type)
        if simple is not None:
            return [_bridged(simple, session_id, dict(part))]
        if part_type == "tool":
            return self._tool_events(session_id, part)
        if part_type in _STREAMED_PART_TYPES:
            return _streamed_part_events(session_id, part, properties.get("delta"))
        return []

    def _tool_events(self, session_id: str, part: Mapping[str, Any]) -> list[dict[str, Any]]:
        call_id = str_or_none(part.get("callID")) or str_or_none(part.get("id"))
        if call_id is None:
            return []
        state = as_mapping(part.get("state"))
        calls = self._tool_calls.get(session_id)
        finished = calls.get(call_id) if calls is not None else None
        base = {
            "sessionID": session_id,
            "messageID": part.get("messageID"),
            "callID": call_id,
            "tool": part.get("tool"),
        }
        events = []
        if finished is None:
            events.append(_bridged(TOOL_START, session_id, {**base, "input": state.get("input")}))
        if not finished and state.get("status") in _FINISHED_TOOL_STATUSES:
            result = {k: state.get(k) for k in ("status", "output", "error", "title", "time")}
            events.append(_bridged(TOOL_FINISH, session_id, {**base, **result}))
        return events

    def observe_tool_event(self, event: Event) -> None:
        """Remember a tool call's start or finish (a projection of the appended event, so the
        state is rebuilt the same way whoever appended it)."""
        payload = as_mapping(event.get("payload"))
        session_id = str_or_none(payload.get("sessionID"))
        call_id = str_or_none(payload.get("callID"))
        if session_id is None or call_id is None:
            return
        calls = self._tool_calls.get(session_id)
        if calls is None:
            calls = self._tool_calls[session_id] = OrderedDict()
            if len(self._tool_calls) > MAX_BRIDGE_SESSIONS:
                self._tool_calls.popitem(last=False)
        else:
            self._tool_calls.move_to_end(session_id)
        calls[call_id] = event["type"] == TOOL_FINISH or calls.get(call_id, False)
        if len(calls) > MAX_TOOL_CALLS_PER_SESSION:
            calls.popitem(last=False)

    def drop_session(self, session_id: str) -> None:
        self._tool_calls.pop(session_id, None)

    def sessions(self) -> set[str]:
        """The sessions with remembered tool calls."""
        return set(self._tool_calls)

    def __len__(self) -> int:
        return len(self._tool_calls)


def _bridged(event_type: str, session_id: Optional[str], payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": event_type,
        "stream_id": session_id or BRIDGE_STREAM,
        "actor": SYSTEM_ACTOR,
        "payload": payload,
    }


def _session_events(sdk_type: str, properties: Mapping[str, Any]) -> list[dict[str, Any]]:
    event_type = _SESSION_SDK_TYPES[sdk_type]
    info = properties.get("info")
    if isinstance(info, Mapping):
        # session.created/deleted carry the session itself; its id is the session id.
        session_id = str_or_none(info.get("id")) or str_or_none(properties.get("sessionID"))
        return [_bridged(event_type, session_id, dict(info))] if session_id else []
    session_id = str_or_none(properties.get("sessionID"))
    if event_type == SESSION_ERROR:
        return [_bridged(event_type, session_id, {"error": properties.get("error")})]
    return [_bridged(event_type, session_id, dict(properties))] if session_id else []


def _message_events(properties: Mapping[str, Any]) -> list[dict[str, Any]]:
    info = as_mapping(properties.get("info"))
    session_id = str_or_none(info.get("sessionID"))
    completed = as_mapping(info.get("time")).get("completed")
    if session_id is None or not completed:
        return []
    return [_bridged(MESSAGE_COMPLETED, session_id, dict(info))]


def _streamed_part_events(
    session_id: str, part: Mapping[str, Any], delta: Any
) -> list[dict[str, Any]]:
    delta_type, snapshot_type = _STREAMED_PART_TYPES[str(part["type"])]
    events = []
    if isinstance(delta, str) and delta:
        # Deltas carry only the new text: repeating the growing part text in every delta
        # would make a long answer cost quadratic bytes in the store.
        payload = {
            "sessionID": session_id,
            "messageID": part.get("messageID"),
            "part_id": part.get("id"),
            "delta": delta,
        }
        events.append(_bridged(delta_type, session_id, payload))
    if as_mapping(part.get("time")).get("end"):
        events.append(_bridged(snapshot_type, session_id, dict(part)))
    return events
