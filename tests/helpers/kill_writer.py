"""Child process for tests/test_reliability_kill.py: a DurableStream appended to from threads.

Usage: kill_writer.py PATH DURABILITY FIRST_COUNTER THREADS

Each event is a deterministic function of an integer counter (``make_event``), from a few bytes
to ~100 KB, so the parent can recompute its exact content. In "flush" mode each thread prints
``<counter> <seq>`` (one write, flushed) as soon as ``append`` returned; in "group" mode a thread
appends a small batch one event at a time, calls ``sync()`` on the store and only then prints the
batch. The parent kills this process with SIGKILL at a point of its choosing.
"""

from __future__ import annotations

import os
import sys
import threading

from opencode_addons.durable_stream import DurableStream

# Counters of thread t are FIRST_COUNTER + t * THREAD_STRIDE + k.
THREAD_STRIDE = 10_000_000
_ALPHABET = 'aé€😀"\\\n\t/<>{}x y'


def size_of(counter: int) -> int:
    """Mixed sizes: mostly tiny, some kilobytes, about 1% near 100 KB."""
    bucket = (counter * 2654435761) % 1000
    if bucket < 10:
        return 90_000 + (counter * 7919) % 10_000
    if bucket < 100:
        return 1_000 + (counter * 7919) % 19_000
    return (counter * 7919) % 400


def make_event(counter: int) -> dict:
    """The event written for ``counter`` (without the seq the store adds)."""
    size = size_of(counter)
    start = counter % len(_ALPHABET)
    text = (_ALPHABET[start:] + _ALPHABET[:start]) * (size // len(_ALPHABET) + 1)
    return {
        "id": f"kill-{counter}",
        "type": ("tool.start", "tool.end", "message.delta", "note")[counter % 4],
        "stream_id": f"stream-{counter % 5}",
        "actor": "agent" if counter % 2 else "user",
        "correlation_id": f"corr-{counter % 3}",
        "timestamp": 1_700_000_000_000 + counter,
        "payload": {"counter": counter, "text": text[:size], "list": [counter % 10, None, 0.5]},
    }


def main() -> None:
    path, durability, first, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    stream = DurableStream(path, durability=durability, max_event_history=1000, max_cache_size=1000)
    out_fd = sys.stdout.fileno()
    print_lock = threading.Lock()

    def report(pairs: list[tuple[int, int]]) -> None:
        text = "".join(f"{counter} {seq}\n" for counter, seq in pairs).encode()
        with print_lock:
            while text:
                text = text[os.write(out_fd, text) :]

    def writer(thread: int) -> None:
        counter = first + thread * THREAD_STRIDE
        while True:
            if durability == "group":
                pending = []
                for _ in range(1 + counter % 13):
                    pending.append((counter, stream.append(make_event(counter))["seq"]))
                    counter += 1
                # DurableStream has no public sync(); the store's is what group mode promises.
                stream.sync()
                report(pending)
            else:
                report([(counter, stream.append(make_event(counter))["seq"])])
                counter += 1

    workers = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(threads)]
    os.write(out_fd, b"READY\n")
    for w in workers:
        w.start()
    for w in workers:
        w.join()


if __name__ == "__main__":
    main()
