"""``read_events(path, after_seq=last - 10)`` on a store whose active segment is about 64 MiB (the
default ``max_segment_bytes``): what a follower (``ship PATH --redis``, ``tail -f``) pays per poll.

``python benches/read_seek_bench.py BASELINE_PYTHONPATH`` builds the store once, then runs paired
rounds: each round times the call in a fresh process importing the baseline build (the
``opencode_addons`` package under ``BASELINE_PYTHONPATH``) and one importing this checkout's,
in alternating order, each the median of ``OCA_SEEK_CALLS`` calls (default 5). Prints each pair
and the median of the per-pair ratios (baseline / this). Also times ``file_stats`` and a
``newest_first`` read (which do not seek) as controls.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent / "python"
TARGET_BYTES = 63 << 20

CHILD = r"""
import json, statistics, sys, time
import opencode_addons as oa
path, calls = sys.argv[1], int(sys.argv[2])
last = oa.file_stats(path)["last_seq"]
def timed(fn):
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
got = oa.read_events(path, after_seq=last - 10, raw=True)
assert len(got) == 10, len(got)
print(json.dumps({
    "module": oa.__file__,
    "after_seq": timed(lambda: oa.read_events(path, after_seq=last - 10, raw=True)),
    "after_seq_limit": timed(
        lambda: oa.read_events(path, after_seq=last - 10, raw=True, limit=500)
    ),
    "file_stats": timed(lambda: oa.file_stats(path)),
    "newest_first": timed(lambda: oa.read_events(path, newest_first=True, limit=10, raw=True)),
}))
"""


def build(path: Path) -> None:
    sys.path.insert(0, str(HERE))
    from opencode_addons import JsonlStore

    payload = "x" * 300
    with JsonlStore(path, max_disk_bytes=None) as store:
        # Bytes of lines (the writer adds id and timestamp; the size on disk runs ahead).
        written = 0
        while written < TARGET_BYTES:
            batch = [
                {"type": "message.part.delta", "stream_id": f"s{i % 8}", "payload": payload}
                for i in range(5000)
            ]
            written += sum(len(json.dumps(e, separators=(",", ":"))) + 75 for e in batch)
            store.extend(batch)
    assert not list(path.parent.glob("events_*")), "the store sealed a segment"


def run(pythonpath: str, path: Path, calls: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(calls)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def main() -> None:
    baseline = sys.argv[1]
    rounds = int(os.environ.get("OCA_SEEK_ROUNDS", "7"))
    calls = int(os.environ.get("OCA_SEEK_CALLS", "5"))
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "events.jsonl"
        build(path)
        print(f"active segment: {path.stat().st_size / 2**20:.1f} MiB, {rounds} paired rounds")
        ratios: dict[str, list[float]] = {}
        for round_ in range(rounds):
            pair = [("baseline", baseline), ("seek", str(HERE))]
            if round_ % 2:
                pair.reverse()
            results = {name: run(where, path, calls) for name, where in pair}
            cells = []
            for key in ("after_seq", "after_seq_limit", "file_stats", "newest_first"):
                old, new = results["baseline"][key], results["seek"][key]
                ratios.setdefault(key, []).append(old / new)
                cells.append(f"{key} {old * 1e3:.2f}/{new * 1e3:.3f} ms")
            print(f"round {round_}: " + ", ".join(cells))
        for key, values in ratios.items():
            print(f"{key}: median ratio baseline/seek {statistics.median(values):.1f}x")


if __name__ == "__main__":
    main()
