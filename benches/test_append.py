"""Append throughput: baselines vs JsonlStore and DurableStream, single and batch, per mode."""

from __future__ import annotations

import os

import cases
import pytest

CONTENDERS = [
    *cases.BASELINES.values(),
    *(cases.store_contender(mode, batch) for mode in cases.MODES for batch in (False, True)),
    *(cases.stream_contender(mode, batch) for mode in cases.MODES for batch in (False, True)),
]


def _slice(contender, events):
    slow = "fsync/event" in contender.name or "(fsync)" in contender.name
    return cases.events_for("fsync" if slow else "", events)


@pytest.mark.parametrize("contender", CONTENDERS, ids=lambda c: c.name)
def test_append(benchmark, contender, events, tmp_path):
    chunk = _slice(contender, events)
    counter = iter(range(10**6))

    def setup():
        path = os.path.join(tmp_path, f"events-{next(counter)}.jsonl")
        return (contender.open(path), chunk), {}

    def teardown(state, _events):
        contender.close(state)

    benchmark.extra_info["events"] = len(chunk)
    benchmark.pedantic(contender.run, setup=setup, teardown=teardown, rounds=3)
