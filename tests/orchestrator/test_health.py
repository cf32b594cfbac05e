from __future__ import annotations

import asyncio
import logging

import pytest
from fakes import FakeComponent
from opencode_addons import component_registry
from opencode_addons.durable_stream import DurableStream
from opencode_addons.health import health
from opencode_addons.orchestrator.learning import LearningExtractor
from opencode_addons.orchestrator.sessions import SessionStateTracker
from opencode_addons.orchestrator.task_registry import TaskRegistry
from opencode_addons.stream_singleton import initialize_durable_stream

KEYS = {
    "event_history",
    "event_cache",
    "history_bytes",
    "tasks",
    "pending_captures",
    "sessions",
    "timers",
    "rss_bytes",
    "disk_bytes",
    "max_disk_bytes",
}


@pytest.fixture(autouse=True)
def clean_runtime():
    component_registry.clear()
    yield
    for component in component_registry.registered().values():
        result = component.shutdown()
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    component_registry.clear()


def test_nothing_registered_counts_zero():
    report = health()
    assert set(report) == KEYS
    assert all(isinstance(value, int) for value in report.values())
    assert {k: v for k, v in report.items() if k != "rss_bytes"} == dict.fromkeys(
        KEYS - {"rss_bytes"}, 0
    )
    assert report["rss_bytes"] > 1_000_000


def test_reads_the_registered_stream(tmp_path):
    stream = initialize_durable_stream(
        store_path=tmp_path / "s.jsonl", max_event_history=20, max_cache_size=10
    )
    for i in range(30):
        stream.append({"type": "n", "payload": {"i": i}})
    stream.create_intent({"session_id": "ses_1"})
    report = health()
    assert report["event_history"] == 20 and report["event_cache"] == 10
    assert report["history_bytes"] == stream.stats()["history_bytes"] > 0
    assert report["sessions"] == 1
    # The store's files against their budget (the default, 1 GiB).
    assert report["disk_bytes"] == stream.stats()["disk_bytes"] > 0
    assert report["max_disk_bytes"] == 1 << 30


def test_an_explicit_stream_wins(tmp_path):
    with DurableStream(tmp_path / "s.jsonl") as stream:
        stream.append({"type": "n"})
        assert health(stream)["event_history"] == 1
        assert health()["event_history"] == 0


async def test_counts_tasks_captures_sessions_and_timers(tmp_path):
    stream = initialize_durable_stream(store_path=tmp_path / "s.jsonl", durability="none")
    registry = component_registry.register_component("task_registry", TaskRegistry(stream))
    extractor = component_registry.register_component(
        "learning_extractor", LearningExtractor(stream).attach()
    )
    tracker = SessionStateTracker(stream)
    registry.register(session_id="ses_1")
    registry.register(session_id="ses_2")
    stream.append({"type": "lifecycle.session.idle", "stream_id": "ses_1"})
    stream.request_checkpoint("ses_1", "a?", ["x"], "me")
    report = health(session_tracker=tracker)
    assert report["tasks"] == 2
    assert report["pending_captures"] == 1 == len(extractor.pending_captures)
    assert report["sessions"] == len(tracker) == 2
    # checkpoint timer + capture timer + registry cleanup task + tracker expiry timer
    assert report["timers"] == 4
    await tracker.shutdown()
    await extractor.shutdown()
    await registry.shutdown()
    stream.shutdown()
    assert health()["timers"] == 0


def test_a_failing_component_does_not_break_the_report(caplog):
    class Broken(FakeComponent):
        def stats(self) -> dict:
            raise RuntimeError("broken stats")

        def shutdown(self) -> None:
            pass

    component_registry.register_component("checkpoint_manager", Broken())
    with caplog.at_level(logging.ERROR):
        report = health()
    assert report["timers"] == 0 and "broken stats" in caplog.text


def test_package_health_is_callable_however_it_was_first_imported():
    import subprocess
    import sys

    for first in ("import opencode_addons.health", "from opencode_addons import health"):
        code = f"{first}\nimport opencode_addons\nprint(sorted(opencode_addons.health()))"
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert "rss_bytes" in out.stdout, (first, out.stderr)


def test_importing_the_package_does_not_load_the_orchestrator():
    import subprocess
    import sys

    code = (
        "import sys, opencode_addons\n"
        "print('asyncio' in sys.modules, 'opencode_addons.durable_stream' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
