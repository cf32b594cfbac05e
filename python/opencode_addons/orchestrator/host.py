"""The default orchestration around one ``DurableStream``, assembled in one place.

``Orchestration`` builds the reference's components on a given stream: the memory lane (a
``MemoryLaneStore`` file in ``directory``), the task registry, the session tracker (a dropped
session's tasks are forgotten), the learning extractor (capturing into the memory lane), the
event-driven ledger (``LEDGER.md`` in ``directory``), the checkpoint manager and the task
observer. The hosts (``soak.py``, ``recorder.py``) pass only what differs between them.

It is an assembler, not a component: ``components()`` lists what it built, in the order
``shutdown_all`` stops them (the reference's seven, then the session tracker, then whatever a
host ``add``-ed), ``register()`` puts them in the component registry and ``shutdown_all()`` stops
them. The stream is given, not opened here, but it is one of the reference's components: it is
stopped in its place among them.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Union

from opencode_addons import component_registry
from opencode_addons.component_registry import check_component
from opencode_addons.durable_stream import DurableStream
from opencode_addons.memory_lane import MAX_ITEMS, MemoryLaneStore
from opencode_addons.orchestrator.checkpoints import CheckpointManager
from opencode_addons.orchestrator.learning import CAPTURE_DELAY, LearningExtractor
from opencode_addons.orchestrator.ledger import EventDrivenLedger
from opencode_addons.orchestrator.observer import (
    BASE_INTERVAL,
    MAX_INTERVAL,
    InMemorySessionClient,
    SessionClient,
    TaskObserver,
)
from opencode_addons.orchestrator.sessions import DEFAULT_MAX_ENDED, SessionStateTracker
from opencode_addons.orchestrator.task_registry import TaskRegistry
from opencode_addons.shutdown import ShutdownReport, shutdown_all

MEMORY_LANE_FILE = "memory_lane.sqlite"
LEDGER_FILE = "LEDGER.md"
# The task registry keeps this many finished tasks (its bounded structure).
MAX_FINISHED_TASKS = 1_000

SessionClientFactory = Callable[[TaskRegistry], SessionClient]


class Orchestration:
    """The default orchestration components around ``stream``, files in ``directory``.

    Settings: ``max_finished`` (finished tasks the registry keeps), ``session_ttl`` (seconds an
    unseen session is kept), ``capture_delay`` (seconds after idle before learnings are captured),
    ``session_client`` (builds the observer's view of the sessions from the task registry;
    ``None``: an ``InMemorySessionClient``), ``observer_interval`` (the observer's base and
    maximum polling interval in seconds), ``memory_lane_items`` (memories the lane keeps) and
    ``max_ended_sessions`` (ended session ids the session tracker remembers).

    If building a component fails, the memory lane is closed again; the stream is the caller's.
    """

    def __init__(
        self,
        stream: DurableStream,
        directory: Union[str, os.PathLike[str]],
        *,
        max_finished: Optional[int] = MAX_FINISHED_TASKS,
        session_ttl: float = 3600.0,
        capture_delay: float = CAPTURE_DELAY,
        session_client: Optional[SessionClientFactory] = None,
        observer_interval: tuple[float, float] = (BASE_INTERVAL, MAX_INTERVAL),
        memory_lane_items: Optional[int] = MAX_ITEMS,
        max_ended_sessions: int = DEFAULT_MAX_ENDED,
    ) -> None:
        self.stream = stream
        self.directory = os.fspath(directory)
        self.memory_lane = MemoryLaneStore(
            os.path.join(self.directory, MEMORY_LANE_FILE), max_items=memory_lane_items
        )
        self._extra: dict[str, Any] = {}
        try:
            self.registry = TaskRegistry(stream, max_finished=max_finished)
            self.tracker = SessionStateTracker(
                stream, ttl=session_ttl, max_ended=max_ended_sessions
            )
            self.tracker.on_drop(self._forget_tasks_of)
            self.extractor = LearningExtractor(
                stream, memory_lane=self.memory_lane, capture_delay=capture_delay
            ).attach()
            self.ledger = EventDrivenLedger(stream, os.path.join(self.directory, LEDGER_FILE))
            self.checkpoints = CheckpointManager(stream)
            self.client: SessionClient = (
                InMemorySessionClient() if session_client is None else session_client(self.registry)
            )
            base_interval, max_interval = observer_interval
            self.observer = TaskObserver(
                self.registry,
                self.client,
                checkpoints=self.checkpoints,
                stream=stream,
                base_interval=base_interval,
                max_interval=max_interval,
            )
        except BaseException:
            self.memory_lane.shutdown()
            raise

    def _forget_tasks_of(self, session_id: str, _reason: str) -> None:
        self.registry.remove_session(session_id)

    def add(self, name: str, component: Any) -> Any:
        """Make ``component`` (a ``Component``) one of this orchestration's, stopped after the
        default ones in the order added; return it."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a component name must be a non-empty str, got {name!r}")
        if name in self.components():
            raise ValueError(f"the orchestration already has a component named {name!r}")
        self._extra[name] = check_component(component)
        return component

    def components(self) -> dict[str, Any]:
        """In shutdown order: the reference's seven, the session tracker, then the added ones."""
        return {
            "task_observer": self.observer,
            "task_registry": self.registry,
            "checkpoint_manager": self.checkpoints,
            "learning_extractor": self.extractor,
            "event_driven_ledger": self.ledger,
            "durable_stream": self.stream,
            "memory_lane_store": self.memory_lane,
            "session_state_tracker": self.tracker,
            **self._extra,
        }

    def start(self) -> None:
        """Start the task observer and arm the session tracker's expiry (on the running loop)."""
        self.observer.start()
        self.tracker.start_expiry()

    def register(self) -> None:
        """Register every component in the component registry under its name."""
        for name, component in self.components().items():
            component_registry.register_component(name, component)

    def unregister(self) -> None:
        """Remove from the component registry every component still registered as this one's."""
        for name, component in self.components().items():
            component_registry.unregister(name, component)

    async def shutdown_all(self, timeout_per_component: float = 5.0) -> ShutdownReport:
        """Stop every component (``components()`` order), each step isolated and time-boxed."""
        return await shutdown_all(timeout_per_component, components=self.components())
