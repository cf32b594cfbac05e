"""The process-wide DurableStream: created once, registered as the ``durable_stream`` component."""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any

from opencode_addons import component_registry
from opencode_addons.durable_stream import COMPONENT_NAME, DurableStream


def _full_config(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor's arguments with defaults filled in, as ``DurableStream.config`` has them."""
    bound = inspect.signature(DurableStream).bind(**kwargs)
    bound.apply_defaults()
    config = dict(bound.arguments)
    config["store_path"] = os.path.abspath(os.fspath(config["store_path"]))
    config["checkpoint_timeout"] = float(config["checkpoint_timeout"])
    return config


def initialize_durable_stream(**kwargs: Any) -> DurableStream:
    """The process-wide stream, created and registered under ``"durable_stream"`` if needed.

    Takes the constructor's keyword arguments. A second call returns the existing stream when
    its arguments (defaults filled in, path made absolute) are the same, and raises
    ``ValueError`` when they differ. A stream that was shut down is replaced by a new one.
    ``shutdown_all()`` clears the registration.
    """
    config = _full_config(kwargs)
    existing = component_registry.get_component(COMPONENT_NAME)
    if isinstance(existing, DurableStream) and existing.closed:
        component_registry.unregister(COMPONENT_NAME, existing)
    stream = component_registry.get_or_create(COMPONENT_NAME, lambda: DurableStream(**kwargs))
    if not isinstance(stream, DurableStream):
        raise TypeError(f"'durable_stream' is registered as a {type(stream).__name__}")
    if stream.config != config:
        raise ValueError(
            f"the durable stream is already initialized with {stream.config}; got {config}"
        )
    return stream


def get_durable_stream() -> DurableStream | None:
    """The stream registered by ``initialize_durable_stream``, or None."""
    stream = component_registry.get_component(COMPONENT_NAME)
    return stream if isinstance(stream, DurableStream) else None
