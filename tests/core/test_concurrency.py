"""Several Python threads appending and querying at once: no lost, doubled or interleaved events."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict

import pytest
from opencode_addons import EventRing, JsonlStore

THREADS = 4
PER_THREAD = 5_000


def make_event(thread: int, n: int) -> dict:
    return {
        "type": ("a", "b", "c")[n % 3],
        "stream_id": f"t{thread}",
        "actor": f"worker-{thread}",
        "timestamp": n,
        "payload": {"thread": thread, "n": n, "pad": "x" * ((n * 31) % 700), "u": "é😀"},
    }


class QueryLoop:
    """Runs queries in a thread until stopped, checking every result is self-consistent."""

    def __init__(self, target):
        self.target = target
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.rounds = 0
        self.thread = threading.Thread(target=self.run)

    def run(self):
        try:
            while not self.stop.is_set():
                self.rounds += 1
                t = self.rounds % THREADS
                got = self.target.query(stream_id=f"t{t}", type=["a", "c"], limit=50)
                seqs = [e["seq"] for e in got]
                assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
                assert all(e["stream_id"] == f"t{t}" and e["type"] in "ac" for e in got)
                newest = self.target.query(actor=f"worker-{t}", newest_first=True, limit=20)
                seqs = [e["seq"] for e in newest]
                assert seqs == sorted(seqs, reverse=True)
                ns = [e["payload"]["n"] for e in newest]
                assert ns == sorted(ns, reverse=True), "one thread's events out of order"
                assert all(e["actor"] == f"worker-{t}" for e in newest)
                everything = self.target.query(since=100, until=200, limit=100)
                assert all(100 <= e["timestamp"] <= 200 for e in everything)
                if len(self.target):
                    last = self.target[-1]
                    assert "seq" in last
        except BaseException as exc:
            self.errors.append(exc)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()


def run_threads(target, count: int = THREADS):
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def wrapped(thread: int):
        try:
            barrier.wait()
            target(thread)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(t,)) for t in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive()
    if errors:
        raise errors[0]


def check_per_thread(events: list[dict]):
    by_thread = defaultdict(list)
    for e in events:
        by_thread[e["payload"]["thread"]].append(e)
    assert sorted(by_thread) == list(range(THREADS))
    for thread, mine in by_thread.items():
        # Each thread's events are all there, once, in its own order, with their content.
        assert [e["payload"]["n"] for e in mine] == list(range(PER_THREAD))
        for e in mine:
            assert {k: v for k, v in e.items() if k not in ("seq", "id", "timestamp")} == {
                k: v
                for k, v in make_event(thread, e["payload"]["n"]).items()
                if k not in ("id", "timestamp")
            }


@pytest.mark.parametrize("durability", ["flush", "group"])
def test_store_parallel_appends(tmp_path, durability):
    path = tmp_path / "c.jsonl"
    returned: dict[int, list[int]] = {}
    with JsonlStore(path, durability=durability, max_cache_size=50_000) as store:

        def writer(thread: int):
            seqs = []
            for n in range(PER_THREAD):
                seqs.append(store.append(make_event(thread, n))["seq"])
            returned[thread] = seqs

        with QueryLoop(store) as queries:
            run_threads(writer)
        if queries.errors:
            raise queries.errors[0]
        assert queries.rounds > 0
        total = THREADS * PER_THREAD
        assert len(store) == total
        assert [e["seq"] for e in store] == list(range(1, total + 1))
        check_per_thread(store.to_list())
    all_seqs = sorted(s for seqs in returned.values() for s in seqs)
    assert all_seqs == list(range(1, total + 1))
    for seqs in returned.values():
        assert seqs == sorted(seqs)

    data = path.read_bytes()
    assert data.endswith(b"\n")
    lines = data.split(b"\n")[:-1]
    assert len(lines) == total
    events = [json.loads(line) for line in lines]  # no interleaved bytes: every line parses
    assert [e["seq"] for e in events] == list(range(1, total + 1))
    check_per_thread(events)
    for e in events:
        assert returned[e["payload"]["thread"]][e["payload"]["n"]] == e["seq"]
    with JsonlStore(path) as store:
        assert store.recovery["events"] == total
        assert store.recovery["corrupt_lines"] == 0


def test_ring_parallel_appends():
    ring = EventRing(THREADS * PER_THREAD)
    returned: dict[int, list[int]] = {}

    def writer(thread: int):
        returned[thread] = [ring.append(make_event(thread, n)) for n in range(PER_THREAD)]

    with QueryLoop(ring) as queries:
        run_threads(writer)
    if queries.errors:
        raise queries.errors[0]
    total = THREADS * PER_THREAD
    assert len(ring) == total
    assert ring.evicted == 0
    events = ring.to_list()
    assert [e["seq"] for e in events] == list(range(1, total + 1))
    assert sorted(s for seqs in returned.values() for s in seqs) == list(range(1, total + 1))
    check_per_thread(events)
    for e in events:
        assert returned[e["payload"]["thread"]][e["payload"]["n"]] == e["seq"]


def test_ring_parallel_appends_with_eviction():
    ring = EventRing(1_000, max_bytes=200_000)
    run_threads(lambda t: [ring.append(make_event(t, n)) for n in range(PER_THREAD)])
    total = THREADS * PER_THREAD
    events = ring.to_list()
    assert ring.evicted + len(ring) == total
    assert ring.nbytes <= 200_000
    assert [e["seq"] for e in events] == list(range(total - len(events) + 1, total + 1))


BATCH = 50
BATCHES = 40


def batch_of(thread: int, b: int) -> list[dict]:
    return [
        {"type": "batch", "stream_id": f"t{thread}", "payload": {"thread": thread, "b": b, "i": i}}
        for i in range(BATCH)
    ]


def check_batches(events: list[dict]):
    groups = defaultdict(list)
    for e in events:
        p = e["payload"]
        groups[(p["thread"], p["b"])].append((e["seq"], p["i"]))
    assert len(groups) == THREADS * BATCHES
    for members in groups.values():
        seqs = [s for s, _ in members]
        assert seqs == list(range(seqs[0], seqs[0] + BATCH)), "batch not contiguous"
        assert [i for _, i in members] == list(range(BATCH))


def test_store_parallel_extend_keeps_batches_contiguous(tmp_path):
    path = tmp_path / "b.jsonl"
    with JsonlStore(path) as store:

        def writer(thread: int):
            for b in range(BATCHES):
                out = store.extend(batch_of(thread, b))
                seqs = [e["seq"] for e in out]
                assert seqs == list(range(seqs[0], seqs[0] + BATCH))

        with QueryLoop(store) as queries:
            run_threads(writer)
        if queries.errors:
            raise queries.errors[0]
        check_batches(store.to_list())
    events = [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1]]
    assert [e["seq"] for e in events] == list(range(1, THREADS * BATCHES * BATCH + 1))
    check_batches(events)


def test_store_parallel_large_extends_keep_batches_contiguous(tmp_path):
    # Batches of 3 MB are written a chunk at a time under the store's lock: the other
    # threads' batches and appends wait, so each batch's seqs are still consecutive.
    path = tmp_path / "large.jsonl"
    pad = 'line\n\t"quoted"\n' * 4_000  # about 60 KB
    rounds = 4

    def large_batch(thread: int, b: int) -> list[dict]:
        return [{**e, "pad": pad} for e in batch_of(thread, b)]

    with JsonlStore(path, max_cache_size=THREADS * rounds * (BATCH + 1)) as store:

        def writer(thread: int):
            for b in range(rounds):
                seqs = store.extend(large_batch(thread, b), return_events=False)
                assert len(seqs) == BATCH
                store.append({"type": "between", "stream_id": f"t{thread}"})

        run_threads(writer)
        held = [e for e in store.to_list() if e["type"] == "batch"]
    events = [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1]]
    assert [e["seq"] for e in events] == list(range(1, THREADS * rounds * (BATCH + 1) + 1))
    for stored in (held, [e for e in events if e["type"] == "batch"]):
        assert all(e["pad"] == pad for e in stored)
        groups = defaultdict(list)
        for e in stored:
            groups[(e["payload"]["thread"], e["payload"]["b"])].append(e["seq"])
        assert len(groups) == THREADS * rounds
        for seqs in groups.values():
            assert seqs == list(range(seqs[0], seqs[0] + BATCH)), "batch not contiguous"


def test_ring_parallel_extend_keeps_batches_contiguous():
    ring = EventRing(THREADS * BATCHES * BATCH)

    def writer(thread: int):
        for b in range(BATCHES):
            assert ring.extend(batch_of(thread, b)) == BATCH

    run_threads(writer)
    events = ring.to_list()
    assert [e["seq"] for e in events] == list(range(1, THREADS * BATCHES * BATCH + 1))
    check_batches(events)


def test_mixed_append_extend_and_close_race(tmp_path):
    """Closing while other threads append: each call either succeeds fully or raises
    StoreClosedError; whatever succeeded is in the file, exactly once."""
    from opencode_addons import StoreClosedError

    path = tmp_path / "race.jsonl"
    store = JsonlStore(path)
    acked: list[int] = []
    lock = threading.Lock()
    started = threading.Barrier(THREADS + 1)

    def writer(thread: int):
        started.wait()
        n = 0
        while True:
            try:
                if n % 5 == 0:
                    out = store.extend([make_event(thread, n + k) for k in range(3)])
                    seqs = [e["seq"] for e in out]
                    n += 3
                else:
                    seqs = [store.append(make_event(thread, n))["seq"]]
                    n += 1
            except StoreClosedError:
                return
            with lock:
                acked.extend(seqs)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    started.wait()
    while True:
        with lock:
            if len(acked) >= 2_000:
                break
        time.sleep(0.001)
    store.close()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    events = [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1]]
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert sorted(acked) == seqs
