"""The PEP 517 build backend: maturin's, building the bindings' CPython 3.9 flavour on 3.9.

The bindings target the stable ABI of CPython 3.10+ (Cargo.toml's `python` feature), whose
calling convention passes a method its arguments without a new tuple or keyword dict. Built by
CPython 3.9, that wheel could not be installed there, so on 3.9 this backend adds Cargo.toml's
`python39` feature (the 3.9 stable ABI) to the build arguments: `pip install .` works on every
CPython the project claims. Every hook is maturin's; the three that build or describe the wheel
get the arguments.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, Optional

import maturin
from maturin import (
    build_sdist,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
)

__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_wheel",
]

Settings = Optional[Mapping[str, Any]]


def _settings(config_settings: Settings) -> Settings:
    """`config_settings` as they are on 3.10+; on 3.9 with the `python39` feature added to the
    build arguments (maturin takes them from the settings when given there, else from
    MATURIN_PEP517_ARGS, which this keeps)."""
    if sys.version_info >= (3, 10):
        return config_settings
    args = [*maturin.get_maturin_pep517_args(config_settings), "--features", "python39"]
    return {**(config_settings or {}), "maturin.build-args": args}


def build_wheel(
    wheel_directory: str, config_settings: Settings = None, metadata_directory: Optional[str] = None
) -> str:
    return maturin.build_wheel(wheel_directory, _settings(config_settings), metadata_directory)


def build_editable(
    wheel_directory: str, config_settings: Settings = None, metadata_directory: Optional[str] = None
) -> str:
    return maturin.build_editable(wheel_directory, _settings(config_settings), metadata_directory)


def prepare_metadata_for_build_wheel(
    metadata_directory: str, config_settings: Settings = None
) -> str:
    return maturin.prepare_metadata_for_build_wheel(metadata_directory, _settings(config_settings))
