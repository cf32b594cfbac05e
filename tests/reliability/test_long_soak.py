"""Guarantee 7: a 10,000,000-event soak keeps memory flat and every component's state bounded.

Slow (a few minutes): excluded from the default run by the ``slow`` marker. Run it with

    python -m pytest -m slow tests/reliability/test_long_soak.py

``OCA_SOAK_EVENTS`` (default 10000000), ``OCA_SOAK_HISTORY`` and ``OCA_SOAK_CACHE`` (defaults: the
soak's own 100000 and 50000) change the size, e.g. to check the test itself quickly: with the
default history and cache it needs at least 3,750,000 events, since everything must be full
(at about 750,000) by 20% of the run.

The soak runs in a fresh process through the CLI (``python -m opencode_addons soak --json``), so
its RSS is not the test runner's. Every bounded structure must be full by 20% of the run (the
last to fill, the bridge's memory of 1,024 deleted sessions, fills at about 750,000 events);
from then on every RSS sample stays within 5% of the RSS when everything was full; the sizes
every component reports stay under bounds that do not depend on the number of events (only
cumulative counters, listed below, grow), no component reports errors, and the shutdown at the
end is clean.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from opencode_addons.soak import MEMORY_LANE_ITEMS, ended_sessions_remembered

EVENTS = int(os.environ.get("OCA_SOAK_EVENTS", "10000000"))
HISTORY = int(os.environ.get("OCA_SOAK_HISTORY", "100000"))
CACHE = int(os.environ.get("OCA_SOAK_CACHE", "50000"))
SESSIONS = 200
MAX_GROWTH = 0.05
WARM_UP = 0.20
# Anything that is a size (not a running total) stays under this, whatever EVENTS is.
STATE_BOUND = 20_000

# Running totals: they count what happened, they hold nothing.
CUMULATIVE = {
    "task_observer": {
        "checks_performed",
        "tasks_retried",
        "tasks_completed",
        "tasks_failed",
        "tasks_stale",
        "checkpoints_requested",
        "sessions_dropped",
        "errors",
        "last_check",  # a timestamp
    },
    "task_registry": {"completed", "failed", "timeout", "cleaned_up", "event_errors"},
    "learning_extractor": {"learnings_captured", "captures_run", "errors"},
    "event_driven_ledger": {"events_seen", "duplicates", "writes", "errors"},
    "durable_stream": {
        "evicted",
        "file_bytes",
        "next_seq",
        "subscriber_errors",
        "projection_errors",
        "resumes",
        "segments_dropped",
        "events_dropped",
        "carried_forward",
    },
    "memory_lane_store": {"embedded", "pruned"},
    "session_state_tracker": {"created", "dropped", "expired", "evicted"},
    "checkpoint_manager": {
        "requested",
        "approved",
        "rejected",
        "timed_out",
        "handler_errors",
        "adopted",
        "dropped",
    },
}
ERROR_COUNTERS = {
    "task_observer": "errors",
    "task_registry": "event_errors",
    "learning_extractor": "errors",
    "event_driven_ledger": "errors",
    "durable_stream": "subscriber_errors",
}
# Sizes with a bound of their own.
SPECIFIC_BOUNDS = {
    ("durable_stream", "history_events"): HISTORY,
    ("durable_stream", "cache_events"): CACHE,
    ("health", "event_history"): HISTORY,
    ("health", "event_cache"): CACHE,
    # The soak caps the memory lane; it prunes in batches once 10% over.
    ("memory_lane_store", "count"): MEMORY_LANE_ITEMS * 11 // 10,
    ("session_state_tracker", "recently_ended"): ended_sessions_remembered(SESSIONS),
}


def run_soak() -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "opencode_addons",
            "soak",
            "--events",
            str(EVENTS),
            "--history",
            str(HISTORY),
            "--cache",
            str(CACHE),
            "--sessions",
            str(SESSIONS),
            "--json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=3 * 3600,
    )
    assert proc.stdout, proc.stderr
    result = json.loads(proc.stdout)
    # The CLI's own verdict (exit 1 when RSS grew > 5% between 20% and 100%).
    assert proc.returncode == 0, (proc.returncode, result["rss_growth"], proc.stderr[-2000:])
    return result


def state_sizes(components: dict) -> list[tuple[str, str, float]]:
    sizes = []
    for name, stats in components.items():
        if name == "shutdown":
            continue
        for key, value in stats.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if key in CUMULATIVE.get(name, ()) or key.endswith("bytes") or key == "ttl":
                continue
            sizes.append((name, key, value))
    return sizes


@pytest.mark.slow
def test_10_million_event_soak_keeps_memory_flat_and_state_bounded():
    result = run_soak()
    # The simulation stops at the end of a turn, a few events past the target.
    assert EVENTS <= result["events"] < EVENTS + 1000

    # Memory: flat within 5% once everything is full, at every sample and at the end.
    assert result["memory_checked"], result["filling"]
    assert result["full_at_events"] <= WARM_UP * EVENTS, "structures filled late"
    warm = result["rss_at_full"]
    assert result["history_events"] == HISTORY and result["cache_events"] == CACHE
    late = [s for s in result["samples"] if s["events"] >= result["full_at_events"]]
    assert len(late) >= 100
    assert all(s["history"] == HISTORY and s["full"] for s in late)
    worst = max([s["rss"] for s in late] + [result["rss_end"]])
    assert worst <= warm * (1 + MAX_GROWTH), f"RSS {worst} vs {warm} at warm-up"
    assert result["bytes_held"] <= result["rss_end"]
    # Disk: the store's files stayed within the budget plus one segment, at every point.
    assert result["disk_ok"] and result["disk_bytes_peak"] <= result["disk_limit"]
    assert result["segments_dropped"] > 0

    # Every component's state is bounded; running totals aside, nothing grows with EVENTS.
    components = result["components"]
    for name in ERROR_COUNTERS:
        assert name in components, sorted(components)
    sizes = state_sizes(components)
    assert len(sizes) > 20, sizes
    for name, key, value in sizes:
        bound = SPECIFIC_BOUNDS.get((name, key), STATE_BOUND)
        assert 0 <= value <= bound, f"{name}.{key} = {value} (bound {bound})"
    # Cumulative counters really accumulated (the simulation did its work) without errors.
    for name, key in ERROR_COUNTERS.items():
        assert components[name][key] == 0, f"{name}.{key}"
    assert components["durable_stream"]["projection_errors"] == 0
    # The manager holds no checkpoint the stream has let go of (each is resolved, expired or
    # dropped with its session on both sides).
    checkpoints = components["checkpoint_manager"]
    assert checkpoints["pending"] <= components["durable_stream"]["pending_checkpoints"]
    assert checkpoints["dropped"] > 0
    assert components["durable_stream"]["evicted"] >= EVENTS - HISTORY
    assert components["event_driven_ledger"]["events_seen"] > EVENTS // 2
    assert components["session_state_tracker"]["created"] > SESSIONS
    assert result["shutdown_ok"], components["shutdown"]
    assert all(v in ("ok", "not started") for v in components["shutdown"].values())
