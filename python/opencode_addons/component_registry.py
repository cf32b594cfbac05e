"""The process-wide registry of components that ``shutdown_all`` stops.

Components are registered under a name. ``registered()`` lists the reference's components first,
in the reference's shutdown order (``SHUTDOWN_ORDER``), then every other component in the order
it was registered: that is the order ``shutdown_all`` stops them in.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from opencode_addons.component import Component

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
# Insertion-ordered: the order of registration is the shutdown order after SHUTDOWN_ORDER.
_components: dict[str, Any] = {}


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a component name must be a non-empty str, got {name!r}")
    return name


def missing_members(component: object) -> list[str]:
    """The members of the ``Component`` contract that ``component`` lacks (empty: it complies)."""
    missing = [f"{m}()" for m in ("shutdown", "stats") if not callable(getattr(component, m, None))]
    missing += [m for m in ("name", "closed") if not hasattr(component, m)]
    return missing


def check_component(component: object) -> Component:
    """``component`` itself, or ``TypeError`` naming the ``Component`` members it lacks."""
    if component is None:
        raise ValueError("component must not be None")
    missing = missing_members(component)
    if missing:
        raise TypeError(
            f"{type(component).__name__} is not a Component: it has no {', '.join(missing)} "
            "(see opencode_addons.component)"
        )
    return component  # type: ignore[return-value]


def register_component(name: str, component: Any) -> Any:
    """Register ``component`` under ``name`` (replacing any previous one); return it."""
    _check_name(name)
    check_component(component)
    with _lock:
        previous = _components.pop(name, None)
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
            component = check_component(factory())
            _components[name] = component
        return component


def registered() -> dict[str, Any]:
    """A copy of the registered components, in shutdown order (see the module)."""
    with _lock:
        ordered = {name: _components[name] for name in SHUTDOWN_ORDER if name in _components}
        ordered.update((n, c) for n, c in _components.items() if n not in ordered)
        return ordered


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
