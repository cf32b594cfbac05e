"""Append rate while the history fills vs while it evicts."""

from __future__ import annotations

import cases
import pytest

OPENERS = {
    "EventRing": cases.ring_opener,
    "JsonlStore (flush)": cases._store_opener("flush"),
    "DurableStream (flush)": cases._stream_opener("flush"),
}


@pytest.mark.parametrize("name", list(OPENERS))
def test_fill_then_evict(benchmark, name, events):
    filling, evicting = benchmark.pedantic(
        cases.fill_then_evict, args=(OPENERS[name], events), rounds=1
    )
    benchmark.extra_info.update(filling=filling, evicting=evicting, ratio=evicting / filling)
