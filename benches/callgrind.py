"""Instruction counts per appended event, per shape, under ``valgrind --tool=callgrind``.

Timings on a shared machine drift by tens of percent; instruction counts do not. For each shape
the same events (generated once outside valgrind, written to a file, loaded by the run) are
appended by each target in one interpreter under callgrind. Only the append loops are counted
(see ``LOOP_FUNCTION``), each on its own, so Ir/event is the target's cost per event including
the interpreter's call to it, and nothing else.

Usage:
    python benches/callgrind.py [--top=N] [SHAPE ...]   # table of Ir/event (needs valgrind)
    python benches/callgrind.py --run FILE              # what runs under valgrind (internal)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

import orjson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Events per shape under valgrind (large events are ~40 KiB each).
COUNTS = {
    "benchmark": 2_000,
    "short_strings": 2_000,
    "opencode": 2_000,
    "tiny": 2_000,
    "large": 200,
}
TARGETS = (
    "orjson.dumps",
    "EventRing.append",
    "JsonlStore.append",
    "JsonlStore.extend",
    "DurableStream.append",
)
BATCH = 1_000
# Only what runs inside this C function is counted: each target's loop is
# ``deque(map(call, items), maxlen=0)``, and a profile is dumped when it returns, so each loop
# gets its own count and nothing else (start-up, imports, loading, opening, closing) is counted.
LOOP_FUNCTION = "deque_extend"


def _targets(directory: str) -> list[tuple[str, Callable[[Any], Any], bool, Callable[[], None]]]:
    """(name, call, takes batches, close) for every target."""
    from opencode_addons import EventRing, JsonlStore
    from opencode_addons.durable_stream import DurableStream

    def store(name: str) -> Any:
        return JsonlStore(
            os.path.join(directory, name),
            durability="none",
            max_cache_size=50_000,
            history_size=100_000,
        )

    ring = EventRing(100_000)
    single, batched = store("single.jsonl"), store("batched.jsonl")
    stream = DurableStream(os.path.join(directory, "stream.jsonl"), durability="none")
    return [
        ("orjson.dumps", orjson.dumps, False, lambda: None),
        ("EventRing.append", ring.append, False, lambda: None),
        ("JsonlStore.append", single.append, False, single.close),
        ("JsonlStore.extend", batched.extend, True, batched.close),
        ("DurableStream.append", stream.append, False, stream.shutdown),
    ]


def run(events_file: str) -> None:
    """Load the events, then run every target's loop over them (under valgrind)."""
    from collections import deque

    with open(events_file, "rb") as handle:
        events = [orjson.loads(line) for line in handle]
    batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
    with tempfile.TemporaryDirectory(prefix="oa-callgrind-") as directory:
        for _name, call, batch, close in _targets(directory):
            deque(map(call, batches if batch else events), maxlen=0)
            close()


def _total_ir(out_file: str) -> int:
    with open(out_file) as handle:
        for line in handle:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {out_file}")


def available() -> bool:
    return shutil.which("valgrind") is not None


def _annotate(out_file: str, inclusive: bool) -> list[tuple[str, int]]:
    """(function, Ir) per function of a profile, as callgrind_annotate lists them."""
    annotate = shutil.which("callgrind_annotate")
    if annotate is None:
        return []
    command = [annotate, "--threshold=100", f"--inclusive={'yes' if inclusive else 'no'}", out_file]
    text = subprocess.run(command, capture_output=True, text=True, check=False).stdout
    found = []
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) != 2 or not parts[0].replace(",", "").isdigit():
            continue
        ir, where = int(parts[0].replace(",", "")), parts[1]
        where = where.split(" [", 1)[0]
        # "file:function" (the function may itself contain "::").
        name = where.split(":", 1)[1] if ":" in where.split("::", 1)[0] else where
        found.append((name.strip(), ir))
    return [f for f in found if "PROGRAM TOTALS" not in f[0]]


def _top_functions(out_file: str, count: int) -> list[tuple[str, int]]:
    """The functions with the most instructions of their own."""
    total = _total_ir(out_file)
    # Callers of the loop show the whole count: they are not where it is spent.
    return [f for f in _annotate(out_file, False) if f[1] < total][:count]


# Where an append's instructions go, by the functions that do each part: a bucket is a sum of
# groups, a group counts the largest inclusive count among its functions (they nest). What no
# bucket covers is the call itself: argument parsing, locks, the interpreter.
BUCKETS: dict[str, tuple[tuple[str, ...], ...]] = {
    "encoding": (("encode::encode_event", "encode::encode_batch"),),
    "ring": (("ring::Ring::push", "jsonl::Store::hold"),),
    "file": (("log::MappedLog::append",),),
    "returned dicts": (("store::stored_copy",), ("dict_dealloc", "list_dealloc")),
}


def buckets(out_file: str) -> dict[str, float]:
    """Ir of each bucket in a profile, and the rest under "call and the rest"."""
    rows = _annotate(out_file, True)
    total = _total_ir(out_file)
    result: dict[str, float] = {}
    for bucket, groups in BUCKETS.items():
        result[bucket] = float(
            sum(
                max(
                    (ir for name, ir in rows if any(n in name for n in group) and ir < total),
                    default=0,
                )
                for group in groups
            )
        )
    result["call and the rest"] = max(0.0, total - sum(result.values()))
    return result


@dataclass
class Profile:
    """Ir per event of each target, where they go (by bucket, for the store's appends) and
    (if asked) each target's costliest functions."""

    per_event: dict[str, float]
    buckets: dict[str, dict[str, float]]
    functions: dict[str, list[tuple[str, float]]]


def instructions(events: list[dict[str, Any]], top: int = 0) -> Profile:
    """Run every target over ``events`` under callgrind (see the module docstring)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("valgrind is not installed")
    per_event: dict[str, float] = {}
    where: dict[str, dict[str, float]] = {}
    functions: dict[str, list[tuple[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="oa-callgrind-") as directory:
        events_file = os.path.join(directory, "events.jsonl")
        with open(events_file, "wb") as handle:
            handle.write(
                b"".join(orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in events)
            )
        out_file = os.path.join(directory, "callgrind.out")
        subprocess.run(
            [
                valgrind,
                "--tool=callgrind",
                f"--callgrind-out-file={out_file}",
                "--collect-atstart=no",
                f"--toggle-collect={LOOP_FUNCTION}",
                f"--dump-after={LOOP_FUNCTION}",
                sys.executable,
                os.path.abspath(__file__),
                "--run",
                events_file,
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        dumps = sorted(
            (f for f in os.listdir(directory) if f.startswith("callgrind.out.")),
            key=lambda f: int(f.rsplit(".", 1)[1]),
        )
        counted = [os.path.join(directory, f) for f in dumps]
        counted = [f for f in counted if _total_ir(f) > 0]
        if len(counted) != len(TARGETS):
            raise RuntimeError(f"expected {len(TARGETS)} profiles, got {len(counted)}")
        for name, out in zip(TARGETS, counted):
            per_event[name] = _total_ir(out) / len(events)
            if name.startswith("JsonlStore"):
                where[name] = {k: v / len(events) for k, v in buckets(out).items()}
            if top:
                functions[name] = [
                    (function, ir / len(events)) for function, ir in _top_functions(out, top)
                ]
    return Profile(per_event, where, functions)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--run":
        run(argv[1])
        return 0
    from shapes import SHAPES, generate

    names = list(argv)
    top = 0
    if names and names[0].startswith("--top="):
        top = int(names.pop(0).split("=", 1)[1])
    names = names or list(SHAPES)
    print("| shape | " + " | ".join(TARGETS) + " |")
    print("|---|" + "---:|" * len(TARGETS))
    profiles = {}
    for shape in names:
        profiles[shape] = instructions(generate(shape, COUNTS[shape]), top)
        cells = " | ".join(f"{profiles[shape].per_event[t]:,.0f}" for t in TARGETS)
        print(f"| {shape} | {cells} |", flush=True)
    for shape, profile in profiles.items():
        for target, where in profile.buckets.items():
            parts = ", ".join(f"{k} {v:,.0f}" for k, v in where.items())
            print(f"{shape} / {target}: {parts}")
        for target, rows in profile.functions.items():
            print(f"\n{shape} / {target}:")
            for function, ir in rows:
                print(f"  {ir:10,.0f}  {function}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
