"""Shared test set-up: the suite is grouped by layer (core, stream, orchestrator, reliability);
``fakes`` and ``helpers`` live here, beside this file, for every layer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


@pytest.fixture(autouse=True)
def _close_real_streams():
    yield
    from real_stream import close_all

    close_all()
