"""Type stubs for the native module (Rust, PyO3)."""

from collections.abc import Iterable, Iterator, Mapping
from os import PathLike
from typing import Any, Literal, Optional, Union, final, overload

_Event = dict[str, Any]
_StrPath = Union[str, PathLike[str]]
_Durability = Literal["none", "flush", "fsync", "group"]

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "MAX_DEPTH",
    "_FAST_DICTS",
    "_FAST_INTS",
    "_FAST_STRINGS",
    "EventIterator",
    "EventRing",
    "EventView",
    "JsonlStore",
    "StoreClosedError",
    "StoreError",
    "StoreLockedError",
    "StoreWriteError",
    "StreamAppender",
    "file_stats",
    "read_events",
]

DEFAULT_MAX_EVENT_BYTES: int
MAX_DEPTH: int
# Whether strings are read in place (the interpreter's layout was recognised at import).
_FAST_STRINGS: bool
_FAST_DICTS: bool
_FAST_INTS: bool

class StoreError(OSError): ...
class StoreLockedError(StoreError): ...
class StoreWriteError(StoreError): ...
class StoreClosedError(StoreError): ...

@final
class EventIterator(Iterator[_Event]):
    def __iter__(self) -> EventIterator: ...
    def __next__(self) -> _Event: ...

class _Queryable:
    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, index: int, /) -> _Event: ...
    @overload
    def __getitem__(self, index: slice, /) -> list[_Event]: ...
    def __iter__(self) -> EventIterator: ...
    def to_list(self) -> list[_Event]: ...
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
    ) -> list[_Event]: ...
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

@final
class EventView(_Queryable):
    """A live, read-only view of the newest `window` events; no events are copied."""

    @property
    def window(self) -> int: ...

@final
class EventRing(_Queryable):
    """A bounded ring of events, limited by count and optionally by bytes of JSON.

    ``compress=True`` compresses every full block of events (zstd, on a background thread);
    ``max_bytes`` and ``nbytes`` still count uncompressed bytes, so the same events are held
    either way. ``_block_bytes`` (block size) is for tests.
    """

    def __new__(
        cls,
        capacity: int = 100_000,
        *,
        max_bytes: Optional[int] = None,
        max_event_bytes: int = ...,
        compress: bool = False,
        _block_bytes: int = ...,
    ) -> EventRing: ...
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
    @property
    def compress(self) -> bool: ...
    @property
    def stored_bytes(self) -> int:
        """Bytes the blocks hold (compressed ones at their compressed size, evicted records of
        the oldest block included until it is freed); about ``nbytes`` without compression."""
    @property
    def queued_blocks(self) -> int:
        """Full blocks waiting for the background compressor (read as they are meanwhile)."""
    def compress_pending(self) -> int:
        """Compress every queued block now, in this thread; returns how many were compressed."""

@final
class JsonlStore(_Queryable):
    """The append-only JSONL event file with a bounded cache of the newest events."""

    def __new__(
        cls,
        path: _StrPath,
        *,
        max_cache_size: int = 50_000,
        durability: _Durability = "flush",
        max_event_bytes: int = ...,
        history_size: Optional[int] = None,
        collect_types: Optional[list[str]] = None,
        collect_pairs: Optional[list[tuple[str, list[str], list[str], list[str]]]] = None,
        group_interval_ms: float = 5.0,
        default_actor: Optional[str] = None,
        default_correlation_id: Optional[str] = None,
        max_segment_bytes: int = ...,
        max_disk_bytes: Optional[int] = ...,
        max_age: Optional[float] = None,
        compress_sealed: bool = False,
        compress_history: bool = False,
    ) -> JsonlStore: ...
    @overload
    def append(self, event: Mapping[str, Any], return_events: Literal[True] = True) -> _Event:
        """Append one event; returns it as stored (a copy with id, timestamp and seq)."""
    @overload
    def append(self, event: Mapping[str, Any], return_events: Literal[False]) -> int:
        """Append one event; returns only its seq (no copy of the event is made).

        Pass the flag by position (``store.append(event, False)``) where speed matters: as a
        keyword its name is matched on every call, and on CPython 3.9 (whose wheel's calling
        convention builds a dict for any keyword) that costs about what the copy saves."""
    @overload
    def append(self, event: Mapping[str, Any], return_events: bool) -> Union[_Event, int]: ...
    @overload
    def extend(
        self, events: Iterable[Mapping[str, Any]], return_events: Literal[True] = True
    ) -> list[_Event]:
        """Append a batch atomically; returns the events as stored."""
    @overload
    def extend(self, events: Iterable[Mapping[str, Any]], return_events: Literal[False]) -> range:
        """Append a batch atomically; returns only the seqs, as a range (no copies are made)."""
    @overload
    def extend(
        self, events: Iterable[Mapping[str, Any]], return_events: bool
    ) -> Union[list[_Event], range]: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...
    def collected(self) -> list[_Event]: ...
    def forget_open(self, open_type: str, item_id: str) -> bool: ...
    def stats(self) -> dict[str, Any]:
        """Counts and sizes: ``nbytes`` is the held events' JSON; ``stored_bytes`` what the
        cache's blocks take, where an event of 4 KiB or more is a short reference to its line in
        the log, read back from the page cache."""
    def compress_pending(self) -> int:
        """With ``compress_history``: compress every queued block of the cache now."""
    def __enter__(self) -> JsonlStore: ...
    def __exit__(self, *args: object) -> bool: ...
    @property
    def closed(self) -> bool: ...
    @property
    def history(self) -> EventView: ...
    @property
    def recovery(self) -> dict[str, Any]:
        """What opening the store found (the recovery report; ``file_stats`` has the same keys).

        Opening reads the active segment and only as many of the newest sealed segments as the
        cache and the collector need, so the counts cover the files it read.

        - ``events``: valid event lines read and kept.
        - ``corrupt_lines``: lines skipped because they are not events (bad JSON, bad UTF-8, NUL
          runs, no ``type``, ...).
        - ``duplicate_lines``: lines skipped because their ``seq`` is not above an earlier line's.
        - ``torn_tail_bytes``: bytes of a torn last line (no newline, not a valid event); the store
          cuts them off, ``file_stats`` only counts them.
        - ``padding_bytes``: NUL bytes skipped (the preallocated tail after a crash, or NULs
          before a line).
        - ``unterminated_last_line``: a valid last line lacked its newline; it is kept and the
          store adds the newline.
        - ``last_seq``: the highest ``seq`` in the store (0 for none).
        - ``snapshot_lines``: segment headers and carried-forward events read (the snapshot each
          segment starts with; not events).
        """
    @property
    def path(self) -> Any: ...
    @property
    def durability(self) -> _Durability: ...
    @property
    def max_cache_size(self) -> int: ...
    @property
    def history_size(self) -> int: ...
    @property
    def max_event_bytes(self) -> int: ...

@final
class StreamAppender:
    """``DurableStream.append``'s native fast path: ``appender(event)`` is
    ``store.append(event)``; then, if ``subscribers`` or ``pending`` is not empty,
    ``after(stored, projector)`` (the stored event's type's projector in ``projectors``, or
    None); else, if the type has a projector, ``projector(stored)`` (an ``Exception`` from it
    goes to ``projection_failed(stored, error)``) and ``housekeep()`` if ``pending`` is then not
    empty. It returns the stored event; ``appender.append(event)`` is the same. The three
    containers must be dicts; they are shared, not copied."""

    def __new__(
        cls,
        store: JsonlStore,
        projectors: Mapping[str, Any],
        subscribers: Mapping[str, Any],
        pending: Mapping[str, Any],
        after: Any,
        projection_failed: Any,
        housekeep: Any,
    ) -> StreamAppender: ...
    def __call__(self, event: Mapping[str, Any]) -> _Event: ...
    def append(self, event: Mapping[str, Any]) -> _Event:
        """The same as calling the appender, as a method (the faster call on CPython 3.10+)."""

@overload
def read_events(
    path: _StrPath,
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
) -> list[_Event]: ...
@overload
def read_events(
    path: _StrPath,
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
def file_stats(path: _StrPath) -> dict[str, Any]:
    """What a store holds (every segment), read without locking or changing it.

    ``path``, ``file_bytes``, ``streams`` (how many), ``types`` (type -> count),
    ``first_timestamp`` and ``last_timestamp`` (None for no events), and the keys of the recovery
    report with the meanings given at ``JsonlStore.recovery``: ``events``, ``corrupt_lines``,
    ``duplicate_lines``, ``torn_tail_bytes``, ``padding_bytes``, ``unterminated_last_line``,
    ``last_seq``, ``snapshot_lines``; all summed over the segments. ``segments`` has one dict per
    file, oldest first: ``path``, ``file_bytes``, ``compressed``, ``first_seq`` and the report's
    keys. A path that is not a regular file (FIFO, device, socket) is a ``ValueError``.
    """
