"""Guarantee 4: a full disk (or a file-size limit) is a clear StoreWriteError that changes nothing.

The scenario runs in a child process (tests/helpers/disk_full_child.py): it appends until the file
cannot grow, checks that every failed append (single, batch, checkpoint, intent) raised
``StoreWriteError``, left the file with complete lines only and kept the event out of the cache,
the history, the projections and the subscribers; then it makes room and checks that the same
store keeps working with no gap in ``seq``. The parent then checks the file it left and reopens it.

Two ways to fill the disk: ``RLIMIT_FSIZE`` lowered in the child (always runs), and a 256 KiB
tmpfs (needs root and a working ``mount``; skipped with the reason otherwise).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from opencode_addons import JsonlStore

CHILD = Path(__file__).parents[1] / "helpers" / "disk_full_child.py"


def run_child(kind: str, api: str, durability: str, path: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, str(CHILD), kind, api, durability, str(path)],
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return json.loads(proc.stdout)


def check_file(path: Path, result: dict, expect_no_space: str) -> None:
    for message in result["errors"]:
        assert message.startswith(f"{path}: cannot grow the log to "), message
        assert expect_no_space in message, message
    expected = result["acked"] + result["after"]
    data = path.read_bytes()
    assert data.endswith(b"\n") and b"\x00" not in data, "file not trimmed or has a partial line"
    lines = [json.loads(line) for line in data.split(b"\n")[:-1]]
    # The failed events are nowhere; everything acknowledged is, in order, exactly once.
    assert lines[: len(expected)] == expected
    assert all(line["type"] != "fill" for line in lines[len(expected) :])
    assert not any(
        line["payload"].get("n", -1) in range(len(result["acked"]), 10_000) for line in lines
    )
    with JsonlStore(path) as store:
        rec = store.recovery
        assert (rec["corrupt_lines"], rec["torn_tail_bytes"], rec["duplicate_lines"]) == (0, 0, 0)
        assert rec["events"] == len(lines)
        assert list(store) == lines


@pytest.mark.parametrize("durability", ["flush", "fsync", "group"])
@pytest.mark.parametrize("api", ["store", "stream"])
def test_file_size_limit(tmp_path, api, durability):
    path = tmp_path / "events.jsonl"
    result = run_child("rlimit", api, durability, path)
    check_file(path, result, "File too large")


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 256 KiB tmpfs mounted at a fresh directory, unmounted afterwards."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the RLIMIT_FSIZE variant covers disk full")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount/umount command; the RLIMIT_FSIZE variant covers disk full")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
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


@pytest.mark.parametrize("api", ["store", "stream"])
def test_full_tmpfs(tiny_tmpfs, api):
    path = tiny_tmpfs / "events.jsonl"
    result = run_child("tmpfs", api, "flush", path)
    check_file(path, result, "No space left on device")
