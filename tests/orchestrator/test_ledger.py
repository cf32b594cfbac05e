"""EventDrivenLedger: the model, every rendered section, atomic debounced writes, bounds."""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict

import pytest
from fakes import MemoryEventStream, eventually
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opencode_addons.events import (
    AGENT_COMPLETED,
    AGENT_SPAWNED,
    CHECKPOINT_APPROVED,
    CHECKPOINT_REJECTED,
    CHECKPOINT_REQUESTED,
    LEARNING_CAPTURED,
    LEDGER_STREAM,
    PLUGIN_SHUTDOWN,
    SESSION_ABORTED,
    SESSION_DELETED,
    SESSION_END,
)
from opencode_addons.orchestrator.ledger import EventDrivenLedger
from real_stream import real_stream


def task(stream, suffix, task_id, stream_id="ses_1", **payload):
    return stream.append(
        {
            "type": f"task.{suffix}",
            "stream_id": stream_id,
            "payload": {"task_id": task_id, **payload},
        }
    )


def ledger_events(stream, event_type=None):
    return [
        e
        for e in stream.events
        if e["type"].startswith("ledger.") and (event_type is None or e["type"] == event_type)
    ]


def populate(stream):
    stream.append(
        {
            "type": AGENT_SPAWNED,
            "stream_id": "ses_1",
            "payload": {"intent_id": "int_1", "agent": "builder", "intent": "Build the cache"},
        }
    )
    task(stream, "registered", "t1", description="write LRU | bounded")
    task(stream, "started", "t1")
    task(stream, "registered", "t2", description="add tests")
    task(stream, "failed", "t2")
    stream.append(
        {"type": CHECKPOINT_REQUESTED, "stream_id": "ses_1", "payload": {"checkpoint_id": "cp1"}}
    )
    stream.append(
        {
            "type": CHECKPOINT_REQUESTED,
            "stream_id": "ses_1",
            "payload": {"checkpoint_id": "cp2", "question": "Deploy to prod?"},
        }
    )
    stream.append(
        {
            "type": CHECKPOINT_APPROVED,
            "stream_id": "ses_1",
            "payload": {"checkpoint_id": "cp1", "by": "alice", "reason": "looks safe"},
        }
    )
    stream.append(
        {
            "type": LEARNING_CAPTURED,
            "stream_id": "ses_1",
            "actor": "learning",
            "payload": {
                "kind": "correction",
                "content": "use functools.lru_cache",
                "confidence": 0.9,
            },
        }
    )


def test_model_and_every_section_render():
    stream = real_stream()
    ledger = EventDrivenLedger(stream, path=None)
    populate(stream)
    text = ledger.render()
    for heading in ("## Meta", "## Governance", "## Epics", "## Learnings", "## Handoff"):
        assert heading in text
    assert text.index("## Meta") < text.index("## Governance") < text.index("## Epics")
    assert f"- Run: `{stream.run_id}`" in text
    assert "| cp1 | approved | alice | looks safe |" in text
    assert "### ses_1: ses_1 (active)" in text  # the task.* stream epic
    assert "### int_1: Build the cache (active)" in text  # the spawned intent epic
    assert "| t1 | write LRU \\| bounded | running |" in text
    assert "| t2 | add tests | failed |" in text
    assert "**correction** (0.90, ses_1): use functools.lru_cache" in text
    handoff = text[text.index("## Handoff") :]
    assert "- cp2: Deploy to prod?" in handoff
    assert "cp1" not in handoff  # resolved checkpoints are no longer open
    assert "- t1 (running) in ses_1: write LRU \\| bounded" in handoff
    assert "## Archive" in text and "_Nothing archived._" in text
    assert ledger.handoff()["open_checkpoints"] == ["cp2"]


def test_emits_ledger_events_without_recursion():
    stream = real_stream()
    ledger = EventDrivenLedger(stream, path=None)
    populate(stream)
    created = ledger_events(stream, "ledger.epic.created")
    assert sorted(e["payload"]["epic_id"] for e in created) == ["int_1", "ses_1"]
    updates = ledger_events(stream, "ledger.task.updated")
    assert [(e["payload"]["task_id"], e["payload"]["state"]) for e in updates] == [
        ("agent:builder", "running"),
        ("t1", "pending"),
        ("t1", "running"),
        ("t2", "pending"),
        ("t2", "failed"),
    ]
    assert len(ledger_events(stream, "ledger.learning.added")) == 1
    assert len(ledger_events(stream, "ledger.governance.decision")) == 1
    for event in ledger_events(stream):
        assert event["stream_id"] == LEDGER_STREAM
        assert event["actor"] == "ledger"
    non_ledger = [e for e in stream.events if not e["type"].startswith("ledger.")]
    # Only the input events were counted: the ledger never consumed its own output.
    assert ledger.stats()["events_seen"] == len(non_ledger)
    assert ledger.stats()["lineage"] == len(non_ledger)
    assert len(ledger_events(stream)) == 5 + 2 + 1 + 1


def test_rejected_checkpoint_goes_to_governance():
    stream = real_stream()
    ledger = EventDrivenLedger(stream, path=None)
    stream.append(
        {
            "type": CHECKPOINT_REJECTED,
            "stream_id": "s",
            "actor": "bob",
            "payload": {"checkpoint_id": "cp9", "comment": "too risky"},
        }
    )
    assert "| cp9 | rejected | bob | too risky |" in ledger.render()


def test_completed_epics_move_to_bounded_archive():
    stream = real_stream()
    ledger = EventDrivenLedger(stream, path=None, max_completed_epics=1, max_archive=2)
    for index in range(5):
        task(stream, "started", f"t{index}", stream_id=f"epic_{index}")
        task(stream, "completed", f"t{index}", stream_id=f"epic_{index}")
    assert list(ledger.epics) == ["epic_4"]
    assert [a.epic_id for a in ledger.archive] == ["epic_2", "epic_3"]
    text = ledger.render()
    assert "- epic_3: epic_3: 1 task(s) (1 completed)" in text
    assert "epic_0" not in text
    assert len(ledger_events(stream, "ledger.epic.archived")) == 4


def test_epic_and_task_bounds():
    stream = real_stream()
    ledger = EventDrivenLedger(stream, path=None, max_epics=3, max_tasks_per_epic=4)
    for index in range(10):
        task(stream, "started", f"t{index}", stream_id=f"s{index}")
    assert list(ledger.epics) == ["s7", "s8", "s9"]
    for index in range(10):
        task(stream, "started", f"x{index}", stream_id="s9")
    assert list(ledger.epics["s9"].tasks) == ["x6", "x7", "x8", "x9"]
    task(stream, "completed", "x9", stream_id="s9")
    task(stream, "started", "y", stream_id="s9")
    # A finished task is dropped before older running ones.
    assert list(ledger.epics["s9"].tasks) == ["x6", "x7", "x8", "y"]
    assert [a.epic_id for a in ledger.archive] == [f"s{i}" for i in range(7)]


def test_agent_completion_updates_intent_epic():
    stream = real_stream()
    ledger = EventDrivenLedger(stream, path=None, max_completed_epics=5)
    spawn = {"intent_id": "int_9", "agent": "fixer", "intent": "Fix bug"}
    stream.append({"type": AGENT_SPAWNED, "stream_id": "s", "payload": spawn})
    stream.append({"type": AGENT_COMPLETED, "stream_id": "s", "payload": spawn})
    epic = ledger.epics["int_9"]
    assert epic.title == "Fix bug"
    assert epic.state == "completed"
    assert epic.tasks["agent:fixer"].state == "completed"


def test_lineage_is_bounded_and_duplicates_skipped():
    stream = real_stream()
    ledger = EventDrivenLedger(stream, path=None, max_lineage=50, emit_events=False)
    first = task(stream, "started", "t0")
    for index in range(500):
        task(stream, "progress", f"t{index % 7}")
    assert len(ledger.lineage) == 50
    assert first["id"] not in ledger.lineage
    last = stream.events[-1]
    assert next(reversed(ledger.lineage)) == last["id"]
    seen = ledger.stats()["events_seen"]
    ledger.handle_event(dict(last))  # a replayed duplicate
    assert ledger.stats()["events_seen"] == seen
    assert ledger.stats()["duplicates"] == 1


def test_causation_is_recorded_in_lineage():
    stream = real_stream()
    ledger = EventDrivenLedger(stream, path=None)
    parent = task(stream, "started", "t1")
    child = stream.append(
        {
            "type": "task.completed",
            "stream_id": "ses_1",
            "causation_id": parent["id"],
            "payload": {"task_id": "t1"},
        }
    )
    assert ledger.lineage[child["id"]] == (parent["id"], stream.run_id)


def test_write_is_atomic_and_equals_render(tmp_path):
    stream = real_stream()
    path = tmp_path / "LEDGER.md"
    ledger = EventDrivenLedger(stream, path=path)
    populate(stream)
    assert not path.exists()  # no loop: nothing written until asked
    text = ledger.write()
    assert path.read_text(encoding="utf-8") == text == ledger.render()
    assert os.listdir(tmp_path) == ["LEDGER.md"]
    assert ledger.flush() is False  # nothing changed since
    handoffs = ledger_events(stream, "ledger.handoff")
    assert handoffs and handoffs[-1]["payload"]["open_checkpoints"] == ["cp2"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    stream = real_stream()
    path = tmp_path / "LEDGER.md"
    ledger = EventDrivenLedger(stream, path=path)
    ledger.write()
    before = path.read_text(encoding="utf-8")

    def broken_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", broken_replace)
    task(stream, "started", "t1")
    with pytest.raises(OSError):
        ledger.write()
    assert path.read_text(encoding="utf-8") == before
    assert os.listdir(tmp_path) == ["LEDGER.md"]


async def test_writes_are_debounced_with_an_owned_timer(tmp_path):
    stream = real_stream()
    path = tmp_path / "LEDGER.md"
    ledger = EventDrivenLedger(stream, path=path, render_delay=0.05)
    for index in range(20):
        task(stream, "started", f"t{index}")
    assert ledger.stats()["pending_write"] is True
    assert not path.exists()
    assert await eventually(lambda: ledger.stats()["writes"] > 0)
    assert ledger.stats()["writes"] == 1
    assert ledger.stats()["pending_write"] is False
    assert path.read_text(encoding="utf-8") == ledger.render()


async def test_shutdown_writes_cancels_timer_unsubscribes(tmp_path):
    stream = real_stream()
    path = tmp_path / "LEDGER.md"
    ledger = EventDrivenLedger(stream, path=path, render_delay=10)
    populate(stream)
    timer = ledger._timer
    assert timer is not None
    ledger.shutdown()
    assert timer.cancelled()
    assert ledger.stats()["pending_write"] is False
    assert path.read_text(encoding="utf-8") == ledger.render()
    assert stream.subscriber_count() == 0
    task(stream, "started", "late")
    assert "late" not in ledger.render()
    writes = ledger.stats()["writes"]
    ledger.shutdown()  # idempotent
    assert ledger.stats()["writes"] == writes
    assert os.listdir(tmp_path) == ["LEDGER.md"]
    assert {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} == set()


# -- open checkpoints: every way one stops being open ------------------------------------------


class FakeClock:
    """An epoch-ms clock the test moves by hand."""

    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def request(stream, checkpoint_id, stream_id="ses_1", expires_at=None):
    payload = {"id": checkpoint_id, "stream_id": stream_id, "decision_point": "go?"}
    if expires_at is not None:
        payload["expires_at"] = expires_at
    return stream.append({"type": CHECKPOINT_REQUESTED, "stream_id": stream_id, "payload": payload})


def open_ids(ledger):
    return ledger.handoff()["open_checkpoints"]


def test_checkpoint_closes_when_approved_or_rejected():
    stream = real_stream()
    ledger = EventDrivenLedger(stream, path=None)
    request(stream, "cp_a")
    request(stream, "cp_b")
    assert open_ids(ledger) == ["cp_a", "cp_b"]
    stream.append({"type": CHECKPOINT_APPROVED, "stream_id": "ses_1", "payload": {"id": "cp_a"}})
    assert open_ids(ledger) == ["cp_b"]
    stream.append({"type": CHECKPOINT_REJECTED, "stream_id": "ses_1", "payload": {"id": "cp_b"}})
    assert open_ids(ledger) == []
    assert ledger._checkpoint_meta == {}


@pytest.mark.parametrize(
    "terminal_type",
    [SESSION_DELETED, SESSION_ABORTED, SESSION_END, "session.deleted", "session.aborted"],
)
def test_checkpoints_close_when_their_session_ends(terminal_type):
    stream = real_stream()
    ledger = EventDrivenLedger(stream, path=None)
    request(stream, "cp_1", stream_id="ses_1")
    request(stream, "cp_2", stream_id="ses_1")
    request(stream, "cp_other", stream_id="ses_2")
    # As DurableStream.delete_session/abort_session append them: no checkpoint event follows.
    stream.append({"type": terminal_type, "stream_id": "ses_1", "payload": {"session_id": "ses_1"}})
    assert open_ids(ledger) == ["cp_other"]
    assert list(ledger._checkpoint_meta) == ["cp_other"]
    assert "cp_1" not in ledger.render()
    assert ledger.stats()["open_checkpoints"] == 1


def test_session_end_found_through_the_payload_session_id():
    stream = real_stream()
    ledger = EventDrivenLedger(stream, path=None)
    request(stream, "cp_1", stream_id="ses_1")
    # The bridge's raw shape: the session is named in the payload, not the stream id.
    stream.append(
        {"type": SESSION_DELETED, "stream_id": "bridge", "payload": {"sessionID": "ses_1"}}
    )
    assert open_ids(ledger) == []


@pytest.mark.parametrize("shutdown_type", [PLUGIN_SHUTDOWN, "lifecycle.plugin.shutdown"])
def test_plugin_shutdown_closes_every_checkpoint(shutdown_type):
    stream = real_stream()
    ledger = EventDrivenLedger(stream, path=None)
    for index in range(5):
        request(stream, f"cp_{index}", stream_id=f"ses_{index}")
    stream.append({"type": shutdown_type, "stream_id": "plugin", "payload": {}})
    assert open_ids(ledger) == []
    assert ledger._checkpoint_meta == {}
    assert "- none" in ledger.render()


def test_checkpoints_close_once_expired_on_the_next_event():
    clock = FakeClock()
    # A fake stream: these expiry times are on the ledger's fake clock, and the real stream
    # (on the wall clock) would reject the checkpoints itself before the ledger's expiry ran.
    stream = MemoryEventStream()
    ledger = EventDrivenLedger(stream, path=None, clock=clock)
    request(stream, "cp_soon", expires_at=clock.now + 1_000)
    request(stream, "cp_later", expires_at=clock.now + 5_000)
    request(stream, "cp_never")  # no expiry known: only a decision or session end closes it
    assert list(ledger.open_checkpoints) == ["cp_soon", "cp_later", "cp_never"]
    clock.now += 999
    task(stream, "progress", "t1")
    assert list(ledger.open_checkpoints) == ["cp_soon", "cp_later", "cp_never"]
    clock.now += 1  # expires_at reached: the stream rejects it from now on
    task(stream, "progress", "t1")
    assert list(ledger.open_checkpoints) == ["cp_later", "cp_never"]
    clock.now += 10_000
    # An event of any kind and from any stream is enough.
    stream.append({"type": "execution.text_delta", "stream_id": "ses_9", "payload": {}})
    assert list(ledger.open_checkpoints) == ["cp_never"]
    assert list(ledger._checkpoint_meta) == ["cp_never"]
    assert ledger._next_expiry is None


def test_expired_checkpoint_leaves_the_handoff_without_another_event():
    clock = FakeClock()
    # A fake stream: these expiry times are on the ledger's fake clock, and the real stream
    # (on the wall clock) would reject the checkpoints itself before the ledger's expiry ran.
    stream = MemoryEventStream()
    ledger = EventDrivenLedger(stream, path=None, clock=clock)
    request(stream, "cp_1", expires_at=clock.now + 10)
    assert "- cp_1: -" in ledger.render()
    clock.now += 10
    assert open_ids(ledger) == []
    assert "cp_1" not in ledger.render()


def test_checkpoint_already_expired_when_seen_is_not_open():
    clock = FakeClock()
    stream = real_stream()
    ledger = EventDrivenLedger(stream, path=None, clock=clock)
    request(stream, "cp_old", expires_at=clock.now - 1)  # a replay of an old request
    assert list(ledger.open_checkpoints) == []


def test_late_rejection_of_an_expired_checkpoint_is_still_recorded():
    clock = FakeClock()
    stream = real_stream()
    ledger = EventDrivenLedger(stream, path=None, clock=clock)
    request(stream, "cp_1", expires_at=clock.now + 10)
    clock.now += 20
    stream.append(
        {
            "type": CHECKPOINT_REJECTED,
            "stream_id": "ses_1",
            "payload": {"checkpoint_id": "cp_1", "rejected_by": "system", "reason": "timeout"},
        }
    )
    assert list(ledger.open_checkpoints) == []
    assert "| cp_1 | rejected | system | timeout |" in ledger.render()


def test_open_checkpoints_stay_bounded_and_in_step_with_their_metadata():
    clock = FakeClock()
    # A fake stream: these expiry times are on the ledger's fake clock, and the real stream
    # (on the wall clock) would reject the checkpoints itself before the ledger's expiry ran.
    stream = MemoryEventStream()
    ledger = EventDrivenLedger(stream, path=None, clock=clock, max_open_checkpoints=3)
    for index in range(10):
        request(stream, f"cp_{index}", stream_id=f"ses_{index}", expires_at=clock.now + index)
    assert list(ledger.open_checkpoints) == ["cp_7", "cp_8", "cp_9"]
    assert list(ledger._checkpoint_meta) == ["cp_7", "cp_8", "cp_9"]
    clock.now += 8
    task(stream, "progress", "t1")
    assert list(ledger.open_checkpoints) == ["cp_9"]


def test_open_checkpoints_do_not_pile_up_over_many_sessions():
    clock = FakeClock()
    stream = real_stream()
    ledger = EventDrivenLedger(stream, path=None, clock=clock, emit_events=False)
    for index in range(500):
        session = f"ses_{index}"
        request(stream, f"cp_{index}_a", stream_id=session)
        request(stream, f"cp_{index}_b", stream_id=session, expires_at=clock.now + 5)
        clock.now += 10
        stream.append({"type": SESSION_DELETED, "stream_id": session, "payload": {}})
    assert ledger.stats()["open_checkpoints"] == 0
    assert ledger._checkpoint_meta == {}


def _scanned_state(epic) -> str:
    """An epic's state by its definition: completed once it has tasks, all of them terminal."""
    terminal = {"completed", "failed", "cancelled", "timeout", "aborted"}
    done = epic.tasks and all(t.state in terminal for t in epic.tasks.values())
    return "completed" if done else "active"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["registered", "started", "completed", "failed", "progress"]),
            st.integers(0, 4),
            st.integers(0, 1),
        ),
        max_size=60,
    )
)
def test_an_epics_counted_state_matches_its_tasks(steps: list[tuple[str, int, int]]) -> None:
    # Two tasks an epic, so that the bound drops finished and running tasks as it goes.
    stream = real_stream()
    ledger = EventDrivenLedger(stream, path=None, max_tasks_per_epic=2, max_completed_epics=50)
    for suffix, task_no, epic_no in steps:
        task(stream, suffix, f"t{task_no}", stream_id=f"s{epic_no}")
        for epic in ledger.epics.values():
            assert epic.state == _scanned_state(epic), (epic.epic_id, list(epic.tasks.values()))
    stream.shutdown()


def test_an_epic_built_with_tasks_or_given_one_again_counts_them() -> None:
    from opencode_addons.orchestrator.ledger import Epic, Task

    epic = Epic("e", "e", 0, 0, OrderedDict(a=Task("a", "-", "completed", 0)))
    assert epic.state == "completed"
    epic.add_task(Task("b", "-", "running", 0))
    assert epic.state == "active"
    epic.add_task(Task("b", "-", "failed", 1))  # the same id again replaces it
    assert epic.state == "completed" and list(epic.tasks) == ["a", "b"]
    epic.set_task_state(epic.tasks["a"], "running")
    assert epic.state == "active"
    epic.remove_task()  # the oldest, "a"
    assert epic.state == "completed" and list(epic.tasks) == ["b"]


@pytest.mark.parametrize("first_done", [False, True], ids=["running-dropped", "finished-dropped"])
def test_an_epic_completes_after_the_bound_drops_a_task(first_done: bool) -> None:
    stream = real_stream()
    ledger = EventDrivenLedger(stream, path=None, max_tasks_per_epic=2, max_completed_epics=50)
    task(stream, "started", "t1")
    if first_done:
        task(stream, "completed", "t1")
    task(stream, "started", "t2")
    task(stream, "started", "t3")  # over the bound: t1 goes (finished first, else the oldest)
    epic = ledger.epics["ses_1"]
    assert list(epic.tasks) == ["t2", "t3"] and epic.state == "active"
    task(stream, "completed", "t2")
    task(stream, "failed", "t3")
    assert epic.state == "completed"
    stream.shutdown()
