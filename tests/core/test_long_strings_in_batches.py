"""Batches written in chunks (over 2 MiB) leave their strings of 4 KiB or more out while a
chunk is encoded, and a helper thread escapes them (rust/python/chunked.rs): the file must hold
exactly the bytes one-at-a-time appends write, wherever the long strings are, and an event
that only its escapes take over max_event_bytes must be refused with its whole batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opencode_addons import JsonlStore

LONG_TEXTS = [
    'def f(x):\n\treturn "x" * 2\n' * 200,  # an escape every few bytes
    "plain words and no escapes " * 200,
    'ünïcødé 文字 🎉 "q" \\ ' * 300,  # not ASCII: its UTF-8 comes from the C API
    "".join(chr(c) for c in range(32)) * 150,  # every control byte, most as \u00XX
    "x" * 4095,  # one byte under the length left out
    "y" * 4096,
]


def tool_event(n: int) -> dict[str, Any]:
    text = LONG_TEXTS[n % len(LONG_TEXTS)]
    return {
        "type": "tool",
        "output": text,  # a long string at the top, with header keys after it
        "stream_id": f"s{n % 3}",
        "id": f"e{n}",
        "timestamp": 1_700_000_000_000 + n,
        "payload": {
            "parts": [text[::-1], {"nested": text.upper()}, ("tuple", text)],
            "n": n,
            "last": text,
        },
        "actor": "agent",
    }


def test_a_batch_with_long_strings_writes_the_bytes_appends_write(tmp_path: Path) -> None:
    events = [tool_event(n) for n in range(150)]  # about 4 MB: the head and 6 chunks
    batched, single = tmp_path / "batched.jsonl", tmp_path / "single.jsonl"
    with JsonlStore(batched) as store:
        assert store.extend(events, return_events=False) == range(1, 151)
    with JsonlStore(single) as store:
        for event in events:
            store.append(event)
    assert batched.read_bytes() == single.read_bytes()
    lines = batched.read_bytes().split(b"\n")[:-1]
    assert [json.loads(line) for line in lines] == [
        {**event, "payload": {**event["payload"], "parts": list_parts(event)}, "seq": n + 1}
        for n, event in enumerate(events)
    ]
    with JsonlStore(batched) as store:
        held = list(store)
        assert [e["id"] for e in held] == [e["id"] for e in events]
        assert held[77]["output"] == events[77]["output"]
        assert [e["seq"] for e in store.query(stream_id="s1")] == list(range(2, 151, 3))


def list_parts(event: dict[str, Any]) -> list[Any]:
    """The parts as JSON gives them back (the tuple as a list)."""
    parts = event["payload"]["parts"]
    return [parts[0], parts[1], list(parts[2])]


def test_the_cache_answers_as_the_file_does_after_a_batch_with_long_strings(
    tmp_path: Path,
) -> None:
    events = [tool_event(n) for n in range(120)]
    with JsonlStore(tmp_path / "events.jsonl") as store:
        returned = store.extend(events)
        assert [e["seq"] for e in returned] == list(range(1, 121))
        held = list(store)
        assert [e["output"] for e in held] == [e["output"] for e in events]
        assert [e["payload"]["last"] for e in held] == [e["payload"]["last"] for e in events]
        newest = store.query(type="tool", stream_id="s2", limit=3, newest_first=True)
        assert [e["seq"] for e in newest] == [120, 117, 114]


def test_an_event_its_escapes_take_over_the_limit_is_refused_with_its_batch(
    tmp_path: Path,
) -> None:
    # Each long string is at least its own length escaped, so the event looks within the limit
    # (4 x 30,002 bytes of 200,000) until its quotes are escaped (4 x 60,002).
    quotes = '"' * 30_000
    bad = {"type": "tool", "payload": {"a": quotes, "b": quotes, "c": quotes, "d": quotes}}
    events = [tool_event(n) for n in range(100)]  # the bad one is past the 2 MiB head
    events[90] = bad
    path = tmp_path / "events.jsonl"
    with JsonlStore(path, max_event_bytes=200_000) as store:
        with pytest.raises(ValueError) as refused:
            store.extend(events)
        message = str(refused.value)
        assert message.startswith("event 90: ")
        assert "over the max_event_bytes limit of 200000 bytes" in message
        assert len(store) == 0
        with pytest.raises(ValueError, match="over the max_event_bytes limit"):
            store.append(bad)
        assert store.extend(events[:3], return_events=False) == range(1, 4)
    lines = path.read_bytes().split(b"\n")[:-1]
    assert [json.loads(line)["id"] for line in lines] == ["e0", "e1", "e2"]
