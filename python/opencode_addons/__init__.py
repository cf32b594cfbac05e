"""opencode-addons: a durable, memory-bounded event stream for long-running agent hosts.

The hot data path (the event ring, the JSONL store, queries, replay) is Rust; the orchestration
(task observer, registry, checkpoints, learning, ledger, memory lane, sessions, shutdown) is
Python on top.
"""

from __future__ import annotations

from opencode_addons._core import (
    DEFAULT_MAX_EVENT_BYTES,
    MAX_DEPTH,
    EventRing,
    EventView,
    JsonlStore,
    StoreClosedError,
    StoreError,
    StoreLockedError,
    StoreWriteError,
    file_stats,
    read_events,
)
from opencode_addons.durable_stream import (
    Checkpoint,
    DurableStream,
    EventHistory,
    Intent,
    ResumeResult,
    get_durable_stream,
    initialize_durable_stream,
)
from opencode_addons.health import health
from opencode_addons.orchestrator.shutdown import ShutdownReport, shutdown_all, shutdown_all_sync

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "MAX_DEPTH",
    "Checkpoint",
    "DurableStream",
    "EventHistory",
    "EventRing",
    "EventView",
    "Intent",
    "JsonlStore",
    "ResumeResult",
    "ShutdownReport",
    "StoreClosedError",
    "StoreError",
    "StoreLockedError",
    "StoreWriteError",
    "__version__",
    "file_stats",
    "get_durable_stream",
    "health",
    "initialize_durable_stream",
    "read_events",
    "shutdown_all",
    "shutdown_all_sync",
]
