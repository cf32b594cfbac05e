"""The memory health report: what each component holds, and what the process really uses.

The reference watched ``eventHistory.length``, ``eventCache.length``, ``tasks.size`` and
``pendingCaptures.size``; this report has those, plus the bytes the history holds, live sessions,
owned timers and the process's resident set size (measured, not estimated).
"""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

import psutil

from opencode_addons import component_registry
from opencode_addons.component import Component

if TYPE_CHECKING:
    from opencode_addons.durable_stream import DurableStream

log = logging.getLogger(__name__)


def health(
    stream: Optional[DurableStream] = None,
    *,
    session_tracker: Optional[Component] = None,
) -> dict[str, int]:
    """Counts and bytes of the registered components (a missing component counts 0).

    ``stream`` defaults to the registered ``durable_stream``; the task registry, learning
    extractor, checkpoint manager, ledger and observer are read from ``component_registry``.
    ``sessions`` counts the sessions of ``session_tracker`` (default: the registered
    ``session_state_tracker``), else the sessions the stream holds state for.

    Keys: ``event_history``, ``event_cache``, ``history_bytes``, ``tasks``,
    ``pending_captures``, ``sessions``, ``timers`` (owned timers and periodic tasks armed now),
    ``rss_bytes``, and the store's files against their budget: ``disk_bytes`` and
    ``max_disk_bytes`` (0 when unbounded).
    """
    components = component_registry.registered()
    if stream is None:
        stream = components.get("durable_stream")
    stream_stats = _stats_of(stream)
    if session_tracker is None:
        session_tracker = components.get("session_state_tracker")
    extractor = components.get("learning_extractor")
    return {
        "event_history": _int(stream_stats, "history_events"),
        "event_cache": _int(stream_stats, "cache_events"),
        "history_bytes": _int(stream_stats, "history_bytes"),
        "tasks": _size(components.get("task_registry")),
        "pending_captures": _size(getattr(extractor, "pending_captures", None)),
        "sessions": _sessions(session_tracker, stream_stats),
        "timers": _timers(components, stream_stats, session_tracker),
        "rss_bytes": _rss_bytes(),
        "disk_bytes": _int(stream_stats, "disk_bytes"),
        "max_disk_bytes": _int(stream_stats, "max_disk_bytes"),
    }


def _stats_of(component: Any) -> Mapping[str, Any]:
    """``component.stats()``, or an empty mapping if there is no component or it fails."""
    if component is None:
        return {}
    try:
        stats = component.stats()
    except Exception:
        # A health report must not fail because one component is unwell.
        log.exception("%s.stats() failed", type(component).__name__)
        return {}
    return stats if isinstance(stats, Mapping) else {}


def _int(stats: Mapping[str, Any], key: str) -> int:
    value = stats.get(key)
    return int(value) if isinstance(value, (int, float)) else 0


def _size(collection: Any) -> int:
    try:
        return len(collection) if collection is not None else 0
    except TypeError:
        return 0


def _sessions(session_tracker: Optional[Component], stream_stats: Mapping[str, Any]) -> int:
    if session_tracker is not None:
        return _size(session_tracker)
    return _int(stream_stats, "sessions")


def _timers(
    components: Mapping[str, Any],
    stream_stats: Mapping[str, Any],
    session_tracker: Optional[Component],
) -> int:
    """Every timer or periodic task the components own right now."""
    count = _int(stream_stats, "timers")
    # Each pending managed checkpoint and each pending capture has exactly one timer.
    count += _int(_stats_of(components.get("checkpoint_manager")), "pending")
    count += _int(_stats_of(components.get("learning_extractor")), "pending_captures")
    count += _flag(_stats_of(components.get("event_driven_ledger")), "pending_write")
    count += _flag(_stats_of(components.get("task_registry")), "auto_cleanup_running")
    count += _flag(_stats_of(components.get("task_observer")), "running")
    if session_tracker is not None:
        count += _flag(_stats_of(session_tracker), "expiry_armed")
    return count


def _flag(stats: Mapping[str, Any], key: str) -> int:
    return 1 if stats.get(key) is True else 0


def _rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


__all__ = ["health"]


class _CallableModule(types.ModuleType):
    """Makes ``opencode_addons.health()`` work however the name was first reached.

    The package exports the function ``health``; but importing this module (``from
    opencode_addons.health import ...``) before the package attribute is read makes the import
    system bind ``opencode_addons.health`` to the module. Calling the module calls the function.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return health(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
