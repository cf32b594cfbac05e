"""DurableStream on a bounded disk: retention deletes old segments, resume() still finds every
pending checkpoint, active intent and session, and what a session end dropped stays dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opencode_addons import read_events
from opencode_addons.durable_stream import DurableStream

SEGMENT = (1 << 20) + 64  # the smallest a stream allows: one maximal event
OPTIONS: dict[str, Any] = {
    "max_segment_bytes": SEGMENT,
    "max_disk_bytes": 3 * SEGMENT,
    "max_event_history": 100,
    "max_cache_size": 100,
}
FILLER = "x" * 2000


def fill(stream: DurableStream, count: int) -> None:
    for n in range(count):
        stream.append({"type": "note", "stream_id": "ses_keep", "payload": {"n": n, "t": FILLER}})


def snapshot(stream: DurableStream) -> tuple[list[str], list[str], int]:
    result = stream.resume()
    return (
        sorted(c.id for c in result.pending_checkpoints),
        sorted(i.id for i in result.active_intents),
        stream.stats()["sessions"],
    )


def test_resume_after_retention_finds_the_same_pending_items(tmp_path: Path) -> None:
    path = tmp_path / "stream.jsonl"
    with DurableStream(path, **OPTIONS) as stream:
        kept = stream.request_checkpoint(
            "ses_keep", "deploy?", ["yes", "no"], "agent", timeout=3600
        )
        approved = stream.request_checkpoint("ses_keep", "tag?", ["y"], "agent", timeout=3600)
        stream.approve_checkpoint(approved.id, "user", "y")
        intent = stream.create_intent({"session_id": "ses_other", "agent": "reviewer"})
        finished = stream.create_intent({"session_id": "ses_keep"})
        stream.complete_intent(finished.id, "done")
        stream.request_checkpoint("ses_gone", "x?", ["y"], "agent", timeout=3600)
        stream.create_intent({"session_id": "ses_gone"})
        stream.delete_session("ses_gone")
        before = snapshot(stream)
        assert before == (sorted([kept.id]), sorted([intent.id]), 2)
        fill(stream, 3000)
        stats = stream.stats()
        assert snapshot(stream) == before
    assert stats["segments_dropped"] >= 2 and stats["events_dropped"] > 1000
    assert stats["carried_forward"] >= 2 * stats["segments_dropped"]
    # The original requests are gone from disk; only their carried copies remain.
    assert read_events(path, type="checkpoint.requested") == []
    assert read_events(path, limit=1)[0]["seq"] > 100
    for _ in range(2):
        with DurableStream(path, **OPTIONS) as stream:
            assert snapshot(stream) == before
            pending = stream.pending_checkpoints[0]
            assert (pending.decision_point, pending.options) == ("deploy?", ["yes", "no"])
            assert stream.active_intents[0].spec == {"session_id": "ses_other", "agent": "reviewer"}
            fill(stream, 1500)
    with DurableStream(path, **OPTIONS) as stream:
        assert stream.approve_checkpoint(kept.id, "user", "yes")
        assert stream.complete_intent(intent.id, "ok")
        fill(stream, 1500)
    with DurableStream(path, **OPTIONS) as stream:
        assert snapshot(stream) == ([], [], 0)


def test_the_disk_stays_within_budget(tmp_path: Path) -> None:
    path = tmp_path / "stream.jsonl"
    with DurableStream(path, **OPTIONS) as stream:
        for _ in range(4):
            fill(stream, 1000)
            stats = stream.stats()
            assert stats["disk_bytes"] <= stats["max_disk_bytes"] + SEGMENT
    files = [*path.parent.glob("stream_*.jsonl"), path]
    assert sum(f.stat().st_size for f in files) <= 3 * SEGMENT


def test_unbounded_keeps_every_segment(tmp_path: Path) -> None:
    path = tmp_path / "stream.jsonl"
    with DurableStream(path, **{**OPTIONS, "max_disk_bytes": None}) as stream:
        fill(stream, 2000)
        assert stream.stats()["segments_dropped"] == 0
    assert [e["seq"] for e in read_events(path)] == list(range(1, 2001))


def test_bad_settings_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_segment_bytes"):
        DurableStream(tmp_path / "s.jsonl", max_segment_bytes=1000)
    with pytest.raises(ValueError, match="max_disk_bytes"):
        DurableStream(tmp_path / "s.jsonl", max_segment_bytes=SEGMENT, max_disk_bytes=SEGMENT)
