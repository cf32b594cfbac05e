"""Compressed rings against uncompressed ones (issue 12, part 3): memory, append, queries.

Usage: ``python benches/compression.py [--pairs N] [--shapes a,b] [--out FILE]`` (about 5
minutes on 2 cores).

Per shape (``opencode``: the OpenCode-like mix of ``opencode_mix.py``; ``benchmark``: the events
of ``events.py``), 100,000 held events:

- memory: RSS growth holding the events, each holder in a fresh subprocess that reads the events
  back from a JSONL file and appends them one at a time, as a host receives them (so little else
  stays in the process). The compressed ring is measured once its background compressor has
  finished (waited for), and also right after the fill. Holders: the uncompressed
  ring, the compressed one and a deque of the exact orjson bytes (what a user would write); two
  runs of each, alternating, the lower of each kept. Ratios are to the exact JSON bytes of the
  events (``orjson.dumps``) and to the deque's RSS (the "exact orjson bytes" row of RESULTS.md).
- append: ``EventRing.append`` of every event into an empty ring of 100,000, and ``extend`` in
  batches of 1,000: wall time and the appending thread's CPU time (the compressor's thread is
  not in it; after each compressed round the benchmark waits for it to finish, so it never runs
  into the next round).
- queries: one stream, newest 50 (``stream_id``, ``limit=50``, ``newest_first=True``), cycling
  through the shape's streams, as dicts and ``raw=True``; "warm" repeats the newest-50 queries
  (the decompressed-chunk cache helps), "cold" asks for the newest 50 before a random point of
  the history (``until``), so nearly every query decompresses chunks the cache does not hold.

Timing is by paired rounds: uncompressed and compressed alternate (the order flips every pair)
and the figure is the median of the per-pair ratios, since this machine's absolute rates drift
by 30% between runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, Callable

import orjson
import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import events as benchmark_events  # noqa: E402
import opencode_mix  # noqa: E402
from opencode_addons import EventRing  # noqa: E402

EVENTS = 100_000
PAIRS = 5
SHAPES: dict[str, Callable[[int], Iterator[dict[str, Any]]]] = {
    "opencode": opencode_mix.iter_events,
    "benchmark": benchmark_events.iter_events,
}
TARGETS = {"memory": 0.35, "query": 2.0, "append": 1.2}


def _ring(compress: bool) -> EventRing:
    return EventRing(EVENTS, compress=compress)


def _settle(ring: EventRing, limit: float = 120.0) -> float:
    """Waits (at most `limit` seconds) for the background compressor to finish the ring's
    blocks; seconds waited."""
    started = time.perf_counter()
    while ring.compress and ring.queued_blocks and time.perf_counter() - started < limit:
        time.sleep(0.002)
    return time.perf_counter() - started


def _anon_rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def memory_here(path: str, kind: str) -> dict[str, Any]:
    """RSS growth of one ring holding the events of the JSONL file `path` (run in a fresh
    interpreter; the events arrive one at a time, as a host receives them, so what stays in the
    process is the ring)."""
    gc.collect()
    process = psutil.Process()
    before, anon_before = process.memory_info().rss, _anon_rss()
    held: Any
    if kind == "deque":
        # What a user would hold by hand: the exact orjson bytes of each event (orjson
        # over-allocates its result; a copy through memoryview is exactly sized).
        held = deque(maxlen=EVENTS)
        append = held.append
    else:
        held = _ring(kind == "compressed")
        append = held.append
    exact = 0
    with open(path, "rb") as lines:
        for line in lines:
            event = orjson.loads(line)
            exact += len(orjson.dumps(event))
            append(bytes(memoryview(orjson.dumps(event))) if kind == "deque" else event)
    del event
    gc.collect()
    filled = process.memory_info().rss - before
    figures: dict[str, Any] = {"kind": kind, "events": len(held), "exact_json_bytes": exact}
    if isinstance(held, EventRing):
        figures["queued_after_fill"] = held.queued_blocks
        figures["settle_seconds"] = _settle(held)
        held.compress_pending()
        gc.collect()
        figures.update(
            nbytes=held.nbytes, stored_bytes=held.stored_bytes, memory_bytes=held.memory_bytes
        )
    after, anon_after = process.memory_info().rss, _anon_rss()
    figures.update(
        rss_growth=after - before,
        anon_growth=anon_after - anon_before,
        rss_growth_right_after_fill=filled,
    )
    return figures


def memory(path: str, kind: str) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--memory-child", path, kind],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(output.stdout)  # type: ignore[no-any-return]


def paired(measure: Callable[[bool], float], pairs: int) -> tuple[float, list[float], list[float]]:
    """Median ratio compressed/uncompressed of `measure` (seconds), order flipped every pair."""
    ratios, plain_times, packed_times = [], [], []
    for pair in range(pairs):
        order = (False, True) if pair % 2 == 0 else (True, False)
        got = {compress: measure(compress) for compress in order}
        plain_times.append(got[False])
        packed_times.append(got[True])
        ratios.append(got[True] / got[False])
    return statistics.median(ratios), plain_times, packed_times


def append_seconds(
    events: list[dict[str, Any]], compress: bool, batch: int
) -> tuple[float, float, float]:
    """(wall, this thread's CPU, the process's CPU until the compressor is done) seconds to
    append `events` to a fresh ring."""
    ring = _ring(compress)
    gc.collect()
    process_cpu = time.process_time()
    wall, cpu = time.perf_counter(), time.thread_time()
    if batch == 1:
        append = ring.append
        for event in events:
            append(event)
    else:
        for start in range(0, len(events), batch):
            ring.extend(events[start : start + batch])
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    _settle(ring)
    return wall, cpu, time.process_time() - process_cpu


def _query_plan(
    events: list[dict[str, Any]], cold: bool, count: int, seed: int
) -> list[dict[str, Any]]:
    streams = sorted({e["stream_id"] for e in events})
    rng = random.Random(seed)
    stamps = [e["timestamp"] for e in events]
    plan = []
    for k in range(count):
        query: dict[str, Any] = {
            "stream_id": streams[k % len(streams)],
            "limit": 50,
            "newest_first": True,
        }
        if cold:
            query["until"] = stamps[rng.randrange(len(stamps) // 10, len(stamps))]
        plan.append(query)
    return plan


def query_seconds(ring: EventRing, plan: list[dict[str, Any]], raw: bool) -> float:
    """Mean seconds per query over the plan."""
    query = ring.query
    started = time.perf_counter()
    for q in plan:
        query(raw=raw, **q)
    return (time.perf_counter() - started) / len(plan)


def run_shape(shape: str, pairs: int) -> dict[str, Any]:
    result: dict[str, Any] = {"shape": shape}
    events = list(SHAPES[shape](EVENTS))
    log(f"{shape}: memory")
    mem: dict[str, list[dict[str, Any]]] = {"deque": [], "plain": [], "compressed": []}
    with tempfile.TemporaryDirectory(prefix="oa-compress-") as directory:
        path = os.path.join(directory, "events.jsonl")
        with open(path, "wb") as out:
            for event in events:
                out.write(orjson.dumps(event) + b"\n")
        for _ in range(2):  # two of each, alternating
            for kind in mem:
                mem[kind].append(memory(path, kind))
    result["memory"] = {k: min(runs, key=lambda r: r["rss_growth"]) for k, runs in mem.items()}
    log(f"{shape}: append")
    for label, batch in (("append", 1), ("extend", 1_000)):
        walls: dict[bool, list[float]] = {False: [], True: []}
        cpus: dict[bool, list[float]] = {False: [], True: []}
        totals: dict[bool, list[float]] = {False: [], True: []}

        def measure(
            compress: bool,
            batch: int = batch,
            walls: dict[bool, list[float]] = walls,
            cpus: dict[bool, list[float]] = cpus,
            totals: dict[bool, list[float]] = totals,
        ) -> float:
            wall, cpu, total = append_seconds(events, compress, batch)
            walls[compress].append(wall)
            cpus[compress].append(cpu)
            totals[compress].append(total)
            return wall

        ratio, _, _ = paired(measure, pairs)
        cpu_ratio = statistics.median(p / q for p, q in zip(cpus[True], cpus[False]))
        total_ratio = statistics.median(p / q for p, q in zip(totals[True], totals[False]))
        result[label] = {
            "wall_ratio": ratio,
            "cpu_ratio": cpu_ratio,
            "process_cpu_ratio": total_ratio,
            "compressor_us_per_event": statistics.median(
                (p - c) * 1e6 / len(events) for p, c in zip(totals[True], cpus[True])
            ),
            "plain_rate": EVENTS / statistics.median(walls[False]),
            "packed_rate": EVENTS / statistics.median(walls[True]),
        }
    log(f"{shape}: queries")
    rings = {compress: _ring(compress) for compress in (False, True)}
    for ring in rings.values():
        for start in range(0, len(events), 1_000):
            ring.extend(events[start : start + 1_000])
    _settle(rings[True])
    rings[True].compress_pending()
    for cold in (False, True):
        for raw in (False, True):
            plan = _query_plan(events, cold, 400, seed=len(events))
            for ring in rings.values():
                query_seconds(ring, plan[:50], raw)  # warm up

            def query_measure(
                compress: bool, plan: list[dict[str, Any]] = plan, raw: bool = raw
            ) -> float:
                return query_seconds(rings[compress], plan, raw)

            ratio, plain_times, packed_times = paired(query_measure, pairs)
            key = f"query {'cold' if cold else 'warm'}{' raw' if raw else ''}"
            result[key] = {
                "ratio": ratio,
                "plain_us": statistics.median(plain_times) * 1e6,
                "packed_us": statistics.median(packed_times) * 1e6,
            }
    return result


def log(message: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| shape | figure | uncompressed | compressed | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        shape = r["shape"]
        held = r["memory"]
        plain, packed, by_hand = held["plain"], held["compressed"], held["deque"]
        exact = packed["exact_json_bytes"] / packed["events"]

        def per_event(m: dict[str, Any], key: str = "rss_growth") -> float:
            return m[key] / m["events"]

        ratio = per_event(packed) / exact
        lines.append(
            f"| {shape} | RSS per held event, to the exact JSON ({exact:.0f} B) | "
            f"{per_event(plain):.0f} B ({per_event(plain) / exact:.2f}x) | "
            f"{per_event(packed):.0f} B | {ratio:.2f}x | <= 0.35x | "
            f"{'yes' if ratio <= TARGETS['memory'] else 'no'} |"
        )
        lines.append(
            f"| {shape} | RSS per held event, to a deque of exact orjson bytes "
            f"({per_event(by_hand):.0f} B) | {per_event(plain) / per_event(by_hand):.2f}x | "
            f"{per_event(packed) / per_event(by_hand):.2f}x | | | |"
        )
        lines.append(
            f"| {shape} | RSS right after the fill ({packed['queued_after_fill']} blocks queued, "
            f"compressed {packed['settle_seconds']:.1f} s later) | "
            f"{per_event(plain, 'rss_growth_right_after_fill'):.0f} B | "
            f"{per_event(packed, 'rss_growth_right_after_fill'):.0f} B | | | |"
        )
        lines.append(
            f"| {shape} | stored / memory_bytes per event | "
            f"{per_event(plain, 'stored_bytes'):.0f} / {per_event(plain, 'memory_bytes'):.0f} B | "
            f"{per_event(packed, 'stored_bytes'):.0f} / {per_event(packed, 'memory_bytes'):.0f} B"
            " | | | |"
        )
        for label in ("append", "extend"):
            a = r[label]
            met = a["wall_ratio"] <= TARGETS["append"]
            lines.append(
                f"| {shape} | EventRing.{label}{' (1,000)' if label == 'extend' else ''}, wall | "
                f"{a['plain_rate']:,.0f} ev/s | {a['packed_rate']:,.0f} ev/s | "
                f"{a['wall_ratio']:.2f}x time | <= 1.2x | {'yes' if met else 'no'} |"
            )
            lines.append(
                f"| {shape} | EventRing.{label}, appending thread's CPU | | | "
                f"{a['cpu_ratio']:.2f}x | | |"
            )
            lines.append(
                f"| {shape} | EventRing.{label}, process CPU until compressed "
                f"(compressor {a['compressor_us_per_event']:.2f} us/event) | | | "
                f"{a['process_cpu_ratio']:.2f}x | | |"
            )
        for key in ("query warm", "query warm raw", "query cold", "query cold raw"):
            q = r[key]
            target = key == "query warm" or key == "query cold"
            met = ("yes" if q["ratio"] <= TARGETS["query"] else "no") if target else ""
            lines.append(
                f"| {shape} | {key}: one stream, newest 50 | {q['plain_us']:.0f} us | "
                f"{q['packed_us']:.0f} us | {q['ratio']:.2f}x time | "
                f"{'<= 2x' if target else ''} | {met} |"
            )
    return "\n".join(lines)


def section(pairs: int = PAIRS) -> str:
    """The ``RESULTS.md`` section (run by ``report.py``): every shape, this run's figures."""
    started = time.perf_counter()
    results = [run_shape(shape, pairs) for shape in SHAPES]
    return "\n".join(
        [
            "## Compressed history (`EventRing(compress=True)`, issue 12 part 3)",
            "",
            f"Generated by `python benches/compression.py` (also run by `report.py`): "
            f"{EVENTS:,} held events, compressed and uncompressed rings alternating in "
            f"{pairs} pairs (median ratio), memory in fresh processes; "
            f"{time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.1f}.",
            "",
            table(results),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=PAIRS)
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--out", help="also write the table and the raw figures (JSON) here")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        path, kind = args.memory_child
        print(json.dumps(memory_here(path, kind)))
        return
    if args.pairs < 5:
        parser.error("--pairs must be at least 5")
    started = time.perf_counter()
    results = [run_shape(shape, args.pairs) for shape in args.shapes.split(",")]
    text = table(results)
    header = (
        f"Compressed vs uncompressed EventRing, {EVENTS:,} held events, {args.pairs} pairs, "
        f"median ratio, {time.perf_counter() - started:.0f} s, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f}."
    )
    print(header + "\n\n" + text)
    if args.out:
        with open(args.out, "w") as out:
            out.write(header + "\n\n" + text + "\n\n```json\n")
            out.write(json.dumps(results, indent=1, default=str) + "\n```\n")


if __name__ == "__main__":
    main()
