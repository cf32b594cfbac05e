"""Child process for tests/test_disk_full.py: fill the disk under a store, then free space.

Usage: disk_full_child.py rlimit|tmpfs store|stream DURABILITY PATH

``rlimit``: RLIMIT_FSIZE is lowered to LIMIT bytes in this process (Python ignores SIGXFSZ, so
growing the file fails with EFBIG) and raised again to make room. ``tmpfs``: PATH is on a tiny
filesystem; a filler file next to it takes part of the space and is deleted to make room.

The scenario asserts as it goes (a failed assertion exits non-zero with a traceback) and prints
one JSON line for the parent: the events acknowledged (as stored) and the error messages.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from typing import Any, Callable

from opencode_addons import JsonlStore, StoreError, StoreWriteError
from opencode_addons.durable_stream import DurableStream

LIMIT = 256 * 1024
FILLER = 96 * 1024
BODY = "é" * 400 + "x" * 200  # ~1 KB per event line


def event(n: int, size: int = 1) -> dict[str, Any]:
    return {
        "id": f"ev-{n}",
        "type": "fill",
        "stream_id": "s",
        "payload": {"n": n, "t": BODY * size},
    }


def file_lines(path: str) -> list[bytes]:
    """The complete lines in the file now; asserts nothing else is in it but a NUL tail."""
    with open(path, "rb") as f:
        data = f.read().rstrip(b"\x00")
    assert data == b"" or data.endswith(b"\n"), f"partial line on disk: {data[-80:]!r}"
    return data.split(b"\n")[:-1]


def run(kind: str, api: str, durability: str, path: str) -> None:
    make_room: Callable[[], None]
    if kind == "rlimit":
        _soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, hard))

        def make_room() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))

    else:
        filler = os.path.join(os.path.dirname(path), "filler")
        with open(filler, "wb") as f:
            f.write(b"f" * FILLER)

        def make_room() -> None:
            os.remove(filler)

    notified: list[int] = []
    if api == "stream":
        stream = DurableStream(path, durability=durability, max_cache_size=1000)
        stream.subscribe("*", lambda e: notified.append(e["seq"]))
        target: Any = stream
        store: Any = stream._store
    else:
        store = target = JsonlStore(path, durability=durability, max_cache_size=1000)

    acked: list[dict[str, Any]] = []
    errors: list[str] = []
    n = 0
    # 1. Fill until the file cannot grow.
    while True:
        try:
            acked.append(dict(target.append(event(n))))
        except StoreWriteError as error:
            errors.append(str(error))
            break
        n += 1
        assert n < 10_000, "the file never stopped growing"
    assert len(acked) > 10, "the limit was hit too early to mean anything"
    before = dict(store.stats())
    cache_before = [e["seq"] for e in store.to_list()]
    history_before = [e["seq"] for e in store.history]
    assert before["next_seq"] == acked[-1]["seq"] + 1
    assert [json.loads(line)["seq"] for line in file_lines(path)] == [e["seq"] for e in acked]

    # 2. Still full: a single append, a batch whose first event alone might fit, a checkpoint.
    attempts: list[Callable[[], Any]] = [
        lambda: target.append(event(n)),
        lambda: target.append(event(n + 1, size=3)),
        lambda: target.extend([event(n + 2 + k, size=0) for k in range(200)]),
    ]
    if api == "stream":
        # Bigger than the room left (less than one ~1 KB event line).
        question = "deploy? " + BODY * 2
        attempts.append(lambda: stream.request_checkpoint("s", question, ["yes", "no"], "agent"))
        attempts.append(lambda: stream.create_intent({"task": BODY * 2, "stream_id": "s"}))
    for attempt in attempts:
        try:
            attempt()
        except StoreWriteError as error:
            errors.append(str(error))
        else:
            raise AssertionError("an append succeeded on a full disk")
        assert dict(store.stats()) == before
        assert [e["seq"] for e in store.to_list()] == cache_before
        assert [e["seq"] for e in store.history] == history_before
        assert store.query(after_seq=acked[-1]["seq"]) == []
        assert [json.loads(line)["seq"] for line in file_lines(path)] == [e["seq"] for e in acked]
    if api == "stream":
        assert notified == [e["seq"] for e in acked], "a subscriber saw a failed event"
        assert stream.pending_checkpoints == [] and stream.active_intents == []
        assert stream.stats()["pending_checkpoints"] == 0

    # 3. Space comes back: the same store keeps working, with no gap in seq.
    make_room()
    after = [dict(target.append(event(10_000)))]
    after += [dict(e) for e in target.extend([event(10_001 + k) for k in range(3)])]
    assert [e["seq"] for e in after] == [acked[-1]["seq"] + 1 + k for k in range(4)]
    if api == "stream":
        checkpoint = stream.request_checkpoint("s", "deploy?", ["yes", "no"], "agent")
        assert stream.approve_checkpoint(checkpoint.id, "user", "yes")
        assert notified[-2:] == [acked[-1]["seq"] + 5, acked[-1]["seq"] + 6]
        assert stream.pending_checkpoints == []
    store.sync()
    if api == "stream":
        stream.shutdown()
    else:
        store.close()
    assert all(isinstance(e, str) and e for e in errors)
    assert issubclass(StoreWriteError, StoreError)
    sys.stdout.write(json.dumps({"acked": acked, "after": after, "errors": errors}) + "\n")


if __name__ == "__main__":
    run(*sys.argv[1:5])
