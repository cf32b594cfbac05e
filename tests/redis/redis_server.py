"""A real ``redis-server`` process for the tests and benchmarks: a free 127.0.0.1 port, its own
directory, AOF on (``appendfsync always``); SIGKILL and restart keep port and directory."""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    """A free port below Linux's ephemeral range (32768-60999), so that no outgoing connection
    takes it between now and the server's start (a test may start the server much later)."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(20_000, 32_768)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found in 20000-32767")


class RedisServer:
    """One redis-server process; ``kill()`` (SIGKILL) and ``start()`` again keep its port and
    directory, so a restart loads the AOF."""

    def __init__(self, directory: Path, config: Sequence[str] = (), password: Optional[str] = None):
        self.directory = directory
        self.port = free_port()
        self.password = password
        self.config = list(config)
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.starts = 0

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _write_config(self) -> Path:
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.directory}",
            "appendonly yes",
            "appendfsync always",
            'save ""',
            "daemonize no",
            "protected-mode no",
            f"logfile {self.directory / 'redis.log'}",
            *self.config,
        ]
        if self.password:
            lines.append(f"requirepass {self.password}")
        path = self.directory / "redis.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 20.0) -> None:
        assert REDIS_SERVER is not None
        config = self._write_config()
        self.proc = subprocess.Popen(
            [REDIS_SERVER, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.starts += 1
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        import redis

        deadline = time.monotonic() + timeout
        client = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2
        )
        try:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"redis-server exited ({self.proc.returncode}): {log}")
                try:
                    if client.ping():
                        return
                except redis.BusyLoadingError:
                    pass
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not answer in time")
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown save, the AOF is whatever was fsynced."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, protocol=2)
