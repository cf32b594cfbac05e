from __future__ import annotations

import asyncio
import logging

import pytest
from fakes import MemoryCheckpointStream
from opencode_addons.events import SESSION_TERMINAL_TYPES
from opencode_addons.orchestrator.checkpoints import CheckpointManager, CheckpointOutcome


def subscriber_count(stream: MemoryCheckpointStream) -> int:
    return stream.subscriber_count()


async def test_approval_by_event_resolves_cancels_timer_and_drops_handler():
    stream = MemoryCheckpointStream()
    manager = CheckpointManager(stream, default_timeout=5.0)
    outcomes: list[CheckpointOutcome] = []
    pending = manager.request("s1", "deploy?", ["yes", "no"], "agent", handler=outcomes.append)
    timer = manager._entries[pending.id].timer
    assert manager.pending == 1 and not pending.done()
    # Approved by someone else, directly on the stream.
    assert stream.approve_checkpoint(pending.id, "alice", "yes") is True
    outcome = await pending
    assert outcome == CheckpointOutcome(pending.id, approved=True, by="alice", option="yes")
    assert timer.cancelled()
    assert manager.pending == 0 and manager.get(pending.id) is None
    assert outcomes == [outcome]
    # A duplicate decision event for the same id does not call the handler again.
    stream.append(
        {
            "type": "checkpoint.approved",
            "payload": {"checkpoint_id": pending.id, "approved_by": "x"},
        }
    )
    assert outcomes == [outcome]
    assert manager.stats()["approved"] == 1
    await manager.shutdown()


async def test_rejection_through_manager_resolves_with_reason():
    stream = MemoryCheckpointStream()
    manager = CheckpointManager(stream)
    pending = manager.request("s1", "delete files?", ["ok"], "agent")
    assert manager.reject(pending.id, "bob", reason="too risky") is True
    outcome = await pending
    assert outcome.approved is False and outcome.by == "bob" and outcome.reason == "too risky"
    assert manager.reject(pending.id, "bob") is False  # already decided
    assert pending.outcome == outcome
    await manager.shutdown()


async def test_approve_convenience_delegates_to_stream():
    stream = MemoryCheckpointStream()
    manager = CheckpointManager(stream)
    pending = manager.request("s1", "merge?", ["merge", "wait"], "agent")
    assert manager.approve(pending.id, "carol", option="merge") is True
    assert (await pending.wait(1.0)).option == "merge"
    assert stream.of_type("checkpoint.approved")[0]["payload"]["approved_by"] == "carol"
    await manager.shutdown()


async def test_timeout_appends_rejected_event_with_reason_timeout():
    stream = MemoryCheckpointStream()
    manager = CheckpointManager(stream)
    calls: list[CheckpointOutcome] = []
    pending = manager.request("s1", "q?", ["a"], "agent", timeout=0.02, handler=calls.append)
    outcome = await asyncio.wait_for(pending, 1.0)
    assert outcome.approved is False and outcome.reason == "timeout"
    assert outcome.by == "checkpoint-manager"
    rejected = stream.of_type("checkpoint.rejected")
    assert len(rejected) == 1
    assert rejected[0]["payload"] == {
        "checkpoint_id": pending.id,
        "rejected_by": "checkpoint-manager",
        "reason": "timeout",
    }
    assert manager.pending == 0 and calls == [outcome]
    assert manager.stats()["timed_out"] == 1
    await manager.shutdown()


async def test_timeout_resolves_locally_when_stream_rejection_fails():
    class RefusingStream(MemoryCheckpointStream):
        def reject_checkpoint(self, checkpoint_id, by, reason=None):
            raise RuntimeError("stream closed")

    manager = CheckpointManager(RefusingStream())
    pending = manager.request("s1", "q?", ["a"], "agent", timeout=0.01)
    outcome = await asyncio.wait_for(pending, 1.0)
    assert outcome.reason == "timeout" and manager.pending == 0
    await manager.shutdown()


async def test_resolved_checkpoint_leaves_no_timer_behind():
    stream = MemoryCheckpointStream()
    manager = CheckpointManager(stream)
    pending = manager.request("s1", "q?", ["a"], "agent", timeout=0.05)
    manager.approve(pending.id, "alice")
    await asyncio.sleep(0.1)  # past the would-be timeout
    assert stream.of_type("checkpoint.rejected") == []
    assert manager.stats()["timed_out"] == 0
    await manager.shutdown()


async def test_raising_handlers_are_logged_not_propagated(caplog):
    stream = MemoryCheckpointStream()
    manager = CheckpointManager(stream)

    def sync_handler(outcome):
        raise ValueError("sync handler bug")

    async def async_handler(outcome):
        raise ValueError("async handler bug")

    first = manager.request("s", "q1", ["a"], "agent", handler=sync_handler)
    second = manager.request("s", "q2", ["a"], "agent", handler=async_handler)
    with caplog.at_level(logging.ERROR):
        assert manager.approve(first.id, "x") is True
        assert manager.approve(second.id, "x") is True
        await first
        await second
        await manager.shutdown()  # lets the async handler finish
    assert manager.stats()["handler_errors"] == 2
    assert "sync handler bug" in caplog.text and "async handler bug" in caplog.text


async def test_async_handler_is_awaited_once():
    stream = MemoryCheckpointStream()
    manager = CheckpointManager(stream)
    seen: list[str] = []

    async def handler(outcome):
        await asyncio.sleep(0)
        seen.append(outcome.checkpoint_id)

    pending = manager.request("s", "q", ["a"], "agent", handler=handler)
    manager.approve(pending.id, "x")
    await manager.shutdown()  # waits for the handler task
    assert seen == [pending.id]
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_cancelled_waiter_does_not_cancel_the_checkpoint():
    stream = MemoryCheckpointStream()
    manager = CheckpointManager(stream)
    pending = manager.request("s", "q", ["a"], "agent")
    with pytest.raises(asyncio.TimeoutError):
        await pending.wait(0.01)
    assert manager.pending == 1 and not pending.done()
    manager.approve(pending.id, "x")
    assert (await pending).approved is True
    await manager.shutdown()


async def test_shutdown_rejects_pending_with_reason_shutdown_and_is_idempotent():
    stream = MemoryCheckpointStream()
    manager = CheckpointManager(stream, default_timeout=60)
    # Approved, rejected, requested (adoption), and each session-terminal type.
    assert subscriber_count(stream) == 3 + len(SESSION_TERMINAL_TYPES)
    first = manager.request("s", "q1", ["a"], "agent")
    second = manager.request("s", "q2", ["a"], "agent")
    timers = [entry.timer for entry in manager._entries.values()]
    await manager.shutdown()
    await manager.shutdown()
    for pending in (first, second):
        outcome = await pending
        assert outcome.approved is False and outcome.reason == "shutdown"
    assert all(timer.cancelled() for timer in timers)
    reasons = [e["payload"]["reason"] for e in stream.of_type("checkpoint.rejected")]
    assert reasons == ["shutdown", "shutdown"]
    assert manager.pending == 0 and subscriber_count(stream) == 0
    assert asyncio.all_tasks() == {asyncio.current_task()}
    with pytest.raises(RuntimeError):
        manager.request("s", "q3", ["a"], "agent")


async def test_shutdown_resolves_even_when_the_stream_is_closed():
    stream = MemoryCheckpointStream()
    manager = CheckpointManager(stream)
    pending = manager.request("s", "q", ["a"], "agent")
    stream.closed = True
    await manager.shutdown()
    assert (await pending).reason == "shutdown"


async def test_events_for_other_checkpoints_are_ignored():
    stream = MemoryCheckpointStream()
    manager = CheckpointManager(stream)
    pending = manager.request("s", "q", ["a"], "agent")
    stream.append({"type": "checkpoint.approved", "payload": {"checkpoint_id": "cp_other"}})
    stream.append({"type": "checkpoint.rejected", "payload": "not a mapping"})
    assert manager.pending == 1 and not pending.done()
    await manager.shutdown()


async def test_invalid_arguments():
    stream = MemoryCheckpointStream()
    with pytest.raises(ValueError):
        CheckpointManager(stream, default_timeout=0)
    manager = CheckpointManager(stream)
    with pytest.raises(ValueError):
        manager.request("s", "q", ["a"], "agent", timeout=-1)
    with pytest.raises(TypeError):
        manager.request("s", "q", ["a"], "agent", handler="nope")  # type: ignore[arg-type]
    assert manager.pending == 0
    await manager.shutdown()


def test_request_needs_a_running_loop():
    manager = CheckpointManager(MemoryCheckpointStream())
    with pytest.raises(RuntimeError):
        manager.request("s", "q", ["a"], "agent")


async def test_shutdown_cancels_handlers_that_outlive_the_grace_period():
    stream = MemoryCheckpointStream()
    manager = CheckpointManager(stream, handler_grace=0.02)
    finished = []

    async def slow_handler(outcome):
        await asyncio.sleep(10)
        finished.append(outcome)

    pending = manager.request("s", "q", ["a"], "agent", handler=slow_handler)
    manager.approve(pending.id, "x")
    await asyncio.wait_for(manager.shutdown(), 1.0)
    assert finished == []
    assert asyncio.all_tasks() == {asyncio.current_task()}
