"""DurableStream: the event stream of a run, persisted in a JSONL file by the native store.

One ``JsonlStore`` holds everything: the file, the bounded cache (newest ``max_cache_size``
events) and the bounded history (newest ``max_event_history`` events). Cache and history share
their records, so the default limits cost about the history alone.

On top of the store this module keeps small projections rebuilt from the file when it is opened:
pending checkpoints (each with an owned expiry timer), active intents (spawned agents) and the
bridge's per-session tool-call state. ``append`` persists first, then updates the projections,
then notifies subscribers. Projections go before subscribers so that a subscriber reacting to an
event (for instance approving a checkpoint the moment it is requested, or reading
``active_intents`` after ``agent.completed``) sees the state that event produced.

The stream is meant to be used from one thread (normally the event loop's); only ``shutdown`` is
safe to call from another thread.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import secrets
import string
import time
from collections.abc import Awaitable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Union, overload

from opencode_addons import _core
from opencode_addons.bridge import BRIDGE_STREAM as BRIDGE_STREAM  # re-exported
from opencode_addons.bridge import OpenCodeBridge, as_mapping, str_or_none
from opencode_addons.events import (
    AGENT_ABORTED,
    AGENT_COMPLETED,
    AGENT_FAILED,
    AGENT_SPAWNED,
    CHECKPOINT_APPROVED,
    CHECKPOINT_REJECTED,
    CHECKPOINT_REQUESTED,
    PLUGIN_SHUTDOWN,
    SESSION_ABORTED,
    SESSION_DELETED,
    SESSION_TERMINAL_TYPES,
    SYSTEM_ACTOR,
    TOOL_FINISH,
    TOOL_START,
    WILDCARD,
    Event,
    Subscriber,
    Unsubscribe,
    session_id_of,
)
from opencode_addons.orchestrator import runtime
from opencode_addons.orchestrator.background import BackgroundTasks

log = logging.getLogger(__name__)

DEFAULT_STORE_PATH = os.path.join(".opencode", "durable_stream.jsonl")
COMPONENT_NAME = "durable_stream"
# Stream of intents whose spec names neither a stream nor a session.
INTENT_STREAM = "intents"

_BASE36 = string.digits + string.ascii_lowercase
_PLUGIN_SHUTDOWN_TYPES = frozenset({PLUGIN_SHUTDOWN, f"lifecycle.{PLUGIN_SHUTDOWN}"})
# Events after which a session's checkpoints, intents and bridge state are dropped.
_SESSION_END_TYPES = SESSION_TERMINAL_TYPES | {SESSION_ABORTED}
_INTENT_END_STATUS = {
    AGENT_COMPLETED: "completed",
    AGENT_FAILED: "failed",
    AGENT_ABORTED: "aborted",
}
_CHECKPOINT_STATUS = {CHECKPOINT_APPROVED: "approved", CHECKPOINT_REJECTED: "rejected"}
# What the store collects while opening the file, so projections can be rebuilt from all of it:
# session ends, and the checkpoints and intents that no later event resolved (the store drops
# an opening event as soon as its closing event is read, so this stays small on long files).
COLLECT_TYPES = frozenset(_SESSION_END_TYPES)
COLLECT_PAIRS = (
    (CHECKPOINT_REQUESTED, ["id", "checkpoint_id"], sorted(_CHECKPOINT_STATUS), ["checkpoint_id"]),
    (AGENT_SPAWNED, ["id", "intent_id"], sorted(_INTENT_END_STATUS), ["intent_id", "id"]),
)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _new_id(prefix: str) -> str:
    """``<prefix>_<epoch ms>_<6 base36 chars>``, the reference's id shape."""
    suffix = "".join(secrets.choice(_BASE36) for _ in range(6))
    return f"{prefix}_{_now_ms()}_{suffix}"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _positive_seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


def _require_str(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty str, got {value!r}")
    return value


# -- records ---------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A human-in-the-loop decision point; times are epoch milliseconds."""

    id: str
    stream_id: str
    decision_point: str
    options: list[str]
    requested_by: str
    requested_at: int
    expires_at: int
    status: str = "pending"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_event(cls, event: Mapping[str, Any], timeout_ms: int) -> Optional[Checkpoint]:
        """The checkpoint a ``checkpoint.requested`` event describes, or None if it has no id."""
        payload = as_mapping(event.get("payload"))
        checkpoint_id = str_or_none(payload.get("id")) or str_or_none(payload.get("checkpoint_id"))
        if checkpoint_id is None:
            return None
        requested_at = payload.get("requested_at")
        if not isinstance(requested_at, int):
            requested_at = int(event.get("timestamp") or _now_ms())
        expires_at = payload.get("expires_at")
        options = payload.get("options")
        return cls(
            id=checkpoint_id,
            stream_id=str(payload.get("stream_id") or event.get("stream_id") or ""),
            decision_point=str(payload.get("decision_point") or ""),
            options=[str(o) for o in options] if isinstance(options, list) else [],
            requested_by=str(payload.get("requested_by") or event.get("actor") or SYSTEM_ACTOR),
            requested_at=requested_at,
            expires_at=expires_at if isinstance(expires_at, int) else requested_at + timeout_ms,
        )


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
        payload = as_mapping(event.get("payload"))
        intent_id = str_or_none(payload.get("id")) or str_or_none(payload.get("intent_id"))
        if intent_id is None:
            return None
        return cls(
            id=intent_id,
            stream_id=str(event.get("stream_id") or INTENT_STREAM),
            spec={k: v for k, v in payload.items() if k != "id"},
            created_at=int(event.get("timestamp") or _now_ms()),
            session_id=session_id_of(event),
        )


@dataclass
class ResumeResult:
    """What ``resume()`` found.

    ``events_replayed`` is how many events the file supplied to the history when the stream
    was opened (bounded by ``max_event_history``); ``last_event_at`` is the newest event's
    timestamp (epoch ms), None for an empty stream; ``expired_checkpoints`` counts the
    checkpoints this call rejected for being overdue.
    """

    events_replayed: int
    pending_checkpoints: list[Checkpoint]
    active_intents: list[Intent]
    last_event_at: Optional[int]
    expired_checkpoints: int = 0


@dataclass
class _SessionIndex:
    """Which pending checkpoints and active intents belong to one session."""

    checkpoints: set[str] = field(default_factory=set)
    intents: set[str] = field(default_factory=set)

    def empty(self) -> bool:
        return not self.checkpoints and not self.intents


class EventHistory(Sequence[Event]):
    """A read-only view of the stream's bounded history, oldest first.

    Wraps the store's native view so it is a real ``collections.abc.Sequence`` (``index``,
    ``count``, ``reversed``); nothing is copied until an item is read.
    """

    __slots__ = ("_view",)

    def __init__(self, view: Any) -> None:
        self._view = view

    def __len__(self) -> int:
        return len(self._view)

    @overload
    def __getitem__(self, index: int) -> Event: ...

    @overload
    def __getitem__(self, index: slice) -> list[Event]: ...

    def __getitem__(self, index: Union[int, slice]) -> Union[Event, list[Event]]:
        return self._view[index]  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[Event]:
        return iter(self._view)

    def query(self, **filters: Any) -> list[Event]:
        """The store's query keywords, over the history."""
        return self._view.query(**filters)  # type: ignore[no-any-return]

    def to_list(self) -> list[Event]:
        return self._view.to_list()  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"EventHistory({len(self)} events)"


# -- the stream ------------------------------------------------------------------------------


class DurableStream:
    """Durable, memory-bounded event stream with subscribers, checkpoints, intents and a bridge.

    See the module docstring. Every ``append`` is persisted by the store according to
    ``durability`` (``"none"``, ``"flush"``, ``"fsync"`` or ``"group"``) before anything else
    sees it; a store error propagates and changes nothing.

    ``replicate_to="redis://..."`` also ships every event to Redis Streams in a background
    thread (``opencode_addons.redis_streams.RedisReplicator``, the ``[redis]`` extra; its
    keywords in ``replicate_options``); ``stats()["replication"]`` reports it and ``shutdown``
    stops it first.
    """

    def __init__(
        self,
        store_path: Union[str, os.PathLike[str]] = DEFAULT_STORE_PATH,
        *,
        max_event_history: int = 100_000,
        max_cache_size: int = 50_000,
        durability: str = "flush",
        checkpoint_timeout: float = 300.0,
        replicate_to: Optional[str] = None,
        replicate_options: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self._checkpoint_timeout = _positive_seconds("checkpoint_timeout", checkpoint_timeout)
        path = os.fspath(store_path)
        self.config: dict[str, Any] = {
            "store_path": os.path.abspath(path),
            "max_event_history": max_event_history,
            "max_cache_size": max_cache_size,
            "durability": durability,
            "checkpoint_timeout": self._checkpoint_timeout,
            "replicate_to": replicate_to,
            "replicate_options": replicate_options,
        }
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self.run_id = secrets.token_hex(8)
        # The store fills correlation_id and actor while encoding: no copy of the event in Python.
        self._store = _core.JsonlStore(
            path,
            max_cache_size=max_cache_size,
            durability=durability,  # type: ignore[arg-type]  # validated natively
            history_size=max_event_history,
            collect_types=sorted(COLLECT_TYPES),
            collect_pairs=list(COLLECT_PAIRS),
            default_actor=SYSTEM_ACTOR,
            default_correlation_id=self.run_id,
        )
        self._store_append = self._store.append
        self._history = EventHistory(self._store.history)
        self._closed = False
        self._subscribers: dict[str, tuple[Subscriber, ...]] = {}
        self._tasks = BackgroundTasks("async subscriber")
        self._subscriber_errors = 0
        self._projection_errors = 0
        self._checkpoints: dict[str, Checkpoint] = {}
        self._intents: dict[str, Intent] = {}
        self._sessions: dict[str, _SessionIndex] = {}
        # Objects handed to callers by request_checkpoint/create_intent, adopted by the
        # projection so that later status changes are visible on them.
        self._adopt: dict[str, Union[Checkpoint, Intent]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        # Pending checkpoints whose timer waits for an event loop to be seen.
        self._unarmed: set[str] = set()
        self._next_expiry_ms = math.inf
        self._expiring = False
        # session id -> {tool call id -> finished?}; least recently used session first.
        self._bridge = OpenCodeBridge()
        self._projectors = self._build_projectors()
        self._resumes = 0
        self._events_loaded = len(self._store.history)
        self._apply_collected()
        self._replicator = self._start_replicator(replicate_to, replicate_options)

    # -- replication to Redis (opencode_addons.redis_streams, the [redis] extra) ------------

    def _start_replicator(self, url: Optional[str], options: Optional[Mapping[str, Any]]) -> Any:
        """With ``replicate_to="redis://..."``: a started ``RedisReplicator`` reading this
        stream's store (``replicate_options``: its keywords). Appends never wait for it."""
        if url is None:
            return None
        from opencode_addons.redis_streams import replicator_for_stream

        try:
            return replicator_for_stream(self._store, url, options)
        except BaseException:
            self._store.close()
            raise

    def _stop_replicator(self) -> None:
        replicator, self._replicator = self._replicator, None
        if replicator is None:
            return
        try:
            replicator.shutdown()  # ships what is left while the store is still open
        except Exception:
            log.exception("stopping the Redis replicator failed")

    # -- appending ---------------------------------------------------------------------------

    def append(self, event: Mapping[str, Any]) -> Event:
        """Persist ``event``, update projections, notify subscribers; return the stored event.

        ``correlation_id`` defaults to this stream's ``run_id`` and ``actor`` to ``"system"``.
        ``TypeError``/``ValueError`` for an invalid event and store errors leave nothing changed.
        Re-entrant: a subscriber may append.
        """
        if self._closed:
            self._require_open()
        stored: Event = self._store_append(event)
        # _dispatch inlined: this runs on every append. The common event has no projection,
        # few subscribers and no pending checkpoint, so each step is one check.
        if stored["type"] in self._projectors:
            self._project(stored)
        if self._subscribers:
            self._notify(stored)
        if self._checkpoints:
            self._housekeep()
        return stored

    def sync(self) -> None:
        """Wait until everything appended so far is on disk (in every durability mode)."""
        self._require_open()
        self._store.sync()

    def extend(self, events: Iterable[Mapping[str, Any]]) -> list[Event]:
        """Append a batch atomically (all stored or none), then dispatch each in order."""
        self._require_open()
        stored: list[Event] = self._store.extend(events)
        for event in stored:
            self._dispatch(event)
        return stored

    def _dispatch(self, event: Event) -> None:
        # The common event has no projection, few subscribers and no pending checkpoint: each
        # step is skipped with one lookup, since this runs on every append.
        if event["type"] in self._projectors:
            self._project(event)
        if self._subscribers:
            self._notify(event)
        if self._checkpoints:
            self._housekeep()

    # -- subscribers -------------------------------------------------------------------------

    def subscribe(self, event_type: str, callback: Subscriber) -> Unsubscribe:
        """Call ``callback(event)`` for every appended event of ``event_type`` (``"*"``: all).

        A callback that raises is logged and does not affect the append or other callbacks.
        A callback returning an awaitable has it scheduled on the running event loop.
        """
        _require_str("event_type", event_type)
        if not callable(callback):
            raise TypeError("callback must be callable")
        # Tuples are replaced, never mutated, so a notification in progress is unaffected.
        self._subscribers[event_type] = (*self._subscribers.get(event_type, ()), callback)
        subscribed = True

        def unsubscribe() -> None:
            nonlocal subscribed
            if not subscribed:
                return
            subscribed = False
            callbacks = list(self._subscribers.get(event_type, ()))
            if callback in callbacks:
                callbacks.remove(callback)
            if callbacks:
                self._subscribers[event_type] = tuple(callbacks)
            else:
                self._subscribers.pop(event_type, None)

        return unsubscribe

    def _notify(self, event: Event) -> None:
        for key in (event["type"], WILDCARD):
            for callback in self._subscribers.get(key, ()):
                self._call_subscriber(callback, event)

    def _call_subscriber(self, callback: Subscriber, event: Event) -> None:
        try:
            result = callback(event)
        except Exception:
            self._subscriber_errors += 1
            log.exception("subscriber %r failed on %s", callback, event.get("type"))
            return
        if result is not None and inspect.isawaitable(result):
            self._schedule(result, event)

    def _schedule(self, awaitable: Awaitable[Any], event: Event) -> None:
        if _running_loop() is None:
            log.warning("async subscriber for %s dropped: no running event loop", event["type"])
            close = getattr(awaitable, "close", None)
            if callable(close):
                close()
            return
        self._tasks.spawn(awaitable)

    # -- reading -----------------------------------------------------------------------------

    def query(self, *, scope: str = "cache", **filters: Any) -> list[Event]:
        """Events matching ``filters`` (the store's query keywords), oldest first by default.

        ``scope="cache"`` searches the newest ``max_cache_size`` events, ``"history"`` the newest
        ``max_event_history``.
        """
        if scope == "cache":
            return self._store.query(**filters)  # type: ignore[no-any-return]
        if scope == "history":
            return self._store.history.query(**filters)  # type: ignore[no-any-return]
        raise ValueError(f"scope must be 'cache' or 'history', got {scope!r}")

    def get_event_history(self) -> EventHistory:
        """The bounded history as a read-only sequence view (len, index, iterate oldest first)."""
        return self._history

    def get_stream_events(self, stream_id: str, from_offset: int = 0) -> list[Event]:
        """The history's events of ``stream_id``, oldest first, from the ``from_offset``-th on."""
        if isinstance(from_offset, bool) or not isinstance(from_offset, int) or from_offset < 0:
            raise ValueError(f"from_offset must be an int >= 0, got {from_offset!r}")
        events: list[Event] = self._store.history.query(stream_id=stream_id)
        return events[from_offset:]

    @property
    def path(self) -> str:
        return str(self._store.path)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def recovery(self) -> dict[str, Any]:
        """What the store repaired or skipped when it opened the file."""
        return dict(self._store.recovery)

    # -- resume ------------------------------------------------------------------------------

    def resume(self) -> ResumeResult:
        """Pick up where the file left off: expire overdue checkpoints, arm the others' timers.

        The projections are rebuilt from the whole file when the stream is opened (the store
        collects the relevant events while loading it) and kept current by every append, so
        this never replays an event twice and may be called any number of times.
        """
        self._require_open()
        self._apply_collected()
        expired = self.expire_checkpoints()
        self._arm_pending_timers()
        self._resumes += 1
        history = self._store.history
        last_event_at = history[-1].get("timestamp") if len(history) else None
        return ResumeResult(
            events_replayed=self._events_loaded,
            pending_checkpoints=list(self._checkpoints.values()),
            active_intents=list(self._intents.values()),
            last_event_at=last_event_at,
            expired_checkpoints=expired,
        )

    def _apply_collected(self) -> None:
        # The store hands these out once; later calls return nothing, which is what keeps
        # repeated resumes from applying an event twice.
        for event in self._store.collected():
            self._project(event)

    # -- projections -------------------------------------------------------------------------

    def _build_projectors(self) -> dict[str, Callable[[Event], None]]:
        projectors: dict[str, Callable[[Event], None]] = {
            CHECKPOINT_REQUESTED: self._on_checkpoint_requested,
            AGENT_SPAWNED: self._on_intent_spawned,
            TOOL_START: self._bridge.observe_tool_event,
            TOOL_FINISH: self._bridge.observe_tool_event,
        }
        for event_type in _CHECKPOINT_STATUS:
            projectors[event_type] = self._on_checkpoint_resolved
        for event_type in _INTENT_END_STATUS:
            projectors[event_type] = self._on_intent_ended
        for event_type in _SESSION_END_TYPES:
            projectors[event_type] = self._on_session_end
        return projectors

    def _project(self, event: Event) -> None:
        projector = self._projectors.get(event.get("type"))  # type: ignore[arg-type]
        if projector is None:
            return
        try:
            projector(event)
        except Exception:
            # The event is already durable; a projection bug must not fail the append.
            self._projection_errors += 1
            log.exception("projection failed on %s %s", event.get("type"), event.get("id"))

    def _on_checkpoint_requested(self, event: Event) -> None:
        timeout_ms = int(self._checkpoint_timeout * 1000)
        parsed = Checkpoint.from_event(event, timeout_ms)
        if parsed is None or parsed.id in self._checkpoints:
            return
        adopted = self._adopt.pop(parsed.id, None)
        checkpoint = adopted if isinstance(adopted, Checkpoint) else parsed
        self._checkpoints[checkpoint.id] = checkpoint
        self._session_index(checkpoint.stream_id).checkpoints.add(checkpoint.id)
        self._next_expiry_ms = min(self._next_expiry_ms, checkpoint.expires_at)
        self._schedule_expiry(checkpoint)

    def _on_checkpoint_resolved(self, event: Event) -> None:
        checkpoint_id = as_mapping(event.get("payload")).get("checkpoint_id")
        if isinstance(checkpoint_id, str):
            self._forget_checkpoint(checkpoint_id, _CHECKPOINT_STATUS[event["type"]])

    def _on_intent_spawned(self, event: Event) -> None:
        parsed = Intent.from_event(event)
        if parsed is None or parsed.id in self._intents:
            return
        adopted = self._adopt.pop(parsed.id, None)
        intent = adopted if isinstance(adopted, Intent) else parsed
        self._intents[intent.id] = intent
        self._session_index(intent.session_id or intent.stream_id).intents.add(intent.id)

    def _on_intent_ended(self, event: Event) -> None:
        payload = as_mapping(event.get("payload"))
        intent_id = str_or_none(payload.get("intent_id")) or str_or_none(payload.get("id"))
        if intent_id is not None:
            self._forget_intent(intent_id, _INTENT_END_STATUS[event["type"]])

    def _on_session_end(self, event: Event) -> None:
        if event["type"] in _PLUGIN_SHUTDOWN_TYPES:
            for session_id in {*self._sessions, *self._bridge.sessions()}:
                self._drop_session_state(session_id)
            return
        ended = session_id_of(event)
        if ended is not None:
            self._drop_session_state(ended)

    def _drop_session_state(self, session_id: str) -> None:
        index = self._sessions.get(session_id)
        if index is not None:
            for checkpoint_id in list(index.checkpoints):
                self._forget_checkpoint(checkpoint_id, "dropped")
            for intent_id in list(index.intents):
                self._forget_intent(intent_id, "dropped")
        self._sessions.pop(session_id, None)
        self._bridge.drop_session(session_id)

    def _session_index(self, session_id: str) -> _SessionIndex:
        index = self._sessions.get(session_id)
        if index is None:
            index = self._sessions[session_id] = _SessionIndex()
        return index

    def _unindex(self, session_id: str, item_id: str) -> None:
        index = self._sessions.get(session_id)
        if index is None:
            return
        index.checkpoints.discard(item_id)
        index.intents.discard(item_id)
        if index.empty():
            del self._sessions[session_id]

    def _forget_checkpoint(self, checkpoint_id: str, status: str) -> None:
        checkpoint = self._checkpoints.pop(checkpoint_id, None)
        if checkpoint is None:
            return
        checkpoint.status = status
        self._cancel_timer(checkpoint_id)
        self._unindex(checkpoint.stream_id, checkpoint_id)

    def _forget_intent(self, intent_id: str, status: str) -> None:
        intent = self._intents.pop(intent_id, None)
        if intent is None:
            return
        intent.status = status
        self._unindex(intent.session_id or intent.stream_id, intent_id)

    # -- checkpoints -------------------------------------------------------------------------

    def request_checkpoint(
        self,
        stream_id: str,
        decision_point: str,
        options: Sequence[str],
        requested_by: str,
        *,
        timeout: float | None = None,
    ) -> Checkpoint:
        """Append ``checkpoint.requested`` and return the pending checkpoint.

        It expires ``timeout`` seconds from now (default: the stream's ``checkpoint_timeout``)
        and is then rejected with reason ``"timeout"``.
        """
        _require_str("stream_id", stream_id)
        _require_str("requested_by", requested_by)
        if isinstance(options, str) or not all(isinstance(o, str) for o in options):
            raise TypeError("options must be a sequence of str")
        seconds = self._checkpoint_timeout if timeout is None else timeout
        timeout_ms = int(_positive_seconds("timeout", seconds) * 1000)
        now = _now_ms()
        checkpoint = Checkpoint(
            id=_new_id("cp"),
            stream_id=stream_id,
            decision_point=str(decision_point),
            options=list(options),
            requested_by=requested_by,
            requested_at=now,
            expires_at=now + timeout_ms,
        )
        self._append_adopted(
            checkpoint,
            {
                "type": CHECKPOINT_REQUESTED,
                "stream_id": stream_id,
                "actor": requested_by,
                "payload": checkpoint.to_dict(),
            },
        )
        return checkpoint

    def _append_adopted(self, record: Union[Checkpoint, Intent], event: Mapping[str, Any]) -> None:
        self._adopt[record.id] = record
        try:
            self.append(event)
        finally:
            self._adopt.pop(record.id, None)

    def approve_checkpoint(self, checkpoint_id: str, by: str, option: str | None = None) -> bool:
        """Approve a pending checkpoint; False if unknown, already resolved or expired.

        An expired checkpoint found here is rejected with reason ``"timeout"`` instead.
        """
        checkpoint = self._checkpoints.get(checkpoint_id)
        if checkpoint is None:
            return False
        if option is not None and checkpoint.options and option not in checkpoint.options:
            raise ValueError(f"option {option!r} is not one of {checkpoint.options}")
        if checkpoint.expires_at <= _now_ms():
            self.reject_checkpoint(checkpoint_id, SYSTEM_ACTOR, reason="timeout")
            return False
        payload = {"checkpoint_id": checkpoint_id, "approved_by": by, "selected_option": option}
        self._append_resolution(checkpoint, CHECKPOINT_APPROVED, by, payload)
        return True

    def reject_checkpoint(self, checkpoint_id: str, by: str, reason: str | None = None) -> bool:
        """Reject a pending checkpoint; False if unknown or already resolved."""
        checkpoint = self._checkpoints.get(checkpoint_id)
        if checkpoint is None:
            return False
        payload = {"checkpoint_id": checkpoint_id, "rejected_by": by, "reason": reason}
        self._append_resolution(checkpoint, CHECKPOINT_REJECTED, by, payload)
        return True

    def _append_resolution(
        self, checkpoint: Checkpoint, event_type: str, by: str, payload: dict[str, Any]
    ) -> None:
        self.append(
            {"type": event_type, "stream_id": checkpoint.stream_id, "actor": by, "payload": payload}
        )

    def expire_checkpoints(self) -> int:
        """Reject every pending checkpoint past its ``expires_at``; return how many."""
        if self._closed:
            return 0
        now = _now_ms()
        overdue = [c.id for c in self._checkpoints.values() if c.expires_at <= now]
        expired = 0
        self._expiring = True
        try:
            for checkpoint_id in overdue:
                expired += self.reject_checkpoint(checkpoint_id, SYSTEM_ACTOR, reason="timeout")
        finally:
            self._expiring = False
            self._next_expiry_ms = min(
                (c.expires_at for c in self._checkpoints.values()), default=math.inf
            )
        if expired:
            log.info("expired %d checkpoint(s)", expired)
        return expired

    @property
    def pending_checkpoints(self) -> list[Checkpoint]:
        return list(self._checkpoints.values())

    def get_checkpoint(self, checkpoint_id: str) -> Checkpoint | None:
        """The pending checkpoint with this id, or None."""
        return self._checkpoints.get(checkpoint_id)

    # -- checkpoint timers -------------------------------------------------------------------

    def _schedule_expiry(self, checkpoint: Checkpoint) -> None:
        self._unarmed.add(checkpoint.id)
        self._arm_pending_timers()

    def _arm_timer(self, checkpoint: Checkpoint, loop: asyncio.AbstractEventLoop) -> None:
        self._cancel_timer(checkpoint.id)
        delay = max(0.0, (checkpoint.expires_at - _now_ms()) / 1000)
        self._timers[checkpoint.id] = loop.call_later(delay, self._on_expiry_timer, checkpoint.id)

    def _arm_pending_timers(self) -> None:
        loop = _running_loop()
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
            checkpoint = self._checkpoints.get(checkpoint_id)
            if checkpoint is not None:
                self._arm_timer(checkpoint, loop)

    def _cancel_timer(self, checkpoint_id: str) -> None:
        self._unarmed.discard(checkpoint_id)
        timer = self._timers.pop(checkpoint_id, None)
        if timer is not None:
            timer.cancel()

    def _on_expiry_timer(self, checkpoint_id: str) -> None:
        self._timers.pop(checkpoint_id, None)
        if self._closed or checkpoint_id not in self._checkpoints:
            return
        try:
            self.reject_checkpoint(checkpoint_id, SYSTEM_ACTOR, reason="timeout")
        except Exception:
            log.exception("could not expire checkpoint %s", checkpoint_id)

    def _housekeep(self) -> None:
        """After each append: arm timers on the running loop, expire overdue checkpoints."""
        if not self._checkpoints:
            return
        self._arm_pending_timers()
        if not self._expiring and _now_ms() >= self._next_expiry_ms:
            self.expire_checkpoints()

    # -- intents -----------------------------------------------------------------------------

    def create_intent(self, spec: Mapping[str, Any]) -> Intent:
        """Append ``agent.spawned`` with payload ``{id, **spec}`` and return the active intent.

        The intent's stream is ``spec["stream_id"]``, else its session id, else ``"intents"``.
        """
        if not isinstance(spec, Mapping):
            raise TypeError(f"spec must be a mapping, got {type(spec).__name__}")
        intent_id = _new_id("intent")
        payload: dict[str, Any] = {"id": intent_id}
        payload.update((k, v) for k, v in spec.items() if k != "id")
        stream_id = _intent_stream(spec)
        event = {"type": AGENT_SPAWNED, "stream_id": stream_id, "payload": payload}
        intent = Intent(
            id=intent_id,
            stream_id=stream_id,
            spec={k: v for k, v in payload.items() if k != "id"},
            created_at=_now_ms(),
            session_id=session_id_of(event),
        )
        self._append_adopted(intent, event)
        return intent

    def complete_intent(self, intent_id: str, result: Any = None) -> bool:
        """Append ``agent.completed {intent_id, result}``; False if the intent is not active."""
        return self._end_intent(intent_id, AGENT_COMPLETED, {"result": result})

    def fail_intent(self, intent_id: str, error: Any) -> bool:
        """Append ``agent.failed {intent_id, error}``; False if the intent is not active."""
        return self._end_intent(intent_id, AGENT_FAILED, {"error": error})

    def _end_intent(self, intent_id: str, event_type: str, detail: dict[str, Any]) -> bool:
        intent = self._intents.get(intent_id)
        if intent is None:
            return False
        payload = {"intent_id": intent_id, **detail}
        self.append({"type": event_type, "stream_id": intent.stream_id, "payload": payload})
        return True

    @property
    def active_intents(self) -> list[Intent]:
        return list(self._intents.values())

    # -- sessions ----------------------------------------------------------------------------

    def delete_session(self, session_id: str, reason: str | None = None) -> Event:
        """Append ``lifecycle.session.deleted``; the session's state is dropped with it."""
        _require_str("session_id", session_id)
        payload = {"session_id": session_id, "reason": reason}
        return self.append({"type": SESSION_DELETED, "stream_id": session_id, "payload": payload})

    def abort_session(self, session_id: str) -> Event:
        """Append ``lifecycle.session.aborted``; the session's state is dropped with it."""
        _require_str("session_id", session_id)
        payload = {"session_id": session_id}
        return self.append({"type": SESSION_ABORTED, "stream_id": session_id, "payload": payload})

    # -- the OpenCode bridge -----------------------------------------------------------------

    def bridge(self, sdk_event: Mapping[str, Any]) -> Event | None:
        """Append the stream event(s) an OpenCode server event maps to; return the last one.

        Unknown or uninteresting server events return None. See ``map_sdk_event``.
        """
        stored: Event | None = None
        for event in self.map_sdk_event(sdk_event):
            stored = self.append(event)
        return stored

    def map_sdk_event(self, sdk_event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The stream events for one OpenCode server event (none for unknown ones).

        Reads, but does not change, the bridge's tool-call state; appending the events does.
        """
        return self._bridge.map(sdk_event)

    # -- lifecycle and stats -----------------------------------------------------------------

    def _require_open(self) -> None:
        if self._closed:
            raise _core.StoreClosedError("the durable stream is shut down")

    def stats(self) -> dict[str, Any]:
        """Sizes and counters, for health reports."""
        store = self._store_stats()
        return {
            "history_events": store.get("history_events", 0),
            "cache_events": store.get("events", 0),
            "history_bytes": store.get("nbytes", 0),
            "evicted": store.get("evicted", 0),
            "file_bytes": store.get("file_bytes", 0),
            "next_seq": store.get("next_seq"),
            "durability": self.config["durability"],
            "subscribers": sum(len(c) for c in self._subscribers.values()),
            "subscriber_errors": self._subscriber_errors + self._tasks.failures,
            "projection_errors": self._projection_errors,
            "async_tasks": len(self._tasks),
            "pending_checkpoints": len(self._checkpoints),
            "active_intents": len(self._intents),
            "timers": len(self._timers),
            "unarmed_checkpoints": len(self._unarmed),
            "sessions": len(self._sessions.keys() | self._bridge.sessions()),
            "bridge_sessions": len(self._bridge),
            "resumes": self._resumes,
            "run_id": self.run_id,
            "closed": self._closed,
            **({"replication": self._replicator.stats()} if self._replicator else {}),
        }

    def _store_stats(self) -> dict[str, Any]:
        if self._closed:
            return {}
        try:
            return dict(self._store.stats())
        except _core.StoreError:
            log.exception("store stats unavailable")
            return {}

    def shutdown(self) -> None:
        """Cancel timers and async subscriber tasks, flush and close the store; idempotent.

        Synchronous and safe to run from a worker thread (``shutdown_all`` does): it only
        cancels timer handles and asks each task's loop to cancel it.
        """
        if self._closed:
            return
        self._closed = True
        timers, self._timers = self._timers, {}
        for timer in timers.values():
            timer.cancel()
        self._unarmed.clear()
        self._tasks.cancel_threadsafe()
        self._stop_replicator()
        try:
            self._store.close()
        finally:
            runtime.unregister(COMPONENT_NAME, self)
        log.info("durable stream %s shut down", self.path)

    close = shutdown

    def __enter__(self) -> DurableStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"DurableStream(path={self.config['store_path']!r}, run_id={self.run_id!r}, {state})"


def _intent_stream(spec: Mapping[str, Any]) -> str:
    for key in ("stream_id", "session_id", "sessionID", "sessionId"):
        value = spec.get(key)
        if isinstance(value, str) and value:
            return value
    return INTENT_STREAM


# -- the process-wide instance -----------------------------------------------------------------


def _full_config(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor's arguments with defaults filled in, as ``DurableStream.config`` has them."""
    bound = inspect.signature(DurableStream).bind(**kwargs)
    bound.apply_defaults()
    config = dict(bound.arguments)
    config["store_path"] = os.path.abspath(os.fspath(config["store_path"]))
    config["checkpoint_timeout"] = float(config["checkpoint_timeout"])
    return config


def initialize_durable_stream(**kwargs: Any) -> DurableStream:
    """The process-wide stream, created and registered under ``"durable_stream"`` if needed.

    Takes the constructor's keyword arguments. A second call returns the existing stream when
    its arguments (defaults filled in, path made absolute) are the same, and raises
    ``ValueError`` when they differ. A stream that was shut down is replaced by a new one.
    ``shutdown_all()`` clears the registration.
    """
    config = _full_config(kwargs)
    existing = runtime.get_component(COMPONENT_NAME)
    if isinstance(existing, DurableStream) and existing.closed:
        runtime.unregister(COMPONENT_NAME, existing)
    stream = runtime.get_or_create(COMPONENT_NAME, lambda: DurableStream(**kwargs))
    if not isinstance(stream, DurableStream):
        raise TypeError(f"'durable_stream' is registered as a {type(stream).__name__}")
    if stream.config != config:
        raise ValueError(
            f"the durable stream is already initialized with {stream.config}; got {config}"
        )
    return stream


def get_durable_stream() -> DurableStream | None:
    """The stream registered by ``initialize_durable_stream``, or None."""
    stream = runtime.get_component(COMPONENT_NAME)
    return stream if isinstance(stream, DurableStream) else None
