"""Benchmark cases shared by the pytest-benchmark files and ``report.py``.

Each contender is opened (untimed), runs over the same events (timed) and is closed (untimed).
Baselines are what a user would write in Python; the project's contenders are ``JsonlStore``
(the Rust core) and ``DurableStream`` (the public stream with subscribers and projections).
Memory is measured in a fresh subprocess per contender: ``python benches/cases.py memory NAME``.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

import orjson
import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from events import STREAMS, TYPES, iter_events
from opencode_addons import EventRing, JsonlStore
from opencode_addons.durable_stream import DurableStream

APPEND_EVENTS = 100_000
FSYNC_EVENTS = 2_000
BATCH = 1_000
HISTORY = 100_000
CACHE = 50_000
RESUME_LINES = 300_000
BASELINE_KEEP = 50_000
MODES = ("none", "flush", "fsync", "group")
SELECTIVE = {"stream_id": STREAMS[42], "types": (TYPES[0], TYPES[2]), "limit": 50}
BROAD = {"stream_id": None, "types": TYPES[:6], "limit": 1_000}

Event = dict[str, Any]


@dataclass
class Contender:
    """Something events are appended to: ``open(path)`` -> state, ``run(state, events)``."""

    name: str
    open: Callable[[str], Any]
    run: Callable[[Any, Sequence[Event]], None]
    close: Callable[[Any], None]
    baseline: bool = False


def timed(contender: Contender, events: Sequence[Event], rounds: int = 3) -> float:
    """Best wall time of ``rounds`` runs, each on a fresh file."""
    best = float("inf")
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="oa-bench-") as directory:
            state = contender.open(os.path.join(directory, "events.jsonl"))
            try:
                started = time.perf_counter()
                contender.run(state, events)
                best = min(best, time.perf_counter() - started)
            finally:
                contender.close(state)
    return best


# -- baselines: json/orjson + write + flush ----------------------------------------------------


def _open_binary(path: str) -> Any:
    return open(path, "wb")


def _close_file(handle: Any) -> None:
    handle.close()


def _json_flush(handle: Any, events: Sequence[Event]) -> None:
    dumps = json.dumps
    for event in events:
        handle.write(dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
        handle.flush()


def _orjson_flush(handle: Any, events: Sequence[Event]) -> None:
    dumps, option = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    for event in events:
        handle.write(dumps(event, option=option))
        handle.flush()


def _orjson_fsync_every(every: int) -> Callable[[Any, Sequence[Event]], None]:
    def run(handle: Any, events: Sequence[Event]) -> None:
        dumps, option = orjson.dumps, orjson.OPT_APPEND_NEWLINE
        for index, event in enumerate(events, 1):
            handle.write(dumps(event, option=option))
            handle.flush()
            if index % every == 0:
                os.fsync(handle.fileno())
        os.fsync(handle.fileno())

    return run


def _orjson_batch(handle: Any, events: Sequence[Event]) -> None:
    dumps, option = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    for start in range(0, len(events), BATCH):
        handle.write(b"".join(dumps(e, option=option) for e in events[start : start + BATCH]))
        handle.flush()


def baseline(name: str, run: Callable[[Any, Sequence[Event]], None]) -> Contender:
    return Contender(name, _open_binary, run, _close_file, baseline=True)


BASELINES = {
    "json+write+flush": baseline("json+write+flush", _json_flush),
    "orjson+write+flush": baseline("orjson+write+flush", _orjson_flush),
    "orjson+flush, fsync/1000": baseline("orjson+flush, fsync/1000", _orjson_fsync_every(1000)),
    "orjson+flush, fsync/event": baseline("orjson+flush, fsync/event", _orjson_fsync_every(1)),
    "orjson batch+write+flush": baseline("orjson batch+write+flush", _orjson_batch),
}


# -- the project's contenders -------------------------------------------------------------------


def _store_opener(mode: str) -> Callable[[str], Any]:
    return lambda path: JsonlStore(
        path, durability=mode, history_size=HISTORY, max_cache_size=CACHE
    )


def _stream_opener(mode: str) -> Callable[[str], Any]:
    return lambda path: DurableStream(
        path, durability=mode, max_event_history=HISTORY, max_cache_size=CACHE
    )


def _append_each(target: Any, events: Sequence[Event]) -> None:
    append = target.append
    for event in events:
        append(event)


def _extend_batches(target: Any, events: Sequence[Event]) -> None:
    for start in range(0, len(events), BATCH):
        target.extend(events[start : start + BATCH])


def _append_each_seq(target: Any, events: Sequence[Event]) -> None:
    append = target.append
    for event in events:
        # By position, as the docs advise: a keyword costs more (its name is matched per call).
        append(event, False)


def _extend_batches_seqs(target: Any, events: Sequence[Event]) -> None:
    for start in range(0, len(events), BATCH):
        target.extend(events[start : start + BATCH], return_events=False)


def _close(target: Any) -> None:
    target.close()


_STORE_RUNS = {
    (False, False): _append_each,
    (True, False): _extend_batches,
    (False, True): _append_each_seq,
    (True, True): _extend_batches_seqs,
}


def store_contender(mode: str, batch: bool, seqs_only: bool = False) -> Contender:
    """``JsonlStore.append``/``extend``; with ``seqs_only``, called with ``return_events=False``
    (the seqs come back instead of a copy of each event)."""
    kind = "extend" if batch else "append"
    label = f"JsonlStore.{kind} ({mode}{', seqs' if seqs_only else ''})"
    return Contender(label, _store_opener(mode), _STORE_RUNS[batch, seqs_only], _close)


def stream_contender(mode: str, batch: bool) -> Contender:
    kind = "extend" if batch else "append"
    run = _extend_batches if batch else _append_each
    return Contender(f"DurableStream.{kind} ({mode})", _stream_opener(mode), run, _close)


def events_for(mode: str, events: Sequence[Event]) -> Sequence[Event]:
    """fsync per append is ~1,000x slower: it gets fewer events."""
    return events[:FSYNC_EVENTS] if mode == "fsync" else events


# -- every shape, paired rounds -------------------------------------------------------------------

# Events per timed run, by shape (large events are ~40 KiB each: fewer of them). 50,000, the
# issue's figure: runs of 20,000 (about 50 ms) let one scheduling hiccup move a round's ratio by
# a third on this shared machine.
SHAPE_EVENTS = {
    "benchmark": 50_000,
    "short_strings": 50_000,
    "opencode": 50_000,
    "tiny": 50_000,
    "large": 1_250,
}
# The orchestration costs far more per event than the store: fewer events keep the run short.
ORCHESTRATED_SHARE = 0.1
PAIRS = 7


def _open_baseline(path: str) -> Any:
    return open(path, "wb"), deque(maxlen=HISTORY)


def _close_baseline(state: Any) -> None:
    state[0].close()


def _baseline_each(state: Any, events: Sequence[Event]) -> None:
    handle, kept = state
    dumps, option, write, flush, keep = (
        orjson.dumps,
        orjson.OPT_APPEND_NEWLINE,
        handle.write,
        handle.flush,
        kept.append,
    )
    for event in events:
        write(dumps(event, option=option))
        flush()
        keep(event)


def _baseline_batches(state: Any, events: Sequence[Event]) -> None:
    handle, kept = state
    dumps, option = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    for start in range(0, len(events), BATCH):
        batch = events[start : start + BATCH]
        handle.write(b"".join([dumps(e, option=option) for e in batch]))
        handle.flush()
        kept.extend(batch)


# What a user would write: orjson.dumps + write + flush + deque.append (the same per batch).
PYTHON_EACH = Contender(
    "orjson+write+flush+deque", _open_baseline, _baseline_each, _close_baseline, baseline=True
)
PYTHON_BATCH = Contender(
    "orjson batch+write+flush+deque",
    _open_baseline,
    _baseline_batches,
    _close_baseline,
    baseline=True,
)


@dataclass
class Orchestrated:
    """A DurableStream with the default orchestration attached."""

    stream: DurableStream
    components: list[Any]


def _open_orchestrated(path: str) -> Orchestrated:
    from opencode_addons.orchestrator import (
        EventDrivenLedger,
        LearningExtractor,
        SessionStateTracker,
    )

    stream = _stream_opener("flush")(path)
    ledger_path = os.path.join(os.path.dirname(path), "LEDGER.md")
    components = [
        SessionStateTracker(stream),
        LearningExtractor(stream).attach(),
        EventDrivenLedger(stream, ledger_path),
    ]
    return Orchestrated(stream, components)


def _run_orchestrated(state: Orchestrated, events: Sequence[Event]) -> None:
    _append_each(state.stream, events)


def _close_orchestrated(state: Orchestrated) -> None:
    for component in state.components:
        result = component.shutdown()
        if inspect.isawaitable(result):
            asyncio.run(_awaited(result))
    state.stream.shutdown()


async def _awaited(awaitable: Any) -> None:
    await awaitable


ORCHESTRATED = Contender(
    "DurableStream.append (flush, orchestration)",
    _open_orchestrated,
    _run_orchestrated,
    _close_orchestrated,
)


@dataclass
class ShapeCase:
    """One append case of the per-shape tables: a contender against its baselines (the first
    one carries the target, the others are shown beside it)."""

    label: str
    contender: Contender
    baselines: tuple[Contender, ...]
    target: Optional[float]
    share: float = 1.0  # of the shape's events (the orchestration is far slower per event)


# The store's rows come twice: as called by default (returning a copy of each stored event)
# and with return_events=False (returning the seqs), each against the same target.
SHAPE_CASES = (
    ShapeCase("JsonlStore.append (flush)", store_contender("flush", False), (PYTHON_EACH,), 2.0),
    ShapeCase(
        "JsonlStore.append (flush, seqs)",
        store_contender("flush", False, seqs_only=True),
        (PYTHON_EACH,),
        2.0,
    ),
    ShapeCase(
        "JsonlStore.extend (flush, 1,000)",
        store_contender("flush", True),
        (PYTHON_EACH, PYTHON_BATCH),
        3.0,
    ),
    ShapeCase(
        "JsonlStore.extend (flush, 1,000, seqs)",
        store_contender("flush", True, seqs_only=True),
        (PYTHON_EACH,),
        3.0,
    ),
    ShapeCase(
        "DurableStream.append (flush)", stream_contender("flush", False), (PYTHON_EACH,), 1.5
    ),
    ShapeCase(
        "DurableStream.append + orchestration",
        ORCHESTRATED,
        (PYTHON_EACH,),
        None,
        ORCHESTRATED_SHARE,
    ),
)


# -- large outputs with a full cache -------------------------------------------------------------

# A long-running host's cache fills and then evicts; a store's ring then reuses its blocks, and
# a large event goes through the log's mapping (log.rs). The per-shape tables measure stores
# that grow for the whole run (1,250 large events in a cache of 50,000); these rows measure the
# same events once the cache is full.
FULL_CACHE = 200


def _full_cache_opener(stream: bool, filler: Sequence[Event]) -> Callable[[str], Any]:
    def open_full(path: str) -> Any:
        target: Any
        if stream:
            target = DurableStream(
                path, durability="flush", max_event_history=FULL_CACHE, max_cache_size=FULL_CACHE
            )
        else:
            target = JsonlStore(
                path, durability="flush", history_size=FULL_CACHE, max_cache_size=FULL_CACHE
            )
        for event in filler:  # untimed: the cache is full and evicts from the first timed event
            target.append(event)
        return target

    return open_full


def full_cache_cases(filler: Sequence[Event]) -> tuple[ShapeCase, ...]:
    """``JsonlStore.append``/``extend`` and ``DurableStream.append`` (flush) with a cache of
    ``FULL_CACHE`` events filled with ``filler`` (untimed) before each run."""
    store = _full_cache_opener(False, filler)
    stream = _full_cache_opener(True, filler)
    return (
        ShapeCase(
            "JsonlStore.append (flush), cache full",
            Contender("JsonlStore.append, cache full", store, _append_each, _close),
            (PYTHON_EACH,),
            2.0,
        ),
        ShapeCase(
            "JsonlStore.extend (flush, 1,000), cache full",
            Contender("JsonlStore.extend, cache full", store, _extend_batches, _close),
            (PYTHON_EACH,),
            3.0,
        ),
        ShapeCase(
            "DurableStream.append (flush), cache full",
            Contender("DurableStream.append, cache full", stream, _append_each, _close),
            (PYTHON_EACH,),
            1.5,
        ),
    )


def _one_run(contender: Contender, events: Sequence[Event]) -> tuple[float, float]:
    """Events per second of one run on a fresh file (open and close untimed): by the wall
    clock, and by the CPU time of the process (every thread, user and system)."""
    with tempfile.TemporaryDirectory(prefix="oa-bench-") as directory:
        state = contender.open(os.path.join(directory, "events.jsonl"))
        try:
            cpu_started = time.process_time()
            started = time.perf_counter()
            contender.run(state, events)
            seconds = time.perf_counter() - started
            cpu_seconds = time.process_time() - cpu_started
        finally:
            contender.close(state)
    return len(events) / seconds, len(events) / max(cpu_seconds, 1e-9)


@dataclass
class Paired:
    """Paired rounds against one baseline: the median of the per-pair ratios (wall clock, and
    CPU time of the process) and the median rates (wall clock)."""

    ratio: float
    ratios: list[float]
    cpu_ratio: float
    rate: float
    baseline_rate: float


def paired(
    contender: Contender,
    baselines: Sequence[Contender],
    events: Sequence[Event],
    pairs: int = PAIRS,
) -> list[Paired]:
    """Rounds of the contender and each baseline, one run each, in an order that rotates every
    round (so a drift in the machine's speed hits them alike); a round's ratio against a
    baseline is the contender's rate over that baseline's rate in the same round."""
    runners = [contender, *baselines]
    warm = events[: max(1, len(events) // 10)]
    for runner in runners:
        _one_run(runner, warm)  # warm caches and code paths
    rates: list[list[tuple[float, float]]] = [[] for _ in runners]
    for index in range(pairs):
        order = list(range(len(runners)))
        order = order[index % len(order) :] + order[: index % len(order)]
        for which in order:
            rates[which].append(_one_run(runners[which], events))
    results = []
    for base in rates[1:]:
        ratios = [c[0] / b[0] for c, b in zip(rates[0], base)]
        cpu_ratios = [c[1] / b[1] for c, b in zip(rates[0], base)]
        results.append(
            Paired(
                statistics.median(ratios),
                ratios,
                statistics.median(cpu_ratios),
                statistics.median(r[0] for r in rates[0]),
                statistics.median(r[0] for r in base),
            )
        )
    return results


# -- where the time goes: CPU time by thread ------------------------------------------------------


def _thread_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


def _thread_kernel() -> float:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_stime


@dataclass
class CpuSplit:
    """CPU nanoseconds per event of one contender (the least of a few runs): all threads, the
    calling thread, the calling thread in the kernel, and the wall clock."""

    total: float
    caller: float
    caller_kernel: float
    wall: float

    @property
    def other_threads(self) -> float:
        return max(0.0, self.total - self.caller)


def cpu_split(contender: Contender, events: Sequence[Event], runs: int = 3) -> CpuSplit:
    best: Optional[CpuSplit] = None
    count = len(events)
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="oa-bench-") as directory:
            state = contender.open(os.path.join(directory, "events.jsonl"))
            try:
                total, caller, kernel = time.process_time(), _thread_cpu(), _thread_kernel()
                started = time.perf_counter()
                contender.run(state, events)
                split = CpuSplit(
                    1e9 * (time.process_time() - total) / count,
                    1e9 * (_thread_cpu() - caller) / count,
                    1e9 * (_thread_kernel() - kernel) / count,
                    1e9 * (time.perf_counter() - started) / count,
                )
            finally:
                contender.close(state)
        if best is None or split.total < best.total:
            best = split
    assert best is not None
    return best


RING_CONTENDER = Contender(
    "EventRing.append", lambda _path: EventRing(HISTORY), _append_each, lambda _s: None
)
SPLIT_CONTENDERS = (
    PYTHON_EACH,
    RING_CONTENDER,
    store_contender("flush", False),
    store_contender("flush", True),
    stream_contender("flush", False),
)


# -- filling vs evicting ------------------------------------------------------------------------


def fill_then_evict(
    open_target: Callable[[str], Any], events: Sequence[Event]
) -> tuple[float, float]:
    """Rates (events/s) of appending ``HISTORY`` events to an empty ring, then as many more."""
    with tempfile.TemporaryDirectory(prefix="oa-bench-") as directory:
        target = open_target(os.path.join(directory, "events.jsonl"))
        try:
            rates = []
            for _ in range(2):
                started = time.perf_counter()
                _append_each(target, events[:HISTORY])
                rates.append(HISTORY / (time.perf_counter() - started))
        finally:
            close = getattr(target, "close", None)
            if close is not None:
                close()
    return rates[0], rates[1]


def ring_opener(_path: str) -> Any:
    return EventRing(HISTORY)


# -- resume -------------------------------------------------------------------------------------


def write_resume_file(path: str, lines: int = RESUME_LINES) -> None:
    """A valid store file of ``lines`` events, written by the store itself."""
    with JsonlStore(path, durability="none", max_cache_size=1_000) as store:
        chunk: list[Event] = []
        for event in iter_events(lines):
            chunk.append(event)
            if len(chunk) == BATCH:
                store.extend(chunk)
                chunk.clear()
        if chunk:
            store.extend(chunk)


def resume_store(path: str) -> int:
    with JsonlStore(path, history_size=HISTORY, max_cache_size=CACHE) as store:
        return len(store.history)


def resume_stream(path: str) -> int:
    stream = DurableStream(path, max_event_history=HISTORY, max_cache_size=CACHE)
    try:
        return len(stream.get_event_history())
    finally:
        stream.shutdown()


def _replay(path: str, loads: Callable[[bytes], Any]) -> int:
    kept: deque[Any] = deque(maxlen=BASELINE_KEEP)
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                kept.append(loads(line))
    return len(kept)


def replay_json(path: str) -> int:
    return _replay(path, json.loads)


def replay_orjson(path: str) -> int:
    return _replay(path, orjson.loads)


def best_time(call: Callable[[], Any], rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


# -- queries ------------------------------------------------------------------------------------


def python_scan(history: Sequence[Event], spec: dict[str, Any]) -> list[Event]:
    """Newest-first scan of a deque of dicts: the baseline for queries."""
    stream_id, types, limit = spec["stream_id"], set(spec["types"]), spec["limit"]
    found: list[Event] = []
    for event in reversed(history):
        if stream_id is not None and event["stream_id"] != stream_id:
            continue
        if event["type"] in types:
            found.append(event)
            if len(found) == limit:
                break
    return found


def python_scan_bytes(history: Sequence[bytes], spec: dict[str, Any]) -> list[Event]:
    """Newest-first scan of a deque of orjson bytes (the baseline that holds as little memory as
    the ring): every event is parsed until enough match."""
    stream_id, types, limit = spec["stream_id"], set(spec["types"]), spec["limit"]
    loads = orjson.loads
    found: list[Event] = []
    for raw in reversed(history):
        event = loads(raw)
        if stream_id is not None and event["stream_id"] != stream_id:
            continue
        if event["type"] in types:
            found.append(event)
            if len(found) == limit:
                break
    return found


def native_query(target: Any, spec: dict[str, Any], raw: bool = False) -> list[Any]:
    return target.query(  # type: ignore[no-any-return]
        stream_id=spec["stream_id"],
        type=list(spec["types"]),
        limit=spec["limit"],
        newest_first=True,
        raw=raw,
    )


def per_call(call: Callable[[], Any], minimum_seconds: float = 0.3) -> float:
    """Best mean seconds per call over a few batches of calls."""
    call()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < minimum_seconds / 3:
        call()
        count += 1
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(count):
            call()
        best = min(best, (time.perf_counter() - started) / count)
    return best


# -- shutdown_all -------------------------------------------------------------------------------


async def _shutdown_once(directory: str, events: Sequence[Event]) -> float:
    from opencode_addons.memory_lane import MemoryLaneStore
    from opencode_addons.orchestrator import (
        CheckpointManager,
        EventDrivenLedger,
        LearningExtractor,
        TaskRegistry,
        shutdown_all,
    )

    stream = DurableStream(os.path.join(directory, "events.jsonl"))
    stream.extend(events)
    lane = MemoryLaneStore(os.path.join(directory, "lane.sqlite"))
    registry = TaskRegistry(stream)
    for index in range(1_000):
        registry.register(session_id=STREAMS[index % 100], description="bench")
    checkpoints = CheckpointManager(stream)
    for index in range(20):
        checkpoints.request(STREAMS[index], "continue?", ["yes", "no"], "agent")
    components = {
        "task_registry": registry,
        "checkpoint_manager": checkpoints,
        "learning_extractor": LearningExtractor(stream, memory_lane=lane).attach(),
        "event_driven_ledger": EventDrivenLedger(stream, os.path.join(directory, "LEDGER.md")),
        "durable_stream": stream,
        "memory_lane_store": lane,
    }
    started = time.perf_counter()
    report = await shutdown_all(components=components)
    seconds = time.perf_counter() - started
    if not report.ok:
        raise RuntimeError(f"shutdown_all reported problems:\n{report}")
    return seconds


def shutdown_all_seconds(events: Sequence[Event], rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="oa-bench-") as directory:
            best = min(best, asyncio.run(_shutdown_once(directory, events)))
    return best


# -- memory held, in a fresh subprocess ----------------------------------------------------------

MEMORY_EVENTS = 100_000


def _exact_bytes(event: Event) -> bytes:
    # orjson over-allocates its result; a copy through memoryview is exactly sized.
    return bytes(memoryview(orjson.dumps(event)))


def _fill_memory_contender(name: str, directory: str) -> Any:
    events = iter_events(MEMORY_EVENTS)
    if name == "deque of dicts":
        held: Any = deque(events, maxlen=MEMORY_EVENTS)
    elif name == "deque of exact orjson bytes":
        held = deque((_exact_bytes(e) for e in events), maxlen=MEMORY_EVENTS)
    elif name == "EventRing":
        held = EventRing(MEMORY_EVENTS)
        _extend_batches(held, list(events))
    elif name == "DurableStream (default)":
        held = DurableStream(os.path.join(directory, "events.jsonl"))
        for event in events:
            held.append(event)
    else:
        raise SystemExit(f"unknown memory contender {name!r}")
    return held


MEMORY_CONTENDERS = (
    "deque of dicts",
    "deque of exact orjson bytes",
    "EventRing",
    "DurableStream (default)",
)


def _anon_rss() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure_memory_here(name: str) -> dict[str, Any]:
    gc.collect()
    process = psutil.Process()
    before, anon_before = process.memory_info().rss, _anon_rss()
    with tempfile.TemporaryDirectory(prefix="oa-bench-") as directory:
        held = _fill_memory_contender(name, directory)
        gc.collect()
        after, anon_after = process.memory_info().rss, _anon_rss()
        size = len(held) if hasattr(held, "__len__") else MEMORY_EVENTS
        if isinstance(held, DurableStream):
            size = len(held.get_event_history())
            held.shutdown()
    return {
        "name": name,
        "events": size,
        "rss_growth": after - before,
        "anon_growth": anon_after - anon_before,
        "rss_per_event": (after - before) / MEMORY_EVENTS,
    }


def measure_memory(name: str) -> dict[str, Any]:
    """``measure_memory_here`` in a fresh interpreter."""
    import subprocess

    output = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "memory", name],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "memory":
        print(json.dumps(measure_memory_here(sys.argv[2])))
    else:
        raise SystemExit("usage: python benches/cases.py memory NAME")
