"""Regression tests for bugs found in a review of the Rust core; each docstring says what went
wrong before the fix."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from opencode_addons._core import JsonlStore, read_events


def _run(code: str, *, timeout: float = 20, env: dict | None = None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def test_slice_index_runs_python_under_the_ring_mutex_and_deadlocks():
    """rust/python/view.rs get_item: `slice.indices(...)` was called inside `with_ring`, i.e.
    while the ring's std Mutex is held. PySlice_GetIndicesEx calls the slice bounds'
    `__index__`, which is arbitrary Python code; if it touches the same ring (len, append,
    query, a __del__ run by the GC, ...), `lock()` finds the mutex held (WouldBlock), releases
    the GIL and blocks forever on a non-reentrant mutex held by its own thread. The module's
    own rule (mod.rs: "a class's mutex is never held while Python code can run") was broken."""
    code = """
        from opencode_addons._core import EventRing
        ring = EventRing(10)
        ring.append({"type": "a"})
        class Index:
            def __index__(self):
                return len(ring)
        print(ring[Index():])
    """
    try:
        result = _run(code, timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            "ring[Index():] deadlocked (mutex re-entered from __index__)"
        ) from None
    assert result.returncode == 0, result.stderr


def test_encode_error_path_reads_freed_python_objects():
    """rust/python/encode.rs: the encoder borrows the UTF-8 of dict keys (`name`) and the key
    objects themselves as raw pointers, and on an error path it used to run Python code: `repr_of`
    (PyObject_Repr of a non-str key) and `type_name`. If that code drops the event's contents,
    `key_utf8` then calls `type_name(key)` on the freed key object and every enclosing level's
    `e.at_key(name)` reads the freed key strings: a use-after-free. In normal runs the error
    message names garbage instead of the key; with PYTHONMALLOC=debug (or malloc) the process
    segfaults."""
    code = """
        from opencode_addons._core import EventRing
        ring = EventRing(10)
        class Key:
            def __repr__(self):
                event.clear()
                junk = ["Z" * 60 + str(i) for i in range(2000)]
                return "Key"
        name = "".join(["outer_", "key_", "x" * 50])
        event = {"type": "t", name: {Key(): 1}}
        del name
        try:
            ring.append(event)
        except TypeError as e:
            print(str(e))
    """
    result = _run(code, env={"PYTHONMALLOC": "debug"})
    assert result.returncode == 0, f"crashed: rc={result.returncode} {result.stderr[-500:]}"
    assert "outer_key_" + "x" * 50 in result.stdout, result.stdout


def test_read_events_limit_zero_newest_first_returns_an_event(tmp_path):
    """rust/python/files.rs `matching`: with newest_first the keep-ring's capacity is
    `limit.clamp(1, ...)`, so limit=0 becomes 1 and read_events returns the newest match,
    while limit=0 means "no events" everywhere else (query(limit=0, newest_first=True) is [],
    and read_events(limit=0) without newest_first is [])."""
    path = tmp_path / "events.jsonl"
    with JsonlStore(path) as store:
        for n in range(3):
            store.append({"type": "t", "n": n})
        assert store.query(limit=0, newest_first=True) == []
    assert read_events(path, limit=0) == []
    assert read_events(path, limit=0, newest_first=True) == []


def test_a_seq_beyond_i64_in_a_file_does_not_wrap_the_next_seq(tmp_path):
    """A line with "seq": 2**64-1 used to set the next seq to 2**64, which wrapped to 0: new
    events were written with seq 0, 1, ... and dropped as duplicates on the next open. Seqs above
    i64::MAX are now treated as absent (the store numbers the line itself)."""
    path = tmp_path / "events.jsonl"
    path.write_text('{"type":"a","seq":18446744073709551615}\n')
    with JsonlStore(path) as store:
        assert store.append({"type": "b"})["seq"] == 2
    with JsonlStore(path) as reopened:
        assert [(e["type"], e["seq"]) for e in reopened.to_list()] == [("a", 1), ("b", 2)]


def test_a_line_with_an_integer_python_cannot_parse_is_skipped_not_loaded(tmp_path):
    """Integers beyond 64 bits are decoded with Python's int(str), which refuses more than
    4300 digits. The scanner used to accept such a line, so one foreign line made to_list(),
    iteration, queries and read_events() raise. Now the line counts as corrupt and is skipped."""
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"type":"a","seq":1}\n'
        '{"type":"big","n":' + "9" * 5000 + ',"seq":2}\n'
        '{"type":"c","seq":3}\n'
        '{"type":"fine","n":' + "9" * 4000 + ',"seq":4}\n'
    )
    with JsonlStore(path) as store:
        assert store.recovery["corrupt_lines"] == 1
        assert [e["type"] for e in store.to_list()] == ["a", "c", "fine"]
    assert [e["type"] for e in read_events(path)] == ["a", "c", "fine"]


def test_a_store_whose_last_seq_is_the_maximum_refuses_appends_and_changes_nothing(tmp_path):
    """Seqs stop at i64::MAX: past it an append is refused with a clear error, not wrapped."""
    path = tmp_path / "events.jsonl"
    path.write_text('{"type":"a","seq":9223372036854775807}\n')
    before = path.read_bytes()
    with JsonlStore(path) as store:
        for attempt in (lambda: store.append({"type": "b"}), lambda: store.extend([{"type": "c"}])):
            try:
                attempt()
            except ValueError as error:
                assert "used up its sequence numbers" in str(error)
            else:
                raise AssertionError("an append past the last possible seq was accepted")
        assert [e["type"] for e in store.to_list()] == ["a"]
    assert path.read_bytes() == before
