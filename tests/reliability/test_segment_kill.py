"""A writer SIGKILLed at any point of sealing, carrying forward, compressing or deleting a segment.

The child (tests/helpers/kill_writer.py in its segment mode) writes into a DurableStream with
1 MiB segments and a budget of two, opening and closing checkpoints and intents, and sends itself
SIGKILL at one named point (OPENCODE_ADDONS_CRASH_AT) the n-th time it gets there. Rounds follow
each other on the same store, so checkpoints and intents opened in early rounds must survive
every later round's retention. After every kill the parent checks that:

- the store opens cleanly: no corrupt or duplicate line in what opening reads;
- the events left are one run of consecutive seqs (retention drops whole oldest segments; nothing
  is duplicated), every acknowledged event among them holds exactly what was appended, and the
  newest acknowledged event is there;
- ``resume()`` yields exactly the pending checkpoints and active intents the acknowledged
  operations left (the one operation in flight at the kill may have happened or not);
- appends continue after reopening.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from opencode_addons import read_events
from opencode_addons.durable_stream import DurableStream

HELPERS = Path(__file__).parents[1] / "helpers"
sys.path.insert(0, str(HELPERS))

from kill_writer import make_event, segment_options  # noqa: E402

WRITER = HELPERS / "kill_writer.py"
CRASH_ENV = "OPENCODE_ADDONS_CRASH_AT"

PLAIN_POINTS = [
    "seal.trimmed:1",
    "seal.renamed:1",
    "seal.header:1",
    "seal.snapshot:1",
    "seal.started:1",
    "keeper.synced:1",
    "keeper.active_synced:1",
    "retention.delete:1",
    "retention.deleted:1",
    "seal.renamed:3",
    "seal.header:3",
    "seal.snapshot:4",
    "retention.delete:3",
    "retention.deleted:2",
    "keeper.synced:3",
    "keeper.active_synced:3",
    "seal.trimmed:5",
]
COMPRESSED_POINTS = [
    "compress.written:1",
    "compress.renamed:1",
    "compress.plain_removed:1",
    "compress.renamed:2",
    "retention.delete:2",
]


@dataclass
class Model:
    """What the acknowledged operations left open: item id -> session."""

    checkpoints: dict[str, str] = field(default_factory=dict)
    intents: dict[str, str] = field(default_factory=dict)

    def copy(self) -> Model:
        return Model(dict(self.checkpoints), dict(self.intents))

    def apply(self, op: list[str]) -> None:
        kind = op[0]
        if kind == "checkpoint":
            self.checkpoints[op[1]] = op[2]
        elif kind == "intent":
            self.intents[op[1]] = op[2]
        elif kind == "close":
            self.checkpoints.pop(op[1], None)
            self.intents.pop(op[1], None)
        elif kind == "end":
            for items in (self.checkpoints, self.intents):
                for item_id in [i for i, s in items.items() if s == op[1]]:
                    del items[item_id]


def run_until_killed(
    path: Path, point: str, first: int, compress: bool, model: Model
) -> tuple[dict[int, int], list[str] | None]:
    """Runs the child until it kills itself; applies its acknowledged operations to ``model``;
    returns {counter: seq} of acknowledged events and the operation in flight (if any)."""
    args = [sys.executable, str(WRITER), str(path), "flush", str(first), "segments"]
    if compress:
        args.append("compress")
    env = {**os.environ, CRASH_ENV: point}
    proc = subprocess.run(args, env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, f"{point}: rc={proc.returncode} {proc.stderr.decode()[-2000:]}"
    lines = proc.stdout.decode().split("\n")
    assert lines[0] == "READY", proc.stderr.decode()[-2000:]
    acked: dict[int, int] = {}
    in_flight: list[str] | None = None
    # The last line may be cut short by the kill: only whole lines count.
    for line in lines[1:-1]:
        words = line.split()
        if words[0] == "begin":
            in_flight = words[1:]
        elif words[0] == "done":
            assert in_flight is not None
            if len(words) > 1:  # checkpoint/intent: its id is known now
                model.apply(words[1:])
            else:
                model.apply(in_flight)
            in_flight = None
        else:
            acked[int(words[0])] = int(words[1])
            in_flight = None
    return acked, in_flight


def allowed_states(model: Model, in_flight: list[str] | None) -> list[Model]:
    """The open items the store may hold: the model, or the model after the operation in flight."""
    if in_flight is None or in_flight[0] == "event":
        return [model]
    after = model.copy()
    if in_flight[0] in ("close", "end"):
        after.apply(in_flight)
    return [model, after]


def check(
    path: Path, compress: bool, model: Model, in_flight: list[str] | None, acked: dict
) -> None:
    events = read_events(path)
    seqs = [e["seq"] for e in events]
    assert seqs, "retention left no event"
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), "a seq is missing or duplicated"
    by_seq = {e["seq"]: e for e in events}
    newest_acked = max(acked.values(), default=0)
    assert seqs[-1] >= newest_acked, "the newest acknowledged event is lost"
    for counter, seq in acked.items():
        if seq >= seqs[0]:
            stored = {k: v for k, v in by_seq[seq].items() if k != "seq"}
            assert stored == make_event(counter), f"seq {seq} does not hold event {counter}"
    with DurableStream(path, **segment_options(compress)) as stream:
        recovery = stream.recovery
        assert recovery["corrupt_lines"] == 0, recovery
        assert recovery["duplicate_lines"] == 0, recovery
        result = stream.resume()
        found = (
            {c.id: c.stream_id for c in result.pending_checkpoints},
            {i.id: i.session_id or i.stream_id for i in result.active_intents},
        )
        states = allowed_states(model, in_flight)
        created = in_flight is not None and in_flight[0] in ("checkpoint", "intent")
        if created:
            # A request in flight may have been stored: one more item, of that session.
            items = found[0] if in_flight[0] == "checkpoint" else found[1]
            known = model.checkpoints if in_flight[0] == "checkpoint" else model.intents
            extra = set(items) - set(known)
            assert len(extra) <= 1 and all(items[i] == in_flight[1] for i in extra), found
            known.update({i: items[i] for i in extra})
        assert found in [(s.checkpoints, s.intents) for s in states], (found, in_flight)
        # The store holds exactly this from now on (an operation in flight happened or not).
        model.checkpoints, model.intents = dict(found[0]), dict(found[1])
        last = stream.stats()["next_seq"] - 1
        stored = stream.append({"type": "after.reopen", "payload": {"n": last}})
        assert stored["seq"] == last + 1


@pytest.mark.parametrize(
    ("compress", "points"),
    [(False, PLAIN_POINTS), (True, COMPRESSED_POINTS)],
    ids=["plain", "zstd"],
)
def test_sigkill_while_sealing_carrying_or_deleting_keeps_every_open_item(
    tmp_path: Path, compress: bool, points: list[str]
) -> None:
    path = tmp_path / "kill" / "events.jsonl"
    model = Model()
    all_acked: dict[int, int] = {}
    for round_no, point in enumerate(points):
        acked, in_flight = run_until_killed(path, point, round_no * 1_000_000, compress, model)
        # (A round may die on its first append: the previous one left a full active segment.)
        all_acked.update(acked)
        check(path, compress, model, in_flight, all_acked)
    assert len(all_acked) > 2000
    # Items opened in the first rounds are still open after all the rounds' retention.
    assert model.checkpoints and model.intents
    # Seq 1 was in the first segment; whether retention dropped one segment or more by now
    # depends on how far the keeper got before each kill.
    assert read_events(path, limit=1)[0]["seq"] > 1, "retention never dropped a segment"
