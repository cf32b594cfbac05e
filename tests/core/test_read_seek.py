"""read_events(after_seq=N) seeks into the file where N falls (reading it backwards from its end)
instead of scanning it from the top: property test that it returns exactly what a full scan
filtered in Python returns, for stores of several segments with damaged tails, corrupt lines,
NUL runs, snapshot lines, duplicated lines and lines without a seq."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opencode_addons import JsonlStore, read_events


def event_text(number: int, salt: int) -> str:
    body = {
        "type": ("a", "b", "c")[(number + salt) % 3],
        "stream_id": f"s{salt % 2}",
        "timestamp": 1_700_000_000_000 + number,
        "payload": {"n": number, "salt": salt, "pad": "p" * (salt % 5)},
    }
    return json.dumps(body, separators=(",", ":"))


def with_seq(text: str, seq: int) -> bytes:
    return text[:-1].encode() + b',"seq":%d}' % seq


# What a segment's line can be, as drawn: ("event", gap, salt) an event line whose seq is `gap`
# above the last one, ("noseq", salt) an event without a seq (a reference file's line),
# ("dup",) the previous line again, ("corrupt", bytes) a line that is not an event,
# ("nuls", k) k NULs before the next line, ("midseq", gap, salt) an event whose seq is not its
# last member.
ITEM = st.one_of(
    st.tuples(st.just("event"), st.integers(1, 3), st.integers(0, 9)),
    st.tuples(st.just("event"), st.integers(1, 3), st.integers(0, 9)),
    st.tuples(st.just("event"), st.integers(1, 3), st.integers(0, 9)),
    st.tuples(st.just("noseq"), st.integers(0, 9)),
    st.tuples(st.just("dup")),
    st.tuples(
        st.just("corrupt"),
        st.sampled_from(
            [
                b"not json",
                b"",
                b"\0\0\0",
                b'{"kind":"no type","seq":3}',
                b'{"type":"bad \xc3\x28","seq":2}',
                b'{"type":"torn","seq":1',
                b'xx,"seq":1}',
                b'{"carried":{"type":"x"}}',
            ]
        ),
    ),
    st.tuples(st.just("nuls"), st.integers(1, 4)),
    st.tuples(st.just("midseq"), st.integers(1, 3), st.integers(0, 9)),
)
TAIL = st.sampled_from(["none", "torn", "zeros", "unterminated", "torn+zeros"])


@dataclass
class Segment:
    items: list[Any]
    snapshot: bool
    tail: str


SEGMENT = st.builds(Segment, st.lists(ITEM, min_size=0, max_size=25), st.booleans(), TAIL)


def build_store(directory: Path, segments: list[Segment]) -> Path:
    """Writes the segments as a store (sealed ones named by their first event's seq, as the full
    scan numbers it), the last one as the active file."""
    running = 0
    files: list[tuple[Optional[int], bytes]] = []
    for index, segment in enumerate(segments):
        lines: list[bytes] = []
        first: Optional[int] = None
        pending_nuls = b""
        if segment.snapshot:
            lines.append(b'{"segment":{"first_seq":%d,"carried":1,"timestamp":1}}' % (running + 1))
            carried = with_seq(event_text(running, 0), max(running, 1))
            lines.append(b'{"carried":' + carried + b"}")
        for item in segment.items:
            kind = item[0]
            if kind == "noseq" and index > 0:
                # Lines without a seq only in the oldest file: a newest-first read numbers those of
                # a later file from that file's name (or from 1 in the active file), which a full
                # scan does not; that is not the seek's doing (main reads them so too).
                kind, item = "event", ("event", 1, item[1])
            if kind == "nuls":
                pending_nuls += b"\0" * item[1]
                continue
            if kind == "event":
                running += item[1]
                line = with_seq(event_text(running, item[2]), running)
            elif kind == "midseq":
                running += item[1]
                text = event_text(running, item[2])
                line = b'{"seq":%d,' % running + text[1:].encode()
            elif kind == "noseq":
                running += 1
                line = event_text(running, item[1]).encode()
            elif kind == "dup":
                if not lines:
                    continue
                line = lines[-1].lstrip(b"\0")
                if b'"seq":' not in line and b'"type"' in line:
                    running += 1  # a line without a seq is numbered again, not a duplicate
            else:
                line = item[1]
            if kind in ("event", "midseq", "noseq") and first is None:
                first = running
            lines.append(pending_nuls + line)
            pending_nuls = b""
        data = b"".join(line + b"\n" for line in lines) + pending_nuls
        if segment.tail in ("torn", "torn+zeros"):
            data += b'{"type":"torn","pay'
        if segment.tail == "unterminated":
            running += 1
            data += with_seq(event_text(running, 1), running)
            first = running if first is None else first
        if segment.tail in ("zeros", "torn+zeros"):
            data += b"\0" * 300
        files.append((first, data))
    path = directory / "events.jsonl"
    for first, data in files[:-1]:
        if first is None:
            continue  # a sealed segment without events is never kept by a store
        (directory / f"events_{first:020d}.jsonl").write_bytes(data)
    path.write_bytes(files[-1][1])
    return path


def seq_of(line: bytes) -> int:
    return int(json.loads(line)["seq"])


def expected(
    everything: list[bytes],
    after: int,
    limit: Optional[int],
    newest_first: bool,
    type_: Optional[str],
) -> list[bytes]:
    kept = [
        line
        for line in everything
        if seq_of(line) > after and (type_ is None or json.loads(line)["type"] == type_)
    ]
    if newest_first:
        kept.reverse()
    return kept if limit is None else kept[:limit]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    segments=st.lists(SEGMENT, min_size=1, max_size=4),
    data=st.data(),
)
def test_seeking_reads_what_a_full_scan_reads(segments: list[Segment], data: Any) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = build_store(Path(directory), segments)
        everything = read_events(path, raw=True)
        top = max((seq_of(line) for line in everything), default=0)
        afters = data.draw(
            st.lists(
                st.one_of(st.integers(0, top + 2), st.integers(max(0, top - 4), top + 1)),
                min_size=1,
                max_size=6,
            )
        )
        for after in afters:
            limit = data.draw(st.one_of(st.none(), st.integers(0, 5)))
            newest_first = data.draw(st.booleans())
            type_ = data.draw(st.one_of(st.none(), st.sampled_from(["a", "b"])))
            filters: dict[str, Any] = {"limit": limit, "newest_first": newest_first}
            if type_ is not None:
                filters["type"] = type_
            want = expected(everything, after, limit, newest_first, type_)
            got = read_events(path, after_seq=after, raw=True, **filters)
            assert got == want, (after, filters)
            parsed = read_events(path, after_seq=after, **filters)
            assert parsed == [json.loads(line) for line in want]


@pytest.mark.parametrize("max_segment_bytes", [4096, 1 << 20])
def test_a_store_written_by_jsonlstore_is_read_alike_from_every_seq(
    tmp_path: Path, max_segment_bytes: int
) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlStore(
        path, max_disk_bytes=None, max_event_bytes=1000, max_segment_bytes=max_segment_bytes
    ) as store:
        for n in range(300):
            store.append({"type": "abc"[n % 3], "stream_id": f"s{n % 4}", "payload": "x" * n})
        store.sync()
        # Read while the writer holds the file open (its zero tail is on disk).
        everything = read_events(path, raw=True)
        assert [seq_of(line) for line in everything] == list(range(1, 301))
        for after in range(0, 302, 7):
            assert read_events(path, after_seq=after, raw=True) == everything[after:]
            assert read_events(path, after_seq=after, raw=True, limit=3) == everything[after:][:3]
            newest = read_events(path, after_seq=after, raw=True, newest_first=True, limit=4)
            assert newest == everything[after:][::-1][:4]
    assert read_events(path, after_seq=290, raw=True) == everything[290:]
