"""CheckpointManager against the real DurableStream (a temporary file). The manager is a facade:
the stream owns each checkpoint's one timer and one deadline, the ``expires_at`` in the file."""

from __future__ import annotations

import asyncio
import logging

import pytest
from opencode_addons import StoreWriteError, read_events
from opencode_addons.durable_stream import DurableStream
from opencode_addons.events import SESSION_TERMINAL_TYPES
from opencode_addons.orchestrator.checkpoints import CheckpointManager, CheckpointOutcome


@pytest.fixture
def stream(tmp_path):
    with DurableStream(tmp_path / "events.jsonl") as stream:
        yield stream


def subscriber_count(stream: DurableStream) -> int:
    return stream.stats()["subscribers"]


def of_type(stream: DurableStream, event_type: str) -> list[dict]:
    return stream.query(type=event_type)


def live_timers() -> int:
    """Timers armed on the running loop and not cancelled (asyncio keeps them in _scheduled)."""
    loop = asyncio.get_running_loop()
    return sum(not handle.cancelled() for handle in loop._scheduled)  # type: ignore[attr-defined]


async def test_approval_by_event_resolves_cancels_timer_and_drops_handler(stream):
    manager = CheckpointManager(stream, default_timeout=5.0)
    outcomes: list[CheckpointOutcome] = []
    pending = manager.request("s1", "deploy?", ["yes", "no"], "agent", handler=outcomes.append)
    timer = stream.checkpoints.timer_of(pending.id)
    assert timer is not None
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
            "stream_id": "s1",
            "payload": {"checkpoint_id": pending.id, "approved_by": "x"},
        }
    )
    assert outcomes == [outcome]
    assert manager.stats()["approved"] == 1
    await manager.shutdown()


async def test_rejection_through_manager_resolves_with_reason(stream):
    manager = CheckpointManager(stream)
    pending = manager.request("s1", "delete files?", ["ok"], "agent")
    assert manager.reject(pending.id, "bob", reason="too risky") is True
    outcome = await pending
    assert outcome.approved is False and outcome.by == "bob" and outcome.reason == "too risky"
    assert manager.reject(pending.id, "bob") is False  # already decided
    assert pending.outcome == outcome
    await manager.shutdown()


async def test_approve_convenience_delegates_to_stream(stream):
    manager = CheckpointManager(stream)
    pending = manager.request("s1", "merge?", ["merge", "wait"], "agent")
    assert manager.approve(pending.id, "carol", option="merge") is True
    assert (await pending.wait(1.0)).option == "merge"
    assert of_type(stream, "checkpoint.approved")[0]["payload"]["approved_by"] == "carol"
    await manager.shutdown()


async def test_timeout_appends_rejected_event_with_reason_timeout(stream):
    manager = CheckpointManager(stream)
    calls: list[CheckpointOutcome] = []
    pending = manager.request("s1", "q?", ["a"], "agent", timeout=0.02, handler=calls.append)
    outcome = await asyncio.wait_for(pending, 1.0)
    assert outcome.approved is False and outcome.reason == "timeout"
    assert outcome.by == "checkpoint-manager"
    rejected = of_type(stream, "checkpoint.rejected")
    assert len(rejected) == 1
    assert rejected[0]["payload"] == {
        "checkpoint_id": pending.id,
        "rejected_by": "checkpoint-manager",
        "reason": "timeout",
    }
    assert manager.pending == 0 and calls == [outcome]
    assert manager.stats()["timed_out"] == 1
    await manager.shutdown()


async def test_timeout_whose_rejection_cannot_be_written_is_retried_on_the_next_append(stream):
    # The stream's timer fires while the store refuses the rejection (a full disk, say): the
    # checkpoint stays pending and overdue, and the next append expires it for good.
    store_append = stream._store_append
    refused = []

    def refuse_rejections(event):
        if event.get("type") == "checkpoint.rejected" and not refused:
            refused.append(event)
            raise StoreWriteError("no space left on device")
        return store_append(event)

    stream._store_append = refuse_rejections
    manager = CheckpointManager(stream)
    pending = manager.request("s1", "q?", ["a"], "agent", timeout=0.01)
    await asyncio.sleep(0.05)
    assert refused and not pending.done()
    assert stream.stats()["checkpoint_expiry_errors"] == 1
    assert stream.get_checkpoint(pending.id) is not None
    stream.append({"type": "note", "stream_id": "s1", "payload": {}})
    outcome = await asyncio.wait_for(pending, 1.0)
    assert outcome.reason == "timeout" and outcome.by == "checkpoint-manager"
    assert manager.pending == 0 and len(of_type(stream, "checkpoint.rejected")) == 1
    await manager.shutdown()


async def test_timeout_is_passed_through_one_timer_one_deadline_the_one_in_the_file(stream):
    manager = CheckpointManager(stream, default_timeout=300)
    before = live_timers()
    pending = manager.request("s1", "q?", ["a"], "agent", timeout=1.5)
    # One timer for the checkpoint, owned by the stream; the manager arms none.
    assert live_timers() == before + 1 and stream.stats()["timers"] == 1
    stream.sync()
    (requested,) = read_events(stream.path, type="checkpoint.requested")
    payload = requested["payload"]
    assert payload["expires_at"] - payload["requested_at"] == 1500
    outcome = await asyncio.wait_for(pending, 5.0)
    assert outcome.reason == "timeout"
    await asyncio.sleep(0.05)
    assert len(of_type(stream, "checkpoint.rejected")) == 1  # expired once
    assert live_timers() == before and stream.stats()["timers"] == 0
    assert manager.stats()["timed_out"] == 1
    await manager.shutdown()


async def test_resolved_checkpoint_leaves_no_timer_behind(stream):
    manager = CheckpointManager(stream)
    pending = manager.request("s1", "q?", ["a"], "agent", timeout=0.05)
    manager.approve(pending.id, "alice")
    await asyncio.sleep(0.1)  # past the would-be timeout
    assert of_type(stream, "checkpoint.rejected") == []
    assert manager.stats()["timed_out"] == 0
    await manager.shutdown()


async def test_raising_handlers_are_logged_not_propagated(stream, caplog):
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


async def test_async_handler_is_awaited_once(stream):
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


async def test_cancelled_waiter_does_not_cancel_the_checkpoint(stream):
    manager = CheckpointManager(stream)
    pending = manager.request("s", "q", ["a"], "agent")
    with pytest.raises(asyncio.TimeoutError):
        await pending.wait(0.01)
    assert manager.pending == 1 and not pending.done()
    manager.approve(pending.id, "x")
    assert (await pending).approved is True
    await manager.shutdown()


async def test_shutdown_rejects_pending_with_reason_shutdown_and_is_idempotent(stream):
    manager = CheckpointManager(stream, default_timeout=60)
    # Approved, rejected, requested (adoption), and each session-terminal type.
    assert subscriber_count(stream) == 3 + len(SESSION_TERMINAL_TYPES)
    first = manager.request("s", "q1", ["a"], "agent")
    second = manager.request("s", "q2", ["a"], "agent")
    timers = [stream.checkpoints.timer_of(p.id) for p in (first, second)]
    await manager.shutdown()
    await manager.shutdown()
    for pending in (first, second):
        outcome = await pending
        assert outcome.approved is False and outcome.reason == "shutdown"
    assert all(timer.cancelled() for timer in timers)
    reasons = [e["payload"]["reason"] for e in of_type(stream, "checkpoint.rejected")]
    assert reasons == ["shutdown", "shutdown"]
    assert manager.pending == 0 and subscriber_count(stream) == 0
    assert asyncio.all_tasks() == {asyncio.current_task()}
    with pytest.raises(RuntimeError):
        manager.request("s", "q3", ["a"], "agent")


async def test_shutdown_resolves_even_when_the_stream_is_closed(stream):
    manager = CheckpointManager(stream)
    pending = manager.request("s", "q", ["a"], "agent")
    stream.shutdown()
    await manager.shutdown()
    assert (await pending).reason == "shutdown"


async def test_events_for_other_checkpoints_are_ignored(stream):
    manager = CheckpointManager(stream)
    pending = manager.request("s", "q", ["a"], "agent")
    stream.append(
        {"type": "checkpoint.approved", "stream_id": "s", "payload": {"checkpoint_id": "cp_other"}}
    )
    stream.append({"type": "checkpoint.rejected", "stream_id": "s", "payload": "not a mapping"})
    assert manager.pending == 1 and not pending.done()
    await manager.shutdown()


async def test_invalid_arguments(stream):
    with pytest.raises(ValueError):
        CheckpointManager(stream, default_timeout=0)
    manager = CheckpointManager(stream)
    with pytest.raises(ValueError):
        manager.request("s", "q", ["a"], "agent", timeout=-1)
    with pytest.raises(TypeError):
        manager.request("s", "q", ["a"], "agent", handler="nope")  # type: ignore[arg-type]
    assert manager.pending == 0
    await manager.shutdown()


def test_request_needs_a_running_loop(stream):
    manager = CheckpointManager(stream)
    with pytest.raises(RuntimeError):
        manager.request("s", "q", ["a"], "agent")


async def test_shutdown_cancels_handlers_that_outlive_the_grace_period(stream):
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


async def test_a_deleted_session_resolves_the_checkpoints_requested_on_it(stream):
    """The stream forgets a deleted session's pending checkpoints without a closing event; the
    manager must let go of them too (a 10M-event soak found it holding ~3,600 of them), and
    each requester learns the outcome instead of waiting forever."""
    manager = CheckpointManager(stream, default_timeout=60)
    outcomes: list[CheckpointOutcome] = []
    gone = [
        manager.request("s1", f"q{i}", ["a"], "agent", handler=outcomes.append) for i in range(3)
    ]
    kept = manager.request("s2", "q", ["a"], "agent")
    timers = [stream.checkpoints.timer_of(p.id) for p in gone]
    stream.delete_session("s1")
    for pending in gone:
        outcome = await pending.wait(timeout=5)
        assert outcome == CheckpointOutcome(
            pending.id, approved=False, by="checkpoint-manager", reason="session_ended"
        )
    assert sorted(o.checkpoint_id for o in outcomes) == sorted(p.id for p in gone)
    assert all(timer.cancelled() for timer in timers)
    assert manager.pending == 1 and manager.get(kept.id) is kept and not kept.done()
    assert [c.id for c in stream.pending_checkpoints] == [kept.id]
    stats = manager.stats()
    assert (stats["dropped"], stats["rejected"], stats["pending"]) == (3, 0, 1)
    # No rejection was written for them: the stream dropped them, nobody decided.
    assert of_type(stream, "checkpoint.rejected") == []
    await manager.shutdown()


async def test_a_plugin_shutdown_event_resolves_every_requested_checkpoint(stream):
    manager = CheckpointManager(stream, default_timeout=60)
    pending = [manager.request(s, "q", ["a"], "agent") for s in ("s1", "s2")]
    stream.append({"type": "plugin.shutdown", "stream_id": "opencode", "payload": {}})
    assert [(await p.wait(timeout=5)).reason for p in pending] == ["session_ended", "session_ended"]
    assert manager.pending == 0 and stream.pending_checkpoints == []
    await manager.shutdown()
