"""Fixtures of the Redis tests: a real ``redis-server`` per test (``redis_server.py``), with AOF on
(``appendfsync always``), stopped afterwards.

Without ``redis-server`` (or redis-py) these tests skip with that reason; under CI (``CI=true``)
they fail instead, since CI installs the package (``.ci/run``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from redis_server import REDIS_SERVER, RedisServer  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() == "true"


def _require(condition: bool, reason: str) -> None:
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason}; CI must provide it (.ci/run installs redis-server)")
    pytest.skip(reason)


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Any]:
    """``make(config=(), password=None)`` starts another server; all are stopped at the end."""
    _require(REDIS_SERVER is not None, "redis-server is not installed (apt install redis-server)")
    try:
        import redis  # noqa: F401
    except ImportError:
        _require(False, "redis-py is not installed (pip install 'opencode-addons[redis]')")
    servers: list[RedisServer] = []

    def make(config: Sequence[str] = (), password: Optional[str] = None) -> RedisServer:
        directory = tmp_path / f"redis{len(servers)}"
        directory.mkdir()
        server = RedisServer(directory, config, password)
        servers.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def redis_server(redis_factory: Any) -> RedisServer:
    server: RedisServer = redis_factory()
    return server


@pytest.fixture
def rclient(redis_server: RedisServer) -> Iterator[Any]:
    client = redis_server.client()
    try:
        yield client
    finally:
        client.close()
