"""Type stubs for the native module (Rust, PyO3)."""

from collections.abc import Iterable, Iterator, Mapping
from os import PathLike
from typing import Any, Literal, Optional, Union, overload

Event = dict[str, Any]
StrPath = Union[str, PathLike[str]]
Durability = Literal["none", "flush", "fsync", "group"]

DEFAULT_MAX_EVENT_BYTES: int
MAX_DEPTH: int

class StoreError(OSError): ...
class StoreLockedError(StoreError): ...
class StoreWriteError(StoreError): ...
class StoreClosedError(StoreError): ...

class EventIterator(Iterator[Event]):
    def __iter__(self) -> EventIterator: ...
    def __next__(self) -> Event: ...

class _Queryable:
    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, index: int) -> Event: ...
    @overload
    def __getitem__(self, index: slice) -> list[Event]: ...
    def __iter__(self) -> EventIterator: ...
    def to_list(self) -> list[Event]: ...
    @overload
    def query(
        self,
        *,
        stream_id: Optional[str] = None,
        type: Union[str, Iterable[str], None] = None,
        actor: Optional[str] = None,
        correlation_id: Optional[str] = None,
        since: Union[int, float, None] = None,
        until: Union[int, float, None] = None,
        after_seq: Optional[int] = None,
        limit: Optional[int] = None,
        newest_first: bool = False,
        raw: Literal[False] = False,
    ) -> list[Event]: ...
    @overload
    def query(
        self,
        *,
        stream_id: Optional[str] = None,
        type: Union[str, Iterable[str], None] = None,
        actor: Optional[str] = None,
        correlation_id: Optional[str] = None,
        since: Union[int, float, None] = None,
        until: Union[int, float, None] = None,
        after_seq: Optional[int] = None,
        limit: Optional[int] = None,
        newest_first: bool = False,
        raw: Literal[True],
    ) -> list[bytes]:
        """With ``raw=True`` each match is the JSON of its line (bytes, no dict built)."""

class EventView(_Queryable):
    """A live, read-only view of the newest `window` events; no events are copied."""

    @property
    def window(self) -> int: ...

class EventRing(_Queryable):
    """A bounded ring of events, limited by count and optionally by bytes of JSON."""

    def __init__(
        self,
        capacity: int = 100_000,
        *,
        max_bytes: Optional[int] = None,
        max_event_bytes: int = ...,
    ) -> None: ...
    def append(self, event: Mapping[str, Any]) -> int: ...
    def extend(self, events: Iterable[Mapping[str, Any]]) -> int: ...
    def clear(self) -> None: ...
    @property
    def capacity(self) -> int: ...
    @property
    def max_bytes(self) -> Optional[int]: ...
    @property
    def max_event_bytes(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def evicted(self) -> int: ...
    @property
    def memory_bytes(self) -> int: ...

class JsonlStore(_Queryable):
    """The append-only JSONL event file with a bounded cache of the newest events."""

    def __init__(
        self,
        path: StrPath,
        *,
        max_cache_size: int = 50_000,
        durability: Durability = "flush",
        max_event_bytes: int = ...,
        history_size: Optional[int] = None,
        collect_types: Optional[list[str]] = None,
        collect_pairs: Optional[list[tuple[str, list[str], list[str], list[str]]]] = None,
        group_interval_ms: float = 5.0,
        default_actor: Optional[str] = None,
        default_correlation_id: Optional[str] = None,
    ) -> None: ...
    def append(self, event: Mapping[str, Any]) -> Event: ...
    def extend(self, events: Iterable[Mapping[str, Any]]) -> list[Event]: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...
    def collected(self) -> list[Event]: ...
    def stats(self) -> dict[str, Any]: ...
    def __enter__(self) -> JsonlStore: ...
    def __exit__(self, *args: object) -> bool: ...
    @property
    def closed(self) -> bool: ...
    @property
    def history(self) -> EventView: ...
    @property
    def recovery(self) -> dict[str, Any]: ...
    @property
    def path(self) -> Any: ...
    @property
    def durability(self) -> Durability: ...
    @property
    def max_cache_size(self) -> int: ...
    @property
    def history_size(self) -> int: ...
    @property
    def max_event_bytes(self) -> int: ...

@overload
def read_events(
    path: StrPath,
    *,
    stream_id: Optional[str] = None,
    type: Union[str, Iterable[str], None] = None,
    actor: Optional[str] = None,
    correlation_id: Optional[str] = None,
    since: Union[int, float, None] = None,
    until: Union[int, float, None] = None,
    after_seq: Optional[int] = None,
    limit: Optional[int] = None,
    newest_first: bool = False,
    raw: Literal[False] = False,
) -> list[Event]: ...
@overload
def read_events(
    path: StrPath,
    *,
    stream_id: Optional[str] = None,
    type: Union[str, Iterable[str], None] = None,
    actor: Optional[str] = None,
    correlation_id: Optional[str] = None,
    since: Union[int, float, None] = None,
    until: Union[int, float, None] = None,
    after_seq: Optional[int] = None,
    limit: Optional[int] = None,
    newest_first: bool = False,
    raw: Literal[True],
) -> list[bytes]: ...
def file_stats(path: StrPath) -> dict[str, Any]: ...
