"""Appends with rotation and retention on (small segments) vs one segment, paired rounds."""

from __future__ import annotations

import segments


def test_appends_with_rotation_and_retention(benchmark, events):
    ratio, base, other = benchmark.pedantic(
        segments.paired,
        args=(
            lambda: segments.append_seconds(events),
            lambda: segments.append_seconds(events, **segments.SMALL_SEGMENTS),
        ),
        rounds=1,
    )
    benchmark.extra_info.update(
        time_ratio=ratio, rotating_ev_s=len(events) / other, one_segment_ev_s=len(events) / base
    )
