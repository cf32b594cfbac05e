"""Argument checks shared by the stream's public methods: one wording for every bad argument."""

from __future__ import annotations

from typing import Any


def require_str(name: str, value: Any) -> str:
    """``value`` if it is a non-empty str, else ``ValueError`` naming ``name``."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty str, got {value!r}")
    return value


def positive_seconds(name: str, value: Any) -> float:
    """``value`` as float seconds if it is a number > 0, else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return float(value)
