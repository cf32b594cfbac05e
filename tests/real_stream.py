"""The real DurableStream, in a temporary file, with the read helpers that assertions use.

Orchestrator tests run against this rather than an in-memory fake, so they exercise the stream's
real ids, timestamps, validation, projections and subscriber dispatch. ``tests/conftest.py``
shuts down every stream made here after each test.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from opencode_addons.durable_stream import DurableStream
from opencode_addons.events import Event

_made: list[tuple[DurableStream, str]] = []


class TestStream(DurableStream):
    """``DurableStream`` plus ``events``, ``of_type`` and ``subscriber_count`` for assertions."""

    __test__ = False  # not a pytest test class

    @property
    def events(self) -> list[Event]:
        """Every event appended so far (the bounded history, oldest first)."""
        return self.get_event_history().to_list()

    def of_type(self, event_type: str) -> list[Event]:
        return self.query(scope="history", type=event_type)

    def subscriber_count(self) -> int:
        return int(self.stats()["subscribers"])


def real_stream(**kwargs: Any) -> TestStream:
    """A new real stream in a new temporary directory (``durability="none"`` unless given)."""
    directory = tempfile.mkdtemp(prefix="oca-test-")
    kwargs.setdefault("durability", "none")
    stream = TestStream(Path(directory) / "events.jsonl", **kwargs)
    _made.append((stream, directory))
    return stream


def close_all() -> None:
    """Shut down every stream ``real_stream`` made and delete its directory."""
    while _made:
        stream, directory = _made.pop()
        stream.shutdown()
        shutil.rmtree(directory, ignore_errors=True)
