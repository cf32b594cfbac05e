"""The process-wide registry of components that ``shutdown_all`` stops, in the reference's order."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)

SHUTDOWN_ORDER = (
    "task_observer",
    "task_registry",
    "checkpoint_manager",
    "learning_extractor",
    "event_driven_ledger",
    "durable_stream",
    "memory_lane_store",
)

# Re-entrant so a factory given to get_or_create may itself register components.
_lock = threading.RLock()
_components: dict[str, Any] = {}


def _check_name(name: str) -> None:
    if name not in SHUTDOWN_ORDER:
        raise ValueError(f"unknown component name {name!r}; expected one of {SHUTDOWN_ORDER}")


def register_component(name: str, component: Any) -> Any:
    """Register ``component`` under ``name`` (replacing any previous one); return it."""
    _check_name(name)
    if component is None:
        raise ValueError("component must not be None")
    with _lock:
        previous = _components.get(name)
        _components[name] = component
    if previous is not None and previous is not component:
        log.warning("component %s replaced; the previous one was not shut down by this", name)
    return component


def get_component(name: str) -> Any | None:
    """The component registered under ``name``, or ``None``."""
    _check_name(name)
    with _lock:
        return _components.get(name)


def get_or_create(name: str, factory: Callable[[], Any]) -> Any:
    """The registered component, or a new one from ``factory`` registered under ``name``."""
    _check_name(name)
    with _lock:
        component = _components.get(name)
        if component is None:
            component = factory()
            _components[name] = component
        return component


def registered() -> dict[str, Any]:
    """A copy of the registered components, in shutdown order."""
    with _lock:
        return {name: _components[name] for name in SHUTDOWN_ORDER if name in _components}


def unregister(name: str, component: Any | None = None) -> Any | None:
    """Remove ``name`` (only if it is ``component``, when given); return what was removed."""
    _check_name(name)
    with _lock:
        current = _components.get(name)
        if current is None or (component is not None and current is not component):
            return None
        return _components.pop(name)


def clear() -> None:
    """Forget every component (without shutting them down)."""
    with _lock:
        _components.clear()
