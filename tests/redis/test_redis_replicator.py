"""RedisReplicator against a real redis-server: what it ships, where, once, and its lifecycle."""

from __future__ import annotations

import json
import logging
import random
import threading
from pathlib import Path
from typing import Any

import opencode_addons as oa
import pytest
from opencode_addons.component import Component
from opencode_addons.durable_stream import DurableStream
from opencode_addons.redis_streams import RedisEventReader, RedisReplicator
from redis_checks import append_events, assert_exactly_once, make_event, seq_of, wait_until


def store_at(tmp_path: Path, name: str = "events.jsonl", **options: Any) -> oa.JsonlStore:
    return oa.JsonlStore(str(tmp_path / name), **options)


def test_ships_every_event_once_byte_identical(tmp_path, redis_server, rclient):
    with store_at(tmp_path) as store:
        append_events(store, 1500, sessions=7)
        replicator = RedisReplicator(store, redis_server.url, host_id="h1", batch=200)
        assert replicator.run_once() == 1500
        assert replicator.run_once() == 0
        stats = replicator.stats()
        assert stats["shipped"] == 1500 and stats["lag"] == 0 and stats["position"] == 1500
        assert stats["batches"] == 8 and stats["errors"] == 0 and stats["lost"] == 0
        replicator.shutdown()
    assert_exactly_once(rclient, {"h1": store.path})


def test_entry_fields(tmp_path, redis_server, rclient):
    with store_at(tmp_path) as store:
        stored = store.append(
            {"type": "message.x", "stream_id": "ses_a", "actor": "build", "payload": {"k": "é"}}
        )
        with RedisReplicator(store, redis_server.url, host_id="h1") as replicator:
            replicator.run_once()
        line = oa.read_events(store.path, raw=True)[0]
    for key in ("oca:events", "oca:session:ses_a"):
        [(entry_id, fields)] = rclient.xrange(key)
        assert fields == {b"seq": b"1", b"host": b"h1", b"type": b"message.x", b"data": line}
        # The id's millisecond part is the event's timestamp.
        assert entry_id == f"{stored['timestamp']}-0".encode()


def test_restart_resumes_from_the_marker_in_redis(tmp_path, redis_server, rclient):
    path = str(tmp_path / "events.jsonl")
    with oa.JsonlStore(path) as store:
        append_events(store, 120, seed=1)
        first = RedisReplicator(store, redis_server.url)
        assert first.run_once() == 120
        first.shutdown()
        append_events(store, 30, seed=2)
    # A new process: same path, so the same default host id, which finds its marker in Redis.
    second = RedisReplicator(path, redis_server.url)
    assert second.host_id == first.host_id
    assert second.run_once() == 30
    second.shutdown()
    assert_exactly_once(rclient, {first.host_id: path})


def test_host_ids_differ_per_store_path(tmp_path):
    a = RedisReplicator(str(tmp_path / "a.jsonl"), "redis://127.0.0.1:1")
    b = RedisReplicator(str(tmp_path / "b.jsonl"), "redis://127.0.0.1:1")
    assert a.host_id != b.host_id


def test_path_source_reads_the_file_of_a_store_open_elsewhere(tmp_path, redis_server, rclient):
    with store_at(tmp_path) as store:
        append_events(store, 300)
        replicator = RedisReplicator(store.path, redis_server.url, host_id="p")
        assert replicator.run_once() == 300
        append_events(store, 10, seed=3)
        assert replicator.run_once() == 10
        replicator.shutdown()
    assert_exactly_once(rclient, {"p": store.path})


def test_cache_too_short_falls_back_to_the_file(tmp_path, redis_server, rclient):
    # The cache holds the newest 50 events; the other 950 are read from the file.
    with store_at(tmp_path, max_cache_size=50, history_size=50) as store:
        append_events(store, 1000)
        with RedisReplicator(store, redis_server.url, host_id="c", batch=64) as replicator:
            assert replicator.run_once() == 1000
    assert_exactly_once(rclient, {"c": store.path})


def test_durable_stream_source(tmp_path, redis_server, rclient):
    stream = DurableStream(str(tmp_path / "ds.jsonl"))
    try:
        append_events(stream, 200)
        with RedisReplicator(stream, redis_server.url, host_id="ds") as replicator:
            assert replicator.run_once() == 200
            assert replicator.stats()["lag"] == 0
    finally:
        stream.shutdown()
    assert_exactly_once(rclient, {"ds": stream.path})


def test_source_closed_under_the_replicator_reads_the_file(tmp_path, redis_server, rclient):
    store = store_at(tmp_path)
    append_events(store, 40)
    replicator = RedisReplicator(store, redis_server.url, host_id="x")
    store.close()
    assert replicator.run_once() == 40
    replicator.shutdown()
    assert_exactly_once(rclient, {"x": store.path})


def test_background_thread_follows_appends(tmp_path, redis_server, rclient):
    with store_at(tmp_path) as store:
        replicator = RedisReplicator(store, redis_server.url, host_id="bg", poll_interval=0.005)
        replicator.start()
        assert replicator.running
        for batch in range(5):
            append_events(store, 100, seed=batch)
        wait_until(lambda: replicator.stats()["lag"] == 0, what="the replicator to catch up")
        assert rclient.xlen("oca:events") == 500
        replicator.stop()
        assert not replicator.running
        append_events(store, 7, seed=9)
        replicator.shutdown()  # ships the 7 appended after stop
        assert replicator.stats()["shipped"] == 507
    assert_exactly_once(rclient, {"bg": store.path})


def test_durable_stream_replicate_to(tmp_path, redis_server, rclient):
    stream = DurableStream(
        str(tmp_path / "ds.jsonl"),
        replicate_to=redis_server.url,
        replicate_options={"host_id": "dsr", "poll_interval": 0.005},
    )
    append_events(stream, 300)
    wait_until(lambda: stream.stats()["replication"]["lag"] == 0, what="replication")
    assert stream.config["replicate_to"] == redis_server.url
    # Appended right before shutdown: the replicator ships it before the store closes.
    stream.append({"type": "last.one", "stream_id": "ses_0"})
    stream.shutdown()
    assert_exactly_once(rclient, {"dsr": stream.path})
    assert "replication" not in DurableStream(str(tmp_path / "other.jsonl")).stats()


def test_durable_stream_replicate_to_bad_url_raises_and_closes_the_store(tmp_path):
    path = str(tmp_path / "ds.jsonl")
    with pytest.raises(ValueError, match="bad Redis URL"):
        DurableStream(path, replicate_to="http://nope")
    # The store was closed: the file can be opened again.
    DurableStream(path).shutdown()


def test_session_deleted_sets_a_ttl_and_the_key_expires(tmp_path, redis_server, rclient):
    stream = DurableStream(str(tmp_path / "ds.jsonl"))
    try:
        append_events(stream, 50, sessions=3)
        stream.delete_session("ses_1")
        with RedisReplicator(stream, redis_server.url, session_ttl=1) as replicator:
            replicator.run_once()
    finally:
        stream.shutdown()
    assert 0 < rclient.pttl("oca:session:ses_1") <= 1000
    assert rclient.ttl("oca:session:ses_0") == -1 and rclient.ttl("oca:events") == -1
    wait_until(lambda: not rclient.exists("oca:session:ses_1"), what="the key to expire")
    assert rclient.exists("oca:session:ses_0") and rclient.exists("oca:session:ses_2")


@pytest.mark.parametrize("batch", [3, 500])
def test_exact_trim_keeps_exactly_maxlen(tmp_path, redis_server, rclient, batch):
    with store_at(tmp_path) as store:
        rng = random.Random(5)
        for i in range(60):
            store.append(make_event(rng, i, sessions=2))
        replicator = RedisReplicator(
            store,
            redis_server.url,
            host_id="t",
            session_maxlen=5,
            global_maxlen=12,
            exact_trim=True,
            batch=batch,
        )
        replicator.run_once()
        replicator.shutdown()
        lines = oa.read_events(store.path, raw=True)
    assert [f[b"data"] for _, f in rclient.xrange("oca:events")] == lines[-12:]
    for sid in ("ses_0", "ses_1"):
        mine = [line for line in lines if json.loads(line)["stream_id"] == sid]
        assert [f[b"data"] for _, f in rclient.xrange(f"oca:session:{sid}")] == mine[-5:]


def test_approximate_trim_is_the_default(tmp_path, redis_server, rclient):
    with store_at(tmp_path) as store:
        append_events(store, 3000, sessions=1)
        with RedisReplicator(store, redis_server.url, session_maxlen=1000) as replicator:
            replicator.run_once()
    held = rclient.xlen("oca:session:ses_0")
    # MAXLEN ~ trims whole nodes: at least the maximum is kept, and old nodes went.
    assert 1000 <= held < 3000


def test_lost_events_are_counted_and_logged(tmp_path, redis_server, caplog):
    path = tmp_path / "events.jsonl"
    with oa.JsonlStore(str(path)) as store:
        append_events(store, 10)
    lines = path.read_bytes().splitlines(keepends=True)
    # Retention (or damage) dropped seqs 1-3 before they were shipped.
    path.write_bytes(b"".join(lines[3:]))
    replicator = RedisReplicator(str(path), redis_server.url, host_id="l")
    with caplog.at_level(logging.WARNING, logger="opencode_addons.redis_streams"):
        assert replicator.run_once() == 7
    assert replicator.stats()["lost"] == 3
    assert "seqs 1..3 are no longer readable" in caplog.text
    with oa.JsonlStore(str(path)) as store:
        append_events(store, 10, seed=2)  # seqs 11..20
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:7] + lines[11:]))  # 11..14 gone
    assert replicator.run_once() == 6
    assert replicator.stats()["lost"] == 7
    replicator.shutdown()


def test_events_dropped_by_retention_before_shipping_are_counted_as_lost(
    tmp_path, redis_server, rclient
):
    path = str(tmp_path / "events.jsonl")
    small = {"max_event_bytes": 4096, "max_segment_bytes": 16 << 10, "max_disk_bytes": 64 << 10}
    rng = random.Random(8)
    store = oa.JsonlStore(path, **small)
    for i in range(100):
        store.append(make_event(rng, i, sessions=3))
    replicator = RedisReplicator(path, redis_server.url, host_id="ret")
    assert replicator.run_once() == 100
    # Redis is not shipped to while the host writes on: retention drops unshipped segments.
    for i in range(100, 3000):
        store.append(make_event(rng, i, sessions=3))
    dropped = store.stats()["events_dropped"]
    store.close()
    readable = oa.read_events(path, raw=True)
    first = seq_of(readable[0])
    assert dropped > 100 and first > 101
    assert replicator.run_once() == len(readable)
    stats = replicator.stats()
    assert stats["lost"] == first - 101 and stats["lag"] == 0
    replicator.shutdown()
    # Redis has the first 100 and everything still readable, each once, in order.
    got = [f[b"data"] for _, f in rclient.xrange("oca:events")]
    assert got[100:] == readable and len(got) == 100 + len(readable)


def test_redis_losing_its_data_rewinds_and_ships_again(tmp_path, redis_server, rclient, caplog):
    with store_at(tmp_path) as store:
        append_events(store, 100)
        replicator = RedisReplicator(store, redis_server.url, host_id="r")
        assert replicator.run_once() == 100
        rclient.flushall()
        append_events(store, 5, seed=4)
        with caplog.at_level(logging.WARNING, logger="opencode_addons.redis_streams"):
            assert replicator.run_once() == 105
        assert replicator.stats()["rewinds"] == 1
        assert "Redis lost data" in caplog.text
        replicator.shutdown()
    assert_exactly_once(rclient, {"r": store.path})


def test_a_batch_shipped_twice_is_written_once(tmp_path, redis_server, rclient):
    # Two replicators with one host id (a restart racing the old process): each batch is
    # written by whichever comes first, and skipped by the other.
    with store_at(tmp_path) as store:
        append_events(store, 400)
        one = RedisReplicator(store, redis_server.url, host_id="same", batch=7)
        two = RedisReplicator(store.path, redis_server.url, host_id="same", batch=11)
        threads = [threading.Thread(target=r.run_once) for r in (one, two)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert one.stats()["shipped"] + two.stats()["shipped"] == 400
        one.shutdown()
        two.shutdown()
    assert_exactly_once(rclient, {"same": store.path})


def test_marker_ahead_of_a_new_store_is_reported(tmp_path, redis_server, rclient, caplog):
    rclient.hset("oca:meta", "shipped:h", 500)
    with store_at(tmp_path) as store:
        append_events(store, 3)
        with caplog.at_level(logging.WARNING, logger="opencode_addons.redis_streams"):
            with RedisReplicator(store, redis_server.url, host_id="h") as replicator:
                assert replicator.run_once() == 0
    assert "give it another host_id" in caplog.text


def test_two_hosts_ship_to_one_redis_at_once(tmp_path, redis_server, rclient):
    stores = {
        "host-a": oa.JsonlStore(str(tmp_path / "a.jsonl")),
        "host-b": oa.JsonlStore(str(tmp_path / "b.jsonl")),
    }
    replicators = [
        RedisReplicator(store, redis_server.url, host_id=host, batch=50, poll_interval=0.002)
        for host, store in stores.items()
    ]
    for replicator in replicators:
        replicator.start()

    def write(store: oa.JsonlStore, seed: int) -> None:
        rng = random.Random(seed)
        for i in range(1500):
            # Both hosts write sessions ses_0..ses_3, some events with past timestamps.
            store.append(make_event(rng, i, sessions=4, past=i % 10 == 0))

    writers = [
        threading.Thread(target=write, args=(store, seed))
        for seed, store in enumerate(stores.values())
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    for replicator in replicators:
        wait_until(lambda r=replicator: r.stats()["lag"] == 0, what="both hosts to catch up")
        replicator.shutdown()
    for store in stores.values():
        store.close()
    files = {host: store.path for host, store in stores.items()}
    assert_exactly_once(rclient, files)

    reader = RedisEventReader(redis_server.url)
    shared = reader.query(stream_id="ses_2")
    assert {e["seq"] for e in shared} and len(shared) == sum(
        len(oa.read_events(path, stream_id="ses_2")) for path in files.values()
    )
    # Time queries over both hosts: the union of each host's local answer.
    for since, until in [(1_500, 5_000), (1_700_000_000_000, None), (None, 2_000.5)]:
        got = sorted(reader.query(since=since, until=until, raw=True))
        want = sorted(
            line
            for path in files.values()
            for line in oa.read_events(path, since=since, until=until, raw=True)
        )
        assert got == want
    reader.close()


def test_component_protocol(tmp_path, redis_server):
    replicator = RedisReplicator(str(tmp_path / "x.jsonl"), redis_server.url)
    assert isinstance(replicator, Component)
    assert replicator.name == "redis_replicator"
    assert isinstance(replicator.stats(), dict) and not replicator.closed
    replicator.shutdown()
    replicator.shutdown()
    assert replicator.closed
    with pytest.raises(RuntimeError, match="shut down"):
        replicator.run_once()
    with pytest.raises(RuntimeError, match="shut down"):
        replicator.start()


@pytest.mark.parametrize(
    ("keyword", "value", "error"),
    [
        ("session_maxlen", 0, ValueError),
        ("global_maxlen", True, ValueError),
        ("batch", -1, ValueError),
        ("session_ttl", 1.5, ValueError),
        ("prefix", "", ValueError),
        ("host_id", "", ValueError),
        ("poll_interval", 0, ValueError),
    ],
)
def test_bad_arguments(tmp_path, keyword, value, error):
    with pytest.raises(error, match=keyword):
        RedisReplicator(str(tmp_path / "x.jsonl"), "redis://127.0.0.1:1", **{keyword: value})


def test_bad_source():
    with pytest.raises(TypeError, match="source must be a store path"):
        RedisReplicator(42, "redis://127.0.0.1:1")


def test_seq_suffix_matches_json(tmp_path):
    with store_at(tmp_path) as store:
        append_events(store, 5)
        for line in store.query(raw=True):
            assert seq_of(line) == json.loads(line)["seq"]
