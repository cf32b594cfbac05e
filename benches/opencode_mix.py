"""An OpenCode-like event mix, as a DurableStream holds it, for the compression benchmarks.

OpenCode server events (``message.part.updated`` text deltas, tool parts, step parts,
``message.updated``) are generated for a dozen interleaved sessions and mapped through the
bridge (``opencode_addons.bridge``), then given what the store adds: ``id`` (the reference
format, 16 random hex digits), ``timestamp`` and the run's ``correlation_id``. About three
quarters are short text deltas; the rest are tool starts and finishes (the tool output is a
slice of a real file), step starts and finishes (token counts, cost, snapshot hash), text
snapshots and completed messages.

Text is real text, not words drawn from a small list (which would compress unrealistically
well): deltas walk through the docstrings of standard-library modules (English prose), tool
outputs are slices of standard-library sources. Both come with the interpreter, so the events
are the same for every run on one Python version.

Written for the compression benchmark (issue 12 part 3) before the shape generators of part 1
landed; ``iter_events`` has the same signature as ``benches/events.py``'s.
"""

from __future__ import annotations

import glob
import importlib
import inspect
import os
import random
import string
from collections.abc import Iterator
from typing import Any

from opencode_addons.bridge import OpenCodeBridge

SEED = 20_251_212
SESSIONS = 12
START_MS = 1_750_000_000_000
STDLIB = os.path.dirname(os.__file__)
_PROSE_MODULES = ("argparse", "collections", "functools", "json", "logging", "pathlib", "shutil")
_SOURCE_PACKAGES = ("asyncio", "email", "http", "json", "logging")
_ID_CHARS = string.ascii_letters + string.digits
_BASE36 = string.digits + string.ascii_lowercase
_TOOLS = ("read", "grep", "bash", "edit", "glob", "list")
_MODELS = (("anthropic", "claude-sonnet-4"), ("openai", "gpt-5"))


def _docstrings(name: str) -> list[str]:
    module = importlib.import_module(name)
    docs = [module.__doc__ or ""]
    for attribute in sorted(vars(module)):
        doc = inspect.getdoc(getattr(module, attribute))
        if doc and not attribute.startswith("_"):
            docs.append(doc)
    return docs


class _Corpus:
    def __init__(self) -> None:
        prose = [doc for name in _PROSE_MODULES for doc in _docstrings(name)]
        self.words = " ".join(prose).split() or ["empty"]
        paths = sorted(
            path
            for package in _SOURCE_PACKAGES
            for path in glob.glob(os.path.join(STDLIB, package, "*.py"))
        )
        self.paths = [os.path.relpath(path, STDLIB) for path in paths] or ["a.py"]
        self.sources = []
        for path in paths:
            with open(path, encoding="utf-8") as handle:
                self.sources.append(handle.read())
        self.sources = self.sources or ["x = 1\n"]


class _Session:
    def __init__(self, rng: random.Random, index: int) -> None:
        self.id = "ses_" + _oc_id(rng)
        self.word = rng.randrange(1 << 20)
        self.message = ""
        self.part = ""
        self.text: list[str] = []
        self.deltas_left = 0
        self.step = 0
        self.pending: list[dict[str, Any]] = []
        self.model = _MODELS[index % len(_MODELS)]


def _oc_id(rng: random.Random) -> str:
    # OpenCode ids: 12 hex digits of time and counter, then 14 random letters and digits.
    return f"{rng.getrandbits(48):012x}" + "".join(rng.choice(_ID_CHARS) for _ in range(14))


def _store_id(rng: random.Random, ms: int) -> str:
    digits = []
    for _ in range(9):
        ms, rest = divmod(ms, 36)
        digits.append(_BASE36[rest])
    return "".join(reversed(digits)) + f"_{rng.getrandbits(64):016x}"


def _tool_output(rng: random.Random, corpus: _Corpus) -> str:
    source = rng.choice(corpus.sources)
    size = min(len(source), int(rng.lognormvariate(6.8, 0.9)))
    start = rng.randrange(max(1, len(source) - size))
    return source[start : start + size]


def _next_server_events(
    rng: random.Random, corpus: _Corpus, session: _Session, ms: int
) -> list[dict[str, Any]]:
    """The next server events of ``session``: a small state machine of one assistant turn."""
    part_base = {"sessionID": session.id, "messageID": session.message}
    if session.pending:
        return [session.pending.pop(0)]
    if not session.message:
        session.message = "msg_" + _oc_id(rng)
        session.step = 0
        return [
            _part(
                {
                    "id": "prt_" + _oc_id(rng),
                    "sessionID": session.id,
                    "messageID": session.message,
                    "type": "step-start",
                }
            )
        ]
    if session.deltas_left > 0:
        count = rng.choice((1, 1, 2, 2, 3, 4, 6))
        words = [corpus.words[(session.word + k) % len(corpus.words)] for k in range(count)]
        session.word += count
        delta = " " + " ".join(words)
        session.text.append(delta)
        session.deltas_left -= 1
        part = {
            **part_base,
            "id": session.part,
            "type": "text",
            "text": "".join(session.text),
            "time": {"start": ms - 1000 * len(session.text)},
        }
        if session.deltas_left == 0:
            part["time"]["end"] = ms
        return [_part(part, delta)]
    roll = rng.random()
    if roll < 0.4 or session.step == 0:
        session.step += 1
        session.part = "prt_" + _oc_id(rng)
        session.text = []
        session.deltas_left = rng.randrange(4, 24)
        return _next_server_events(rng, corpus, session, ms)
    if roll < 0.85:
        tool = rng.choice(_TOOLS)
        path = rng.choice(corpus.paths)
        call = {
            **part_base,
            "id": "prt_" + _oc_id(rng),
            "type": "tool",
            "tool": tool,
            "callID": "toolu_" + _oc_id(rng),
        }
        tool_input = (
            {"filePath": path}
            if tool in ("read", "edit")
            else {"pattern": rng.choice(corpus.words), "path": os.path.dirname(path)}
        )
        running = {
            **call,
            "state": {"status": "running", "input": tool_input, "time": {"start": ms}},
        }
        output = _tool_output(rng, corpus)
        completed = {
            **call,
            "state": {
                "status": "completed",
                "input": tool_input,
                "output": output,
                "title": path,
                "metadata": {"preview": output[:120], "truncated": False},
                "time": {"start": ms, "end": ms + rng.randrange(5, 4000)},
            },
        }
        session.pending.append(_part(completed))
        return [_part(running)]
    tokens = {
        "input": rng.randrange(2_000, 90_000),
        "output": rng.randrange(10, 4_000),
        "reasoning": 0,
        "cache": {"read": rng.randrange(0, 80_000), "write": 0},
    }
    finish = _part(
        {
            **part_base,
            "id": "prt_" + _oc_id(rng),
            "type": "step-finish",
            "reason": "stop",
            "snapshot": f"{rng.getrandbits(160):040x}",
            "cost": round(rng.random() / 20, 6),
            "tokens": tokens,
        }
    )
    provider, model = session.model
    done = {
        "type": "message.updated",
        "properties": {
            "info": {
                "id": session.message,
                "sessionID": session.id,
                "role": "assistant",
                "providerID": provider,
                "modelID": model,
                "mode": "build",
                "cost": 0.01,
                "tokens": tokens,
                "time": {"created": ms - 60_000, "completed": ms},
            }
        },
    }
    session.message = ""
    return [finish, done]


def _part(part: dict[str, Any], delta: str | None = None) -> dict[str, Any]:
    properties: dict[str, Any] = {"part": part}
    if delta is not None:
        properties["delta"] = delta
    return {"type": "message.part.updated", "properties": properties}


def iter_events(count: int, seed: int = SEED) -> Iterator[dict[str, Any]]:
    """``count`` bridged events with id, timestamp and correlation_id, generated lazily."""
    rng = random.Random(seed)
    corpus = _Corpus()
    bridge = OpenCodeBridge()
    sessions = [_Session(rng, i) for i in range(SESSIONS)]
    weights = [1.0 / (1 + i) for i in range(SESSIONS)]
    run_id = f"run_{rng.getrandbits(64):016x}"
    ms = START_MS
    made = 0
    while made < count:
        session = rng.choices(sessions, weights)[0]
        for server_event in _next_server_events(rng, corpus, session, ms):
            for event in bridge.map(server_event):
                if event["type"].startswith("execution.tool_"):
                    bridge.observe_tool_event(event)
                ms += rng.randrange(1, 40)
                event["id"] = _store_id(rng, ms)
                event["timestamp"] = ms
                event["correlation_id"] = run_id
                yield event
                made += 1
                if made == count:
                    return


def generate(count: int, seed: int = SEED) -> list[dict[str, Any]]:
    return list(iter_events(count, seed))


if __name__ == "__main__":
    import collections
    import json

    sample = generate(20_000)
    sizes = [len(json.dumps(e, separators=(",", ":")).encode()) for e in sample]
    kinds = collections.Counter(e["type"] for e in sample)
    print(f"mean {sum(sizes) / len(sizes):.0f} B, min {min(sizes)}, max {max(sizes)}")
    for kind, n in kinds.most_common():
        print(f"  {kind}: {n / len(sample):.1%}")
