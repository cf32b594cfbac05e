"""The live recorder: a running OpenCode server's events, over SSE, into a ``DurableStream``.

``server_events(url)`` is an async iterator over the server's events (``URL/event``, or
``URL/global/event`` frames with ``global_events=True``) that reconnects with backoff;
``record(url, stream)`` bridges each of them into the stream (``DurableStream.bridge``, which
drops the duplicates a reconnect replays by the server's event id). Transport only: what the
events mean is the bridge's business.

Needs the ``opencode`` extra (``pip install 'opencode-addons[opencode]'``: httpx and httpx-sse);
importing this module works without it, using it raises ``ImportError`` saying so.

Bad input never stops the recorder: a frame that is not a JSON object, an event the bridge cannot
read, a stream cut mid-frame, an HTTP error or a refused connection are counted in
``RecorderStats`` and logged, and the recorder reconnects. When it gives up (``max_reconnects``
used up) without ever having connected, ``RecorderError`` says why in one line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from opencode_addons.durable_stream import DurableStream

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "the OpenCode recorder needs httpx and httpx-sse: pip install 'opencode-addons[opencode]'"
)
EVENT_PATH = "/event"
GLOBAL_EVENT_PATH = "/global/event"
# The server sends a heartbeat every 10 s: a connection silent for this long is dead.
READ_TIMEOUT = 45.0
CONNECT_TIMEOUT = 10.0
BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
# Bad frames: the first few are logged, then one in every LOG_EVERY.
LOG_FIRST = 10
LOG_EVERY = 1000


class RecorderError(ConnectionError):
    """The recorder could not connect to the server at all (the message says why)."""


def require_httpx() -> tuple[Any, Any]:
    """The ``httpx`` and ``httpx_sse`` modules; ``ImportError`` naming the extra if missing."""
    try:
        import httpx
        import httpx_sse
    except ImportError as error:
        raise ImportError(f"{INSTALL_HINT} ({error})") from None
    return httpx, httpx_sse


def events_url(url: str, global_events: bool = False) -> str:
    """The SSE endpoint of the server at ``url``."""
    base = url.rstrip("/")
    for path in (GLOBAL_EVENT_PATH, EVENT_PATH):
        if base.endswith(path):
            return base
    return base + (GLOBAL_EVENT_PATH if global_events else EVENT_PATH)


@dataclass
class RecorderStats:
    """What the recorder has seen; ``status_line()`` is its live one-line summary."""

    connections: int = 0
    reconnects: int = 0
    frames: int = 0
    bad_frames: int = 0
    cut_streams: int = 0
    http_errors: int = 0
    connect_errors: int = 0
    connected: bool = False
    last_error: Optional[str] = None
    started: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def note_error(self, kind: str, message: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        self.last_error = message
        count = getattr(self, kind)
        if count <= LOG_FIRST or count % LOG_EVERY == 0:
            log.warning("OpenCode recorder: %s (%s: %d so far)", message, kind, count)


def _backoff(failures: int, start: float, maximum: float) -> float:
    """``start`` after a connection that delivered events, doubling per failure up to
    ``maximum``; jittered down by up to 20% so many recorders do not reconnect in step."""
    delay: float = min(maximum, start * (2 ** min(max(failures - 1, 0), 16)))
    return delay * random.uniform(0.8, 1.0)


async def server_events(
    url: str,
    *,
    global_events: bool = False,
    max_reconnects: Optional[int] = None,
    stats: Optional[RecorderStats] = None,
    backoff: float = BACKOFF_START,
    max_backoff: float = BACKOFF_MAX,
    headers: Optional[dict[str, str]] = None,
    client: Any = None,
) -> AsyncIterator[dict[str, Any]]:
    """The server's events as dicts, across reconnects, until ``max_reconnects`` is used up
    (None: forever; 0: until the server first closes the stream).

    Each item is what one SSE frame holds (a server event, or a ``/global/event`` frame).
    ``RecorderError`` if it gives up without ever having connected. ``client`` is an
    ``httpx.AsyncClient`` to use (by default one is made and closed here).
    """
    httpx, httpx_sse = require_httpx()
    if max_reconnects is not None and max_reconnects < 0:
        raise ValueError(f"max_reconnects must be >= 0 or None, got {max_reconnects!r}")
    if not backoff > 0 or max_backoff < backoff:
        raise ValueError("backoff must be > 0 and max_backoff >= backoff")
    stats = stats if stats is not None else RecorderStats()
    stats.started = stats.started or time.time()
    target = events_url(url, global_events)
    timeout = httpx.Timeout(CONNECT_TIMEOUT, read=READ_TIMEOUT)
    own_client = client is None
    if own_client:
        client = httpx.AsyncClient(timeout=timeout, headers=headers)
    failures = 0
    attempts = 0
    try:
        while True:
            attempts += 1
            delivered = 0
            try:
                async with httpx_sse.aconnect_sse(client, "GET", target) as source:
                    response = source.response
                    content_type = response.headers.get("content-type", "")
                    if response.status_code != 200:
                        await response.aread()
                        stats.note_error(
                            "http_errors", f"HTTP {response.status_code} from {target}"
                        )
                    elif "text/event-stream" not in content_type:
                        stats.note_error(
                            "http_errors",
                            f"{target} is not an event stream (Content-Type {content_type!r})",
                        )
                    else:
                        stats.connections += 1
                        stats.connected = True
                        log.info("connected to %s", target)
                        async for sse in source.aiter_sse():
                            event = _decode(sse.data, stats)
                            if event is not None:
                                delivered += 1
                                yield event
                        log.info("%s closed the stream", target)
            except httpx_sse.SSEError as error:
                stats.note_error("http_errors", f"{target} is not an event stream: {error}")
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                stats.note_error("connect_errors", f"cannot connect to {target}: {error}")
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout) as error:
                # Dropped mid-stream (a frame may have been cut): counted, then reconnect.
                reason = str(error) or type(error).__name__
                stats.note_error("cut_streams", f"stream from {target} cut: {reason}")
            except httpx.HTTPError as error:
                stats.note_error("connect_errors", f"{target}: {error}")
            finally:
                stats.connected = False
            failures = 0 if delivered else failures + 1
            if max_reconnects is not None and stats.reconnects >= max_reconnects:
                if stats.connections == 0:
                    raise RecorderError(
                        f"cannot connect to {target}: {stats.last_error or 'no response'}"
                    )
                return
            # At least ``backoff`` between connections, doubling while none delivers anything.
            await asyncio.sleep(_backoff(failures, backoff, max_backoff))
            stats.reconnects += 1
    finally:
        if own_client:
            await client.aclose()


def _decode(data: str, stats: RecorderStats) -> Optional[dict[str, Any]]:
    if not data:
        return None
    stats.frames += 1
    try:
        event = json.loads(data)
    except ValueError:
        stats.note_error("bad_frames", f"a frame that is not JSON: {data[:120]!r}")
        return None
    if not isinstance(event, dict):
        stats.note_error("bad_frames", f"a frame that is not an object: {data[:120]!r}")
        return None
    return event


def seed_duplicate_window(stream: DurableStream, window: Optional[int] = None) -> int:
    """Teach the stream's bridge the server event ids of its newest events (their
    ``causation_id``), so events a server replays after the recorder restarted are stored once.
    Returns how many ids were added."""
    bridge = stream.opencode_bridge
    size = window if window is not None else bridge.dedup_window_size
    if size <= 0:
        return 0
    newest = stream.query(scope="history", limit=size, newest_first=True)
    ids = [e.get("causation_id") for e in reversed(newest)]
    return bridge.remember_event_ids(i for i in ids if isinstance(i, str) and i.startswith("evt_"))


async def record(
    url: str,
    stream: DurableStream,
    *,
    global_events: bool = False,
    max_reconnects: Optional[int] = None,
    stats: Optional[RecorderStats] = None,
    on_event: Optional[Callable[[dict[str, Any]], None]] = None,
    **options: Any,
) -> RecorderStats:
    """Bridge every event of the server at ``url`` into ``stream`` until ``server_events`` ends
    (see it for ``max_reconnects`` and ``options``); returns the recorder's counters.

    Store errors (a full disk, a closed stream) propagate; everything else is counted.
    ``on_event`` is called with each server event after it was bridged.
    """
    stats = stats if stats is not None else RecorderStats()
    seeded = seed_duplicate_window(stream)
    if seeded:
        log.info("duplicate window seeded with %d server event ids from the store", seeded)
    async for event in server_events(
        url, global_events=global_events, max_reconnects=max_reconnects, stats=stats, **options
    ):
        stream.bridge(event)
        if on_event is not None:
            on_event(event)
    return stats
