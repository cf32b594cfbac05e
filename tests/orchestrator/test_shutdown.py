from __future__ import annotations

import asyncio
import threading
import time

import pytest
from fakes import FakeComponent, MemoryCheckpointStream
from opencode_addons import component_registry
from opencode_addons.component_registry import SHUTDOWN_ORDER
from opencode_addons.orchestrator.checkpoints import CheckpointManager
from opencode_addons.orchestrator.observer import InMemorySessionClient, TaskObserver
from opencode_addons.orchestrator.task_registry import TaskRegistry
from opencode_addons.shutdown import (
    ShutdownReport,
    ShutdownStep,
    shutdown_all,
    shutdown_all_sync,
)


@pytest.fixture(autouse=True)
def clean_runtime():
    component_registry.clear()
    yield
    component_registry.clear()


class AsyncComponent(FakeComponent):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    async def shutdown(self) -> None:
        await asyncio.sleep(0)
        self.log.append(self.name)


class SyncComponent(FakeComponent):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log
        self.thread: str | None = None

    def shutdown(self) -> None:
        self.thread = threading.current_thread().name
        self.log.append(self.name)


class RaisingComponent(FakeComponent):
    def shutdown(self) -> None:
        raise OSError("disk gone")


class HangingAsyncComponent(FakeComponent):
    def __init__(self) -> None:
        self.cancelled = False

    async def shutdown(self) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            self.cancelled = True
            raise


class HangingSyncComponent(FakeComponent):
    def __init__(self) -> None:
        self.release = threading.Event()

    def shutdown(self) -> None:
        self.release.wait(5)


def register_all(log: list[str]) -> None:
    # Registered in reverse to show that the order comes from SHUTDOWN_ORDER, not registration.
    for i, name in enumerate(reversed(SHUTDOWN_ORDER)):
        component = AsyncComponent(name, log) if i % 2 else SyncComponent(name, log)
        component_registry.register_component(name, component)


async def test_components_stop_in_reference_order():
    log: list[str] = []
    register_all(log)
    report = await shutdown_all(timeout_per_component=1.0)
    assert log == list(SHUTDOWN_ORDER)
    assert [s.name for s in report.steps] == list(SHUTDOWN_ORDER)
    assert all(s.outcome == "ok" for s in report.steps) and report.ok
    assert all(s.duration_s >= 0 for s in report.steps)


async def test_sync_shutdown_runs_in_a_dedicated_thread():
    log: list[str] = []
    component = SyncComponent("durable_stream", log)
    await shutdown_all(components={"durable_stream": component})
    assert component.thread == "shutdown-durable_stream"


async def test_errors_and_timeouts_are_isolated_and_reported():
    log: list[str] = []
    hanging_async = HangingAsyncComponent()
    hanging_sync = HangingSyncComponent()
    components = {
        "task_observer": RaisingComponent(),
        "task_registry": hanging_async,
        "checkpoint_manager": AsyncComponent("checkpoint_manager", log),
        "learning_extractor": hanging_sync,
        "event_driven_ledger": SyncComponent("event_driven_ledger", log),
        "durable_stream": object(),  # no shutdown() at all
        "memory_lane_store": AsyncComponent("memory_lane_store", log),
    }
    started = time.perf_counter()
    report = await shutdown_all(timeout_per_component=0.05, components=components)
    elapsed = time.perf_counter() - started
    hanging_sync.release.set()
    outcomes = {s.name: s.outcome for s in report.steps}
    assert outcomes == {
        "task_observer": "error",
        "task_registry": "timeout",
        "checkpoint_manager": "ok",
        "learning_extractor": "timeout",
        "event_driven_ledger": "ok",
        "durable_stream": "error",
        "memory_lane_store": "ok",
    }
    assert log == ["checkpoint_manager", "event_driven_ledger", "memory_lane_store"]
    assert "OSError: disk gone" in report.step("task_observer").message
    assert "no shutdown()" in report.step("durable_stream").message
    assert hanging_async.cancelled
    assert not report.ok
    # Two components hang forever: finishing at all (with 0.05 s timeouts) is the point.
    assert elapsed < 5.0
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_sync_shutdown_returning_an_awaitable_is_awaited():
    done = []

    class Hybrid(FakeComponent):
        def shutdown(self):
            async def finish():
                done.append(True)

            return finish()

    report = await shutdown_all(components={"durable_stream": Hybrid()})
    assert done == [True] and report.step("durable_stream").outcome == "ok"


async def test_second_call_is_harmless_and_reports_not_started():
    log: list[str] = []
    register_all(log)
    first = await shutdown_all()
    assert component_registry.registered() == {}
    second = await shutdown_all()
    assert log == list(SHUTDOWN_ORDER)
    assert [s.outcome for s in second.steps] == ["not started"] * len(SHUTDOWN_ORDER)
    assert first.ok and second.ok


async def test_unregistered_names_are_not_started_and_extras_run_last():
    log: list[str] = []
    components = {
        "custom": AsyncComponent("custom", log),
        "durable_stream": AsyncComponent("durable_stream", log),
    }
    report = await shutdown_all(components=components)
    assert log == ["durable_stream", "custom"]
    assert report.step("task_observer").outcome == "not started"
    assert [s.name for s in report.steps][-1] == "custom"


async def test_real_components_shut_down_cleanly():
    stream = MemoryCheckpointStream()
    registry = TaskRegistry(stream, cleanup_interval=0.05)
    registry.start_auto_cleanup()
    manager = CheckpointManager(stream)
    pending = manager.request("s", "q", ["a"], "agent")
    observer = TaskObserver(registry, InMemorySessionClient(), stream=stream, base_interval=0.01)
    observer.start()
    component_registry.register_component("task_observer", observer)
    component_registry.register_component("task_registry", registry)
    component_registry.register_component("checkpoint_manager", manager)
    report = await shutdown_all(timeout_per_component=1.0)
    assert report.ok, str(report)
    assert (await pending).reason == "shutdown"
    assert stream.subscriber_count() == 0
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert component_registry.get_component("task_observer") is None


def test_report_str_is_an_aligned_table_with_every_name():
    report = ShutdownReport(
        [
            ShutdownStep("task_observer", "ok", "", 0.0012),
            ShutdownStep("durable_stream", "timeout", "did not finish within 5s", 5.0),
            ShutdownStep("memory_lane_store", "not started", "not registered", 0.0),
        ]
    )
    text = str(report)
    lines = text.splitlines()
    assert len(lines) == 4
    for name in ("task_observer", "durable_stream", "memory_lane_store"):
        assert name in text
    assert "did not finish within 5s" in text and "5000.0 ms" in text
    outcome_columns = {line.index(word) for line, word in zip(lines[1:], ["ok", "timeout", "not"])}
    assert len(outcome_columns) == 1
    assert not report.ok


def test_shutdown_all_sync_without_a_loop():
    log: list[str] = []
    register_all(log)
    report = shutdown_all_sync(timeout_per_component=1.0)
    assert report.ok and log == list(SHUTDOWN_ORDER)


async def test_shutdown_all_sync_inside_a_loop_raises():
    with pytest.raises(RuntimeError, match="await shutdown_all"):
        shutdown_all_sync()


async def test_invalid_timeout_is_rejected():
    with pytest.raises(ValueError):
        await shutdown_all(timeout_per_component=0)


def test_component_registry_api():
    with pytest.raises(TypeError, match=r"object is not a Component: it has no shutdown\(\), "):
        component_registry.register_component("durable_stream", object())
    with pytest.raises(ValueError, match="non-empty str"):
        component_registry.register_component("", FakeComponent())
    component = FakeComponent()
    assert component_registry.register_component("durable_stream", component) is component
    assert component_registry.get_component("durable_stream") is component
    assert component_registry.registered() == {"durable_stream": component}
    other = FakeComponent()
    assert component_registry.unregister("durable_stream", other) is None
    assert component_registry.unregister("durable_stream") is component
    assert component_registry.get_component("durable_stream") is None
    created = component_registry.get_or_create("task_registry", TaskRegistry)
    assert component_registry.get_or_create("task_registry", TaskRegistry) is created
    component_registry.clear()
    assert component_registry.registered() == {}
