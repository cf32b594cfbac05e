"""Bad input and faults: one clear error naming what is wrong; appends never wait for Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import opencode_addons as oa
import pytest
from opencode_addons.durable_stream import DurableStream
from opencode_addons.redis_streams import (
    RedisConfigError,
    RedisEventReader,
    RedisReplicator,
    RedisStreamError,
    RedisUnavailableError,
)
from redis_checks import append_events, assert_exactly_once, wait_until
from redis_server import RedisServer, free_port


@pytest.fixture
def one_event(tmp_path: Path) -> str:
    path = str(tmp_path / "events.jsonl")
    with oa.JsonlStore(path) as store:
        store.append({"type": "a", "stream_id": "s1"})
    return path


def ship(path: str, url: str, **options: Any) -> int:
    replicator = RedisReplicator(path, url, **options)
    try:
        return replicator.run_once()
    finally:
        replicator.shutdown()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://localhost", "expected redis://, rediss:// or unix://"),
        ("localhost:6379", "expected redis://"),
        ("redis://host:notaport", "Port could not be cast"),
        ("redis://127.0.0.1:99999", "Port out of range"),
        ("", "must be a non-empty str"),
        (None, "must be a non-empty str"),
    ],
)
def test_bad_url(one_event, url, message):
    with pytest.raises(RedisConfigError, match=message):
        RedisReplicator(one_event, url)
    with pytest.raises(RedisConfigError, match=message):
        RedisEventReader(url)


def test_refused_connection(one_event):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with pytest.raises(RedisUnavailableError, match=f"cannot reach Redis at {url}.*refused"):
        ship(one_event, url)
    with pytest.raises(RedisUnavailableError, match=f"127.0.0.1:{port}"):
        RedisEventReader(url).query()


def test_unknown_host(one_event):
    with pytest.raises(RedisUnavailableError, match=r"nohost\.invalid"):
        ship(one_event, "redis://nohost.invalid:6379")


def test_wrong_credentials(one_event, redis_factory):
    server: RedisServer = redis_factory(password="s3cret")
    wrong = server.url.replace("s3cret", "guess")
    with pytest.raises(RedisConfigError, match="refused the credentials") as caught:
        ship(one_event, wrong)
    assert "guess" not in str(caught.value) and ":***@" in str(caught.value)
    with pytest.raises(RedisConfigError, match=r"refused the credentials.*Authentication required"):
        ship(one_event, server.url.replace(":s3cret@", ""))
    with pytest.raises(RedisConfigError, match="refused the credentials"):
        RedisEventReader(wrong).query()
    assert ship(one_event, server.url) == 1


def test_redis_without_stream_commands(one_event, redis_factory):
    server: RedisServer = redis_factory(config=['rename-command XADD ""'])
    with pytest.raises(RedisConfigError, match=r"does not have the command\(s\) XADD"):
        ship(one_event, server.url)
    server = redis_factory(config=['rename-command XREAD ""', 'rename-command XAUTOCLAIM ""'])
    with pytest.raises(RedisConfigError, match="XREAD, XAUTOCLAIM"):
        RedisEventReader(server.url).query()


def test_redis_without_stream_commands_nor_command_info(one_event, redis_factory):
    # COMMAND renamed too: the script's first XADD fails, before anything is written.
    server: RedisServer = redis_factory(
        config=['rename-command XADD ""', 'rename-command COMMAND ""']
    )
    with pytest.raises(RedisConfigError, match="does not have a command"):
        ship(one_event, server.url)
    client = server.client()
    assert client.keys("*") == []


@pytest.mark.parametrize(
    ("key", "kind"),
    [("oca:events", "string"), ("oca:meta", "list"), ("oca:session:s1", "set")],
)
def test_keys_of_another_type_under_the_prefix(one_event, redis_server, rclient, key, kind):
    {
        "string": lambda: rclient.set(key, "x"),
        "list": lambda: rclient.lpush(key, "x"),
        "set": lambda: rclient.sadd(key, "x"),
    }[kind]()
    with pytest.raises(RedisConfigError, match=f"key '{key}' holds a {kind}, not a"):
        ship(one_event, redis_server.url)
    # Nothing was written: no half batch.
    assert sorted(k.decode() for k in rclient.keys("*")) == [key]
    if key == "oca:events":
        with pytest.raises(RedisConfigError, match=r"wrong key type.*oca:events"):
            RedisEventReader(redis_server.url).query()
    # Another prefix works.
    assert ship(one_event, redis_server.url, prefix="mine") == 1


def test_a_config_error_in_the_background_is_reported_in_stats(one_event, redis_server, rclient):
    rclient.set("oca:events", "x")
    replicator = RedisReplicator(one_event, redis_server.url, retry_min=0.01, retry_max=0.05)
    replicator.start()
    wait_until(lambda: replicator.stats()["errors"] >= 2, what="errors to be counted")
    assert "holds a string" in replicator.stats()["last_error"]
    rclient.delete("oca:events")
    wait_until(lambda: replicator.stats()["shipped"] == 1, what="shipping once fixed")
    replicator.shutdown()


def test_appends_never_wait_for_redis_and_catch_up_later(tmp_path, redis_factory):
    server = RedisServer(tmp_path)  # not started: its port refuses connections
    stream = DurableStream(
        str(tmp_path / "ds.jsonl"),
        replicate_to=server.url,
        replicate_options={"host_id": "h", "retry_min": 0.01, "retry_max": 0.2},
    )
    try:
        append_events(stream, 500)
        wait_until(lambda: stream.stats()["replication"]["errors"] >= 1, what="an error")
        stats = stream.stats()["replication"]
        assert "cannot reach Redis" in stats["last_error"] and stats["shipped"] == 0
        server.start()
        wait_until(lambda: stream.stats()["replication"]["shipped"] == 500, what="catching up")
        append_events(stream, 20, seed=2)
        wait_until(lambda: stream.stats()["replication"]["lag"] == 0, what="following again")
    finally:
        stream.shutdown()
        server.stop()
    server.start()
    assert_exactly_once(server.client(), {"h": stream.path})
    server.stop()


def test_shutdown_with_redis_down_closes_without_raising(tmp_path):
    url = f"redis://127.0.0.1:{free_port()}"
    stream = DurableStream(str(tmp_path / "ds.jsonl"), replicate_to=url)
    append_events(stream, 10)
    replicator = stream._replicator
    stream.shutdown()
    assert replicator.closed and not replicator.running
    assert replicator.stats()["shipped"] == 0


def test_errors_are_one_class(one_event):
    assert issubclass(RedisConfigError, RedisStreamError) and issubclass(
        RedisConfigError, ValueError
    )
    assert issubclass(RedisUnavailableError, ConnectionError)
    assert RedisUnavailableError.retryable and not RedisConfigError.retryable
