"""``python -m opencode_addons``: the ``opencode-addons`` command."""

from __future__ import annotations

import sys

from opencode_addons.cli import main

if __name__ == "__main__":
    sys.exit(main())
