"""Soak: 50,000 sessions created and deleted leave every per-session structure at its baseline.

A real DurableStream (fed through the OpenCode bridge) is wired to a SessionStateTracker, a
TaskRegistry and a LearningExtractor, with the event loop running, so captures are real timers
and an async subscriber creates real tasks.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opencode_addons.durable_stream import DurableStream
from opencode_addons.orchestrator.learning import LearningExtractor
from opencode_addons.orchestrator.sessions import SessionStateTracker
from opencode_addons.orchestrator.task_registry import TaskRegistry

SESSIONS = 50_000


def sdk(event_type: str, **properties: Any) -> dict:
    return {"type": event_type, "properties": properties}


def part(session_id: str, part_type: str, **fields: Any) -> dict:
    body = {"id": f"prt_{part_type}", "sessionID": session_id, "messageID": "msg_1"}
    body.update(type=part_type, **fields)
    return body


class Harness:
    def __init__(self, stream: DurableStream, *, extractor_first: bool = True) -> None:
        self.stream = stream
        # Both subscription orders must leave nothing behind (see
        # test_tracker_does_not_resurrect_sessions_from_their_final_learning).
        if extractor_first:
            self.extractor = LearningExtractor(stream).attach()
            self.tracker = SessionStateTracker(stream)
        else:
            self.tracker = SessionStateTracker(stream)
            self.extractor = LearningExtractor(stream).attach()
        self.registry = TaskRegistry(stream, cleanup_interval=3600.0)
        self.tracker.on_drop(lambda session_id, reason: self.registry.remove_session(session_id))
        self.deletions_seen = 0
        stream.subscribe("lifecycle.session.deleted", self.on_deleted)

    async def on_deleted(self, event: dict) -> None:
        self.deletions_seen += 1

    def run_session(self, index: int) -> None:
        session_id = f"ses_{index}"
        bridge = self.stream.bridge
        bridge(sdk("session.created", info={"id": session_id, "title": f"soak {index}"}))
        task = self.registry.register(session_id=session_id, description="soak")
        self.registry.start(task.id)
        tool = part(session_id, "tool", callID=f"call_{index}", tool="bash")
        bridge(sdk("message.part.updated", part={**tool, "state": {"status": "running"}}))
        bridge(sdk("message.part.updated", part={**tool, "state": {"status": "completed"}}))
        # Every fifth session reports a failure, so its final capture emits a learning.
        text = "the build failed with an error" if index % 5 == 0 else "all good here"
        bridge(sdk("message.part.updated", part=part(session_id, "text", text=text), delta=text))
        done = part(session_id, "text", text=text, time={"start": 1, "end": 2})
        bridge(sdk("message.part.updated", part=done))
        if index % 10 == 0:
            self.stream.request_checkpoint(session_id, "continue?", ["yes", "no"], "soak")
            self.stream.create_intent({"session_id": session_id, "agent": "build"})
        self.registry.complete(task.id, "ok")
        bridge(sdk("session.idle", sessionID=session_id))
        bridge(sdk("session.deleted", info={"id": session_id}))

    def sizes(self) -> dict[str, int]:
        stream_stats = self.stream.stats()
        registry_stats = self.registry.stats()
        return {
            "tracker_sessions": len(self.tracker),
            "registry_tasks": len(self.registry),
            "registry_sessions": registry_stats["sessions"],
            "pending_captures": len(self.extractor.pending_captures),
            "transcripts": len(self.extractor.transcripts),
            "stream_sessions": stream_stats["sessions"],
            "bridge_sessions": stream_stats["bridge_sessions"],
            "pending_checkpoints": stream_stats["pending_checkpoints"],
            "active_intents": stream_stats["active_intents"],
            "stream_timers": stream_stats["timers"],
            "subscriber_tasks": stream_stats["async_tasks"],
            "asyncio_tasks": len(asyncio.all_tasks()),
        }

    async def shutdown(self) -> None:
        await self.extractor.shutdown()
        await self.registry.shutdown()
        await self.tracker.shutdown()
        self.stream.shutdown()


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


@pytest.fixture
async def harness(tmp_path):
    stream = DurableStream(
        tmp_path / "soak.jsonl", durability="none", max_event_history=20_000, max_cache_size=10_000
    )
    wired = Harness(stream)
    yield wired
    await wired.shutdown()


async def test_fifty_thousand_sessions_return_to_baseline(harness):
    # One warm-up session starts what lives for the whole run (registry cleanup, tracker timer).
    harness.run_session(-1)
    await settle()
    baseline = harness.sizes()
    assert baseline["tracker_sessions"] == baseline["pending_captures"] == 0

    for index in range(SESSIONS):
        harness.run_session(index)
        if index % 1000 == 999:
            await settle()
    await settle()

    assert harness.sizes() == baseline
    assert harness.deletions_seen == SESSIONS + 1
    stats = harness.stream.stats()
    assert stats["subscriber_errors"] == stats["projection_errors"] == 0
    assert harness.extractor.errors == 0
    assert harness.extractor.learnings_captured >= SESSIONS // 5
    assert stats["history_events"] == 20_000 and stats["cache_events"] == 10_000


async def test_tracker_does_not_resurrect_sessions_from_their_final_learning(tmp_path):
    # LearningExtractor's final capture appends learning.captured for a session after its
    # lifecycle.session.deleted; a tracker subscribed first must not re-create the session.
    stream = DurableStream(tmp_path / "leak.jsonl", durability="none")
    wired = Harness(stream, extractor_first=False)
    try:
        for index in range(10):
            wired.run_session(index)
        await settle()
        assert len(wired.tracker) == 0
    finally:
        await wired.shutdown()
