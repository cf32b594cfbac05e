"""The soak run: a simulated long-running agent host on the real stream and orchestrator.

Sessions are created, go idle and are deleted (``sessions`` of them live at any time); each
session registers and finishes tasks, streams text deltas, makes tool calls (through the
OpenCode bridge), requests checkpoints that are approved, rejected or left to expire, spawns and
completes agents, and gets learnings captured from its transcript. Every event goes through
``DurableStream`` and its subscribers (session tracker, learning extractor, ledger); learnings are
stored in a ``MemoryLaneStore``.

The memory-bound promise is checked on every run: the process RSS must not grow by more than
``MAX_RSS_GROWTH`` between 20% and 100% of the run.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import psutil

from opencode_addons import component_registry
from opencode_addons.durable_stream import DurableStream
from opencode_addons.events import SYSTEM_ACTOR, TEXT_DELTA, TEXT_SNAPSHOT
from opencode_addons.memory_lane import MemoryLaneStore
from opencode_addons.orchestrator.checkpoints import CheckpointManager
from opencode_addons.orchestrator.learning import LearningExtractor
from opencode_addons.orchestrator.ledger import EventDrivenLedger
from opencode_addons.orchestrator.observer import InMemorySessionClient, TaskObserver
from opencode_addons.orchestrator.sessions import SessionStateTracker
from opencode_addons.orchestrator.task_registry import TaskRegistry
from opencode_addons.shutdown import ShutdownReport, shutdown_all

log = logging.getLogger(__name__)

MAX_RSS_GROWTH = 0.05
CHECK_FROM = 0.20
SAMPLES = 200
STORE_FILE = "events.jsonl"
MEMORY_LANE_FILE = "memory_lane.sqlite"
LEDGER_FILE = "LEDGER.md"

# Shape of one session's life.
TURNS_PER_SESSION = 12
DELTAS_PER_TURN = 24
CHECKPOINT_EVERY = 3
INTENT_EVERY = 5
USER_MESSAGE_EVERY = 4
EXPIRING_CHECKPOINT_TIMEOUT = 0.001

_WORDS = (
    "the parser reads each line and keeps the newest records in a bounded ring so memory "
    "stays flat while the agent edits files runs tests and reports progress to the user"
).split()
_USER_MESSAGES = (
    "actually, use the async client instead",
    "thanks, that works now",
    "no, keep the old signature",
    "perfect, ship it",
)
_TOOLS = ("read", "edit", "bash", "grep", "write")


@dataclass
class SoakConfig:
    """What to simulate; ``directory`` None means a temporary one, removed afterwards."""

    events: int = 1_000_000
    sessions: int = 200
    directory: Optional[str] = None
    durability: str = "flush"
    history: int = 100_000
    cache: int = 50_000
    seed: int = 7
    compress_history: bool = False


@dataclass
class Sample:
    """One point of the memory curve."""

    events: int
    seconds: float
    rss: int
    history: int


@dataclass
class Progress:
    """What the progress bar shows."""

    events: int
    total: int
    seconds: float
    rss: int


@dataclass
class SoakResult:
    """Figures of one soak run (``to_dict`` is what ``--json`` prints)."""

    config: SoakConfig
    events: int
    seconds: float
    rss_start: int
    rss_at_10pct: int
    rss_at_20pct: int
    rss_end: int
    rss_peak: int
    history_events: int
    cache_events: int
    bytes_held: int
    # Memory the held events take: ``bytes_held`` unless ``compress_history``.
    bytes_stored: int
    file_bytes: int
    shutdown_seconds: float
    shutdown_ok: bool
    components: dict[str, dict[str, Any]]
    samples: list[Sample] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def rss_growth(self) -> float:
        """Relative RSS growth between 20% and 100% of the run."""
        if self.rss_at_20pct <= 0:
            return 0.0
        return (self.rss_end - self.rss_at_20pct) / self.rss_at_20pct

    @property
    def memory_ok(self) -> bool:
        return self.rss_growth <= MAX_RSS_GROWTH

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["events_per_second"] = round(self.events_per_second, 1)
        data["rss_growth"] = round(self.rss_growth, 5)
        data["max_rss_growth"] = MAX_RSS_GROWTH
        data["memory_ok"] = self.memory_ok
        data["memory_check"] = check_description()
        return data


def check_description() -> str:
    return (
        f"RSS growth between {CHECK_FROM:.0%} and 100% of the run must be <= {MAX_RSS_GROWTH:.0%}"
    )


def current_rss() -> int:
    return int(psutil.Process().memory_info().rss)


# -- the simulated host ---------------------------------------------------------------------


@dataclass
class _Session:
    """One live simulated session and its precomputed events."""

    id: str
    deltas: list[dict[str, Any]]
    turn: int = 0
    task_id: Optional[str] = None
    checkpoint_id: Optional[str] = None
    tool_calls: int = 0


class _Host:
    """Drives the components like an agent host would, one session turn at a time."""

    def __init__(self, config: SoakConfig, directory: str) -> None:
        self.rng = random.Random(config.seed)
        self.stream = DurableStream(
            os.path.join(directory, STORE_FILE),
            max_event_history=config.history,
            max_cache_size=config.cache,
            durability=config.durability,
            compress_history=config.compress_history,
        )
        self.memory_lane = MemoryLaneStore(os.path.join(directory, MEMORY_LANE_FILE))
        self.registry = TaskRegistry(self.stream, max_finished=1_000)
        self.tracker = SessionStateTracker(self.stream, ttl=600.0)
        self.tracker.on_drop(self._forget_tasks_of)
        self.extractor = LearningExtractor(
            self.stream, memory_lane=self.memory_lane, capture_delay=0.0
        ).attach()
        self.ledger = EventDrivenLedger(self.stream, os.path.join(directory, LEDGER_FILE))
        # The host's sessions as the observer sees them: busy during a turn, idle after it.
        self.client = InMemorySessionClient()
        self.checkpoints = CheckpointManager(self.stream)
        self.observer = TaskObserver(
            self.registry,
            self.client,
            checkpoints=self.checkpoints,
            stream=self.stream,
            base_interval=0.05,
            max_interval=0.5,
        )
        for name, component in self.components().items():
            component_registry.register_component(name, component)
        self._ids = itertools.count(1)
        self._texts = [" ".join(self.rng.sample(_WORDS, 6)) + " " for _ in range(64)]
        self.slots = [self._new_session() for _ in range(config.sessions)]

    def _forget_tasks_of(self, session_id: str, _reason: str) -> None:
        self.registry.remove_session(session_id)

    @property
    def events(self) -> int:
        return int(self.stream.stats()["next_seq"] or 1) - 1

    def components(self) -> dict[str, Any]:
        """The components in shutdown order (the tracker, not in the reference order, last)."""
        return {
            "task_observer": self.observer,
            "task_registry": self.registry,
            "checkpoint_manager": self.checkpoints,
            "learning_extractor": self.extractor,
            "event_driven_ledger": self.ledger,
            "durable_stream": self.stream,
            "memory_lane_store": self.memory_lane,
            "session_state_tracker": self.tracker,
        }

    def _new_session(self) -> _Session:
        session_id = f"ses_{next(self._ids):07d}"
        message_id = f"msg_{session_id}"
        deltas = [
            {
                "type": TEXT_DELTA,
                "stream_id": session_id,
                "actor": SYSTEM_ACTOR,
                "correlation_id": self.stream.run_id,
                "payload": {
                    "sessionID": session_id,
                    "messageID": message_id,
                    "part_id": f"prt_{session_id}",
                    "delta": text,
                },
            }
            for text in self.rng.sample(self._texts, DELTAS_PER_TURN)
        ]
        self.stream.bridge(
            {
                "type": "session.created",
                "properties": {"info": {"id": session_id, "title": "soak session"}},
            }
        )
        return _Session(session_id, deltas)

    def turn(self, slot: int) -> None:
        """One turn of the session in ``slot``: task, deltas, tool call, checkpoints, idle."""
        session = self.slots[slot]
        session.turn += 1
        self.client.set_status(session.id, "busy")
        self._task_step(session)
        self.stream.extend(session.deltas)
        self._tool_call(session)
        self._message(session)
        if session.turn % CHECKPOINT_EVERY == 0:
            self._checkpoint_step(session)
        if session.turn % INTENT_EVERY == 0:
            self._intent_step(session)
        self.stream.bridge({"type": "session.idle", "properties": {"sessionID": session.id}})
        self.client.set_status(session.id, "idle")
        if session.turn >= TURNS_PER_SESSION:
            self._end_session(slot)

    def _task_step(self, session: _Session) -> None:
        self._finish_task(session, failed=self.rng.random() >= 0.9)
        task = self.registry.register(session_id=session.id, description="implement the change")
        self.registry.start(task.id)
        session.task_id = task.id

    def _finish_task(self, session: _Session, *, failed: bool = False) -> None:
        # The observer may have completed it already (the session went idle between turns).
        task = self.registry.get(session.task_id) if session.task_id is not None else None
        if task is not None and task.is_active:
            if failed:
                self.registry.fail(task.id, "tests failed")
            else:
                self.registry.complete(task.id, result="done")
        session.task_id = None

    def _tool_call(self, session: _Session) -> None:
        session.tool_calls += 1
        part = {
            "id": f"prt_tool_{session.tool_calls}",
            "sessionID": session.id,
            "messageID": f"msg_{session.id}",
            "type": "tool",
            "callID": f"call_{session.tool_calls}",
            "tool": _TOOLS[session.tool_calls % len(_TOOLS)],
            "state": {"status": "running", "input": {"path": "src/app.py"}},
        }
        self.stream.bridge({"type": "message.part.updated", "properties": {"part": part}})
        part["state"] = {"status": "completed", "output": "ok", "title": "done"}
        self.stream.bridge({"type": "message.part.updated", "properties": {"part": part}})

    def _message(self, session: _Session) -> None:
        if session.turn % USER_MESSAGE_EVERY == 0:
            text = _USER_MESSAGES[session.turn // USER_MESSAGE_EVERY % len(_USER_MESSAGES)]
            role, actor = "user", "user"
        else:
            text, role, actor = self._texts[session.turn % len(self._texts)], "assistant", "agent"
        self.stream.append(
            {
                "type": TEXT_SNAPSHOT,
                "stream_id": session.id,
                "actor": actor,
                "payload": {
                    "sessionID": session.id,
                    "messageID": f"msg_{session.id}_{session.turn}",
                    "role": role,
                    "text": text,
                },
            }
        )

    def _checkpoint_step(self, session: _Session) -> None:
        """Resolve the previous checkpoint, then request a new one (a third of them expire)."""
        self._resolve_checkpoint(session)
        expiring = self.rng.random() < 1 / 3
        # Half go through the awaitable CheckpointManager, half straight to the stream.
        if self.rng.random() < 0.5:
            checkpoint: Any = self.checkpoints.request(
                session.id,
                "apply the migration?",
                ["yes", "no"],
                "agent",
                timeout=EXPIRING_CHECKPOINT_TIMEOUT if expiring else 300.0,
            )
        else:
            checkpoint = self.stream.request_checkpoint(
                session.id,
                "apply the migration?",
                ["yes", "no"],
                "agent",
                timeout=EXPIRING_CHECKPOINT_TIMEOUT if expiring else 300.0,
            )
        session.checkpoint_id = None if expiring else checkpoint.id

    def _resolve_checkpoint(self, session: _Session, reason: str = "not now") -> None:
        if session.checkpoint_id is None:
            return
        if self.rng.random() < 0.7:
            self.stream.approve_checkpoint(session.checkpoint_id, "user", "yes")
        else:
            self.stream.reject_checkpoint(session.checkpoint_id, "user", reason)
        session.checkpoint_id = None

    def _intent_step(self, session: _Session) -> None:
        intent = self.stream.create_intent(
            {"session_id": session.id, "agent": "reviewer", "description": "review the diff"}
        )
        self.stream.complete_intent(intent.id, result="approved with comments")

    def _end_session(self, slot: int) -> None:
        session = self.slots[slot]
        self._finish_task(session)
        self._resolve_checkpoint(session, reason="session ended")
        self.stream.delete_session(session.id, reason="finished")
        self.client.statuses.pop(session.id, None)
        self.slots[slot] = self._new_session()

    def component_stats(self) -> dict[str, dict[str, Any]]:
        stats = {name: _stats_of(component) for name, component in self.components().items()}
        stats["health"] = _health_report(self.stream, self.tracker)
        return stats

    def unregister(self) -> None:
        for name, component in self.components().items():
            component_registry.unregister(name, component)


def _stats_of(component: Any) -> dict[str, Any]:
    try:
        return dict(component.stats())
    except Exception as error:  # a component that cannot report must not hide the others
        log.warning("stats of %r failed: %s", component, error)
        return {"error": str(error)}


def _health_report(stream: DurableStream, tracker: SessionStateTracker) -> dict[str, Any]:
    try:
        from opencode_addons.health import health
    except ImportError:
        return {}
    try:
        return dict(health(stream, session_tracker=tracker))
    except Exception as error:
        log.warning("health report failed: %s", error)
        return {"error": str(error)}


# -- the run ---------------------------------------------------------------------------------


class _Recorder:
    """Memory samples at fixed fractions of the run, plus the peak."""

    def __init__(self, total: int, started: float) -> None:
        self.total = total
        self.started = started
        self.samples: list[Sample] = []
        self.step = max(1, total // SAMPLES)
        self.next_at = 0
        self.peak = 0

    def maybe_sample(self, events: int, history: Callable[[], int]) -> None:
        if events < self.next_at:
            return
        rss = current_rss()
        self.peak = max(self.peak, rss)
        self.samples.append(Sample(events, time.perf_counter() - self.started, rss, history()))
        self.next_at = (events // self.step + 1) * self.step

    def rss_at(self, fraction: float) -> int:
        target = self.total * fraction
        candidates = [s for s in self.samples if s.events >= target]
        chosen = candidates[0] if candidates else self.samples[-1]
        return chosen.rss


ProgressCallback = Callable[[Progress], None]


async def _drive(
    host: _Host, config: SoakConfig, on_progress: Optional[ProgressCallback]
) -> tuple[_Recorder, float]:
    started = time.perf_counter()
    recorder = _Recorder(config.events, started)
    history = lambda: len(host.stream.get_event_history())  # noqa: E731
    recorder.maybe_sample(0, history)
    next_report = started
    slot = 0
    events = host.events
    base = events
    while events - base < config.events:
        host.turn(slot)
        slot = (slot + 1) % len(host.slots)
        # Let timers run: learning captures, checkpoint expiry, ledger writes, cleanups.
        await asyncio.sleep(0)
        events = host.events
        recorder.maybe_sample(events - base, history)
        now = time.perf_counter()
        if on_progress is not None and now >= next_report:
            next_report = now + 0.2
            on_progress(Progress(events - base, config.events, now - started, current_rss()))
    seconds = time.perf_counter() - started
    recorder.maybe_sample(config.events, history)
    if on_progress is not None:
        on_progress(Progress(events - base, config.events, seconds, current_rss()))
    return recorder, seconds


async def _soak(config: SoakConfig, directory: str, on_progress: Optional[ProgressCallback]) -> Any:
    rss_start = current_rss()
    host = _Host(config, directory)
    host.observer.start()
    base = host.events
    recorder, seconds = await _drive(host, config, on_progress)
    events = host.events - base
    stream_stats = host.stream.stats()
    components = host.component_stats()
    rss_end = current_rss()
    shutdown_started = time.perf_counter()
    try:
        report: ShutdownReport = await shutdown_all(components=host.components())
    finally:
        host.unregister()
    shutdown_seconds = time.perf_counter() - shutdown_started
    components["shutdown"] = {s.name: s.outcome for s in report.steps}
    return SoakResult(
        config=config,
        events=events,
        seconds=seconds,
        rss_start=rss_start,
        rss_at_10pct=recorder.rss_at(0.10),
        rss_at_20pct=recorder.rss_at(CHECK_FROM),
        rss_end=rss_end,
        rss_peak=max(recorder.peak, rss_end),
        history_events=int(stream_stats["history_events"]),
        cache_events=int(stream_stats["cache_events"]),
        bytes_held=int(stream_stats["history_bytes"]),
        bytes_stored=int(stream_stats["history_stored_bytes"]),
        file_bytes=int(stream_stats["file_bytes"]),
        shutdown_seconds=shutdown_seconds,
        shutdown_ok=report.ok,
        components=components,
        samples=recorder.samples,
    )


def run_soak(config: SoakConfig, on_progress: Optional[ProgressCallback] = None) -> SoakResult:
    """Run the simulation; the temporary directory (if any) is removed afterwards."""
    if config.events < 1 or config.sessions < 1:
        raise ValueError("events and sessions must be at least 1")
    if config.directory is not None:
        os.makedirs(config.directory, exist_ok=True)
        return asyncio.run(_soak(config, config.directory, on_progress))
    directory = tempfile.mkdtemp(prefix="opencode-addons-soak-")
    try:
        return asyncio.run(_soak(config, directory, on_progress))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- the plot --------------------------------------------------------------------------------


class PlotUnavailableError(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailableError(
            "--plot needs matplotlib: pip install 'opencode-addons[plot]'"
        ) from None


def write_plot(result: SoakResult, path: str) -> None:
    """A PNG of RSS and history size against events."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    events = [s.events for s in result.samples]
    figure, rss_axis = pyplot.subplots(figsize=(9, 4.5))
    rss_axis.plot(events, [s.rss / 2**20 for s in result.samples], color="tab:blue")
    rss_axis.set_xlabel("events")
    rss_axis.set_ylabel("RSS (MiB)", color="tab:blue")
    history_axis = rss_axis.twinx()
    history_axis.plot(events, [s.history for s in result.samples], color="tab:orange")
    history_axis.set_ylabel("history events", color="tab:orange")
    rss_axis.axvline(result.config.events * CHECK_FROM, color="grey", linestyle=":")
    rss_axis.set_title(f"opencode-addons soak: {result.events:,} events")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
