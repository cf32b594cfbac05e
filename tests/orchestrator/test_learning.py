"""LearningExtractor: classification numbers, capture scheduling, cleanup, shutdown."""

from __future__ import annotations

import asyncio

import pytest
from fakes import eventually
from opencode_addons.events import (
    AGENT_COMPLETED,
    AGENT_FAILED,
    CHECKPOINT_APPROVED,
    CHECKPOINT_REJECTED,
    LEARNING_CAPTURED,
    MESSAGE_COMPLETED,
    PLUGIN_SHUTDOWN,
    RAW_SESSION_IDLE,
    SESSION_DELETED,
    SESSION_END,
    SESSION_IDLE,
    TEXT_DELTA,
    TEXT_SNAPSHOT,
)
from opencode_addons.memory_lane import MemoryLaneStore
from opencode_addons.orchestrator.learning import Learning, LearningExtractor
from real_stream import real_stream

DELAY = 0.05


def make(stream=None, **kwargs):
    stream = stream or real_stream()
    kwargs.setdefault("capture_delay", DELAY)
    return stream, LearningExtractor(stream, **kwargs).attach()


def say(stream, session, role, text, **payload):
    actor = "user" if role == "user" else "assistant"
    return stream.append(
        {
            "type": TEXT_SNAPSHOT,
            "stream_id": session,
            "actor": actor,
            "payload": {"role": role, "text": text, **payload},
        }
    )


def idle(stream, session, event_type=SESSION_IDLE):
    return stream.append({"type": event_type, "stream_id": session, "payload": {}})


def captured(stream):
    return stream.of_type(LEARNING_CAPTURED)


async def settle(extractor, seconds=DELAY * 3):
    """Let capture timers run: at least ``seconds``, and until none is pending (a busy machine
    may run them late)."""
    await asyncio.sleep(seconds)
    assert await eventually(lambda: not extractor.pending_captures)


def other_tasks():
    return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}


# -- classification ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "kind", "confidence"),
    [
        (AGENT_COMPLETED, "decision", 0.7),
        (AGENT_FAILED, "anti-pattern", 0.8),
        (CHECKPOINT_APPROVED, "preference", 0.85),
        (CHECKPOINT_REJECTED, "anti-pattern", 0.8),
    ],
)
def test_classify_event_numbers(event_type, kind, confidence):
    extractor = LearningExtractor(real_stream())
    event = {
        "id": "evt_1",
        "type": event_type,
        "stream_id": "ses_1",
        "timestamp": 1234,
        "payload": {"agent": "builder", "reason": "tests pass"},
    }
    learning = extractor.classify_event(event)
    assert isinstance(learning, Learning)
    assert (learning.kind, learning.confidence) == (kind, confidence)
    assert learning.session_id == "ses_1"
    assert learning.source_event_id == "evt_1"
    assert learning.created_at == 1234
    assert "builder" in learning.content and "tests pass" in learning.content


def test_classify_event_ignores_other_types():
    extractor = LearningExtractor(real_stream())
    assert extractor.classify_event({"type": "task.started", "payload": {}}) is None


def test_classify_transcript_kinds_and_numbers():
    extractor = LearningExtractor(real_stream())
    messages = [
        {"role": "user", "text": "Please add a cache"},
        {"role": "assistant", "text": "Traceback (most recent call last): boom"},
        {"role": "user", "text": "No, use the LRU from functools instead"},
        {"role": "assistant", "text": "Done, all green"},
        {"role": "user", "text": "Perfect, thanks!"},
        {"role": "user", "text": "Actually that's wrong too"},
        {"role": "assistant", "text": "There was no error this time"},
        {"role": "tool", "content": "command failed with exit code 1"},
    ]
    result = [(x.kind, x.confidence, x.content) for x in extractor.classify_transcript(messages)]
    assert result == [
        ("correction", 0.9, "No, use the LRU from functools instead"),
        ("correction", 0.9, "Actually that's wrong too"),
        ("failure", 0.8, "Traceback (most recent call last): boom"),
        ("success", 0.8, "Perfect, thanks!"),
        ("failure", 0.8, "There was no error this time"),
        ("failure", 0.8, "command failed with exit code 1"),
    ]


def test_classify_transcript_ignores_neutral_messages():
    extractor = LearningExtractor(real_stream())
    messages = [
        {"role": "user", "text": "Add a README section"},
        {"role": "assistant", "text": "I added it"},
        {"role": "user", "text": "   "},
    ]
    assert extractor.classify_transcript(messages) == []


def test_min_confidence_filters_out_lower_kinds():
    extractor = LearningExtractor(real_stream(), min_confidence=0.85)
    messages = [
        {"role": "assistant", "text": "error: disk full"},
        {"role": "user", "text": "great"},
        {"role": "user", "text": "don't write to /tmp"},
    ]
    assert [x.kind for x in extractor.classify_transcript(messages)] == ["correction"]


def test_top_ten_cut_keeps_highest_confidence_in_stable_order():
    extractor = LearningExtractor(real_stream())
    messages = [{"role": "assistant", "text": f"error number {i}"} for i in range(8)]
    messages += [{"role": "user", "text": f"no, do step {i} instead"} for i in range(5)]
    learnings = extractor.classify_transcript(messages)
    assert len(learnings) == 10
    assert [x.content for x in learnings[:5]] == [f"no, do step {i} instead" for i in range(5)]
    assert [x.content for x in learnings[5:]] == [f"error number {i}" for i in range(5)]


# -- event-derived captures ----------------------------------------------------------------------


def test_event_learning_is_captured_immediately_and_stored_in_memory_lane():
    lane = MemoryLaneStore()
    stream, extractor = make(memory_lane=lane)
    source = stream.append(
        {
            "type": AGENT_FAILED,
            "stream_id": "ses_a",
            "payload": {"agent": "tester", "error": "timeout"},
        }
    )
    events = captured(stream)
    assert len(events) == 1
    event = events[0]
    assert event["stream_id"] == "ses_a"
    assert event["actor"] == "learning"
    assert event["payload"]["kind"] == "anti-pattern"
    assert event["payload"]["confidence"] == 0.8
    assert event["payload"]["source_event_id"] == source["id"]
    hits = lane.smart_find("tester timeout", collection="learnings")
    assert len(hits) == 1
    assert hits[0].tags == ["anti-pattern"]
    assert extractor.stats()["learnings_captured"] == 1
    lane.close()


# -- scheduled captures --------------------------------------------------------------------------


async def test_idle_schedules_capture_that_runs_after_delay():
    stream, extractor = make()
    say(stream, "ses_1", "assistant", "ImportError: no module named foo")
    say(stream, "ses_1", "user", "No, install it with pip instead")
    idle(stream, "ses_1")
    assert set(extractor.pending_captures) == {"ses_1"}
    assert captured(stream) == []
    await settle(extractor)
    kinds = [(e["payload"]["kind"], e["payload"]["confidence"]) for e in captured(stream)]
    assert kinds == [("correction", 0.9), ("failure", 0.8)]
    assert extractor.pending_captures == {}
    assert extractor.stats()["pending_captures"] == 0
    assert all(e["stream_id"] == "ses_1" for e in captured(stream))


async def test_raw_session_idle_also_schedules():
    stream, extractor = make()
    say(stream, "ses_raw", "user", "perfect, that works")
    idle(stream, "ses_raw", RAW_SESSION_IDLE)
    assert "ses_raw" in extractor.pending_captures
    await settle(extractor)
    assert [e["payload"]["kind"] for e in captured(stream)] == ["success"]


async def test_user_activity_cancels_pending_capture():
    stream, extractor = make()
    say(stream, "ses_1", "assistant", "the build failed")
    idle(stream, "ses_1")
    handle = extractor.pending_captures["ses_1"]
    say(stream, "ses_1", "user", "keep going")
    assert extractor.pending_captures == {}
    assert handle.cancelled()
    await settle(extractor)
    assert captured(stream) == []
    # Activity in another session does not cancel this one.
    idle(stream, "ses_1")
    say(stream, "ses_2", "user", "hello")
    assert "ses_1" in extractor.pending_captures
    await settle(extractor)
    assert [e["payload"]["kind"] for e in captured(stream)] == ["failure"]


async def test_repeated_idle_reschedules_a_single_capture():
    stream, extractor = make()
    say(stream, "ses_1", "assistant", "exception raised")
    idle(stream, "ses_1")
    first = extractor.pending_captures["ses_1"]
    idle(stream, "ses_1")
    assert first.cancelled()
    assert len(extractor.pending_captures) == 1
    await settle(extractor)
    assert len(captured(stream)) == 1


async def test_second_capture_does_not_repeat_learnings():
    stream, extractor = make()
    assert extractor.stats()["attached"] is True
    say(stream, "ses_1", "assistant", "exception raised")
    idle(stream, "ses_1")
    await settle(extractor)
    idle(stream, "ses_1")
    await settle(extractor)
    assert len(captured(stream)) == 1


@pytest.mark.parametrize("terminal", [SESSION_DELETED, "session.deleted", SESSION_END])
async def test_terminal_event_runs_final_capture_and_drops_state(terminal):
    stream, extractor = make()
    say(stream, "ses_1", "user", "don't touch the lockfile")
    idle(stream, "ses_1")
    say(stream, "ses_2", "assistant", "working")
    stream.append({"type": terminal, "stream_id": "ses_1", "payload": {}})
    assert [e["payload"]["kind"] for e in captured(stream)] == ["correction"]
    assert extractor.pending_captures == {}
    assert "ses_1" not in extractor.transcripts
    assert list(extractor.transcripts) == ["ses_2"]
    await settle(extractor)
    assert len(captured(stream)) == 1
    assert other_tasks() == set()


async def test_plugin_shutdown_captures_every_session_and_clears_all():
    stream, extractor = make()
    say(stream, "ses_1", "user", "instead use ruff")
    say(stream, "ses_2", "assistant", "fatal error")
    idle(stream, "ses_2")
    stream.append({"type": PLUGIN_SHUTDOWN, "stream_id": "plugin", "payload": {}})
    assert sorted(e["stream_id"] for e in captured(stream)) == ["ses_1", "ses_2"]
    assert extractor.pending_captures == {}
    assert extractor.stats()["sessions"] == 0


async def test_transcript_accumulates_deltas_and_snapshots_per_message():
    stream, extractor = make()
    for part in ("Trace", "back: ", "boom"):
        stream.append(
            {
                "type": TEXT_DELTA,
                "stream_id": "ses_1",
                "payload": {"role": "assistant", "text": part, "message_id": "m1"},
            }
        )
    stream.append(
        {
            "type": MESSAGE_COMPLETED,
            "stream_id": "ses_1",
            "actor": "user",
            "payload": {"content": "thanks", "message_id": "m2"},
        }
    )
    messages = [(m.role, m.text) for m in extractor.transcripts["ses_1"]]
    assert messages == [("assistant", "Traceback: boom"), ("user", "thanks")]


async def test_a_message_stops_growing_at_its_cap_and_a_snapshot_replaces_it():
    stream, extractor = make(max_message_chars=10)

    def send(event_type: str, text: str) -> None:
        payload = {"role": "assistant", "text": text, "message_id": "m1"}
        stream.append({"type": event_type, "stream_id": "ses_1", "payload": payload})

    for part in ("abcd", "efgh", "ijkl", "mnop"):
        send(TEXT_DELTA, part)
    assert [m.text for m in extractor.transcripts["ses_1"]] == ["abcdefghij"]
    send(TEXT_SNAPSHOT, "0123456789abc")
    assert [m.text for m in extractor.transcripts["ses_1"]] == ["0123456789"]


async def test_transcript_is_bounded_per_session():
    stream, extractor = make(max_messages_per_session=5)
    for index in range(20):
        say(stream, "ses_1", "assistant", f"line {index}")
    transcript = extractor.transcripts["ses_1"]
    assert len(transcript) == 5
    assert transcript[0].text == "line 15"


async def test_sessions_are_bounded():
    stream, extractor = make(max_sessions=3)
    for index in range(6):
        say(stream, f"ses_{index}", "assistant", "hi")
        idle(stream, f"ses_{index}")
    assert list(extractor.transcripts) == ["ses_3", "ses_4", "ses_5"]
    assert set(extractor.pending_captures) <= set(extractor.transcripts)
    await extractor.shutdown()


async def test_shutdown_cancels_pending_and_leaves_no_tasks():
    stream, extractor = make()
    for session in ("a", "b", "c"):
        say(stream, session, "assistant", "error everywhere")
        idle(stream, session)
    handles = list(extractor.pending_captures.values())
    assert len(handles) == 3
    await extractor.shutdown()
    assert extractor.pending_captures == {}
    assert extractor.transcripts == {}
    assert all(handle.cancelled() for handle in handles)
    assert stream.subscriber_count() == 0
    await settle(extractor)
    assert captured(stream) == []
    assert other_tasks() == set()
    await extractor.shutdown()  # idempotent
    stream.append({"type": AGENT_COMPLETED, "stream_id": "a", "payload": {}})
    assert captured(stream) == []
    stats = extractor.stats()
    assert stats["pending_captures"] == 0 and stats["errors"] == 0


def test_without_running_loop_idle_captures_immediately():
    stream, extractor = make()
    say(stream, "ses_1", "assistant", "exception in thread")
    idle(stream, "ses_1")
    assert extractor.pending_captures == {}
    assert [e["payload"]["kind"] for e in captured(stream)] == ["failure"]


def test_own_events_are_not_reprocessed_and_errors_are_counted():
    class BrokenLane:
        def store(self, *args, **kwargs):
            raise OSError("disk gone")

    stream, extractor = make(memory_lane=BrokenLane())
    stream.append({"type": CHECKPOINT_APPROVED, "stream_id": "s", "payload": {}})
    assert len(captured(stream)) == 1
    assert extractor.stats()["errors"] == 1
    assert extractor.stats()["learnings_captured"] == 1
