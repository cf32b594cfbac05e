from __future__ import annotations

import asyncio
import logging

import pytest
from opencode_addons.events import SESSION_TERMINAL_TYPES
from opencode_addons.orchestrator.sessions import DEFAULT_MAX_ENDED, SessionStateTracker
from real_stream import real_stream


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def event(event_type: str, session_id: str | None = None, **payload) -> dict:
    if session_id is not None:
        payload.setdefault("sessionID", session_id)
    return {"type": event_type, "stream_id": "bridge", "payload": payload}


def test_session_created_on_first_event_and_touched_after():
    clock = Clock()
    stream = real_stream()
    tracker = SessionStateTracker(stream, clock=clock)
    stream.append(event("message.completed", "s1"))
    state = tracker.get("s1")
    assert state is not None and state.created_at == state.last_seen == clock.now
    clock.advance(5)
    stream.append(event("execution.tool_start", "s1"))
    assert tracker.get("s1") is state and state.last_seen == clock.now
    assert state.created_at == clock.now - 5
    assert "s1" in tracker and len(tracker) == 1
    state.data["note"] = "kept"
    assert tracker.get("s1").data == {"note": "kept"}


def test_stream_id_is_used_when_payload_has_no_session():
    tracker = SessionStateTracker()
    tracker.observe({"type": "x", "stream_id": "ses_9", "payload": {}})
    assert "ses_9" in tracker


@pytest.mark.parametrize(
    "terminal_type",
    sorted(t for t in SESSION_TERMINAL_TYPES if not t.endswith("plugin.shutdown")),
)
def test_session_dropped_on_every_terminal_spelling(terminal_type):
    stream = real_stream()
    tracker = SessionStateTracker(stream)
    dropped: list[tuple[str, str]] = []
    tracker.on_drop(lambda session_id, reason: dropped.append((session_id, reason)))
    stream.append(event("message.completed", "s1"))
    stream.append(event("message.completed", "s2"))
    stream.append(event(terminal_type, "s1"))
    assert "s1" not in tracker and "s2" in tracker
    assert dropped == [("s1", terminal_type)]


def test_deleted_event_with_info_id_spelling():
    tracker = SessionStateTracker()
    tracker.observe({"type": "x", "stream_id": "s", "payload": {"info": {"id": "ses_1"}}})
    tracker.observe(
        {"type": "session.deleted", "stream_id": "s", "payload": {"info": {"id": "ses_1"}}}
    )
    assert "ses_1" not in tracker


def test_ended_sessions_are_remembered_up_to_their_limit():
    tracker = SessionStateTracker(max_ended=3)
    assert tracker.max_ended == 3 and SessionStateTracker().max_ended == DEFAULT_MAX_ENDED
    for index in range(5):
        tracker.observe(event("message.completed", f"s{index}"))
        tracker.observe(event("session.deleted", f"s{index}"))
    assert tracker.stats()["recently_ended"] == 3
    # A late event of a remembered session is an echo; the oldest two were let go of.
    tracker.observe(event("message.completed", "s4"))
    assert "s4" not in tracker
    tracker.observe(event("message.completed", "s0"))
    assert "s0" in tracker
    # A session created again is no longer an ended one.
    tracker.observe(event("session.created", "s3"))
    assert "s3" in tracker and tracker.stats()["recently_ended"] == 2


def test_a_tracker_that_remembers_no_ended_session_lets_late_events_back():
    tracker = SessionStateTracker(max_ended=0)
    tracker.observe(event("message.completed", "s1"))
    tracker.observe(event("session.deleted", "s1"))
    assert tracker.stats()["recently_ended"] == 0 and "s1" not in tracker
    tracker.observe(event("message.completed", "s1"))
    assert "s1" in tracker


@pytest.mark.parametrize("shutdown_type", ["plugin.shutdown", "lifecycle.plugin.shutdown"])
def test_plugin_shutdown_drops_all_sessions(shutdown_type):
    stream = real_stream()
    tracker = SessionStateTracker(stream)
    for i in range(4):
        stream.append(event("message.completed", f"s{i}"))
    stream.append({"type": shutdown_type, "stream_id": "system", "payload": {}})
    assert len(tracker) == 0
    assert tracker.stats()["dropped"] == 4


def test_expire_drops_sessions_idle_past_ttl():
    clock = Clock()
    tracker = SessionStateTracker(ttl=100.0, clock=clock)
    dropped = []
    tracker.on_drop(lambda session_id, reason: dropped.append((session_id, reason)))
    tracker.observe(event("a", "old"))
    clock.advance(50)
    tracker.observe(event("a", "young"))
    clock.advance(50)
    assert tracker.expire() == 1
    assert dropped == [("old", "expired")]
    assert tracker.sessions() == ["young"]
    clock.advance(49)
    assert tracker.expire() == 0
    clock.advance(1)
    assert tracker.expire() == 1 and len(tracker) == 0
    assert tracker.stats()["expired"] == 2


def test_touching_a_session_keeps_it_alive():
    clock = Clock()
    tracker = SessionStateTracker(ttl=10.0, clock=clock)
    tracker.observe(event("a", "s"))
    for _ in range(5):
        clock.advance(9)
        tracker.observe(event("a", "s"))
        assert tracker.expire() == 0
    assert "s" in tracker


def test_opportunistic_expiry_without_a_loop():
    clock = Clock()
    tracker = SessionStateTracker(ttl=10.0, clock=clock)
    for i in range(100):
        tracker.observe(event("a", f"s{i}"))
        clock.advance(1)
    # Sweeps run at most every ttl seconds, so at most ~2 * ttl sessions are alive.
    assert len(tracker) <= 20
    assert f"s{99}" in tracker


def test_max_sessions_evicts_least_recently_seen():
    tracker = SessionStateTracker(max_sessions=2)
    tracker.observe(event("a", "s1"))
    tracker.observe(event("a", "s2"))
    tracker.observe(event("a", "s1"))  # s2 is now the least recently seen
    tracker.observe(event("a", "s3"))
    assert tracker.sessions() == ["s1", "s3"]
    assert tracker.stats()["evicted"] == 1


def test_raising_drop_callback_is_logged_and_others_still_run(caplog):
    tracker = SessionStateTracker()
    seen = []

    def broken(session_id, reason):
        raise RuntimeError("callback bug")

    tracker.on_drop(broken)
    unsubscribe = tracker.on_drop(lambda session_id, reason: seen.append(session_id))
    tracker.observe(event("a", "s1"))
    with caplog.at_level(logging.ERROR):
        assert tracker.drop("s1", "test") is True
    assert seen == ["s1"] and "on_drop callback failed" in caplog.text
    assert tracker.drop("s1") is False
    unsubscribe()
    tracker.observe(event("a", "s2"))
    tracker.drop("s2")
    assert seen == ["s1"]


async def test_timer_expires_sessions_and_shutdown_cancels_it():
    clock = Clock()
    stream = real_stream()
    tracker = SessionStateTracker(stream, ttl=0.02, clock=clock)
    stream.append(event("a", "s1"))  # a running loop: the expiry timer is armed lazily
    assert tracker.expiry_armed
    clock.advance(1)
    for _ in range(50):
        if "s1" not in tracker:
            break
        await asyncio.sleep(0.01)
    assert "s1" not in tracker
    assert tracker.expiry_armed  # re-armed after firing
    stream.append(event("a", "s2"))
    dropped = []
    tracker.on_drop(lambda session_id, reason: dropped.append((session_id, reason)))
    await tracker.shutdown()
    await tracker.shutdown()
    assert not tracker.expiry_armed and len(tracker) == 0
    assert dropped == [("s2", "shutdown")]
    assert stream.subscriber_count() == 0
    stream.append(event("a", "s3"))
    assert "s3" not in tracker
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_attach_after_shutdown_is_refused():
    tracker = SessionStateTracker()
    await tracker.shutdown()
    with pytest.raises(RuntimeError):
        tracker.attach(real_stream())


def test_invalid_arguments():
    with pytest.raises(ValueError):
        SessionStateTracker(ttl=0)
    with pytest.raises(ValueError):
        SessionStateTracker(max_sessions=0)
    for bad in (-1, 1.5, True, None):
        with pytest.raises(ValueError, match="max_ended"):
            SessionStateTracker(max_ended=bad)
