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

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "MAX_DEPTH",
    "EventRing",
    "EventView",
    "JsonlStore",
    "StoreClosedError",
    "StoreError",
    "StoreLockedError",
    "StoreWriteError",
    "__version__",
    "file_stats",
    "read_events",
]
