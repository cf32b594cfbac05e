from __future__ import annotations

import asyncio
import gc
import inspect
import json
import logging
import re
import time
import weakref
from collections.abc import Sequence
from typing import Any

import pytest
from fakes import eventually
from opencode_addons import _core, component_registry
from opencode_addons.durable_stream import (
    Checkpoint,
    DurableStream,
    EventHistory,
    Intent,
    ResumeResult,
)
from opencode_addons.events import SESSION_TERMINAL_TYPES
from opencode_addons.orchestrator.learning import LearningExtractor
from opencode_addons.shutdown import shutdown_all
from opencode_addons.stream_singleton import get_durable_stream, initialize_durable_stream

CP_ID = re.compile(r"^cp_\d{13}_[0-9a-z]{6}$")
INTENT_ID = re.compile(r"^intent_\d{13}_[0-9a-z]{6}$")


@pytest.fixture
def path(tmp_path):
    return tmp_path / "stream.jsonl"


@pytest.fixture
def stream(path):
    s = DurableStream(path)
    yield s
    s.shutdown()


@pytest.fixture(autouse=True)
def clean_runtime():
    component_registry.clear()
    yield
    for component in component_registry.registered().values():
        component.shutdown()
    component_registry.clear()


def file_events(path) -> list[dict]:
    # While a store is open its file ends in zero padding (the log grows in chunks).
    with open(path, encoding="utf-8") as handle:
        lines = (line.strip("\x00 \n") for line in handle)
        return [json.loads(line) for line in lines if line]


def of_type(stream: DurableStream, event_type: str) -> list[dict]:
    return stream.query(scope="history", type=event_type)


# -- append -----------------------------------------------------------------------------------


def test_append_fills_defaults_without_touching_the_callers_dict(stream):
    event = {"type": "note", "stream_id": "s1", "payload": {"x": 1}}
    stored = stream.append(event)
    assert event == {"type": "note", "stream_id": "s1", "payload": {"x": 1}}
    assert stored["correlation_id"] == stream.run_id
    assert re.fullmatch(r"[0-9a-f]{16}", stream.run_id)
    assert stored["actor"] == "system"
    assert stored["seq"] == 1 and stored["id"] and isinstance(stored["timestamp"], int)


def test_append_keeps_given_actor_and_correlation(stream):
    stored = stream.append({"type": "note", "actor": "user", "correlation_id": "c1"})
    assert (stored["actor"], stored["correlation_id"]) == ("user", "c1")


def test_append_persists_to_the_file(stream, path):
    stored = stream.append({"type": "note", "payload": {"n": 1}})
    assert file_events(path)[-1]["id"] == stored["id"]


@pytest.mark.parametrize("bad", [{"payload": {}}, {"type": 5}, "not a mapping"])
def test_invalid_event_changes_nothing(stream, bad):
    seen = []
    stream.subscribe("*", seen.append)
    with pytest.raises((TypeError, ValueError)):
        stream.append(bad)
    assert seen == [] and len(stream.get_event_history()) == 0


def test_extend_is_a_batch_that_notifies_each(stream):
    seen = []
    stream.subscribe("*", lambda e: seen.append(e["seq"]))
    stored = stream.extend([{"type": "a"}, {"type": "b"}])
    assert [e["seq"] for e in stored] == seen == [1, 2]


# -- subscribers ------------------------------------------------------------------------------


def test_subscribers_of_the_type_then_wildcard(stream):
    calls = []
    stream.subscribe("*", lambda e: calls.append(("*", e["type"])))
    stream.subscribe("a", lambda e: calls.append(("a", e["type"])))
    stream.append({"type": "a"})
    stream.append({"type": "b"})
    assert calls == [("a", "a"), ("*", "a"), ("*", "b")]


def test_unsubscribe_is_idempotent(stream):
    calls = []
    unsubscribe = stream.subscribe("a", calls.append)
    unsubscribe()
    unsubscribe()
    stream.append({"type": "a"})
    assert calls == [] and stream.stats()["subscribers"] == 0


def test_raising_subscriber_is_isolated(stream, caplog):
    calls = []

    def broken(event):
        raise RuntimeError("boom")

    stream.subscribe("checkpoint.requested", broken)
    stream.subscribe("checkpoint.requested", calls.append)
    with caplog.at_level(logging.ERROR):
        checkpoint = stream.request_checkpoint("s1", "go?", ["yes"], "me")
    assert len(calls) == 1
    assert stream.get_checkpoint(checkpoint.id) is checkpoint  # projection still ran
    assert "boom" in caplog.text and stream.stats()["subscriber_errors"] == 1


def test_subscriber_may_append(stream):
    def echo(event):
        if event["type"] == "ping":
            stream.append({"type": "pong", "causation_id": event["id"]})

    stream.subscribe("ping", echo)
    ping = stream.append({"type": "ping"})
    types = [e["type"] for e in stream.get_event_history()]
    assert types == ["ping", "pong"]
    assert stream.get_event_history()[-1]["causation_id"] == ping["id"]


def test_subscriber_sees_projection_of_its_event(stream):
    approved = []

    def auto_approve(event):
        approved.append(stream.approve_checkpoint(event["payload"]["id"], "bot"))

    stream.subscribe("checkpoint.requested", auto_approve)
    checkpoint = stream.request_checkpoint("s1", "go?", ["yes"], "me")
    assert approved == [True] and checkpoint.status == "approved"
    assert stream.pending_checkpoints == [] and stream.stats()["timers"] == 0


async def test_async_subscriber_runs_on_the_loop(stream):
    seen = []

    async def handler(event):
        await asyncio.sleep(0)
        seen.append(event["type"])

    stream.subscribe("a", handler)
    stream.append({"type": "a"})
    assert stream.stats()["async_tasks"] == 1
    for _ in range(5):
        await asyncio.sleep(0)
    assert seen == ["a"] and stream.stats()["async_tasks"] == 0


async def test_failing_async_subscriber_is_logged(stream, caplog):
    async def handler(event):
        raise RuntimeError("async boom")

    stream.subscribe("a", handler)
    with caplog.at_level(logging.ERROR):
        stream.append({"type": "a"})
        for _ in range(3):
            await asyncio.sleep(0)
    assert "async boom" in caplog.text and stream.stats()["subscriber_errors"] == 1


def test_async_subscriber_without_loop_is_closed_with_a_warning(stream, caplog):
    coroutines = []

    async def handler(event):
        pass

    def subscriber(event):
        coroutines.append(handler(event))
        return coroutines[-1]

    stream.subscribe("a", subscriber)
    with caplog.at_level(logging.WARNING):
        stream.append({"type": "a"})
    assert inspect.getcoroutinestate(coroutines[0]) == inspect.CORO_CLOSED
    assert "no running event loop" in caplog.text


# -- reading ----------------------------------------------------------------------------------


def test_history_is_a_read_only_sequence_view(stream):
    for i in range(5):
        stream.append({"type": "n", "payload": {"i": i}})
    history = stream.get_event_history()
    assert isinstance(history, Sequence) and not isinstance(history, list)
    assert isinstance(history, EventHistory)
    assert len(history) == 5 and history[-1]["payload"] == {"i": 4}
    assert [e["payload"]["i"] for e in history] == [0, 1, 2, 3, 4]
    assert history.index(history[2]) == 2 and history[1:3][0]["payload"] == {"i": 1}
    assert not hasattr(history, "append")


def test_query_scopes(path):
    stream = DurableStream(path, max_event_history=10, max_cache_size=4)
    try:
        for i in range(8):
            stream.append({"type": "n", "stream_id": f"s{i % 2}", "payload": {"i": i}})
        assert len(stream.query()) == 4
        assert len(stream.query(scope="history")) == 8
        newest = stream.query(stream_id="s1", limit=1, newest_first=True)
        assert newest[0]["payload"] == {"i": 7}
        with pytest.raises(ValueError):
            stream.query(scope="disk")
    finally:
        stream.shutdown()


def test_get_stream_events_from_offset(stream):
    for i in range(6):
        stream.append({"type": "n", "stream_id": f"s{i % 2}", "payload": {"i": i}})
    assert [e["payload"]["i"] for e in stream.get_stream_events("s0")] == [0, 2, 4]
    assert [e["payload"]["i"] for e in stream.get_stream_events("s0", 1)] == [2, 4]
    assert stream.get_stream_events("nope") == []
    with pytest.raises(ValueError):
        stream.get_stream_events("s0", -1)


@pytest.mark.parametrize("n", [10, 120_000])
def test_history_and_cache_share_records(path, n):
    stream = DurableStream(path, durability="none")
    try:
        batch = 10_000
        for start in range(0, n, batch):
            stream.extend(
                {"type": "n", "payload": {"i": i}} for i in range(start, min(n, start + batch))
            )
        history = stream.get_event_history()
        stats = stream.stats()
        assert len(history) == stats["history_events"] == min(n, 100_000)
        assert stats["cache_events"] == min(n, 50_000)
        newest_cached = stream.query(limit=1, newest_first=True)[0]
        assert history[-1] == newest_cached and history[-1]["payload"] == {"i": n - 1}
        assert history[0]["payload"] == {"i": max(0, n - 100_000)}
    finally:
        stream.shutdown()


# -- resume -----------------------------------------------------------------------------------


def write_run(path) -> tuple[list[str], Checkpoint, Intent]:
    stream = DurableStream(path)
    ids = [stream.append({"type": "n", "payload": {"i": i}})["id"] for i in range(3)]
    checkpoint = stream.request_checkpoint("s1", "go?", ["yes", "no"], "me")
    intent = stream.create_intent({"session_id": "s1", "agent": "build"})
    stream.shutdown()
    return ids, checkpoint, intent


def test_resume_rebuilds_projections_without_duplicates(path):
    ids, checkpoint, intent = write_run(path)
    stream = DurableStream(path)
    try:
        first = stream.resume()
        second = stream.resume()
        assert isinstance(first, ResumeResult)
        for result in (first, second):
            assert result.events_replayed == 5
            assert [c.id for c in result.pending_checkpoints] == [checkpoint.id]
            assert [i.id for i in result.active_intents] == [intent.id]
            assert result.last_event_at == stream.get_event_history()[-1]["timestamp"]
        history_ids = [e["id"] for e in stream.get_event_history()]
        assert len(history_ids) == len(set(history_ids)) == 5
        assert history_ids[:3] == ids
        stream.append({"type": "after"})
        assert len(stream.get_event_history()) == 6
        assert len(stream.query()) == 6
    finally:
        stream.shutdown()
    reopened = DurableStream(path)
    try:
        reopened.resume()
        assert len(reopened.get_event_history()) == 6
        assert len(reopened.pending_checkpoints) == 1 and len(reopened.active_intents) == 1
    finally:
        reopened.shutdown()
    lines = file_events(path)
    assert len(lines) == len({e["id"] for e in lines}) == 6


def test_resume_of_an_empty_file(stream):
    result = stream.resume()
    assert result == ResumeResult(0, [], [], None, 0)


def test_resolved_work_stays_resolved_after_restart(path):
    stream = DurableStream(path)
    checkpoint = stream.request_checkpoint("s1", "go?", ["yes"], "me")
    intent = stream.create_intent({"agent": "a"})
    assert stream.approve_checkpoint(checkpoint.id, "boss", "yes")
    assert stream.complete_intent(intent.id, "done")
    stream.shutdown()
    with DurableStream(path) as reopened:
        result = reopened.resume()
        assert result.pending_checkpoints == [] and result.active_intents == []
        assert not reopened.approve_checkpoint(checkpoint.id, "boss")


def test_damaged_file_is_recovered_and_projections_rebuilt(path):
    _, checkpoint, _ = write_run(path)
    with open(path, "ab") as handle:
        handle.write(b'not json\n{"type":"checkpoint.appr')  # a corrupt line and a torn tail
    with DurableStream(path) as reopened:
        assert reopened.recovery["corrupt_lines"] == 1
        assert reopened.recovery["torn_tail_bytes"] > 0
        assert [c.id for c in reopened.resume().pending_checkpoints] == [checkpoint.id]
        assert len(reopened.get_event_history()) == 5


def test_second_writer_is_refused(stream, path):
    with pytest.raises(_core.StoreLockedError):
        DurableStream(path)


# -- checkpoints ------------------------------------------------------------------------------


def test_request_checkpoint_appends_the_checkpoint(stream):
    checkpoint = stream.request_checkpoint("s1", "deploy?", ["yes", "no"], "planner")
    assert CP_ID.match(checkpoint.id)
    assert checkpoint.expires_at == checkpoint.requested_at + 300_000
    event = of_type(stream, "checkpoint.requested")[0]
    assert event["stream_id"] == "s1" and event["actor"] == "planner"
    assert event["payload"] == checkpoint.to_dict()
    assert event["payload"]["status"] == "pending"
    assert stream.pending_checkpoints == [checkpoint]


def test_approve_and_reject(stream):
    first = stream.request_checkpoint("s1", "a?", ["x", "y"], "me")
    second = stream.request_checkpoint("s2", "b?", [], "me")
    assert stream.approve_checkpoint(first.id, "boss", "y")
    assert stream.reject_checkpoint(second.id, "boss", "no way")
    approved = of_type(stream, "checkpoint.approved")[0]
    rejected = of_type(stream, "checkpoint.rejected")[0]
    assert approved["stream_id"] == "s1" and rejected["stream_id"] == "s2"
    assert approved["payload"] == {
        "checkpoint_id": first.id,
        "approved_by": "boss",
        "selected_option": "y",
    }
    assert rejected["payload"] == {
        "checkpoint_id": second.id,
        "rejected_by": "boss",
        "reason": "no way",
    }
    assert (first.status, second.status) == ("approved", "rejected")
    assert not stream.approve_checkpoint(first.id, "boss")
    assert not stream.reject_checkpoint(second.id, "boss")
    assert not stream.approve_checkpoint("cp_unknown", "boss")
    assert not stream.reject_checkpoint("cp_unknown", "boss")
    assert stream.pending_checkpoints == []


def test_approve_with_an_option_not_offered_raises(stream):
    checkpoint = stream.request_checkpoint("s1", "a?", ["x"], "me")
    with pytest.raises(ValueError):
        stream.approve_checkpoint(checkpoint.id, "boss", "z")
    assert stream.pending_checkpoints == [checkpoint]


def timeouts(stream: DurableStream) -> list[dict]:
    return [
        e for e in of_type(stream, "checkpoint.rejected") if e["payload"]["reason"] == "timeout"
    ]


async def test_expired_checkpoint_is_rejected_by_its_timer(stream):
    checkpoint = stream.request_checkpoint("s1", "a?", ["x"], "me", timeout=0.05)
    assert stream.stats()["timers"] == 1
    assert await eventually(lambda: timeouts(stream))
    [event] = timeouts(stream)
    assert event["payload"]["checkpoint_id"] == checkpoint.id
    assert event["payload"]["rejected_by"] == "system" and event["stream_id"] == "s1"
    assert checkpoint.status == "rejected" and stream.stats()["timers"] == 0


async def test_approve_cancels_the_timer(stream):
    checkpoint = stream.request_checkpoint("s1", "a?", ["x"], "me", timeout=0.05)
    timer = stream.checkpoints.timer_of(checkpoint.id)
    assert stream.approve_checkpoint(checkpoint.id, "boss")
    assert timer.cancelled() and stream.stats()["timers"] == 0
    await asyncio.sleep(0.1)
    assert timeouts(stream) == []


def test_expire_checkpoints_without_a_loop(stream):
    # The fresh one first: appending it after the late one could already expire the late one
    # (every append expires overdue checkpoints) on a machine slow enough.
    fresh = stream.request_checkpoint("s1", "b?", ["x"], "me")
    late = stream.request_checkpoint("s1", "a?", ["x"], "me", timeout=0.05)
    time.sleep(0.1)
    assert stream.expire_checkpoints() == 1
    assert [e["payload"]["checkpoint_id"] for e in timeouts(stream)] == [late.id]
    assert stream.pending_checkpoints == [fresh]


def test_expired_checkpoint_cannot_be_approved(stream):
    checkpoint = stream.request_checkpoint("s1", "a?", ["x"], "me", timeout=0.01)
    time.sleep(0.03)
    assert not stream.approve_checkpoint(checkpoint.id, "boss")
    assert len(timeouts(stream)) == 1 and of_type(stream, "checkpoint.approved") == []


def test_any_append_expires_overdue_checkpoints(stream):
    stream.request_checkpoint("s1", "a?", ["x"], "me", timeout=0.01)
    time.sleep(0.03)
    stream.append({"type": "unrelated"})
    assert len(timeouts(stream)) == 1


def test_timer_is_armed_when_a_loop_is_first_seen(stream):
    checkpoint = stream.request_checkpoint("s1", "a?", ["x"], "me", timeout=0.1)
    assert stream.stats()["timers"] == 0 and stream.stats()["unarmed_checkpoints"] == 1

    async def later() -> None:
        stream.append({"type": "tick"})
        assert stream.stats()["timers"] == 1
        assert await eventually(lambda: checkpoint.status == "rejected")

    asyncio.run(later())
    assert checkpoint.status == "rejected" and len(timeouts(stream)) == 1


def test_timer_moves_to_a_new_loop(stream):
    checkpoint = stream.request_checkpoint("s1", "a?", ["x"], "me", timeout=0.3)

    async def first_loop() -> None:
        stream.append({"type": "tick"})
        assert stream.stats()["timers"] == 1

    async def second_loop() -> None:
        stream.append({"type": "tock"})
        assert await eventually(lambda: checkpoint.status == "rejected")

    asyncio.run(first_loop())  # its loop closes with the timer still armed on it
    asyncio.run(second_loop())
    assert checkpoint.status == "rejected" and len(timeouts(stream)) == 1


@pytest.mark.parametrize("durability", ["none", "flush", "fsync", "group"])
def test_every_durability_mode_round_trips(path, durability):
    with DurableStream(path, durability=durability) as stream:
        stored = stream.append({"type": "n"})
        assert stream.stats()["durability"] == durability
    with DurableStream(path, durability=durability) as reopened:
        assert reopened.get_event_history()[-1] == stored


def test_expired_checkpoint_is_rejected_after_a_restart(path):
    stream = DurableStream(path)
    checkpoint = stream.request_checkpoint("s1", "a?", ["x"], "me", timeout=0.02)
    stream.shutdown()
    time.sleep(0.05)
    reopened = DurableStream(path)
    try:
        result = reopened.resume()
        assert result.expired_checkpoints == 1 and result.pending_checkpoints == []
    finally:
        reopened.shutdown()
    rejected = [e for e in file_events(path) if e["type"] == "checkpoint.rejected"]
    assert [e["payload"]["checkpoint_id"] for e in rejected] == [checkpoint.id]
    assert rejected[0]["payload"]["reason"] == "timeout"


async def test_pending_checkpoint_is_rearmed_after_a_restart(path):
    stream = DurableStream(path)
    checkpoint = stream.request_checkpoint("s1", "a?", ["x"], "me", timeout=0.3)
    stream.shutdown()
    reopened = DurableStream(path)
    try:
        result = reopened.resume()
        assert [c.id for c in result.pending_checkpoints] == [checkpoint.id]
        assert reopened.stats()["timers"] == 1
        assert await eventually(lambda: timeouts(reopened))
        assert [e["payload"]["checkpoint_id"] for e in timeouts(reopened)] == [checkpoint.id]
        assert reopened.stats()["timers"] == 0
    finally:
        reopened.shutdown()


# -- intents ----------------------------------------------------------------------------------


def test_intent_lifecycle(stream):
    intent = stream.create_intent({"session_id": "s1", "agent": "build", "goal": "compile"})
    assert INTENT_ID.match(intent.id) and intent.status == "active"
    spawned = of_type(stream, "agent.spawned")[0]
    assert spawned["payload"] == {
        "id": intent.id,
        "session_id": "s1",
        "agent": "build",
        "goal": "compile",
    }
    assert spawned["stream_id"] == "s1"
    assert stream.active_intents == [intent]
    assert stream.complete_intent(intent.id, {"ok": True})
    completed = of_type(stream, "agent.completed")[0]
    assert completed["payload"] == {"intent_id": intent.id, "result": {"ok": True}}
    assert intent.status == "completed" and stream.active_intents == []
    assert not stream.complete_intent(intent.id, None)
    assert not stream.fail_intent("intent_unknown", "x")


def test_fail_and_abort_remove_intents(stream):
    failed = stream.create_intent({"agent": "a"})
    aborted = stream.create_intent({"agent": "b"})
    assert failed.stream_id == "intents"
    assert stream.fail_intent(failed.id, "crashed")
    assert of_type(stream, "agent.failed")[0]["payload"] == {
        "intent_id": failed.id,
        "error": "crashed",
    }
    stream.append({"type": "agent.aborted", "payload": {"intent_id": aborted.id}})
    assert stream.active_intents == [] and (failed.status, aborted.status) == ("failed", "aborted")


def test_spec_cannot_override_the_intent_id(stream):
    intent = stream.create_intent({"id": "mine", "agent": "a"})
    assert intent.id != "mine" and of_type(stream, "agent.spawned")[0]["payload"]["id"] == intent.id


# -- bridge (its mapping is tested in tests/stream/test_opencode_bridge.py) -------------------


def part(part_type: str, **fields) -> dict:
    body = {"id": "prt_1", "sessionID": "ses_1", "messageID": "msg_1", "type": part_type}
    body.update(fields)
    return {"type": "message.part.updated", "properties": {"part": body}}


# -- sessions ---------------------------------------------------------------------------------


def populate_session(stream: DurableStream, session_id: str) -> tuple[Checkpoint, Intent]:
    stream.bridge(part("tool", callID="c1", sessionID=session_id, state={"status": "running"}))
    checkpoint = stream.request_checkpoint(session_id, "a?", ["x"], "me")
    intent = stream.create_intent({"session_id": session_id, "agent": "a"})
    return checkpoint, intent


def empty_state(stream: DurableStream) -> bool:
    stats = stream.stats()
    return stats["sessions"] == stats["pending_checkpoints"] == stats["active_intents"] == 0


async def test_delete_session_drops_its_state(stream):
    checkpoint, intent = populate_session(stream, "ses_1")
    other, _ = populate_session(stream, "ses_2")
    timer = stream.checkpoints.timer_of(checkpoint.id)
    deleted = stream.delete_session("ses_1", "user closed it")
    assert deleted["type"] == "lifecycle.session.deleted"
    assert deleted["payload"] == {"session_id": "ses_1", "reason": "user closed it"}
    assert timer.cancelled() and (checkpoint.status, intent.status) == ("dropped", "dropped")
    assert stream.pending_checkpoints == [other] and stream.stats()["sessions"] == 1
    assert stream.stats()["timers"] == 1


def test_abort_session_drops_its_state(stream):
    populate_session(stream, "ses_1")
    aborted = stream.abort_session("ses_1")
    assert aborted["type"] == "lifecycle.session.aborted" and aborted["stream_id"] == "ses_1"
    assert empty_state(stream)


@pytest.mark.parametrize("terminal", sorted(t for t in SESSION_TERMINAL_TYPES if "plugin" not in t))
def test_terminal_events_drop_session_state(stream, terminal):
    populate_session(stream, "ses_1")
    stream.append({"type": terminal, "stream_id": "ses_1"})
    assert empty_state(stream)


def test_plugin_shutdown_drops_every_session(stream):
    populate_session(stream, "ses_1")
    populate_session(stream, "ses_2")
    stream.append({"type": "plugin.shutdown"})
    assert empty_state(stream)


def test_bridge_session_deleted_drops_tool_state(stream):
    stream.bridge(part("tool", callID="c1", state={"status": "running"}))
    assert stream.stats()["bridge_sessions"] == 1
    stream.bridge({"type": "session.deleted", "properties": {"info": {"id": "ses_1"}}})
    assert empty_state(stream)


def test_dropped_state_stays_dropped_after_restart(path):
    stream = DurableStream(path)
    populate_session(stream, "ses_1")
    stream.delete_session("ses_1")
    stream.shutdown()
    with DurableStream(path) as reopened:
        assert reopened.resume().pending_checkpoints == [] and empty_state(reopened)


# -- learning integration (a subscriber that appends) -------------------------------------------


def test_learning_extractor_appends_from_inside_a_notification(stream):
    extractor = LearningExtractor(stream).attach()
    intent = stream.create_intent({"session_id": "s1", "agent": "a"})
    stream.complete_intent(intent.id, "done")
    [learning] = of_type(stream, "learning.captured")
    assert learning["payload"]["kind"] == "decision"
    types = [e["type"] for e in stream.get_event_history()]
    assert types == ["agent.spawned", "agent.completed", "learning.captured"]
    asyncio.run(extractor.shutdown())


# -- lifecycle --------------------------------------------------------------------------------


def test_stats_keys(stream):
    stats = stream.stats()
    for key in (
        "history_events",
        "cache_events",
        "history_bytes",
        "evicted",
        "subscribers",
        "pending_checkpoints",
        "active_intents",
        "timers",
        "sessions",
        "file_bytes",
        "durability",
    ):
        assert key in stats
    assert stats["durability"] == "flush"


async def test_shutdown_is_idempotent_and_cancels_timers(path):
    stream = DurableStream(path)
    checkpoint = stream.request_checkpoint("s1", "a?", ["x"], "me")
    timer = stream.checkpoints.timer_of(checkpoint.id)
    stream.shutdown()
    stream.shutdown()
    assert timer.cancelled() and stream.closed and stream.stats()["timers"] == 0
    with pytest.raises(_core.StoreClosedError):
        stream.append({"type": "late"})
    with DurableStream(path) as reopened:  # the lock was released
        assert len(reopened.get_event_history()) == 1


async def test_initialize_registers_and_shutdown_all_resets(tmp_path):
    path = tmp_path / "s.jsonl"
    assert get_durable_stream() is None
    stream = initialize_durable_stream(store_path=path, durability="none")
    assert get_durable_stream() is stream
    assert component_registry.get_component("durable_stream") is stream
    assert initialize_durable_stream(store_path=str(path), durability="none") is stream
    with pytest.raises(ValueError):
        initialize_durable_stream(store_path=path, durability="fsync")
    stream.request_checkpoint("s1", "a?", ["x"], "me")
    report = await shutdown_all(timeout_per_component=2.0)
    assert report.step("durable_stream").outcome == "ok"
    assert stream.closed and get_durable_stream() is None
    again = initialize_durable_stream(store_path=path, durability="none")
    assert again is not stream and again.resume().pending_checkpoints != []


def test_initialize_replaces_a_stream_shut_down_directly(tmp_path):
    first = initialize_durable_stream(store_path=tmp_path / "s.jsonl")
    first.shutdown()
    assert get_durable_stream() is None
    second = initialize_durable_stream(store_path=tmp_path / "s.jsonl")
    assert second is not first and not second.closed


def test_sync_waits_for_disk_in_group_mode(tmp_path):
    path = tmp_path / "group.jsonl"
    stream = DurableStream(path, durability="group")
    stream.append({"type": "a", "stream_id": "s"})
    stream.sync()
    assert b'"type":"a"' in path.read_bytes()
    stream.shutdown()
    with pytest.raises(_core.StoreClosedError):
        stream.sync()


# -- the native append path (StreamAppender) -------------------------------------------------


def test_append_is_the_native_appender_and_does_what_the_method_does(path):
    stream = DurableStream(path, durability="none")
    assert isinstance(stream.append.__self__, _core.StreamAppender)
    seen: list[str] = []
    stream.subscribe("*", lambda event: seen.append(event["type"]))
    plain = stream.append({"type": "note", "stream_id": "s1", "payload": {"n": 1}})
    assert plain["seq"] == 1 and plain["actor"] == "system" and seen == ["note"]
    # A projected type goes through the projection (the checkpoint becomes pending).
    requested = stream.append(
        {
            "type": "checkpoint.requested",
            "stream_id": "s1",
            "payload": {"checkpoint_id": "cp_x", "question": "ok?", "options": ["y"]},
        }
    )
    assert stream.get_checkpoint("cp_x") is not None and requested["seq"] == 2
    stream.shutdown()
    # Shut down, the instance falls back to the method, which refuses with the stream's message.
    assert "append" not in vars(stream)
    with pytest.raises(_core.StoreClosedError, match="durable stream is shut down"):
        stream.append({"type": "late"})


def test_a_projection_alone_runs_from_the_native_appender_with_its_housekeeping(path):
    # No subscribers, nothing pending: the appender calls the projector itself, then the
    # checkpoints' housekeeping because the projection left one pending. This one is overdue
    # when requested, so the housekeeping expires it at once (as the method does).
    stream = DurableStream(path, durability="none")
    try:
        requested = {
            "type": "checkpoint.requested",
            "stream_id": "s1",
            "payload": {"checkpoint_id": "cp_a", "question": "ok?", "expires_at": 1},
        }
        stream.append(requested)
        assert stream.get_checkpoint("cp_a") is None
        types = [e["type"] for e in stream.get_event_history()]
        assert types == ["checkpoint.requested", "checkpoint.rejected"]
        # Not overdue: it stays pending, and its end (a projection alone again) resolves it.
        stream.append({**requested, "payload": {"checkpoint_id": "cp_b", "question": "ok?"}})
        assert stream.get_checkpoint("cp_b") is not None
        stream.append({"type": "checkpoint.approved", "payload": {"checkpoint_id": "cp_b"}})
        assert stream.get_checkpoint("cp_b") is None
    finally:
        stream.shutdown()


def test_a_failing_projection_is_counted_and_logged_and_the_append_stands(path, caplog):
    stream = DurableStream(path, durability="none")
    try:

        def broken(event: dict) -> None:
            raise RuntimeError("projection bug")

        stream._projectors["note"] = broken  # the dict the native appender reads
        with caplog.at_level("ERROR", logger="opencode_addons.durable_stream"):
            stored = stream.append({"type": "note", "stream_id": "s1"})
        assert stored["seq"] == 1 and len(stream.get_event_history()) == 1
        assert stream.stats()["projection_errors"] == 1
        (record,) = [r for r in caplog.records if "projection failed on note" in r.getMessage()]
        assert record.exc_info is not None and "projection bug" in str(record.exc_info[1])

        def interrupted(event: dict) -> None:
            raise KeyboardInterrupt

        stream._projectors["note"] = interrupted  # not an Exception: it goes on up
        with pytest.raises(KeyboardInterrupt):
            stream.append({"type": "note", "stream_id": "s1"})
        assert stream.stats()["projection_errors"] == 1
    finally:
        stream.shutdown()


def test_a_subclass_that_overrides_append_keeps_its_own(path):
    class Counting(DurableStream):
        calls = 0

        def append(self, event):  # type: ignore[no-untyped-def]
            Counting.calls += 1
            return super().append(event)

    stream = Counting(path, durability="none")
    try:
        assert "append" not in vars(stream)
        stream.append({"type": "note", "stream_id": "s1"})
        assert Counting.calls == 1 and len(stream.get_event_history()) == 1
    finally:
        stream.shutdown()


def test_calling_the_appender_and_its_append_method_store_alike(tmp_path):
    # The stream installs the bound method (the faster call); the object stays callable.
    stream = DurableStream(tmp_path / "s.jsonl", durability="none")
    try:
        appender = stream.append.__self__
        by_call = appender({"type": "note", "stream_id": "s1", "payload": {"n": 1}})
        by_method = appender.append({"type": "note", "stream_id": "s1", "payload": {"n": 2}})
        assert (by_call["seq"], by_method["seq"]) == (1, 2)
        assert by_call["actor"] == by_method["actor"] == "system"
        assert [e["payload"]["n"] for e in stream.get_event_history()] == [1, 2]
    finally:
        stream.shutdown()


def test_native_appender_errors_leave_nothing_and_checks_its_containers(tmp_path):
    stream = DurableStream(tmp_path / "s.jsonl", durability="none")
    try:
        with pytest.raises(TypeError):
            stream.append(["not", "a", "mapping"])  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            stream.append({"stream_id": "s1"})  # no type
        assert len(stream.get_event_history()) == 0
        not_a_dict: Any = []
        with pytest.raises(TypeError):
            _core.StreamAppender(stream._store, not_a_dict, {}, {}, print, print, print)
    finally:
        stream.shutdown()


def test_a_stream_dropped_without_shutdown_is_collected_and_lets_go_of_its_file(tmp_path):
    # The native appender and the stream refer to each other (through the projectors and
    # subscribers): the garbage collector must still see the cycle and free it.
    class Watcher:  # a component holding the stream, subscribed to it
        def __init__(self, stream: DurableStream) -> None:
            self.stream = stream

        def on_event(self, event: dict) -> None:
            self.stream.stats()

    path = tmp_path / "s.jsonl"
    stream = DurableStream(path, durability="none")
    stream.subscribe("*", Watcher(stream).on_event)
    stream.append({"type": "note", "stream_id": "s1"})
    gone = weakref.ref(stream)
    del stream
    gc.collect()
    assert gone() is None
    with DurableStream(path, durability="none") as again:  # its lock was released
        assert len(again.get_event_history()) == 1
