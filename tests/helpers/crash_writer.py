"""Child process for the crash tests: appends forever and reports acknowledged events.

Usage: crash_writer.py PATH DURABILITY FIRST_COUNTER THREADS

Each event is a deterministic function of an integer counter (see ``make_event``), so the parent
can recompute the exact content. In "flush"/"none"/"fsync" mode a line ``<counter> <seq>`` is
printed (and flushed) right after ``append`` returned; in "group" mode the lines of a batch are
printed only after ``sync()`` returned. The parent kills this process with SIGKILL.
"""

from __future__ import annotations

import sys
import threading

from opencode_addons import JsonlStore

# Counters of thread t are FIRST_COUNTER + t * THREAD_STRIDE + k.
THREAD_STRIDE = 10_000_000


def make_event(counter: int) -> dict:
    """The event written for ``counter``: mixed sizes, unicode, nested payload."""
    size = (counter * 7919) % 2500
    return {
        "id": f"crash-{counter}",
        "type": ("tool.start", "tool.end", "message", "checkpoint")[counter % 4],
        "stream_id": f"stream-{counter % 7}",
        "correlation_id": f"corr-{counter % 3}",
        "actor": "agent" if counter % 2 else "user",
        "timestamp": 1_700_000_000_000 + counter,
        "payload": {
            "counter": counter,
            "text": ("é€😀x" * (size // 4 + 1))[:size],
            "list": [counter % 10, None, True, 0.25],
        },
    }


def main() -> None:
    path, durability, first, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    store = JsonlStore(path, durability=durability, max_cache_size=1000)
    print_lock = threading.Lock()
    out = sys.stdout

    def report(pairs: list) -> None:
        text = "".join(f"{counter} {seq}\n" for counter, seq in pairs)
        with print_lock:
            out.write(text)
            out.flush()

    def writer(thread: int) -> None:
        counter = first + thread * THREAD_STRIDE
        if durability == "group":
            while True:
                pending = []
                for _ in range(1 + counter % 37):
                    pending.append((counter, store.append(make_event(counter))["seq"]))
                    counter += 1
                store.sync()
                report(pending)
        else:
            while True:
                seq = store.append(make_event(counter))["seq"]
                report([(counter, seq)])
                counter += 1

    workers = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(threads)]
    for w in workers:
        w.start()
    with print_lock:
        out.write("READY\n")
        out.flush()
    for w in workers:
        w.join()


if __name__ == "__main__":
    main()
