"""The OpenCode bridge: OpenCode server events (today's and older shapes) mapped to stream events.

A server event is ``{"id"?: "evt_...", "type": "...", "properties": {...}}``; a ``/global/event``
frame wraps one as ``{"directory", "project"?, "workspace"?, "payload": <event>}``. The session is
``properties.sessionID``, else ``properties.info`` (the Session of ``session.*`` events, the
Message of ``message.updated``), else ``properties.part.sessionID``; events of no session go to
the ``opencode`` stream. Every stream event a server event produced carries the server event's id
as its ``causation_id``.

What the bridge remembers, all bounded and dropped with the session: the type and author of each
part (so a ``message.part.delta`` becomes a text or a reasoning delta), each message's role, the
open permission and question requests, the session's directory (so a disposed instance ends its
sessions), and each tool call's start and finish (rebuilt from appended events, like every
projection, so a tool call is announced once and finished once however often the server repeats
it). The server's event ids of the last ``dedup_window`` events are remembered to drop the
duplicates a reconnect replays.

``OpenCodeBridge.feed`` is ``DurableStream.bridge``: bad input (not a mapping, no type,
properties of the wrong shape, values JSON cannot hold) is counted and logged and never raises;
an event over the store's ``max_event_bytes`` is stored with its largest fields cut and the cut
marked (``payload._cut``); a store error (disk full, closed store) propagates, and then nothing
is remembered, so the same server event can be stored when it comes again.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

from opencode_addons.events import (
    AGENT_ACTOR,
    AGENT_PART,
    CHECKPOINT_APPROVED,
    CHECKPOINT_REJECTED,
    CHECKPOINT_REQUESTED,
    COMMAND_EXECUTED,
    COMPACTION,
    FILE_PART,
    FILES_CHANGED,
    FILES_DIFF,
    FILES_PATCHED,
    INSTANCE_DISPOSED,
    MESSAGE_COMPLETED,
    MESSAGE_CREATED,
    MESSAGE_REMOVED,
    MESSAGE_UPDATED,
    PART_DELTA,
    PART_REMOVED,
    PLUGIN_SHUTDOWN,
    PLUGIN_SHUTDOWN_TYPES,
    REASONING_DELTA,
    REASONING_SNAPSHOT,
    RETRY,
    SESSION_COMPACTED,
    SESSION_CREATED,
    SESSION_DELETED,
    SESSION_END,
    SESSION_ERROR,
    SESSION_IDLE,
    SESSION_STATUS,
    SESSION_UPDATED,
    SNAPSHOT,
    STEP_FINISH,
    STEP_START,
    SUBTASK,
    SYSTEM_ACTOR,
    TEXT_DELTA,
    TEXT_SNAPSHOT,
    TODOS_UPDATED,
    TOOL_FINISH,
    TOOL_START,
    UNKNOWN_PREFIX,
    USER_ACTOR,
    Event,
    session_id_of,
)

log = logging.getLogger(__name__)

# Stream of events that belong to no session (e.g. a file edit, a global server error).
BRIDGE_STREAM = "opencode"
# Who asks when the server asks a human (a tool call of the agent).
REQUESTED_BY = AGENT_ACTOR
# Bookkeeping bounds: sessions remembered, and per session tool calls, parts, messages, requests.
MAX_BRIDGE_SESSIONS = 10_000
MAX_TOOL_CALLS_PER_SESSION = 1024
MAX_PARTS_PER_SESSION = 2048
MAX_MESSAGES_PER_SESSION = 512
MAX_REQUESTS_PER_SESSION = 256
# Sessions recently deleted, whose late events must not bring their state back.
MAX_ENDED_SESSIONS = 1024
DEFAULT_DEDUP_WINDOW = 10_000
# A server request (permission, question) the stream never hears answered (a reply missed while
# disconnected, say) expires after this long, like any checkpoint.
DEFAULT_REQUEST_TIMEOUT = 24 * 3600.0
# The replies a server accepts for a permission (current, v2 and legacy alike).
PERMISSION_REPLIES = ("once", "always", "reject")
APPROVING_REPLIES = frozenset({"once", "always"})
# Tool metadata strings longer than this are cut (an edit's metadata holds whole files).
METADATA_STRING_CHARS = 8192
# Room kept under max_event_bytes for what the store adds (id, timestamp, seq, headers).
STORE_HEADROOM = 1024
# Bad input: the first few are logged, then one in every LOG_EVERY.
LOG_FIRST = 20
LOG_EVERY = 1000
# Transport events that carry nothing to store.
TRANSPORT_TYPES = frozenset({"server.connected", "server.heartbeat"})

_SIMPLE_PART_TYPES = {
    "step-start": STEP_START,
    "step-finish": STEP_FINISH,
    "agent": AGENT_PART,
    "snapshot": SNAPSHOT,
    "retry": RETRY,
    "patch": FILES_PATCHED,
    "subtask": SUBTASK,
    "compaction": COMPACTION,
}
# part type -> (delta event type, snapshot event type)
_STREAMED_PART_TYPES = {
    "text": (TEXT_DELTA, TEXT_SNAPSHOT),
    "reasoning": (REASONING_DELTA, REASONING_SNAPSHOT),
}
_FINISHED_TOOL_STATUSES = frozenset({"completed", "error"})
_ROLE_ACTORS = {"user": USER_ACTOR, "assistant": AGENT_ACTOR}
_QUESTION_TYPES = frozenset({"question.asked", "question.replied", "question.rejected"})


def as_mapping(value: Any) -> Mapping[str, Any]:
    # A JSON object is a dict: checked first, the ABC check is several times slower.
    return value if type(value) is dict or isinstance(value, Mapping) else {}


def str_or_none(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value else None


class BridgeSink(Protocol):
    """Where ``OpenCodeBridge.feed`` stores events (``DurableStream`` is one)."""

    def append(self, event: Mapping[str, Any]) -> Event: ...

    def extend(self, events: Iterable[Mapping[str, Any]]) -> list[Event]: ...

    @property
    def max_event_bytes(self) -> int: ...


class _Malformed(Exception):
    """A server event the bridge cannot read; the message says what is wrong."""


@dataclass
class _Part:
    """What the bridge knows of one message part."""

    type: str
    message_id: Optional[str]
    actor: str
    role: Optional[str]
    done: bool = False


@dataclass
class _Message:
    role: str
    completed: bool = False


@dataclass
class _Session:
    """The bridge's memory of one session."""

    directory: Optional[str] = None
    tool_calls: OrderedDict[str, bool] = field(default_factory=OrderedDict)
    parts: OrderedDict[str, _Part] = field(default_factory=OrderedDict)
    messages: OrderedDict[str, _Message] = field(default_factory=OrderedDict)
    requests: OrderedDict[str, str] = field(default_factory=OrderedDict)


def _bounded_put(mapping: OrderedDict[str, Any], key: str, value: Any, limit: int) -> None:
    mapping[key] = value
    mapping.move_to_end(key)
    while len(mapping) > limit:
        mapping.popitem(last=False)


class _Translation:
    """The stream events of one server event and what to remember once they are stored.

    ``commits`` run once the events are stored, and for a duplicate too (a replay after a
    restart of the recorder teaches the bridge what it forgot, e.g. a message's role);
    ``counts`` name counters incremented once stored (not for a duplicate). A plain class with
    slots: one is made per server event.
    """

    __slots__ = ("commits", "counts", "duplicate", "event_id", "events")

    def __init__(self, event_id: Optional[str], duplicate: bool) -> None:
        self.event_id = event_id
        self.duplicate = duplicate
        self.events: list[dict[str, Any]] = []
        self.commits: list[Callable[[], None]] = []
        self.counts: list[str] = []

    def add(
        self, event_type: str, session_id: Optional[str], payload: dict[str, Any], actor: str
    ) -> None:
        event = {
            "type": event_type,
            "stream_id": session_id or BRIDGE_STREAM,
            "actor": actor,
            "payload": payload,
        }
        if self.event_id is not None:
            event["causation_id"] = self.event_id
        self.events.append(event)

    def then(self, commit: Callable[[], None]) -> None:
        self.commits.append(commit)


class _Context:
    """One server event being translated: where it came from, and its translation."""

    __slots__ = ("directory", "out")

    def __init__(self, directory: Optional[str], out: _Translation) -> None:
        self.directory = directory
        self.out = out


class OpenCodeBridge:
    """Maps OpenCode server events to stream events; bounded memory of the server's state."""

    def __init__(
        self,
        *,
        dedup_window: int = DEFAULT_DEDUP_WINDOW,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(dedup_window, bool) or not isinstance(dedup_window, int) or dedup_window < 0:
            raise ValueError(f"dedup_window must be an int >= 0, got {dedup_window!r}")
        if isinstance(request_timeout, bool) or not isinstance(request_timeout, (int, float)):
            raise ValueError(f"request_timeout must be a number > 0, got {request_timeout!r}")
        if not request_timeout > 0:
            raise ValueError(f"request_timeout must be a number > 0, got {request_timeout!r}")
        self._dedup_window = dedup_window
        self._request_timeout_ms = int(request_timeout * 1000)
        self._clock = clock
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._counts = {
            "received": 0,
            "stored": 0,
            "duplicates": 0,
            "bad_input": 0,
            "unknown_types": 0,
            "unknown_part_deltas": 0,
            "cut_events": 0,
            "transport": 0,
            "sync_repeats": 0,
        }

    # -- entry points ------------------------------------------------------------------------

    def map(self, sdk_event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The stream events for one server event, remembering nothing (a preview).

        ``TypeError`` for a non-mapping; other unreadable input maps to nothing.
        """
        if not isinstance(sdk_event, Mapping):
            raise TypeError(f"sdk_event must be a mapping, got {type(sdk_event).__name__}")
        try:
            translation = self._translate(sdk_event)
        except _Malformed:
            return []
        if isinstance(translation, str) or translation.duplicate:
            return []
        return translation.events

    def feed(self, sink: BridgeSink, sdk_event: Any) -> Optional[Event]:
        """Store the stream events of one server event in ``sink``; return the last stored one.

        Never raises on bad input (counted in ``stats()`` and logged). Store errors propagate
        and leave the bridge's memory as it was.
        """
        self._counts["received"] += 1
        if type(sdk_event) is not dict and not isinstance(sdk_event, Mapping):
            self._bad(f"not a mapping but {type(sdk_event).__name__}", sdk_event)
            return None
        try:
            translation = self._translate(sdk_event)
        except _Malformed as error:
            self._bad(str(error), sdk_event)
            return None
        except Exception:
            # A mapping bug must not stop the recording: the event is counted as bad input.
            self._counts["bad_input"] += 1
            log.exception("the OpenCode bridge could not map %.200r", sdk_event)
            return None
        if isinstance(translation, str):
            self._counts[translation] += 1  # a transport or a sync event
            return None
        if translation.duplicate:
            self._counts["duplicates"] += 1
            for commit in translation.commits:
                commit()
            return None
        event_id = translation.event_id
        try:
            stored = self._store(sink, translation.events)
        except (TypeError, ValueError) as error:
            self._bad(f"cannot be stored: {error}", sdk_event)
            return None
        for commit in translation.commits:
            commit()
        if event_id is not None:
            self._remember_id(event_id)
        for name in translation.counts:
            self._counts[name] += 1
            if self._counts[name] <= LOG_FIRST:
                log.info("OpenCode bridge: %s (%d so far)", name, self._counts[name])
        self._counts["stored"] += len(stored)
        return stored[-1] if stored else None

    @property
    def dedup_window_size(self) -> int:
        """How many server event ids are remembered to drop duplicates."""
        return self._dedup_window

    def remember_event_ids(self, event_ids: Iterable[str]) -> int:
        """Add server event ids (oldest first) to the duplicate window; returns how many.

        A recorder seeds the window from its store's newest events (their ``causation_id``) so
        a server replaying events after a restart of the recorder is not stored twice.
        """
        added = 0
        for event_id in event_ids:
            if isinstance(event_id, str) and event_id and event_id not in self._seen:
                self._remember_id(event_id)
                added += 1
        return added

    # -- translation -------------------------------------------------------------------------

    def _translate(self, sdk_event: Mapping[str, Any]) -> _Translation | str:
        """The events and commits for one server event (a duplicate's too), or the counter of
        a skipped one."""
        directory: Optional[str] = None
        if "payload" in sdk_event and "type" not in sdk_event:
            # A /global/event frame: {directory, project?, workspace?, payload}.
            payload = sdk_event.get("payload")
            if type(payload) is not dict and not isinstance(payload, Mapping):
                raise _Malformed("a global frame whose payload is not an object")
            directory = str_or_none(sdk_event.get("directory"))
            sdk_event = payload
        sdk_type = sdk_event.get("type")
        if not isinstance(sdk_type, str) or not sdk_type:
            raise _Malformed("an event without a type")
        event_id = str_or_none(sdk_event.get("id"))
        if sdk_type in TRANSPORT_TYPES:
            return "transport"
        if sdk_type == "sync":
            # A sync event repeats a bus event (same id) that the server sent just before.
            return "sync_repeats"
        raw_properties = sdk_event.get("properties", {})
        if type(raw_properties) is not dict and not isinstance(raw_properties, Mapping):
            raise _Malformed(f"{sdk_type}: properties is not an object")
        duplicate = event_id is not None and event_id in self._seen
        context = _Context(directory, _Translation(event_id, duplicate))
        handler = _HANDLERS.get(sdk_type)
        if handler is None:
            self._unknown(context, sdk_type, raw_properties)
        else:
            handler(self, context, raw_properties)
        return context.out

    def _remember_id(self, event_id: str) -> None:
        if self._dedup_window == 0:
            return
        self._seen[event_id] = None
        while len(self._seen) > self._dedup_window:
            self._seen.popitem(last=False)

    # -- per-session memory ------------------------------------------------------------------

    def _session(self, session_id: str) -> Optional[_Session]:
        """The session's memory, created if needed (None for a session that just ended)."""
        state = self._sessions.get(session_id)
        if state is not None:
            self._sessions.move_to_end(session_id)
            return state
        if session_id in self._ended:
            return None
        state = self._sessions[session_id] = _Session()
        while len(self._sessions) > MAX_BRIDGE_SESSIONS:
            self._sessions.popitem(last=False)
        return state

    def _peek(self, session_id: Optional[str]) -> Optional[_Session]:
        return self._sessions.get(session_id) if session_id is not None else None

    def _touch(self, context: _Context, session_id: str, directory: Optional[str] = None) -> None:
        """Remember (on commit) that the session exists, and its directory when known."""
        where = directory or context.directory

        def commit() -> None:
            state = self._session(session_id)
            if state is not None and where and where != "global":
                state.directory = where

        context.out.then(commit)

    def drop_session(self, session_id: str) -> None:
        """Forget the session (its terminal event was appended). A session ended by a disposed
        instance or a shutdown may come back (OpenCode keeps it); a deleted one may not."""
        self._sessions.pop(session_id, None)

    def _mark_deleted(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
        _bounded_put(self._ended, session_id, None, MAX_ENDED_SESSIONS)

    def clear(self) -> None:
        """Forget every session (``plugin.shutdown``)."""
        for session_id in list(self._sessions):
            self.drop_session(session_id)

    def sessions(self) -> set[str]:
        """The sessions the bridge remembers something about."""
        return set(self._sessions)

    def __len__(self) -> int:
        return len(self._sessions)

    def observe_tool_event(self, event: Event) -> None:
        """Remember a tool call's start or finish (a projection of the appended event, so the
        state is rebuilt the same way whoever appended it)."""
        payload = as_mapping(event.get("payload"))
        session_id = str_or_none(payload.get("sessionID"))
        call_id = str_or_none(payload.get("callID"))
        if session_id is None or call_id is None:
            return
        state = self._session(session_id)
        if state is None:
            return
        calls = state.tool_calls
        finished = event["type"] == TOOL_FINISH or calls.get(call_id, False)
        _bounded_put(calls, call_id, finished, MAX_TOOL_CALLS_PER_SESSION)

    def replay_tool_events(self, events: Iterable[Event]) -> None:
        """Rebuild the memory of tool calls from stored events, oldest first: tool starts and
        finishes, and the session ends among them (a plugin shutdown forgets every session)."""
        for event in events:
            event_type = event.get("type")
            if event_type in (TOOL_START, TOOL_FINISH):
                self.observe_tool_event(event)
            elif event_type in PLUGIN_SHUTDOWN_TYPES:
                self.clear()
            else:
                session_id = session_id_of(event)
                if session_id is not None:
                    self.drop_session(session_id)

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = dict(self._counts)
        stats["sessions"] = len(self._sessions)
        stats["open_requests"] = sum(len(s.requests) for s in self._sessions.values())
        stats["dedup_window"] = len(self._seen)
        stats["ended_sessions"] = len(self._ended)
        return stats

    # -- storing -----------------------------------------------------------------------------

    def _store(self, sink: BridgeSink, events: list[dict[str, Any]]) -> list[Event]:
        if not events:
            return []
        try:
            return _store_events(sink, events)
        except ValueError:
            limit = int(sink.max_event_bytes)
            fitted = [fit_event(event, limit) for event in events]
            cut = sum(1 for event in fitted if "_cut" in event["payload"])
            if not cut:
                raise  # not a size problem: NaN, a lone surrogate, nesting too deep...
            self._counts["cut_events"] += cut
            return _store_events(sink, fitted)

    def _bad(self, reason: str, sdk_event: Any) -> None:
        self._counts["bad_input"] += 1
        count = self._counts["bad_input"]
        if count <= LOG_FIRST or count % LOG_EVERY == 0:
            log.warning("OpenCode event ignored (%s; %d so far): %.200r", reason, count, sdk_event)

    # -- handlers: sessions ------------------------------------------------------------------

    def _on_session_info(
        self, context: _Context, sdk_type: str, event_type: str, properties: Mapping[str, Any]
    ) -> None:
        info = properties.get("info")
        session_id = str_or_none(properties.get("sessionID"))
        if isinstance(info, Mapping):
            session_id = session_id or str_or_none(info.get("id"))
        elif info is not None:
            raise _Malformed(f"{sdk_type}: info is not an object")
        if session_id is None:
            raise _Malformed(f"{sdk_type} without a session id")
        payload = slim_session(info) if isinstance(info, Mapping) else {}
        payload.setdefault("id", session_id)
        payload["sessionID"] = session_id
        context.out.add(event_type, session_id, payload, SYSTEM_ACTOR)
        if sdk_type == "session.deleted":
            context.out.then(lambda: self._mark_deleted(session_id))
        else:
            directory = str_or_none(payload.get("directory"))
            self._touch(context, session_id, directory)

    def _on_session_status(self, context: _Context, properties: Mapping[str, Any]) -> None:
        session_id = _require_session(properties, "session.status")
        status = properties.get("status")
        if isinstance(status, str):
            payload: dict[str, Any] = {"status": status}
        elif isinstance(status, Mapping) and isinstance(status.get("type"), str):
            payload = {"status": status["type"]}
            for key in ("attempt", "message", "next", "action"):
                if key in status:
                    payload[key] = status[key]
        else:
            raise _Malformed("session.status without a status type")
        payload["sessionID"] = session_id
        context.out.add(SESSION_STATUS, session_id, payload, SYSTEM_ACTOR)
        self._touch(context, session_id)

    def _on_session_plain(
        self, context: _Context, sdk_type: str, event_type: str, properties: Mapping[str, Any]
    ) -> None:
        session_id = _require_session(properties, sdk_type)
        context.out.add(event_type, session_id, {"sessionID": session_id}, SYSTEM_ACTOR)
        self._touch(context, session_id)

    def _on_session_error(self, context: _Context, properties: Mapping[str, Any]) -> None:
        session_id = str_or_none(properties.get("sessionID"))
        payload: dict[str, Any] = {"error": properties.get("error")}
        if session_id is not None:
            payload["sessionID"] = session_id
        context.out.add(SESSION_ERROR, session_id, payload, SYSTEM_ACTOR)

    def _on_session_diff(self, context: _Context, properties: Mapping[str, Any]) -> None:
        session_id = _require_session(properties, "session.diff")
        diff = properties.get("diff")
        if not isinstance(diff, list):
            raise _Malformed("session.diff: diff is not a list")
        files = [slim_file_diff(entry) for entry in diff if isinstance(entry, Mapping)]
        payload = {"sessionID": session_id, "files": files, "content_omitted": True}
        context.out.add(FILES_DIFF, session_id, payload, SYSTEM_ACTOR)

    def _on_todos(self, context: _Context, properties: Mapping[str, Any]) -> None:
        session_id = _require_session(properties, "todo.updated")
        todos = properties.get("todos")
        if not isinstance(todos, list):
            raise _Malformed("todo.updated: todos is not a list")
        payload = {"sessionID": session_id, "todos": todos}
        context.out.add(TODOS_UPDATED, session_id, payload, SYSTEM_ACTOR)

    def _on_command(self, context: _Context, properties: Mapping[str, Any]) -> None:
        session_id = _require_session(properties, "command.executed")
        payload = {"sessionID": session_id}
        for key in ("messageID", "name", "arguments"):
            if key in properties:
                payload[key] = properties[key]
        context.out.add(COMMAND_EXECUTED, session_id, payload, USER_ACTOR)
        self._touch(context, session_id)

    def _on_file_edited(self, context: _Context, properties: Mapping[str, Any]) -> None:
        session_id = str_or_none(properties.get("sessionID"))
        context.out.add(FILES_CHANGED, session_id, dict(properties), SYSTEM_ACTOR)

    def _on_instance_disposed(self, context: _Context, properties: Mapping[str, Any]) -> None:
        directory = str_or_none(properties.get("directory")) or context.directory
        # Sessions of no known directory came from the instance this stream is connected to.
        ended = [
            session_id
            for session_id, state in self._sessions.items()
            if state.directory is None or state.directory == directory
        ]
        out = context.out
        payload = {"directory": directory, "sessions": ended}
        out.add(INSTANCE_DISPOSED, None, payload, SYSTEM_ACTOR)
        for session_id in ended:
            end = {"sessionID": session_id, "reason": "server.instance.disposed"}
            out.add(SESSION_END, session_id, end, SYSTEM_ACTOR)

    def _on_global_disposed(self, context: _Context, properties: Mapping[str, Any]) -> None:
        payload = {"reason": "global.disposed", "origin": "opencode"}
        context.out.add(PLUGIN_SHUTDOWN, None, payload, SYSTEM_ACTOR)
        context.out.then(self.clear)

    def _unknown(self, context: _Context, sdk_type: str, properties: Mapping[str, Any]) -> None:
        context.out.counts.append("unknown_types")
        session_id = str_or_none(properties.get("sessionID"))
        payload = dict(properties)
        if context.directory is not None and "directory" not in payload:
            payload["directory"] = context.directory
        context.out.add(UNKNOWN_PREFIX + sdk_type, session_id, payload, SYSTEM_ACTOR)

    # -- handlers: messages ------------------------------------------------------------------

    def _on_message_updated(self, context: _Context, properties: Mapping[str, Any]) -> None:
        info = properties.get("info")
        if not isinstance(info, Mapping):
            raise _Malformed("message.updated without an info object")
        session_id = str_or_none(properties.get("sessionID")) or str_or_none(info.get("sessionID"))
        message_id = str_or_none(info.get("id"))
        role = str_or_none(info.get("role"))
        if session_id is None or message_id is None or role is None:
            raise _Malformed("message.updated without session, message id or role")
        state = self._peek(session_id)
        known = state.messages.get(message_id) if state is not None else None
        completed = bool(as_mapping(info.get("time")).get("completed"))
        payload = slim_message(info, session_id)
        actor = _ROLE_ACTORS.get(role, SYSTEM_ACTOR)
        if known is None:
            event_type = MESSAGE_COMPLETED if completed and role != "user" else MESSAGE_CREATED
        elif completed and not known.completed:
            event_type = MESSAGE_COMPLETED
        else:
            event_type = MESSAGE_UPDATED
            if role == "user":
                # A user message is user activity once; later updates (its summary) are not.
                actor = SYSTEM_ACTOR
                del payload["role"]
        context.out.add(event_type, session_id, payload, actor)
        self._touch(context, session_id)

        def commit() -> None:
            session = self._session(session_id)
            if session is not None:
                message = _Message(role, completed or (known is not None and known.completed))
                _bounded_put(session.messages, message_id, message, MAX_MESSAGES_PER_SESSION)

        context.out.then(commit)

    def _on_message_removed(self, context: _Context, properties: Mapping[str, Any]) -> None:
        session_id = _require_session(properties, "message.removed")
        message_id = str_or_none(properties.get("messageID"))
        if message_id is None:
            raise _Malformed("message.removed without a messageID")
        payload = {"sessionID": session_id, "messageID": message_id}
        context.out.add(MESSAGE_REMOVED, session_id, payload, SYSTEM_ACTOR)

        def commit() -> None:
            state = self._peek(session_id)
            if state is not None:
                state.messages.pop(message_id, None)
                for part_id in [k for k, p in state.parts.items() if p.message_id == message_id]:
                    state.parts.pop(part_id, None)

        context.out.then(commit)

    def _on_part_removed(self, context: _Context, properties: Mapping[str, Any]) -> None:
        session_id = _require_session(properties, "message.part.removed")
        part_id = str_or_none(properties.get("partID"))
        if part_id is None:
            raise _Malformed("message.part.removed without a partID")
        payload = {
            "sessionID": session_id,
            "messageID": properties.get("messageID"),
            "partID": part_id,
        }
        context.out.add(PART_REMOVED, session_id, payload, SYSTEM_ACTOR)

        def commit() -> None:
            state = self._peek(session_id)
            if state is not None:
                state.parts.pop(part_id, None)

        context.out.then(commit)

    # -- handlers: parts ---------------------------------------------------------------------

    def _author(self, session_id: str, message_id: Optional[str]) -> tuple[str, Optional[str]]:
        """(actor, role) of a message's parts; the system's when the message is unknown."""
        state = self._peek(session_id)
        message = state.messages.get(message_id) if state and message_id else None
        if message is None:
            return SYSTEM_ACTOR, None
        return _ROLE_ACTORS.get(message.role, SYSTEM_ACTOR), message.role

    def _on_part_updated(self, context: _Context, properties: Mapping[str, Any]) -> None:
        part = properties.get("part")
        if not isinstance(part, Mapping):
            raise _Malformed("message.part.updated without a part object")
        session_id = str_or_none(part.get("sessionID")) or str_or_none(properties.get("sessionID"))
        part_type = str_or_none(part.get("type"))
        part_id = str_or_none(part.get("id"))
        if session_id is None or part_type is None:
            raise _Malformed("message.part.updated without a session or a part type")
        message_id = str_or_none(part.get("messageID"))
        actor, role = self._author(session_id, message_id)
        state = self._peek(session_id)
        known = state.parts.get(part_id) if state is not None and part_id else None
        done = known.done if known is not None else False
        out = context.out
        simple = _SIMPLE_PART_TYPES.get(part_type)
        if simple is not None:
            out.add(simple, session_id, _part_payload(part, session_id), _agent_unless(actor))
        elif part_type == "file":
            out.add(FILE_PART, session_id, file_reference(part, session_id), actor)
        elif part_type == "tool":
            self._tool_events(context, session_id, part)
        elif part_type in _STREAMED_PART_TYPES:
            done = self._streamed_part_events(
                context, session_id, part, properties.get("delta"), actor, role, done
            )
        else:
            self._unknown(context, "message.part.updated", properties)
        self._touch(context, session_id)
        if part_id is None:
            return
        remembered = _Part(part_type, message_id, actor, role, done)

        def commit() -> None:
            session = self._session(session_id)
            if session is not None:
                _bounded_put(session.parts, part_id, remembered, MAX_PARTS_PER_SESSION)

        out.then(commit)

    def _streamed_part_events(
        self,
        context: _Context,
        session_id: str,
        part: Mapping[str, Any],
        delta: Any,
        actor: str,
        role: Optional[str],
        done: bool,
    ) -> bool:
        """Delta (older servers) and snapshot events of a text or reasoning part; returns
        whether the part's final snapshot has been stored."""
        delta_type, snapshot_type = _STREAMED_PART_TYPES[str(part["type"])]
        if part["type"] == "reasoning":
            actor, role = AGENT_ACTOR, "assistant"
        if isinstance(delta, str) and delta:
            # Deltas carry only the new text: repeating the growing part text in every delta
            # would make a long answer cost quadratic bytes in the store.
            payload = _delta_payload(session_id, part.get("messageID"), part.get("id"), delta)
            context.out.add(delta_type, session_id, payload, actor)
        timing = part.get("time")
        # A part with no time at all was never streamed (a user's prompt, synthetic text).
        finished = as_mapping(timing).get("end") or "time" not in part
        if finished and not done:
            payload = {
                "sessionID": session_id,
                "messageID": part.get("messageID"),
                "partID": part.get("id"),
                "text": part.get("text"),
            }
            if role is not None:
                payload["role"] = role
            for key in ("time", "synthetic", "ignored"):
                if key in part:
                    payload[key] = part[key]
            context.out.add(snapshot_type, session_id, payload, actor)
            return True
        return done

    def _tool_events(self, context: _Context, session_id: str, part: Mapping[str, Any]) -> None:
        call_id = str_or_none(part.get("callID")) or str_or_none(part.get("id"))
        state = part.get("state")
        if call_id is None or not isinstance(state, Mapping):
            raise _Malformed("a tool part without a callID or a state")
        status = state.get("status")
        if status == "pending":
            return  # the input is not known yet ({} and a raw string being streamed)
        session = self._peek(session_id)
        finished = session.tool_calls.get(call_id) if session is not None else None
        base = {
            "sessionID": session_id,
            "messageID": part.get("messageID"),
            "partID": part.get("id"),
            "callID": call_id,
            "tool": part.get("tool"),
        }
        out = context.out
        if finished is None:
            start = {**base, "input": state.get("input")}
            for key in ("title", "time"):
                if key in state:
                    start[key] = state[key]
            out.add(TOOL_START, session_id, start, AGENT_ACTOR)
        if not finished and status in _FINISHED_TOOL_STATUSES:
            result = {**base, "status": status, "input": state.get("input")}
            for key in ("output", "error", "title", "time"):
                if key in state:
                    result[key] = state[key]
            if "metadata" in state:
                result["metadata"] = cap_strings(state["metadata"], METADATA_STRING_CHARS)
            attachments = state.get("attachments")
            if isinstance(attachments, list):
                result["attachments"] = [
                    attachment_reference(a) for a in attachments if isinstance(a, Mapping)
                ]
            out.add(TOOL_FINISH, session_id, result, AGENT_ACTOR)

    def _on_part_delta(self, context: _Context, properties: Mapping[str, Any]) -> None:
        session_id = _require_session(properties, "message.part.delta")
        part_id = str_or_none(properties.get("partID"))
        delta = properties.get("delta")
        if part_id is None or not isinstance(delta, str):
            raise _Malformed("message.part.delta without a partID or a string delta")
        message_id = properties.get("messageID")
        field_name = properties.get("field", "text")
        state = self._peek(session_id)
        part = state.parts.get(part_id) if state is not None else None
        payload = _delta_payload(session_id, message_id, part_id, delta)
        streamed = _STREAMED_PART_TYPES.get(part.type) if part is not None else None
        if part is not None and streamed is not None and field_name == "text":
            context.out.add(streamed[0], session_id, payload, part.actor)
            return
        # The part's type is not known (its first update came before the recorder connected,
        # or after this delta): kept as a delta of unknown kind, never dropped.
        payload["field"] = field_name
        if part is None:
            context.out.counts.append("unknown_part_deltas")
        else:
            payload["part_type"] = part.type
        actor = part.actor if part is not None else SYSTEM_ACTOR
        context.out.add(PART_DELTA, session_id, payload, actor)
        self._touch(context, session_id)

    # -- handlers: permissions and questions -------------------------------------------------

    def _on_request_asked(
        self, context: _Context, sdk_type: str, properties: Mapping[str, Any]
    ) -> None:
        session_id = _require_session(properties, sdk_type)
        request_id = str_or_none(properties.get("id"))
        if request_id is None:
            raise _Malformed(f"{sdk_type} without an id")
        state = self._peek(session_id)
        if state is not None and request_id in state.requests:
            return  # the same request again (a legacy permission.updated repeated)
        kind = "question" if sdk_type in _QUESTION_TYPES else "permission"
        now = int(self._clock() * 1000)
        payload: dict[str, Any] = {
            "id": request_id,
            "stream_id": session_id,
            "sessionID": session_id,
            "origin": "opencode",
            "kind": kind,
            "requested_by": REQUESTED_BY,
            "requested_at": now,
            "expires_at": now + self._request_timeout_ms,
        }
        if kind == "question":
            payload.update(_question_details(properties))
        else:
            payload.update(_permission_details(sdk_type, properties))
        payload["title"] = payload["decision_point"]
        context.out.add(CHECKPOINT_REQUESTED, session_id, payload, REQUESTED_BY)
        self._touch(context, session_id)

        def commit() -> None:
            session = self._session(session_id)
            if session is not None:
                _bounded_put(session.requests, request_id, kind, MAX_REQUESTS_PER_SESSION)

        context.out.then(commit)

    def _on_request_replied(
        self, context: _Context, sdk_type: str, properties: Mapping[str, Any]
    ) -> None:
        session_id = _require_session(properties, sdk_type)
        request_id = str_or_none(properties.get("requestID")) or str_or_none(
            properties.get("permissionID")
        )
        if request_id is None:
            raise _Malformed(f"{sdk_type} without a requestID")
        base: dict[str, Any] = {
            "checkpoint_id": request_id,
            "sessionID": session_id,
            "origin": "opencode",
        }
        if sdk_type == "question.rejected":
            event_type = CHECKPOINT_REJECTED
            payload = {**base, "rejected_by": USER_ACTOR, "reason": "rejected"}
        elif sdk_type == "question.replied":
            answers = properties.get("answers")
            if not isinstance(answers, list):
                raise _Malformed("question.replied: answers is not a list")
            event_type = CHECKPOINT_APPROVED
            payload = {
                **base,
                "approved_by": USER_ACTOR,
                "selected_option": _first_answer(answers),
                "answers": answers,
            }
        else:
            reply = properties.get("reply", properties.get("response"))
            if reply not in PERMISSION_REPLIES:
                raise _Malformed(f"{sdk_type}: reply {reply!r} is not one of {PERMISSION_REPLIES}")
            if reply in APPROVING_REPLIES:
                event_type = CHECKPOINT_APPROVED
                payload = {**base, "approved_by": USER_ACTOR, "selected_option": reply}
            else:
                event_type = CHECKPOINT_REJECTED
                payload = {**base, "rejected_by": USER_ACTOR, "reason": reply}
        context.out.add(event_type, session_id, payload, USER_ACTOR)

        def commit() -> None:
            state = self._peek(session_id)
            if state is not None:
                state.requests.pop(request_id, None)

        context.out.then(commit)


# -- dispatch ----------------------------------------------------------------------------------

_Handler = Callable[[OpenCodeBridge, _Context, Mapping[str, Any]], None]


def _session_info(sdk_type: str, event_type: str) -> _Handler:
    return lambda bridge, context, properties: bridge._on_session_info(
        context, sdk_type, event_type, properties
    )


def _session_plain(sdk_type: str, event_type: str) -> _Handler:
    return lambda bridge, context, properties: bridge._on_session_plain(
        context, sdk_type, event_type, properties
    )


def _asked(sdk_type: str) -> _Handler:
    return lambda bridge, context, properties: bridge._on_request_asked(
        context, sdk_type, properties
    )


def _replied(sdk_type: str) -> _Handler:
    return lambda bridge, context, properties: bridge._on_request_replied(
        context, sdk_type, properties
    )


_HANDLERS: dict[str, _Handler] = {
    "session.created": _session_info("session.created", SESSION_CREATED),
    "session.updated": _session_info("session.updated", SESSION_UPDATED),
    "session.deleted": _session_info("session.deleted", SESSION_DELETED),
    "session.status": OpenCodeBridge._on_session_status,
    "session.idle": _session_plain("session.idle", SESSION_IDLE),
    "session.compacted": _session_plain("session.compacted", SESSION_COMPACTED),
    "session.error": OpenCodeBridge._on_session_error,
    "session.diff": OpenCodeBridge._on_session_diff,
    "todo.updated": OpenCodeBridge._on_todos,
    "command.executed": OpenCodeBridge._on_command,
    "file.edited": OpenCodeBridge._on_file_edited,
    "message.updated": OpenCodeBridge._on_message_updated,
    "message.removed": OpenCodeBridge._on_message_removed,
    "message.part.updated": OpenCodeBridge._on_part_updated,
    "message.part.removed": OpenCodeBridge._on_part_removed,
    "message.part.delta": OpenCodeBridge._on_part_delta,
    "permission.asked": _asked("permission.asked"),
    "permission.updated": _asked("permission.updated"),
    "permission.v2.asked": _asked("permission.v2.asked"),
    "question.asked": _asked("question.asked"),
    "permission.replied": _replied("permission.replied"),
    "permission.v2.replied": _replied("permission.v2.replied"),
    "question.replied": _replied("question.replied"),
    "question.rejected": _replied("question.rejected"),
    "server.instance.disposed": OpenCodeBridge._on_instance_disposed,
    "global.disposed": OpenCodeBridge._on_global_disposed,
}
# The server event types with a mapping of their own (everything else is "opencode.<type>").
MAPPED_TYPES = frozenset(_HANDLERS) | TRANSPORT_TYPES | {"sync"}


# -- payload helpers ---------------------------------------------------------------------------


def _require_session(properties: Mapping[str, Any], sdk_type: str) -> str:
    session_id = str_or_none(properties.get("sessionID"))
    if session_id is None:
        raise _Malformed(f"{sdk_type} without a sessionID")
    return session_id


def _agent_unless(actor: str) -> str:
    # Parts of unknown messages are the agent's (only user prompts carry files and mentions).
    return actor if actor != SYSTEM_ACTOR else AGENT_ACTOR


def _part_payload(part: Mapping[str, Any], session_id: str) -> dict[str, Any]:
    payload = {k: v for k, v in part.items() if k not in ("id", "type")}
    payload["sessionID"] = session_id
    payload["partID"] = part.get("id")
    return payload


def _delta_payload(session_id: str, message_id: Any, part_id: Any, delta: str) -> dict[str, Any]:
    return {"sessionID": session_id, "messageID": message_id, "partID": part_id, "delta": delta}


def slim_session(info: Mapping[str, Any]) -> dict[str, Any]:
    """A Session without ``summary.diffs`` (whole files in older servers, patches today)."""
    payload = dict(info)
    summary = info.get("summary")
    if isinstance(summary, Mapping) and "diffs" in summary:
        slim = {k: v for k, v in summary.items() if k != "diffs"}
        diffs = summary.get("diffs")
        slim["diffs_omitted"] = len(diffs) if isinstance(diffs, list) else 1
        payload["summary"] = slim
    revert = info.get("revert")
    if isinstance(revert, Mapping) and "diff" in revert:
        payload["revert"] = {k: v for k, v in revert.items() if k != "diff"}
    return payload


def slim_message(info: Mapping[str, Any], session_id: str) -> dict[str, Any]:
    """A message's info as an event payload: ``messageID``, ``role``, no summary diffs."""
    payload = {k: v for k, v in info.items() if k not in ("id", "summary")}
    payload["sessionID"] = session_id
    payload["messageID"] = info.get("id")
    summary = info.get("summary")
    if isinstance(summary, Mapping):
        slim = {k: v for k, v in summary.items() if k != "diffs"}
        if "diffs" in summary:
            diffs = summary.get("diffs")
            slim["diffs_omitted"] = len(diffs) if isinstance(diffs, list) else 1
        payload["summary"] = slim
    elif summary is not None:
        payload["summary"] = summary
    return payload


def slim_file_diff(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A file diff without the file contents (``before``/``after``/``patch``)."""
    return {k: v for k, v in entry.items() if k not in ("before", "after", "patch")}


def attachment_reference(attachment: Mapping[str, Any]) -> dict[str, Any]:
    """A file part by reference: mime, filename, url; a ``data:`` URL's body is left out."""
    reference: dict[str, Any] = {
        "mime": attachment.get("mime"),
        "filename": attachment.get("filename"),
    }
    url = attachment.get("url")
    if isinstance(url, str) and url.startswith("data:"):
        reference["url"] = None
        reference["inline_bytes"] = len(url) - url.find(",") - 1
    else:
        reference["url"] = url
    return reference


def file_reference(part: Mapping[str, Any], session_id: str) -> dict[str, Any]:
    payload = attachment_reference(part)
    payload.update(sessionID=session_id, messageID=part.get("messageID"), partID=part.get("id"))
    source = part.get("source")
    if isinstance(source, Mapping):
        payload["source"] = {k: source[k] for k in ("type", "path", "uri", "name") if k in source}
    return payload


def _permission_details(sdk_type: str, properties: Mapping[str, Any]) -> dict[str, Any]:
    if sdk_type == "permission.v2.asked":
        action = str(properties.get("action") or "permission")
        resources = properties.get("resources")
        targets = resources if isinstance(resources, list) else []
        details: dict[str, Any] = {"permission": action, "resources": targets}
        for key in ("save", "source"):
            if key in properties:
                details[key] = properties[key]
    elif sdk_type == "permission.updated":
        # Legacy Permission: {id, type, pattern?, sessionID, messageID, callID?, title, ...}
        action = str(properties.get("type") or "permission")
        pattern = properties.get("pattern")
        targets = pattern if isinstance(pattern, list) else [pattern] if pattern else []
        details = {"permission": action, "patterns": targets}
        for key in ("messageID", "callID"):
            if key in properties:
                details[key] = properties[key]
    else:
        action = str(properties.get("permission") or "permission")
        patterns = properties.get("patterns")
        targets = patterns if isinstance(patterns, list) else []
        details = {"permission": action, "patterns": targets}
        for key in ("always", "tool"):
            if key in properties:
                details[key] = properties[key]
    if "metadata" in properties:
        details["metadata"] = cap_strings(properties["metadata"], METADATA_STRING_CHARS)
    title = str_or_none(properties.get("title"))
    described = ", ".join(str(t) for t in targets[:5])
    details["decision_point"] = title or (f"{action}: {described}" if described else action)
    details["options"] = list(PERMISSION_REPLIES)
    return details


def _question_details(properties: Mapping[str, Any]) -> dict[str, Any]:
    questions = properties.get("questions")
    if not isinstance(questions, list):
        raise _Malformed("question.asked: questions is not a list")
    texts: list[str] = []
    labels: list[str] = []
    for question in questions:
        if not isinstance(question, Mapping):
            continue
        text = str_or_none(question.get("question"))
        if text:
            texts.append(text)
        for option in question.get("options") or ():
            label = str_or_none(as_mapping(option).get("label"))
            if label and label not in labels:
                labels.append(label)
    details: dict[str, Any] = {
        "decision_point": " / ".join(texts) or "question",
        "options": labels,
        "questions": questions,
    }
    if "tool" in properties:
        details["tool"] = properties["tool"]
    return details


def _first_answer(answers: list[Any]) -> Optional[str]:
    for answer in answers:
        if isinstance(answer, list):
            for label in answer:
                if isinstance(label, str):
                    return label
    return None


# -- size bounds -------------------------------------------------------------------------------

CUT_MARK = "…[cut {} chars]"
MIN_KEPT_CHARS = 64
MAX_FIT_ROUNDS = 64
MAX_CUT_PATHS = 16


def cap_strings(value: Any, limit: int, _depth: int = 0) -> Any:
    """``value`` with every string longer than ``limit`` characters cut (and marked)."""
    if isinstance(value, str):
        if len(value) <= limit:
            return value
        return value[:limit] + CUT_MARK.format(len(value) - limit)
    if _depth > 64:
        return value
    if isinstance(value, Mapping):
        return {k: cap_strings(v, limit, _depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [cap_strings(v, limit, _depth + 1) for v in value]
    return value


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def _largest(node: Any, path: str, best: list[Any], parent: Any, key: Any) -> int:
    """The approximate JSON size of ``node``; ``best`` collects the largest string and list as
    ``[size, path, parent, key]`` entries (index 0: string, 1: list)."""
    if isinstance(node, str):
        size = len(node) + 2
        if size > best[0][0]:
            best[0] = [size, path, parent, key]
        return size
    if isinstance(node, dict):
        return 2 + sum(
            len(k) + 4 + _largest(v, f"{path}.{k}", best, node, k) for k, v in node.items()
        )
    if isinstance(node, list):
        size = 2 + sum(1 + _largest(v, f"{path}[{i}]", best, node, i) for i, v in enumerate(node))
        if len(node) > 1 and size > best[1][0]:
            best[1] = [size, path, parent, key]
        return size
    return 8


def fit_event(event: Mapping[str, Any], max_event_bytes: int) -> dict[str, Any]:
    """``event`` (a copy) cut until it fits ``max_event_bytes``, the cut marked in
    ``payload._cut``: ``{"paths": [...], "original_bytes": n}``. The largest strings are cut
    first, then the longest lists are halved; an event that still does not fit keeps only a
    stub payload. An event that already fits is returned unchanged (no ``_cut``)."""
    budget = max(256, max_event_bytes - STORE_HEADROOM)
    original = _json_size(event)
    if original <= budget:
        return dict(event)
    fitted: dict[str, Any] = json.loads(json.dumps(event, ensure_ascii=False))
    payload = fitted.get("payload")
    if not isinstance(payload, dict):
        payload = fitted["payload"] = {"value": payload}
    paths: list[str] = []
    payload["_cut"] = {"paths": paths, "original_bytes": original}
    for _ in range(MAX_FIT_ROUNDS):
        size = _json_size(fitted)
        if size <= budget:
            return fitted
        excess = size - budget
        best: list[Any] = [[0, None, None, None], [0, None, None, None]]
        for key, value in list(payload.items()):
            if key != "_cut":
                _largest(value, f"payload.{key}", best, payload, key)
        (string_size, string_path, string_parent, string_key) = best[0]
        (_, list_path, list_parent, list_key) = best[1]
        if (
            string_parent is not None
            and string_size > MIN_KEPT_CHARS * 2
            and (string_size * 4 >= excess or list_parent is None)
        ):
            text = string_parent[string_key]
            keep = max(MIN_KEPT_CHARS, len(text) - excess - 64)
            string_parent[string_key] = text[:keep] + CUT_MARK.format(len(text) - keep)
            path = string_path
        elif list_parent is not None:
            items = list_parent[list_key]
            keep = len(items) // 2
            list_parent[list_key] = [*items[:keep], f"…[cut {len(items) - keep} items]"]
            path = list_path
        else:
            break
        if path not in paths and len(paths) < MAX_CUT_PATHS:
            paths.append(path)
    # Nothing left to cut that would help: keep the ids and say what was there.
    stub: dict[str, Any] = {
        "_cut": {"paths": ["payload"], "original_bytes": original, "keys": sorted(payload)[:64]}
    }
    for key in ("sessionID", "messageID", "partID", "callID", "id"):
        if isinstance(payload.get(key), str):
            stub[key] = payload[key]
    fitted["payload"] = stub
    return fitted


def _store_events(sink: BridgeSink, events: list[dict[str, Any]]) -> list[Event]:
    if len(events) == 1:
        return [sink.append(events[0])]
    # One server event's stream events are stored all or none.
    return sink.extend(events)
