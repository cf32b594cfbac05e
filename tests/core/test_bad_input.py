"""Bad input raises a clear exception and changes nothing: file, cache, history, ring."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opencode_addons import MAX_DEPTH, EventRing, JsonlStore


def nested(depth: int, kind: str = "list"):
    value: object = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


def self_list():
    items: list = [1]
    items.append(items)
    return items


def self_dict():
    d: dict = {"a": 1}
    d["me"] = d
    return d


def indirect_cycle():
    a: dict = {}
    b = [a]
    a["b"] = b
    return a


class Opaque:
    pass


BAD_EVENTS = [
    # (id, event, exception)
    ("list", [("type", "a")], TypeError),
    ("str", "type", TypeError),
    ("int", 5, TypeError),
    ("none", None, TypeError),
    ("bytes-event", b'{"type":"a"}', TypeError),
    ("missing-type", {"payload": 1}, ValueError),
    ("empty-event", {}, ValueError),
    ("empty-type", {"type": ""}, ValueError),
    ("int-type", {"type": 5}, TypeError),
    ("none-type", {"type": None}, TypeError),
    ("bytes-type", {"type": b"a"}, TypeError),
    ("list-type", {"type": ["a"]}, TypeError),
    ("int-key", {"type": "a", 1: 2}, TypeError),
    ("tuple-key-nested", {"type": "a", "p": {(1, 2): 3}}, TypeError),
    ("none-key-deep", {"type": "a", "p": [{"x": {None: 1}}]}, TypeError),
    ("set", {"type": "a", "p": {1, 2}}, TypeError),
    ("frozenset", {"type": "a", "p": frozenset()}, TypeError),
    ("bytes", {"type": "a", "p": b"x"}, TypeError),
    ("bytearray", {"type": "a", "p": bytearray(b"x")}, TypeError),
    ("object", {"type": "a", "p": object()}, TypeError),
    ("opaque", {"type": "a", "p": [1, Opaque()]}, TypeError),
    ("decimal", {"type": "a", "p": Decimal("1.5")}, TypeError),
    ("fraction", {"type": "a", "p": Fraction(1, 3)}, TypeError),
    ("complex", {"type": "a", "p": 1j}, TypeError),
    ("nan", {"type": "a", "p": float("nan")}, ValueError),
    ("inf", {"type": "a", "p": float("inf")}, ValueError),
    ("-inf-nested", {"type": "a", "p": {"x": [1.0, float("-inf")]}}, ValueError),
    ("int-2**64", {"type": "a", "p": 2**64}, ValueError),
    ("int-below-i64", {"type": "a", "p": -(2**63) - 1}, ValueError),
    ("int-huge", {"type": "a", "p": [10**100]}, ValueError),
    ("deep-list", {"type": "a", "p": nested(MAX_DEPTH + 5)}, ValueError),
    ("deep-dict", {"type": "a", "p": nested(MAX_DEPTH + 5, "dict")}, ValueError),
    ("just-too-deep", {"type": "a", "p": nested(MAX_DEPTH)}, ValueError),
    ("very-deep", {"type": "a", "p": nested(10_000)}, ValueError),
    ("self-list", {"type": "a", "p": self_list()}, ValueError),
    ("self-dict", {"type": "a", "p": self_dict()}, ValueError),
    ("indirect-cycle", {"type": "a", "p": indirect_cycle()}, ValueError),
    ("surrogate-value", {"type": "a", "p": "x\ud800y"}, ValueError),
    ("surrogate-key", {"type": "a", "\udfff": 1}, ValueError),
    ("too-large", {"type": "a", "p": "x" * (1 << 20)}, ValueError),
    ("too-large-many-small", {"type": "a", "p": ["y" * 100] * 20_000}, ValueError),
    ("id-int", {"type": "a", "id": 5}, TypeError),
    ("timestamp-str", {"type": "a", "timestamp": "now"}, TypeError),
    ("timestamp-bool", {"type": "a", "timestamp": True}, TypeError),
    ("timestamp-nan", {"type": "a", "timestamp": float("nan")}, ValueError),
    ("timestamp-huge", {"type": "a", "timestamp": 2**63}, ValueError),
    ("stream-int", {"type": "a", "stream_id": 5}, TypeError),
    ("actor-list", {"type": "a", "actor": ["x"]}, TypeError),
    ("correlation-bytes", {"type": "a", "correlation_id": b"x"}, TypeError),
]


class Snapshot:
    """Everything a failed call must leave unchanged."""

    def __init__(self, ring: EventRing, store: JsonlStore):
        self.ring = ring
        self.store = store
        self.state = self.take()

    def take(self):
        stats = self.store.stats()
        with open(self.store.path, "rb") as f:
            data = f.read(stats["file_bytes"] + 4096)
        return (
            self.ring.to_list(),
            self.ring.nbytes,
            len(self.ring),
            self.ring.evicted,
            self.store.to_list(),
            self.store.history.to_list(),
            len(self.store),
            stats["file_bytes"],
            stats["next_seq"],
            data,
        )

    def assert_unchanged(self):
        assert self.take() == self.state


@pytest.fixture
def targets(tmp_path):
    ring = EventRing(50)
    store = JsonlStore(tmp_path / "bad.jsonl", max_cache_size=20, history_size=30)
    for i in range(5):
        ring.append({"type": "good", "i": i})
        store.append({"type": "good", "i": i})
    yield ring, store
    store.close()


@pytest.mark.parametrize(
    ("event", "exc"), [(e, x) for _, e, x in BAD_EVENTS], ids=[i for i, _, _ in BAD_EVENTS]
)
def test_bad_event_raises_and_changes_nothing(targets, event, exc):
    ring, store = targets
    snap = Snapshot(ring, store)
    with pytest.raises(exc):
        ring.append(event)
    with pytest.raises(exc):
        store.append(event)
    snap.assert_unchanged()
    # Both keep working, and the failure consumed no sequence number.
    assert ring.append({"type": "after"}) == 6
    assert store.append({"type": "after"})["seq"] == 6


@pytest.mark.parametrize(
    ("event", "exc"), [(e, x) for _, e, x in BAD_EVENTS], ids=[i for i, _, _ in BAD_EVENTS]
)
@pytest.mark.parametrize("position", [0, 3, 6])
def test_bad_event_in_extend_rejects_whole_batch(targets, event, exc, position):
    ring, store = targets
    batch = [{"type": "batch", "n": n} for n in range(6)]
    batch.insert(position, event)
    snap = Snapshot(ring, store)
    with pytest.raises(exc) as info:
        ring.extend(batch)
    assert f"event {position}" in str(info.value)
    with pytest.raises(exc) as info:
        store.extend(batch)
    assert f"event {position}" in str(info.value)
    snap.assert_unchanged()
    del batch[position]
    assert ring.extend(batch) == 6
    assert [e["seq"] for e in store.extend(batch)] == list(range(6, 12))


@pytest.mark.parametrize("field", ["type", "stream_id", "actor", "correlation_id", "id"])
def test_lone_surrogate_in_indexed_field_is_value_error(targets, field):
    """A lone surrogate is bad string content (ValueError), as it is in any other value; it is
    not a wrong type (the value is a str)."""
    ring, store = targets
    event = {"type": "a", field: "x\ud800"}
    snap = Snapshot(ring, store)
    for call in (ring.append, store.append, lambda e: store.extend([{"type": "ok"}, e])):
        with pytest.raises(ValueError, match="surrogate"):
            call(event)
    snap.assert_unchanged()


def test_error_messages_say_where(targets):
    ring, _ = targets
    with pytest.raises(TypeError, match=r"set.*payload\.items\[2\]"):
        ring.append({"type": "a", "payload": {"items": [1, 2, {3}]}})
    with pytest.raises(ValueError, match="type"):
        ring.append({"payload": 1})
    with pytest.raises(ValueError, match="max_event_bytes"):
        ring.append({"type": "a", "p": "x" * (2 << 20)})


def test_extend_with_non_iterable_or_bad_iterator(targets):
    ring, store = targets
    snap = Snapshot(ring, store)

    def broken():
        yield {"type": "ok"}
        raise RuntimeError("iterator failed")

    for call in (ring.extend, store.extend):
        with pytest.raises(TypeError):
            call(5)
        with pytest.raises(RuntimeError, match="iterator failed"):
            call(broken())
    snap.assert_unchanged()


def test_limits_of_what_is_accepted(targets):
    ring, store = targets
    event = {
        "type": "edge",
        "deep": nested(MAX_DEPTH - 1),
        "big": 2**64 - 1,
        "small": -(2**63),
        "seq": {"ignored": {1, 2}},  # the caller's seq is dropped before it is looked at
    }
    ring.append(event)
    stored = store.append(event)
    assert stored["seq"] == 6
    expected = {k: v for k, v in event.items() if k != "seq"}
    for got in (ring[-1], store[-1]):
        assert {k: got[k] for k in expected} == expected


def test_any_mapping_is_accepted(targets):
    ring, store = targets

    class Custom(Mapping):
        def __init__(self, data):
            self.data = data

        def __getitem__(self, key):
            return self.data[key]

        def __iter__(self):
            return iter(self.data)

        def __len__(self):
            return len(self.data)

    for m in (MappingProxyType({"type": "mp"}), OrderedDict(type="od"), Custom({"type": "cm"})):
        ring.append(m)
        store.append(m)
    assert [e["type"] for e in ring][-3:] == ["mp", "od", "cm"]
    assert [e["type"] for e in store][-3:] == ["mp", "od", "cm"]


def test_max_event_bytes_exact_boundary_in_store(tmp_path):
    with JsonlStore(tmp_path / "m.jsonl", max_event_bytes=100) as store:
        base = {"type": "a", "id": "x", "timestamp": 1, "p": ""}
        size = len(json.dumps(base, separators=(",", ":")))
        store.append({**base, "p": "z" * (100 - size)})
        with pytest.raises(ValueError):
            store.append({**base, "p": "z" * (101 - size)})
        assert len(store) == 1


# ---------------------------------------------------------------- property tests

surrogate_text = st.text(st.characters(exclude_categories=()), max_size=8)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    surrogate_text,
    st.text(max_size=8),
    st.binary(max_size=4),
)
hashable = st.one_of(st.none(), st.integers(), st.text(max_size=4), st.booleans())
keys = st.one_of(
    st.text(max_size=6), surrogate_text, st.integers(), st.none(), st.tuples(st.integers())
)


def extend_values(children):
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.frozensets(hashable, max_size=3),
        st.sets(hashable, max_size=3),
        st.dictionaries(keys, children, max_size=4),
        st.dictionaries(st.text(max_size=6), children, max_size=4),
    )


values = st.recursive(leaves, extend_values, max_leaves=20)
header_values = {
    "type": st.one_of(st.text(max_size=5), surrogate_text, st.integers(), st.none(), st.just("t")),
    "id": st.one_of(st.text(max_size=8), st.integers(), st.none()),
    "timestamp": st.one_of(
        st.integers(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(),
        st.booleans(),
        st.text(max_size=3),
    ),
    "stream_id": st.one_of(st.none(), st.text(max_size=4), st.integers()),
    "actor": st.one_of(st.none(), st.text(max_size=4), st.binary(max_size=2)),
    "correlation_id": st.one_of(st.none(), st.text(max_size=4)),
    "seq": values,
}
events = st.one_of(
    st.fixed_dictionaries(
        {"type": st.one_of(st.just("t"), st.text(min_size=1, max_size=5))},
        optional={**{k: v for k, v in header_values.items() if k != "type"}, "payload": values},
    ),
    st.fixed_dictionaries({}, optional={**header_values, "payload": values, "other": values}),
    st.dictionaries(keys, values, max_size=4).map(lambda d: {"type": "t", **d}),
    values,
)

I64 = (-(2**63), 2**63 - 1)


def valid_value(v, depth: int) -> bool:
    """Python model of what the encoder accepts; `depth` counts the event itself as level 1."""
    if v is None or isinstance(v, bool):
        return True
    if isinstance(v, int):
        return -(2**63) <= v <= 2**64 - 1
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, str):
        return encodable(v)
    if isinstance(v, (list, tuple)):
        return depth < MAX_DEPTH and all(valid_value(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return (
            depth < MAX_DEPTH
            and all(isinstance(k, str) and encodable(k) for k in v)
            and all(valid_value(x, depth + 1) for x in v.values())
        )
    return False


def encodable(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def valid_event(e) -> bool:
    if not isinstance(e, Mapping):
        return False
    if not all(isinstance(k, str) and encodable(k) for k in e):
        return False
    body = {k: v for k, v in e.items() if k != "seq"}
    if not all(valid_value(v, 1) for v in body.values()):
        return False
    t = body.get("type")
    if not (isinstance(t, str) and t):
        return False
    if "id" in body and not isinstance(body["id"], str):
        return False
    for key in ("stream_id", "actor", "correlation_id"):
        if key in body and not (body[key] is None or isinstance(body[key], str)):
            return False
    if "timestamp" in body:
        ts = body["timestamp"]
        if isinstance(ts, bool) or not isinstance(ts, (int, float)):
            return False
        if isinstance(ts, int) and not I64[0] <= ts <= I64[1]:
            return False
        if isinstance(ts, float) and not (math.isfinite(ts) and abs(ts) < 9.2e18):
            return False
    return True


def normalise(v):
    if isinstance(v, (list, tuple)):
        return [normalise(x) for x in v]
    if isinstance(v, dict):
        return {k: normalise(x) for k, x in v.items()}
    return v


def strict_equal(a, b) -> bool:
    """Equal with the same types (bool is not int) and the same key order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b


def expected_stored(event) -> dict:
    return normalise({k: v for k, v in dict(event).items() if k != "seq"})


def check_stored(got: dict, event, seq: int) -> None:
    want = expected_stored(event)
    assert got["seq"] == seq
    body = {k: v for k, v in got.items() if k != "seq"}
    generated = [k for k in ("id", "timestamp") if k not in want]
    for key in generated:
        assert key in body
        del body[key]
    assert strict_equal(body, want), (body, want)


SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(event=events)
def test_property_append(targets, event):
    ring, store = targets
    snap = Snapshot(ring, store)
    ok = valid_event(event)
    seq = ring.evicted + len(ring) + 1
    try:
        got_seq = ring.append(event)
    except (TypeError, ValueError):
        assert not ok, f"valid event rejected: {event!r}"
        snap.assert_unchanged()
    else:
        assert ok, f"invalid event accepted: {event!r}"
        assert got_seq == seq
        check_stored(ring[-1], event, seq)

    store_seq = store.stats()["next_seq"]
    snap = Snapshot(ring, store)
    try:
        returned = store.append(event)
    except (TypeError, ValueError):
        assert not ok, f"valid event rejected by store: {event!r}"
        snap.assert_unchanged()
    else:
        assert ok, f"invalid event accepted by store: {event!r}"
        check_stored(normalise(returned), event, store_seq)
        check_stored(store[-1], event, store_seq)
        check_stored(store.history[-1], event, store_seq)
        stats = store.stats()
        with open(store.path, "rb") as f:
            data = f.read(stats["file_bytes"])
        assert data.endswith(b"\n")
        last = data[:-1].rsplit(b"\n", 1)[-1]
        check_stored(json.loads(last), event, store_seq)
        assert last.endswith(b',"seq":%d}' % store_seq)
        assert len(data) == snap.state[7] + len(last) + 1


@SETTINGS
@given(batch=st.lists(events, max_size=5))
def test_property_extend(targets, batch):
    ring, store = targets
    snap = Snapshot(ring, store)
    ok = all(valid_event(e) for e in batch)
    first_ring = ring.evicted + len(ring) + 1
    first_store = store.stats()["next_seq"]
    try:
        count = ring.extend(batch)
    except (TypeError, ValueError):
        assert not ok
        snap.assert_unchanged()
    else:
        assert ok
        assert count == len(batch)
        for offset, e in enumerate(batch):
            check_stored(ring[len(ring) - len(batch) + offset], e, first_ring + offset)
    snap = Snapshot(ring, store)
    try:
        out = store.extend(batch)
    except (TypeError, ValueError):
        assert not ok
        snap.assert_unchanged()
    else:
        assert ok
        assert len(out) == len(batch)
        for offset, (e, got) in enumerate(zip(batch, out)):
            check_stored(normalise(got), e, first_store + offset)
            check_stored(store[len(store) - len(batch) + offset], e, first_store + offset)


filter_text = st.one_of(
    st.none(),
    st.sampled_from(["s0", "s1", "user", "c1", "zz"]),
    surrogate_text,
    st.integers(),
    st.binary(max_size=2),
)
filter_args = st.fixed_dictionaries(
    {},
    optional={
        "stream_id": filter_text,
        "actor": filter_text,
        "correlation_id": filter_text,
        "type": st.one_of(
            filter_text,
            st.lists(st.one_of(st.sampled_from(["a", "b", "c"]), filter_text), max_size=3),
            st.frozensets(st.sampled_from(["a", "b", "zz"])),
            st.dictionaries(st.sampled_from(["a", "b"]), st.integers(), max_size=2),
        ),
        "since": st.one_of(
            st.none(), st.integers(), st.floats(), st.booleans(), st.text(max_size=2)
        ),
        "until": st.one_of(st.none(), st.integers(), st.floats(), st.booleans()),
        "after_seq": st.one_of(st.none(), st.integers(), st.floats()),
        "limit": st.one_of(
            st.none(), st.integers(), st.integers(0, 10), st.floats(), st.booleans()
        ),
        "newest_first": st.booleans(),
    },
)


def reference_query(events_held, args) -> list:
    out = []
    types = args.get("type")
    if types is not None:
        types = {types} if isinstance(types, str) else set(types)
    for e in events_held:
        if any(
            args.get(k) is not None and e.get(k) != args[k]
            for k in ("stream_id", "actor", "correlation_id")
        ):
            continue
        if types is not None and e["type"] not in types:
            continue
        if args.get("since") is not None and e["timestamp"] < args["since"]:
            continue
        if args.get("until") is not None and e["timestamp"] > args["until"]:
            continue
        if args.get("after_seq") is not None and e["seq"] <= args["after_seq"]:
            continue
        out.append(e)
    if args.get("newest_first"):
        out.reverse()
    if args.get("limit") is not None:
        out = out[: args["limit"]]
    return out


@pytest.fixture
def query_targets(tmp_path):
    ring = EventRing(30)
    store = JsonlStore(tmp_path / "q.jsonl", max_cache_size=30)
    for i in range(40):
        e = {
            "type": "abc"[i % 3],
            "stream_id": f"s{i % 2}",
            "actor": ("user", None)[i % 2],
            "correlation_id": f"c{i % 3}",
            "timestamp": (i * 37) % 100 - 20,
        }
        ring.append(e)
        store.append(e)
    yield ring, store
    store.close()


@SETTINGS
@given(args=filter_args)
def test_property_query(query_targets, args):
    ring, store = query_targets
    snap = Snapshot(ring, store)
    for target in (ring, store, store.history):
        try:
            got = target.query(**args)
        except (TypeError, ValueError):
            pass
        else:
            assert got == reference_query(target.to_list(), args), args
    snap.assert_unchanged()


def test_the_compact_ascii_fast_path_is_on_for_the_interpreters_it_knows():
    import sys

    from opencode_addons import _core

    known = (3, 9) <= sys.version_info[:2] <= (3, 14)
    assert _core._FAST_STRINGS is known


def test_the_dict_and_int_layout_readers_are_on_for_the_interpreters_they_know():
    import sys

    from opencode_addons import _core

    known = (3, 9) <= sys.version_info[:2] <= (3, 14)
    assert _core._FAST_DICTS is known
    assert _core._FAST_INTS is known
