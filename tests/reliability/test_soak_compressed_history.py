"""``opencode-addons soak --compress-history``: the run's history is compressed in memory and the
report gives both the JSON held and what it takes stored."""

from __future__ import annotations

import json

from opencode_addons.cli import main


def test_soak_with_compressed_history_reports_both_sizes(capsys):
    args = ["--events", "20000", "--sessions", "20", "--history", "10000", "--cache", "5000"]
    code = main(["soak", *args, "--compress-history", "--json", "--quiet"])
    figures = json.loads(capsys.readouterr().out)
    assert figures["config"]["compress_history"] is True
    assert figures["history_events"] == 10_000
    # Compressed blocks hold the same JSON in a fraction of the bytes (the open block and any
    # block still queued for the compressor count at full size).
    assert 0 < figures["bytes_stored"] < figures["bytes_held"] / 2
    assert code in (0, 1)  # the memory verdict is the long soak's business


def test_soak_text_report_names_stored_bytes(capsys):
    args = ["--events", "3000", "--sessions", "5", "--history", "2000", "--cache", "1000"]
    main(["soak", *args, "--compress-history", "--quiet"])
    out = capsys.readouterr().out
    assert "bytes stored" in out and "(compressed)" in out
