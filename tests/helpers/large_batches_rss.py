"""Child process for test_large_batches_give_their_memory_back: stores rounds of large batches
(about 40 and 10 MB of JSON, more than the encoding buffer kept between calls) in a store with a
small cache, and prints its RSS in bytes before and after, as JSON."""

from __future__ import annotations

import json
import sys

import psutil
from opencode_addons import JsonlStore


def main(path: str, rounds: int) -> None:
    text = 'def f(x):\n\treturn "x" * 2\n' * 1_400  # about 40 KiB, quotes and escapes
    events = [{"type": "execution.tool_finish", "payload": {"output": text}} for _ in range(1_000)]
    process = psutil.Process()
    with JsonlStore(path, history_size=5, max_cache_size=5) as store:
        store.extend(events[:10])  # the store's own memory, before the large batches
        before = process.memory_info().rss
        for _ in range(rounds):
            # As the benchmark stores 1,250 events: a batch of 1,000 (40 MB), then of 250.
            store.extend(events)
            store.extend(events[:250])
        after = process.memory_info().rss
    print(json.dumps({"before": before, "after": after}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
