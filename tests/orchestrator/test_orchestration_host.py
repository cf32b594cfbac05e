"""Orchestration: the default components around one real DurableStream, assembled in one place,
listed and stopped in the reference's shutdown order."""

from __future__ import annotations

import pytest
from opencode_addons import component_registry
from opencode_addons.durable_stream import DurableStream
from opencode_addons.memory_lane import MemoryLaneStore
from opencode_addons.orchestrator import InMemorySessionClient, Orchestration, TaskRegistry
from opencode_addons.orchestrator import host as host_module
from real_stream import real_stream

DEFAULT_NAMES = [*component_registry.SHUTDOWN_ORDER, "session_state_tracker"]


@pytest.fixture(autouse=True)
def clean_registry():
    component_registry.clear()
    yield
    component_registry.clear()


class Extra:
    """A minimal Component a host adds."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    def stats(self) -> dict:
        return {}

    def shutdown(self) -> None:
        self.closed = True


def event(event_type: str, session_id: str) -> dict:
    return {"type": event_type, "stream_id": "bridge", "payload": {"sessionID": session_id}}


def test_components_are_listed_in_the_shutdown_order(tmp_path):
    stream = real_stream()
    orchestration = Orchestration(stream, tmp_path)
    components = orchestration.components()
    assert list(components) == DEFAULT_NAMES
    assert all(component.name == name for name, component in components.items())
    assert components["durable_stream"] is stream
    assert components["task_registry"] is orchestration.registry
    assert components["session_state_tracker"] is orchestration.tracker
    assert (tmp_path / host_module.MEMORY_LANE_FILE).exists()
    assert orchestration.extractor.memory_lane is orchestration.memory_lane


def test_added_components_come_after_the_default_ones_in_the_order_added(tmp_path):
    orchestration = Orchestration(real_stream(), tmp_path)
    first, second = Extra("zeta"), Extra("alpha")
    assert orchestration.add("zeta", first) is first
    orchestration.add("alpha", second)
    assert list(orchestration.components()) == [*DEFAULT_NAMES, "zeta", "alpha"]
    with pytest.raises(ValueError, match="already has a component named 'task_registry'"):
        orchestration.add("task_registry", Extra("task_registry"))
    with pytest.raises(ValueError, match="non-empty str"):
        orchestration.add("", Extra("x"))
    with pytest.raises(TypeError, match="is not a Component"):
        orchestration.add("plain", object())


def test_settings_reach_the_components(tmp_path):
    seen: list[TaskRegistry] = []
    client = InMemorySessionClient()

    def make_client(registry: TaskRegistry) -> InMemorySessionClient:
        seen.append(registry)
        return client

    orchestration = Orchestration(
        real_stream(),
        tmp_path,
        max_finished=10,
        session_ttl=600.0,
        capture_delay=0.0,
        session_client=make_client,
        observer_interval=(0.05, 0.5),
        memory_lane_items=50,
        max_ended_sessions=7,
    )
    assert seen == [orchestration.registry]
    assert orchestration.tracker.max_ended == 7
    assert orchestration.memory_lane.stats()["max_items"] == 50
    assert orchestration.client is client
    assert orchestration.tracker.stats()["ttl"] == 600.0
    assert orchestration.extractor.capture_delay == 0.0
    assert orchestration.observer.current_interval == 0.05
    for index in range(15):
        task = orchestration.registry.register(session_id="s1", description=f"t{index}")
        orchestration.registry.start(task.id)
        orchestration.registry.complete(task.id, result="done")
    # A cleanup keeps the newest max_finished finished tasks, however young.
    assert orchestration.registry.cleanup(max_age=3600.0) == 5
    assert len(orchestration.registry.by_session("s1")) == 10


def test_register_and_unregister(tmp_path):
    orchestration = Orchestration(real_stream(), tmp_path)
    orchestration.add("extra", Extra("extra"))
    orchestration.register()
    assert component_registry.registered() == orchestration.components()
    # A component registered under one of its names since then is not removed.
    replacement = Extra("extra")
    component_registry.register_component("extra", replacement)
    orchestration.unregister()
    assert component_registry.registered() == {"extra": replacement}


def test_a_dropped_session_forgets_its_tasks(tmp_path):
    stream = real_stream()
    orchestration = Orchestration(stream, tmp_path)
    registry = orchestration.registry
    for session_id in ("s1", "s2"):
        stream.append(event("message.completed", session_id))
        registry.start(registry.register(session_id=session_id, description="work").id)
    stream.append(event("session.deleted", "s1"))
    assert "s1" not in orchestration.tracker
    assert registry.by_session("s1") == []
    assert [t.session_id for t in registry.by_session("s2")] == ["s2"]


async def test_start_then_shutdown_all_closes_everything(tmp_path):
    stream = real_stream()
    orchestration = Orchestration(stream, tmp_path)
    orchestration.add("extra", Extra("extra"))
    orchestration.register()
    orchestration.start()
    assert orchestration.observer.running
    assert orchestration.tracker.expiry_armed
    stream.append(event("message.completed", "s1"))
    report = await orchestration.shutdown_all(timeout_per_component=5.0)
    assert report.ok, str(report)
    assert [step.name for step in report.steps] == [*DEFAULT_NAMES, "extra"]
    assert all(component.closed for component in orchestration.components().values())
    assert not orchestration.observer.running
    assert not orchestration.tracker.expiry_armed
    assert (tmp_path / host_module.LEDGER_FILE).exists()
    orchestration.unregister()
    assert component_registry.registered() == {}
    # The store's lock was released: it opens again at once, with the event.
    with DurableStream(stream.path) as reopened:
        assert "message.completed" in [e["type"] for e in reopened.get_event_history()]


def test_a_failed_assembly_closes_the_memory_lane(tmp_path, monkeypatch):
    lanes: list[MemoryLaneStore] = []

    class RecordedLane(MemoryLaneStore):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            lanes.append(self)

    def broken_client(_registry: TaskRegistry) -> InMemorySessionClient:
        raise RuntimeError("no session client")

    monkeypatch.setattr(host_module, "MemoryLaneStore", RecordedLane)
    with pytest.raises(RuntimeError, match="no session client"):
        Orchestration(real_stream(), tmp_path, session_client=broken_client)
    assert len(lanes) == 1 and lanes[0].closed
