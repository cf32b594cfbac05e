"""SIGKILL a writer child mid-run: every acknowledged event survives, exactly once, intact."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from opencode_addons import JsonlStore

HELPERS = Path(__file__).parents[1] / "helpers"
sys.path.insert(0, str(HELPERS))

from crash_writer import make_event  # noqa: E402

WRITER = HELPERS / "crash_writer.py"


def without_seq(e: dict) -> dict:
    return {k: v for k, v in e.items() if k != "seq"}


def run_and_kill(path: Path, durability: str, first: int, threads: int, kill_after: int) -> dict:
    """Runs the writer until it acknowledged ``kill_after`` events, SIGKILLs it, and returns
    {counter: seq} of everything it acknowledged."""
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), durability, str(first), str(threads)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    acked: dict[int, int] = {}
    try:
        assert proc.stdout is not None
        while len(acked) < kill_after:
            line = proc.stdout.readline()
            if not line:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                pytest.fail(f"writer exited early (rc={proc.wait()}): {err}")
            if line == b"READY\n":
                continue
            counter, seq = map(int, line.split())
            acked[counter] = seq
        os.kill(proc.pid, signal.SIGKILL)
        # Lines fully printed before the kill are acknowledged too.
        rest = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    for line in rest.split(b"\n"):
        parts = line.split()
        if len(parts) == 2 and line != b"READY":
            acked[int(parts[0])] = int(parts[1])
    return acked


def check_file(path: Path) -> dict[int, dict]:
    """Every complete line in the file is valid and unique; returns seq -> event."""
    by_seq: dict[int, dict] = {}
    data = path.read_bytes()
    body = data.rstrip(b"\x00")
    complete = body[: body.rfind(b"\n") + 1]
    seqs = []
    for raw in complete.split(b"\n")[:-1]:
        raw = raw.lstrip(b"\x00")
        event = json.loads(raw)
        seqs.append(event["seq"])
        by_seq[event["seq"]] = event
    assert seqs == sorted(set(seqs)), "seq not strictly increasing in the file"
    return by_seq


def verify_round(path: Path, acked: dict[int, int], all_acked: dict[int, int], durability: str):
    with JsonlStore(path, max_cache_size=1_000_000, durability=durability) as store:
        rec = store.recovery
        assert rec["corrupt_lines"] == 0, rec
        assert rec["duplicate_lines"] == 0, rec
        # At most one torn line is cut (no line is longer than ~10 KB here).
        assert rec["torn_tail_bytes"] < 12_000, rec
        events = list(store)
        by_seq = {e["seq"]: e for e in events}
        assert len(by_seq) == len(events)
        assert [e["seq"] for e in events] == sorted(by_seq)
        for counter, seq in all_acked.items():
            assert seq in by_seq, f"acknowledged event {counter} (seq {seq}) lost"
            assert without_seq(by_seq[seq]) == make_event(counter)
        # Anything else present is some unacknowledged but complete event, never garbage.
        counters = [e["payload"]["counter"] for e in events if e["type"] != "after.reopen"]
        assert len(counters) == len(set(counters)), "an event is present twice"
        for e in events:
            if e["type"] != "after.reopen":
                assert without_seq(e) == make_event(e["payload"]["counter"])
        assert rec["last_seq"] == events[-1]["seq"]
        # Appends after reopen are intact and on their own lines.
        after = store.extend(
            [{"type": "after.reopen", "payload": {"n": n, "s": "ok"}} for n in range(3)]
        )
        assert [a["seq"] for a in after] == [rec["last_seq"] + 1 + n for n in range(3)]
        single = store.append({"type": "after.reopen", "payload": {"n": 3, "s": "ok"}})
    on_disk = check_file(path)
    for stored in [*after, single]:
        assert on_disk[stored["seq"]] == stored
    for counter, seq in all_acked.items():
        assert without_seq(on_disk[seq]) == make_event(counter)


@pytest.mark.parametrize(
    ("durability", "threads"),
    [("flush", 1), ("flush", 3), ("group", 2)],
)
def test_sigkill_loses_no_acknowledged_event(tmp_path, durability, threads):
    rng = random.Random(f"{durability}-{threads}")
    path = tmp_path / "crash" / "events.jsonl"
    all_acked: dict[int, int] = {}
    rounds = 5 if threads == 1 else 3
    for round_no in range(rounds):
        kill_after = rng.randint(200, 3000)
        acked = run_and_kill(path, durability, round_no * 100_000_000, threads, kill_after)
        assert len(acked) >= kill_after
        assert len(set(acked.values())) == len(acked), "two events acknowledged with one seq"
        all_acked.update(acked)
        verify_round(path, acked, all_acked, durability)
