"""The ``opencode-addons`` command: every subcommand, its errors, and the soak's memory check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from opencode_addons import JsonlStore
from opencode_addons.cli import main

STREAMS = ("ses_a", "ses_b", "ses_c")
TYPES = ("execution.text_delta", "execution.tool_start", "task.completed")


def _event(index: int) -> dict:
    return {
        "type": TYPES[index % 3],
        "stream_id": STREAMS[index % 3 if index % 2 else (index // 2) % 3],
        "actor": "agent" if index % 4 else "user",
        "timestamp": 1_700_000_000_000 + index,
        "payload": {"index": index, "text": "héllo"},
    }


@pytest.fixture
def store_file(tmp_path):
    path = tmp_path / "events.jsonl"
    with JsonlStore(str(path)) as store:
        store.extend([_event(i) for i in range(60)])
    return str(path)


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line]


def _one_line_error(captured) -> str:
    lines = captured.err.strip().splitlines()
    assert "Traceback" not in captured.err
    return lines[-1]


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "opencode_addons", *args],
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )


# -- stats --------------------------------------------------------------------------------------


def test_stats_summarizes_the_file(store_file, capsys):
    assert main(["stats", store_file]) == 0
    out = capsys.readouterr().out
    assert "events" in out and "60" in out
    assert "execution.text_delta" in out


def test_stats_json(store_file, capsys):
    assert main(["stats", store_file, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["events"] == 60
    assert summary["streams"] == 3
    assert summary["types"] == {t: 20 for t in TYPES}
    assert summary["corrupt_lines"] == 0


def test_stats_counts_a_corrupt_line(store_file, capsys):
    with open(store_file, "ab") as handle:
        handle.write(b"{not json\n")
    assert main(["stats", store_file, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["corrupt_lines"] >= 1


def test_stats_missing_file(tmp_path, capsys):
    assert main(["stats", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in _one_line_error(capsys.readouterr())


def test_stats_on_a_directory(tmp_path, capsys):
    assert main(["stats", str(tmp_path)]) == 2
    assert "directory" in _one_line_error(capsys.readouterr())


# -- query --------------------------------------------------------------------------------------


def test_query_filters(store_file, capsys):
    args = ["query", store_file, "--stream-id", "ses_b", "--type", TYPES[0], TYPES[1]]
    assert main(args) == 0
    found = _lines(capsys.readouterr().out)
    assert found and all(e["stream_id"] == "ses_b" for e in found)
    assert {e["type"] for e in found} <= set(TYPES[:2])
    assert [e["seq"] for e in found] == sorted(e["seq"] for e in found)


def test_query_newest_limit_actor_and_time(store_file, capsys):
    assert main(["query", store_file, "--actor", "agent", "--limit", "3", "--newest"]) == 0
    found = _lines(capsys.readouterr().out)
    assert len(found) == 3 and all(e["actor"] == "agent" for e in found)
    assert [e["seq"] for e in found] == sorted((e["seq"] for e in found), reverse=True)
    since, until = "1700000000010", "1700000000019"
    assert main(["query", store_file, "--since", since, "--until", until]) == 0
    assert [e["payload"]["index"] for e in _lines(capsys.readouterr().out)] == list(range(10, 20))


def test_query_output_is_compact_utf8(store_file, capsys):
    assert main(["query", store_file, "--limit", "1"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert "héllo" in line and ", " not in line


@pytest.mark.parametrize(
    "bad", [["--limit", "-1"], ["--limit", "x"], ["--since", "yesterday"], ["--bogus"]]
)
def test_query_bad_arguments(store_file, bad, capsys):
    assert main(["query", store_file, *bad]) == 2
    assert "error" in _one_line_error(capsys.readouterr())


def test_query_missing_file(tmp_path, capsys):
    assert main(["query", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in _one_line_error(capsys.readouterr())


# -- tail ---------------------------------------------------------------------------------------


def test_tail_prints_the_newest_in_order(store_file, capsys):
    assert main(["tail", store_file]) == 0
    assert [e["payload"]["index"] for e in _lines(capsys.readouterr().out)] == list(range(50, 60))
    assert main(["tail", store_file, "-n", "3"]) == 0
    assert [e["payload"]["index"] for e in _lines(capsys.readouterr().out)] == [57, 58, 59]


def test_tail_follow_prints_appends(store_file, capsys):
    def append_later() -> None:
        time.sleep(0.3)
        with JsonlStore(store_file) as store:
            for index in range(60, 63):
                store.append(_event(index))

    writer = threading.Thread(target=append_later)
    writer.start()
    args = ["tail", store_file, "-n", "1", "-f", "--max-events", "3", "--max-seconds", "10"]
    args += ["--interval", "0.05"]
    started = time.monotonic()
    assert main(args) == 0
    writer.join()
    assert time.monotonic() - started < 9
    indexes = [e["payload"]["index"] for e in _lines(capsys.readouterr().out)]
    assert indexes == [59, 60, 61, 62]


def test_tail_follow_stops_at_max_seconds(store_file, capsys):
    assert main(["tail", store_file, "-n", "0", "-f", "--max-seconds", "0.3"]) == 0
    assert capsys.readouterr().out == ""


def test_tail_missing_file(tmp_path, capsys):
    assert main(["tail", str(tmp_path / "nope.jsonl"), "-f"]) == 2
    assert "no such file" in _one_line_error(capsys.readouterr())


# -- general ------------------------------------------------------------------------------------


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_module_entry_point(store_file):
    result = _cli("stats", store_file, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["events"] == 60
    missing = _cli("stats", store_file + ".missing")
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr


# -- soak ---------------------------------------------------------------------------------------

SHORT_SOAK = ["--events", "20000", "--sessions", "20", "--history", "2000", "--cache", "1000"]


def test_soak_short_run_reports_and_checks_memory(capsys):
    code = main(["soak", *SHORT_SOAK, "--json", "--quiet"])
    figures = json.loads(capsys.readouterr().out)
    for key in (
        "events_per_second",
        "rss_start",
        "rss_at_10pct",
        "rss_at_20pct",
        "rss_end",
        "rss_peak",
        "history_events",
        "cache_events",
        "bytes_held",
        "components",
        "memory_ok",
        "rss_growth",
        "memory_check",
    ):
        assert key in figures
    assert figures["events"] >= 20_000
    assert figures["history_events"] == 2000 and figures["cache_events"] == 1000
    for name in ("durable_stream", "task_registry", "learning_extractor", "memory_lane_store"):
        assert figures["components"][name]
    assert figures["memory_ok"] == (figures["rss_growth"] <= figures["max_rss_growth"])
    # 20,000 events cannot fill the task registry's 1,000 finished tasks: nothing is measured,
    # and the run says so instead of passing or failing on a half-filled heap.
    assert not figures["memory_checked"] and figures["full_at_events"] is None
    assert any("task registry" in what for what in figures["filling"])
    # 20 sessions of ~600 events each end about 33 times: short of the bridge's 1,024.
    assert any("bridge ended sessions" in what for what in figures["filling"])
    # The disk is checked at every point: the store's files stayed within budget + a segment.
    assert figures["disk_ok"] and 0 < figures["disk_bytes_peak"] <= figures["disk_limit"]
    assert figures["ok"] == (figures["memory_ok"] and figures["disk_ok"])
    assert code == (0 if figures["ok"] else 1)


def test_soak_rotates_and_drops_with_a_small_budget(capsys):
    code = main(
        [
            "soak",
            *SHORT_SOAK,
            "--max-segment-bytes",
            "1100000",
            "--max-disk-bytes",
            "2200000",
            "--json",
            "--quiet",
        ]
    )
    figures = json.loads(capsys.readouterr().out)
    assert figures["segments_dropped"] > 0 and figures["events_dropped"] > 0
    assert figures["disk_bytes_peak"] <= 2_200_000 + 1_100_000
    assert code == (0 if figures["ok"] else 1)


def test_soak_table_and_kept_directory(tmp_path, capsys):
    code = main(["soak", *SHORT_SOAK, "--dir", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert "events/s" in out and "peak RSS" in out and "memory check" in out
    assert "disk bytes peak" in out and "disk budget" in out
    assert "NOT CHECKED" in out  # too short a run to fill the task registry
    assert ("FAIL" not in out) == (code == 0)
    assert os.path.getsize(tmp_path / "events.jsonl") > 0


def test_soak_on_a_locked_store(tmp_path):
    with JsonlStore(str(tmp_path / "events.jsonl")):
        result = _cli("soak", *SHORT_SOAK, "--dir", str(tmp_path), "--quiet")
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_soak_bad_arguments(capsys):
    assert main(["soak", "--events", "0"]) == 2
    assert main(["soak", "--durability", "sometimes"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_soak_plot_without_matplotlib(tmp_path, capsys):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        code = main(["soak", *SHORT_SOAK, "--plot", str(tmp_path / "soak.png"), "--quiet"])
        assert code == 2
        assert "matplotlib" in _one_line_error(capsys.readouterr())
    else:
        code = main(["soak", *SHORT_SOAK, "--plot", str(tmp_path / "soak.png"), "--quiet"])
        assert os.path.getsize(tmp_path / "soak.png") > 0
