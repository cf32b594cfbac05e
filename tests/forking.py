"""Running a test's body in a fork child, with a deadline: a child that hangs (a lock a helper
thread held at the fork, say) fails the test instead of stalling the whole run."""

from __future__ import annotations

import os
import signal
import time
from typing import Callable

# Seconds a child may take; the bodies here take well under one.
CHILD_DEADLINE = 60.0


def run_in_child(body: Callable[[], int], deadline: float = CHILD_DEADLINE) -> int:
    """Forks, runs ``body`` in the child and returns its exit code (1 if it raised); kills the
    child and fails if it has not exited within ``deadline`` seconds."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = body()
        finally:
            os._exit(code)
    give_up = time.monotonic() + deadline
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > give_up:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"the fork child did not exit within {deadline:.0f} s (hung)")
        time.sleep(0.01)
