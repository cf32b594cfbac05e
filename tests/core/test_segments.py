"""Segments: sealing at the boundary, retention, compressed and reference-rotated files read by
every reader, bad settings, and paths that are not regular files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from opencode_addons import JsonlStore, file_stats, read_events
from opencode_addons.cli import main as cli_main

SEGMENT = 4096
SMALL = {"max_event_bytes": 1000, "max_segment_bytes": SEGMENT}


def event(n: int) -> dict[str, Any]:
    return {
        "id": f"e{n}",
        "type": ("a", "b", "c")[n % 3],
        "stream_id": f"s{n % 4}",
        "timestamp": 1_700_000_000_000 + n,
        "payload": {"n": n, "text": "x" * (40 + n % 50)},
    }


def sealed(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.stem}_*.jsonl*"))


def event_lines(data: bytes) -> list[dict[str, Any]]:
    """The events of a segment's text (its snapshot lines are not events)."""
    lines = [json.loads(line) for line in data.splitlines() if line]
    return [line for line in lines if "type" in line]


def test_rotation_seals_at_the_boundary_without_splitting_a_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlStore(path, max_disk_bytes=None, **SMALL) as store:
        stored = [store.append(event(n)) for n in range(100)]
        stored += store.extend([event(n) for n in range(100, 120)])
        stored += [store.append(event(n)) for n in range(120, 300)]
        stats = store.stats()
    files = sealed(path)
    assert len(files) >= 5
    assert stats["segments"] == len(files) + 1
    assert stats["segments_sealed"] == len(files)
    seqs = []
    for file in [*files, path]:
        data = file.read_bytes()
        assert len(data) <= SEGMENT and data.endswith(b"\n")
        events = event_lines(data)
        if file != path:
            # The name holds the seq of the segment's first event.
            assert int(file.name.split("_")[1].split(".")[0]) == events[0]["seq"]
        seqs += [e["seq"] for e in events]
    assert seqs == list(range(1, 301))
    assert [e["seq"] for e in stored] == seqs


def test_a_batch_is_never_split_across_segments(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlStore(path, max_disk_bytes=None, **SMALL) as store:
        store.append(event(0))
        batch = store.extend([event(n) for n in range(1, 60)])
    # The batch is larger than a segment: it went whole into a new one.
    (first,) = sealed(path)
    assert [e["seq"] for e in event_lines(first.read_bytes())] == [1]
    assert [e["seq"] for e in event_lines(path.read_bytes())] == [e["seq"] for e in batch]


def test_a_batch_written_in_chunks_is_never_split_across_segments(tmp_path: Path) -> None:
    # Batches of over 2 MiB are written a chunk at a time; the segment is sealed before the
    # first chunk if the batch, estimated from its first 2 MiB, would overfill it.
    path = tmp_path / "events.jsonl"
    segment = 5 << 20
    text = 'line\n\t"x"\n' * 4_000  # about 44 KB of JSON an event
    batch = [{"type": "t", "payload": {"n": n, "text": text}} for n in range(70)]  # 3.1 MB
    with JsonlStore(path, max_disk_bytes=None, max_segment_bytes=segment) as store:
        store.append(event(0))
        first = store.extend(batch, return_events=False)
        second = store.extend(batch, return_events=False)
        store.append(event(1))
    files = [*sealed(path), path]
    assert len(files) == 2
    seqs = [[e["seq"] for e in event_lines(f.read_bytes())] for f in files]
    assert seqs == [[1, *first], [*second, second[-1] + 1]]
    assert all(f.stat().st_size <= segment for f in files)


def test_retention_keeps_the_files_within_budget_and_counts_what_it_dropped(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    budget = 4 * SEGMENT
    with JsonlStore(path, max_disk_bytes=budget, max_cache_size=20, **SMALL) as store:
        for n in range(600):
            store.append(event(n))
    # After close the keeper has finished: the files fit the budget.
    on_disk = sum(f.stat().st_size for f in [*sealed(path), path])
    assert on_disk <= budget
    with JsonlStore(path, max_disk_bytes=budget, max_cache_size=20, **SMALL) as store:
        assert [e["seq"] for e in store] == list(range(581, 601))
        assert store.recovery["last_seq"] == 600
        stats = store.stats()
        assert stats["disk_bytes"] == on_disk
    remaining = read_events(path)
    assert [e["seq"] for e in remaining] == list(range(remaining[0]["seq"], 601))
    assert remaining[0]["seq"] > 300


def test_collected_openings_survive_retention_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    options: dict[str, Any] = {
        "max_disk_bytes": 3 * SEGMENT,
        "collect_pairs": [("cp.requested", ["id"], ["cp.approved"], ["checkpoint_id"])],
        **SMALL,
    }
    with JsonlStore(path, **options) as store:
        kept = store.append({"type": "cp.requested", "payload": {"id": "a"}})
        store.append({"type": "cp.requested", "payload": {"id": "b"}})
        store.append({"type": "cp.approved", "payload": {"checkpoint_id": "b"}})
        store.append({"type": "cp.requested", "payload": {"id": "dropped"}})
        assert store.forget_open("cp.requested", "dropped")
        for n in range(500):
            store.append(event(n))
        stats = store.stats()
    assert stats["segments_dropped"] > 0 and stats["events_dropped"] > 0
    assert stats["carried_forward"] >= stats["segments_sealed"]
    assert read_events(path, type="cp.requested") == []  # their segments are gone
    for _ in range(2):
        with JsonlStore(path, **options) as store:
            assert store.collected() == [kept]
            for n in range(300):
                store.append(event(n))


def test_opening_reads_only_the_newest_segments(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlStore(path, max_disk_bytes=None, max_cache_size=10, **SMALL) as store:
        for n in range(3000):
            store.append(event(n))
    with JsonlStore(path, max_disk_bytes=None, max_cache_size=10, **SMALL) as store:
        assert [e["seq"] for e in store] == list(range(2991, 3001))
        assert store.recovery["events"] < 200
        assert store.append(event(0))["seq"] == 3001


@pytest.mark.parametrize("compress", [False, True])
def test_every_reader_covers_every_segment(tmp_path: Path, compress: bool) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlStore(path, max_disk_bytes=None, compress_sealed=compress, **SMALL) as store:
        for n in range(400):
            store.append(event(n))
        store.sync()
    files = sealed(path)
    assert files and all(f.name.endswith(".zst") == compress for f in files)
    everything = read_events(path)
    assert [e["seq"] for e in everything] == list(range(1, 401))
    assert everything[7] == {**event(7), "seq": 8}
    assert [e["seq"] for e in read_events(path, limit=5, newest_first=True)] == [
        400,
        399,
        398,
        397,
        396,
    ]
    assert [e["seq"] for e in read_events(path, after_seq=395)] == [396, 397, 398, 399, 400]
    assert [e["seq"] for e in read_events(path, stream_id="s1", limit=3)] == [2, 6, 10]
    stats = file_stats(path)
    assert stats["events"] == 400 and stats["last_seq"] == 400
    assert [s["compressed"] for s in stats["segments"]] == [compress] * len(files) + [False]
    assert sum(s["events"] for s in stats["segments"]) == 400
    assert stats["file_bytes"] == sum(f.stat().st_size for f in [*files, path])
    # One sealed segment read on its own, by name.
    alone = read_events(files[1])
    assert alone and alone[0]["seq"] == stats["segments"][1]["first_seq"]
    with JsonlStore(path, max_disk_bytes=None, max_cache_size=1000, **SMALL) as store:
        assert [e["seq"] for e in store] == list(range(1, 401))


def test_after_seq_skips_older_segments_by_their_names(tmp_path: Path) -> None:
    # A line planted in the oldest segment, with a seq above everything, shows whether that
    # segment is read: a full read finds it, a read after a seq past the segment's must not.
    path = tmp_path / "events.jsonl"
    with JsonlStore(path, max_disk_bytes=None, **SMALL) as store:
        for n in range(400):
            store.append(event(n))
    oldest = sealed(path)[0]
    with open(oldest, "ab") as handle:
        handle.write(b'{"type":"planted","seq":1000000,"timestamp":1}\n')
    assert [e["seq"] for e in read_events(path, type="planted")] == [1_000_000]
    after = read_events(path, after_seq=395)
    assert [e["seq"] for e in after] == [396, 397, 398, 399, 400]


def run_cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_reads_every_segment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlStore(path, max_disk_bytes=None, compress_sealed=True, **SMALL) as store:
        for n in range(200):
            store.append(event(n))
    code, out, _ = run_cli("stats", str(path), capsys=capsys)
    assert code == 0
    assert "files" in out and "total" in out and "events_00000000000000000001.jsonl.zst" in out
    code, out, _ = run_cli("query", str(path), "--type", "a", capsys=capsys)
    assert code == 0
    assert [json.loads(line)["seq"] for line in out.splitlines()] == list(range(1, 201, 3))
    code, out, _ = run_cli("tail", str(path), "-n", "3", capsys=capsys)
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [198, 199, 200]


@pytest.mark.skipif(shutil.which("zstdcat") is None, reason="zstdcat is not installed")
def test_compressed_segments_are_plain_zstd(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlStore(path, max_disk_bytes=None, compress_sealed=True, **SMALL) as store:
        for n in range(200):
            store.append(event(n))
    text = b"".join(
        subprocess.run(["zstdcat", str(f)], check=True, capture_output=True).stdout
        for f in sealed(path)
    )
    seqs = [e["seq"] for e in event_lines(text + path.read_bytes())]
    assert seqs == list(range(1, 201))


def test_reference_rotated_files_load_first(tmp_path: Path) -> None:
    path = tmp_path / "durable_stream.jsonl"
    (tmp_path / "durable_stream_2023-11-13.jsonl").write_text(
        '{"type":"day","payload":{"n":0}}\n{"type":"day","payload":{"n":1}}\n'
    )
    (tmp_path / "durable_stream_1700000000000.jsonl").write_text('{"type":"size","payload":{}}\n')
    (tmp_path / "durable_stream_backup.jsonl").write_text('{"type":"not-the-store"}\n')
    path.write_text('{"type":"current","payload":{}}\n')
    expected = ["day", "day", "size", "current"]
    assert [e["type"] for e in read_events(path)] == expected
    assert file_stats(path)["events"] == 4
    with JsonlStore(path) as store:
        assert [e["type"] for e in store] == expected
        assert [e["seq"] for e in store] == [1, 2, 3, 4]
        assert store.append({"type": "new"})["seq"] == 5


@pytest.mark.parametrize("compress", [False, True])
def test_max_age_goes_by_the_newest_event_not_the_file_time(tmp_path: Path, compress: bool) -> None:
    path = tmp_path / "events.jsonl"
    hour_ms = 3_600_000
    now_ms = time.time() * 1000
    options: dict[str, Any] = {"max_disk_bytes": None, "compress_sealed": compress, **SMALL}
    with JsonlStore(path, **options) as store:
        old = [store.append({**event(n), "timestamp": now_ms - 2 * hour_ms}) for n in range(150)]
        new = [store.append({**event(n), "timestamp": now_ms}) for n in range(150, 300)]
    files = sealed(path)
    assert len(files) >= 6

    def touch(hours_ago: float) -> None:
        when = time.time() - hours_ago * 3600
        for file in sealed(path):
            os.utime(file, (when, when))

    # Files three hours old, events at most two: a max_age of 2.5 hours drops nothing.
    touch(3)
    JsonlStore(path, **options, max_age=2.5 * 3600).close()
    assert sealed(path) == files
    # Files just written, old events two hours old: a max_age of one hour drops their segments,
    # up to the first one holding a current event.
    touch(0)
    JsonlStore(path, **options, max_age=3600).close()
    assert len(sealed(path)) <= len(files) - 3
    left = read_events(path)
    assert left[0]["seq"] > old[len(old) // 2]["seq"]
    assert left[0]["seq"] <= new[0]["seq"]
    assert [e["seq"] for e in left] == list(range(left[0]["seq"], 301))


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"max_segment_bytes": 100}, "max_segment_bytes"),
        ({"max_segment_bytes": (1 << 20) + 31}, "max_segment_bytes"),
        ({"max_segment_bytes": 0}, "max_segment_bytes"),
        ({"max_disk_bytes": (64 << 20) * 2 - 1}, "max_disk_bytes"),
        ({"max_disk_bytes": -1}, "max_disk_bytes"),
        ({"max_age": -1.0}, "max_age"),
        ({"max_age": 0}, "max_age"),
        ({"max_age": float("nan")}, "max_age"),
    ],
)
def test_bad_settings_are_a_value_error_naming_the_setting(
    tmp_path: Path, settings: dict[str, Any], name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        JsonlStore(tmp_path / "events.jsonl", **settings)
    assert not (tmp_path / "events.jsonl").exists()


def within(seconds: float, call: Callable[[], Any]) -> Any:
    """Runs ``call`` in a thread; fails if it has not returned (or raised) in time."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the call blocked"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def test_a_fifo_is_a_clear_error_never_a_hang(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "events.jsonl"
    os.mkfifo(fifo)
    for call in (
        lambda: JsonlStore(fifo),
        lambda: file_stats(fifo),
        lambda: read_events(fifo),
    ):
        with pytest.raises(ValueError, match="FIFO"):
            within(10, call)
    for command in ("stats", "query", "tail"):
        code = within(10, lambda command=command: cli_main([command, str(fifo)]))
        assert code == 2
        assert "FIFO" in capsys.readouterr().err


def test_a_fifo_named_like_a_sealed_segment_is_a_clear_error_never_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Skipping it would hide the events its name promises; reading it would block.
    path = tmp_path / "events.jsonl"
    with JsonlStore(path, durability="none") as store:
        store.append({"type": "note", "stream_id": "s1"})
    os.mkfifo(tmp_path / "events_00000000000000000001.jsonl")
    for call in (
        lambda: JsonlStore(path),
        lambda: file_stats(path),
        lambda: read_events(path),
    ):
        with pytest.raises(ValueError, match=r"named like a segment .* is a FIFO"):
            within(10, call)
    code = within(10, lambda: cli_main(["stats", str(path)]))
    assert code == 2 and "FIFO" in capsys.readouterr().err


def test_a_character_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="character device"):
        within(10, lambda: JsonlStore("/dev/null"))
    with pytest.raises(ValueError, match="character device"):
        within(10, lambda: read_events("/dev/zero"))
