"""Child process for tests/test_signals.py: a host with a DurableStream waiting for a signal.

Usage: signal_child.py MODE PATH

MODE is ``async`` (handlers on the running asyncio loop, a CheckpointManager with a pending
checkpoint, group durability), ``sync`` (no loop: signal.signal handlers, flush durability),
``hang`` (sync, plus a registered component whose shutdown hangs; timeout 0.5 s per component)
or ``atexit`` (no signal handlers: the atexit hook closes the stream when the script ends).

Every event is ``{"type": "work", "payload": {"n": n, ...}}``; ``<seq>`` is printed (one write)
once its append returned, after ``READY`` once setup is done. Logging goes to stderr.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import Any

from opencode_addons.orchestrator import CheckpointManager, register_component
from opencode_addons.signals import install_atexit_hook, install_signal_handlers
from opencode_addons.stream_singleton import initialize_durable_stream


def say(text: str) -> None:
    os.write(1, text.encode() + b"\n")


def work(n: int) -> dict[str, Any]:
    return {"type": "work", "stream_id": "s", "payload": {"n": n, "text": "é😀" * (n % 50)}}


class Hanging:
    name = "hanging"
    closed = False

    def stats(self) -> dict[str, Any]:
        return {}

    def shutdown(self) -> None:
        time.sleep(60)


def setup(path: str, durability: str) -> Any:
    stream = initialize_durable_stream(store_path=path, durability=durability)
    checkpoint = stream.request_checkpoint("s", "persist me", ["yes", "no"], "agent")
    say(f"CHECKPOINT {checkpoint.id}")
    return stream


def sync_main(mode: str, path: str) -> None:
    stream = setup(path, "flush")
    timeout = 0.5 if mode == "hang" else 5.0
    if mode == "hang":
        register_component("task_observer", Hanging())
    if mode == "atexit":
        install_atexit_hook()
    else:
        install_signal_handlers(timeout_per_component=timeout)
    say("READY")
    n = 0
    while True:
        say(str(stream.append(work(n))["seq"]))
        n += 1
        if mode == "atexit" and n == 500:
            return  # exit without closing anything: the hook must
        time.sleep(0.0005)


async def async_main(path: str) -> None:
    stream = setup(path, "group")
    manager = register_component("checkpoint_manager", CheckpointManager(stream))
    pending = manager.request("s", "resolve me on shutdown", ["a", "b"], "agent")
    say(f"MANAGED {pending.id}")
    install_signal_handlers()
    say("READY")
    n = 0
    while True:
        say(str(stream.append(work(n))["seq"]))
        n += 1
        await asyncio.sleep(0.0005)


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "async":
        asyncio.run(async_main(path))
    else:
        sync_main(mode, path)


if __name__ == "__main__":
    main()
