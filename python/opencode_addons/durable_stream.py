"""DurableStream: the event stream of a run, persisted in a JSONL file by the native store.

One ``JsonlStore`` holds everything: the file, the bounded cache (newest ``max_cache_size``
events) and the bounded history (newest ``max_event_history`` events). Cache and history share
their records, so the default limits cost about the history alone.

On top of the store the stream keeps small projections rebuilt from the file when it is opened:
pending checkpoints with their expiry timers (``stream_checkpoints``), active intents (spawned
agents, ``stream_intents``) and the bridge's per-session tool-call state (``bridge``). The end of
a session drops its part of each. ``append`` persists first, then updates the projections,
then notifies subscribers. Projections go before subscribers so that a subscriber reacting to an
event (for instance approving a checkpoint the moment it is requested, or reading
``active_intents`` after ``agent.completed``) sees the state that event produced.

The stream is meant to be used from one thread (normally the event loop's); only ``shutdown`` is
safe to call from another thread.
"""

from __future__ import annotations

import inspect
import logging
import os
import secrets
from collections.abc import Awaitable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union, overload

from opencode_addons import _core, component_registry
from opencode_addons.background import BackgroundTasks, running_loop
from opencode_addons.bridge import BRIDGE_STREAM as BRIDGE_STREAM  # re-exported
from opencode_addons.bridge import OpenCodeBridge
from opencode_addons.events import (
    AGENT_SPAWNED,
    CHECKPOINT_ID_KEYS,
    CHECKPOINT_REQUESTED,
    CHECKPOINT_STATUS,
    INTENT_END_STATUS,
    INTENT_ID_KEYS,
    PLUGIN_SHUTDOWN_TYPES,
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
from opencode_addons.stream_checkpoints import Checkpoint, StreamCheckpoints
from opencode_addons.stream_intents import INTENT_STREAM as INTENT_STREAM  # re-exported
from opencode_addons.stream_intents import Intent, StreamIntents
from opencode_addons.validation import require_str

log = logging.getLogger(__name__)

DEFAULT_STORE_PATH = os.path.join(".opencode", "durable_stream.jsonl")
# The store seals its file into segments of this size and deletes the oldest ones beyond the
# budget (carrying what is still open forward first); None as the budget means unbounded.
DEFAULT_MAX_SEGMENT_BYTES = 64 << 20
DEFAULT_MAX_DISK_BYTES = 1 << 30
COMPONENT_NAME = "durable_stream"
# Tool events (with the session ends among them) read back from the history before a stream's
# first bridged server event, to rebuild the bridge's memory of tool calls: the calls still
# running at a restart are among the newest few.
TOOL_REPLAY_EVENTS = 2_000

# What the store collects while opening the file, so projections can be rebuilt from all of it:
# session ends, and the checkpoints and intents that no later event resolved (the store drops
# an opening event as soon as its closing event is read, so this stays small on long files).
COLLECT_TYPES = SESSION_TERMINAL_TYPES
COLLECT_PAIRS = (
    (
        CHECKPOINT_REQUESTED,
        list(CHECKPOINT_ID_KEYS),
        sorted(CHECKPOINT_STATUS),
        list(CHECKPOINT_ID_KEYS),
    ),
    (AGENT_SPAWNED, list(INTENT_ID_KEYS), sorted(INTENT_END_STATUS), list(INTENT_ID_KEYS)),
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

    name = COMPONENT_NAME

    def __init__(
        self,
        store_path: Union[str, os.PathLike[str]] = DEFAULT_STORE_PATH,
        *,
        max_event_history: int = 100_000,
        max_cache_size: int = 50_000,
        durability: str = "flush",
        checkpoint_timeout: float = 300.0,
        max_segment_bytes: int = DEFAULT_MAX_SEGMENT_BYTES,
        max_disk_bytes: Optional[int] = DEFAULT_MAX_DISK_BYTES,
        max_age: Optional[float] = None,
        compress_sealed: bool = False,
        replicate_to: Optional[str] = None,
        replicate_options: Optional[Mapping[str, Any]] = None,
        compress_history: bool = False,
    ) -> None:
        # Settings are checked before the file is opened (and locked).
        self._checkpoints = StreamCheckpoints(self.append, checkpoint_timeout)
        path = os.fspath(store_path)
        self.config: dict[str, Any] = {
            "store_path": os.path.abspath(path),
            "max_event_history": max_event_history,
            "max_cache_size": max_cache_size,
            "durability": durability,
            "checkpoint_timeout": self._checkpoints.default_timeout,
            "max_segment_bytes": max_segment_bytes,
            "max_disk_bytes": max_disk_bytes,
            "max_age": max_age,
            "compress_sealed": compress_sealed,
            "replicate_to": replicate_to,
            "replicate_options": replicate_options,
            "compress_history": compress_history,
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
            max_segment_bytes=max_segment_bytes,
            max_disk_bytes=max_disk_bytes,
            max_age=max_age,
            compress_sealed=compress_sealed,
            compress_history=compress_history,
        )
        self._store_append = self._store.append
        self._history = EventHistory(self._store.history)
        self._closed = False
        self._subscribers: dict[str, tuple[Subscriber, ...]] = {}
        self._tasks = BackgroundTasks("async subscriber")
        self._subscriber_errors = 0
        self._projection_errors = 0
        self._pending_checkpoints = self._checkpoints.pending_by_id
        self._intents = StreamIntents(self.append)
        # session id -> {tool call id -> finished?}; least recently used session first.
        self._bridge = OpenCodeBridge()
        self._projectors = self._build_projectors()
        self._install_native_append()
        self._resumes = 0
        self._events_loaded = len(self._store.history)
        self._apply_collected()
        self._tool_calls_replayed = False
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
        self._after_append(stored, self._projectors.get(stored["type"]))
        return stored

    def _install_native_append(self) -> None:
        """Make ``self.append`` a native ``StreamAppender``'s ``append``: the steps of
        ``append`` (store, then ``_after_append`` only when there is work: the type's projector,
        subscribers or pending checkpoints; a projector alone it calls itself) without a Python
        frame per event. It is an instance attribute, so a subclass that overrides ``append``
        keeps its own, and ``shutdown`` removes it first (the method then refuses appends). The
        bound method, not the appender itself: a native method gets the fast calling convention
        on CPython 3.10+, where calling an object builds an argument tuple per call."""
        if type(self).append is not DurableStream.append:
            return
        appender = _core.StreamAppender(
            self._store,
            self._projectors,
            self._subscribers,
            self._pending_checkpoints,
            self._after_append,
            self._projection_failed,
            self._checkpoints.housekeep,
        )
        self.__dict__["append"] = appender.append

    def _after_append(self, stored: Event, projector: Optional[Callable[[Event], None]]) -> None:
        """What follows storing an event (``projector``: its type's, or None). The native
        appender calls this only when there is work; each step is one check of a plain dict."""
        if projector is not None:
            self._run_projector(projector, stored)
        if self._subscribers:
            self._notify(stored)
        if self._pending_checkpoints:
            self._checkpoints.housekeep()

    def sync(self) -> None:
        """Wait until everything appended so far is on disk (in every durability mode)."""
        self._require_open()
        self._store.sync()

    def extend(self, events: Iterable[Mapping[str, Any]]) -> list[Event]:
        """Append a batch atomically (all stored or none), then dispatch each in order."""
        self._require_open()
        stored: list[Event] = self._store.extend(events)
        for event in stored:
            self._after_append(event, self._projectors.get(event["type"]))
        return stored

    # -- subscribers -------------------------------------------------------------------------

    def subscribe(self, event_type: str, callback: Subscriber) -> Unsubscribe:
        """Call ``callback(event)`` for every appended event of ``event_type`` (``"*"``: all).

        A callback that raises is logged and does not affect the append or other callbacks.
        A callback returning an awaitable has it scheduled on the running event loop.
        """
        require_str("event_type", event_type)
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
        if running_loop() is None:
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
        expired = self._checkpoints.expire_overdue()
        self._checkpoints.arm_timers()
        self._resumes += 1
        history = self._store.history
        last_event_at = history[-1].get("timestamp") if len(history) else None
        return ResumeResult(
            events_replayed=self._events_loaded,
            pending_checkpoints=self._checkpoints.pending,
            active_intents=self._intents.active,
            last_event_at=last_event_at,
            expired_checkpoints=expired,
        )

    def _apply_collected(self) -> None:
        # The store hands these out once; later calls return nothing, which is what keeps
        # repeated resumes from applying an event twice.
        for event in self._store.collected():
            self._project(event)

    def _replay_tool_calls(self) -> None:
        """Once, before the first bridged event (a stream that bridges nothing pays nothing when
        it opens): the bridge rebuilds its memory of tool calls from the newest tool events and
        session ends of the history, so that after a restart the server's next update of a call
        that started before it does not store a second ``tool_start``."""
        if self._tool_calls_replayed:
            return
        self._tool_calls_replayed = True
        types = [TOOL_START, TOOL_FINISH, *sorted(SESSION_TERMINAL_TYPES)]
        newest = self._store.history.query(type=types, newest_first=True, limit=TOOL_REPLAY_EVENTS)
        self._bridge.replay_tool_events(reversed(newest))

    # -- projections -------------------------------------------------------------------------

    def _build_projectors(self) -> dict[str, Callable[[Event], None]]:
        projectors: dict[str, Callable[[Event], None]] = {
            CHECKPOINT_REQUESTED: self._checkpoints.on_requested,
            AGENT_SPAWNED: self._intents.on_spawned,
            TOOL_START: self._bridge.observe_tool_event,
            TOOL_FINISH: self._bridge.observe_tool_event,
        }
        projectors.update(dict.fromkeys(CHECKPOINT_STATUS, self._checkpoints.on_resolved))
        projectors.update(dict.fromkeys(INTENT_END_STATUS, self._intents.on_ended))
        projectors.update(dict.fromkeys(SESSION_TERMINAL_TYPES, self._on_session_end))
        return projectors

    def _project(self, event: Event) -> None:
        projector = self._projectors.get(event.get("type"))  # type: ignore[arg-type]
        if projector is not None:
            self._run_projector(projector, event)

    def _run_projector(self, projector: Callable[[Event], None], event: Event) -> None:
        try:
            projector(event)
        except Exception as error:
            # The event is already durable; a projection bug must not fail the append.
            self._projection_failed(event, error)

    def _projection_failed(self, event: Event, error: BaseException) -> None:
        self._projection_errors += 1
        log.error("projection failed on %s %s", event.get("type"), event.get("id"), exc_info=error)

    def _on_session_end(self, event: Event) -> None:
        if event["type"] in PLUGIN_SHUTDOWN_TYPES:
            ended = self._session_ids()
        else:
            session_id = session_id_of(event)
            ended = {session_id} if session_id is not None else set()
        for session_id in ended:
            # Dropped without a closing event: the store must stop carrying them forward into
            # new segments, or a reopen after retention would bring them back.
            for checkpoint_id in self._checkpoints.drop_session(session_id):
                self._store.forget_open(CHECKPOINT_REQUESTED, checkpoint_id)
            for intent_id in self._intents.drop_session(session_id):
                self._store.forget_open(AGENT_SPAWNED, intent_id)
            self._bridge.drop_session(session_id)

    def _session_ids(self) -> set[str]:
        """Every session the stream holds state for (checkpoints, intents, bridge)."""
        return self._checkpoints.sessions() | self._intents.sessions() | self._bridge.sessions()

    # -- checkpoints (stream_checkpoints.py) -------------------------------------------------

    def request_checkpoint(
        self,
        stream_id: str,
        decision_point: str,
        options: Sequence[str],
        requested_by: str,
        *,
        timeout: float | None = None,
        expires_by: str = SYSTEM_ACTOR,
    ) -> Checkpoint:
        """Append ``checkpoint.requested`` and return the pending checkpoint.

        It expires ``timeout`` seconds from now (default: the stream's ``checkpoint_timeout``):
        that deadline is written into the event as ``expires_at``, and one timer rejects the
        checkpoint then with reason ``"timeout"``, by ``expires_by``.
        """
        return self._checkpoints.request(
            stream_id,
            decision_point,
            options,
            requested_by,
            timeout=timeout,
            expires_by=expires_by,
        )

    def approve_checkpoint(self, checkpoint_id: str, by: str, option: str | None = None) -> bool:
        """Approve a pending checkpoint; False if unknown, already resolved or expired.

        An expired checkpoint found here is rejected with reason ``"timeout"`` instead.
        """
        return self._checkpoints.approve(checkpoint_id, by, option)

    def reject_checkpoint(self, checkpoint_id: str, by: str, reason: str | None = None) -> bool:
        """Reject a pending checkpoint; False if unknown or already resolved."""
        return self._checkpoints.reject(checkpoint_id, by, reason)

    def expire_checkpoints(self) -> int:
        """Reject every pending checkpoint past its ``expires_at``; return how many."""
        return self._checkpoints.expire_overdue()

    @property
    def pending_checkpoints(self) -> list[Checkpoint]:
        return self._checkpoints.pending

    def get_checkpoint(self, checkpoint_id: str) -> Checkpoint | None:
        """The pending checkpoint with this id, or None."""
        return self._checkpoints.get(checkpoint_id)

    @property
    def checkpoints(self) -> StreamCheckpoints:
        """The checkpoint projection and its timers (what ``CheckpointManager`` builds on)."""
        return self._checkpoints

    # -- intents (stream_intents.py) ---------------------------------------------------------

    def create_intent(self, spec: Mapping[str, Any]) -> Intent:
        """Append ``agent.spawned`` with payload ``{id, **spec}`` and return the active intent.

        The intent's stream is ``spec["stream_id"]``, else its session id, else ``"intents"``.
        """
        return self._intents.create(spec)

    def complete_intent(self, intent_id: str, result: Any = None) -> bool:
        """Append ``agent.completed {intent_id, result}``; False if the intent is not active."""
        return self._intents.complete(intent_id, result)

    def fail_intent(self, intent_id: str, error: Any) -> bool:
        """Append ``agent.failed {intent_id, error}``; False if the intent is not active."""
        return self._intents.fail(intent_id, error)

    @property
    def active_intents(self) -> list[Intent]:
        return self._intents.active

    # -- sessions ----------------------------------------------------------------------------

    def delete_session(self, session_id: str, reason: str | None = None) -> Event:
        """Append ``lifecycle.session.deleted``; the session's state is dropped with it."""
        require_str("session_id", session_id)
        payload = {"session_id": session_id, "reason": reason}
        return self.append({"type": SESSION_DELETED, "stream_id": session_id, "payload": payload})

    def abort_session(self, session_id: str) -> Event:
        """Append ``lifecycle.session.aborted``; the session's state is dropped with it."""
        require_str("session_id", session_id)
        payload = {"session_id": session_id}
        return self.append({"type": SESSION_ABORTED, "stream_id": session_id, "payload": payload})

    # -- the OpenCode bridge -----------------------------------------------------------------

    def bridge(self, sdk_event: Mapping[str, Any]) -> Event | None:
        """Append the stream event(s) an OpenCode server event maps to; return the last one.

        Server events of either shape and ``/global/event`` frames; see ``opencode_addons.bridge``
        for the mapping. Bad input is counted (``stats()["bridge"]``) and logged, never raised;
        duplicates (by the server's event id) and transport events return None. The stream
        events of one server event are stored all or none; store errors propagate.
        """
        self._replay_tool_calls()
        return self._bridge.feed(self, sdk_event)

    def map_sdk_event(self, sdk_event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The stream events ``bridge`` would append for one server event, as of now.

        A preview: nothing is stored and the bridge remembers nothing of it.
        """
        self._replay_tool_calls()
        return self._bridge.map(sdk_event)

    @property
    def opencode_bridge(self) -> OpenCodeBridge:
        """The bridge's memory of the OpenCode server (stats, duplicate window)."""
        return self._bridge

    @property
    def max_event_bytes(self) -> int:
        """The largest event the store accepts, in bytes of JSON."""
        return int(self._store.max_event_bytes)

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
            "history_stored_bytes": store.get("stored_bytes", 0),
            "history_memory_bytes": store.get("memory_bytes", 0),
            "compress_history": self.config["compress_history"],
            "evicted": store.get("evicted", 0),
            "file_bytes": store.get("file_bytes", 0),
            "disk_bytes": store.get("disk_bytes", 0),
            "max_disk_bytes": self.config["max_disk_bytes"],
            "segments": store.get("segments", 0),
            "sealed_bytes": store.get("sealed_bytes", 0),
            "segments_dropped": store.get("segments_dropped", 0),
            "events_dropped": store.get("events_dropped", 0),
            "carried_forward": store.get("carried_forward", 0),
            "next_seq": store.get("next_seq"),
            "durability": self.config["durability"],
            "subscribers": sum(len(c) for c in self._subscribers.values()),
            "subscriber_errors": self._subscriber_errors + self._tasks.failures,
            "projection_errors": self._projection_errors,
            "async_tasks": len(self._tasks),
            **self._checkpoints.stats(),
            "active_intents": len(self._intents),
            "sessions": len(self._session_ids()),
            "bridge_sessions": len(self._bridge),
            "bridge": self._bridge.stats(),
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
        self.__dict__.pop("append", None)  # the native fast path; the method refuses appends
        self._closed = True
        self._checkpoints.close()
        self._tasks.cancel_threadsafe()
        self._stop_replicator()
        try:
            self._store.close()
        finally:
            component_registry.unregister(COMPONENT_NAME, self)
        log.info("durable stream %s shut down", self.path)

    close = shutdown

    def __enter__(self) -> DurableStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"DurableStream(path={self.config['store_path']!r}, run_id={self.run_id!r}, {state})"
