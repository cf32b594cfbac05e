"""The encoder's fast paths write exactly the bytes json.dumps writes.

The encoder copies cached keys by object, reads dict entries and small ints from CPython's
layout, and escapes strings chunk by chunk (long ones with byte shuffles). Whatever path a value
takes, the stored line must be ``json.dumps(event, ensure_ascii=False, separators=(",", ":"))``
with ``seq`` last, and the event read back must equal the one appended.
"""

from __future__ import annotations

import gc
import json
from collections import OrderedDict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opencode_addons import EventRing, JsonlStore

KEY_ALPHABET = st.sampled_from(
    ["a", "b", "type", "payload", "é", "\n", '"', "\\", "\x01", "\x1f", "~", " ", "✓", "😀"]
)
keys = st.one_of(
    st.sampled_from(["type", "id", "text", "payload", "tool", "input", "metadata", "k" * 29]),
    st.lists(KEY_ALPHABET, max_size=40).map("".join),
)
texts = st.one_of(
    st.text(max_size=80),
    st.lists(KEY_ALPHABET, max_size=300).map("".join),
    # 512 bytes and more: escaped with byte shuffles where the CPU has them (shuffle_escape.rs).
    st.lists(KEY_ALPHABET, min_size=300, max_size=3000).map("".join),
    st.text(min_size=520, max_size=2000),
)
ints = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.sampled_from(
        [0, 1, -1, 2**30 - 1, 2**30, -(2**30), 2**60 - 1, -(2**60 - 1), 2**60, 2**62, -(2**63)]
    ),
)
scalars = st.one_of(st.none(), st.booleans(), ints, texts)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=5),
    ),
    max_leaves=12,
)
# With its own id and timestamp, so the line holds nothing the store generated.
events = st.fixed_dictionaries(
    {
        "type": st.text(min_size=1, max_size=20),
        "id": st.text(max_size=12),
        "timestamp": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    },
    optional={"stream_id": st.text(max_size=10), "payload": values, "actor": st.none()},
)


def line_of(event: dict, seq: int) -> bytes:
    body = {k: v for k, v in event.items() if k != "seq"}
    body["seq"] = seq
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=events)
def test_lines_are_what_json_dumps_writes(tmp_path_factory, event):
    path = tmp_path_factory.mktemp("bytes") / "events.jsonl"
    with JsonlStore(path, durability="none") as store:
        stored = store.append(event)
        assert store[-1] == stored == {**event, "seq": stored["seq"]}
        # The same event again: its keys now come from the key cache.
        again = store.append(event)
        assert store[-1] == again
    # (Read once closed: an open store's file is allocated ahead, zeros past the data.)
    assert path.read_bytes() == line_of(event, stored["seq"]) + line_of(event, again["seq"])


def test_dicts_with_deleted_entries_keep_their_order(tmp_path):
    payload = {f"k{i}": i for i in range(20)}
    for i in range(0, 20, 3):
        del payload[f"k{i}"]
    payload["late"] = "x"
    event = {"type": "t", "id": "a", "timestamp": 1, "payload": payload}
    with JsonlStore(tmp_path / "e.jsonl", durability="none") as store:
        stored = store.append(event)
    assert (tmp_path / "e.jsonl").read_bytes() == line_of(event, stored["seq"])


def test_other_mappings_and_instance_dicts_take_the_general_path(tmp_path):
    class Holder:
        def __init__(self) -> None:
            self.type = "t"
            self.id = "x"
            self.timestamp = 5

    split = vars(Holder())  # an instance __dict__: a split table in CPython
    ordered = OrderedDict([("type", "o"), ("id", "y"), ("timestamp", 6), ("payload", {"a": 1})])

    class Sub(dict):
        pass

    sub = Sub(type="s", id="z", timestamp=7, payload=Sub(b=[1, 2]))
    path = tmp_path / "e.jsonl"
    with JsonlStore(path, durability="none") as store:
        seqs = [store.append(e)["seq"] for e in (split, ordered, sub)]
    expected = b"".join(line_of(dict(e), s) for e, s in zip((split, ordered, sub), seqs))
    assert path.read_bytes() == expected


def test_many_distinct_and_short_lived_keys(tmp_path):
    """More keys than the cache holds, made and dropped again and again (so freed addresses are
    reused by other strings): every line still spells its own keys."""
    path = tmp_path / "e.jsonl"
    expected = []
    with JsonlStore(path, durability="none") as store:
        for round_ in range(30):
            payload = {f"key_{round_}_{i}_{'x' * (i % 7)}": i for i in range(40)}
            event = {"type": "t", "id": str(round_), "timestamp": round_, "payload": payload}
            expected.append(line_of(event, store.append(event)["seq"]))
            del payload, event
            gc.collect()
    assert path.read_bytes() == b"".join(expected)


def test_str_subclass_keys_and_values(tmp_path):
    class Name(str):
        pass

    event = {"type": Name("t"), "id": "i", "timestamp": 3, Name("payload"): {Name("a"): Name("b")}}
    path = tmp_path / "e.jsonl"
    with JsonlStore(path, durability="none") as store:
        seqs = [store.append(event)["seq"] for _ in range(3)]
    assert path.read_bytes() == b"".join(line_of(event, seq) for seq in seqs)


def test_ints_at_every_digit_boundary(tmp_path):
    numbers = []
    for bits in (0, 1, 29, 30, 31, 59, 60, 61, 62, 63):
        for value in (2**bits - 1, 2**bits, 2**bits + 1):
            numbers += [value, -value]
    numbers = [n for n in numbers if -(2**63) <= n < 2**64]
    event = {"type": "t", "id": "i", "timestamp": 2**40 + 1, "payload": {"n": numbers}}
    path = tmp_path / "e.jsonl"
    with JsonlStore(path, durability="none") as store:
        stored = store.append(event)
    assert path.read_bytes() == line_of(event, stored["seq"])
    assert stored["payload"]["n"] == numbers


def test_ring_and_store_hold_the_same_events(tmp_path):
    ring = EventRing(100)
    with JsonlStore(tmp_path / "e.jsonl", durability="none") as store:
        batch = [
            {"type": "t", "id": str(i), "timestamp": i, "payload": {"s": '\t"é' * i, "i": -i}}
            for i in range(50)
        ]
        ring.extend(batch)
        store.extend(batch)
        assert ring.to_list() == store.to_list()
