"""Deterministic benchmark events: seeded, about 530 bytes of compact JSON each.

100 streams, a dozen types, a quarter of the events with nested payloads. Every event carries
its own ``id``, ``timestamp``, ``actor`` and ``correlation_id`` so every contender stores exactly
the same bytes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

SEED = 20_240_601
STREAMS = tuple(f"ses_{i:03d}" for i in range(100))
TYPES = (
    "execution.text_delta",
    "execution.tool_start",
    "execution.tool_finish",
    "execution.step_start",
    "execution.step_finish",
    "message.completed",
    "task.registered",
    "task.completed",
    "checkpoint.requested",
    "checkpoint.approved",
    "learning.captured",
    "lifecycle.session.idle",
)
ACTORS = ("agent", "user", "system", "task-registry")
TARGET_BYTES = 530
SPREAD = 60
START_MS = 1_750_000_000_000
_WORDS = (
    "stream ring cache store event session agent tool checkpoint ledger memory bounded "
    "append replay query durable flush resume parse write budget shared header block"
).split()


def _text(rng: random.Random, length: int) -> str:
    words: list[str] = []
    size = 0
    while size < length:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:length]


def _nested(rng: random.Random) -> dict[str, Any]:
    return {
        "tool": rng.choice(("read", "edit", "bash", "grep")),
        "input": {"path": f"src/mod_{rng.randrange(50)}.py", "lines": [1, rng.randrange(400)]},
        "state": {"status": "completed", "time": {"start": 1, "end": rng.randrange(10_000)}},
        "tags": ["bench", rng.choice(("a", "b", "c"))],
    }


def _size(event: dict[str, Any]) -> int:
    return len(json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode())


def make_event(rng: random.Random, index: int) -> dict[str, Any]:
    """Event number ``index`` of the sequence that ``rng`` (seeded) produces."""
    stream = rng.choice(STREAMS)
    payload: dict[str, Any] = {"sessionID": stream, "index": index, "text": ""}
    if rng.random() < 0.25:
        payload["detail"] = _nested(rng)
    event = {
        "type": rng.choice(TYPES),
        "stream_id": stream,
        "actor": rng.choice(ACTORS),
        "correlation_id": f"run_{index // 10_000:04d}",
        "id": f"evt_{index:010d}_{rng.getrandbits(32):08x}",
        "timestamp": START_MS + index,
        "payload": payload,
    }
    wanted = TARGET_BYTES + rng.randint(-SPREAD, SPREAD)
    payload["text"] = _text(rng, max(0, wanted - _size(event)))
    return event


def iter_events(count: int, seed: int = SEED) -> Iterator[dict[str, Any]]:
    """``count`` events, generated lazily (nothing is retained)."""
    rng = random.Random(seed)
    for index in range(count):
        yield make_event(rng, index)


def generate(count: int, seed: int = SEED) -> list[dict[str, Any]]:
    return list(iter_events(count, seed))


if __name__ == "__main__":
    sample = generate(10_000)
    sizes = [_size(e) for e in sample]
    nested = sum("detail" in e["payload"] for e in sample)
    print(f"mean {sum(sizes) / len(sizes):.0f} B, min {min(sizes)}, max {max(sizes)}")
    print(
        f"streams {len({e['stream_id'] for e in sample})}, types {len({e['type'] for e in sample})}"
    )
    print(f"nested {nested / len(sample):.0%}")
