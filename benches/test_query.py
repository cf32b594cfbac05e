"""Selective and broad queries over 100,000 events vs a newest-first Python scan."""

from __future__ import annotations

import os
from collections import deque

import cases
import pytest
from opencode_addons import EventRing, JsonlStore

SPECS = {"selective": cases.SELECTIVE, "broad": cases.BROAD}


@pytest.fixture(scope="module")
def targets(events, tmp_path_factory):
    history = deque(events, maxlen=cases.HISTORY)
    ring = EventRing(cases.HISTORY)
    cases._extend_batches(ring, events)
    path = os.path.join(tmp_path_factory.mktemp("query"), "query.jsonl")
    store = JsonlStore(
        path, durability="none", max_cache_size=cases.HISTORY, history_size=cases.HISTORY
    )
    cases._extend_batches(store, events)
    yield {"python scan": history, "EventRing": ring, "JsonlStore": store}
    store.close()


@pytest.mark.parametrize("spec", list(SPECS))
@pytest.mark.parametrize("name", ["python scan", "EventRing", "JsonlStore"])
def test_query(benchmark, targets, name, spec):
    target, query = targets[name], SPECS[spec]
    if name == "python scan":
        found = benchmark(cases.python_scan, target, query)
    else:
        found = benchmark(cases.native_query, target, query)
    expected = cases.python_scan(targets["python scan"], query)
    assert [e["id"] for e in found] == [e["id"] for e in expected]
