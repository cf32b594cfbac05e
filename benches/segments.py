"""Segment benchmarks: appends with rotation and retention vs without (on every event shape),
opening a store of many sealed segments vs one segment with the same newest events, and what
compression costs.

Paired rounds: each round runs the baseline and the contender back to back (alternating which
goes first) on fresh files, and the figure is the median of the per-round ratios, so the noise
of a shared machine hits both sides of each ratio alike.

    python benches/segments.py            # prints the rows (report.py includes them)
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import shapes
from events import iter_events
from opencode_addons import JsonlStore, file_stats

PAIRS = 5
APPEND_EVENTS = 100_000
# Small segments so that 100,000 events (~53 MB) seal a dozen and retention drops most of them.
SMALL_SEGMENTS: dict[str, Any] = {
    "max_event_bytes": 1 << 16,
    "max_segment_bytes": 4 << 20,
    "max_disk_bytes": 16 << 20,
}
# Rotation on the other event shapes: about as many bytes as the benchmark events' 100,000.
ROTATION_BYTES = 50 << 20
OPEN_CACHE = 50_000
OPEN_SEALED_BYTES = 1 << 30
OPEN_SEGMENT_BYTES = 64 << 20
BATCH = 1_000

Event = dict[str, Any]


def paired(baseline: Callable[[], float], contender: Callable[[], float]) -> tuple[float, ...]:
    """(median ratio contender/baseline of the timings, median baseline s, median contender s)."""
    ratios, base_times, times = [], [], []
    for round_no in range(PAIRS):
        if round_no % 2 == 0:
            base, other = baseline(), contender()
        else:
            other, base = contender(), baseline()
        ratios.append(other / base)
        base_times.append(base)
        times.append(other)
    return statistics.median(ratios), statistics.median(base_times), statistics.median(times)


def append_seconds(events: Sequence[Event], **options: Any) -> float:
    """Time to append every event one by one (opening and closing untimed)."""
    with tempfile.TemporaryDirectory(prefix="oa-seg-") as directory:
        store = JsonlStore(os.path.join(directory, "events.jsonl"), **options)
        try:
            append = store.append
            started = time.perf_counter()
            for event in events:
                append(event)
            return time.perf_counter() - started
        finally:
            store.close()


def compression_run(events: Sequence[Event]) -> dict[str, float]:
    """Appends with compress_sealed on: the keeper's compression counters, read before close."""
    with tempfile.TemporaryDirectory(prefix="oa-seg-") as directory:
        store = JsonlStore(
            os.path.join(directory, "events.jsonl"),
            compress_sealed=True,
            **{**SMALL_SEGMENTS, "max_disk_bytes": None},
        )
        for start in range(0, len(events), BATCH):
            store.extend(events[start : start + BATCH])
        # Sealing waits for the keeper, so all but the last sealed segment are compressed; a
        # sync does not wait for compression, so read the counters after a short settle.
        deadline = time.monotonic() + 30
        stats = store.stats()
        while (
            stats["segments_compressed"] < stats["segments_sealed"] and time.monotonic() < deadline
        ):
            time.sleep(0.05)
            stats = store.stats()
        store.close()
    mib = stats["compressed_input_bytes"] / 2**20
    return {
        "segments": stats["segments_compressed"],
        "ratio": stats["compressed_input_bytes"] / max(1, stats["compressed_output_bytes"]),
        "ms_per_mib": stats["compress_seconds"] * 1000 / mib if mib else 0.0,
    }


def decode_figures(events: Sequence[Event]) -> tuple[float, float, float]:
    """Reading every segment (``file_stats``) of a compressed store vs the same store plain:
    (time ratio, plain s, extra ms per MiB of sealed JSON decoded), paired rounds."""
    with tempfile.TemporaryDirectory(prefix="oa-seg-decode-") as directory:
        paths = []
        for compress in (False, True):
            path = os.path.join(directory, f"zstd-{compress}", "events.jsonl")
            options = {**SMALL_SEGMENTS, "max_disk_bytes": None}
            with JsonlStore(path, compress_sealed=compress, **options) as store:
                for start in range(0, len(events), BATCH):
                    store.extend(events[start : start + BATCH])
            paths.append(path)
        segments = file_stats(paths[0])["segments"]
        sealed_mib = sum(s["file_bytes"] for s in segments[:-1]) / 2**20

        def reading(path: str) -> Callable[[], float]:
            def run() -> float:
                started = time.perf_counter()
                file_stats(path)
                return time.perf_counter() - started

            return run

        ratio, plain, packed = paired(reading(paths[0]), reading(paths[1]))
    return ratio, plain, (packed - plain) * 1000 / sealed_mib


def build_open_stores(directory: str, events: Sequence[Event]) -> tuple[str, str]:
    """A store of ~1 GiB of sealed 64 MiB segments, and one file with its newest events."""
    many = os.path.join(directory, "many", "events.jsonl")
    store = JsonlStore(
        many,
        max_cache_size=1,
        max_segment_bytes=OPEN_SEGMENT_BYTES,
        max_disk_bytes=None,
        durability="none",
    )
    written = 0
    while written < OPEN_SEALED_BYTES + OPEN_SEGMENT_BYTES // 2:
        for start in range(0, len(events), BATCH):
            store.extend(events[start : start + BATCH])
        written = store.stats()["disk_bytes"]
    store.close()
    one = os.path.join(directory, "one", "events.jsonl")
    newest = JsonlStore(many, max_cache_size=OPEN_CACHE, max_disk_bytes=None).to_list()
    with JsonlStore(one, max_cache_size=1, durability="none") as single:
        for start in range(0, len(newest), BATCH):
            single.extend(
                [{k: v for k, v in e.items() if k != "seq"} for e in newest[start : start + BATCH]]
            )
    return many, one


def open_seconds(path: str) -> float:
    started = time.perf_counter()
    store = JsonlStore(path, max_cache_size=OPEN_CACHE, max_disk_bytes=None)
    seconds = time.perf_counter() - started
    assert len(store) == OPEN_CACHE
    store.close()
    return seconds


Row = tuple[str, str, str, float, str, str, Optional[bool]]


def rotation_row(case: str, events: Sequence[Event], **segments: Any) -> Row:
    """Appends with ``segments`` (rotation and retention) against one unsealed segment."""
    ratio, base, other = paired(
        lambda: append_seconds(events), lambda: append_seconds(events, **segments)
    )
    speed = 1 / ratio
    return (
        case,
        "JsonlStore.append (flush)",
        f"{len(events) / base:,.0f} -> {len(events) / other:,.0f} ev/s",
        speed,
        "same, one 64 MiB segment",
        ">= 0.9x",
        speed >= 0.9,
    )


def shape_rotation_row(shape: str) -> Row:
    """Rotation's cost on one event shape, about ``ROTATION_BYTES`` of it."""
    sample = shapes.generate(shape, 1_000)
    count = max(1_000, ROTATION_BYTES // int(shapes.describe(sample)["mean_bytes"]))
    # The default event limit: the large shape's events are over SMALL_SEGMENTS' 64 KiB.
    rotating = {k: v for k, v in SMALL_SEGMENTS.items() if k != "max_event_bytes"}
    case = f"appends with rotation + retention, {shape} events ({count:,})"
    return rotation_row(case, shapes.generate(shape, count), **rotating)


def rows() -> list[Row]:
    """(case, contender, figure, ratio, versus, target, met) rows for report.py."""
    events = list(iter_events(APPEND_EVENTS))
    case = "appends with rotation + retention (4 MiB segments, 16 MiB budget)"
    out = [rotation_row(case, events, **SMALL_SEGMENTS)]
    out += [shape_rotation_row(shape) for shape in shapes.SHAPES if shape != "benchmark"]
    ratio, base, other = paired(
        lambda: append_seconds(events, **SMALL_SEGMENTS),
        lambda: append_seconds(events, compress_sealed=True, **SMALL_SEGMENTS),
    )
    out.append(
        (
            "appends with rotation + retention (4 MiB segments, 16 MiB budget)",
            "JsonlStore.append, compress_sealed=True",
            f"{len(events) / base:,.0f} -> {len(events) / other:,.0f} ev/s",
            1 / ratio,
            "same, plain segments",
            "",
            None,
        )
    )
    figures = compression_run(events)
    out.append(
        (
            "compress_sealed (C zstd level 1 via zstd-safe, keeper thread)",
            f"{figures['segments']:.0f} sealed segments of 4 MiB",
            f"{figures['ms_per_mib']:,.1f} ms per sealed MiB",
            figures["ratio"],
            "compression ratio (plain / zstd bytes)",
            "",
            None,
        )
    )
    ratio, plain, extra = decode_figures(events)
    out.append(
        (
            "reading every segment (file_stats), 4 MiB segments",
            "compressed sealed segments",
            f"{plain * 1000:,.0f} ms plain, +{extra:,.1f} ms per sealed MiB decoded",
            ratio,
            "same store, plain segments (time ratio)",
            "",
            None,
        )
    )
    with tempfile.TemporaryDirectory(prefix="oa-seg-open-") as directory:
        many, one = build_open_stores(directory, events)
        ratio, base, other = paired(lambda: open_seconds(one), lambda: open_seconds(many))
    out.append(
        (
            f"open, cache {OPEN_CACHE:,}",
            "1 GiB of sealed 64 MiB segments + active",
            f"{base * 1000:,.0f} -> {other * 1000:,.0f} ms",
            ratio,
            "one segment with the same newest events (time ratio)",
            "<= 2x",
            ratio <= 2,
        )
    )
    return out


if __name__ == "__main__":
    for row in rows():
        print(
            " | ".join(
                "" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v)) for v in row
            )
        )
