"""The live recorder's throughput and RSS: OpenCode server events from a local SSE server.

``python benches/recorder_bench.py`` (``OCA_RECORDER_EVENTS``, default 1,000,000) streams
current-shape server events (OpenCode's v2 SDK types: a user prompt, the session busy, an
assistant answer streamed as ``message.part.delta``, a tool call pending -> running -> completed,
a permission asked and replied every third turn, the session idle; sessions of ten turns
created and deleted) from a stdlib HTTP server in its own process, chunked like OpenCode's, to
three consumers, each a fresh process whose RSS is sampled (psutil) every 0.2 s:

- ``httpx-sse + json.loads``: the transport alone (what any Python client pays);
- ``+ orjson.dumps + write + flush``: the recorder you would write yourself (every frame to a
  JSONL file, no mapping, no duplicates dropped, no state);
- ``record()`` into a ``DurableStream``: the library's recorder, the bridge and the stream
  (history 100,000, cache 50,000, ``flush``), no orchestration;
- ``opencode-addons record``: the same with the orchestration attached (task observer and
  registry, checkpoint manager, learning extractor with its memory lane, ledger, session
  cleanup), as the command runs it.

``report.py`` appends the section this prints to ``RESULTS.md``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

import psutil

EVENTS = int(os.environ.get("OCA_RECORDER_EVENTS", "1000000"))
TURNS_PER_SESSION = 10
DELTAS_PER_TURN = 30
FRAMES_PER_CHUNK = 200
SAMPLE_SECONDS = 0.2


# -- the server ---------------------------------------------------------------------------------


def _turn_templates() -> list[str]:
    """One turn's events as JSON with placeholders (SES, MSGU, MSGA, PRTU, PRTT, PRTX, PER, EVT)."""
    model = {"providerID": "anthropic", "modelID": "claude-sonnet-4-5"}
    tokens = {"input": 900, "output": 120, "reasoning": 0, "cache": {"read": 0, "write": 0}}
    assistant = {
        "id": "MSGA",
        "sessionID": "SES",
        "role": "assistant",
        "time": {"created": 1767225600000},
        "parentID": "MSGU",
        "modelID": "claude-sonnet-4-5",
        "providerID": "anthropic",
        "mode": "build",
        "agent": "build",
        "path": {"cwd": "/home/dev/shop", "root": "/home/dev/shop"},
        "cost": 0,
        "tokens": tokens,
    }
    text = {"id": "PRTT", "sessionID": "SES", "messageID": "MSGA", "type": "text"}
    tool = {
        "id": "PRTX",
        "sessionID": "SES",
        "messageID": "MSGA",
        "type": "tool",
        "callID": "toolu_PRTX",
        "tool": "bash",
    }
    bash = {"command": "npm test", "description": "Run the tests"}
    words = "the parser reads each line and keeps the newest records in a bounded ring so ".split()
    deltas = [" ".join(words[i % 8 : i % 8 + 3]) + " " for i in range(DELTAS_PER_TURN)]
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message.updated",
            {
                "sessionID": "SES",
                "info": {
                    "id": "MSGU",
                    "sessionID": "SES",
                    "role": "user",
                    "time": {"created": 1767225600000},
                    "agent": "build",
                    "model": model,
                },
            },
        ),
        (
            "message.part.updated",
            {
                "sessionID": "SES",
                "part": {
                    "id": "PRTU",
                    "sessionID": "SES",
                    "messageID": "MSGU",
                    "type": "text",
                    "text": "Fix the failing parser test, thanks",
                },
                "time": 1767225600001,
            },
        ),
        ("session.status", {"sessionID": "SES", "status": {"type": "busy"}}),
        ("message.updated", {"sessionID": "SES", "info": assistant}),
        (
            "message.part.updated",
            {
                "sessionID": "SES",
                "part": {**text, "text": "", "time": {"start": 1767225600002}},
                "time": 1767225600002,
            },
        ),
        *[
            (
                "message.part.delta",
                {
                    "sessionID": "SES",
                    "messageID": "MSGA",
                    "partID": "PRTT",
                    "field": "text",
                    "delta": delta,
                },
            )
            for delta in deltas
        ],
        (
            "message.part.updated",
            {
                "sessionID": "SES",
                "part": {
                    **text,
                    "text": "".join(deltas),
                    "time": {"start": 1767225600002, "end": 1767225600900},
                },
                "time": 1767225600900,
            },
        ),
        (
            "message.part.updated",
            {
                "sessionID": "SES",
                "part": {**tool, "state": {"status": "pending", "input": {}, "raw": ""}},
                "time": 1767225600901,
            },
        ),
        (
            "message.part.updated",
            {
                "sessionID": "SES",
                "part": {
                    **tool,
                    "state": {"status": "running", "input": bash, "time": {"start": 1}},
                },
                "time": 1767225600902,
            },
        ),
        (
            "message.part.updated",
            {
                "sessionID": "SES",
                "part": {
                    **tool,
                    "state": {
                        "status": "completed",
                        "input": bash,
                        "output": "Tests: 42 passed\n",
                        "title": "Run the tests",
                        "metadata": {"exit": 0, "description": "Run the tests"},
                        "time": {"start": 1, "end": 2},
                    },
                },
                "time": 1767225600903,
            },
        ),
        (
            "message.updated",
            {
                "sessionID": "SES",
                "info": {
                    **assistant,
                    "time": {"created": 1767225600000, "completed": 1767225600999},
                    "finish": "stop",
                },
            },
        ),
        ("session.status", {"sessionID": "SES", "status": {"type": "idle"}}),
        ("session.idle", {"sessionID": "SES"}),
    ]
    return [
        json.dumps({"id": "EVT", "type": t, "properties": p}, separators=(",", ":"))
        for t, p in events
    ]


def _permission_templates() -> list[str]:
    asked = {
        "id": "PER",
        "sessionID": "SES",
        "permission": "bash",
        "patterns": ["git push origin main"],
        "metadata": {"command": "git push origin main"},
        "always": ["git push *"],
        "tool": {"messageID": "MSGA", "callID": "toolu_PRTX"},
    }
    replied = {"sessionID": "SES", "requestID": "PER", "reply": "once"}
    return [
        json.dumps({"id": "EVT", "type": t, "properties": p}, separators=(",", ":"))
        for t, p in (("permission.asked", asked), ("permission.replied", replied))
    ]


def _session_template(event_type: str) -> str:
    info = {
        "id": "SES",
        "slug": "bench",
        "projectID": "bench",
        "directory": "/home/dev/shop",
        "title": "bench session",
        "version": "1.14.2",
        "time": {"created": 1767225600000, "updated": 1767225600000},
    }
    properties = {"sessionID": "SES", "info": info}
    return json.dumps({"id": "EVT", "type": event_type, "properties": properties})


def frames(count: int) -> Iterator[str]:
    """``count`` SSE frames of current-shape server events, each id unique and ascending."""
    turn, permission = _turn_templates(), _permission_templates()
    created, deleted = _session_template("session.created"), _session_template("session.deleted")
    sent = 0
    serial = 0

    def ids(n: int) -> str:
        return f"{n:012x}AAAAAAAAAAAAAA"

    session = 0
    while True:
        session += 1
        ses = "ses_" + ids(session)
        for turn_index in range(TURNS_PER_SESSION):
            templates = [created] if turn_index == 0 else []
            templates += turn
            if turn_index % 3 == 2:
                templates += permission
            if turn_index == TURNS_PER_SESSION - 1:
                templates.append(deleted)
            key = ids(session * 100 + turn_index)
            for template in templates:
                serial += 1
                line = (
                    template.replace("EVT", "evt_" + ids(serial))
                    .replace("SES", ses)
                    .replace("MSGU", "msg_u" + key)
                    .replace("MSGA", "msg_a" + key)
                    .replace("PRTU", "prt_u" + key)
                    .replace("PRTT", "prt_t" + key)
                    .replace("PRTX", "prt_x" + key)
                    .replace("PER", "per_" + key)
                )
                yield f"data: {line}\n\n"
                sent += 1
                if sent >= count:
                    return


def serve(count: int) -> None:
    """Serve ``count`` events on GET /event (then close), once per connection; prints the port."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            batch: list[str] = ['data: {"type":"server.connected","properties":{}}\n\n']
            try:
                for frame in frames(count):
                    batch.append(frame)
                    if len(batch) >= FRAMES_PER_CHUNK:
                        self._chunk("".join(batch))
                        batch = []
                if batch:
                    self._chunk("".join(batch))
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True

        def _chunk(self, text: str) -> None:
            data = text.encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(httpd.server_address[1], flush=True)
    httpd.serve_forever()


# -- the baselines ------------------------------------------------------------------------------


def consume(mode: str, url: str, out: str) -> None:
    """A consumer: ``transport`` (parse only), ``jsonl`` (an orjson line per event) or
    ``stream`` (``record()`` into a ``DurableStream``, no orchestration)."""
    if mode == "stream":
        import asyncio

        from opencode_addons.durable_stream import DurableStream
        from opencode_addons.opencode import record

        with DurableStream(out) as stream:
            stats = asyncio.run(record(url, stream, max_reconnects=0))
        print(stats.frames)
        return
    import httpx
    import httpx_sse
    import orjson

    count = 0
    with open(out, "wb") as sink, httpx.Client(timeout=None) as client:
        with httpx_sse.connect_sse(client, "GET", url + "/event") as source:
            for sse in source.iter_sse():
                event = json.loads(sse.data)
                count += 1
                if mode == "jsonl":
                    sink.write(orjson.dumps(event) + b"\n")
                    sink.flush()
    print(count)


# -- the measurement ----------------------------------------------------------------------------


class Run:
    """One consumer process: wall time, RSS samples."""

    def __init__(self, name: str, command: list[str]) -> None:
        self.name = name
        self.command = command
        self.samples: list[tuple[float, int]] = []
        self.seconds = 0.0
        self.stdout = ""

    def go(self) -> Run:
        started = time.perf_counter()
        process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        watched = psutil.Process(process.pid)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(SAMPLE_SECONDS):
                try:
                    rss = watched.memory_info().rss
                except psutil.Error:
                    return
                if rss and process.poll() is None:  # an exited process reports 0
                    self.samples.append((time.perf_counter() - started, rss))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        self.stdout, stderr = process.communicate()
        self.seconds = time.perf_counter() - started
        done.set()
        sampler.join()
        if process.returncode != 0:
            raise RuntimeError(f"{self.name} failed ({process.returncode}): {stderr[-2000:]}")
        return self

    def rss_at(self, fraction: float) -> int:
        """The first sample at or after ``fraction`` of the run (the last one for 1.0)."""
        target = self.seconds * fraction
        later = [rss for at, rss in self.samples if at >= target]
        return later[0] if later and fraction < 1.0 else self.samples[-1][1]

    @property
    def peak(self) -> int:
        return max(rss for _, rss in self.samples)


def _server(count: int) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve", str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return process, f"http://127.0.0.1:{port}"


def measure(count: int = EVENTS) -> dict[str, Any]:
    server, url = _server(count)
    try:
        with tempfile.TemporaryDirectory(prefix="oa-recorder-bench-") as directory:
            me = os.path.abspath(__file__)
            runs = [
                Run(
                    "httpx-sse + json.loads",
                    [sys.executable, me, "--consume", "transport", url, os.devnull],
                ),
                Run(
                    "+ orjson.dumps + write + flush",
                    [sys.executable, me, "--consume", "jsonl", url, f"{directory}/naive.jsonl"],
                ),
                Run(
                    "record() into a DurableStream",
                    [sys.executable, me, "--consume", "stream", url, f"{directory}/stream.jsonl"],
                ),
                Run(
                    "opencode-addons record (with orchestration)",
                    [
                        sys.executable,
                        "-m",
                        "opencode_addons",
                        "record",
                        url,
                        "--store",
                        f"{directory}/recorded.jsonl",
                        "--max-reconnects",
                        "0",
                        "--json",
                        "--quiet",
                    ],
                ),
            ]
            for run in runs:
                run.go()
            summary = json.loads(runs[-1].stdout)
    finally:
        server.terminate()
        server.wait()
    return {"events": count, "runs": runs, "summary": summary}


def _mib(value: float) -> str:
    return f"{value / 2**20:,.1f} MiB"


def section(result: Optional[dict[str, Any]] = None) -> str:
    """The ``RESULTS.md`` section: a table of the three consumers and what the recorder did."""
    result = result or measure()
    count = result["events"]
    runs: list[Run] = result["runs"]
    summary = result["summary"]
    transport = count / runs[0].seconds
    lines = [
        f"## Live recorder ({count:,} OpenCode server events over SSE)",
        "",
        "Generated by `python benches/recorder_bench.py` (also run by `report.py`): current-shape "
        "server events (v2 SDK types; per turn 30 text deltas, a tool call and, every third "
        "turn, a permission; sessions of 10 turns) served by a local stdlib HTTP server in its "
        "own process, chunked like OpenCode's, to each consumer in a fresh process. Rate is "
        "events over the consumer process's wall time (start-up and shutdown included); RSS is "
        f"sampled every {SAMPLE_SECONDS} s, growth is from 20% of the run to its end.",
        "",
        "| consumer | events/s | vs transport | RSS at 20% | RSS at end | peak RSS | growth |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        rate = count / run.seconds
        early, end = run.rss_at(0.2), run.rss_at(1.0)
        lines.append(
            f"| {run.name} | {rate:,.0f} | {rate / transport:.2f}x | {_mib(early)} | "
            f"{_mib(end)} | {_mib(run.peak)} | {(end - early) / early:+.1%} |"
        )
    bridge, stream = summary["bridge"], summary["stream"]
    lines += [
        "",
        f"The recorder received {bridge['received']:,} events, stored {bridge['stored']:,} "
        f"stream events ({bridge['bad_input']} bad, {bridge['duplicates']} duplicates), "
        f"{stream['history_events']:,} in its history and {stream['cache_events']:,} in its "
        f"cache at the end, {stream['file_bytes']:,} bytes of file; shutdown took "
        f"{summary['shutdown_seconds'] * 1000:,.0f} ms.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
    elif len(sys.argv) > 4 and sys.argv[1] == "--consume":
        consume(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.stdout.write(section())
