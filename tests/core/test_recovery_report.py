"""The recovery report has one set of keys, the same in JsonlStore.recovery and file_stats."""

from pathlib import Path

import pytest
from opencode_addons import JsonlStore, file_stats

REPORT_KEYS = {
    "events",
    "corrupt_lines",
    "duplicate_lines",
    "torn_tail_bytes",
    "padding_bytes",
    "unterminated_last_line",
    "last_seq",
    "snapshot_lines",
}


def _line(seq: int) -> bytes:
    return b'{"type":"t","id":"e%d","timestamp":1,"seq":%d}' % (seq, seq)


@pytest.mark.parametrize("unterminated", [False, True])
def test_store_and_file_stats_report_the_same_keys_and_values(
    tmp_path: Path, unterminated: bool
) -> None:
    path = tmp_path / "damaged.jsonl"
    body = b"\n".join([_line(1), b"not json", _line(2), _line(2), b"\x00\x00\x00" + _line(3)])
    tail = _line(4) if unterminated else b"\n" + b'{"type":"t","pay'
    path.write_bytes(body + (b"\n" if unterminated else b"") + tail)

    stats = file_stats(path)
    with JsonlStore(path) as store:
        recovery = store.recovery

    assert set(recovery) == REPORT_KEYS
    assert {key: stats[key] for key in REPORT_KEYS} == recovery
    assert recovery["corrupt_lines"] == 1
    assert recovery["duplicate_lines"] == 1
    assert recovery["padding_bytes"] == 3
    assert recovery["unterminated_last_line"] is unterminated
    if unterminated:
        assert (recovery["events"], recovery["torn_tail_bytes"], recovery["last_seq"]) == (4, 0, 4)
    else:
        torn = len(b'{"type":"t","pay')
        assert (recovery["events"], recovery["torn_tail_bytes"], recovery["last_seq"]) == (
            3,
            torn,
            3,
        )
