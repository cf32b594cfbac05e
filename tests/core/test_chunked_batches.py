"""Batches of more than 2 MiB, written in chunks: whatever mix of appends, small and large
batches and refused events comes, the file and the cache hold exactly the accepted events, in
seq order, and a reopened store reads them back (hypothesis, against a list as the model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opencode_addons import JsonlStore

SMALL_TEXT = 'short\ttext "quoted"\n' * 15  # about 330 B of JSON
LARGE_TEXT = 'def f(x):\n\treturn "x" * 2\n' * 1_450  # about 45 KB of JSON
# Over 2 MiB: the store writes these in chunks (2.2-3.6 MB, or 2.4 MB of small events).
LARGE_BATCH = st.integers(min_value=50, max_value=80)
SMALL_BATCH = st.integers(min_value=1, max_value=300)

Op = tuple[str, int, str, Optional[int]]
Durability = Literal["none", "flush", "fsync", "group"]


def make_event(n: int, size: str) -> dict[str, Any]:
    return {
        "type": "tool" if size == "large" else "delta",
        "stream_id": f"s{n % 3}",
        "actor": "agent",
        "correlation_id": f"run-{n % 5}",
        "id": f"e{n}",
        "timestamp": 1_700_000_000_000 + n,
        "payload": {"n": n, "text": LARGE_TEXT if size == "large" else SMALL_TEXT},
    }


def refused_at(count: int) -> st.SearchStrategy[Optional[int]]:
    return st.one_of(st.none(), st.integers(min_value=0, max_value=count - 1))


@st.composite
def operation(draw: st.DrawFn) -> Op:
    kind = draw(st.sampled_from(["append", "extend", "extend", "extend"]))
    if kind == "append":
        return ("append", 1, draw(st.sampled_from(["small", "large"])), None)
    size = draw(st.sampled_from(["small", "large", "small_many"]))
    if size == "large":
        count = draw(LARGE_BATCH)
    elif size == "small_many":
        count = 7_000  # about 2.4 MB of small events
    else:
        count = draw(SMALL_BATCH)
    return ("extend", count, size, draw(refused_at(count)))


def without_seq(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "seq"}


def apply(store: JsonlStore, op: Op, model: list[dict[str, Any]]) -> None:
    kind, count, size, refused = op
    n = len(model)
    events = [make_event(n + i, "large" if size == "large" else "small") for i in range(count)]
    if kind == "append":
        stored = store.append(events[0])
        assert stored["seq"] == n + 1
        model.append(events[0])
        return
    if refused is not None:
        events[refused] = {"type": "bad", "payload": {"value": {1, 2}}}
        try:
            store.extend(events, return_events=False)
        except TypeError as error:
            assert f"event {refused}" in str(error) or count == 1
        else:
            raise AssertionError("a batch with an unsupported value was stored")
        return
    seqs = store.extend(events, return_events=False)
    assert seqs == range(n + 1, n + 1 + count)
    model.extend(events)


def file_events(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n")
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=st.lists(operation(), min_size=1, max_size=5),
    durability=st.sampled_from(["none", "flush", "fsync", "group"]),
    cache=st.sampled_from([40, 100_000]),
    compress=st.booleans(),
)
def test_any_mix_of_batches_stores_exactly_what_was_accepted(
    tmp_path_factory: Any, ops: list[Op], durability: Durability, cache: int, compress: bool
) -> None:
    # Large events are held as references to the log (rust/external.rs), in a compressed cache
    # as in a plain one.
    path = tmp_path_factory.mktemp("chunked") / "events.jsonl"
    model: list[dict[str, Any]] = []
    with JsonlStore(
        path, durability=durability, max_cache_size=cache, compress_history=compress
    ) as store:
        for op in ops:
            apply(store, op, model)
            held = list(store)
            first = len(model) - len(held)
            assert [e["seq"] for e in held] == list(range(first + 1, len(model) + 1))
            assert [without_seq(e) for e in held] == model[first:]
    written = file_events(path)
    assert [e["seq"] for e in written] == list(range(1, len(model) + 1))
    assert [without_seq(e) for e in written] == model
    with JsonlStore(path, max_cache_size=cache, compress_history=compress) as store:
        held = list(store)
        assert len(held) == min(cache, len(model))
        assert [without_seq(e) for e in held] == model[len(model) - len(held) :]
