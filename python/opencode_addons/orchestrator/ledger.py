"""EventDrivenLedger: a Markdown ledger (LEDGER.md) of the run, kept current from the event stream.

Sections: Meta, Governance (checkpoint decisions), Epics (one per stream or spawned intent, each
with a task table), Learnings, Handoff (status, open checkpoints, active tasks) and Archive
(completed epics pushed out of the active list). Every collection, including the lineage
bookkeeping, has a bound given to the constructor. Writes are atomic and debounced.

A checkpoint stays open until it is approved or rejected, its session ends (a terminal lifecycle
event for its stream; ``plugin.shutdown`` ends them all) or its ``expires_at`` passes: the stream
drops or rejects such checkpoints without always saying so, and the ledger mirrors that.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import tempfile
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from opencode_addons.background import running_loop
from opencode_addons.events import (
    AGENT_ABORTED,
    AGENT_COMPLETED,
    AGENT_FAILED,
    AGENT_SPAWNED,
    CHECKPOINT_APPROVED,
    CHECKPOINT_REJECTED,
    CHECKPOINT_REQUESTED,
    LEARNING_CAPTURED,
    LEDGER_ACTOR,
    LEDGER_STREAM,
    PLUGIN_SHUTDOWN_TYPES,
    SESSION_TERMINAL_TYPES,
    WILDCARD,
    Event,
    EventStream,
    Unsubscribe,
    checkpoint_id_of,
    payload_of,
    session_id_of,
)

log = logging.getLogger(__name__)

LEDGER_PREFIX = "ledger."
EPIC_CREATED = "ledger.epic.created"
EPIC_ARCHIVED = "ledger.epic.archived"
TASK_UPDATED = "ledger.task.updated"
LEARNING_ADDED = "ledger.learning.added"
DECISION_RECORDED = "ledger.governance.decision"
HANDOFF = "ledger.handoff"

TERMINAL_STATES = frozenset({"completed", "failed", "timeout", "aborted", "cancelled"})
# task.<suffix> -> task state; unknown suffixes become the state verbatim.
TASK_STATES: Mapping[str, str] = {
    "registered": "pending",
    "created": "pending",
    "started": "running",
    "progress": "running",
    "completed": "completed",
    "failed": "failed",
    "timeout": "timeout",
    "stale": "stale",
    "blocked": "blocked",
    "retried": "retrying",
    "cancelled": "cancelled",
}
AGENT_STATES: Mapping[str, str] = {
    AGENT_SPAWNED: "running",
    AGENT_COMPLETED: "completed",
    AGENT_FAILED: "failed",
    AGENT_ABORTED: "aborted",
}
MAX_CELL_CHARS = 120
HANDOFF_TASK_LINES = 20


def _iso(timestamp_ms: Optional[int]) -> str:
    if not timestamp_ms:
        return "-"
    moment = dt.datetime.fromtimestamp(timestamp_ms / 1000, tz=dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _cell(value: Any) -> str:
    """Text safe inside a Markdown table cell: one line, pipes escaped, clipped."""
    text = " ".join(str(value if value is not None else "-").split()) or "-"
    if len(text) > MAX_CELL_CHARS:
        text = text[: MAX_CELL_CHARS - 1] + "…"
    return text.replace("|", "\\|")


def _first(mapping: Mapping[str, Any], *keys: str) -> Optional[str]:
    for key in keys:
        value = mapping.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


def _now_ms() -> int:
    return int(dt.datetime.now(tz=dt.timezone.utc).timestamp() * 1000)


@dataclass
class Task:
    """One row of an epic's task table."""

    task_id: str
    description: str
    state: str
    updated: int


@dataclass
class Epic:
    """A unit of work: one stream or one spawned intent, with its tasks.

    Its tasks change through the methods below, which count the ones not terminal yet, so that
    ``state`` is one check: scanning every task instead took 79% of the ledger's time with 200
    tasks an epic (57 us a task event).
    """

    epic_id: str
    title: str
    created: int
    updated: int
    tasks: OrderedDict[str, Task] = field(default_factory=OrderedDict)
    _unfinished: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._unfinished = sum(_unfinished(t.state) for t in self.tasks.values())

    @property
    def state(self) -> str:
        """``completed`` once it has tasks and all of them are terminal, else ``active``."""
        return "completed" if self.tasks and self._unfinished == 0 else "active"

    def add_task(self, task: Task) -> None:
        """Adds ``task`` (replacing one with its id) as the newest."""
        replaced = self.tasks.pop(task.task_id, None)
        if replaced is not None:
            self._unfinished -= _unfinished(replaced.state)
        self.tasks[task.task_id] = task
        self._unfinished += _unfinished(task.state)

    def set_task_state(self, task: Task, state: str) -> None:
        """Moves ``task``, one of this epic's, to ``state``."""
        self._unfinished += _unfinished(state) - _unfinished(task.state)
        task.state = state

    def remove_task(self, task_id: Optional[str] = None) -> None:
        """Drops the task ``task_id``, or the oldest task when None."""
        if task_id is None:
            _, task = self.tasks.popitem(last=False)
        else:
            task = self.tasks.pop(task_id)
        self._unfinished -= _unfinished(task.state)


def _unfinished(state: str) -> int:
    return 0 if state in TERMINAL_STATES else 1


@dataclass(frozen=True)
class _OpenCheckpoint:
    """Where an open checkpoint lives and when it lapses (epoch ms; None: no known expiry)."""

    stream_id: Optional[str]
    expires_at: Optional[int]


@dataclass
class Decision:
    """A checkpoint resolution, for the Governance section."""

    checkpoint_id: str
    decision: str
    by: str
    reason: str
    at: int


@dataclass
class LedgerLearning:
    """A captured learning, for the Learnings section."""

    kind: str
    content: str
    confidence: float
    session_id: str
    at: int


@dataclass
class ArchivedEpic:
    """A one-line summary of an epic moved out of the active list."""

    epic_id: str
    title: str
    task_count: int
    states: dict[str, int]
    closed: int


class EventDrivenLedger:
    """Keeps a model of the work from the stream and renders it as Markdown; see module doc."""

    name = "event_driven_ledger"

    @property
    def closed(self) -> bool:
        """True once ``shutdown()`` has run."""
        return self._closed

    def __init__(
        self,
        stream: EventStream,
        path: Union[str, os.PathLike[str], None] = "LEDGER.md",
        *,
        max_lineage: int = 1000,
        render_delay: float = 0.5,
        max_epics: int = 50,
        max_tasks_per_epic: int = 200,
        max_completed_epics: int = 10,
        max_archive: int = 200,
        max_learnings: int = 100,
        max_decisions: int = 100,
        max_open_checkpoints: int = 100,
        emit_events: bool = True,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        if min(max_lineage, max_epics, max_tasks_per_epic, max_archive, max_learnings) < 1:
            raise ValueError("every bound must be at least 1")
        self.stream = stream
        self.path = os.fspath(path) if path is not None else None
        self.render_delay = render_delay
        self.max_lineage = max_lineage
        self.max_epics = max_epics
        self.max_tasks_per_epic = max_tasks_per_epic
        self.max_completed_epics = max_completed_epics
        self.max_open_checkpoints = max_open_checkpoints
        self.emit_events = emit_events
        self.clock = clock
        # Event id -> (causation/parent id, correlation id), oldest first; doubles as the
        # seen-ids set. A dict and a queue of its keys: letting go of the oldest is a `del` by
        # key, which with the insert costs about half what `OrderedDict.popitem(last=False)`
        # does (timeit: 106 vs 199 ns an event).
        self.lineage: dict[str, tuple[Optional[str], Optional[str]]] = {}
        self._lineage_order: deque[str] = deque()
        self.epics: OrderedDict[str, Epic] = OrderedDict()
        self.archive: deque[ArchivedEpic] = deque(maxlen=max_archive)
        self.learnings: deque[LedgerLearning] = deque(maxlen=max_learnings)
        self.decisions: deque[Decision] = deque(maxlen=max_decisions)
        # checkpoint id -> question; _checkpoint_meta holds each one's stream and expiry.
        self.open_checkpoints: OrderedDict[str, str] = OrderedDict()
        self._checkpoint_meta: dict[str, _OpenCheckpoint] = {}
        self._next_expiry: Optional[int] = None
        self.run_id: Optional[str] = getattr(stream, "run_id", None)
        self.started: int = _now_ms()
        self.updated: int = self.started
        self.last_event_type: Optional[str] = None
        self.events_seen = 0
        self.duplicates = 0
        self.writes = 0
        self.errors = 0
        self._dirty = False
        self._timer: Optional[asyncio.TimerHandle] = None
        self._last_handoff: Optional[dict[str, Any]] = None
        self._unsubscribe: Optional[Unsubscribe] = None
        self._closed = False
        self.attach()

    def attach(self) -> EventDrivenLedger:
        """Subscribe to every event (done by the constructor; idempotent); returns self."""
        if self._closed:
            raise RuntimeError("EventDrivenLedger is shut down")
        if self._unsubscribe is None:
            self._unsubscribe = self.stream.subscribe(WILDCARD, self.handle_event)
        return self

    start = attach

    # -- ingestion -----------------------------------------------------------------------------

    def handle_event(self, event: Event) -> None:
        """Subscriber entry point; never raises into the stream."""
        if self._closed or self._is_own(event):
            return
        try:
            changed = self.expire_checkpoints() > 0
            if self._remember_lineage(event):
                self._apply(event)
                changed = True
            if changed:
                self._schedule_write()
        except Exception:
            self.errors += 1
            log.exception("ledger failed on %s", event.get("type"))

    @staticmethod
    def _is_own(event: Mapping[str, Any]) -> bool:
        # Our own events would otherwise feed back into the ledger without end.
        event_type = str(event.get("type", ""))
        return event_type.startswith(LEDGER_PREFIX) or event.get("stream_id") == LEDGER_STREAM

    def _remember_lineage(self, event: Mapping[str, Any]) -> bool:
        """Record the event's links; False when it was already seen (replays, duplicates)."""
        event_id = event.get("id")
        if not isinstance(event_id, str):
            return True
        if event_id in self.lineage:
            self.duplicates += 1
            return False
        self.lineage[event_id] = (event.get("causation_id"), event.get("correlation_id"))
        self._lineage_order.append(event_id)
        while len(self._lineage_order) > self.max_lineage:
            del self.lineage[self._lineage_order.popleft()]
        return True

    def _apply(self, event: Event) -> None:
        event_type = str(event.get("type", ""))
        timestamp = event.get("timestamp")
        at = timestamp if isinstance(timestamp, int) else _now_ms()
        self.events_seen += 1
        self.updated = max(self.updated, at)
        # Replayed history may predate this process: the run started at its earliest event.
        self.started = min(self.started, at)
        self.last_event_type = event_type
        if self.run_id is None and isinstance(event.get("correlation_id"), str):
            self.run_id = event["correlation_id"]
        if event_type.startswith("task."):
            self._on_task(event, event_type[len("task.") :], at)
        elif event_type in AGENT_STATES:
            self._on_agent(event, event_type, at)
        elif event_type == CHECKPOINT_REQUESTED:
            self._on_checkpoint_requested(event)
        elif event_type in (CHECKPOINT_APPROVED, CHECKPOINT_REJECTED):
            self._on_checkpoint_decided(event, event_type, at)
        elif event_type == LEARNING_CAPTURED:
            self._on_learning(event, at)
        elif event_type in SESSION_TERMINAL_TYPES:
            self._on_session_end(event, event_type)

    def _epic_id(self, event: Mapping[str, Any]) -> str:
        payload = payload_of(event)
        explicit = _first(payload, "epic_id", "intent_id", "intentId", "intentID")
        return explicit or str(event.get("stream_id") or "default")

    def _epic(self, event: Mapping[str, Any], at: int, title: Optional[str] = None) -> Epic:
        epic_id = self._epic_id(event)
        epic = self.epics.get(epic_id)
        if epic is None:
            epic = Epic(epic_id, title or epic_id, at, at)
            self.epics[epic_id] = epic
            self._emit(EPIC_CREATED, event, {"epic_id": epic_id, "title": epic.title})
            self._enforce_epic_bounds(keep=epic_id)
        elif title and epic.title == epic.epic_id:
            epic.title = title
        epic.updated = max(epic.updated, at)
        return epic

    def _on_task(self, event: Event, suffix: str, at: int) -> None:
        payload = payload_of(event)
        task_id = _first(payload, "task_id", "taskId", "taskID", "id") or str(event.get("id"))
        description = _first(payload, "description", "title", "prompt", "name")
        self._update_task(event, task_id, TASK_STATES.get(suffix, suffix), description, at)

    def _on_agent(self, event: Event, event_type: str, at: int) -> None:
        payload = payload_of(event)
        agent = _first(payload, "agent", "agent_name", "agentName", "agent_id", "agentId")
        intent = _first(payload, "intent", "description", "prompt", "title")
        task_id = _first(payload, "task_id", "taskId") or f"agent:{agent or event.get('stream_id')}"
        title = intent if event_type == AGENT_SPAWNED else None
        description = f"{agent}: {intent}" if agent and intent else (intent or agent)
        self._update_task(event, task_id, AGENT_STATES[event_type], description, at, title)

    def _update_task(
        self,
        event: Event,
        task_id: str,
        state: str,
        description: Optional[str],
        at: int,
        epic_title: Optional[str] = None,
    ) -> None:
        epic = self._epic(event, at, epic_title)
        task = epic.tasks.get(task_id)
        if task is None:
            epic.add_task(Task(task_id, description or "-", state, at))
            self._enforce_task_bound(epic)
        else:
            epic.set_task_state(task, state)
            task.updated = max(task.updated, at)
            if description:
                task.description = description
        self._emit(
            TASK_UPDATED, event, {"epic_id": epic.epic_id, "task_id": task_id, "state": state}
        )
        if epic.state == "completed":
            self._archive_overflow()

    def _on_checkpoint_requested(self, event: Event) -> None:
        payload = payload_of(event)
        checkpoint_id = checkpoint_id_of(event) or str(event["id"])
        question = _first(payload, "question", "description", "reason", "title") or "-"
        stream_id = _first(payload, "stream_id") or _first(event, "stream_id")
        expires_at = payload.get("expires_at")
        if isinstance(expires_at, bool) or not isinstance(expires_at, (int, float)):
            expires_at = None
        else:
            expires_at = int(expires_at)
            if self._next_expiry is None or expires_at < self._next_expiry:
                self._next_expiry = expires_at
        self.open_checkpoints[checkpoint_id] = question
        self._checkpoint_meta[checkpoint_id] = _OpenCheckpoint(stream_id, expires_at)
        while len(self.open_checkpoints) > self.max_open_checkpoints:
            oldest, _ = self.open_checkpoints.popitem(last=False)
            self._checkpoint_meta.pop(oldest, None)
        # One already past its expiry (a replay, say) is not open.
        self.expire_checkpoints()

    def _on_checkpoint_decided(self, event: Event, event_type: str, at: int) -> None:
        payload = payload_of(event)
        checkpoint_id = checkpoint_id_of(event) or str(event["id"])
        decision = Decision(
            checkpoint_id=checkpoint_id,
            decision="approved" if event_type == CHECKPOINT_APPROVED else "rejected",
            by=_first(payload, "by", "approved_by", "rejected_by", "user", "approver")
            or str(event.get("actor") or "-"),
            reason=_first(payload, "reason", "comment", "why", "feedback") or "-",
            at=at,
        )
        self.decisions.append(decision)
        self._close_checkpoint(checkpoint_id)
        self._emit(
            DECISION_RECORDED,
            event,
            {"checkpoint_id": checkpoint_id, "decision": decision.decision, "by": decision.by},
        )

    def _on_session_end(self, event: Event, event_type: str) -> None:
        """Close the checkpoints of the session that ended (all of them on plugin shutdown)."""
        if event_type in PLUGIN_SHUTDOWN_TYPES:
            ended = list(self.open_checkpoints)
        else:
            session_id = session_id_of(event)
            if session_id is None:
                return
            ended = [
                cid for cid, meta in self._checkpoint_meta.items() if meta.stream_id == session_id
            ]
        for checkpoint_id in ended:
            self._close_checkpoint(checkpoint_id)
        if ended:
            log.debug("closed %d open checkpoint(s) on %s", len(ended), event_type)

    def _close_checkpoint(self, checkpoint_id: str) -> None:
        self.open_checkpoints.pop(checkpoint_id, None)
        self._checkpoint_meta.pop(checkpoint_id, None)

    def expire_checkpoints(self) -> int:
        """Close open checkpoints whose ``expires_at`` has passed (by ``clock``); return how many.

        Called on every event; cheap unless the earliest known expiry has been reached.
        """
        if self._next_expiry is None:
            return 0
        now = self.clock()
        if now < self._next_expiry:
            return 0
        overdue = [
            cid
            for cid, meta in self._checkpoint_meta.items()
            if meta.expires_at is not None and meta.expires_at <= now
        ]
        for checkpoint_id in overdue:
            self._close_checkpoint(checkpoint_id)
        self._next_expiry = min(
            (m.expires_at for m in self._checkpoint_meta.values() if m.expires_at is not None),
            default=None,
        )
        if overdue:
            log.debug("closed %d expired checkpoint(s)", len(overdue))
        return len(overdue)

    def _on_learning(self, event: Event, at: int) -> None:
        payload = payload_of(event)
        confidence = payload.get("confidence")
        learning = LedgerLearning(
            kind=_first(payload, "kind") or "-",
            content=_first(payload, "content") or "-",
            confidence=float(confidence) if isinstance(confidence, (int, float)) else 0.0,
            session_id=_first(payload, "session_id") or str(event.get("stream_id") or "-"),
            at=at,
        )
        self.learnings.append(learning)
        self._emit(LEARNING_ADDED, event, {"kind": learning.kind, "content": learning.content})

    # -- bounds --------------------------------------------------------------------------------

    def _enforce_task_bound(self, epic: Epic) -> None:
        while len(epic.tasks) > self.max_tasks_per_epic:
            finished = next((k for k, t in epic.tasks.items() if t.state in TERMINAL_STATES), None)
            epic.remove_task(finished)

    def _archive_overflow(self) -> None:
        """Move the oldest completed epics out once more than ``max_completed_epics`` remain."""
        completed = [e for e in self.epics.values() if e.state == "completed"]
        for epic in completed[: max(0, len(completed) - self.max_completed_epics)]:
            self._archive(epic)

    def _enforce_epic_bounds(self, keep: str) -> None:
        while len(self.epics) > self.max_epics:
            others = [e for e in self.epics.values() if e.epic_id != keep]
            # Prefer archiving a finished epic; otherwise the one idle the longest.
            victim = next((e for e in others if e.state == "completed"), None)
            self._archive(victim or min(others, key=lambda e: e.updated))

    def _archive(self, epic: Epic) -> None:
        states: dict[str, int] = {}
        for task in epic.tasks.values():
            states[task.state] = states.get(task.state, 0) + 1
        self.epics.pop(epic.epic_id, None)
        self.archive.append(
            ArchivedEpic(epic.epic_id, epic.title, len(epic.tasks), states, epic.updated)
        )
        self._emit(EPIC_ARCHIVED, None, {"epic_id": epic.epic_id, "tasks": len(epic.tasks)})

    # -- events out ----------------------------------------------------------------------------

    def _emit(self, event_type: str, cause: Optional[Mapping[str, Any]], payload: dict) -> None:
        if not self.emit_events:
            return
        event: dict[str, Any] = {
            "type": event_type,
            "stream_id": LEDGER_STREAM,
            "actor": LEDGER_ACTOR,
            "payload": payload,
        }
        if cause is not None and isinstance(cause.get("id"), str):
            event["causation_id"] = cause["id"]
        try:
            self.stream.append(event)
        except Exception:
            self.errors += 1
            log.exception("ledger could not append %s", event_type)

    # -- rendering -----------------------------------------------------------------------------

    def handoff(self) -> dict[str, Any]:
        """The status summary an incoming agent or human needs first."""
        self.expire_checkpoints()  # no event may have arrived since one lapsed
        tasks = [t for e in self.epics.values() for t in e.tasks.values()]
        active = [t for t in tasks if t.state not in TERMINAL_STATES]
        return {
            "active_epics": sum(1 for e in self.epics.values() if e.state == "active"),
            "completed_epics": sum(1 for e in self.epics.values() if e.state == "completed"),
            "archived_epics": len(self.archive),
            "active_tasks": [t.task_id for t in active][:HANDOFF_TASK_LINES],
            "open_checkpoints": list(self.open_checkpoints),
            "last_event_type": self.last_event_type,
        }

    def render(self) -> str:
        """The whole ledger as Markdown."""
        sections = [
            ["# Ledger", ""],
            self._render_meta(),
            self._render_governance(),
            self._render_epics(),
            self._render_learnings(),
            self._render_handoff(),
            self._render_archive(),
        ]
        return "\n".join(line for section in sections for line in section).rstrip() + "\n"

    def _render_meta(self) -> list[str]:
        return [
            "## Meta",
            "",
            f"- Run: `{self.run_id or '-'}`",
            f"- Started: {_iso(self.started)}",
            f"- Updated: {_iso(self.updated)}",
            f"- Events seen: {self.events_seen}",
            "",
        ]

    def _render_governance(self) -> list[str]:
        lines = ["## Governance", ""]
        if not self.decisions:
            return [*lines, "_No decisions yet._", ""]
        lines += ["| Checkpoint | Decision | By | Reason | At |", "|---|---|---|---|---|"]
        lines += [
            f"| {_cell(d.checkpoint_id)} | {d.decision} | {_cell(d.by)} | {_cell(d.reason)} "
            f"| {_iso(d.at)} |"
            for d in self.decisions
        ]
        return [*lines, ""]

    def _render_epics(self) -> list[str]:
        lines = ["## Epics", ""]
        if not self.epics:
            return [*lines, "_No epics yet._", ""]
        for epic in self.epics.values():
            lines += [
                f"### {_cell(epic.epic_id)}: {_cell(epic.title)} ({epic.state})",
                "",
                "| Task | Description | State | Updated |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {_cell(t.task_id)} | {_cell(t.description)} | {t.state} | {_iso(t.updated)} |"
                for t in epic.tasks.values()
            ]
            lines.append("")
        return lines

    def _render_learnings(self) -> list[str]:
        lines = ["## Learnings", ""]
        if not self.learnings:
            return [*lines, "_No learnings yet._", ""]
        lines += [
            f"- **{learning.kind}** ({learning.confidence:.2f}, {_cell(learning.session_id)}): "
            f"{_cell(learning.content)}"
            for learning in self.learnings
        ]
        return [*lines, ""]

    def _render_handoff(self) -> list[str]:
        summary = self.handoff()
        lines = [
            "## Handoff",
            "",
            f"Status: {summary['active_epics']} active epic(s), "
            f"{summary['completed_epics']} completed, {summary['archived_epics']} archived; "
            f"last event `{summary['last_event_type'] or '-'}`.",
            "",
            "Open checkpoints:",
        ]
        lines += [f"- {_cell(cid)}: {_cell(q)}" for cid, q in self.open_checkpoints.items()]
        if not self.open_checkpoints:
            lines.append("- none")
        lines += ["", "Active tasks:"]
        active = [
            (epic, task)
            for epic in self.epics.values()
            for task in epic.tasks.values()
            if task.state not in TERMINAL_STATES
        ]
        lines += [
            f"- {_cell(task.task_id)} ({task.state}) in {_cell(epic.epic_id)}: "
            f"{_cell(task.description)}"
            for epic, task in active[:HANDOFF_TASK_LINES]
        ]
        if len(active) > HANDOFF_TASK_LINES:
            lines.append(f"- … and {len(active) - HANDOFF_TASK_LINES} more")
        if not active:
            lines.append("- none")
        return [*lines, ""]

    def _render_archive(self) -> list[str]:
        lines = ["## Archive", ""]
        if not self.archive:
            return [*lines, "_Nothing archived._", ""]
        for item in self.archive:
            states = ", ".join(f"{n} {state}" for state, n in sorted(item.states.items()))
            lines.append(
                f"- {_cell(item.epic_id)}: {_cell(item.title)}: {item.task_count} task(s) "
                f"({states or 'none'}), closed {_iso(item.closed)}"
            )
        return [*lines, ""]

    # -- writing -------------------------------------------------------------------------------

    def _schedule_write(self) -> None:
        """Mark dirty and, with a running loop, write once ``render_delay`` s from now."""
        self._dirty = True
        if self.path is None or self._timer is not None:
            return
        loop = running_loop()
        if loop is None:
            return  # no loop: the caller writes on demand with write()/flush()
        self._timer = loop.call_later(self.render_delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            self.write()
        except Exception:
            self.errors += 1
            log.exception("ledger write failed")

    def flush(self) -> bool:
        """Write now if anything changed since the last write; return whether it wrote."""
        if not self._dirty:
            return False
        self.write()
        return True

    def write(self) -> str:
        """Render and atomically replace the ledger file; return the rendered text."""
        text = self.render()
        self._dirty = False
        if self.path is not None:
            _atomic_write(self.path, text)
            self.writes += 1
        self._emit_handoff()
        return text

    def _emit_handoff(self) -> None:
        summary = self.handoff()
        if summary != self._last_handoff:
            self._last_handoff = summary
            self._emit(HANDOFF, None, summary)

    # -- lifecycle -----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Sizes and counters, for health reports."""
        return {
            "epics": len(self.epics),
            "tasks": sum(len(e.tasks) for e in self.epics.values()),
            "archive": len(self.archive),
            "learnings": len(self.learnings),
            "decisions": len(self.decisions),
            "open_checkpoints": len(self.open_checkpoints),
            "lineage": len(self.lineage),
            "events_seen": self.events_seen,
            "duplicates": self.duplicates,
            "writes": self.writes,
            "errors": self.errors,
            "pending_write": self._timer is not None,
            "closed": self._closed,
        }

    def shutdown(self) -> None:
        """Cancel the write timer, unsubscribe and write a final ledger; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
        if self.path is not None and (self._dirty or self.writes == 0):
            try:
                self.write()
            except Exception:
                self.errors += 1
                log.exception("final ledger write failed")


def _atomic_write(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old or the new file, never a torn one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp_path = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_path)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable on POSIX; not possible (nor needed) everywhere.
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        log.debug("directory fsync unsupported for %s", directory)
    finally:
        os.close(fd)
