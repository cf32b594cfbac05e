"""EventRing: eviction, byte accounting, indexing, iteration, queries and round-trip fidelity."""

from __future__ import annotations

import json
import math
import random

import pytest
from opencode_addons import EventRing

# Top-level keys held in memory as one byte each (rust/keys.rs): `"type":` is 7 bytes, held as 1.
TOKEN_KEYS = (
    "type",
    "stream_id",
    "correlation_id",
    "actor",
    "timestamp",
    "payload",
    "id",
    "causation_id",
    "metadata",
)


def json_size(event: dict) -> int:
    """The event's compact JSON size without seq: what max_event_bytes limits."""
    body = {k: v for k, v in event.items() if k != "seq"}
    return len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())


def held_size(event: dict) -> int:
    """Bytes the ring holds for ``event``: its compact JSON without seq, known keys tokenized."""
    body = {k: v for k, v in event.items() if k != "seq"}
    size = len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())
    return size - sum(len(key) + 2 for key in TOKEN_KEYS if key in body)


def make_event(i: int) -> dict:
    return {
        "type": f"t{i % 3}",
        "stream_id": f"s{i % 5}",
        "actor": ("user", "system", None)[i % 3],
        "correlation_id": f"c{i % 4}",
        "timestamp": 1_000 + i * 10,
        "id": f"id-{i}",
        "payload": {"i": i, "text": "x" * (i % 17), "nested": [i, {"k": "é\n"}]},
    }


def strip_seq(event: dict) -> dict:
    return {k: v for k, v in event.items() if k != "seq"}


# ---------------------------------------------------------------- construction and eviction


def test_defaults_and_properties():
    ring = EventRing()
    assert ring.capacity == 100_000
    assert ring.max_bytes is None
    assert ring.max_event_bytes == 1 << 20
    assert len(ring) == 0
    assert ring.nbytes == 0
    assert ring.evicted == 0
    assert ring.to_list() == []
    assert list(ring) == []
    assert ring.memory_bytes >= 0


@pytest.mark.parametrize("kwargs", [{"capacity": 0}, {"capacity": -1}, {"max_bytes": 0}])
def test_bad_construction(kwargs):
    with pytest.raises(ValueError):
        EventRing(**kwargs)


def test_append_returns_increasing_seq_and_fills_id_and_timestamp():
    ring = EventRing(10)
    seqs = [ring.append({"type": "a"}) for _ in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    for event, seq in zip(ring, seqs):
        assert event["seq"] == seq
        assert isinstance(event["timestamp"], int)
        assert len(event["id"]) == 26 and event["id"][9] == "_"
        int(event["id"][:9], 36)
        int(event["id"][10:], 16)


def test_eviction_by_count():
    ring = EventRing(10)
    events = [make_event(i) for i in range(25)]
    for i, event in enumerate(events):
        ring.append(event)
        assert len(ring) == min(i + 1, 10)
        assert ring.evicted == max(0, i + 1 - 10)
    assert [e["seq"] for e in ring] == list(range(16, 26))
    assert [strip_seq(e) for e in ring] == events[15:]
    assert ring.nbytes == sum(held_size(e) for e in events[15:])


def test_nbytes_is_exact_held_size():
    ring = EventRing(1000)
    events = [make_event(i) for i in range(100)]
    total = 0
    for event in events:
        ring.append(event)
        total += held_size(event)
        assert ring.nbytes == total
    assert ring.nbytes == sum(held_size(e) for e in ring)


def test_nbytes_counts_generated_id_and_timestamp():
    ring = EventRing(10)
    ring.append({"type": "a", "payload": "é"})
    (stored,) = ring.to_list()
    assert "id" in stored and "timestamp" in stored
    assert ring.nbytes == held_size(stored)


def test_eviction_by_bytes():
    sizes = [held_size(make_event(i)) for i in range(200)]
    limit = 2_000
    ring = EventRing(1000, max_bytes=limit)
    assert ring.max_bytes == limit
    for i in range(200):
        ring.append(make_event(i))
        assert ring.nbytes <= limit
        # What is held is exactly the newest suffix that fits.
        held = [e["seq"] for e in ring]
        assert held == list(range(held[0], i + 2))
        assert ring.nbytes == sum(sizes[s - 1] for s in held)
        # The next older event would not have fitted.
        if held[0] > 1:
            assert ring.nbytes + sizes[held[0] - 2] > limit
        assert ring.evicted == i + 1 - len(ring)


def test_count_and_bytes_together():
    ring = EventRing(5, max_bytes=10_000)
    for i in range(20):
        ring.append(make_event(i))
    assert len(ring) == 5
    assert ring.evicted == 15
    ring2 = EventRing(1000, max_bytes=500)
    for i in range(20):
        ring2.append(make_event(i))
    assert ring2.nbytes <= 500
    assert ring2.evicted == 20 - len(ring2)


def test_event_larger_than_max_bytes_is_refused_and_changes_nothing():
    ring = EventRing(10, max_bytes=200)
    ring.append({"type": "small"})
    before = (ring.to_list(), ring.nbytes, ring.evicted)
    with pytest.raises(ValueError):
        ring.append({"type": "big", "payload": "x" * 500})
    assert (ring.to_list(), ring.nbytes, ring.evicted) == before
    assert ring.append({"type": "next"}) == 2


def test_max_event_bytes():
    ring = EventRing(10, max_event_bytes=100)
    ok = {"type": "a", "id": "x", "timestamp": 1, "p": "y" * 40}
    ring.append(ok)
    with pytest.raises(ValueError, match="max_event_bytes"):
        ring.append({"type": "a", "id": "x", "timestamp": 1, "p": "y" * 100})
    assert len(ring) == 1
    # Exactly at the limit is accepted, one over is not.
    base = {"type": "a", "id": "x", "timestamp": 1, "p": ""}
    pad = 100 - json_size(base)
    ring.append({**base, "p": "z" * pad})
    with pytest.raises(ValueError):
        ring.append({**base, "p": "z" * (pad + 1)})
    assert len(ring) == 2


def test_extend_returns_count_and_is_contiguous():
    ring = EventRing(100)
    ring.append({"type": "first"})
    assert ring.extend([make_event(i) for i in range(10)]) == 10
    assert ring.extend([]) == 0
    assert ring.extend(make_event(i) for i in range(3)) == 3
    assert [e["seq"] for e in ring] == list(range(1, 15))


def test_extend_past_capacity_keeps_newest():
    ring = EventRing(7)
    events = [make_event(i) for i in range(30)]
    assert ring.extend(events) == 30
    assert [strip_seq(e) for e in ring] == events[-7:]
    assert ring.evicted == 23


def test_clear():
    ring = EventRing(5, max_bytes=10_000)
    for i in range(8):
        ring.append(make_event(i))
    ring.clear()
    assert len(ring) == 0
    assert ring.nbytes == 0
    assert ring.to_list() == []
    assert ring.query() == []
    assert ring.query(stream_id="s1") == []
    with pytest.raises(IndexError):
        ring[0]
    seq = ring.append(make_event(100))
    assert seq == 9  # sequence numbers keep increasing across clear()
    assert [e["seq"] for e in ring] == [9]
    assert ring.query(stream_id="s0") == [ring[0]]


# ---------------------------------------------------------------- indexing and iteration


def test_indexing_negative_and_slices():
    ring = EventRing(10)
    events = [make_event(i) for i in range(15)]
    ring.extend(events)
    held = ring.to_list()
    assert [strip_seq(e) for e in held] == events[5:]
    for i in range(-10, 10):
        assert ring[i] == held[i]
    for bad in (10, 11, -11, 10**6, -(10**6)):
        with pytest.raises(IndexError):
            ring[bad]
    for sl in [
        slice(None),
        slice(2, 5),
        slice(-3, None),
        slice(None, None, -1),
        slice(1, 9, 3),
        slice(8, 1, -2),
        slice(20, 30),
        slice(-100, 100),
        slice(5, 5),
    ]:
        assert ring[sl] == held[sl], sl
    with pytest.raises(ValueError):
        ring[::0]
    with pytest.raises(TypeError):
        ring["a"]


def test_empty_ring_index_error():
    ring = EventRing(3)
    for bad in (0, -1):
        with pytest.raises(IndexError):
            ring[bad]
    assert ring[:] == []


def test_iteration_oldest_first_skips_nothing():
    ring = EventRing(1000)
    events = [make_event(i) for i in range(300)]
    ring.extend(events)
    got = list(ring)
    assert [strip_seq(e) for e in got] == events
    assert [e["seq"] for e in got] == list(range(1, 301))
    assert got == ring.to_list()


def test_iteration_not_affected_by_appends():
    ring = EventRing(1000)
    ring.extend(make_event(i) for i in range(50))
    seen = []
    for event in ring:
        seen.append(event["seq"])
        ring.append(make_event(1000 + event["seq"]))
    assert seen == list(range(1, 51))
    assert len(ring) == 100


def test_iteration_with_eviction_during_iteration_yields_oldest_first_originals():
    ring = EventRing(10)
    ring.extend(make_event(i) for i in range(10))
    seen = []
    for event in ring:
        seen.append(event["seq"])
        ring.append(make_event(500))
    # Nothing appended after iteration started is returned; order is strictly increasing.
    assert seen == sorted(seen)
    assert all(1 <= s <= 10 for s in seen)
    assert seen[0] == 1


def test_two_independent_iterators():
    ring = EventRing(20)
    ring.extend(make_event(i) for i in range(5))
    a, b = iter(ring), iter(ring)
    assert next(a)["seq"] == 1
    assert next(a)["seq"] == 2
    assert next(b)["seq"] == 1
    assert [e["seq"] for e in a] == [3, 4, 5]
    assert [e["seq"] for e in b] == [2, 3, 4, 5]


def test_returned_dicts_are_copies():
    ring = EventRing(5)
    ring.append({"type": "a", "payload": {"x": [1]}})
    first = ring[0]
    first["payload"]["x"].append(2)
    first["type"] = "changed"
    assert ring[0]["payload"] == {"x": [1]}
    assert ring[0]["type"] == "a"


def test_caller_mutation_after_append_does_not_change_ring():
    ring = EventRing(5)
    event = {"type": "a", "payload": {"x": [1]}}
    ring.append(event)
    event["payload"]["x"].append(2)
    assert ring[0]["payload"] == {"x": [1]}
    assert "seq" not in event and "id" not in event


# ---------------------------------------------------------------- queries vs a reference filter


def reference_query(
    events: list[dict],
    *,
    stream_id=None,
    type=None,
    actor=None,
    correlation_id=None,
    since=None,
    until=None,
    after_seq=None,
    limit=None,
    newest_first=False,
) -> list[dict]:
    types = None
    if type is not None:
        types = {type} if isinstance(type, str) else set(type)

    def keep(e: dict) -> bool:
        if stream_id is not None and e.get("stream_id") != stream_id:
            return False
        if actor is not None and e.get("actor") != actor:
            return False
        if correlation_id is not None and e.get("correlation_id") != correlation_id:
            return False
        if types is not None and e["type"] not in types:
            return False
        if since is not None and e["timestamp"] < since:
            return False
        if until is not None and e["timestamp"] > until:
            return False
        return not (after_seq is not None and e["seq"] <= after_seq)

    out = [e for e in events if keep(e)]
    if newest_first:
        out.reverse()
    if limit is not None:
        out = out[:limit]
    return out


QUERY_CASES = [
    {},
    {"stream_id": "s1"},
    {"stream_id": "s1", "newest_first": True},
    {"stream_id": "s1", "limit": 3},
    {"stream_id": "s1", "limit": 3, "newest_first": True},
    {"stream_id": "nope"},
    {"stream_id": "nope", "newest_first": True},
    {"type": "t1"},
    {"type": ["t0", "t2"]},
    {"type": ("t0", "missing")},
    {"type": {"t2"}},
    {"type": []},
    {"type": ["missing"]},
    {"type": "t1", "limit": 5, "newest_first": True},
    {"actor": "user"},
    {"actor": "nobody"},
    {"correlation_id": "c2", "stream_id": "s3"},
    {"since": 1_500},
    {"until": 1_500},
    {"since": 1_200, "until": 1_800},
    {"since": 1_210, "until": 1_210},
    {"since": 1_205.5, "until": 1_215.5},
    {"since": 2_000, "until": 1_000},
    {"after_seq": 40},
    {"after_seq": 0},
    {"after_seq": 10**9},
    {"limit": 0},
    {"limit": 0, "newest_first": True},
    {"limit": 7},
    {"limit": 7, "newest_first": True},
    {"limit": 10**9},
    {"stream_id": "s2", "type": ["t0", "t1"], "actor": "system", "limit": 2, "newest_first": True},
    {"stream_id": "s4", "after_seq": 60, "since": 1_000, "until": 1_900},
    {"stream_id": "s0", "type": "t0", "correlation_id": "c0", "newest_first": True},
    {"stream_id": None, "type": None, "actor": None, "limit": None},
]


@pytest.mark.parametrize("filters", QUERY_CASES, ids=[repr(c) for c in QUERY_CASES])
@pytest.mark.parametrize("evict", [False, True], ids=["full", "evicted"])
def test_query_matches_reference(filters, evict):
    capacity = 60 if evict else 1000
    ring = EventRing(capacity)
    events = [make_event(i) for i in range(100)]
    ring.extend(events[:50])
    for e in events[50:]:
        ring.append(e)
    held = ring.to_list()
    assert len(held) == min(100, capacity)
    expected = reference_query(held, **filters)
    assert ring.query(**filters) == expected


def test_query_random_combinations_vs_reference():
    rng = random.Random(1234)
    ring = EventRing(150)
    for _ in range(400):
        ring.append(make_event(rng.randrange(1000)) | {"timestamp": rng.randrange(0, 5000)})
    held = ring.to_list()
    for _ in range(300):
        filters = {}
        if rng.random() < 0.5:
            filters["stream_id"] = rng.choice(["s0", "s1", "s2", "s3", "s4", "zz"])
        if rng.random() < 0.4:
            kinds = rng.sample(["t0", "t1", "t2", "zz"], rng.randint(1, 3))
            filters["type"] = rng.choice([kinds, tuple(kinds), set(kinds), kinds[0]])
        if rng.random() < 0.3:
            filters["actor"] = rng.choice(["user", "system", "zz"])
        if rng.random() < 0.3:
            filters["correlation_id"] = rng.choice(["c0", "c1", "c3"])
        if rng.random() < 0.3:
            filters["since"] = rng.randrange(0, 5000)
        if rng.random() < 0.3:
            filters["until"] = rng.randrange(0, 5000)
        if rng.random() < 0.3:
            filters["after_seq"] = rng.randrange(0, 450)
        if rng.random() < 0.5:
            filters["limit"] = rng.randrange(0, 30)
        filters["newest_first"] = rng.random() < 0.5
        assert ring.query(**filters) == reference_query(held, **filters), filters


def test_query_by_correlation_ids_seen_once_or_repeating():
    """A correlation id is interned only once it repeats; one seen once is held with its record.
    Queries find both kinds exactly, before and after eviction, alone and with other filters."""
    rng = random.Random(77)
    ring = EventRing(120)
    for i in range(600):
        event = make_event(i)
        kind = rng.randrange(4)
        if kind == 0:
            event["correlation_id"] = f"req_{i:06d}_{rng.getrandbits(40):010x}"
        elif kind == 1:
            event["correlation_id"] = f"slow_{i // 150}"
        elif kind == 2:
            event.pop("correlation_id", None)
        if rng.random() < 0.5:
            ring.append(event)
        else:
            ring.extend([event])
        if i % 50 != 49:
            continue
        held = ring.to_list()
        wanted = {e["correlation_id"] for e in held if "correlation_id" in e}
        wanted |= {"req_000000_0000000000", "slow_0", "c1"}
        for correlation_id in sorted(wanted):
            for extra in ({}, {"stream_id": "s1", "newest_first": True, "limit": 2}):
                filters = {"correlation_id": correlation_id, **extra}
                assert ring.query(**filters) == reference_query(held, **filters), filters


def test_query_type_accepts_any_iterable_of_strings():
    ring = EventRing(100)
    ring.extend(make_event(i) for i in range(30))
    expected = ring.query(type=["t0", "t1"])
    assert ring.query(type=iter(["t0", "t1"])) == expected
    assert ring.query(type=(t for t in ("t1", "t0"))) == expected
    assert ring.query(type=frozenset({"t0", "t1"})) == expected


@pytest.mark.parametrize(
    ("filters", "exc"),
    [
        ({"type": b"t0"}, TypeError),
        ({"type": 5}, TypeError),
        ({"type": ["t0", 5]}, TypeError),
        ({"stream_id": 5}, TypeError),
        ({"actor": b"x"}, TypeError),
        ({"since": "soon"}, TypeError),
        ({"since": True}, TypeError),
        ({"until": float("nan")}, ValueError),
        ({"limit": -1}, ValueError),
        ({"limit": 1.5}, TypeError),
        ({"after_seq": -5}, ValueError),
    ],
)
def test_query_bad_arguments(filters, exc):
    ring = EventRing(10)
    ring.append({"type": "t0", "stream_id": "s"})
    with pytest.raises(exc):
        ring.query(**filters)
    assert len(ring) == 1


def test_query_missing_stream_does_not_match_none_filter():
    ring = EventRing(10)
    ring.append({"type": "a", "timestamp": 1})
    ring.append({"type": "a", "stream_id": None, "timestamp": 2})
    ring.append({"type": "a", "stream_id": "s", "timestamp": 3})
    assert [e["timestamp"] for e in ring.query(stream_id="s")] == [3]
    assert [e["timestamp"] for e in ring.query()] == [1, 2, 3]


def test_query_after_heavy_eviction_by_bytes():
    ring = EventRing(10_000, max_bytes=3_000)
    for i in range(500):
        ring.append(make_event(i))
    held = ring.to_list()
    for stream in ["s0", "s1", "s4"]:
        for newest_first in (False, True):
            q = {"stream_id": stream, "newest_first": newest_first}
            assert ring.query(**q) == reference_query(held, **q)


# ---------------------------------------------------------------- round-trip fidelity

ROUND_TRIP_VALUES = [
    "",
    "plain",
    "é ü ß 中文 😀 \U0010ffff",
    'quote " backslash \\ slash /',
    "\b\f\n\r\t",
    "".join(chr(c) for c in range(0x20)) + "\x7f\u2028\u2029",
    "\ud7ff\ue000\ufffd",
    0,
    1,
    -1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    -(2**63),
    2**63,
    2**64 - 1,
    0.1,
    -0.1,
    1e300,
    -1e300,
    1e-300,
    5e-324,
    1.7976931348623157e308,
    2.0**53,
    1e16,
    1.0,
    123456.789,
    True,
    False,
    None,
    [],
    {},
    [1, "a", None, True, 1.5, [], {}],
    {"a": {"b": {"c": [1, [2, [3, {"d": "e"}]]]}}},
    {"": "empty key", "ключ": "значение", 'k"q': 1, "k\n": 2},
]


@pytest.mark.parametrize("value", ROUND_TRIP_VALUES, ids=range(len(ROUND_TRIP_VALUES)))
def test_round_trip(value):
    ring = EventRing(10)
    ring.append({"type": "rt", "value": value})
    got = ring[0]["value"]
    assert got == value
    assert type(got) is type(value)
    assert json.dumps(got) == json.dumps(value)


def test_negative_zero_keeps_sign():
    ring = EventRing(10)
    ring.append({"type": "z", "v": -0.0, "w": 0.0})
    event = ring[0]
    assert math.copysign(1.0, event["v"]) == -1.0
    assert math.copysign(1.0, event["w"]) == 1.0
    assert isinstance(event["v"], float)


def test_tuples_become_lists_and_key_order_is_kept():
    ring = EventRing(10)
    event = {
        "z": 1,
        "type": "t",
        "a": (1, (2, 3)),
        "m": {"y": 1, "b": 2},
        "id": "i",
        "timestamp": 5,
    }
    ring.append(event)
    got = ring[0]
    assert got["a"] == [1, [2, 3]]
    assert list(got) == ["z", "type", "a", "m", "id", "timestamp", "seq"]
    assert list(got["m"]) == ["y", "b"]


def test_caller_id_and_timestamp_kept_and_seq_ignored():
    ring = EventRing(10)
    seq = ring.append({"type": "t", "id": "mine", "timestamp": 42, "seq": 999})
    assert seq == 1
    assert ring[0] == {"type": "t", "id": "mine", "timestamp": 42, "seq": 1}


def test_float_timestamp_kept():
    ring = EventRing(10)
    ring.append({"type": "t", "timestamp": 1500.75})
    assert ring[0]["timestamp"] == 1500.75
    assert len(ring.query(since=1500, until=1501)) == 1


FLOAT_BOUNDS = [
    {"since": 1500.5},
    {"since": 1500.75},
    {"since": 1500.8},
    {"until": 1500.75},
    {"until": 1500.5},
    {"until": 1500},
    {"since": 1500, "until": 1500},
    {"since": -1.5},
    {"until": -1.5},
    {"until": -1.2},
    {"since": -1.2},
]


@pytest.mark.parametrize("bounds", FLOAT_BOUNDS, ids=[repr(b) for b in FLOAT_BOUNDS])
def test_float_timestamps_bounds_are_exact(bounds):
    """since/until are inclusive bounds on the event's timestamp as stored; a float timestamp
    (e.g. time.time() * 1000) must be compared as the number it is, not truncated."""
    ring = EventRing(10)
    for ts in (1500, 1500.75, 1501, -1.5, -1, 0.0):
        ring.append({"type": "t", "timestamp": ts})
    assert ring.query(**bounds) == reference_query(ring.to_list(), **bounds)


def test_mapping_subclasses_and_json_subclasses():
    from collections import OrderedDict, namedtuple
    from enum import IntEnum

    class Color(IntEnum):
        RED = 3

    class MyStr(str):
        pass

    Point = namedtuple("Point", "x y")
    ring = EventRing(10)
    ring.append(
        OrderedDict([("type", "o"), ("p", Point(1, 2)), ("c", Color.RED), ("s", MyStr("q"))])
    )
    got = ring[0]
    assert got["p"] == [1, 2]
    assert got["c"] == 3 and type(got["c"]) is int
    assert got["s"] == "q" and type(got["s"]) is str


def test_to_list_matches_iteration_and_indexing():
    ring = EventRing(50)
    ring.extend(make_event(i) for i in range(80))
    lst = ring.to_list()
    assert lst == list(ring)
    assert lst == [ring[i] for i in range(len(ring))]
    assert [strip_seq(e) for e in lst] == [make_event(i) for i in range(30, 80)]


def test_repr():
    ring = EventRing(3)
    ring.append({"type": "a"})
    assert "EventRing" in repr(ring)


def test_query_rejects_unknown_keywords_positionals_and_non_bool_order(tmp_path):
    from opencode_addons import JsonlStore, read_events

    ring = EventRing(5)
    ring.append({"type": "a", "stream_id": "s"})
    store = JsonlStore(tmp_path / "e.jsonl")
    store.append({"type": "a", "stream_id": "s"})
    for query in (ring.query, store.query, store.history.query):
        with pytest.raises(TypeError, match="unexpected keyword argument 'stream'"):
            query(stream="s")
        with pytest.raises(TypeError):
            query("s")
        with pytest.raises(TypeError, match="newest_first must be a bool"):
            query(newest_first="yes")
        assert [e["type"] for e in query(stream_id="s", newest_first=True)] == ["a"]
    with pytest.raises(TypeError, match="read_events\\(\\) got an unexpected keyword"):
        read_events(tmp_path / "e.jsonl", typ="a")
    store.close()


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((0,), {}, "capacity must be at least 1"),
        ((-5,), {}, "capacity must be at least 1"),
        ((2**32,), {}, "capacity must be at most"),
        ((10,), {"max_bytes": 0}, "max_bytes must be at least 1"),
        ((10,), {"max_event_bytes": 0}, "max_event_bytes must be at least 1"),
    ],
)
def test_bad_limits_are_refused_with_a_clear_message(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        EventRing(*args, **kwargs)


def test_an_event_over_max_bytes_is_refused_and_changes_nothing():
    ring = EventRing(10, max_bytes=100)
    ring.append({"type": "a"})
    before = (ring.to_list(), ring.nbytes, ring.evicted)
    with pytest.raises(ValueError, match="max_bytes"):
        ring.append({"type": "a", "payload": "x" * 200})
    assert (ring.to_list(), ring.nbytes, ring.evicted) == before
