"""Orchestration components built on the event stream."""

from __future__ import annotations

from opencode_addons.component_registry import (
    SHUTDOWN_ORDER,
    get_component,
    get_or_create,
    register_component,
    registered,
    unregister,
)
from opencode_addons.orchestrator.checkpoints import (
    CheckpointManager,
    CheckpointOutcome,
    PendingCheckpoint,
)
from opencode_addons.orchestrator.host import Orchestration
from opencode_addons.orchestrator.learning import Learning, LearningExtractor
from opencode_addons.orchestrator.ledger import EventDrivenLedger
from opencode_addons.orchestrator.observer import (
    CheckpointRequester,
    InMemorySessionClient,
    SessionClient,
    TaskObserver,
)
from opencode_addons.orchestrator.sessions import SessionState, SessionStateTracker
from opencode_addons.orchestrator.task_registry import Task, TaskRegistry, TaskState
from opencode_addons.shutdown import (
    ShutdownReport,
    ShutdownStep,
    shutdown_all,
    shutdown_all_sync,
)

__all__ = [
    "SHUTDOWN_ORDER",
    "CheckpointManager",
    "CheckpointOutcome",
    "CheckpointRequester",
    "EventDrivenLedger",
    "InMemorySessionClient",
    "Learning",
    "LearningExtractor",
    "Orchestration",
    "PendingCheckpoint",
    "SessionClient",
    "SessionState",
    "SessionStateTracker",
    "ShutdownReport",
    "ShutdownStep",
    "Task",
    "TaskObserver",
    "TaskRegistry",
    "TaskState",
    "get_component",
    "get_or_create",
    "register_component",
    "registered",
    "shutdown_all",
    "shutdown_all_sync",
    "unregister",
]
