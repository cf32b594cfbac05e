"""Resume of a 300,000-line file keeping the newest 100,000, vs json/orjson replay."""

from __future__ import annotations

import cases
import pytest

READERS = {
    "json.loads per line": cases.replay_json,
    "orjson.loads per line": cases.replay_orjson,
    "JsonlStore open": cases.resume_store,
    "DurableStream open": cases.resume_stream,
}


@pytest.mark.parametrize("name", list(READERS))
def test_resume(benchmark, name, resume_file):
    kept = benchmark.pedantic(READERS[name], args=(resume_file,), rounds=3)
    assert kept > 0
