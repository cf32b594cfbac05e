"""Every component follows the Component contract, and shutdown_all stops any registered one:
the reference's components in the reference's order, then the others in registration order."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import opencode_addons
import pytest
from opencode_addons import component_registry
from opencode_addons.component import Component
from opencode_addons.durable_stream import DurableStream
from opencode_addons.memory_lane import MemoryLaneStore
from opencode_addons.orchestrator import (
    CheckpointManager,
    EventDrivenLedger,
    InMemorySessionClient,
    LearningExtractor,
    SessionStateTracker,
    TaskObserver,
    TaskRegistry,
)
from opencode_addons.shutdown import shutdown_all


@pytest.fixture(autouse=True)
def clean_registry():
    component_registry.clear()
    yield
    component_registry.clear()


async def build_all(tmp_path) -> list[Component]:
    stream = DurableStream(tmp_path / "events.jsonl")
    registry = TaskRegistry(stream)
    return [
        TaskObserver(registry, InMemorySessionClient(), stream=stream),
        registry,
        CheckpointManager(stream),
        LearningExtractor(stream),
        EventDrivenLedger(stream, tmp_path / "LEDGER.md"),
        stream,
        MemoryLaneStore(),
        SessionStateTracker(stream),
    ]


async def test_every_component_implements_the_contract(tmp_path):
    components = await build_all(tmp_path)
    names = [c.name for c in components]
    assert names == [*component_registry.SHUTDOWN_ORDER, "session_state_tracker"]
    for component in components:
        assert isinstance(component, Component), component
        assert component.closed is False
        assert isinstance(component.stats(), dict)
        component_registry.register_component(component.name, component)
    report = await shutdown_all(timeout_per_component=5)
    assert report.ok, str(report)
    assert [step.name for step in report.steps] == names
    assert all(component.closed for component in components)
    assert component_registry.registered() == {}


async def test_other_components_stop_after_the_reference_ones_in_registration_order(tmp_path):
    stopped: list[str] = []

    class Recorder:
        closed = False

        def __init__(self, name: str) -> None:
            self.name = name

        def stats(self) -> dict:
            return {}

        def shutdown(self) -> None:
            stopped.append(self.name)
            self.closed = True

    for name in ("zeta", "durable_stream", "alpha", "task_observer"):
        component_registry.register_component(name, Recorder(name))
    report = await shutdown_all()
    assert stopped == ["task_observer", "durable_stream", "zeta", "alpha"]
    assert [s.name for s in report.steps if s.outcome == "ok"] == stopped


def test_the_stream_layer_loads_no_orchestration():
    code = (
        "import sys, opencode_addons.durable_stream, opencode_addons.stream_singleton\n"
        "print('sqlite3' in sys.modules, any('orchestrator' in m for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_only_the_orchestrator_and_the_cli_hosts_import_the_orchestrator():
    package = Path(opencode_addons.__file__).parent
    offenders = []
    # The soak and the recorder are CLI entry points that assemble the orchestration.
    hosts = {"soak.py", "recorder.py"}
    for path in package.rglob("*.py"):
        relative = path.relative_to(package).as_posix()
        if relative.startswith("orchestrator/") or relative in hosts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n.startswith("opencode_addons.orchestrator") for n in names):
                offenders.append(relative)
    assert offenders == []
