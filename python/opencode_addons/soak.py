"""The soak run: a simulated long-running agent host on the real stream and orchestrator.

Sessions are created, go idle and are deleted (``sessions`` of them live at any time). The
simulated agent host speaks today's OpenCode protocol through the bridge (``_ServerEvents``:
events shaped as ``packages/sdk/js/src/v2/gen/types.gen.ts`` describes them, with ``evt_`` ids):
each turn a user message, ``session.status`` busy, an assistant message whose text streams as
``message.part.delta``, a tool call pending -> running -> completed, permissions asked and
replied (some left pending until the session is deleted), the assistant message completing and
the session going idle. Around it the host registers and finishes tasks, requests checkpoints
that are approved, rejected or left to expire, spawns and completes agents, and gets learnings
captured from its transcript. Every event goes through ``DurableStream`` and its subscribers
(session tracker, learning extractor, ledger, checkpoint manager); learnings are stored in a
``MemoryLaneStore``.

The memory-bound promise is checked on every run: once every bounded structure is full (the
stream's history and cache, the task registry's finished tasks, the ledger's tables, the ended
sessions the bridge and the session tracker remember, the bridge's dedup window, and the store's
disk budget reached so segments are being dropped), the process RSS must not grow by more
than ``MAX_RSS_GROWTH`` to the end of the run. A run too short to fill them says so and checks
nothing. The disk is checked the same way: the store's files must never exceed the budget
(``max_disk_bytes``) by more than one segment.
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

from opencode_addons.bridge import MAX_ENDED_SESSIONS
from opencode_addons.durable_stream import DurableStream
from opencode_addons.orchestrator.host import MAX_FINISHED_TASKS, Orchestration
from opencode_addons.orchestrator.observer import InMemorySessionClient
from opencode_addons.orchestrator.sessions import SessionStateTracker
from opencode_addons.shutdown import ShutdownReport

log = logging.getLogger(__name__)

MAX_RSS_GROWTH = 0.05
# Kept for the 10%/20% figures of the report; the check itself starts once everything is full.
CHECK_FROM = 0.20
# The soak's store: small segments and a small budget, so a default run rotates and drops.
SOAK_SEGMENT_BYTES = 8 << 20
SOAK_DISK_BYTES = 64 << 20
# The memory lane's cap in the soak: small enough that it fills (and starts pruning) about when
# the history does, so the memory check covers its steady state too; with the default 100,000
# it fills only after about 5,000,000 events, its SQLite page cache growing until then.
MEMORY_LANE_ITEMS = 2_000
SAMPLES = 200
STORE_FILE = "events.jsonl"

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


def ended_sessions_remembered(sessions: int) -> int:
    """The session tracker's memory of ended sessions in the soak: two generations of its
    concurrent sessions (late events of a session come within a turn or two of its end), so it
    fills within the run instead of after 4,096 sessions."""
    return max(64, 2 * sessions)


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
    max_segment_bytes: int = SOAK_SEGMENT_BYTES
    max_disk_bytes: Optional[int] = SOAK_DISK_BYTES
    compress_history: bool = False


@dataclass
class Sample:
    """One point of the memory curve."""

    events: int
    seconds: float
    rss: int
    history: int
    # Bytes of the store's files on disk, and whether every bounded structure was full.
    disk: int = 0
    full: bool = False


@dataclass
class Progress:
    """What the progress bar shows."""

    events: int
    total: int
    seconds: float
    rss: int
    disk: int = 0


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
    # The first sample at which every bounded structure was full (None: never, in this run),
    # and what was still filling at the end if so.
    full_at_events: Optional[int] = None
    rss_at_full: int = 0
    filling: list[str] = field(default_factory=list)
    disk_bytes_end: int = 0
    disk_bytes_peak: int = 0
    segments_dropped: int = 0
    events_dropped: int = 0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def memory_checked(self) -> bool:
        """Whether everything was full early enough to measure growth from there."""
        return self.full_at_events is not None and self.rss_at_full > 0

    @property
    def rss_growth(self) -> float:
        """Relative RSS growth from the moment everything was full to the end (the worst of the
        later samples and the end)."""
        if not self.memory_checked:
            return 0.0
        later = [s.rss for s in self.samples if s.events >= (self.full_at_events or 0)]
        worst = max([*later, self.rss_end])
        return (worst - self.rss_at_full) / self.rss_at_full

    @property
    def memory_ok(self) -> bool:
        return self.rss_growth <= MAX_RSS_GROWTH

    @property
    def disk_limit(self) -> Optional[int]:
        """The most the store's files may take: the budget plus one segment (None: unbounded)."""
        budget = self.config.max_disk_bytes
        return None if budget is None else budget + self.config.max_segment_bytes

    @property
    def disk_ok(self) -> bool:
        limit = self.disk_limit
        return limit is None or self.disk_bytes_peak <= limit

    @property
    def ok(self) -> bool:
        return self.memory_ok and self.disk_ok

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["events_per_second"] = round(self.events_per_second, 1)
        data["rss_growth"] = round(self.rss_growth, 5)
        data["max_rss_growth"] = MAX_RSS_GROWTH
        data["memory_checked"] = self.memory_checked
        data["memory_ok"] = self.memory_ok
        data["memory_check"] = check_description()
        data["disk_limit"] = self.disk_limit
        data["disk_ok"] = self.disk_ok
        data["ok"] = self.ok
        return data


def check_description() -> str:
    return (
        "once the history, cache, task registry, ledger, memory lane, the memories of ended "
        "sessions and the disk budget are all full, RSS must not grow by more than "
        f"{MAX_RSS_GROWTH:.0%} to the end of the run; the store's files must never exceed the "
        "disk budget plus one segment"
    )


def current_rss() -> int:
    return int(psutil.Process().memory_info().rss)


# -- the simulated host ---------------------------------------------------------------------


class _ServerEvents:
    """A simulated OpenCode server: today's event shapes (v2 SDK types), ascending ``evt_`` ids."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):012x}AAAAAAAAAAAAAA"

    def event(self, event_type: str, properties: dict[str, Any]) -> dict[str, Any]:
        return {"id": self._id("evt"), "type": event_type, "properties": properties}

    def new_id(self, prefix: str) -> str:
        return self._id(prefix)

    def session(self, event_type: str, session_id: str) -> dict[str, Any]:
        now = int(time.time() * 1000)
        info = {
            "id": session_id,
            "slug": "soak",
            "projectID": "soak",
            "directory": "/soak",
            "title": "soak session",
            "version": "soak",
            "time": {"created": now, "updated": now},
        }
        return self.event(event_type, {"sessionID": session_id, "info": info})

    def status(self, session_id: str, status: str) -> dict[str, Any]:
        return self.event("session.status", {"sessionID": session_id, "status": {"type": status}})

    def message(
        self, session_id: str, message_id: str, role: str, completed: bool = False
    ) -> dict[str, Any]:
        now = int(time.time() * 1000)
        info: dict[str, Any] = {"id": message_id, "sessionID": session_id, "role": role}
        if role == "user":
            info.update(time={"created": now}, agent="build", model=_MODEL)
        else:
            info.update(
                time={"created": now, "completed": now} if completed else {"created": now},
                parentID=message_id,
                modelID=_MODEL["modelID"],
                providerID=_MODEL["providerID"],
                mode="build",
                agent="build",
                path={"cwd": "/soak", "root": "/soak"},
                cost=0.001 if completed else 0,
                tokens=_TOKENS,
            )
        return self.event("message.updated", {"sessionID": session_id, "info": info})

    def part(self, part: dict[str, Any]) -> dict[str, Any]:
        properties = {"sessionID": part["sessionID"], "part": part, "time": 0}
        return self.event("message.part.updated", properties)

    def delta(self, part: dict[str, Any], text: str) -> dict[str, Any]:
        properties = {
            "sessionID": part["sessionID"],
            "messageID": part["messageID"],
            "partID": part["id"],
            "field": "text",
            "delta": text,
        }
        return self.event("message.part.delta", properties)


_MODEL = {"providerID": "anthropic", "modelID": "claude-sonnet-4-5"}
_TOKENS = {"input": 900, "output": 120, "reasoning": 0, "cache": {"read": 0, "write": 0}}
_REPLIES = ("once", "always", "reject")


@dataclass
class _Session:
    """One live simulated session and its precomputed delta texts."""

    id: str
    deltas: list[str]
    turn: int = 0
    task_id: Optional[str] = None
    checkpoint_id: Optional[str] = None
    permission_id: Optional[str] = None
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
            max_segment_bytes=config.max_segment_bytes,
            max_disk_bytes=config.max_disk_bytes,
            compress_history=config.compress_history,
        )
        # The host's sessions as the observer sees them: busy during a turn, idle after it.
        self.client = InMemorySessionClient()
        self.orchestration = Orchestration(
            self.stream,
            directory,
            max_finished=MAX_FINISHED_TASKS,
            session_ttl=600.0,
            capture_delay=0.0,
            session_client=lambda _registry: self.client,
            observer_interval=(0.05, 0.5),
            memory_lane_items=MEMORY_LANE_ITEMS,
            max_ended_sessions=ended_sessions_remembered(config.sessions),
        )
        self.orchestration.register()
        self.registry = self.orchestration.registry
        self.server = _ServerEvents()
        self._texts = [" ".join(self.rng.sample(_WORDS, 6)) + " " for _ in range(64)]
        self.slots = [self._new_session() for _ in range(config.sessions)]

    @property
    def events(self) -> int:
        return int(self.stream.stats()["next_seq"] or 1) - 1

    def _new_session(self) -> _Session:
        session_id = self.server.new_id("ses")
        self.stream.bridge(self.server.session("session.created", session_id))
        return _Session(session_id, self.rng.sample(self._texts, DELTAS_PER_TURN))

    def turn(self, slot: int) -> None:
        """One turn of the session in ``slot``: the user's prompt, the session busy, a task,
        the assistant's streamed answer and tool call, permissions, checkpoints, idle."""
        session = self.slots[slot]
        session.turn += 1
        bridge, server = self.stream.bridge, self.server
        self._user_prompt(session)
        bridge(server.status(session.id, "busy"))
        self.client.set_status(session.id, "busy")
        self._task_step(session)
        assistant = server.new_id("msg")
        bridge(server.message(session.id, assistant, "assistant"))
        self._answer(session, assistant)
        self._tool_call(session, assistant)
        if session.turn % CHECKPOINT_EVERY == 0:
            self._permission_step(session, assistant)
            self._checkpoint_step(session)
        if session.turn % INTENT_EVERY == 0:
            self._intent_step(session)
        bridge(server.message(session.id, assistant, "assistant", completed=True))
        bridge(server.status(session.id, "idle"))
        bridge(server.event("session.idle", {"sessionID": session.id}))
        self.client.set_status(session.id, "idle")
        if session.turn >= TURNS_PER_SESSION:
            self._end_session(slot)

    def _user_prompt(self, session: _Session) -> None:
        if session.turn % USER_MESSAGE_EVERY == 0:
            text = _USER_MESSAGES[session.turn // USER_MESSAGE_EVERY % len(_USER_MESSAGES)]
        else:
            text = "continue with the next step"
        message_id = self.server.new_id("msg")
        self.stream.bridge(self.server.message(session.id, message_id, "user"))
        part = {
            "id": self.server.new_id("prt"),
            "sessionID": session.id,
            "messageID": message_id,
            "type": "text",
            "text": text,
        }
        self.stream.bridge(self.server.part(part))

    def _answer(self, session: _Session, message_id: str) -> None:
        """A text part started empty, streamed as message.part.delta, then ended."""
        started = int(time.time() * 1000)
        part = {
            "id": self.server.new_id("prt"),
            "sessionID": session.id,
            "messageID": message_id,
            "type": "text",
            "text": "",
            "time": {"start": started},
        }
        bridge, delta = self.stream.bridge, self.server.delta
        bridge(self.server.part(part))
        for text in session.deltas:
            bridge(delta(part, text))
        ended = {"start": started, "end": started + 1}
        bridge(self.server.part({**part, "text": "".join(session.deltas), "time": ended}))

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

    def _tool_call(self, session: _Session, message_id: str) -> None:
        """A tool part: pending (input unknown), running, completed."""
        session.tool_calls += 1
        tool = {
            "id": self.server.new_id("prt"),
            "sessionID": session.id,
            "messageID": message_id,
            "type": "tool",
            "callID": f"call_{session.tool_calls}",
            "tool": _TOOLS[session.tool_calls % len(_TOOLS)],
        }
        tool_input = {"filePath": "src/app.py"}
        started = int(time.time() * 1000)
        bridge, part = self.stream.bridge, self.server.part
        bridge(part({**tool, "state": {"status": "pending", "input": {}, "raw": ""}}))
        running = {"status": "running", "input": tool_input, "time": {"start": started}}
        bridge(part({**tool, "state": running}))
        completed = {
            "status": "completed",
            "input": tool_input,
            "output": "ok",
            "title": "src/app.py",
            "metadata": {"exit": 0},
            "time": {"start": started, "end": started + 1},
        }
        bridge(part({**tool, "state": completed}))

    def _permission_step(self, session: _Session, message_id: str) -> None:
        """Reply to the previous permission (once, always or reject), ask a new one; the one
        asked in a session's last turns stays pending until the session is deleted."""
        bridge, server = self.stream.bridge, self.server
        if session.permission_id is not None:
            reply = _REPLIES[self.rng.randrange(len(_REPLIES))]
            properties = {"sessionID": session.id, "requestID": session.permission_id}
            bridge(server.event("permission.replied", {**properties, "reply": reply}))
        session.permission_id = server.new_id("per")
        asked = {
            "id": session.permission_id,
            "sessionID": session.id,
            "permission": "bash",
            "patterns": ["git push"],
            "metadata": {"command": "git push"},
            "always": ["git *"],
            "tool": {"messageID": message_id, "callID": f"call_{session.tool_calls}"},
        }
        bridge(server.event("permission.asked", asked))

    def _checkpoint_step(self, session: _Session) -> None:
        """Resolve the previous checkpoint, then request a new one (a third of them expire)."""
        self._resolve_checkpoint(session)
        expiring = self.rng.random() < 1 / 3
        # Half go through the awaitable CheckpointManager, half straight to the stream.
        if self.rng.random() < 0.5:
            checkpoint: Any = self.orchestration.checkpoints.request(
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
        # session.deleted drops what is left of the session, its pending permission included.
        self.stream.bridge(self.server.session("session.deleted", session.id))
        self.client.statuses.pop(session.id, None)
        self.slots[slot] = self._new_session()

    def component_stats(self) -> dict[str, dict[str, Any]]:
        components = self.orchestration.components()
        stats = {name: _stats_of(component) for name, component in components.items()}
        stats["health"] = _health_report(self.stream, self.orchestration.tracker)
        return stats


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


def store_disk_bytes(store_path: str) -> int:
    """Bytes of the store's files on disk: the active segment and every sealed one."""
    directory, name = os.path.split(store_path)
    stem = name[: -len(".jsonl")] if name.endswith(".jsonl") else name
    total = 0
    try:
        entries = list(os.scandir(directory or "."))
    except OSError:
        return 0
    for entry in entries:
        if entry.name == name or (entry.name.startswith(stem + "_") and ".jsonl" in entry.name):
            try:
                total += entry.stat().st_size
            except OSError:
                pass  # deleted by retention meanwhile
    return total


def still_filling(host: _Host, config: SoakConfig) -> list[str]:
    """The bounded structures not at their cap yet (empty once everything is full)."""
    stream = host.stream.stats()
    filling = [
        f"{what} {count:,}/{cap:,}"
        for what, count, cap in _bounded_sizes(host, config, stream)
        if count < cap
    ]
    lane = host.orchestration.memory_lane
    if not lane.pruned:
        filling.append(f"memory lane {lane.stats().get('count', 0):,}/{lane.max_items:,}")
    if config.max_disk_bytes is not None and not stream.get("segments_dropped"):
        filling.append("disk budget (no segment dropped yet)")
    return filling


def _bounded_sizes(
    host: _Host, config: SoakConfig, stream: dict[str, Any]
) -> list[tuple[str, int, int]]:
    """(what, size, cap) of every bounded structure whose size the components report (``stream``:
    the stream's stats).

    The memories of ended sessions fill last: the first sessions end after about 120,000 events,
    then one ends every ~600, so the bridge's 1,024 take about 750,000 events (the tracker's
    default 4,096 would take 2.5 million). Until they were counted here the soak called itself
    full at 200,000 events, and the heap these tables grew by afterwards (malloc's in-use bytes
    7.2 -> 8.7 MiB by 2 million events, with the tracker's default) was charged to the check as
    growth.
    """
    registry = host.registry.stats()
    book = host.orchestration.ledger
    ledger = book.stats()
    bridge = host.stream.opencode_bridge
    bridge_stats = bridge.stats()
    tracker = host.orchestration.tracker
    finished = int(registry.get("total", 0)) - int(registry.get("active", 0))
    sizes = [
        ("history", stream.get("history_events", 0), config.history),
        ("cache", stream.get("cache_events", 0), config.cache),
        ("task registry finished tasks", finished, MAX_FINISHED_TASKS),
        ("bridge ended sessions", bridge_stats["ended_sessions"], MAX_ENDED_SESSIONS),
        ("bridge dedup window", bridge_stats["dedup_window"], bridge.dedup_window_size),
        ("tracker ended sessions", tracker.stats()["recently_ended"], tracker.max_ended),
    ]
    sizes += [
        (f"ledger {key}", ledger.get(key, 0), cap)
        for key, cap in (
            ("lineage", book.max_lineage),
            ("epics", book.max_epics),
            ("archive", book.archive.maxlen or 0),
            ("learnings", book.learnings.maxlen or 0),
            ("decisions", book.decisions.maxlen or 0),
        )
    ]
    return [(what, int(count), int(cap)) for what, count, cap in sizes]


class _Recorder:
    """Memory and disk samples at fixed fractions of the run, plus the peaks."""

    def __init__(self, total: int, started: float, host: _Host, config: SoakConfig) -> None:
        self.total = total
        self.started = started
        self.host = host
        self.config = config
        self.samples: list[Sample] = []
        self.step = max(1, total // SAMPLES)
        self.next_at = 0
        self.peak = 0
        self.disk_peak = 0
        self.full_at: Optional[Sample] = None
        self.filling: list[str] = []

    def maybe_sample(self, events: int, history: Callable[[], int]) -> None:
        if events < self.next_at:
            return
        rss = current_rss()
        self.peak = max(self.peak, rss)
        disk = store_disk_bytes(self.host.stream.path)
        self.disk_peak = max(self.disk_peak, disk)
        if self.full_at is None:
            self.filling = still_filling(self.host, self.config)
        full = self.full_at is not None or not self.filling
        sample = Sample(events, time.perf_counter() - self.started, rss, history(), disk, full)
        if full and self.full_at is None:
            self.full_at = sample
        self.samples.append(sample)
        self.next_at = (events // self.step + 1) * self.step

    def note_disk(self) -> None:
        """Between samples too: the disk check is about every moment, not only the samples."""
        self.disk_peak = max(self.disk_peak, store_disk_bytes(self.host.stream.path))

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
    recorder = _Recorder(config.events, started, host, config)
    history = lambda: len(host.stream.get_event_history())  # noqa: E731
    recorder.maybe_sample(0, history)
    next_report = started
    slot = 0
    events = host.events
    base = events
    while events - base < config.events:
        host.turn(slot)
        slot = (slot + 1) % len(host.slots)
        if slot % 8 == 0:
            recorder.note_disk()
        # Let timers run: learning captures, checkpoint expiry, ledger writes, cleanups.
        await asyncio.sleep(0)
        events = host.events
        recorder.maybe_sample(events - base, history)
        now = time.perf_counter()
        if on_progress is not None and now >= next_report:
            next_report = now + 0.2
            on_progress(
                Progress(
                    events - base,
                    config.events,
                    now - started,
                    current_rss(),
                    store_disk_bytes(host.stream.path),
                )
            )
    seconds = time.perf_counter() - started
    recorder.maybe_sample(config.events, history)
    if on_progress is not None:
        disk = store_disk_bytes(host.stream.path)
        on_progress(Progress(events - base, config.events, seconds, current_rss(), disk))
    return recorder, seconds


async def _soak(config: SoakConfig, directory: str, on_progress: Optional[ProgressCallback]) -> Any:
    rss_start = current_rss()
    host = _Host(config, directory)
    host.orchestration.start()
    base = host.events
    recorder, seconds = await _drive(host, config, on_progress)
    events = host.events - base
    stream_stats = host.stream.stats()
    components = host.component_stats()
    rss_end = current_rss()
    disk_end = store_disk_bytes(host.stream.path)
    shutdown_started = time.perf_counter()
    try:
        report: ShutdownReport = await host.orchestration.shutdown_all()
    finally:
        host.orchestration.unregister()
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
        full_at_events=recorder.full_at.events if recorder.full_at is not None else None,
        rss_at_full=recorder.full_at.rss if recorder.full_at is not None else 0,
        filling=recorder.filling if recorder.full_at is None else [],
        disk_bytes_end=disk_end,
        disk_bytes_peak=max(recorder.disk_peak, disk_end),
        segments_dropped=int(stream_stats.get("segments_dropped", 0)),
        events_dropped=int(stream_stats.get("events_dropped", 0)),
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
