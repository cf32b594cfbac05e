from __future__ import annotations

import asyncio

import pytest
from fakes import MemoryEventStream
from opencode_addons.orchestrator.task_registry import FINISHED_STATES, TaskRegistry, TaskState
from real_stream import real_stream


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_register_defaults_and_lookup():
    clock = Clock()
    registry = TaskRegistry(default_timeout=30.0, max_retries=3, clock=clock)
    task = registry.register("t1", session_id="s1", description="write docs", metadata={"k": 1})
    assert task.state is TaskState.PENDING
    assert (task.timeout, task.max_retries, task.retries) == (30.0, 3, 0)
    assert task.created_at == task.updated_at == clock.now
    assert task.metadata == {"k": 1}
    assert registry.get("t1") is task
    assert "t1" in registry and len(registry) == 1
    assert [t.id for t in registry.by_session("s1")] == ["t1"]
    generated = registry.register(session_id="s1")
    assert generated.id.startswith("task_") and generated.id != "t1"


def test_register_rejects_duplicates_and_bad_arguments():
    registry = TaskRegistry()
    registry.register("t1", session_id="s1")
    with pytest.raises(ValueError, match="t1"):
        registry.register("t1", session_id="s2")
    with pytest.raises(TypeError):
        registry.register(session_id=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        registry.register(session_id="")
    with pytest.raises(ValueError):
        registry.register(session_id="s", timeout=0)
    with pytest.raises(TypeError):
        registry.register(session_id="s", max_retries=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        registry.register(session_id="s", metadata=["x"])  # type: ignore[arg-type]
    assert len(registry) == 1


def test_unknown_ids_raise_key_error_naming_the_id():
    registry = TaskRegistry()
    for method in (registry.get, registry.start, registry.heartbeat, registry.mark_stale):
        with pytest.raises(KeyError, match="nope"):
            method("nope")
    with pytest.raises(KeyError, match="nope"):
        registry.fail("nope", "x")


def test_lifecycle_transitions_record_times():
    clock = Clock()
    registry = TaskRegistry(clock=clock)
    registry.register("t1", session_id="s1")
    clock.advance(1)
    task = registry.start("t1")
    assert task.state is TaskState.RUNNING and task.started_at == clock.now
    clock.advance(2)
    registry.heartbeat("t1")
    assert task.last_heartbeat == clock.now
    clock.advance(3)
    registry.complete("t1", result="done")
    assert task.state is TaskState.COMPLETED
    assert task.result == "done" and task.finished_at == clock.now
    with pytest.raises(ValueError):
        registry.fail("t1", "late")
    with pytest.raises(ValueError):
        registry.heartbeat("t1")
    with pytest.raises(ValueError):
        registry.start("t1")


def test_retry_until_the_limit():
    registry = TaskRegistry(max_retries=2)
    registry.register("t1", session_id="s1")
    registry.start("t1")
    assert registry.retry("t1") is True
    registry.mark_timeout("t1")
    assert registry.retry("t1") is True
    task = registry.get("t1")
    assert task.retries == 2 and task.state is TaskState.RUNNING and task.finished_at is None
    assert registry.retry("t1") is False
    assert task.retries == 2


def test_block_and_fail_keep_the_reason():
    registry = TaskRegistry()
    registry.register("a", session_id="s")
    registry.register("b", session_id="s")
    assert registry.block("a", "needs approval").error == "needs approval"
    assert registry.fail("b", "boom").error == "boom"
    assert registry.get("a").state is TaskState.BLOCKED


def test_tasks_view_is_read_only():
    registry = TaskRegistry()
    registry.register("t1", session_id="s1")
    view = registry.tasks
    with pytest.raises(TypeError):
        view["x"] = None  # type: ignore[index]
    registry.register("t2", session_id="s1")
    assert set(view) == {"t1", "t2"}


def _one_task_per_state(registry: TaskRegistry) -> None:
    registry.register("pending", session_id="s")
    registry.register("running", session_id="s")
    registry.start("running")
    transitions = {
        "completed": lambda i: registry.complete(i),
        "failed": lambda i: registry.fail(i, "x"),
        "timeout": registry.mark_timeout,
        "stale": registry.mark_stale,
        "blocked": lambda i: registry.block(i, "y"),
    }
    for task_id, finish in transitions.items():
        registry.register(task_id, session_id="s")
        registry.start(task_id)
        finish(task_id)


def test_cleanup_removes_every_finished_state_and_keeps_active_ones():
    clock = Clock()
    registry = TaskRegistry(clock=clock, max_age=100.0)
    _one_task_per_state(registry)
    assert {t.state for t in registry.tasks.values()} == set(TaskState)
    clock.advance(99)
    assert registry.cleanup() == 0
    clock.advance(1)
    assert registry.cleanup() == len(FINISHED_STATES) == 5
    assert set(registry.tasks) == {"pending", "running"}
    assert registry.stats()["cleaned_up"] == 5
    assert [t.id for t in registry.by_session("s")] == ["pending", "running"]


def test_cleanup_with_explicit_max_age_zero_removes_all_finished():
    registry = TaskRegistry()
    _one_task_per_state(registry)
    assert registry.cleanup(max_age=0) == 5
    assert len(registry) == 2
    with pytest.raises(ValueError):
        registry.cleanup(max_age=-1)


def test_registration_driven_cleanup_keeps_registry_bounded_without_a_loop():
    clock = Clock()
    registry = TaskRegistry(clock=clock, max_age=10.0, cleanup_interval=1e9, cleanup_every=50)
    peak = 0
    for i in range(2_000):
        task = registry.register(session_id=f"s{i % 7}")
        registry.start(task.id)
        registry.complete(task.id)
        clock.advance(1.0)
        peak = max(peak, len(registry))
    # Tasks older than max_age (10 registrations) go at the next cleanup (every 50).
    assert peak <= 60
    assert registry.stats()["cleaned_up"] >= 2_000 - 60


def test_finished_cap_bounds_registry_even_when_nothing_is_old():
    registry = TaskRegistry(max_finished=20, cleanup_every=10)
    for _ in range(500):
        task = registry.register(session_id="s")
        registry.fail(task.id, "x")
    assert len(registry) <= 30
    keep = registry.register("active", session_id="s")
    for _ in range(100):
        registry.fail(registry.register(session_id="s").id, "x")
    assert "active" in registry and keep.state is TaskState.PENDING


def test_remove_session_forgets_its_tasks_only():
    registry = TaskRegistry()
    for i in range(3):
        registry.register(f"a{i}", session_id="A")
    registry.register("b0", session_id="B")
    assert registry.remove_session("A") == 3
    assert registry.remove_session("A") == 0
    assert set(registry.tasks) == {"b0"}
    assert registry.by_session("A") == []


def test_state_changes_append_task_events_on_the_session_stream():
    stream = real_stream()
    registry = TaskRegistry(stream, max_retries=1)
    registry.register("t1", session_id="s1", description="d")
    registry.start("t1")
    registry.retry("t1")
    registry.mark_stale("t1")
    assert registry.retry("t1") is False  # limit of 1 reached: no event
    registry.block("t1", "why")
    registry.register("t2", session_id="s2")
    registry.start("t2")
    registry.mark_timeout("t2")
    registry.fail("t2", "err")
    registry.register("t3", session_id="s3")
    registry.complete("t3", result=7)
    types = [e["type"] for e in stream.events]
    assert types == [
        "task.registered",
        "task.started",
        "task.retried",
        "task.stale",
        "task.blocked",
        "task.registered",
        "task.started",
        "task.timeout",
        "task.failed",
        "task.registered",
        "task.completed",
    ]
    for event in stream.events:
        assert event["payload"]["task_id"] in {"t1", "t2", "t3"}
        assert event["stream_id"] == registry.get(event["payload"]["task_id"]).session_id
    assert stream.of_type("task.completed")[0]["payload"]["result"] == 7
    assert stream.subscriber_count() == 0


def test_a_failing_stream_does_not_break_state_changes():
    class BrokenStream(MemoryEventStream):
        def append(self, event):
            raise RuntimeError("closed")

    registry = TaskRegistry(BrokenStream())
    registry.register("t1", session_id="s1")
    registry.start("t1")
    assert registry.get("t1").state is TaskState.RUNNING
    assert registry.stats()["event_errors"] == 2


def test_stats_counts_by_state():
    registry = TaskRegistry()
    _one_task_per_state(registry)
    stats = registry.stats()
    for state in TaskState:
        assert stats[state.value] == 1
    assert stats["total"] == 7 and stats["active"] == 2 and stats["cleaned_up"] == 0


async def test_auto_cleanup_task_runs_and_shutdown_cancels_it():
    clock = Clock()
    registry = TaskRegistry(clock=clock, max_age=5.0, cleanup_interval=0.01, cleanup_every=10**6)
    registry.register("done", session_id="s")  # starts the task lazily: a loop is running
    assert registry.auto_cleanup_running
    registry.complete("done")
    clock.advance(10)
    for _ in range(50):
        if "done" not in registry:
            break
        await asyncio.sleep(0.01)
    assert "done" not in registry
    await registry.shutdown()
    await registry.shutdown()
    assert not registry.auto_cleanup_running
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_start_auto_cleanup_is_idempotent_and_refused_after_shutdown():
    registry = TaskRegistry(cleanup_interval=0.05)
    registry.start_auto_cleanup()
    registry.start_auto_cleanup()
    assert len(asyncio.all_tasks()) == 2
    await registry.shutdown()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    with pytest.raises(RuntimeError):
        registry.start_auto_cleanup()
    registry.register("t", session_id="s")  # still usable, but no task is started
    assert asyncio.all_tasks() == {asyncio.current_task()}


def test_start_auto_cleanup_needs_a_running_loop():
    with pytest.raises(RuntimeError):
        TaskRegistry().start_auto_cleanup()
