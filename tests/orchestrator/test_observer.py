from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest
from fakes import MemoryCheckpointStream
from opencode_addons.orchestrator.checkpoints import CheckpointManager
from opencode_addons.orchestrator.observer import InMemorySessionClient, TaskObserver
from opencode_addons.orchestrator.task_registry import TaskRegistry, TaskState
from real_stream import real_stream


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingCheckpoints:
    def __init__(self) -> None:
        self.requests: list[tuple] = []

    def request_checkpoint(self, stream_id, decision_point, options, requested_by):
        self.requests.append((stream_id, decision_point, list(options), requested_by))
        return SimpleNamespace(id=f"cp{len(self.requests)}")


class RaisingClient(InMemorySessionClient):
    async def session_status(self, session_id: str) -> str:
        raise ConnectionError("server down")


def make(clock: Clock, client=None, **kwargs):
    registry = TaskRegistry(clock=clock, max_retries=kwargs.pop("max_retries", 2))
    client = client or InMemorySessionClient()
    observer = TaskObserver(registry, client, clock=clock, **kwargs)
    return registry, client, observer


def running_task(registry: TaskRegistry, task_id: str, session_id: str, **kwargs):
    registry.register(task_id, session_id=session_id, description=f"do {task_id}", **kwargs)
    return registry.start(task_id)


async def test_in_memory_client_records_and_validates():
    client = InMemorySessionClient(statuses={"s": "idle"}, texts={"s": "hi"})
    assert await client.session_status("s") == "idle"
    assert await client.session_status("other") == "unknown"
    assert await client.last_assistant_text("s") == "hi"
    await client.prompt("s", "go")
    assert client.prompts == [("s", "go")] and await client.session_status("s") == "busy"
    await client.delete_session("s")
    assert client.deleted == ["s"] and await client.last_assistant_text("s") is None
    with pytest.raises(ValueError):
        client.set_status("s", "sleeping")


async def test_idle_session_completes_task_with_last_text():
    clock = Clock()
    registry, client, observer = make(clock)
    running_task(registry, "t1", "s1")
    running_task(registry, "t2", "s2")
    client.set_status("s1", "idle")
    client.texts["s1"] = "all done"
    client.set_status("s2", "busy")
    await observer.check_once()
    assert registry.get("t1").state is TaskState.COMPLETED
    assert registry.get("t1").result == "all done"
    assert registry.get("t2").state is TaskState.RUNNING
    stats = observer.get_stats()
    assert stats["tasks_completed"] == 1 and stats["checks_performed"] == 1
    assert stats["last_check"] == clock.now and stats["running"] is False


async def test_timed_out_task_is_retried_up_to_the_limit_then_failed():
    clock = Clock()
    registry, client, observer = make(clock, max_retries=2, stuck_after=10_000)
    running_task(registry, "t1", "s1", timeout=10)
    client.set_status("s1", "busy")
    for expected_retries in (1, 2):
        clock.advance(10)
        await observer.check_once()
        assert registry.get("t1").retries == expected_retries
        assert registry.get("t1").state is TaskState.RUNNING
    assert client.prompts == [("s1", "Continue the task: do t1")] * 2
    clock.advance(9)
    await observer.check_once()  # not yet past the (restarted) timeout
    assert registry.get("t1").state is TaskState.RUNNING
    clock.advance(1)
    await observer.check_once()
    task = registry.get("t1")
    assert task.state is TaskState.FAILED and "timed out" in (task.error or "")
    stats = observer.get_stats()
    assert (stats["tasks_retried"], stats["tasks_failed"]) == (2, 1)
    assert len(client.prompts) == 2


async def test_stuck_task_is_marked_stale_and_a_checkpoint_requested():
    clock = Clock()
    checkpoints = RecordingCheckpoints()
    registry, client, observer = make(clock, checkpoints=checkpoints, stuck_after=60)
    running_task(registry, "t1", "s1", timeout=1_000)
    running_task(registry, "t2", "s2", timeout=1_000)
    client.set_status("s1", "busy")
    client.set_status("s2", "busy")
    clock.advance(30)
    registry.heartbeat("t2")
    clock.advance(30)
    await observer.check_once()
    assert registry.get("t1").state is TaskState.STALE
    assert registry.get("t2").state is TaskState.RUNNING
    assert len(checkpoints.requests) == 1
    stream_id, decision_point, options, requested_by = checkpoints.requests[0]
    assert stream_id == "s1" and "t1" in decision_point
    assert options == ["retry", "abort"] and requested_by == "task-observer"
    assert registry.get("t1").metadata["checkpoint_id"] == "cp1"
    assert observer.get_stats()["tasks_stale"] == 1


async def test_stuck_task_with_checkpoint_manager_creates_a_pending_checkpoint():
    clock = Clock()
    stream = MemoryCheckpointStream()
    manager = CheckpointManager(stream, default_timeout=5.0)
    registry, _client, observer = make(clock, checkpoints=manager, stuck_after=60)
    running_task(registry, "t1", "s1", timeout=1_000)
    clock.advance(60)
    await observer.check_once()
    checkpoint_id = registry.get("t1").metadata["checkpoint_id"]
    assert manager.pending == 1 and manager.get(checkpoint_id) is not None
    assert stream.of_type("checkpoint.requested")[0]["stream_id"] == "s1"
    await manager.shutdown()


async def test_session_error_fails_the_task():
    clock = Clock()
    registry, client, observer = make(clock)
    running_task(registry, "t1", "s1")
    client.set_status("s1", "error")
    await observer.check_once()
    assert registry.get("t1").state is TaskState.FAILED


async def test_pass_cleans_up_the_registry():
    clock = Clock()
    registry, _client, observer = make(clock)
    running_task(registry, "t1", "s1")
    registry.complete("t1")
    clock.advance(3_600)
    await observer.check_once()
    assert "t1" not in registry


async def test_client_errors_are_counted_and_timeouts_still_detected(caplog):
    clock = Clock()
    registry, _client, observer = make(clock, client=RaisingClient(), max_retries=0)
    running_task(registry, "t1", "s1", timeout=5)
    clock.advance(5)
    with caplog.at_level(logging.ERROR):
        await observer.check_once()
    assert observer.get_stats()["errors"] == 1
    assert registry.get("t1").state is TaskState.FAILED
    assert "session_status failed" in caplog.text


async def test_loop_survives_raising_passes_and_keeps_counting(monkeypatch):
    clock = Clock()
    registry, _client, observer = make(clock, base_interval=0.01, max_interval=0.01)
    running_task(registry, "t1", "s1")

    def broken_cleanup(max_age=None):
        raise RuntimeError("cleanup exploded")

    monkeypatch.setattr(registry, "cleanup", broken_cleanup)
    observer.start()
    for _ in range(100):
        if observer.get_stats()["checks_performed"] >= 3:
            break
        await asyncio.sleep(0.01)
    stats = observer.get_stats()
    assert stats["checks_performed"] >= 3 and stats["errors"] >= 3
    assert stats["running"] is True
    await observer.shutdown()


async def test_loop_survives_an_unexpected_exception_in_check_once(monkeypatch):
    clock = Clock()
    _registry, _client, observer = make(clock, base_interval=0.01, max_interval=0.01)
    calls = 0
    real_check = observer.check_once

    async def flaky_check():
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        await real_check()

    monkeypatch.setattr(observer, "check_once", flaky_check)
    observer.start()
    for _ in range(100):
        if observer.get_stats()["checks_performed"] >= 2:
            break
        await asyncio.sleep(0.01)
    assert observer.running and observer.get_stats()["errors"] == 1
    assert observer.get_stats()["checks_performed"] >= 2
    await observer.shutdown()


async def test_interval_doubles_while_idle_and_resets_when_tasks_are_active():
    clock = Clock()
    registry, _client, observer = make(clock, base_interval=5.0, max_interval=60.0)
    seen = []
    for _ in range(5):
        await observer.check_once()
        seen.append(observer.current_interval)
    assert seen == [10.0, 20.0, 40.0, 60.0, 60.0]
    registry.register("t1", session_id="s1")
    await observer.check_once()
    assert observer.current_interval == 5.0


async def test_stop_cancels_its_task_and_unsubscribes():
    stream = real_stream()
    clock = Clock()
    _registry, _client, observer = make(clock, stream=stream, base_interval=0.01)
    observer.start()
    observer.start()  # idempotent: still one task
    assert len(asyncio.all_tasks()) == 2
    assert stream.subscriber_count() > 0
    observer.stop()
    observer.stop()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert stream.subscriber_count() == 0
    assert observer.get_stats()["running"] is False


async def test_shutdown_awaits_the_cancelled_task_and_is_idempotent():
    clock = Clock()
    _registry, _client, observer = make(clock, base_interval=0.01)
    observer.start()
    await observer.shutdown()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    await observer.shutdown()
    observer.start()  # restartable after shutdown
    assert observer.running
    await observer.shutdown()
    assert asyncio.all_tasks() == {asyncio.current_task()}


def test_start_needs_a_running_loop():
    _registry, _client, observer = make(Clock())
    with pytest.raises(RuntimeError):
        observer.start()


async def test_terminal_session_events_drop_that_sessions_tasks():
    stream = real_stream()
    clock = Clock()
    registry, _client, observer = make(clock, stream=stream, base_interval=10)
    for i, session in enumerate(["s1", "s1", "s2", "s3"]):
        registry.register(f"t{i}", session_id=session)
    observer.start()
    stream.append({"type": "session.deleted", "stream_id": "x", "payload": {"sessionID": "s1"}})
    assert {t.session_id for t in registry.tasks.values()} == {"s2", "s3"}
    stream.append({"type": "lifecycle.session.end", "stream_id": "s2", "payload": {}})
    assert {t.session_id for t in registry.tasks.values()} == {"s3"}
    stream.append({"type": "plugin.shutdown", "stream_id": "system", "payload": {}})
    assert len(registry) == 0
    assert observer.get_stats()["sessions_dropped"] == 3
    await observer.shutdown()


def test_invalid_intervals_are_rejected():
    registry = TaskRegistry()
    client = InMemorySessionClient()
    with pytest.raises(ValueError):
        TaskObserver(registry, client, base_interval=0)
    with pytest.raises(ValueError):
        TaskObserver(registry, client, base_interval=10, max_interval=5)
