"""``opencode-addons record``: a live OpenCode server recorded with the orchestration attached.

The recorder (``opencode_addons.opencode.record``) bridges the server's events into a
``DurableStream``; around it run the components of the reference: session cleanup
(``SessionStateTracker``), the task observer and registry, the checkpoint manager (which adopts
the server's permissions and questions), the learning extractor (with its memory lane) and the
event-driven ledger. The task observer is fed by the server's ``session.status``: each busy
period of a session is a task (registered when the session turns busy, described by the user's
last prompt), which the observer completes when the session is idle again.

The recorder only reads the server: a task observer asking to prompt or delete a session is
logged and counted, never sent.

On SIGINT/SIGTERM the recorder stops reading, then every component shuts down in the reference
order (``shutdown_all``), and the process exits with 128 + the signal number.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TextIO

import psutil

from opencode_addons.durable_stream import DEFAULT_STORE_PATH, DurableStream
from opencode_addons.events import (
    AGENT_ACTOR,
    PLUGIN_SHUTDOWN_TYPES,
    SESSION_ERROR,
    SESSION_IDLE,
    SESSION_STATUS,
    SESSION_TERMINAL_TYPES,
    TEXT_SNAPSHOT,
    USER_ACTOR,
    Event,
    Unsubscribe,
    session_id_of,
)
from opencode_addons.opencode import RecorderStats, record
from opencode_addons.orchestrator.host import Orchestration
from opencode_addons.orchestrator.task_registry import TaskRegistry
from opencode_addons.shutdown import ShutdownReport

log = logging.getLogger(__name__)

STATUS_INTERVAL = 0.5
MAX_TEXT_CHARS = 2000
MAX_TRACKED_SESSIONS = 10_000
# OpenCode's session.status types as the task observer's statuses.
_OBSERVER_STATUS = {"busy": "busy", "retry": "busy", "idle": "idle"}


@dataclass
class RecordConfig:
    """What ``opencode-addons record`` was asked to do."""

    url: str
    store: str = DEFAULT_STORE_PATH
    global_events: bool = False
    max_reconnects: Optional[int] = None
    durability: str = "flush"
    history: int = 100_000
    cache: int = 50_000
    backoff: float = 0.5
    task_timeout: float = 3600.0
    options: dict[str, Any] = field(default_factory=dict)


class SessionStatusClient:
    """The task observer's view of the server's sessions, fed by the bridged events.

    Statuses come from ``session.status`` (busy, retry -> busy, idle), ``session.idle`` and
    ``session.error``; the last assistant text from text snapshots. A session turning busy
    without an active task gets one (its description: the user's last prompt). Bounded: at most
    ``max_sessions`` sessions, each dropped when it ends.
    """

    name = "session_status_client"

    def __init__(
        self,
        stream: DurableStream,
        registry: TaskRegistry,
        *,
        task_timeout: float = 3600.0,
        max_sessions: int = MAX_TRACKED_SESSIONS,
    ) -> None:
        self._registry = registry
        self._task_timeout = task_timeout
        self._max_sessions = max_sessions
        self.statuses: OrderedDict[str, str] = OrderedDict()
        self._assistant_text: OrderedDict[str, str] = OrderedDict()
        self._user_text: OrderedDict[str, str] = OrderedDict()
        self._closed = False
        self._counts = {"turns": 0, "prompts_not_sent": 0, "deletes_not_sent": 0}
        handlers: dict[str, Callable[[Event], None]] = {
            SESSION_STATUS: self._on_status,
            SESSION_IDLE: self._on_idle,
            SESSION_ERROR: self._on_error,
            TEXT_SNAPSHOT: self._on_text,
        }
        for event_type in SESSION_TERMINAL_TYPES:
            handlers[event_type] = self._on_end
        self._unsubscribes: list[Unsubscribe] = [
            stream.subscribe(event_type, handler) for event_type, handler in handlers.items()
        ]

    # -- SessionClient -----------------------------------------------------------------------

    async def session_status(self, session_id: str) -> str:
        return self.statuses.get(session_id, "unknown")

    async def last_assistant_text(self, session_id: str) -> Optional[str]:
        return self._assistant_text.get(session_id)

    async def prompt(self, session_id: str, text: str) -> None:
        self._counts["prompts_not_sent"] += 1
        log.info("recorder is read-only: not prompting session %s (%r)", session_id, text[:80])

    async def delete_session(self, session_id: str) -> None:
        self._counts["deletes_not_sent"] += 1
        log.info("recorder is read-only: not deleting session %s", session_id)

    # -- events ------------------------------------------------------------------------------

    def _set(self, session_id: str, status: str) -> None:
        self.statuses[session_id] = status
        self.statuses.move_to_end(session_id)
        while len(self.statuses) > self._max_sessions:
            oldest, _ = self.statuses.popitem(last=False)
            self._forget(oldest)

    def _on_status(self, event: Event) -> None:
        session_id = session_id_of(event)
        status = _OBSERVER_STATUS.get(str(event.get("payload", {}).get("status")))
        if session_id is None or status is None:
            return
        self._set(session_id, status)
        if status == "busy" and not any(t.is_active for t in self._registry.by_session(session_id)):
            prompt = self._user_text.get(session_id) or "agent turn"
            task = self._registry.register(
                session_id=session_id, description=prompt[:200], timeout=self._task_timeout
            )
            self._registry.start(task.id)
            self._counts["turns"] += 1

    def _on_idle(self, event: Event) -> None:
        session_id = session_id_of(event)
        if session_id is not None:
            self._set(session_id, "idle")

    def _on_error(self, event: Event) -> None:
        session_id = event.get("stream_id")
        if isinstance(session_id, str) and session_id in self.statuses:
            self._set(session_id, "error")

    def _on_text(self, event: Event) -> None:
        session_id = session_id_of(event)
        text = event.get("payload", {}).get("text")
        if session_id is None or not isinstance(text, str):
            return
        if event.get("actor") == USER_ACTOR:
            self._remember(self._user_text, session_id, text[:MAX_TEXT_CHARS])
        elif event.get("actor") == AGENT_ACTOR:
            self._remember(self._assistant_text, session_id, text[-MAX_TEXT_CHARS:])

    def _remember(self, texts: OrderedDict[str, str], session_id: str, text: str) -> None:
        texts[session_id] = text
        texts.move_to_end(session_id)
        while len(texts) > self._max_sessions:
            texts.popitem(last=False)

    def _on_end(self, event: Event) -> None:
        if event.get("type") in PLUGIN_SHUTDOWN_TYPES:
            for known in list(self.statuses):
                self._forget(known)
            return
        ended = session_id_of(event)
        if ended is not None:
            self._forget(ended)

    def _forget(self, session_id: str) -> None:
        self.statuses.pop(session_id, None)
        self._assistant_text.pop(session_id, None)
        self._user_text.pop(session_id, None)

    # -- component ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = dict(self._counts)
        stats["sessions"] = len(self.statuses)
        stats["busy"] = sum(1 for s in self.statuses.values() if s == "busy")
        return stats

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        unsubscribes, self._unsubscribes = self._unsubscribes, []
        for unsubscribe in unsubscribes:
            unsubscribe()
        self.statuses.clear()
        self._assistant_text.clear()
        self._user_text.clear()


class RecorderHost:
    """The stream and the orchestration around one recording."""

    def __init__(self, config: RecordConfig) -> None:
        self.config = config
        self.stream = DurableStream(
            config.store,
            max_event_history=config.history,
            max_cache_size=config.cache,
            durability=config.durability,
        )
        try:
            self.orchestration = Orchestration(
                self.stream,
                os.path.dirname(os.path.abspath(config.store)),
                max_finished=1_000,
                session_ttl=3600.0,
                session_client=self._status_client,
            )
        except BaseException:
            self.stream.shutdown()
            raise
        self.orchestration.add(self.client.name, self.client)
        # The components under the names RecorderHost has always given them.
        self.memory_lane = self.orchestration.memory_lane
        self.registry = self.orchestration.registry
        self.tracker = self.orchestration.tracker
        self.extractor = self.orchestration.extractor
        self.ledger = self.orchestration.ledger
        self.checkpoints = self.orchestration.checkpoints
        self.observer = self.orchestration.observer
        self.stats = RecorderStats()

    def _status_client(self, registry: TaskRegistry) -> SessionStatusClient:
        # The orchestration's session client: built once its task registry exists.
        self.client = SessionStatusClient(
            self.stream, registry, task_timeout=self.config.task_timeout
        )
        return self.client

    def components(self) -> dict[str, Any]:
        """In shutdown order: the reference's, then the session tracker and the status client."""
        return self.orchestration.components()

    async def record(self) -> RecorderStats:
        self.orchestration.start()
        return await record(
            self.config.url,
            self.stream,
            global_events=self.config.global_events,
            max_reconnects=self.config.max_reconnects,
            stats=self.stats,
            backoff=self.config.backoff,
            **self.config.options,
        )

    async def shutdown(self) -> ShutdownReport:
        # The status client first: nothing should register turns while the others stop.
        self.client.shutdown()
        return await self.orchestration.shutdown_all()

    def summary(self) -> dict[str, Any]:
        """The recording's figures: recorder, bridge and stream counters, components."""
        stream_stats = self.stream.stats() if not self.stream.closed else {}
        return {
            "url": self.config.url,
            "recorder": self.stats.to_dict(),
            "bridge": self.stream.opencode_bridge.stats(),
            "stream": {k: v for k, v in stream_stats.items() if k != "bridge"},
            "pending_checkpoints": [c.id for c in self.stream.pending_checkpoints],
            "tasks": self.registry.stats(),
            "session_status": self.client.stats(),
        }


def status_line(host: RecorderHost) -> str:
    """The live one-line status: events, sessions, pending permissions, errors, RSS."""
    bridge = host.stream.opencode_bridge.stats()
    stats = host.stats
    state = "connected" if stats.connected else "reconnecting" if stats.reconnects else "connecting"
    errors = stats.bad_frames + stats.cut_streams + stats.http_errors + stats.connect_errors
    rss = psutil.Process().memory_info().rss / 2**20
    return (
        f"{state}: {bridge['received']:,} events ({bridge['stored']:,} stored, "
        f"{bridge['duplicates']:,} duplicates, {bridge['bad_input'] + stats.bad_frames:,} bad)  "
        f"sessions {bridge['sessions']:,}  pending permissions "
        f"{len(host.stream.pending_checkpoints):,}  reconnects {stats.reconnects:,}  "
        f"errors {errors:,}  RSS {rss:,.1f} MiB"
    )


async def run_recorder(
    config: RecordConfig, *, status: Optional[TextIO] = None
) -> tuple[int, dict[str, Any]]:
    """Record until the server is gone (``max_reconnects``) or a signal; return the exit status
    (0, or 128 + the signal number) and the summary. ``RecorderError`` and store errors
    propagate after everything was shut down."""
    host = RecorderHost(config)
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(host.record())
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if not received:
            log.warning("%s: stopping the recorder", signal.Signals(signum).name)
            received.append(signum)
            task.cancel()

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):
            log.debug("cannot handle %s here", signum)
    ticker = asyncio.ensure_future(_show_status(host, status)) if status is not None else None
    error: Optional[BaseException] = None
    try:
        await task
    except asyncio.CancelledError:
        if not received:
            raise
    except Exception as raised:  # RecorderError, store errors: reported after the shutdown
        error = raised
    finally:
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            if status is not None:
                status.write("\r" + status_line(host) + "\n")
                status.flush()
        summary = host.summary()
        started = time.perf_counter()
        report = await host.shutdown()
        summary["shutdown"] = {s.name: s.outcome for s in report.steps}
        summary["shutdown_seconds"] = round(time.perf_counter() - started, 3)
        for signum in installed:
            loop.remove_signal_handler(signum)
    if error is not None:
        raise error
    return (128 + received[0] if received else 0), summary


async def _show_status(host: RecorderHost, out: TextIO) -> None:
    while True:
        out.write("\r" + status_line(host) + " ")
        out.flush()
        await asyncio.sleep(STATUS_INTERVAL)


def wants_live_status(stream: TextIO = sys.stderr) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
