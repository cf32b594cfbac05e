"""The component contract: what every long-lived part of the library offers ``shutdown_all``.

A component has a ``name`` (its key in the component registry; the reference's components use
the names in ``component_registry.SHUTDOWN_ORDER``), ``stats()`` (a dict of sizes and counters,
for health reports), ``closed`` (True once shut down) and ``shutdown()``.

``shutdown()`` is idempotent and may be synchronous or asynchronous: it returns ``None`` or an
awaitable. ``shutdown_all`` awaits an async one under its per-component timeout, and runs a
synchronous one in a worker thread so a hanging one can be timed out too. A synchronous
``shutdown()`` must therefore be safe to call from another thread.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Optional, Protocol, runtime_checkable


@runtime_checkable
class Component(Protocol):
    """A part of the library that holds resources until it is shut down."""

    name: str

    @property
    def closed(self) -> bool:
        """True once ``shutdown()`` has run."""
        ...

    def stats(self) -> dict[str, Any]:
        """Sizes and counters, for health reports."""
        ...

    def shutdown(self) -> Optional[Awaitable[None]]:
        """Release everything; idempotent. Sync, or returns an awaitable (see the module)."""
        ...
