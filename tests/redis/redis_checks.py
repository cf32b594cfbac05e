"""Shared helpers of the Redis tests: event generation and the exactly-once check."""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, Callable

import opencode_addons as oa

TYPES = ["execution.text_delta", "execution.tool_start", "execution.tool_finish", "message.x"]
ACTORS = ["system", "build", "plan"]


def make_event(rng: random.Random, i: int, sessions: int, past: bool = False) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": rng.choice(TYPES),
        "stream_id": f"ses_{rng.randrange(sessions)}",
        "actor": rng.choice(ACTORS),
        "payload": {"i": i, "text": "x" * rng.randrange(0, 200), "nested": {"k": [1, "é"]}},
    }
    if past:
        # A caller-supplied timestamp, not monotonic (floats too).
        event["timestamp"] = rng.choice([1_000, 2_000.5, 5_000, 1_700_000_000_000 + i])
    return event


def append_events(store: Any, count: int, sessions: int = 5, seed: int = 1, past: bool = False):
    rng = random.Random(seed)
    return [store.append(make_event(rng, i, sessions, past)) for i in range(count)]


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Polls ``condition`` until true; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.01)


def seq_of(line: bytes) -> int:
    return int(line[line.rindex(b'"seq":') + 6 : -1])


def entries(client: Any, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return list(client.xrange(key))


def assert_exactly_once(
    client: Any, files: Mapping[str, str], prefix: str = "oca", check_global: bool = True
) -> None:
    """Every host's file, line for line, is in Redis exactly once and in seq order: in the
    global key (per host) and in each session's key; the host's marker is its last seq."""
    global_by_host: dict[bytes, list[tuple[int, bytes]]] = defaultdict(list)
    for _id, fields in entries(client, f"{prefix}:events"):
        global_by_host[fields[b"host"]].append((int(fields[b"seq"]), fields[b"data"]))
    sessions: dict[tuple[bytes, str], list[tuple[int, bytes]]] = defaultdict(list)
    for key in client.scan_iter(match=f"{prefix}:session:*"):
        sid = key.decode().split(":session:", 1)[1]
        for _id, fields in entries(client, key.decode()):
            assert json.loads(fields[b"data"])["stream_id"] == sid
            sessions[(fields[b"host"], sid)].append((int(fields[b"seq"]), fields[b"data"]))
    for host, path in files.items():
        expected = [(seq_of(line), line) for line in oa.read_events(path, raw=True)]
        assert expected, f"no events in {path}"
        if check_global:
            assert global_by_host[host.encode()] == expected, f"global key, host {host}"
        per_session: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
        for seq, line in expected:
            per_session[json.loads(line)["stream_id"]].append((seq, line))
        for sid, want in per_session.items():
            assert sessions.get((host.encode(), sid), []) == want, f"session {sid}, host {host}"
        extra = {s for (h, s) in sessions if h == host.encode()} - set(per_session)
        assert not extra, f"session keys with no events in the file: {extra}"
        marker = client.hget(f"{prefix}:meta", f"shipped:{host}")
        assert marker is not None and int(marker) == expected[-1][0]
