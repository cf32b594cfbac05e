"""The PEP 517 build backend: maturin's, building the bindings' CPython 3.9 flavour on 3.9.

The bindings target the stable ABI of CPython 3.10+ (Cargo.toml's `python` feature), whose
calling convention passes a method its arguments without a new tuple or keyword dict. Built by
CPython 3.9, that wheel could not be installed there, so on 3.9 this backend adds Cargo.toml's
`python39` feature (the 3.9 stable ABI) to the build arguments: `pip install .` works on every
CPython the project claims. Every hook is maturin's; only the arguments differ.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, Optional

import maturin
from maturin import build_sdist, get_requires_for_build_sdist

__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_wheel",
]

# The Cargo feature that builds for 3.9's stable ABI, and the first CPython that does not need it.
PYTHON39_FEATURE = "python39"
FASTCALL_ABI = (3, 10)

Settings = Optional[Mapping[str, Any]]


def build_args_for(version: tuple[int, int], args: list[str]) -> list[str]:
    """maturin's build arguments for a CPython of `version`: `args`, plus the 3.9 feature where
    the default stable ABI (3.10+) does not fit."""
    if version >= FASTCALL_ABI:
        return args
    return [*args, "--features", PYTHON39_FEATURE]


def _settings(config_settings: Settings) -> Settings:
    """`config_settings` with the build arguments for this interpreter (maturin reads them from
    the settings when given there, else from MATURIN_PEP517_ARGS, which this keeps)."""
    args = maturin.get_maturin_pep517_args(config_settings)
    wanted = build_args_for((sys.version_info.major, sys.version_info.minor), args)
    if wanted == args:
        return config_settings
    return {**(config_settings or {}), "maturin.build-args": wanted}


def build_wheel(
    wheel_directory: str, config_settings: Settings = None, metadata_directory: Optional[str] = None
) -> str:
    return str(maturin.build_wheel(wheel_directory, _settings(config_settings), metadata_directory))


def build_editable(
    wheel_directory: str, config_settings: Settings = None, metadata_directory: Optional[str] = None
) -> str:
    return str(
        maturin.build_editable(wheel_directory, _settings(config_settings), metadata_directory)
    )


def prepare_metadata_for_build_wheel(
    metadata_directory: str, config_settings: Settings = None
) -> str:
    return str(
        maturin.prepare_metadata_for_build_wheel(metadata_directory, _settings(config_settings))
    )


def get_requires_for_build_wheel(config_settings: Settings = None) -> list[str]:
    return list(maturin.get_requires_for_build_wheel(_settings(config_settings)))


get_requires_for_build_editable = get_requires_for_build_wheel
