"""The event model shared by the stream and the orchestrator: field names, type names, protocols.

An event is a JSON object (a ``dict`` in Python) with the reference's fields: ``id``, ``type``,
``stream_id``, ``correlation_id``, ``actor``, ``timestamp`` (epoch ms), ``payload`` and optionally
``causation_id``/``metadata``; the store adds ``seq``, a sequence number that keeps increasing
across restarts. Any other top-level key a caller passes is preserved.
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, Callable, Protocol, Union

if TYPE_CHECKING:
    # typing.TypeGuard is 3.10+; annotations are never evaluated at run time here.
    from typing import TypeGuard

Event = dict[str, Any]
Subscriber = Callable[[Event], Union[Awaitable[None], None]]
Unsubscribe = Callable[[], None]

SYSTEM_ACTOR = "system"
WILDCARD = "*"

# Lifecycle (the bridge maps OpenCode server events to these names).
SESSION_CREATED = "lifecycle.session.created"
SESSION_IDLE = "lifecycle.session.idle"
SESSION_COMPACTED = "lifecycle.session.compacted"
SESSION_ERROR = "lifecycle.session.error"
SESSION_DELETED = "lifecycle.session.deleted"
SESSION_ABORTED = "lifecycle.session.aborted"
SESSION_END = "session.end"
PLUGIN_SHUTDOWN = "plugin.shutdown"
RAW_SESSION_DELETED = "session.deleted"
RAW_SESSION_IDLE = "session.idle"

# Events after which a session's state must be dropped, under either spelling.
SESSION_TERMINAL_TYPES = frozenset(
    {
        SESSION_DELETED,
        RAW_SESSION_DELETED,
        SESSION_ABORTED,
        "session.aborted",
        SESSION_END,
        "lifecycle.session.end",
        PLUGIN_SHUTDOWN,
        "lifecycle.plugin.shutdown",
    }
)

# ``plugin.shutdown`` under either spelling: every session ends at once.
PLUGIN_SHUTDOWN_TYPES = frozenset({PLUGIN_SHUTDOWN, f"lifecycle.{PLUGIN_SHUTDOWN}"})

# Agents and intents.
AGENT_SPAWNED = "agent.spawned"
AGENT_COMPLETED = "agent.completed"
AGENT_FAILED = "agent.failed"
AGENT_ABORTED = "agent.aborted"

# An intent-ending event type -> the status it leaves the intent in.
INTENT_END_STATUS = {
    AGENT_COMPLETED: "completed",
    AGENT_FAILED: "failed",
    AGENT_ABORTED: "aborted",
}

# Human-in-the-loop checkpoints.
CHECKPOINT_REQUESTED = "checkpoint.requested"
CHECKPOINT_APPROVED = "checkpoint.approved"
CHECKPOINT_REJECTED = "checkpoint.rejected"
# A checkpoint-resolving event type -> the status it leaves the checkpoint in.
CHECKPOINT_STATUS = {CHECKPOINT_APPROVED: "approved", CHECKPOINT_REJECTED: "rejected"}

# Execution (from message parts).
MESSAGE_COMPLETED = "message.completed"
STEP_START = "execution.step_start"
STEP_FINISH = "execution.step_finish"
TOOL_START = "execution.tool_start"
TOOL_FINISH = "execution.tool_finish"
AGENT_PART = "execution.agent"
TEXT_DELTA = "execution.text_delta"
TEXT_SNAPSHOT = "execution.text_snapshot"
REASONING_DELTA = "execution.reasoning_delta"
REASONING_SNAPSHOT = "execution.reasoning_snapshot"
SNAPSHOT = "execution.snapshot"
RETRY = "execution.retry"
FILES_PATCHED = "files.patched"
FILES_CHANGED = "files.changed"

# OpenCode traffic (the bridge maps today's and older server events to these names).
USER_ACTOR = "user"
AGENT_ACTOR = "agent"
SESSION_UPDATED = "lifecycle.session.updated"
SESSION_STATUS = "lifecycle.session.status"
INSTANCE_DISPOSED = "lifecycle.instance.disposed"
MESSAGE_CREATED = "message.created"
MESSAGE_UPDATED = "message.updated"
MESSAGE_REMOVED = "message.removed"
PART_REMOVED = "message.part.removed"
PART_DELTA = "execution.part_delta"
SUBTASK = "execution.subtask"
FILE_PART = "execution.file"
COMPACTION = "execution.compaction"
TODOS_UPDATED = "execution.todos"
COMMAND_EXECUTED = "execution.command"
FILES_DIFF = "files.diff"
# Server events the bridge has no mapping for are stored as "opencode.<their type>".
UNKNOWN_PREFIX = "opencode."

# Learning and ledger.
LEARNING_CAPTURED = "learning.captured"
LEDGER_STREAM = "ledger-events"
LEDGER_ACTOR = "ledger"


class EventStream(Protocol):
    """What the orchestrator needs from a stream; ``DurableStream`` is the real one."""

    def append(self, event: Mapping[str, Any]) -> Event:
        """Persist ``event`` and notify subscribers; return it with id, timestamp and seq."""
        ...

    def subscribe(self, event_type: str, callback: Subscriber) -> Unsubscribe:
        """Call ``callback`` for each appended event of ``event_type`` (``"*"``: every event)."""
        ...


def is_mapping(value: object) -> TypeGuard[Mapping[str, Any]]:
    """``isinstance(value, Mapping)``, with a plain dict (nearly every payload) and ``None`` (an
    absent field, as often asked about) answered without the ABC machinery: 39 ns instead of
    121 ns for a dict here (timeit), several checks an event in the orchestrator, and about 115
    ns less for ``None``; anything else costs about 20 ns more."""
    return type(value) is dict or (value is not None and isinstance(value, Mapping))


def session_id_of(event: Mapping[str, Any]) -> str | None:
    """The session an event belongs to: ``payload.session_id``/``sessionID``, else ``stream_id``."""
    payload = event.get("payload")
    if is_mapping(payload):
        for key in ("session_id", "sessionID", "sessionId"):
            value = payload.get(key)
            if isinstance(value, str):
                return value
        info = payload.get("info")
        if is_mapping(info) and isinstance(info.get("id"), str):
            return str(info["id"])
    stream_id = event.get("stream_id")
    return stream_id if isinstance(stream_id, str) else None


# -- id rules ----------------------------------------------------------------------------------
# Which payload field holds the id of the checkpoint or intent an event opens or closes: the
# first of these keys holding a non-empty string. One rule for opening and closing events, for
# Python and for the native collector that pairs them while a file is read.
CHECKPOINT_ID_KEYS = ("checkpoint_id", "checkpointId", "id")
INTENT_ID_KEYS = ("intent_id", "intentId", "id")


def payload_of(event: Mapping[str, Any]) -> Mapping[str, Any]:
    """The event's payload, or an empty mapping when it has none (or not a mapping)."""
    payload = event.get("payload")
    return payload if is_mapping(payload) else {}


def first_str(mapping: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    """The first of ``keys`` whose value in ``mapping`` is a non-empty string."""
    for key in keys:
        value = mapping.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def checkpoint_id_of(event: Mapping[str, Any]) -> str | None:
    """The id of the checkpoint a ``checkpoint.*`` event opens or resolves."""
    return first_str(payload_of(event), CHECKPOINT_ID_KEYS)


def intent_id_of(event: Mapping[str, Any]) -> str | None:
    """The id of the intent an ``agent.*`` event opens or ends (``INTENT_ID_KEYS``)."""
    return first_str(payload_of(event), INTENT_ID_KEYS)


_BASE36 = string.digits + string.ascii_lowercase


def now_ms() -> int:
    """The current time in epoch milliseconds, the unit of every event time."""
    return int(time.time() * 1000)


def new_id(prefix: str) -> str:
    """``<prefix>_<epoch ms>_<6 base36 chars>``, the reference's id shape."""
    suffix = "".join(secrets.choice(_BASE36) for _ in range(6))
    return f"{prefix}_{now_ms()}_{suffix}"
