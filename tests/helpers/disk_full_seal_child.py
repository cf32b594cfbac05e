"""Child process for tests/reliability/test_disk_full_sealing.py: the disk fills up exactly when
the active segment must be sealed.

Usage: disk_full_seal_child.py KIND API plain|zstd PATH

KIND says what cannot be written when the segment is sealed:

- ``tmpfs-header``: PATH is on a tiny tmpfs and a filler file takes every free page, so the new
  active segment cannot get room even for its snapshot header.
- ``tmpfs-snapshot``: the same with one page left: the header fits, the carried lines (the open
  checkpoints, more than a page of them) do not.
- ``rlimit-snapshot``: RLIMIT_FSIZE is set to the segment size while the open checkpoints are
  larger than a segment, so the new segment's carried lines cannot be written (Python ignores
  SIGXFSZ: the write fails with EFBIG).

API is ``store`` (a JsonlStore collecting checkpoint pairs) or ``stream`` (a DurableStream).

The scenario: open checkpoints, seal at least once (so sealed segments, compressed with ``zstd``,
already exist), fill the active segment up to its last event, make the disk full, then try
appends that must seal: each is a StoreWriteError, and the store, its files, its cache and its
open checkpoints are exactly as before. With ``zstd`` and ``tmpfs-header`` two pages are then freed:
sealing fits but compressing the sealed segment does not, which the keeper reports while the
store goes on. Then room is made and the same store seals, carries forward and (with ``zstd``)
compresses again. Asserts as it goes; prints one JSON line for the parent: the events
acknowledged, the checkpoints still open, the error messages and the final stats.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import resource
import string
import sys
import time
from typing import Any, Callable

from opencode_addons import JsonlStore, StoreWriteError
from opencode_addons.durable_stream import DurableStream

PAGE = os.sysconf("SC_PAGESIZE")
PAD = "x" * 900  # checkpoint and intent text; events carry `noise` of the same length
STORE_SEGMENT = 16 * 1024
STREAM_SEGMENT = (1 << 20) + 64 * 1024
SEALED_PLAIN = re.compile(r"events_[0-9]{20}\.jsonl")
PAIRS = [("cp.requested", ["id"], ["cp.approved"], ["checkpoint_id"])]


def event(n: int, size: int = 1) -> dict[str, Any]:
    return {"type": "fill", "stream_id": "s", "payload": {"n": n, "text": noise(n, size)}}


def noise(n: int, size: int) -> str:
    """As long as ``PAD * size``, but letters zstd cannot squeeze much (seeded by ``n``): a
    sealed 16 KiB segment of these events compresses to about 10 KiB, more than the two pages
    step 4 frees, so its compression fails however the freed pages are shared with the new
    active segment. With ``PAD`` (one letter repeated) a segment compressed to about 440 bytes,
    which fitted in a page the new segment had not taken yet: the step failed in one of six CI
    runs (0 of 15 runs on an idle machine)."""
    return "".join(random.Random(n).choices(string.ascii_letters, k=len(PAD) * size))


def wait_for(store: Any, condition: Callable[[dict[str, Any]], bool], what: str) -> None:
    """Waits for the keeper thread (a generous deadline, only so a bug cannot hang the test)."""
    deadline = time.monotonic() + 60
    while not condition(store.stats()):
        assert time.monotonic() < deadline, f"the keeper never {what}: {store.stats()}"
        time.sleep(0.01)


def fill_disk(directory: str) -> Callable[[int], None]:
    """Fills the filesystem with a filler file; returns a function freeing that many pages
    (all of the filler when asked for -1)."""
    filler = os.path.join(directory, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    chunk = b"f" * PAGE
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
                break
        # Also the last partial page's worth, so that not a byte is left.
        while True:
            try:
                if os.write(fd, b"f") == 0:
                    break
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
                break
    finally:
        os.close(fd)

    def free(pages: int) -> None:
        if pages < 0:
            os.remove(filler)
            return
        size = os.path.getsize(filler)
        used = -(-size // PAGE)
        os.truncate(filler, max(0, used - pages) * PAGE)

    return free


def listing(directory: str) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name != "filler")


def file_lines(path: str) -> list[bytes]:
    with open(path, "rb") as f:
        data = f.read().rstrip(b"\x00")
    assert data == b"" or data.endswith(b"\n"), f"partial line on disk: {data[-80:]!r}"
    return data.split(b"\n")[:-1]


def run(kind: str, api: str, codec: str, path: str) -> None:
    compress = codec == "zstd"
    directory = os.path.dirname(path)
    segment = STREAM_SEGMENT if api == "stream" else STORE_SEGMENT
    acked: list[dict[str, Any]] = []
    stream: Any = None
    if api == "stream":
        stream = DurableStream(
            path,
            max_cache_size=100_000,
            max_segment_bytes=segment,
            max_disk_bytes=None,
            compress_sealed=compress,
        )
        stream.subscribe("*", lambda e: acked.append(dict(e)))
        store: Any = stream._store
        append: Callable[[dict[str, Any]], Any] = stream.append
        extend: Callable[[list[dict[str, Any]]], Any] = stream.extend
    else:
        store = JsonlStore(
            path,
            max_cache_size=100_000,
            max_event_bytes=8000,
            max_segment_bytes=segment,
            max_disk_bytes=None,
            compress_sealed=compress,
            collect_pairs=PAIRS,
        )

        def append(e: dict[str, Any]) -> Any:
            stored = store.append(e)
            acked.append(dict(stored))
            return stored

        def extend(events: list[dict[str, Any]]) -> Any:
            stored = store.extend(events)
            acked.extend(dict(e) for e in stored)
            return stored

    open_ids: list[str] = []

    def open_checkpoint(k: int, size: int = 1) -> None:
        question = f"checkpoint {k}? " + PAD * size
        if stream is not None:
            open_ids.append(stream.request_checkpoint("s", question, ["yes", "no"], "agent").id)
        else:
            append({"type": "cp.requested", "payload": {"id": f"cp-{k}", "q": question}})
            open_ids.append(f"cp-{k}")

    def close_checkpoint(checkpoint_id: str) -> None:
        if stream is not None:
            assert stream.approve_checkpoint(checkpoint_id, "user", "yes")
        else:
            append({"type": "cp.approved", "payload": {"checkpoint_id": checkpoint_id}})
        open_ids.remove(checkpoint_id)

    # 1. Open checkpoints: a small snapshot (it fits in a page) for tmpfs-header; more than a
    #    page of them for tmpfs-snapshot; more than a segment of them for rlimit-snapshot.
    count = {"tmpfs-header": 2, "tmpfs-snapshot": 8}.get(kind, segment // 1000 + 4)
    for k in range(count):
        open_checkpoint(k)
    n = 0
    # 2. Seal at least once, then fill the active segment until the next event would seal it.
    while store.stats()["segments_sealed"] < 1:
        append(event(n))
        n += 1
    if kind != "rlimit-snapshot":
        while store.stats()["file_bytes"] + 2400 < segment:
            append(event(n))
            n += 1
    else:
        # The active segment starts with a snapshot larger than a segment: one event in it, and
        # the next append seals.
        append(event(n))
        n += 1
    sealed_before = store.stats()["segments_sealed"]
    if compress:
        wait_for(store, lambda s: s["segments_compressed"] == sealed_before, "compressed")

    # 3. The disk is full (or the file size limit is the segment size).
    free: Callable[[int], None]
    if kind == "rlimit-snapshot":
        _soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (segment, hard))

        def free(pages: int) -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))

    else:
        free = fill_disk(directory)
        if kind == "tmpfs-snapshot":
            free(1)

    stats_before = dict(store.stats())
    files_before = listing(directory)
    active_before = file_lines(path)
    cache_before = [e["seq"] for e in store.to_list()]
    history_before = [e["seq"] for e in store.history]
    acked_before = len(acked)
    open_before = list(open_ids)
    # Every one of these needs a new segment (more than the room left in the active one).
    attempts: list[Callable[[], Any]] = [
        lambda: append(event(n, size=3)),
        lambda: extend([event(n + 1 + k) for k in range(3)]),
        lambda: open_checkpoint(10_000, size=3),
    ]
    if stream is not None:
        attempts.append(lambda: stream.create_intent({"task": PAD * 3, "stream_id": "s"}))
    errors: list[str] = []
    for attempt in attempts:
        try:
            attempt()
        except StoreWriteError as error:
            errors.append(str(error))
        else:
            raise AssertionError("an append that had to seal succeeded on a full disk")
        assert dict(store.stats()) == stats_before
        assert listing(directory) == files_before, "a failed seal left or moved a file"
        assert file_lines(path) == active_before
        assert [e["seq"] for e in store.to_list()] == cache_before
        assert [e["seq"] for e in store.history] == history_before
        assert len(acked) == acked_before and open_ids == open_before
        if stream is not None:
            assert sorted(c.id for c in stream.pending_checkpoints) == sorted(open_ids)
            assert stream.active_intents == []

    # 4. (zstd, tmpfs-header) Two pages come back: the seal and the event fit, compressing does not.
    compress_failed = None
    if compress and kind == "tmpfs-header":
        free(2)
        append(event(n, size=3))
        n += 1
        sealed_now = store.stats()["segments_sealed"]
        assert sealed_now == sealed_before + 1
        wait_for(store, lambda s: s["compress_failures"] == 1, "reported the failure")
        stats = store.stats()
        assert stats["segments_compressed"] == sealed_before
        assert "No space left on device" in stats["keeper_error"], stats["keeper_error"]
        compress_failed = [name for name in listing(directory) if SEALED_PLAIN.fullmatch(name)]
        assert len(compress_failed) == 1, listing(directory)
        assert not any(name.endswith(".tmp") for name in listing(directory))

    # 5. Room again: the same store seals, carries forward and compresses, with no gap in seq.
    free(-1)
    sealed_then = store.stats()["segments_sealed"]
    close_checkpoint(open_ids[0])
    more = 0
    while store.stats()["segments_sealed"] < sealed_then + 2:
        append(event(100_000 + more))
        more += 1
    open_checkpoint(20_000)
    seqs = [e["seq"] for e in acked]
    assert seqs == list(range(1, len(seqs) + 1)), "a seq is missing or repeated"
    if compress:
        sealed_total = store.stats()["segments_sealed"]
        done = sealed_total - (1 if compress_failed else 0)
        wait_for(store, lambda s: s["segments_compressed"] == done, "compressed")
    final = dict(store.stats())
    if stream is not None:
        stream.shutdown()
    else:
        store.close()
    result = {
        "acked": acked,
        "open": open_ids,
        "errors": errors,
        "stats": final,
        "compress_failed": compress_failed,
    }
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    run(*sys.argv[1:5])
