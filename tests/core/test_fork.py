"""A store opened before os.fork() is the parent's: the child can neither write nor damage it."""

from __future__ import annotations

import os

import pytest
from forking import run_in_child
from opencode_addons import JsonlStore

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # Forking a process with threads (the store has helper threads) is exactly what is tested.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]


@pytest.mark.parametrize("durability", ["flush", "group"])
def test_child_cannot_append_and_closing_there_leaves_the_file_alone(tmp_path, durability):
    path = tmp_path / "e.jsonl"
    store = JsonlStore(path, durability=durability)
    store.append({"type": "before"})

    def child() -> int:
        try:
            store.append({"type": "from child"})
        except ValueError as error:
            if "forked" not in str(error):
                return 3
        else:
            return 2
        try:
            store.sync()
        except ValueError:
            pass
        else:
            return 4
        store.close()  # only lets go of the child's handles
        return 0

    assert run_in_child(child) == 0
    store.append({"type": "after"})
    store.close()
    lines = path.read_bytes().splitlines()
    assert [line.split(b'"type":"')[1].split(b'"')[0] for line in lines] == [b"before", b"after"]


def test_a_child_that_hangs_fails_its_test_instead_of_stalling_the_run() -> None:
    def hang() -> int:
        import time

        time.sleep(30)
        return 0

    with pytest.raises(AssertionError, match="did not exit within 1 s"):
        run_in_child(hang, deadline=1.0)
    assert run_in_child(lambda: 7) == 7
