"""The calling convention the README promises: on CPython 3.10+ the wheel is built for the 3.10
stable ABI, so the native methods take METH_FASTCALL (arguments as an array, keywords as a
tuple of names); on 3.9 its own wheel uses METH_VARARGS | METH_KEYWORDS (a tuple per call, and
a dict for any keyword). `DurableStream.append` is the native appender's bound method so that
it gets the same convention.

A method's flags are not visible from Python; they are read from the bound method object
(CPython's PyCFunctionObject: the object header, then its PyMethodDef pointer) and trusted only
after the method's name read the same way matches `__name__`."""

from __future__ import annotations

import ctypes
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from opencode_addons import EventRing, JsonlStore
from opencode_addons.durable_stream import DurableStream

METH_VARARGS = 0x0001
METH_KEYWORDS = 0x0002
METH_FASTCALL = 0x0080

pytestmark = pytest.mark.skipif(
    sys.implementation.name != "cpython" or bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
    reason="reads the object layout of CPython's default (GIL) build",
)


class _MethodDef(ctypes.Structure):
    _fields_ = [
        ("ml_name", ctypes.c_char_p),
        ("ml_meth", ctypes.c_void_p),
        ("ml_flags", ctypes.c_int),
        ("ml_doc", ctypes.c_char_p),
    ]


class _CFunction(ctypes.Structure):
    _fields_ = [
        ("ob_refcnt", ctypes.c_ssize_t),
        ("ob_type", ctypes.c_void_p),
        ("m_ml", ctypes.POINTER(_MethodDef)),
    ]


def _flags(bound: Any) -> int:
    """The METH_* flags of a bound native method (`bound` stays referenced while read)."""
    assert type(bound).__name__ == "builtin_function_or_method", type(bound)
    definition = _CFunction.from_address(id(bound)).m_ml.contents
    assert definition.ml_name == bound.__name__.encode(), "the layout read does not match"
    return int(definition.ml_flags)


@pytest.fixture
def methods(tmp_path: Path) -> Any:
    store = JsonlStore(tmp_path / "store.jsonl", durability="none")
    stream = DurableStream(tmp_path / "stream.jsonl", durability="none")
    yield {
        "JsonlStore.append": store.append,
        "JsonlStore.extend": store.extend,
        "EventRing.append": EventRing(10).append,
        "DurableStream.append": stream.append,
    }
    stream.shutdown()
    store.close()


def test_native_methods_take_the_convention_of_their_wheel(methods: dict[str, Any]) -> None:
    # The 3.10+ wheel: METH_FASTCALL | METH_KEYWORDS (keywords come as names, no dict); the 3.9
    # wheel: METH_VARARGS | METH_KEYWORDS (a tuple per call, a dict for keywords).
    fast = sys.version_info >= (3, 10)
    expected = METH_FASTCALL | METH_KEYWORDS if fast else METH_VARARGS | METH_KEYWORDS
    for name, method in methods.items():
        flags = _flags(method)
        assert flags & (METH_FASTCALL | METH_VARARGS | METH_KEYWORDS) == expected, (
            name,
            hex(flags),
        )
    # The stream's bound method is the one its appends go through.
    assert methods["DurableStream.append"]({"type": "note", "stream_id": "s"})["seq"] == 1
