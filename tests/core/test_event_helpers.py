"""The event helpers every component uses: a payload, a session id and an info block are read
from any mapping, not only from a plain dict (the fast path), and from nothing else."""

from __future__ import annotations

from collections import OrderedDict
from types import MappingProxyType

from opencode_addons.events import is_mapping, payload_of, session_id_of


def test_is_mapping_accepts_dicts_and_other_mappings_only() -> None:
    class Sub(dict[str, int]):
        pass

    mappings: list[object] = [{}, Sub(), OrderedDict(), MappingProxyType({"a": 1})]
    others: list[object] = [None, [], ("a", 1), "payload", b"payload", 3]
    for mapping in mappings:
        assert is_mapping(mapping), type(mapping)
    for other in others:
        assert not is_mapping(other), type(other)


def test_payload_and_session_are_read_from_any_mapping() -> None:
    proxy = MappingProxyType({"session_id": "ses_proxy"})
    assert payload_of({"payload": proxy}) is proxy
    assert session_id_of({"payload": proxy, "stream_id": "other"}) == "ses_proxy"
    info = MappingProxyType({"id": "ses_info"})
    assert session_id_of({"payload": OrderedDict(info=info)}) == "ses_info"


def test_a_payload_that_is_not_a_mapping_counts_as_empty() -> None:
    for payload in (None, ["session_id", "x"], "session_id"):
        event = {"payload": payload, "stream_id": "ses_stream"}
        assert payload_of(event) == {}
        assert session_id_of(event) == "ses_stream"
