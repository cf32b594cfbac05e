"""RedisEventReader: query with the local query's meaning, tail, latest, consumer groups."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import opencode_addons as oa
import pytest
from opencode_addons.redis_streams import RedisEventReader, RedisReplicator
from redis_checks import make_event


@pytest.fixture
def shipped(tmp_path: Path, redis_server: Any) -> str:
    """A store of 800 varied events (some with past, float and negative timestamps and a
    correlation id), shipped; returns its path."""
    path = str(tmp_path / "events.jsonl")
    rng = random.Random(11)
    with oa.JsonlStore(path) as store:
        for i in range(800):
            event = make_event(rng, i, sessions=6, past=i % 7 == 0)
            if i % 50 == 0:
                event["timestamp"] = -5 if i % 100 == 0 else 1e18
            if i % 3 == 0:
                event["correlation_id"] = f"run-{i % 2}"
            store.append(event)
        with RedisReplicator(store, redis_server.url, host_id="q", batch=97) as replicator:
            replicator.run_once()
    return path


FILTERS: list[dict[str, Any]] = [
    {},
    {"limit": 10},
    {"limit": 10, "newest_first": True},
    {"newest_first": True},
    {"stream_id": "ses_3"},
    {"stream_id": "ses_3", "type": "execution.tool_start", "newest_first": True, "limit": 4},
    {"stream_id": "nope"},
    {"type": ["execution.tool_start", "message.x"]},
    {"type": []},
    {"actor": "plan", "limit": 0},
    {"actor": "build", "newest_first": True, "limit": 25},
    {"since": 2_000.5},
    {"since": 2_000.5, "until": 5_000},
    {"until": 1_000},
    {"until": -5},
    {"since": 1e18},
    {"since": 1e17, "until": 2e18, "newest_first": True},
    {"since": 1_700_000_000_000, "until": 1_700_000_000_400, "newest_first": True},
    {"stream_id": "ses_1", "since": 1_500, "until": 1_700_000_000_300},
    {"correlation_id": "run-1", "limit": 30, "newest_first": True},
    {"correlation_id": "run-0", "stream_id": "ses_2"},
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: json.dumps(f, sort_keys=True))
def test_query_means_what_the_local_query_means(shipped, redis_server, filters):
    with RedisEventReader(redis_server.url) as reader:
        assert reader.query(raw=True, **filters) == oa.read_events(shipped, raw=True, **filters)
        assert reader.query(**filters) == oa.read_events(shipped, **filters)


def test_query_pages_through_a_long_key(tmp_path, redis_server):
    path = str(tmp_path / "long.jsonl")
    with oa.JsonlStore(path) as store:
        rng = random.Random(3)
        for i in range(1234):
            store.append(make_event(rng, i, sessions=1))
        with RedisReplicator(store, redis_server.url) as replicator:
            replicator.run_once()
    with RedisEventReader(redis_server.url) as reader:
        for newest_first in (False, True):
            got = reader.query(raw=True, newest_first=newest_first, stream_id="ses_0")
            assert got == oa.read_events(path, raw=True, newest_first=newest_first)
        assert reader.query(host="q") == []
        assert len(reader.query(host=RedisReplicator(path, redis_server.url).host_id)) == 1234


@pytest.mark.parametrize(
    ("filters", "error"),
    [
        ({"since": "x"}, TypeError),
        ({"until": True}, TypeError),
        ({"until": float("nan")}, ValueError),
        ({"limit": -1}, ValueError),
        ({"type": 5}, TypeError),
        ({"stream_id": 5}, TypeError),
        ({"actor": 1}, TypeError),
    ],
)
def test_query_rejects_what_the_local_query_rejects(shipped, redis_server, filters, error):
    with pytest.raises(error):
        oa.read_events(shipped, **filters)
    with RedisEventReader(redis_server.url) as reader, pytest.raises(error):
        reader.query(**filters)


def test_latest_and_tail_continue_after_it(tmp_path, redis_server):
    path = str(tmp_path / "events.jsonl")
    with oa.JsonlStore(path) as store:
        for i in range(20):
            store.append({"type": "t", "stream_id": "s", "payload": {"i": i}})
        replicator = RedisReplicator(store, redis_server.url)
        replicator.run_once()
        reader = RedisEventReader(redis_server.url)
        events, last_id = reader.latest(3)
        assert [e["payload"]["i"] for e in events] == [17, 18, 19]
        assert reader.latest(0)[0] == [] and reader.latest(0)[1] == last_id
        assert reader.latest(5, stream_id="none") == ([], "0-0")

        async def follow() -> list[Any]:
            got: list[Any] = []
            async for line in reader.tail(raw=True, last_id=last_id):
                got.append(line)
                if len(got) == 5:
                    return got
            return got

        for i in range(20, 25):
            store.append({"type": "t", "stream_id": "s", "payload": {"i": i}})
        replicator.run_once()
        got = asyncio.run(asyncio.wait_for(follow(), 10))
        assert got == oa.read_events(path, raw=True)[20:25]
        replicator.shutdown()
        reader.close()


async def test_tail_sees_new_events_in_order_and_filters_a_session(tmp_path, redis_server, rclient):
    path = str(tmp_path / "events.jsonl")
    store = oa.JsonlStore(path)
    store.append({"type": "old", "stream_id": "a"})  # before the tail: not seen
    replicator = RedisReplicator(store, redis_server.url, poll_interval=0.005)
    replicator.run_once()
    replicator.start()
    reader = RedisEventReader(redis_server.url)
    everything: list[Any] = []
    session_b: list[Any] = []

    async def collect(into: list[Any], count: int, stream_id: Any = None) -> None:
        async for event in reader.tail(stream_id):
            into.append(event)
            if len(into) == count:
                return

    tails = [
        asyncio.create_task(collect(everything, 40)),
        asyncio.create_task(collect(session_b, 20, "b")),
    ]
    # Append once both tails are blocked in XREAD.
    while sum(c.get("cmd") == "xread" for c in rclient.client_list()) < 2:
        await asyncio.sleep(0.01)
    for i in range(20):
        store.append({"type": "new", "stream_id": "a", "payload": {"i": i}})
        store.append({"type": "new", "stream_id": "b", "payload": {"i": i}})
    await asyncio.wait_for(asyncio.gather(*tails), 20)
    replicator.shutdown()
    store.close()
    assert [e["seq"] for e in everything] == list(range(2, 42))
    assert [e["payload"]["i"] for e in session_b] == list(range(20))
    assert {e["stream_id"] for e in session_b} == {"b"}
    reader.close()


async def test_consumer_group_acks_and_reclaims_stale_entries(tmp_path, redis_server, rclient):
    path = str(tmp_path / "events.jsonl")
    with oa.JsonlStore(path) as store:
        for i in range(10):
            store.append({"type": "job", "stream_id": "w", "payload": {"i": i}})
        with RedisReplicator(store, redis_server.url) as replicator:
            replicator.run_once()
    reader = RedisEventReader(redis_server.url)

    async def take(consumer: str, count: int, ack: bool, **options: Any) -> list[Any]:
        got = []
        async for delivery in reader.consume("workers", consumer, block_ms=100, **options):
            got.append(delivery)
            if ack:
                await delivery.ack()
            if len(got) == count:
                return got
        return got

    # c1 takes 4 and acks 2 of them; 2 stay pending, 6 are undelivered.
    first = await asyncio.wait_for(take("c1", 4, ack=False), 10)
    assert [d.seq for d in first] == [1, 2, 3, 4] and first[0].host
    await first[0].ack()
    await first[1].ack()
    # c1 restarts: its own pending entries (3, 4) come first.
    again = await asyncio.wait_for(take("c1", 2, ack=False), 10)
    assert [d.seq for d in again] == [3, 4]
    # c2 reclaims them once they have been idle for 50 ms, then gets the new ones.
    await asyncio.sleep(0.1)
    rest = await asyncio.wait_for(take("c2", 8, ack=True, claim_idle_ms=50), 10)
    assert [d.seq for d in rest] == [3, 4, 5, 6, 7, 8, 9, 10]
    assert rest[0].event["payload"] == {"i": 2}
    pending = rclient.xpending("oca:events", "workers")
    assert pending["pending"] == 0
    reader.close()


async def test_consume_raw_from_a_session_key(tmp_path, redis_server):
    path = str(tmp_path / "events.jsonl")
    with oa.JsonlStore(path) as store:
        for i in range(6):
            store.append({"type": "job", "stream_id": f"s{i % 2}", "payload": {"i": i}})
        with RedisReplicator(store, redis_server.url) as replicator:
            replicator.run_once()
    reader = RedisEventReader(redis_server.url)
    got = []
    async for delivery in reader.consume("g", "c", stream_id="s1", raw=True, block_ms=100):
        got.append(delivery.event)
        await delivery.ack()
        if len(got) == 3:
            break
    assert got == oa.read_events(path, raw=True, stream_id="s1")
    reader.close()


@pytest.mark.parametrize(
    ("args", "error"),
    [(("", "c"), ValueError), (("g", 5), ValueError)],
)
async def test_consume_rejects_bad_names(redis_server, args, error):
    reader = RedisEventReader(redis_server.url)
    with pytest.raises(error):
        async for _ in reader.consume(*args):
            pass
