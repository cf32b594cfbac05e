"""Event shapes for the append benchmarks: deterministic, seeded, one generator per shape.

No single shape may flatter the store, so every append case runs on all of these:

- ``benchmark``: the original benchmark events (``events.py``): ~530 B, one long ``text``.
- ``short_strings``: 3-6 short strings per payload, a quarter with nested dicts, a fresh
  correlation id per event (the interner's worst case: a string that never repeats).
- ``opencode``: the events a ``DurableStream`` stores for today's OpenCode server traffic:
  server events in the current SDK shape (``message.part.delta`` text deltas ~75%,
  ``message.part.updated`` tool parts with input/output/metadata, step-start/step-finish with
  token counts, ``message.updated``, ``session.idle``) fed through ``DurableStream.bridge`` and
  taken as stored (ids, timestamps and the run id replaced by fixed ones so runs agree).
  What that mix holds depends on the bridge in use: server events the bridge ignores
  add nothing.
- ``tiny``: ~120 B, a text delta and a session id.
- ``large``: tool results with 4-64 KiB outputs (source text: newlines, quotes, tabs).

Every event carries its own ``id`` and ``timestamp``, so every contender stores the same
bytes (``DurableStream`` adds ``actor``/``correlation_id`` where an event lacks them).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import sys
import tempfile
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import events as benchmark_events

Event = dict[str, Any]
START_MS = 1_750_000_000_000
STREAMS = tuple(f"ses_{i:03d}" for i in range(100))
_WORDS = benchmark_events._WORDS
_ALNUM = "0123456789ABCDEFGHJKMNPQRSTVWXYZabcdefghijkmnopqrstuvwxyz"


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(count))


def _token(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(_ALNUM) for _ in range(length))


def compact_size(event: Event) -> int:
    return len(json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode())


# -- benchmark ----------------------------------------------------------------------------------


def benchmark(count: int, seed: int) -> list[Event]:
    return benchmark_events.generate(count, seed)


# -- short strings, nested dicts, a fresh correlation id per event ------------------------------

_SHORT_TYPES = (
    "task.progress",
    "task.registered",
    "execution.tool_start",
    "session.status",
    "metric.sample",
    "ledger.updated",
)
_SHORT_KEYS = ("status", "phase", "label", "kind", "owner", "source", "model", "agent", "mode")


def _short_payload(rng: random.Random, stream: str) -> dict[str, Any]:
    payload: dict[str, Any] = {"sessionID": stream}
    for key in rng.sample(_SHORT_KEYS, rng.randint(3, 6)):
        payload[key] = _words(rng, rng.randint(1, 2))
    payload["attempt"] = rng.randrange(5)
    payload["ok"] = rng.random() < 0.8
    if rng.random() < 0.25:
        payload["detail"] = {
            "tool": rng.choice(("read", "edit", "bash", "grep")),
            "args": {"path": f"src/{rng.choice(_WORDS)}.py", "flags": ["-n", rng.choice("abc")]},
            "state": {"status": "ok", "time": {"start": 1, "end": rng.randrange(10_000)}},
            "tags": [rng.choice(_WORDS), rng.choice(_WORDS)],
        }
    return payload


def short_strings(count: int, seed: int) -> list[Event]:
    rng = random.Random(seed)
    out = []
    for index in range(count):
        stream = rng.choice(STREAMS)
        out.append(
            {
                "type": rng.choice(_SHORT_TYPES),
                "stream_id": stream,
                "actor": rng.choice(("agent", "user", "system")),
                # Fresh for every event: never seen again.
                "correlation_id": f"req_{index:08d}_{rng.getrandbits(48):012x}",
                "causation_id": f"evt_{max(0, index - 1):010d}",
                "id": f"evt_{index:010d}_{rng.getrandbits(32):08x}",
                "timestamp": START_MS + index,
                "payload": _short_payload(rng, stream),
            }
        )
    return out


# -- tiny -----------------------------------------------------------------------------------------


def tiny(count: int, seed: int) -> list[Event]:
    rng = random.Random(seed)
    out = []
    for index in range(count):
        out.append(
            {
                "type": "execution.text_delta",
                "stream_id": rng.choice(STREAMS),
                "id": f"e{index:07d}",
                "timestamp": START_MS + index,
                "payload": {"delta": _words(rng, rng.randint(1, 2))},
            }
        )
    return out


# -- large tool outputs ----------------------------------------------------------------------------

_CODE_LINES = (
    'def handle(event: dict[str, Any]) -> None:\n    """Store the event."""',
    '    if event.get("type") == "session.idle":\n        return',
    "\tfor key, value in sorted(payload.items()):\n\t\tprint(f'{key}={value!r}')",
    '    raise ValueError(f"bad input: {text!r} (expected \\"json\\")")',
    "# comment: the ring keeps the newest records and evicts the oldest",
    "    total += len(line)  # bytes",
    '{"name": "opencode", "version": "1.0.0", "scripts": {"test": "bun test"}}',
)


def _tool_output(rng: random.Random, size: int) -> str:
    lines: list[str] = []
    length = 0
    while length < size:
        line = f"{len(lines) + 1:>5}\t{rng.choice(_CODE_LINES)}"
        lines.append(line)
        length += len(line) + 1
    return "\n".join(lines)[:size]


def large(count: int, seed: int) -> list[Event]:
    rng = random.Random(seed)
    out = []
    for index in range(count):
        stream = rng.choice(STREAMS)
        size = rng.randint(4 * 1024, 64 * 1024)
        out.append(
            {
                "type": "execution.tool_finish",
                "stream_id": stream,
                "actor": "agent",
                "correlation_id": f"run_{index // 1_000:04d}",
                "id": f"evt_{index:010d}_{rng.getrandbits(32):08x}",
                "timestamp": START_MS + index,
                "payload": {
                    "sessionID": stream,
                    "callID": f"call_{_token(rng, 24)}",
                    "tool": rng.choice(("read", "bash", "grep")),
                    "status": "completed",
                    "input": {"filePath": f"/repo/src/{rng.choice(_WORDS)}.py"},
                    "output": _tool_output(rng, size),
                    "title": f"src/{rng.choice(_WORDS)}.py",
                    "metadata": {"truncated": False, "lines": size // 60},
                    "time": {"start": START_MS + index, "end": START_MS + index + 40},
                },
            }
        )
    return out


# -- OpenCode: today's server events through the bridge -----------------------------------------


def _ocid(rng: random.Random, prefix: str) -> str:
    return f"{prefix}_{_token(rng, 26)}"


def _tool_part(
    rng: random.Random, session: str, message: str, now: int, status: str
) -> dict[str, Any]:
    tool = rng.choice(("read", "bash", "edit", "grep", "glob"))
    if tool == "bash":
        tool_input: dict[str, Any] = {
            "command": f"pytest tests/{rng.choice(_WORDS)} -q",
            "description": _words(rng, 4),
        }
    elif tool == "edit":
        tool_input = {
            "filePath": f"/repo/src/{rng.choice(_WORDS)}.py",
            "oldString": _words(rng, rng.randint(3, 12)),
            "newString": _words(rng, rng.randint(3, 12)),
        }
    else:
        tool_input = {"filePath": f"/repo/src/{rng.choice(_WORDS)}.py", "offset": 0, "limit": 200}
    state: dict[str, Any] = {"status": status, "input": tool_input, "time": {"start": now}}
    if status == "completed":
        output = _tool_output(rng, rng.randint(120, 2_000))
        state.update(
            output=output,
            title=tool_input.get("filePath", tool_input.get("command", "")),
            metadata={"preview": output[:80], "truncated": False, "exit": 0},
            time={"start": now, "end": now + rng.randint(5, 900)},
        )
    return {
        "id": _ocid(rng, "prt"),
        "sessionID": session,
        "messageID": message,
        "type": "tool",
        "callID": f"toolu_{_token(rng, 24)}",
        "tool": tool,
        "state": state,
    }


def _assistant_turn(rng: random.Random, session: str, now: int) -> list[dict[str, Any]]:
    """The server events of one assistant message: a step, streamed text, maybe tools."""
    message = _ocid(rng, "msg")
    events: list[dict[str, Any]] = []

    def part_updated(part: dict[str, Any]) -> None:
        events.append({"type": "message.part.updated", "properties": {"part": part}})

    part_updated(
        {"id": _ocid(rng, "prt"), "sessionID": session, "messageID": message, "type": "step-start"}
    )
    text_id = _ocid(rng, "prt")
    text_part = {
        "id": text_id,
        "sessionID": session,
        "messageID": message,
        "type": "text",
        "text": "",
        "time": {"start": now},
    }
    part_updated(dict(text_part))
    chunks = []
    for _ in range(rng.randint(16, 30)):
        delta = " " + _words(rng, rng.randint(1, 5))
        chunks.append(delta)
        events.append(
            {
                "type": "message.part.delta",
                "properties": {
                    "sessionID": session,
                    "messageID": message,
                    "partID": text_id,
                    "field": "text",
                    "delta": delta,
                },
            }
        )
    part_updated({**text_part, "text": "".join(chunks), "time": {"start": now, "end": now + 900}})
    if rng.random() < 0.6:
        pending = _tool_part(rng, session, message, now, "running")
        part_updated(pending)
        done = _tool_part(rng, session, message, now, "completed")
        part_updated({**done, "id": pending["id"], "callID": pending["callID"]})
    tokens = {
        "input": rng.randint(1_000, 60_000),
        "output": rng.randint(10, 4_000),
        "reasoning": 0,
        "cache": {"read": rng.randint(0, 50_000), "write": rng.randint(0, 2_000)},
    }
    part_updated(
        {
            "id": _ocid(rng, "prt"),
            "sessionID": session,
            "messageID": message,
            "type": "step-finish",
            "reason": rng.choice(("stop", "tool-calls")),
            "cost": round(rng.random() / 50, 6),
            "tokens": tokens,
        }
    )
    events.append(
        {
            "type": "message.updated",
            "properties": {
                "info": {
                    "id": message,
                    "sessionID": session,
                    "role": "assistant",
                    "time": {"created": now, "completed": now + 1_000},
                    "modelID": "claude-sonnet-4",
                    "providerID": "anthropic",
                    "mode": "build",
                    "path": {"cwd": "/repo", "root": "/repo"},
                    "cost": round(rng.random() / 20, 6),
                    "tokens": tokens,
                    "finish": "stop",
                }
            },
        }
    )
    if rng.random() < 0.2:
        events.append({"type": "session.idle", "properties": {"sessionID": session}})
    return events


def opencode_server_events(rng: random.Random) -> Any:
    """An endless stream of server events from a dozen interleaved sessions."""
    sessions = [_ocid(rng, "ses") for _ in range(12)]
    now = START_MS
    while True:
        now += 1_000
        yield from _assistant_turn(rng, rng.choice(sessions), now)


def opencode(count: int, seed: int) -> list[Event]:
    """``count`` events as a DurableStream stores them for the server events above."""
    from opencode_addons.durable_stream import DurableStream

    rng = random.Random(seed)
    stored: list[Event] = []
    with tempfile.TemporaryDirectory(prefix="oa-shape-") as directory:
        stream = DurableStream(
            os.path.join(directory, "bridge.jsonl"),
            durability="none",
            max_event_history=1_000,
            max_cache_size=1_000,
        )
        stream.subscribe("*", stored.append)
        try:
            for server_event in opencode_server_events(rng):
                stream.bridge(server_event)
                if len(stored) >= count:
                    break
        finally:
            stream.shutdown()
    out = []
    for index, event in enumerate(stored[:count]):
        event = {k: v for k, v in event.items() if k != "seq"}
        event["id"] = f"evt_{index:010d}"
        event["timestamp"] = START_MS + index
        event["correlation_id"] = "run_0001"
        out.append(event)
    return out


SHAPES: dict[str, Callable[[int, int], list[Event]]] = {
    "benchmark": benchmark,
    "short_strings": short_strings,
    "opencode": opencode,
    "tiny": tiny,
    "large": large,
}
DESCRIPTIONS = {
    "benchmark": "the original events: ~530 B, one long text",
    "short_strings": "3-6 short strings, 25% nested, fresh correlation id per event",
    "opencode": "today's OpenCode server events through DurableStream.bridge, as stored",
    "tiny": "~120 B: a text delta and a session id",
    "large": "tool results with 4-64 KiB outputs",
}
SEED = 20_240_601


def generate(shape: str, count: int, seed: int = SEED) -> list[Event]:
    """``count`` events of ``shape``. With ``OA_SHAPE_CACHE`` set to a directory, events are
    kept there and reused, so that two builds (before and after a change) are measured on the
    very same events even where a shape depends on the installed package (``opencode``)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    cache = os.environ.get("OA_SHAPE_CACHE")
    if not cache:
        return SHAPES[shape](count, seed)
    path = os.path.join(cache, f"{shape}-{count}-{seed}.pickle")
    if os.path.exists(path):
        with open(path, "rb") as handle:
            return pickle.load(handle)  # type: ignore[no-any-return]
    events = SHAPES[shape](count, seed)
    os.makedirs(cache, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(events, handle)
    return events


def describe(events: list[Event]) -> dict[str, Any]:
    sizes = sorted(compact_size(e) for e in events)
    types: dict[str, int] = {}
    for event in events:
        types[event["type"]] = types.get(event["type"], 0) + 1
    return {
        "events": len(events),
        "mean_bytes": sum(sizes) / len(sizes),
        "median_bytes": sizes[len(sizes) // 2],
        "types": dict(sorted(types.items(), key=lambda kv: -kv[1])),
    }


if __name__ == "__main__":
    for name in sys.argv[1:] or list(SHAPES):
        sample = generate(name, 2_000 if name != "large" else 200)
        info = describe(sample)
        top = ", ".join(f"{t} {n / info['events']:.0%}" for t, n in list(info["types"].items())[:6])
        print(f"{name}: mean {info['mean_bytes']:.0f} B, median {info['median_bytes']} B; {top}")
