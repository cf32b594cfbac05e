"""Guarantee 6: SIGTERM/SIGINT shut a host down gracefully; an atexit hook closes what is open.

Each case runs tests/helpers/signal_child.py: a DurableStream registered as a component, a pending
checkpoint on the stream, events being appended and acknowledged on stdout. After the signal the
child must exit (128 + signum) within a generous bound, having logged the shutdown, and leave a
complete file: every acknowledged event present, trimmed (no NUL tail, nothing torn), the
stream's checkpoint still pending for resume(), a CheckpointManager's checkpoint resolved.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fakes import FakeComponent
from opencode_addons import component_registry
from opencode_addons.durable_stream import DurableStream
from opencode_addons.signals import install_atexit_hook, install_signal_handlers

CHILD = Path(__file__).parents[1] / "helpers" / "signal_child.py"
# "Exits at all": far above the 5 s per component the children use.
EXIT_BOUND = 60


def start(mode: str, path: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), mode, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    info: dict[str, str] = {}
    while True:
        line = proc.stdout.readline().decode().strip()
        if not line:
            proc.kill()
            pytest.fail(f"child died during setup: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
        if line == "READY":
            return proc, info
        key, value = line.split()
        info[key] = value


def acknowledged(proc: subprocess.Popen, at_least: int) -> list[int]:
    """Reads acknowledged seqs until ``at_least`` were seen."""
    assert proc.stdout is not None
    seqs: list[int] = []
    while len(seqs) < at_least:
        line = proc.stdout.readline()
        assert line.endswith(b"\n"), "the child stopped early"
        seqs.append(int(line))
    return seqs


def finish(proc: subprocess.Popen) -> tuple[list[int], str]:
    """Waits for the exit; returns the seqs acknowledged meanwhile and stderr."""
    assert proc.stdout is not None and proc.stderr is not None
    # Not communicate(): with a timeout it bypasses what readline() already buffered.
    killer = threading.Timer(EXIT_BOUND, proc.kill)
    killer.start()
    try:
        out = proc.stdout.read()
        err = proc.stderr.read()
        proc.wait()
    finally:
        killer.cancel()
    assert proc.returncode != -signal.SIGKILL, f"no exit within {EXIT_BOUND}s"
    seqs = [int(line) for line in out.split(b"\n")[:-1] if line.strip().isdigit()]
    return seqs, err.decode(errors="replace")


def check_file(path: Path, acked: list[int], pending_id: str) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n") and b"\x00" not in data, "store not closed cleanly (NUL tail)"
    events = [json.loads(line) for line in data.split(b"\n")[:-1]]
    by_seq = {e["seq"]: e for e in events}
    assert [e["seq"] for e in events] == sorted(by_seq)
    for seq in acked:
        assert by_seq[seq]["type"] == "work", f"acknowledged seq {seq} missing"
    with DurableStream(path) as stream:
        rec = stream.recovery
        assert rec["torn_tail_bytes"] == rec["padding_bytes"] == rec["corrupt_lines"] == 0, rec
        assert not rec["unterminated_last_line"]
        # The stream's own checkpoint survived the shutdown, pending, for resume().
        assert [c.id for c in stream.resume().pending_checkpoints] == [pending_id]
    return events


@pytest.mark.parametrize(
    ("mode", "signum"),
    [
        ("sync", signal.SIGTERM),
        ("sync", signal.SIGINT),
        ("async", signal.SIGTERM),
        ("async", signal.SIGINT),
    ],
)
def test_signal_shuts_down_and_exits(tmp_path, mode, signum):
    path = tmp_path / "events.jsonl"
    proc, info = start(mode, path)
    acked = acknowledged(proc, 200)
    proc.send_signal(signum)
    more, err = finish(proc)
    assert proc.returncode == 128 + signum, err
    name = signal.Signals(signum).name
    assert f"{name} received: shutting down" in err
    assert "shutdown_all finished (ok)" in err, err
    assert "forcing it" not in err, "the watchdog had to end the process"
    assert "durable stream" in err and "shut down" in err
    pending = 2 if mode == "async" else 1  # the manager's too, until it resolves it
    assert f"{pending} pending checkpoint(s) and 0 active intent(s) stay in" in err
    events = check_file(path, acked + more, info["CHECKPOINT"])
    if mode == "async":
        # The CheckpointManager resolved its own checkpoint: rejected with reason "shutdown".
        rejected = [e for e in events if e["type"] == "checkpoint.rejected"]
        assert [e["payload"]["checkpoint_id"] for e in rejected] == [info["MANAGED"]]
        assert rejected[0]["payload"]["reason"] == "shutdown"


def test_hanging_component_is_timed_out_and_a_second_signal_ignored(tmp_path):
    path = tmp_path / "events.jsonl"
    proc, info = start("hang", path)
    acked = acknowledged(proc, 100)
    proc.send_signal(signal.SIGTERM)
    threading.Timer(0.2, lambda: proc.poll() is None and proc.send_signal(signal.SIGTERM)).start()
    more, err = finish(proc)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "task_observer shutdown timeout: did not finish within 0.5s" in err, err
    assert "SIGTERM received while shutting down; ignored" in err, err
    assert "shutdown_all finished (with problems)" in err
    assert "forcing it" not in err, "the watchdog had to end the process"
    check_file(path, acked + more, info["CHECKPOINT"])


def test_atexit_hook_closes_the_stream_on_normal_exit(tmp_path):
    path = tmp_path / "events.jsonl"
    proc, info = start("atexit", path)
    acked, err = finish(proc)
    assert proc.returncode == 0, err
    assert len(acked) == 500
    assert "closing the components still registered at exit" in err
    check_file(path, acked, info["CHECKPOINT"])


# -- in-process behaviour of the helpers ----------------------------------------------------------


@pytest.fixture
def clean_runtime():
    component_registry.clear()
    yield
    component_registry.clear()


def test_uninstall_restores_previous_handlers_and_is_idempotent(clean_runtime):
    def mine(signum, frame):  # pragma: no cover - never called
        pass

    before_int = signal.getsignal(signal.SIGINT)
    previous = signal.signal(signal.SIGTERM, mine)
    try:
        uninstall = install_signal_handlers()
        assert signal.getsignal(signal.SIGTERM) is not mine
        assert signal.getsignal(signal.SIGINT) is not before_int
        # Installing again replaces the first installation.
        uninstall_again = install_signal_handlers(signals=[signal.SIGTERM])
        assert signal.getsignal(signal.SIGINT) is before_int
        uninstall_again()
        uninstall_again()
        uninstall()
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is before_int
    finally:
        signal.signal(signal.SIGTERM, previous)


async def test_loop_handlers_are_installed_and_removed(clean_runtime):
    loop = asyncio.get_running_loop()
    uninstall = install_signal_handlers(signals=[signal.SIGUSR1], timeout_per_component=1)
    try:
        assert loop._signal_handlers  # type: ignore[attr-defined]
    finally:
        uninstall()
    assert signal.SIGUSR1 not in loop._signal_handlers  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout_per_component": 0},
        {"timeout_per_component": True},
        {"exit_code": 256},
        {"exit_code": -1},
        {"signals": []},
    ],
)
def test_invalid_arguments(kwargs, clean_runtime):
    with pytest.raises(ValueError):
        install_signal_handlers(**kwargs)


def test_not_from_a_worker_thread(clean_runtime):
    errors: list[BaseException] = []

    def run():
        try:
            install_signal_handlers()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)


def test_atexit_hook_never_raises(clean_runtime, caplog):
    import atexit

    class Broken(FakeComponent):
        def shutdown(self):
            raise RuntimeError("boom")

    component_registry.register_component("task_registry", Broken())
    unregister = install_atexit_hook(timeout_per_component=1)
    try:
        # Run the registered hook the way the interpreter would.
        atexit._run_exitfuncs()
    finally:
        unregister()
    assert component_registry.registered() == {}
    assert "task_registry shutdown error: RuntimeError: boom" in caplog.text
