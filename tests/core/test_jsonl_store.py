"""JsonlStore end to end: file format, reopen, locking, durability modes, recovery, helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opencode_addons import (
    EventView,
    JsonlStore,
    StoreClosedError,
    StoreError,
    StoreLockedError,
    StoreWriteError,
    file_stats,
    read_events,
)

DURABILITIES = ["none", "flush", "fsync", "group"]


def event(i: int, **extra) -> dict:
    return {
        "type": ("created", "updated", "deleted")[i % 3],
        "stream_id": f"s{i % 4}",
        "correlation_id": f"c{i % 2}",
        "actor": "user" if i % 2 else "system",
        "timestamp": 1_700_000_000_000 + i,
        "id": f"fixed-{i}",
        "payload": {"i": i, "text": "ü" * (i % 5), "list": [i, None, True]},
        **extra,
    }


def expected_line(stored: dict) -> bytes:
    body = {k: v for k, v in stored.items() if k != "seq"}
    body["seq"] = stored["seq"]
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def file_lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data.split(b"\n")[:-1]


def without_seq(e: dict) -> dict:
    return {k: v for k, v in e.items() if k != "seq"}


# ---------------------------------------------------------------- basics and format


def test_creates_parent_dirs_and_file(tmp_path):
    path = tmp_path / "a" / "b" / "c" / "events.jsonl"
    with JsonlStore(path) as store:
        assert path.exists()
        assert store.path == path
        assert store.durability == "flush"
        assert len(store) == 0
        assert store.recovery == {
            "events": 0,
            "corrupt_lines": 0,
            "duplicate_lines": 0,
            "torn_tail_bytes": 0,
            "padding_bytes": 0,
            "unterminated_last_line": False,
            "last_seq": 0,
            "snapshot_lines": 0,
        }
    assert path.read_bytes() == b""


def test_append_returns_stored_event_and_file_format_is_exact(tmp_path):
    path = tmp_path / "e.jsonl"
    with JsonlStore(path) as store:
        stored = [store.append(event(i)) for i in range(5)]
        generated = store.append({"type": "gen", "payload": "x"})
    for i, s in enumerate(stored):
        assert s == {**event(i), "seq": i + 1}
    assert generated["seq"] == 6
    assert generated["type"] == "gen"
    gid = generated["id"]
    assert len(gid) == 26 and gid[9] == "_"
    assert int(gid[:9], 36) == generated["timestamp"]
    int(gid[10:], 16)
    assert gid[10:] == gid[10:].lower()
    assert path.read_bytes() == b"".join(expected_line(s) for s in [*stored, generated])
    # Key order: the caller's keys in order, then generated id/timestamp, seq last.
    assert list(json.loads(file_lines(path)[-1])) == ["type", "payload", "id", "timestamp", "seq"]


def test_caller_seq_is_ignored_and_other_keys_preserved(tmp_path):
    path = tmp_path / "e.jsonl"
    with JsonlStore(path) as store:
        out = store.append(
            {"seq": 77, "type": "t", "causation_id": "cz", "metadata": {"m": 1}, "zz": [1]}
        )
        assert out["seq"] == 1
    line = json.loads(file_lines(path)[0])
    assert line["seq"] == 1
    assert list(line)[:4] == ["type", "causation_id", "metadata", "zz"]
    assert line["metadata"] == {"m": 1}


def test_append_does_not_mutate_callers_dict(tmp_path):
    ev = {"type": "t"}
    with JsonlStore(tmp_path / "e.jsonl") as store:
        out = store.append(ev)
    assert ev == {"type": "t"}
    assert out is not ev


def test_extend_returns_stored_events_contiguous(tmp_path):
    path = tmp_path / "e.jsonl"
    with JsonlStore(path) as store:
        store.append(event(0))
        out = store.extend([event(i) for i in range(1, 11)])
        assert [e["seq"] for e in out] == list(range(2, 12))
        assert store.extend([]) == []
        assert store.extend(event(i) for i in range(11, 13))[-1]["seq"] == 13
        assert [without_seq(e) for e in store] == [event(i) for i in range(13)]
    assert len(file_lines(path)) == 13


def tool_outputs(count: int, size: int = 40_000) -> list[dict]:
    """Tool outputs of 40 KB (escape-dense): over 2 MiB of them are written in chunks."""
    text = 'def f(x):\n\treturn "x" * 2\n' * (size // 28)
    return [
        {
            "type": "execution.tool_finish",
            "stream_id": f"s{n % 3}",
            "actor": "agent",
            "correlation_id": f"run-{n % 2}",
            "timestamp": 1_700_000_000_000 + n,
            "id": f"tool-{n}",
            "payload": {"n": n, "out": text},
        }
        for n in range(count)
    ]


@pytest.mark.parametrize("durability", DURABILITIES)
def test_a_large_batch_is_stored_whole_and_in_order(tmp_path, durability):
    path = tmp_path / "e.jsonl"
    batch = tool_outputs(100)  # about 4 MB
    with JsonlStore(path, durability=durability) as store:
        store.append(event(0))
        stored = store.extend(batch)
        assert [e["seq"] for e in stored] == list(range(2, 102))
        assert [without_seq(e) for e in stored] == batch
        assert list(store)[1:] == stored
        assert [e["seq"] for e in store.query(stream_id="s1")] == list(range(3, 102, 3))
        assert store.extend(batch[:3], return_events=False) == range(102, 105)
    lines = file_lines(path)
    assert [json.loads(line) for line in lines[1:101]] == stored
    with JsonlStore(path) as store:
        assert list(store)[1:101] == stored


@pytest.mark.parametrize("position", [0, 30, 70, 99])
def test_a_bad_event_anywhere_in_a_large_batch_stores_none_of_it(tmp_path, position):
    # The first 2 MiB are encoded before the store is locked, the rest a chunk at a time after
    # the first is written: a failure in any of them leaves neither file nor cache changed.
    path = tmp_path / "e.jsonl"
    batch = tool_outputs(100)
    batch[position] = {"type": "bad", "payload": {"ok": [1, 2, {3}]}}
    with JsonlStore(path, max_event_bytes=100_000) as store:
        store.append(event(0))
        with pytest.raises(TypeError, match=f"event {position}"):
            store.extend(batch)
        batch[position] = {"type": "big", "payload": "x" * 200_000}
        with pytest.raises(ValueError, match=f"event {position}.*max_event_bytes"):
            store.extend(batch)
        assert [e["seq"] for e in store] == [1]
        assert store.append(event(1))["seq"] == 2
    assert [json.loads(line)["seq"] for line in file_lines(path)] == [1, 2]
    with JsonlStore(path) as store:
        assert [e["seq"] for e in store] == [1, 2]


def test_a_refused_batch_of_small_events_leaves_the_store_writing_where_it_was(tmp_path):
    # 8,000 events of about 400 B: the first 2 MiB go with one write, the rest in chunks through
    # the mapped window, which moves on several times before the last event fails. The lines
    # are blanked and the appends after the refused batch land where it began.
    path = tmp_path / "e.jsonl"
    batch = [event(i, pad="p" * 300) for i in range(1, 8_001)]
    batch[-1] = {"type": "bad", "payload": {"when": object()}}
    with JsonlStore(path) as store:
        store.append(event(0))
        with pytest.raises(TypeError, match="event 7999"):
            store.extend(batch)
        after = [store.append(event(i)) for i in range(1, 2_001)]
        assert [e["seq"] for e in after] == list(range(2, 2_002))
        assert [without_seq(e) for e in store] == [event(i) for i in range(2_001)]
    assert [json.loads(line)["seq"] for line in file_lines(path)] == list(range(1, 2_002))
    with JsonlStore(path) as store:
        assert [e["seq"] for e in store] == list(range(1, 2_002))


def test_return_events_false_returns_seqs_and_stores_the_same(tmp_path):
    # The same appends with and without the returned copies leave byte-identical files
    # (the events carry their own id and timestamp) and the same cache.
    files = {}
    for return_events in (True, False):
        path = tmp_path / f"{return_events}.jsonl"
        with JsonlStore(path) as store:
            first = store.append(event(0), return_events=return_events)
            batch = store.extend([event(i) for i in range(1, 6)], return_events=return_events)
            empty = store.extend([], return_events=return_events)
            last = store.append(event(6), return_events=return_events)
            cached = [dict(e) for e in store]
        if return_events:
            assert first["seq"] == 1 and [e["seq"] for e in batch] == [2, 3, 4, 5, 6]
            assert empty == [] and last["seq"] == 7
        else:
            assert first == 1 and type(first) is int
            assert batch == range(2, 7)
            # An empty batch takes no seq: an empty range where the next batch would start.
            assert empty == range(7, 7) and empty.start == 7
            assert last == 7
        files[return_events] = (path.read_bytes(), cached)
    assert files[True] == files[False]
    assert [without_seq(e) for e in files[False][1]] == [event(i) for i in range(7)]


def test_return_events_false_still_fills_in_and_refuses(tmp_path):
    path = tmp_path / "e.jsonl"
    with JsonlStore(path, default_actor="host") as store:
        seq = store.append({"type": "gen"}, return_events=False)
        stored = store[-1]
        assert stored["seq"] == seq == 1 and stored["actor"] == "host"
        assert len(stored["id"]) == 26 and isinstance(stored["timestamp"], int)
        # A bad event anywhere in a batch still stores none of it.
        with pytest.raises(TypeError, match="event 1: keys must be strings"):
            store.extend(
                [event(1), {"type": "t", "payload": {1: "non-str key"}}], return_events=False
            )
        assert len(store) == 1
        assert store.extend([event(2)], return_events=False) == range(2, 3)
        # By position too (the fast way for append: a keyword costs a dict per call).
        assert store.append(event(3), False) == 3
        assert store.extend([event(4)], False) == range(4, 5)
        with pytest.raises(TypeError):
            store.extend([event(5)], return_events="no")
        with pytest.raises(TypeError):
            store.append(event(5), 0)
        assert len(store) == 4
    assert len(file_lines(path)) == 4
    with pytest.raises(StoreClosedError):
        store.extend([], return_events=False)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap behaviour")
def test_large_batches_give_their_memory_back(tmp_path):
    # A batch of more than a MiB is written in chunks, through the encoding buffer kept between
    # calls. Before that, a batch larger than that buffer (4 MiB) got a buffer of its own, and
    # freed, glibc kept about 19 MiB of it in the heap (its thresholds rise after a large free);
    # the store trims the heap after such a buffer (now: an event of more than 4 MiB). Three
    # rounds of a 40 MB and a 10 MB batch, in a fresh process, into a store that keeps 5 events:
    # 3.1 MiB of growth here, 1.0-1.3 before the long strings were escaped on a helper thread
    # (the buffers they are escaped into are kept between batches, at most 4 MiB of them). The
    # process kept 8.3 MiB more while the helper allocated those buffers (in its own glibc
    # arena), and 6.0 MiB while each batch freed the encoding buffer kept between calls.
    child = Path(__file__).parents[1] / "helpers" / "large_batches_rss.py"
    done = subprocess.run(
        [sys.executable, str(child), str(tmp_path / "e.jsonl"), "3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rss = json.loads(done.stdout)
    grown = (rss["after"] - rss["before"]) / 2**20
    assert grown < 5, f"RSS grew {grown:.1f} MiB over three rounds of large batches"


def test_extend_leaves_the_garbage_collector_as_it_found_it(tmp_path):
    # extend builds its returned events with the collector paused: it must come back on, and
    # stay off for a caller who turned it off, whatever the batch.
    import gc

    with JsonlStore(tmp_path / "e.jsonl") as store:
        assert gc.isenabled()
        assert len(store.extend([event(i) for i in range(2_000)])) == 2_000
        assert gc.isenabled()
        with pytest.raises(TypeError):
            store.extend([event(0), {"type": "t", "payload": {1: "non-str key"}}])
        assert gc.isenabled()
        gc.disable()
        try:
            store.extend([event(i) for i in range(10)])
            assert not gc.isenabled()
        finally:
            gc.enable()


def test_cache_len_index_iter_query(tmp_path):
    with JsonlStore(tmp_path / "e.jsonl", max_cache_size=10) as store:
        store.extend([event(i) for i in range(25)])
        assert len(store) == 10
        assert [e["seq"] for e in store] == list(range(16, 26))
        assert store[0]["seq"] == 16
        assert store[-1]["seq"] == 25
        assert [e["seq"] for e in store[2:5]] == [18, 19, 20]
        with pytest.raises(IndexError):
            store[10]
        with pytest.raises(IndexError):
            store[-11]
        assert store.to_list() == list(store)
        got = store.query(stream_id="s1", newest_first=True, limit=2)
        assert [e["seq"] for e in got] == [22, 18]
        assert store.query(type=["created", "deleted"]) == [
            e for e in store if e["type"] in ("created", "deleted")
        ]
        assert store.query(stream_id="unknown") == []


def test_seq_increases_across_reopen_and_cache_keeps_newest(tmp_path):
    path = tmp_path / "e.jsonl"
    with JsonlStore(path) as store:
        store.extend([event(i) for i in range(30)])
    with JsonlStore(path, max_cache_size=7) as store:
        assert store.recovery["events"] == 30
        assert store.recovery["last_seq"] == 30
        assert len(store) == 7
        assert [without_seq(e) for e in store] == [event(i) for i in range(23, 30)]
        assert [e["seq"] for e in store] == list(range(24, 31))
        assert store.append(event(30))["seq"] == 31
        assert store.stats()["next_seq"] == 32
    with JsonlStore(path, max_cache_size=100) as store:
        assert len(store) == 31
        assert store[-1] == {**event(30), "seq": 31}
    lines = [json.loads(x) for x in file_lines(path)]
    assert [x["seq"] for x in lines] == list(range(1, 32))


def test_history_view_sizes_and_sharing(tmp_path):
    path = tmp_path / "e.jsonl"
    with JsonlStore(path, max_cache_size=5, history_size=12) as store:
        assert store.history_size == 12
        assert store.max_cache_size == 5
        history = store.history
        assert isinstance(history, EventView)
        assert history.window == 12
        assert len(history) == 0
        store.extend([event(i) for i in range(8)])
        assert len(store) == 5
        assert len(history) == 8
        store.extend([event(i) for i in range(8, 20)])
        assert len(store) == 5
        assert len(history) == 12
        assert history[-1] == store[-1]
        assert history[-5:] == store.to_list()
        assert [e["seq"] for e in history] == list(range(9, 21))
        assert history.to_list() == list(history)
        assert [e["seq"] for e in history.query(stream_id="s0")] == [9, 13, 17]
        assert store.stats()["history_events"] == 12
        assert store.stats()["events"] == 5
        # The view is live.
        store.append(event(99))
        assert history[-1]["id"] == "fixed-99"
    with JsonlStore(path, max_cache_size=5, history_size=12) as store:
        assert [e["seq"] for e in store.history] == list(range(10, 22))


def test_history_smaller_than_cache(tmp_path):
    with JsonlStore(tmp_path / "e.jsonl", max_cache_size=10, history_size=3) as store:
        store.extend([event(i) for i in range(20)])
        assert len(store) == 10
        assert len(store.history) == 3
        assert store.history[:] == store[-3:]


def test_reference_format_file_loads(tmp_path):
    path = tmp_path / "ref.jsonl"
    ref_events = [
        {
            "timestamp": 1_690_000_000_000 + i,
            "type": f"ref.{i % 2}",
            "id": f"lk2m3n4o5_{i:016x}",
            "stream_id": "main",
            "payload": {"n": i},
            "correlation_id": None,
            "actor": "agent",
        }
        for i in range(6)
    ]
    lines = [json.dumps(e, separators=(",", ":")) for e in ref_events[:3]]
    lines += [json.dumps(e) for e in ref_events[3:]]  # with spaces, also valid JSON
    path.write_text("\n".join(lines) + "\n")
    with JsonlStore(path) as store:
        assert store.recovery["events"] == 6
        assert store.recovery["corrupt_lines"] == 0
        assert store.recovery["last_seq"] == 6
        loaded = list(store)
        assert [e["seq"] for e in loaded] == [1, 2, 3, 4, 5, 6]
        assert [without_seq(e) for e in loaded] == ref_events
        assert [list(without_seq(e)) for e in loaded] == [list(e) for e in ref_events]
        assert [e["seq"] for e in store.query(type="ref.1")] == [2, 4, 6]
        assert [
            e["seq"] for e in store.query(since=1_690_000_000_002, until=1_690_000_000_003)
        ] == [
            3,
            4,
        ]
        new = store.append({"type": "new"})
        assert new["seq"] == 7
    data = path.read_bytes().split(b"\n")
    assert data[:6] == [line.encode() for line in lines]
    assert json.loads(data[6])["seq"] == 7
    with JsonlStore(path) as store:
        assert [e["seq"] for e in store] == list(range(1, 8))


# ---------------------------------------------------------------- locking and closing


def test_second_writer_same_process_refused(tmp_path):
    path = tmp_path / "locked.jsonl"
    first = JsonlStore(path)
    first.append({"type": "a"})
    with pytest.raises(StoreLockedError) as info:
        JsonlStore(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, StoreError)
    assert isinstance(info.value, OSError)
    # The first store is unaffected.
    first.append({"type": "b"})
    assert len(first) == 2
    first.close()
    with JsonlStore(path) as second:
        assert len(second) == 2
        assert second.append({"type": "c"})["seq"] == 3


CHILD_OPEN = textwrap.dedent(
    """
    import sys
    from opencode_addons import JsonlStore, StoreLockedError
    try:
        store = JsonlStore(sys.argv[1])
    except StoreLockedError as exc:
        print("LOCKED", exc)
        sys.exit(3)
    store.append({"type": "child"})
    store.close()
    print("OPENED")
    """
)


def run_child_open(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CHILD_OPEN, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_second_writer_other_process_refused(tmp_path):
    path = tmp_path / "locked.jsonl"
    with JsonlStore(path) as store:
        store.append({"type": "parent"})
        result = run_child_open(path)
        assert result.returncode == 3, result.stderr
        assert result.stdout.startswith("LOCKED")
        assert str(path) in result.stdout
        assert store.append({"type": "parent"})["seq"] == 2
    result = run_child_open(path)
    assert result.returncode == 0, result.stderr
    assert "OPENED" in result.stdout
    types = [json.loads(x)["type"] for x in file_lines(path)]
    assert types == ["parent", "parent", "child"]


def test_closed_store_raises(tmp_path):
    path = tmp_path / "c.jsonl"
    store = JsonlStore(path)
    store.append({"type": "a"})
    history = store.history
    assert not store.closed
    store.close()
    assert store.closed
    store.close()  # idempotent
    assert store.closed
    calls = [
        lambda: store.append({"type": "b"}),
        lambda: store.extend([{"type": "b"}]),
        lambda: store.extend([]),
        lambda: store.query(),
        lambda: len(store),
        lambda: store[0],
        lambda: list(store),
        lambda: store.to_list(),
        lambda: store.sync(),
        lambda: store.stats(),
        lambda: store.collected(),
        lambda: len(history),
        lambda: history[0],
    ]
    for call in calls:
        with pytest.raises(StoreClosedError):
            call()
    assert issubclass(StoreClosedError, StoreError)
    assert issubclass(StoreWriteError, StoreError)
    assert issubclass(StoreError, OSError)
    # Metadata stays readable.
    assert store.path == path
    assert store.recovery["events"] == 0
    assert "closed" in repr(store)
    assert path.read_bytes().count(b"\n") == 1


def test_context_manager_closes_on_exception(tmp_path):
    path = tmp_path / "c.jsonl"
    with pytest.raises(RuntimeError), JsonlStore(path) as store:
        store.append({"type": "a"})
        raise RuntimeError("boom")
    assert store.closed
    with JsonlStore(path) as again:
        assert len(again) == 1


def test_close_trims_preallocated_tail(tmp_path):
    path = tmp_path / "c.jsonl"
    with JsonlStore(path) as store:
        out = store.append({"type": "a", "id": "x", "timestamp": 1})
        size = store.stats()["file_bytes"]
    assert size == len(expected_line(out))
    assert path.stat().st_size == size


@pytest.mark.parametrize(
    "kwargs",
    [
        {"durability": "sometimes"},
        {"max_cache_size": 0},
        {"history_size": 0},
        {"max_event_bytes": 0},
        {"group_interval_ms": 0.0},
        {"group_interval_ms": float("nan")},
    ],
)
def test_bad_options(tmp_path, kwargs):
    with pytest.raises(ValueError):
        JsonlStore(tmp_path / "o.jsonl", **kwargs)


# ---------------------------------------------------------------- durability


@pytest.mark.parametrize("durability", DURABILITIES)
def test_durability_modes_write_identical_content(tmp_path, durability):
    reference = tmp_path / "reference.jsonl"
    with JsonlStore(reference, durability="flush") as store:
        store.extend([event(i) for i in range(50)])
        for i in range(50, 60):
            store.append(event(i))
    path = tmp_path / f"{durability}.jsonl"
    with JsonlStore(path, durability=durability) as store:
        assert store.durability == durability
        store.extend([event(i) for i in range(50)])
        store.sync()
        for i in range(50, 60):
            store.append(event(i))
            if i % 3 == 0:
                store.sync()
        store.sync()
        assert store.stats()["durability"] == durability
    assert path.read_bytes() == reference.read_bytes()
    with JsonlStore(path, durability=durability) as store:
        assert store.recovery["events"] == 60
        assert store.append(event(60))["seq"] == 61
        store.sync()


@pytest.mark.parametrize("durability", DURABILITIES)
def test_data_visible_to_readers_after_sync(tmp_path, durability):
    path = tmp_path / "v.jsonl"
    with JsonlStore(path, durability=durability) as store:
        stored = store.extend([event(i) for i in range(20)])
        store.sync()
        assert read_events(path) == stored
        stats = file_stats(path)
        assert stats["events"] == 20
        assert stats["torn_tail_bytes"] == 0


@pytest.mark.parametrize("durability", ["flush", "fsync", "group"])
def test_appends_visible_to_readers_without_sync(tmp_path, durability):
    path = tmp_path / "v.jsonl"
    with JsonlStore(path, durability=durability) as store:
        stored = [store.append(event(i)) for i in range(10)]
        assert read_events(path) == stored


# ---------------------------------------------------------------- recovery


def write_store(path: Path, n: int) -> list[dict]:
    with JsonlStore(path) as store:
        return store.extend([event(i) for i in range(n)])


def test_torn_last_line_is_cut(tmp_path):
    path = tmp_path / "t.jsonl"
    stored = write_store(path, 5)
    good = path.read_bytes()
    torn = b'{"type":"created","payload":{"i":5,"te'
    path.write_bytes(good + torn)
    with JsonlStore(path) as store:
        rec = store.recovery
        assert rec["torn_tail_bytes"] == len(torn)
        assert rec["events"] == 5
        assert rec["corrupt_lines"] == 0
        assert rec["unterminated_last_line"] is False
        assert list(store) == stored
        new = store.append(event(100))
        assert new["seq"] == 6
    assert path.read_bytes() == good + expected_line(new)


def test_torn_tail_that_is_only_part_of_a_seq(tmp_path):
    path = tmp_path / "t.jsonl"
    write_store(path, 3)
    good = path.read_bytes()
    last = good.split(b"\n")[-2]
    # Cut inside the seq member: this is not a complete line.
    path.write_bytes(good + last[:-3])
    with JsonlStore(path) as store:
        assert store.recovery["events"] == 3
        assert store.recovery["torn_tail_bytes"] == len(last) - 3
        store.append(event(3))
    assert len(file_lines(path)) == 4


def test_valid_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "t.jsonl"
    stored = write_store(path, 4)
    good = path.read_bytes()
    path.write_bytes(good[:-1])
    with JsonlStore(path) as store:
        rec = store.recovery
        assert rec["unterminated_last_line"] is True
        assert rec["torn_tail_bytes"] == 0
        assert rec["events"] == 4
        assert list(store) == stored
        new = store.append(event(9))
        assert new["seq"] == 5
    assert path.read_bytes() == good + expected_line(new)


def test_corrupt_middle_lines_skipped_and_counted(tmp_path):
    path = tmp_path / "t.jsonl"
    stored = write_store(path, 6)
    lines = file_lines(path)
    garbage = [
        b"not json",
        b"\x00\x00\x00\x00",
        b"[1,2,3]",
        b'{"kind":"no type"}',
        b'{"type":"bad \xff utf8"}',
        b'{"type":"unterminated"',
        b'{"type":5}',
        b"",
    ]
    damaged = lines[:2] + garbage[:4] + lines[2:4] + garbage[4:] + lines[4:]
    path.write_bytes(b"\n".join(damaged) + b"\n")
    with JsonlStore(path) as store:
        rec = store.recovery
        assert rec["events"] == 6
        assert rec["corrupt_lines"] == len(garbage)
        assert rec["torn_tail_bytes"] == 0
        assert list(store) == stored
        assert store.append(event(6))["seq"] == 7
    with JsonlStore(path) as store:
        assert [e["seq"] for e in store] == list(range(1, 8))


def test_duplicate_lines_are_skipped(tmp_path):
    path = tmp_path / "d.jsonl"
    stored = write_store(path, 4)
    lines = file_lines(path)
    path.write_bytes(
        b"\n".join([lines[0], lines[1], lines[1], lines[0], lines[2], lines[3]]) + b"\n"
    )
    with JsonlStore(path) as store:
        assert store.recovery["duplicate_lines"] == 2
        assert store.recovery["events"] == 4
        assert list(store) == stored


def test_nul_tail_is_padding(tmp_path):
    path = tmp_path / "p.jsonl"
    stored = write_store(path, 3)
    good = path.read_bytes()
    path.write_bytes(good + b"\x00" * 10_000)
    with JsonlStore(path) as store:
        assert store.recovery["padding_bytes"] == 10_000
        assert store.recovery["torn_tail_bytes"] == 0
        assert list(store) == stored
        new = store.append(event(3))
    assert path.read_bytes() == good + expected_line(new)


def test_collected_returns_matching_types_from_whole_file(tmp_path):
    path = tmp_path / "col.jsonl"
    stored = write_store(path, 40)
    with JsonlStore(path, max_cache_size=3, collect_types=["created", "deleted"]) as store:
        assert len(store) == 3
        got = store.collected()
        assert got == [e for e in stored if e["type"] in ("created", "deleted")]
        assert store.collected() == []  # taken once
        # Events appended after opening are not collected.
        store.append(event(0))
        assert store.collected() == []
    with JsonlStore(path) as store:
        assert store.collected() == []


def test_read_events_and_file_stats_on_damaged_file(tmp_path):
    path = tmp_path / "r.jsonl"
    stored = write_store(path, 10)
    lines = file_lines(path)
    torn = b'{"type":"x","pay'
    path.write_bytes(
        b"\n".join([*lines[:5], b"garbage", lines[4], *lines[5:]]) + b"\n" + b"\x00\x00" + torn
    )
    before = path.read_bytes()
    assert read_events(path) == stored
    assert read_events(path, stream_id="s1") == [e for e in stored if e["stream_id"] == "s1"]
    assert (
        read_events(path, type="updated", newest_first=True, limit=2)
        == [e for e in reversed(stored) if e["type"] == "updated"][:2]
    )
    assert read_events(path, limit=3) == stored[:3]
    assert read_events(path, after_seq=8) == stored[8:]
    stats = file_stats(path)
    assert stats["events"] == 10
    assert stats["corrupt_lines"] == 1
    assert stats["duplicate_lines"] == 1
    assert stats["torn_tail_bytes"] == len(torn)
    assert stats["padding_bytes"] == 2
    assert stats["last_seq"] == 10
    assert stats["file_bytes"] == len(before)
    assert stats["streams"] == 4
    assert stats["types"] == {"created": 4, "updated": 3, "deleted": 3}
    assert stats["first_timestamp"] == stored[0]["timestamp"]
    assert stats["last_timestamp"] == stored[-1]["timestamp"]
    assert stats["unterminated_last_line"] is False
    assert Path(stats["path"]) == path
    # Neither function changes the file.
    assert path.read_bytes() == before


def test_read_events_while_store_is_open_and_missing_file(tmp_path):
    path = tmp_path / "r.jsonl"
    with JsonlStore(path) as store:
        stored = store.extend([event(i) for i in range(5)])
        # Readers take no lock and see the padding-free events.
        assert read_events(path) == stored
        assert file_stats(path)["events"] == 5
    with pytest.raises(FileNotFoundError):
        read_events(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError):
        file_stats(tmp_path / "missing.jsonl")


def test_stats(tmp_path):
    path = tmp_path / "s.jsonl"
    with JsonlStore(path, max_cache_size=4, durability="none") as store:
        stored = store.extend([event(i) for i in range(6)])
        stats = store.stats()
        assert stats["events"] == 4
        assert stats["next_seq"] == 7
        assert stats["durability"] == "none"
        assert stats["max_cache_size"] == 4
        assert stats["file_bytes"] == sum(len(expected_line(s)) for s in stored)
    assert os.path.getsize(path) == stats["file_bytes"]


def test_raw_queries_return_the_lines_the_file_holds(tmp_path):
    from opencode_addons import EventRing, read_events

    path = tmp_path / "raw.jsonl"
    events = [
        {
            "type": f"t{i % 3}",
            "stream_id": f"s{i % 2}",
            "actor": "agent",
            "correlation_id": "run",
            "payload": {"text": 'é\n"quoted"', "n": i, "nested": {"type": "inner", "id": i}},
            "metadata": {"k": [1, 2.5, None, True]},
        }
        for i in range(30)
    ]
    with JsonlStore(path, max_cache_size=100) as store:
        store.extend(events)
        raw = store.query(raw=True)
        assert [json.loads(line) for line in raw] == store.query()
        assert store.query(stream_id="s1", type="t2", raw=True, newest_first=True) == [
            line for line in reversed(raw) if b'"stream_id":"s1"' in line and b'"type":"t2"' in line
        ]
        assert store.history.query(raw=True, limit=3) == raw[:3]
    file_lines = path.read_bytes().splitlines()
    assert raw == file_lines
    assert read_events(path, raw=True) == file_lines
    with JsonlStore(path, max_cache_size=100) as reopened:
        assert reopened.query(raw=True) == file_lines
    ring = EventRing(100)
    ring.extend(events)
    assert [json.loads(line) for line in ring.query(raw=True)] == ring.to_list()
    with pytest.raises(TypeError, match="raw must be a bool"):
        ring.query(raw=1)
