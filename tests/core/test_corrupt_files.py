"""Property test: damaged store files open without raising and lose no undamaged line."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opencode_addons import JsonlStore, file_stats, read_events

HUGE = 2 * 1024 * 1024


def make_event(seq: int, huge: bool = False) -> dict:
    return {
        "id": f"ev-{seq}",
        "type": ("a", "b", "c")[seq % 3],
        "stream_id": f"s{seq % 2}",
        "timestamp": 1_700_000_000_000 + seq,
        "payload": {"seq": seq, "text": 'é😀\n"\\' * (seq % 4), "big": "h" * (HUGE if huge else 0)},
    }


def line_for(seq: int, huge: bool = False) -> bytes:
    text = json.dumps(make_event(seq, huge), separators=(",", ":"), ensure_ascii=False)
    return text[:-1].encode() + b',"seq":%d}' % seq


GARBAGE = st.one_of(
    st.binary(max_size=60).map(lambda b: b"x" + b.replace(b"\n", b"")),
    st.just(b""),
    st.just(b"not json at all"),
    st.just(b'{"type":"bad utf8 \xc3\x28 here","seq":1}'),
    st.just(b'{"type":"overlong \xc0\xaf"}'),
    st.just(b"[1,2,3]"),
    st.just(b'{"kind":"no type"}'),
    st.just(b'{"type":5}'),
    st.just(b'{"type":"cut'),
    st.just(b'{"type":"a"} trailing'),
    st.integers(1, 5000).map(lambda n: b"\x00" * n),
    st.integers(1, 50).map(lambda n: b"\x00" * n + b"garbage"),
    st.just(b'{"type":"huge","p":"' + b"z" * HUGE),  # 2 MB, never closed
)


@dataclass
class Plan:
    n: int
    huge_event: int | None  # seq of a valid 2 MB event, if any
    ops: list = field(default_factory=list)
    cut: int | None = None  # bytes cut off the end of the file (1 = only the last newline)
    nul_tail: int = 0


@st.composite
def plans(draw):
    n = draw(st.integers(1, 12))
    huge_event = (
        draw(st.one_of(st.none(), st.integers(1, n))) if draw(st.integers(0, 9)) == 0 else None
    )
    plan = Plan(n=n, huge_event=huge_event)
    # Damage before the last line: (kind, position in the good-line list, argument).
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["garbage", "nul_prefix", "duplicate", "break"]))
        position = draw(st.integers(0, n - 1))
        if kind == "garbage":
            plan.ops.append((kind, position, draw(GARBAGE)))
        elif kind == "nul_prefix":
            plan.ops.append((kind, position, draw(st.integers(1, 100))))
        elif kind == "duplicate":
            plan.ops.append((kind, position, None))
        elif position < n - 1:
            plan.ops.append((kind, position, draw(st.integers(0, 10**6))))
    if draw(st.booleans()):
        plan.cut = draw(st.integers(1, 10**7))  # reduced modulo the last line's length below
    if draw(st.integers(0, 3)) == 0:
        plan.nul_tail = draw(st.integers(1, 70_000))
    return plan


@dataclass
class Damaged:
    data: bytes
    prefix: bytes  # everything before the last line
    kept: dict  # seq -> event expected to be loaded
    corrupt: int
    duplicates: int
    padding: int
    truncated: int
    repaired_tail: bool
    last_line_kept: bool
    torn: bool  # a torn (cut) last line with content was left at the end
    total_lines: int  # newline-terminated lines plus a final unterminated one


def build(plan: Plan) -> Damaged:
    good = {seq: line_for(seq, seq == plan.huge_event) for seq in range(1, plan.n + 1)}
    # Each slot: list of (kind, bytes, seq-or-None). Slot i precedes good line i+1.
    before: dict[int, list] = {i: [] for i in range(plan.n)}
    prefix_nuls = dict.fromkeys(good, 0)
    broken: set[int] = set()
    after_dups: dict[int, int] = {}
    for kind, position, arg in plan.ops:
        seq = position + 1
        if kind == "garbage":
            before[position].append(arg)
        elif kind == "nul_prefix":
            prefix_nuls[seq] += arg
        elif kind == "duplicate" and seq < plan.n:
            after_dups[seq] = after_dups.get(seq, 0) + 1
        elif kind == "break" and seq < plan.n:
            broken.add(seq)
            line = bytearray(good[seq])
            line[arg % len(line)] = 0xFF
            good[seq] = bytes(line)
    lines: list[bytes] = []
    kept: dict[int, dict] = {}
    corrupt = duplicates = padding = 0
    for seq in range(1, plan.n):
        for g in before[seq - 1]:
            lines.append(g)
            corrupt += 1
        lines.append(b"\x00" * prefix_nuls[seq] + good[seq])
        if seq in broken:
            corrupt += 1
        else:
            padding += prefix_nuls[seq]
            kept[seq] = make_event(seq, seq == plan.huge_event)
        for _ in range(after_dups.get(seq, 0)):
            lines.append(good[seq])
            if seq in broken:
                corrupt += 1
            else:
                duplicates += 1
    for g in before[plan.n - 1]:
        lines.append(g)
        corrupt += 1
    prefix = b"".join(line + b"\n" for line in lines)
    last_nuls = prefix_nuls[plan.n]
    last = b"\x00" * last_nuls + good[plan.n] + b"\n"
    repaired = False
    truncated = 0
    last_kept = True
    torn = False
    if plan.cut is not None:
        cut = 1 + (plan.cut - 1) % len(last)
        last = last[: len(last) - cut]
        if cut == 1:
            repaired = True
        else:
            last_kept = False
            # What is left of the line: its NUL prefix (padding), then torn content.
            torn = len(last) > last_nuls
            truncated = max(0, len(last) - last_nuls)
    padding += min(last_nuls, len(last))
    if last_kept:
        kept[plan.n] = make_event(plan.n, plan.n == plan.huge_event)
    padding += plan.nul_tail
    data = prefix + last + b"\x00" * plan.nul_tail
    total_lines = len(lines) + (1 if last_kept or torn else 0)
    return Damaged(
        data=data,
        prefix=prefix + (last + (b"\n" if repaired else b"") if last_kept else b""),
        kept=kept,
        corrupt=corrupt,
        duplicates=duplicates,
        padding=padding,
        truncated=truncated,
        repaired_tail=repaired,
        last_line_kept=last_kept,
        torn=torn,
        total_lines=total_lines,
    )


def without_seq(e: dict) -> dict:
    return {k: v for k, v in e.items() if k != "seq"}


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(plan=plans())
def test_damaged_file_recovers(plan):
    damaged = build(plan)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "damaged.jsonl"
        path.write_bytes(damaged.data)

        # Readers without a lock see the same thing and change nothing.
        stats = file_stats(path)
        read = read_events(path)
        assert path.read_bytes() == damaged.data
        assert {e["seq"]: without_seq(e) for e in read} == damaged.kept
        assert stats["events"] == len(damaged.kept)
        assert stats["corrupt_lines"] == damaged.corrupt
        assert stats["torn_tail_bytes"] == damaged.truncated

        with JsonlStore(path, max_cache_size=1000) as store:
            rec = store.recovery
            loaded = {e["seq"]: without_seq(e) for e in store}
            assert [e["seq"] for e in store] == sorted(loaded)
            assert loaded == damaged.kept, "an undamaged line was lost or altered"
            assert rec["events"] == len(damaged.kept)
            assert rec["corrupt_lines"] == damaged.corrupt
            assert rec["duplicate_lines"] == damaged.duplicates
            assert rec["torn_tail_bytes"] == damaged.truncated
            assert rec["padding_bytes"] == damaged.padding
            assert rec["unterminated_last_line"] is damaged.repaired_tail
            assert rec["last_seq"] == max(damaged.kept, default=0)
            # Every line written is accounted for.
            torn = 1 if damaged.torn else 0
            assert rec["events"] + rec["corrupt_lines"] + rec["duplicate_lines"] + torn == (
                damaged.total_lines
            )
            new = store.append({"type": "after", "payload": "fresh line"})
            assert new["seq"] == rec["last_seq"] + 1

        data = path.read_bytes()
        new_line = json.dumps(new, separators=(",", ":")).encode() + b"\n"
        # The good data is untouched, the torn tail and NUL tail are gone, the new event is on
        # its own line.
        assert data == damaged.prefix + new_line

        with JsonlStore(path, max_cache_size=1000) as again:
            rec2 = again.recovery
            assert rec2["torn_tail_bytes"] == 0
            assert rec2["unterminated_last_line"] is False
            assert rec2["corrupt_lines"] == damaged.corrupt
            assert rec2["events"] == len(damaged.kept) + 1
            assert again[-1] == new


@pytest.mark.parametrize("nul_tail", [0, 4096])
def test_every_truncation_point_of_the_last_line(tmp_path, nul_tail):
    lines = [line_for(seq) + b"\n" for seq in range(1, 4)]
    whole = b"".join(lines)
    last = lines[-1]
    for cut in range(1, len(last) + 1):
        path = tmp_path / f"t{cut}.jsonl"
        path.write_bytes(whole[: len(whole) - cut] + b"\x00" * nul_tail)
        with JsonlStore(path) as store:
            rec = store.recovery
            assert rec["padding_bytes"] == nul_tail
            assert rec["corrupt_lines"] == 0
            if cut == 1:
                assert rec["unterminated_last_line"] is True
                assert rec["torn_tail_bytes"] == 0
                assert [e["seq"] for e in store] == [1, 2, 3]
            else:
                assert rec["unterminated_last_line"] is False
                assert rec["torn_tail_bytes"] == len(last) - cut
                assert [e["seq"] for e in store] == [1, 2]
            new = store.append({"type": "next"})
        data = path.read_bytes()
        kept = whole if cut == 1 else b"".join(lines[:2])
        assert data == kept + json.dumps(new, separators=(",", ":")).encode() + b"\n", cut


def test_only_garbage_file(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_bytes(b'garbage\n\x00\x00\n[1]\n{"no":"type"}\nmore garbage no newline')
    with JsonlStore(path) as store:
        rec = store.recovery
        assert rec["events"] == 0
        assert rec["corrupt_lines"] == 4
        assert rec["torn_tail_bytes"] == len(b"more garbage no newline")
        assert store.append({"type": "first"})["seq"] == 1
    assert path.read_bytes().endswith(b'"seq":1}\n')
    assert path.read_bytes().startswith(b"garbage\n")
