"""The CLI with Redis: ``ship``, ``query --redis``, ``tail --redis``, and one-line errors."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import opencode_addons as oa
import pytest
from opencode_addons.cli import main
from opencode_addons.redis_streams import RedisReplicator
from redis_checks import assert_exactly_once, make_event, wait_until
from redis_server import RedisServer, free_port


@pytest.fixture
def store_file(tmp_path: Path) -> str:
    path = str(tmp_path / "events.jsonl")
    rng = random.Random(4)
    with oa.JsonlStore(path) as store:
        for i in range(300):
            store.append(make_event(rng, i, sessions=4, past=i % 9 == 0))
    return path


def run(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ship_once_then_query_and_tail_read_what_the_file_holds(capsys, store_file, redis_server):
    url = redis_server.url
    code, out, err = run(capsys, "ship", store_file, "--redis", url, "--once", "--host-id", "c")
    assert code == 0 and err == ""
    assert out.startswith(f"shipped 300 events from {store_file} to {url} (host c, at seq 300")
    assert_exactly_once(redis_server.client(), {"c": store_file})
    assert run(capsys, "ship", store_file, "--redis", url, "--once", "--host-id", "c")[
        1
    ].startswith("shipped 0 events")
    for filters in (
        [],
        ["--type", "message.x", "execution.tool_start", "--newest", "--limit", "7"],
        ["--stream-id", "ses_2", "--since", "1500", "--until", "1700000000100"],
        ["--actor", "plan"],
    ):
        from_file = run(capsys, "query", store_file, *filters)
        from_redis = run(capsys, "query", "--redis", url, *filters)
        assert from_redis == from_file and from_file[0] == 0
    assert run(capsys, "tail", "--redis", url, "-n", "5") == run(
        capsys, "tail", store_file, "-n", "5"
    )
    code, out, _ = run(capsys, "tail", "--redis", url, "-n", "3", "--stream-id", "ses_1")
    assert out.encode().splitlines() == oa.read_events(store_file, raw=True, stream_id="ses_1")[-3:]


def test_ship_with_another_prefix_and_exact_trim(capsys, store_file, redis_server, rclient):
    code, _, _ = run(
        capsys,
        "ship",
        store_file,
        "--redis",
        redis_server.url,
        "--once",
        "--prefix",
        "p2",
        "--session-maxlen",
        "10",
        "--global-maxlen",
        "20",
        "--exact-trim",
    )
    assert code == 0
    assert rclient.xlen("p2:events") == 20 and rclient.xlen("p2:session:ses_0") == 10
    code, out, _ = run(capsys, "query", "--redis", redis_server.url, "--prefix", "p2")
    assert out.encode().splitlines() == oa.read_events(store_file, raw=True)[-20:]


def test_ship_follows_until_terminated(store_file, redis_server, rclient):
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "opencode_addons",
            "ship",
            store_file,
            "--redis",
            redis_server.url,
            "--host-id",
            "f",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while rclient.xlen("oca:events") < 300 and time.monotonic() < deadline:
            time.sleep(0.02)
        with oa.JsonlStore(store_file) as store:
            store.append({"type": "late", "stream_id": "ses_0"})
        while rclient.xlen("oca:events") < 301 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        child.terminate()
        out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert out.startswith("shipped 301 events")
    assert_exactly_once(rclient, {"f": store_file})


def test_tail_follow_from_redis(store_file, redis_server, rclient):
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "opencode_addons",
            "tail",
            "--redis",
            redis_server.url,
            "-n",
            "0",
            "-f",
            "--max-events",
            "3",
            "--max-seconds",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # Ship once the tail is blocked in XREAD (events before it started are not printed).
    wait_until(
        lambda: any(c.get("cmd") == "xread" for c in rclient.client_list()), what="XREAD BLOCK"
    )
    with RedisReplicator(store_file, redis_server.url) as replicator:
        replicator.run_once()
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.splitlines() == oa.read_events(store_file, raw=True)[:3]


def one_line_error(capsys: Any, *argv: str) -> tuple[int, str]:
    code, out, err = run(capsys, *argv)
    assert out == "" and err.endswith("\n") and err.count("\n") == 1, err
    return code, err


def test_errors_are_one_line(capsys, store_file, redis_factory):
    refused = f"redis://127.0.0.1:{free_port()}"
    code, err = one_line_error(capsys, "ship", store_file, "--redis", "http://x", "--once")
    assert code == 2 and "bad Redis URL 'http://x'" in err
    code, err = one_line_error(capsys, "ship", store_file, "--redis", refused, "--once")
    assert code == 1 and "cannot reach Redis" in err and "refused" in err
    code, err = one_line_error(capsys, "query", "--redis", refused)
    assert code == 1 and "cannot reach Redis" in err
    code, err = one_line_error(capsys, "tail", "--redis", refused, "-f")
    assert code == 1 and "cannot reach Redis" in err
    server: RedisServer = redis_factory(password="pw")
    code, err = one_line_error(
        capsys, "ship", store_file, "--redis", server.url.replace("pw", "no"), "--once"
    )
    assert code == 2 and "refused the credentials" in err and ":no@" not in err
    server = redis_factory(config=['rename-command XADD ""'])
    code, err = one_line_error(capsys, "ship", store_file, "--redis", server.url, "--once")
    assert code == 2 and "XADD" in err
    server = redis_factory()
    server.client().set("oca:events", "x")
    code, err = one_line_error(capsys, "ship", store_file, "--redis", server.url, "--once")
    assert code == 2 and "key 'oca:events' holds a string" in err
    code, err = one_line_error(capsys, "query", "--redis", server.url)
    assert code == 2 and "wrong key type" in err


def test_usage_errors(capsys, store_file, tmp_path):
    url = "redis://127.0.0.1:1"
    assert one_line_error(capsys, "query")[0] == 2
    assert one_line_error(capsys, "query", store_file, "--redis", url)[0] == 2
    assert one_line_error(capsys, "tail", store_file, "--stream-id", "s")[0] == 2
    code, err = one_line_error(capsys, "ship", str(tmp_path / "missing.jsonl"), "--redis", url)
    assert code == 2 and "no such file" in err
    code, err = one_line_error(capsys, "ship", str(tmp_path), "--redis", url)
    assert code == 2 and "is a directory" in err
