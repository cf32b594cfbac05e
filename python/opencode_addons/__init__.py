"""opencode-addons: a durable, memory-bounded event stream for long-running agent hosts."""

from __future__ import annotations

__version__ = "0.1.0"
