"""Large events (a JSON body of 4 KiB or more) stay in the store's log: the cache holds a
reference and reads them back from the file. They must read back exactly as the cache would
hold them, in every kind of read, with a compressed cache as with a plain one (the Rust tests
check that they count at full size against a ring's byte limit); and once retention removes
their segment, the cache copies them in so that the segment's disk space is freed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from opencode_addons import JsonlStore

HERE = Path(__file__).resolve().parent


def event(n: int, size: int) -> dict[str, Any]:
    text = "".join(f'{i}: line "{n}"\twith\\escapes\n' for i in range(size // 28 + 1))[:size]
    return {
        "type": "execution.tool_finish" if size >= 4096 else "execution.text_delta",
        "stream_id": f"ses_{n % 3}",
        "actor": "agent",
        "correlation_id": f"run_{n % 4}",
        "id": f"evt_{n:08d}",
        "timestamp": 1_700_000_000_000 + n,
        "payload": {"n": n, "output": text},
    }


def mixed(count: int) -> list[dict[str, Any]]:
    """Small and large events, sizes around the 4 KiB boundary included."""
    sizes = (60, 4_000, 4_100, 40_000, 300, 9_000, 64 * 1024)
    return [event(n, sizes[n % len(sizes)]) for n in range(count)]


def without_seq(stored: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stored.items() if k != "seq"}


PROBES: list[dict[str, Any]] = [
    {},
    {"stream_id": "ses_1", "limit": 7, "newest_first": True},
    {"type": ["execution.tool_finish"], "limit": 50},
    {"correlation_id": "run_2"},
    {"after_seq": 100, "limit": 30},
]


def reads(store: JsonlStore) -> list[Any]:
    out: list[Any] = [list(store), store.history.query(limit=10)]
    for probe in PROBES:
        out.append(store.query(**probe))
        out.append(store.query(**probe, raw=True))
    return out


@pytest.mark.parametrize("compress", [False, True])
def test_large_events_read_back_exactly_in_every_read(tmp_path: Path, compress: bool) -> None:
    events = mixed(700)
    with JsonlStore(
        tmp_path / "events.jsonl",
        max_cache_size=500,
        history_size=600,
        compress_history=compress,
    ) as store:
        for one in events[:200]:
            store.append(one)
        store.extend(events[200:230])  # a batch written whole
        store.extend(events[230:])  # a batch written in chunks (over 2 MiB)
        if compress:
            store.compress_pending()
        held = list(store)
        assert [e["seq"] for e in held] == list(range(201, 701))
        assert [without_seq(e) for e in held] == events[200:]
        raw = store.query(raw=True)
        assert [json.loads(line) for line in raw] == held
        stats = store.stats()
        # The ring keeps the history's 600 events. Each counts at full size: its JSON without
        # `"seq":N` and its comma.
        compact = {"separators": (",", ":"), "ensure_ascii": False}
        exact = sum(len(json.dumps(e, **compact)) for e in events[100:])
        assert stats["nbytes"] < exact < stats["nbytes"] * 1.05
        # Five of every seven are referenced: the blocks hold a small part of the JSON.
        assert stats["stored_bytes"] * 5 < stats["nbytes"]
        before_close = reads(store)
    # The raw lines are the file's lines.
    assert raw == (tmp_path / "events.jsonl").read_bytes().splitlines()[200:]
    with JsonlStore(tmp_path / "events.jsonl", max_cache_size=500, history_size=600) as reopened:
        # Reopened, the cache holds copies read from the file: the same answers.
        assert reads(reopened) == before_close


def test_plain_and_compressed_caches_of_large_events_answer_alike(tmp_path: Path) -> None:
    stores = [
        JsonlStore(tmp_path / f"{c}.jsonl", max_cache_size=300, compress_history=c)
        for c in (False, True)
    ]
    events = mixed(900)
    for store in stores:
        for start in range(0, len(events), 90):
            store.extend(events[start : start + 90])
    stores[1].compress_pending()
    assert reads(stores[0]) == reads(stores[1])
    assert stores[0].stats()["nbytes"] == stores[1].stats()["nbytes"]
    for store in stores:
        store.close()


def deleted_open_files(directory: Path) -> list[str]:
    fds = Path("/proc/self/fd")
    targets = [os.readlink(fd) for fd in fds.iterdir() if fd.is_symlink()]
    return [t for t in targets if t.startswith(str(directory)) and t.endswith(" (deleted)")]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/self/fd (Linux)")
def test_segments_removed_by_retention_are_not_kept_open_by_the_cache(tmp_path: Path) -> None:
    events = [event(n, 20_000) for n in range(120)]
    with JsonlStore(
        tmp_path / "events.jsonl",
        max_cache_size=1_000,
        max_event_bytes=64 * 1024,
        max_segment_bytes=256 * 1024,
        max_disk_bytes=1024 * 1024,
    ) as store:
        for one in events:
            store.append(one)
        assert store.stats()["segments_dropped"] > 0
        # Each append looks at what retention removed since the one before; retention runs on
        # the keeper's thread, so its last deletions may come after the last append.
        small: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while True:
            small.append(event(len(events) + len(small), 50))
            store.append(small[-1])
            if not deleted_open_files(tmp_path):
                break
            assert time.monotonic() < deadline, deleted_open_files(tmp_path)
            time.sleep(0.01)
        # Every event is still in the cache, the removed segments' ones copied in.
        assert [without_seq(e) for e in store] == [*events, *small]
        assert store.stats()["memory_bytes"] > 20_000 * store.stats()["events_dropped"]


def test_a_cache_of_large_events_takes_little_memory(tmp_path: Path) -> None:
    # In a fresh process: 2,000 events of 40 KB (80 MB of JSON) held in the cache.
    script = (
        "import json, sys, psutil\n"
        "from opencode_addons import JsonlStore\n"
        "text = ('x\\\\ty \"z\"\\n' * 5_000)[:40_000]\n"
        "events = [{'type': 't', 'payload': {'n': n, 'output': text}} for n in range(2_000)]\n"
        "process = psutil.Process()\n"
        "with JsonlStore(sys.argv[1], max_cache_size=5_000) as store:\n"
        "    store.append(events[0])\n"
        "    before = process.memory_info().rss\n"
        "    for e in events[1:]:\n"
        "        store.append(e)\n"
        "    after = process.memory_info().rss\n"
        "    nbytes = store.stats()['nbytes']\n"
        "print(json.dumps({'growth': after - before, 'nbytes': nbytes}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "events.jsonl")],
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE,
    )
    result = json.loads(out.stdout)
    assert result["nbytes"] > 80_000_000
    # The page cache holds the lines, not the process: well under a tenth of the JSON.
    assert result["growth"] < result["nbytes"] / 10, result


def test_a_large_event_cut_from_its_file_is_reported_as_damage(tmp_path: Path) -> None:
    # Small segments, so the large events end up in sealed segments (not mapped), one of which
    # is then cut short from outside the store.
    events = [event(n, 40_000) for n in range(12)]
    with JsonlStore(
        tmp_path / "events.jsonl",
        max_event_bytes=128 * 1024,
        max_segment_bytes=256 * 1024,
    ) as store:
        for one in events:
            store.append(one)
        sealed = sorted(tmp_path.glob("events_*.jsonl"))
        assert sealed, list(tmp_path.iterdir())
        os.truncate(sealed[0], 100)
        with pytest.raises(ValueError, match=r"stored event is damaged: its \d+ bytes at offset"):
            store.query(limit=len(events))
        # The events in the other segments still read back.
        assert [without_seq(e) for e in store.query(after_seq=10)] == events[10:]
