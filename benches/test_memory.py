"""Memory held at 100,000 events, each contender in a fresh subprocess (psutil RSS)."""

from __future__ import annotations

import cases
import pytest


@pytest.mark.parametrize("name", cases.MEMORY_CONTENDERS)
def test_memory_held(benchmark, name):
    result = benchmark.pedantic(cases.measure_memory, args=(name,), rounds=1)
    benchmark.extra_info.update(result)
    assert result["events"] == cases.MEMORY_EVENTS
