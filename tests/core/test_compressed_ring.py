"""Compressed rings (``compress=True``) and stores (``compress_history=True``) hold byte-identical
events and answer every read exactly as uncompressed ones do.

Small blocks (``_block_bytes``) make a few dozen events seal many blocks, so the compressed,
queued and open kinds of block are all read in one example.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from forking import run_in_child
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opencode_addons import EventRing, JsonlStore
from opencode_addons.durable_stream import DurableStream

STREAMS = ("ses_a", "ses_b", "ses_c", None)
TYPES = ("execution.text_delta", "execution.tool_finish", "message.completed")
ACTORS = ("agent", "user", None)

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)


# Repeating ones (interned) and ones mostly seen once (held with their record).
correlation_ids = st.one_of(
    st.sampled_from(("run_1", "run_2")), st.integers(0, 40).map(lambda n: f"req_{n}")
)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    # An id and a timestamp of its own: the ring would make them up otherwise.
    event: dict[str, Any] = {
        "type": draw(st.sampled_from(TYPES)),
        "id": f"evt_{draw(st.integers(0, 10**6))}",
    }
    stream = draw(st.sampled_from(STREAMS))
    if stream is not None:
        event["stream_id"] = stream
    actor = draw(st.sampled_from(ACTORS))
    if actor is not None:
        event["actor"] = actor
    if draw(st.booleans()):
        event["correlation_id"] = draw(correlation_ids)
    event["timestamp"] = draw(st.integers(0, 50))
    payload: dict[str, Any] = {"delta": draw(text), "n": draw(st.integers(-(2**40), 2**40))}
    if draw(st.integers(0, 9)) == 0:
        # Larger than a block now and then: a block of its own.
        payload["output"] = "line of tool output\n" * draw(st.integers(10, 200))
    if draw(st.booleans()):
        payload["nested"] = {"x": [1, 2.5, None, True, draw(text)], "y": {"z": draw(text)}}
    event["payload"] = payload
    return event


operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), events()),
        st.tuples(st.just("extend"), st.lists(events(), max_size=12)),
        st.tuples(st.just("compress_pending"), st.none()),
        st.tuples(st.just("clear"), st.none()),
    ),
    max_size=80,
)

queries = st.fixed_dictionaries(
    {},
    optional={
        "stream_id": st.sampled_from((*STREAMS[:3], "nope")),
        "type": st.one_of(st.sampled_from(TYPES), st.lists(st.sampled_from(TYPES), max_size=2)),
        "actor": st.sampled_from(ACTORS[:2]),
        "correlation_id": correlation_ids,
        "since": st.integers(0, 50),
        "until": st.integers(0, 50),
        "after_seq": st.integers(0, 120),
        "limit": st.integers(0, 30),
        "newest_first": st.booleans(),
    },
)


def apply(ring: EventRing, operation: str, argument: Any) -> None:
    if operation == "append":
        ring.append(argument)
    elif operation == "extend":
        ring.extend(argument)
    elif operation == "clear":
        ring.clear()
    elif ring.compress:
        ring.compress_pending()


def assert_same_reads(plain: Any, packed: Any, probes: list[dict[str, Any]]) -> None:
    """Every read path of `packed` answers as `plain` does."""
    assert len(packed) == len(plain)
    expected = plain.to_list()
    assert packed.to_list() == expected
    assert list(packed) == expected
    assert packed.query(raw=True) == plain.query(raw=True)
    n = len(expected)
    for index in range(-n, n):
        assert packed[index] == expected[index]
    for bounds in (slice(None), slice(None, None, -1), slice(1, None, 3), slice(-7, -1, 2)):
        assert packed[bounds] == expected[bounds]
    for probe in probes:
        assert packed.query(**probe) == plain.query(**probe), probe
        assert packed.query(raw=True, **probe) == plain.query(raw=True, **probe), probe


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    ops=operations,
    probes=st.lists(queries, max_size=6),
    capacity=st.integers(1, 60),
    max_bytes=st.one_of(st.none(), st.integers(2_000, 20_000)),
    block=st.sampled_from((64, 300, 1024, 4096)),
)
def test_compressed_ring_answers_like_a_plain_one(ops, probes, capacity, max_bytes, block):
    plain = EventRing(capacity, max_bytes=max_bytes, _block_bytes=block)
    packed = EventRing(capacity, max_bytes=max_bytes, _block_bytes=block, compress=True)
    assert packed.compress and not plain.compress
    for operation, argument in ops:
        failures = []
        for ring in (plain, packed):
            try:
                apply(ring, operation, argument)
            except ValueError as error:  # an event over max_bytes: refused by both
                failures.append(str(error))
        assert len(failures) in (0, 2), failures
        assert packed.nbytes == plain.nbytes
        assert packed.evicted == plain.evicted
    assert_same_reads(plain, packed, probes)
    packed.compress_pending()
    assert packed.queued_blocks == 0
    assert_same_reads(plain, packed, probes)


def mix(count: int, start: int = 0) -> list[dict[str, Any]]:
    """OpenCode-like events: short deltas in a few sessions, a tool output now and then."""
    out = []
    for i in range(start, start + count):
        session = f"ses_{i % 7}"
        payload: dict[str, Any] = {"sessionID": session, "messageID": f"msg_{i // 50}"}
        if i % 20 == 0:
            event_type = "execution.tool_finish"
            payload["output"] = "".join(f"{n}: def handler_{n}(event):\n" for n in range(i % 90))
        else:
            event_type = "execution.text_delta"
            payload["delta"] = f" word{i % 13} and word{i % 17}"
        event = {"type": event_type, "stream_id": session, "payload": payload}
        out.append({**event, "id": f"evt_{i:08d}_{i * 7919 % 65536:04x}", "timestamp": i})
    return out


def test_a_full_compressed_ring_holds_much_less_and_reads_the_same():
    # Default 256 KiB blocks: the open one (never compressed) is a quarter of what this holds.
    plain = EventRing(5_000)
    packed = EventRing(5_000, compress=True)
    for batch in range(0, 12_000, 1_000):
        plain.extend(mix(1_000, batch))
        packed.extend(mix(1_000, batch))
    assert packed.compress_pending() >= 0
    assert packed.queued_blocks == 0
    assert packed.nbytes == plain.nbytes
    # Stored bytes include the evicted records of the oldest block, until it is freed.
    assert plain.nbytes <= plain.stored_bytes < plain.nbytes + 256 * 1024
    assert packed.stored_bytes * 2 < packed.nbytes
    assert packed.memory_bytes < plain.memory_bytes
    assert_same_reads(
        plain,
        packed,
        [
            {"stream_id": "ses_3", "limit": 50, "newest_first": True},
            {"type": "execution.tool_finish", "since": 0},
            {"stream_id": "ses_1", "after_seq": 9_000},
        ],
    )


def test_max_bytes_counts_uncompressed_bytes():
    plain = EventRing(100_000, max_bytes=300_000, _block_bytes=4096)
    packed = EventRing(100_000, max_bytes=300_000, _block_bytes=4096, compress=True)
    for ring in (plain, packed):
        ring.extend(mix(3_000))
    assert packed.nbytes == plain.nbytes <= 300_000
    assert len(packed) == len(plain) < 3_000
    packed.compress_pending()
    assert packed.stored_bytes < packed.nbytes


def test_the_background_compressor_catches_up_without_being_asked():
    ring = EventRing(20_000, compress=True, _block_bytes=8192)
    ring.extend(mix(20_000))
    deadline = time.monotonic() + 60
    while ring.queued_blocks and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ring.queued_blocks == 0
    assert ring.stored_bytes * 4 < ring.nbytes


def test_small_blocks_are_compressed_too():
    # The property test above relies on small blocks being packed, not left raw.
    ring = EventRing(200, compress=True, _block_bytes=300)
    ring.extend(mix(200))
    ring.compress_pending()
    assert ring.queued_blocks == 0
    assert ring.stored_bytes * 2 < ring.nbytes


def test_bad_block_size_is_refused():
    with pytest.raises(ValueError, match="block size"):
        EventRing(10, _block_bytes=8)
    with pytest.raises(ValueError, match="_block_bytes"):
        EventRing(10, _block_bytes=0)


def test_store_with_compressed_history_reads_like_a_plain_store(tmp_path):
    events = mix(6_000)
    stores = {
        compress: JsonlStore(
            tmp_path / f"{compress}.jsonl",
            max_cache_size=2_000,
            history_size=5_000,
            durability="none",
            compress_history=compress,
        )
        for compress in (False, True)
    }
    for compress, store in stores.items():
        for start in range(0, len(events), 500):
            store.extend(events[start : start + 500])
        assert store.stats()["compress_history"] is compress
    plain, packed = stores[False], stores[True]
    packed.compress_pending()
    probes = [{"stream_id": "ses_2", "limit": 50, "newest_first": True}, {"type": "x"}]
    assert_same_reads(plain, packed, probes)
    assert_same_reads(plain.history, packed.history, probes)
    stats = packed.stats()
    assert stats["nbytes"] == plain.stats()["nbytes"]
    assert stats["queued_blocks"] == 0
    assert stats["stored_bytes"] * 4 < stats["nbytes"]
    for store in stores.values():
        store.close()
    # Reopened, the newest events load into a compressed cache again.
    reopened = {
        compress: JsonlStore(
            tmp_path / f"{compress}.jsonl", history_size=5_000, compress_history=compress
        )
        for compress in (False, True)
    }
    reopened[True].compress_pending()
    assert_same_reads(reopened[False], reopened[True], probes)
    assert reopened[True].stats()["stored_bytes"] * 4 < reopened[True].stats()["nbytes"]
    for store in reopened.values():
        store.close()


def test_durable_stream_with_compressed_history(tmp_path):
    streams = {
        compress: DurableStream(tmp_path / f"{compress}.jsonl", compress_history=compress)
        for compress in (False, True)
    }
    for stream in streams.values():
        for event in mix(4_000):
            stream.append(event)
    plain, packed = streams[False], streams[True]
    deadline = time.monotonic() + 60
    while packed._store.stats()["queued_blocks"] and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = packed.stats()
    assert stats["compress_history"] is True and plain.stats()["compress_history"] is False
    assert stats["history_bytes"] == plain.stats()["history_bytes"]
    assert stats["history_stored_bytes"] * 4 < stats["history_bytes"]
    assert stats["history_memory_bytes"] < plain.stats()["history_memory_bytes"]

    def strip(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Each stream has its own run id and generated ids.
        return [{k: v for k, v in e.items() if k not in ("id", "correlation_id")} for e in events]

    history = packed.get_event_history()
    assert strip(list(history)) == strip(list(plain.get_event_history()))
    assert strip(history.query(stream_id="ses_4", limit=20, newest_first=True)) == strip(
        plain.get_event_history().query(stream_id="ses_4", limit=20, newest_first=True)
    )
    for stream in streams.values():
        stream.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_compresses_without_the_parents_thread():
    ring = EventRing(50_000, compress=True, _block_bytes=4096)
    ring.extend(mix(3_000))
    expected_before = ring.to_list()

    def child() -> int:
        ring.extend(mix(3_000, 3_000))
        # The child has no compressor thread: sealing packs in place, including the blocks the
        # parent's thread had not returned.
        fine = ring.queued_blocks == 0 and ring.to_list()[:3_000] == expected_before
        fine = fine and ring.stored_bytes * 3 < ring.nbytes and len(ring) == 6_000
        return 0 if fine else 2

    assert run_in_child(child) == 0
    assert ring.to_list() == expected_before
