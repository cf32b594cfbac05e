"""Shared fixtures for the benchmarks (run with ``pytest benches --benchmark-enable``)."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cases
from events import generate


@pytest.fixture(scope="session")
def events() -> list[dict[str, Any]]:
    return generate(cases.APPEND_EVENTS)


@pytest.fixture(scope="session")
def resume_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("resume") / "resume.jsonl")
    cases.write_resume_file(path)
    return path
