"""Kills: Redis SIGKILLed mid-ship and restarted from its AOF, the replicator process SIGKILLed
mid-batch and restarted. Afterwards every key holds each event exactly once, in seq order."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time

import opencode_addons as oa
from opencode_addons.redis_streams import RedisReplicator
from redis_checks import assert_exactly_once, make_event, wait_until
from redis_server import RedisServer


def test_redis_killed_mid_ship_and_restarted_from_its_aof(tmp_path, redis_factory):
    server: RedisServer = redis_factory()
    rng = random.Random(2024)
    store = oa.JsonlStore(str(tmp_path / "events.jsonl"))
    replicator = RedisReplicator(
        store,
        server.url,
        host_id="k",
        batch=50,
        poll_interval=0.002,
        retry_min=0.01,
        retry_max=0.1,
    )
    replicator.start()
    done = threading.Event()

    def write() -> None:
        events = random.Random(7)
        for i in range(6000):
            store.append(make_event(events, i, sessions=8))
            if i % 25 == 0:
                time.sleep(0.001)
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    kills = 0
    while not done.is_set() or kills < 4:
        time.sleep(rng.uniform(0.05, 0.25))
        server.kill()
        kills += 1
        time.sleep(rng.uniform(0.0, 0.1))
        server.start()
    writer.join()
    wait_until(lambda: replicator.stats()["lag"] == 0, timeout=60, what="catching up")
    stats = replicator.stats()
    replicator.shutdown()
    store.close()
    assert kills >= 4 and server.starts == kills + 1
    assert stats["errors"] >= 1, "no kill hit the replicator: the test did not test anything"
    client = server.client()
    assert_exactly_once(client, {"k": store.path})


def test_replicator_process_killed_mid_batch_and_restarted(tmp_path, redis_server, rclient):
    path = tmp_path / "events.jsonl"
    rng = random.Random(99)
    with oa.JsonlStore(str(path)) as store:
        store.extend(make_event(rng, i, sessions=12) for i in range(6_000))
    last = 6_000
    command = [
        sys.executable,
        "-m",
        "opencode_addons",
        "ship",
        str(path),
        "--redis",
        redis_server.url,
        "--host-id",
        "proc",
        "--batch",
        "10",
    ]

    def marker() -> int:
        value = rclient.hget("oca:meta", "shipped:proc")
        return int(value) if value is not None else 0

    mid_ship_kills = 0
    for _attempt in range(20):
        before = marker()
        if before == last:
            break
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Wait until it ships, then kill it at a random point of a batch.
        wait_until(lambda b=before, c=child: marker() > b or c.poll() is not None, what="ships")
        time.sleep(rng.uniform(0.0, 0.3))
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        if before < marker() < last:
            mid_ship_kills += 1
    assert mid_ship_kills >= 2, "the replicator was never killed while shipping"
    finish = subprocess.run([*command, "--once"], capture_output=True, text=True, timeout=120)
    assert finish.returncode == 0, finish.stderr
    assert marker() == last
    assert_exactly_once(rclient, {"proc": str(path)})
