"""opencode-addons: a durable, memory-bounded event stream for long-running agent hosts.

The hot data path (the event ring, the JSONL store, queries, replay) is Rust; the orchestration
(task observer, registry, checkpoints, learning, ledger, memory lane, sessions, shutdown) is
Python on top.

The native classes load with the package; the orchestration (which needs asyncio, sqlite3 and
psutil) loads on first use of one of its names, so `from opencode_addons import JsonlStore`
stays quick.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

if not sys.platform.startswith("linux"):  # pragma: no cover - CI runs on Linux
    raise ImportError(
        f"opencode-addons runs on Linux only (its store uses posix_fallocate, "
        f"MADV_POPULATE_WRITE and pthread_atfork); this platform is {sys.platform!r}"
    )

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

if TYPE_CHECKING:
    from opencode_addons.component import Component
    from opencode_addons.durable_stream import DurableStream, EventHistory, ResumeResult
    from opencode_addons.health import health
    from opencode_addons.shutdown import (
        ShutdownReport,
        shutdown_all,
        shutdown_all_sync,
    )
    from opencode_addons.signals import install_atexit_hook, install_signal_handlers
    from opencode_addons.stream_checkpoints import Checkpoint
    from opencode_addons.stream_intents import Intent
    from opencode_addons.stream_singleton import get_durable_stream, initialize_durable_stream

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first access.
_LAZY = {
    "Checkpoint": "opencode_addons.stream_checkpoints",
    "DurableStream": "opencode_addons.durable_stream",
    "EventHistory": "opencode_addons.durable_stream",
    "Intent": "opencode_addons.stream_intents",
    "ResumeResult": "opencode_addons.durable_stream",
    "get_durable_stream": "opencode_addons.stream_singleton",
    "initialize_durable_stream": "opencode_addons.stream_singleton",
    "health": "opencode_addons.health",
    "Component": "opencode_addons.component",
    "ShutdownReport": "opencode_addons.shutdown",
    "shutdown_all": "opencode_addons.shutdown",
    "shutdown_all_sync": "opencode_addons.shutdown",
    "install_signal_handlers": "opencode_addons.signals",
    "install_atexit_hook": "opencode_addons.signals",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'opencode_addons' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "MAX_DEPTH",
    "Checkpoint",
    "Component",
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
    "install_atexit_hook",
    "install_signal_handlers",
    "read_events",
    "shutdown_all",
    "shutdown_all_sync",
]
