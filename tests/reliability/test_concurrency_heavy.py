"""Guarantee 5 at full size: 8 threads x 50,000 appends on one JsonlStore, with queries running.

The file ends up with exactly 400,000 lines, seq 1..400000 each once, every line a valid JSON
event equal to what one thread appended (no interleaved bytes), each thread's events in the order
it appended them. While the writers run, another process trying to open the file for writing is
refused with StoreLockedError. (tests/test_concurrency.py covers the same at a small size, with
extend and close races.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

from opencode_addons import JsonlStore

THREADS = 8
PER_THREAD = 50_000
TOTAL = THREADS * PER_THREAD

LOCK_PROBE = """
import sys
from opencode_addons import JsonlStore, StoreLockedError
from opencode_addons.durable_stream import DurableStream
for opener in (lambda p: JsonlStore(p), lambda p: DurableStream(p)):
    try:
        opener(sys.argv[1])
    except StoreLockedError as error:
        print("locked:", error)
    else:
        print("opened")
"""


def make_event(thread: int, n: int) -> dict:
    return {
        "id": f"t{thread}-{n}",
        "type": ("a", "b", "c")[n % 3],
        "stream_id": f"t{thread}",
        "actor": f"worker-{thread}",
        "timestamp": n,
        "payload": {"thread": thread, "n": n, "pad": "x" * ((n * 31) % 300), "u": 'é😀"\\\n'},
    }


def test_8_threads_x_50000_appends_with_queries_and_a_refused_second_writer(tmp_path):
    path = tmp_path / "heavy.jsonl"
    store = JsonlStore(path, max_cache_size=20_000, history_size=50_000)
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS + 2)
    writers_done = threading.Event()
    returned: list[list[int]] = [[] for _ in range(THREADS)]
    query_rounds = [0, 0]

    def writer(thread: int) -> None:
        try:
            barrier.wait()
            seqs = returned[thread]
            for n in range(PER_THREAD):
                seqs.append(store.append(make_event(thread, n))["seq"])
        except BaseException as exc:
            errors.append(exc)

    def querier(index: int) -> None:
        try:
            barrier.wait()
            while not writers_done.is_set():
                query_rounds[index] += 1
                thread = query_rounds[index] % THREADS
                got = store.query(stream_id=f"t{thread}", limit=200, newest_first=True)
                seqs = [e["seq"] for e in got]
                assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs)
                ns = [e["payload"]["n"] for e in got]
                assert ns == sorted(ns, reverse=True), "a thread's events out of order"
                for e in got[:5]:
                    assert {k: v for k, v in e.items() if k != "seq"} == make_event(
                        thread, e["payload"]["n"]
                    )
                window = store.query(type="b", after_seq=max(0, len(store) - 50), limit=100)
                assert all(e["type"] == "b" for e in window)
                history = store.history
                if len(history):
                    assert history[-1]["seq"] >= history[0]["seq"]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(THREADS)]
    threads += [threading.Thread(target=querier, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    # A second process, while the writers run, is refused.
    probe = subprocess.run(
        [sys.executable, "-c", LOCK_PROBE, str(path)], capture_output=True, text=True, timeout=60
    )
    for t in threads[:THREADS]:
        t.join(timeout=300)
    writers_done.set()
    for t in threads[THREADS:]:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.count("locked:") == 2, probe.stdout
    assert str(path) in probe.stdout
    assert all(query_rounds), "the queries never ran"

    # What append returned: every seq once, each thread's increasing.
    everything = [seq for seqs in returned for seq in seqs]
    assert sorted(everything) == list(range(1, TOTAL + 1))
    assert all(seqs == sorted(seqs) for seqs in returned)
    assert store.stats()["next_seq"] == TOTAL + 1
    store.close()

    # The store sealed its file into segments as it grew: in name order they hold every event,
    # each segment after the first starting with its snapshot header (not an event).
    files = [*sorted(path.parent.glob(f"{path.stem}_*.jsonl")), path]
    assert len(files) > 1, "400,000 events should fill more than one 64 MiB segment"
    lines = []
    for file in files:
        data = file.read_bytes()
        assert data.endswith(b"\n") and b"\x00" not in data
        lines += [line for line in data.split(b"\n")[:-1] if not line.startswith(b'{"segment":')]
    assert len(lines) == TOTAL
    last_n = [-1] * THREADS
    for expected_seq, raw in enumerate(lines, start=1):
        event = json.loads(raw)
        assert event.pop("seq") == expected_seq
        thread, n = event["payload"]["thread"], event["payload"]["n"]
        assert event == make_event(thread, n), f"line {expected_seq} is not an intact event"
        assert n == last_n[thread] + 1, f"thread {thread}: event {n} after {last_n[thread]}"
        last_n[thread] = n
        assert returned[thread][n] == expected_seq
    assert last_n == [PER_THREAD - 1] * THREADS

    # After close the lock is released: a new writer gets it and continues the sequence.
    with JsonlStore(path) as again:
        # Opening reads only the newest segments (enough for the cache).
        assert again.recovery["last_seq"] == TOTAL
        assert 50_000 <= again.recovery["events"] < TOTAL
        assert again.append({"type": "after"})["seq"] == TOTAL + 1
