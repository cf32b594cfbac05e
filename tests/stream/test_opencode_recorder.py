"""The live recorder against a real HTTP server on 127.0.0.1 streaming the fixtures as SSE."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
from opencode_addons import read_events
from opencode_addons.durable_stream import DurableStream
from opencode_addons.opencode import (
    INSTALL_HINT,
    RecorderError,
    RecorderStats,
    events_url,
    record,
    require_httpx,
    server_events,
)
from opencode_addons.recorder import RecordConfig, RecorderHost, status_line
from opencode_fixtures import events
from sse_server import ScriptedSSEServer

CONNECTED = {"type": "server.connected", "properties": {}}
HEARTBEAT = {"type": "server.heartbeat", "properties": {}}
# Generous: a busy machine makes the test slower, never wrong.
WAIT = 60.0


def recorder_cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "opencode_addons", "record", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def bridged(path) -> list[dict]:
    """The stream events the bridge stored (they name the server event that caused them)."""
    if not path.exists():
        return []
    return [e for e in read_events(str(path)) if str(e.get("causation_id", "")).startswith("evt_")]


def wait_for(condition, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def conversation() -> list[dict]:
    """A turn, permissions and questions of a second session, then the turn's session deleted."""
    turn = events("current/turn.json")
    created = turn[0]["properties"]
    deleted = {
        "id": "evt_ffffffffffffZZZZZZZZZZZZZZ",
        "type": "session.deleted",
        "properties": {"sessionID": created["sessionID"], "info": created["info"]},
    }
    return [*turn, *events("current/requests.json"), deleted]


def expected_stream_events(tmp_path, sent: list[dict]) -> list[tuple]:
    """What bridging each server event exactly once gives, for comparison."""
    with DurableStream(tmp_path / f"reference-{uuid.uuid4().hex}.jsonl") as reference:
        for event in sent:
            reference.bridge(event)
        return [_key(e) for e in reference.get_event_history()]


def _key(event: dict) -> tuple:
    payload = {k: v for k, v in event["payload"].items() if k not in ("requested_at", "expires_at")}
    return (event["type"], event["stream_id"], event["actor"], event["causation_id"], payload)


# -- the whole path, through the command -------------------------------------------------------


def test_record_stores_every_event_once_across_a_dropped_connection(tmp_path):
    sent = conversation()
    first_ask = next(i for i, e in enumerate(sent) if e["type"] == "permission.asked")
    cut_at = first_ask + 1  # the first connection ends right after the first permission
    resume = threading.Event()
    scripts = [
        [("events", [CONNECTED, *sent[:cut_at]]), ("cut", json.dumps(sent[cut_at])[:40])],
        [
            ("wait", resume),
            ("events", [CONNECTED, *sent[cut_at - 8 :]]),  # replays 8 events it already sent
            ("raw", "data: {this is not json\n\n"),
            ("events", [HEARTBEAT]),
        ],
    ]
    store = tmp_path / "recorded.jsonl"
    with ScriptedSSEServer(scripts) as server:
        process = recorder_cli(
            server.url,
            "--store",
            str(store),
            "--max-reconnects",
            "1",
            "--json",
            "--backoff",
            "0.05",
        )
        try:
            permission = sent[first_ask]["properties"]["id"]

            def requested() -> bool:
                return any(e["type"] == "checkpoint.requested" for e in bridged(store))

            # While disconnected, the permission is pending in the store, not yet resolved.
            assert wait_for(lambda: len(server.requests) == 2 and requested())
            so_far = bridged(store)
            assert [e["payload"]["id"] for e in so_far if e["type"] == "checkpoint.requested"] == [
                permission
            ]
            assert not any(e["type"] == "checkpoint.approved" for e in so_far)
        finally:
            resume.set()
        out, err = process.communicate(timeout=WAIT)
    assert process.returncode == 0, err
    summary = json.loads(out)
    recorded = bridged(store)
    # Every server event's stream events, stored exactly once and in order.
    assert [_key(e) for e in recorded] == expected_stream_events(tmp_path, sent)
    approvals = [e for e in recorded if e["payload"].get("checkpoint_id") == permission]
    assert [e["type"] for e in approvals] == ["checkpoint.approved"]
    recorder, bridge, stream = summary["recorder"], summary["bridge"], summary["stream"]
    assert (recorder["connections"], recorder["reconnects"], recorder["cut_streams"]) == (2, 1, 1)
    assert recorder["bad_frames"] == 1 and bridge["duplicates"] == 8
    assert bridge["bad_input"] == 0 and bridge["transport"] == 3
    # Both sessions were deleted: nothing of them is left anywhere.
    assert summary["pending_checkpoints"] == [] and stream["sessions"] == 0
    assert bridge["sessions"] == bridge["open_requests"] == 0
    assert summary["session_status"]["sessions"] == 0 and summary["tasks"]["active"] == 0
    assert set(summary["shutdown"].values()) == {"ok"}
    assert "this is not json" in err and "cut" in err
    # The orchestration ran on real traffic: a turn task from session.status, a ledger.
    kinds = {e["type"] for e in read_events(str(store))}
    assert {"task.registered", "task.started"} <= kinds
    assert (tmp_path / "LEDGER.md").exists()


def test_record_global_endpoint(tmp_path):
    frames = events("current/global.json")
    store = tmp_path / "global.jsonl"
    with ScriptedSSEServer([[("events", frames)]], paths=["/global/event"]) as server:
        process = recorder_cli(
            server.url, "--global", "--store", str(store), "--max-reconnects", "0", "--json"
        )
        out, err = process.communicate(timeout=WAIT)
        assert server.requests == ["/global/event"]
    assert process.returncode == 0, err
    types = [e["type"] for e in bridged(store)]
    assert types[-1] == "plugin.shutdown" and types.count("lifecycle.session.created") == 2
    assert json.loads(out)["stream"]["sessions"] == 0


@pytest.mark.parametrize("status", [404, 500])
def test_record_exits_with_one_line_when_the_server_refuses(tmp_path, status):
    scripts = [[("status", status)], [("status", status)]]
    with ScriptedSSEServer(scripts) as server:
        process = recorder_cli(
            server.url, "--store", str(tmp_path / "s.jsonl"), "--max-reconnects", "1", "--quiet"
        )
        out, err = process.communicate(timeout=WAIT)
    assert process.returncode == 1 and out == ""
    last = err.strip().splitlines()[-1]
    assert last.startswith("opencode-addons record: error: cannot connect to ")
    assert f"HTTP {status}" in last
    assert "Traceback" not in err


def test_record_exits_with_one_line_when_nothing_listens(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = recorder_cli(
        f"http://127.0.0.1:{port}",
        "--store",
        str(tmp_path / "s.jsonl"),
        "--max-reconnects",
        "0",
        "--quiet",
    )
    _, err = process.communicate(timeout=WAIT)
    assert process.returncode == 1
    assert err.strip().splitlines()[-1].startswith("opencode-addons record: error: cannot connect")
    assert "Traceback" not in err


def test_record_survives_an_error_then_a_server_that_closes_at_once(tmp_path):
    sent = events("current/parts.json")
    scripts = [[("status", 500)], [], [("events", [CONNECTED, *sent])]]
    store = tmp_path / "s.jsonl"
    with ScriptedSSEServer(scripts) as server:
        process = recorder_cli(
            server.url,
            "--store",
            str(store),
            "--max-reconnects",
            "2",
            "--json",
            "--backoff",
            "0.05",
        )
        out, err = process.communicate(timeout=WAIT)
    assert process.returncode == 0, err
    recorder = json.loads(out)["recorder"]
    assert (recorder["http_errors"], recorder["connections"], recorder["reconnects"]) == (1, 2, 2)
    assert [_key(e) for e in bridged(store)] == expected_stream_events(tmp_path, sent)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_recorder_and_shuts_everything_down_in_order(tmp_path, signum):
    sent = events("current/turn.json")
    hold = threading.Event()
    store = tmp_path / "s.jsonl"
    with ScriptedSSEServer([[("events", [CONNECTED, *sent]), ("wait", hold)]]) as server:
        process = recorder_cli(server.url, "--store", str(store), "--json")
        expected = len(expected_stream_events(tmp_path, sent))
        try:
            assert wait_for(lambda: len(bridged(store)) == expected)
            process.send_signal(signum)
            out, err = process.communicate(timeout=WAIT)
        finally:
            hold.set()
    assert process.returncode == 128 + signum, err
    summary = json.loads(out)
    assert list(summary["shutdown"]) == [
        "task_observer",
        "task_registry",
        "checkpoint_manager",
        "learning_extractor",
        "event_driven_ledger",
        "durable_stream",
        "memory_lane_store",
        "session_state_tracker",
        "session_status_client",
    ]
    assert set(summary["shutdown"].values()) == {"ok"}
    assert len(bridged(store)) == expected
    # The store was closed: it opens again at once (no lock left behind) with every event.
    with DurableStream(store) as reopened:
        assert len(reopened.get_event_history()) == len(list(read_events(str(store))))


# -- the library ----------------------------------------------------------------------------


async def test_record_as_a_library_with_duplicates_and_bad_frames(tmp_path):
    sent = events("current/requests.json")
    scripts = [
        [("events", [CONNECTED, *sent[:6]]), ("raw", "data: [1, 2]\n\n: a comment\n\n")],
        [("events", sent)],
    ]
    with ScriptedSSEServer(scripts) as server, DurableStream(tmp_path / "s.jsonl") as stream:
        stats = await record(server.url, stream, max_reconnects=1, backoff=0.01)
    assert stats.bad_frames == 1 and stats.connections == 2
    assert stream.stats()["bridge"]["duplicates"] == 6
    assert stream.pending_checkpoints == []


async def test_a_restarted_recorder_does_not_store_a_replay_twice(tmp_path):
    sent = events("current/turn.json")
    path = tmp_path / "s.jsonl"
    with ScriptedSSEServer([[("events", sent[:10])]]) as server, DurableStream(path) as stream:
        await record(server.url, stream, max_reconnects=0)
    with ScriptedSSEServer([[("events", sent)]]) as server, DurableStream(path) as stream:
        await record(server.url, stream, max_reconnects=0)
        # The ids come from the store's causation_ids: the one event of the ten that maps to
        # nothing (a reasoning part starting) is mapped again, to nothing again.
        assert stream.stats()["bridge"]["duplicates"] == 9
    assert [_key(e) for e in bridged(path)] == expected_stream_events(tmp_path, sent)


async def test_server_events_iterates_frames_and_counts_what_it_drops():
    sent = events("current/global.json")
    stats = RecorderStats()
    scripts = [[("raw", "data: \n\n"), ("events", sent), ("cut", "data: {")]]
    with ScriptedSSEServer(scripts) as server:
        got = [
            e
            async for e in server_events(
                server.url, global_events=True, max_reconnects=0, stats=stats
            )
        ]
    assert got == sent
    assert (stats.cut_streams, stats.bad_frames, stats.connections) == (1, 0, 1)


async def test_server_events_gives_up_with_recorder_error():
    with ScriptedSSEServer([[("status", 404)]]) as server:
        with pytest.raises(RecorderError, match="HTTP 404"):
            async for _ in server_events(server.url, max_reconnects=0):
                pass


async def test_a_non_sse_answer_is_an_http_error():
    class Plain(ScriptedSSEServer):
        def serve(self, handler):
            body = b"<html>hello</html>"
            handler.send_response(200)
            handler.send_header("Content-Type", "text/html")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)

    stats = RecorderStats()
    with Plain([]) as server:
        with pytest.raises(RecorderError, match="not an event stream"):
            async for _ in server_events(server.url, max_reconnects=0, stats=stats):
                pass
    assert stats.http_errors == 1


def test_events_url():
    assert events_url("http://h:1") == "http://h:1/event"
    assert events_url("http://h:1/", True) == "http://h:1/global/event"
    assert events_url("http://h:1/global/event") == "http://h:1/global/event"


def test_a_missing_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "httpx_sse", None)
    with pytest.raises(ImportError, match=r"opencode-addons\[opencode\]"):
        require_httpx()
    assert "httpx-sse" in INSTALL_HINT


def test_record_command_without_the_extra_says_so(tmp_path):
    code = (
        "import sys; sys.modules['httpx'] = None; "
        "from opencode_addons.cli import main; "
        f"sys.exit(main(['record', 'http://127.0.0.1:9', '--store', {str(tmp_path / 's')!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().endswith("(import of httpx halted; None in sys.modules)")
    assert "pip install 'opencode-addons[opencode]'" in result.stderr


async def test_status_line_shows_events_sessions_permissions_and_rss(tmp_path):
    host = RecorderHost(RecordConfig(url="http://x", store=str(tmp_path / "s.jsonl")))
    try:
        for event in events("current/requests.json")[:2]:
            host.stream.bridge(event)
        line = status_line(host)
        assert line.startswith("connecting: 2 events (2 stored")
        assert "sessions 1" in line and "pending permissions 1" in line and "MiB" in line
    finally:
        await host.shutdown()
