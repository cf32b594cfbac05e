"""Child process for the kill tests: a DurableStream appended to from threads.

Usage: kill_writer.py PATH DURABILITY FIRST_COUNTER THREADS
       kill_writer.py PATH DURABILITY FIRST_COUNTER segments [compress]

The second form (tests/reliability/test_segment_kill.py) writes from one thread into a store with
small segments and a budget of two, so it seals, carries forward and deletes all the time, and
opens and closes checkpoints and intents as it goes. It reports each operation before it starts
(``begin ...``) and once it returned (``done``, or ``<counter> <seq>`` for an event); the parent
sets OPENCODE_ADDONS_CRASH_AT so the process SIGKILLs itself at a chosen point of sealing,
carrying forward, compressing or deleting.

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


# Segments of the segment mode: the smallest a DurableStream allows (one maximal event of 1 MiB
# and its seq suffix), and room for two of them.
SEGMENT_BYTES = (1 << 20) + 64
DISK_BYTES = 2 * SEGMENT_BYTES


def segment_options(compress: bool) -> dict:
    return {
        "max_event_history": 1000,
        "max_cache_size": 1000,
        "max_segment_bytes": SEGMENT_BYTES,
        "max_disk_bytes": DISK_BYTES,
        "compress_sealed": compress,
    }


def segment_main(path: str, durability: str, first: int, compress: bool) -> None:
    stream = DurableStream(path, durability=durability, **segment_options(compress))
    out_fd = sys.stdout.fileno()

    def say(text: str) -> None:
        data = (text + "\n").encode()
        while data:
            data = data[os.write(out_fd, data) :]

    say("READY")
    counter = first
    open_checkpoints: list[str] = []
    open_intents: list[str] = []
    while True:
        step = counter % 40
        session = f"ses_{first}_{counter // 400 % 3}"
        if step == 5:
            say(f"begin checkpoint {session}")
            checkpoint = stream.request_checkpoint(session, "go?", ["y"], "agent", timeout=86_400)
            open_checkpoints.append(checkpoint.id)
            say(f"done checkpoint {checkpoint.id} {session}")
        elif step == 15 and len(open_checkpoints) > 3:
            checkpoint_id = open_checkpoints.pop(0)
            say(f"begin close {checkpoint_id}")
            stream.approve_checkpoint(checkpoint_id, "user", "y")
            say("done")
        elif step == 25:
            say(f"begin intent {session}")
            intent = stream.create_intent({"session_id": session, "agent": "a"})
            open_intents.append(intent.id)
            say(f"done intent {intent.id} {session}")
        elif step == 35 and len(open_intents) > 3:
            intent_id = open_intents.pop(0)
            say(f"begin close {intent_id}")
            stream.complete_intent(intent_id, "ok")
            say("done")
        elif counter % 997 == 0:
            say(f"begin end {session}")
            stream.delete_session(session)
            say("done")
        else:
            say(f"begin event {counter}")
            say(f"{counter} {stream.append(make_event(counter))['seq']}")
        counter += 1


def main() -> None:
    if sys.argv[4] == "segments":
        compress = sys.argv[5:] == ["compress"]
        segment_main(sys.argv[1], sys.argv[2], int(sys.argv[3]), compress)
        return
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
