"""A full disk while sealing: a StoreWriteError on the append that triggered it, the store stays
usable, and nothing already acknowledged is lost (issue 9's failure rule).

The scenario runs in a child process (tests/helpers/disk_full_seal_child.py, which says what it
checks as it goes): the disk fills up exactly when the active segment must be sealed, so the new
active segment cannot be allocated (``tmpfs-header``) or its snapshot's carried lines cannot be
written (``tmpfs-snapshot`` on a tmpfs, ``rlimit-snapshot`` under RLIMIT_FSIZE). The parent then
checks the files the child left: every acknowledged event once, in order, nothing that failed;
every checkpoint still open found again on reopen; plain and compressed segments alike.

The tmpfs variants need root and a working ``mount`` (skipped with the reason otherwise); the
RLIMIT_FSIZE variant always runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from opencode_addons import JsonlStore, read_events
from opencode_addons.durable_stream import DurableStream

CHILD = Path(__file__).parents[1] / "helpers" / "disk_full_seal_child.py"
PAIRS = [("cp.requested", ["id"], ["cp.approved"], ["checkpoint_id"])]
GROW = re.compile(r"cannot grow the log to (\d+) bytes")
PAGE = os.sysconf("SC_PAGESIZE")


def run_child(kind: str, api: str, codec: str, path: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(CHILD), kind, api, codec, str(path)],
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def check(path: Path, kind: str, api: str, codec: str, result: dict[str, Any]) -> None:
    # Each failed append said why, naming the store and the size it could not reach.
    no_space = "File too large" if kind.startswith("rlimit") else "No space left on device"
    assert len(result["errors"]) == (4 if api == "stream" else 3)
    for message in result["errors"]:
        assert message.startswith(f"{path}: cannot grow the log to "), message
        assert no_space in message, message
        wanted = int(GROW.search(message).group(1))  # type: ignore[union-attr]
        if kind == "tmpfs-header":
            # The new segment's first allocation: its snapshot header.
            assert wanted < 200, message
        else:
            # The header was written; its carried lines were not.
            assert wanted > PAGE, message

    # Every acknowledged event is in the store's files once, in order; no failed one is.
    acked = result["acked"]
    assert len(acked) > 20
    events = read_events(path)
    assert events == acked
    assert [e["seq"] for e in events] == list(range(1, len(acked) + 1))
    sealed = sorted(path.parent.glob("events_*"))
    stats = result["stats"]
    assert len(sealed) == stats["segments_sealed"] >= 3
    assert not [f for f in sealed if f.name.endswith(".tmp")]
    if codec == "zstd":
        plain = [f.name for f in sealed if not f.name.endswith(".zst")]
        assert plain == (result["compress_failed"] or [])
        assert stats["segments_compressed"] == len(sealed) - len(plain)
    else:
        assert all(f.name.endswith(".jsonl") for f in sealed)

    # Reopened: clean, the same events, and exactly the checkpoints left open.
    open_ids = result["open"]
    assert len(open_ids) >= 2
    if api == "stream":
        with DurableStream(path, max_cache_size=100_000, max_segment_bytes=(1 << 20) + 65536) as s:
            recovery = s.recovery
            found = sorted(c.id for c in s.resume().pending_checkpoints)
            assert s.append({"type": "after.reopen"})["seq"] == len(acked) + 1
    else:
        with JsonlStore(
            path, max_event_bytes=8000, max_segment_bytes=16 * 1024, collect_pairs=PAIRS
        ) as store:
            recovery = store.recovery
            found = sorted(e["payload"]["id"] for e in store.collected())
            assert list(store)[-1] == acked[-1]
            assert store.append({"type": "after.reopen"})["seq"] == len(acked) + 1
    assert (recovery["corrupt_lines"], recovery["torn_tail_bytes"]) == (0, 0), recovery
    assert recovery["duplicate_lines"] == 0, recovery
    assert found == sorted(open_ids)


@pytest.fixture
def tmpfs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A small tmpfs (size from the test's parameter) mounted at a fresh directory."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the RLIMIT_FSIZE variant covers sealing")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount/umount command; the RLIMIT_FSIZE variant covers sealing")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={request.param}", "tmpfs", str(mount_point)],
        capture_output=True,
        timeout=30,
    )
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip()
        pytest.skip(f"mounting a tmpfs is not permitted here ({reason}); RLIMIT_FSIZE covers it")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False, timeout=30)


@pytest.mark.parametrize("codec", ["plain", "zstd"])
@pytest.mark.parametrize("kind", ["tmpfs-header", "tmpfs-snapshot"])
@pytest.mark.parametrize(
    ("api", "tmpfs"), [("store", "256k"), ("stream", "8m")], indirect=["tmpfs"]
)
def test_full_tmpfs_while_sealing(tmpfs: Path, api: str, kind: str, codec: str) -> None:
    path = tmpfs / "events.jsonl"
    check(path, kind, api, codec, run_child(kind, api, codec, path))


@pytest.mark.parametrize("codec", ["plain", "zstd"])
def test_file_size_limit_while_sealing(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "events.jsonl"
    result = run_child("rlimit-snapshot", "store", codec, path)
    check(path, "rlimit-snapshot", "store", codec, result)
