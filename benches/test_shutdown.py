"""shutdown_all with a loaded stream, tasks, pending checkpoints and every component."""

from __future__ import annotations

import cases


def test_shutdown_all(benchmark, events):
    seconds = benchmark.pedantic(cases.shutdown_all_seconds, args=(events, 1), rounds=3)
    assert seconds < 5.0
