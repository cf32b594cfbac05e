"""The OpenCode server-event fixtures of ``tests/fixtures/opencode`` (see its README)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "opencode"
NAMES = (
    "current/turn.json",
    "current/requests.json",
    "current/parts.json",
    "current/session.json",
    "current/global.json",
    "older/turn.json",
    "older/session.json",
    "older/global.json",
)


def document(name: str) -> dict[str, Any]:
    with open(FIXTURES / name, encoding="utf-8") as handle:
        return json.load(handle)


def events(name: str) -> list[dict[str, Any]]:
    """The server events of one fixture file (fresh copies)."""
    return copy.deepcopy(document(name)["events"])


def unwrap(event: dict[str, Any]) -> dict[str, Any]:
    """The server event inside a ``/global/event`` frame (the event itself otherwise)."""
    return event["payload"] if "payload" in event and "type" not in event else event
