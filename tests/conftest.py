"""Shared test setup: ``tests/`` is importable (``from fakes import ...``) from every subfolder."""

from __future__ import annotations

import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
