"""Reads what replicators shipped to Redis Streams: ``RedisEventReader`` (query, tail,
consumer groups) and the ``Delivery`` a consumer group member acknowledges."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

# redis-py comes through redis_connection, which reports a missing [redis] extra.
from opencode_addons.redis_connection import (
    DEFAULT_PREFIX,
    READER_COMMANDS,
    RedisConfigError,
    RedisStreamError,
    _check_url,
    _client_options,
    _connect,
    _id_ms,
    _keys,
    _loads,
    _positive_int,
    _translate,
    aioredis,
    check_server,
    log,
    redis,
    safe_url,
)
from opencode_addons.validation import positive_seconds

PAGE = 500


def _type_filter(value: Any) -> Optional[frozenset[bytes]]:
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset({value.encode("utf-8")})
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, Iterable):
        raise TypeError("type must be a string or an iterable of strings")
    types = list(value)
    if not all(isinstance(t, str) for t in types):
        raise TypeError("type must be a string or an iterable of strings")
    return frozenset(t.encode("utf-8") for t in types)


def _optional_str(name: str, value: Any) -> Optional[bytes]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string")
    return value.encode("utf-8")


def _optional_ms(name: str, value: Any) -> Optional[Union[int, float]]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be epoch milliseconds (an int or a float)")
    if isinstance(value, float) and math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return value


_NO_MATCH = object()


@dataclass
class _Filter:
    types: Optional[frozenset[bytes]] = None
    host: Optional[bytes] = None
    actor: Optional[str] = None
    correlation_id: Optional[str] = None
    since: Optional[Union[int, float]] = None
    until: Optional[Union[int, float]] = None

    def select(self, fields: Mapping[bytes, bytes], raw: bool) -> Any:
        """The entry as the caller wants it (bytes or dict), or ``_NO_MATCH``."""
        if self.types is not None and fields.get(b"type") not in self.types:
            return _NO_MATCH
        if self.host is not None and fields.get(b"host") != self.host:
            return _NO_MATCH
        data = fields.get(b"data", b"{}")
        if self.actor is None and self.correlation_id is None:
            if self.since is None and self.until is None:
                return data if raw else _loads(data)
        event = _loads(data)
        if self.actor is not None and event.get("actor") != self.actor:
            return _NO_MATCH
        if self.correlation_id is not None and event.get("correlation_id") != self.correlation_id:
            return _NO_MATCH
        if self.since is not None or self.until is not None:
            ts = event.get("timestamp")
            if isinstance(ts, bool) or not isinstance(ts, (int, float)):
                return _NO_MATCH
            if self.since is not None and ts < self.since:
                return _NO_MATCH
            if self.until is not None and ts > self.until:
                return _NO_MATCH
        return data if raw else event


@dataclass
class Delivery:
    """One event handed to a consumer group member; ``await ack()`` once it is processed."""

    id: str
    key: str
    host: str
    seq: int
    event: Any
    _ack: Callable[[], Any] = field(repr=False)
    acked: bool = False

    async def ack(self) -> None:
        if not self.acked:
            await self._ack()
            self.acked = True


class RedisEventReader:
    """Queries, tails and consumes what replicators shipped under ``prefix``.

    ``query`` is synchronous and has the local ``query``'s meaning; ``tail`` and ``consume``
    are async iterators. Events come back as dicts, or with ``raw=True`` as the JSON lines the
    hosts' files hold (bytes).
    """

    def __init__(
        self, url: str, *, prefix: str = DEFAULT_PREFIX, socket_timeout: float = 10.0
    ) -> None:
        self.url = _check_url(url)
        self.keys = _keys(prefix)
        self._socket_timeout = positive_seconds("socket_timeout", socket_timeout)
        self._client: Optional[redis.Redis] = None
        self._checked = False

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> RedisEventReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def check(self) -> dict[str, Any]:
        """Connects and checks version and commands; raises ``RedisStreamError`` if wrong."""
        client = self._connection()
        info = check_server(client, self.url, READER_COMMANDS)
        self._checked = True
        return info

    def _connection(self) -> redis.Redis:
        if self._client is None:
            self._client = _connect(self.url, self._socket_timeout)
        return self._client

    def _sync(self) -> redis.Redis:
        if not self._checked:
            self.check()
        return self._connection()

    def _decode(self, fields: Mapping[bytes, bytes], raw: bool) -> Any:
        data = fields.get(b"data", b"")
        return data if raw else _loads(data)

    # -- query -------------------------------------------------------------------------------

    def query(
        self,
        *,
        stream_id: Optional[str] = None,
        type: Union[str, Iterable[str], None] = None,
        actor: Optional[str] = None,
        correlation_id: Optional[str] = None,
        host: Optional[str] = None,
        since: Union[int, float, None] = None,
        until: Union[int, float, None] = None,
        limit: Optional[int] = None,
        newest_first: bool = False,
        raw: bool = False,
    ) -> list[Any]:
        """Events matching every given filter, like the local ``query``: ``stream_id`` reads
        that session's key, else the global one; ``type`` a string or an iterable of strings;
        ``since``/``until`` inclusive bounds on ``timestamp`` (epoch ms, floats compared
        exactly); ``limit`` the first (or with ``newest_first`` the newest) matches. ``host``
        keeps one host's events. Order: the key's order (each host's events in seq order)."""
        if stream_id is not None and not isinstance(stream_id, str):
            raise TypeError("stream_id must be a string")
        if correlation_id is not None and not isinstance(correlation_id, str):
            raise TypeError("correlation_id must be a string")
        if actor is not None and not isinstance(actor, str):
            raise TypeError("actor must be a string")
        matcher = _Filter(
            types=_type_filter(type),
            actor=actor,
            host=_optional_str("host", host),
            correlation_id=correlation_id,
            since=_optional_ms("since", since),
            until=_optional_ms("until", until),
        )
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise TypeError("limit must be an int")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        if limit == 0 or (matcher.types is not None and not matcher.types):
            return []
        client = self._sync()
        key = self.keys.events if stream_id is None else self.keys.session(stream_id)
        low = "-" if matcher.since is None else str(_id_ms(matcher.since))
        high = "+"
        if matcher.until is not None and stream_id is None:
            skew = self._global_skew(client)
            high = str(min(_id_ms(matcher.until) + skew, 2**64 - 1))
        found: list[Any] = []
        try:
            for fields in self._scan(client, key, low, high, newest_first):
                selected = matcher.select(fields, raw)
                if selected is not _NO_MATCH:
                    found.append(selected)
                    if limit is not None and len(found) >= limit:
                        break
        except RedisStreamError:
            raise
        except Exception as error:
            raise _translate(error, self.url, f"reading {key!r}") from None
        return found

    def latest(
        self, count: int, *, stream_id: Optional[str] = None, raw: bool = False
    ) -> tuple[list[Any], str]:
        """The newest ``count`` events (oldest first) of the global key or of one session, and
        the entry id to give ``tail(last_id=...)`` to continue right after them."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be an int >= 0, got {count!r}")
        if stream_id is not None and not isinstance(stream_id, str):
            raise TypeError("stream_id must be a string")
        key = self.keys.events if stream_id is None else self.keys.session(stream_id)
        client = self._sync()
        try:
            entries: Any = client.xrevrange(key, count=max(count, 1))
        except Exception as error:
            raise _translate(error, self.url, f"reading {key!r}") from None
        last_id = entries[0][0].decode() if entries else "0-0"
        events = [self._decode(fields, raw) for _id, fields in entries[:count] if fields]
        events.reverse()
        return events, last_id

    def _global_skew(self, client: redis.Redis) -> int:
        try:
            value = client.hget(self.keys.meta, "global_skew_ms")
        except Exception as error:
            raise _translate(error, self.url, f"reading {self.keys.meta!r}") from None
        return int(value) if value is not None else 0

    def _scan(
        self, client: redis.Redis, key: str, low: str, high: str, newest_first: bool
    ) -> Iterable[Mapping[bytes, bytes]]:
        while True:
            page: Any
            if newest_first:
                page = client.xrevrange(key, max=high, min=low, count=PAGE)
            else:
                page = client.xrange(key, min=low, max=high, count=PAGE)
            for _entry_id, fields in page:
                if fields is not None:
                    yield fields
            if len(page) < PAGE:
                return
            last = page[-1][0].decode()
            if newest_first:
                high = f"({last}"
            else:
                low = f"({last}"

    # -- tail --------------------------------------------------------------------------------

    def _async_client(self, block_ms: int) -> aioredis.Redis:
        options = _client_options(self._socket_timeout + block_ms / 1000, asynchronous=True)
        try:
            return aioredis.Redis.from_url(self.url, **options)
        except (ValueError, TypeError) as error:
            raise RedisConfigError(f"bad Redis URL {safe_url(self.url)!r}: {error}") from None

    async def tail(
        self,
        stream_id: Optional[str] = None,
        *,
        raw: bool = False,
        last_id: Optional[str] = None,
        block_ms: int = 1000,
        count: int = PAGE,
    ) -> AsyncIterator[Any]:
        """Events shipped from now on (or after entry ``last_id``), as they arrive (``XREAD
        BLOCK``); the session's key with ``stream_id``, else the global one. Survives Redis
        restarts (reconnects with backoff); stops when the caller stops iterating."""
        if stream_id is not None and not isinstance(stream_id, str):
            raise TypeError("stream_id must be a string")
        _positive_int("block_ms", block_ms)
        _positive_int("count", count)
        key = self.keys.events if stream_id is None else self.keys.session(stream_id)
        await asyncio.to_thread(self.check)
        client = self._async_client(block_ms)
        delay = 0.05
        try:
            if last_id is None:
                last_id = await self._last_entry_id(client, key)
            while True:
                try:
                    reply: Any = await client.xread({key: last_id}, count=count, block=block_ms)
                except (redis.ConnectionError, redis.TimeoutError) as error:
                    log.warning(
                        "tail of %s: %s; retrying", key, _translate(error, self.url, "XREAD")
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                except Exception as error:
                    raise _translate(error, self.url, f"reading {key!r}") from None
                delay = 0.05
                for _key, entries in reply or ():
                    for entry_id, fields in entries:
                        last_id = entry_id.decode()
                        if fields is not None:
                            yield self._decode(fields, raw)
        finally:
            await client.aclose()

    async def _last_entry_id(self, client: aioredis.Redis, key: str) -> str:
        try:
            newest: Any = await client.xrevrange(key, count=1)
        except Exception as error:
            raise _translate(error, self.url, f"reading {key!r}") from None
        return newest[0][0].decode() if newest else "0-0"

    # -- consumer groups ---------------------------------------------------------------------

    async def consume(
        self,
        group: str,
        consumer: str,
        *,
        stream_id: Optional[str] = None,
        raw: bool = False,
        start: str = "0",
        claim_idle_ms: int = 30_000,
        block_ms: int = 1000,
        count: int = 100,
    ) -> AsyncIterator[Delivery]:
        """A consumer group member (``XREADGROUP``): yields ``Delivery`` objects, each to be
        acknowledged with ``await delivery.ack()`` once processed. First the entries this
        consumer received but never acknowledged (after a crash), then entries other consumers
        left pending for ``claim_idle_ms`` (``XAUTOCLAIM``), then new ones. The group is
        created at ``start`` ("0": everything the key holds, "$": only new entries) if needed.
        """
        for name, value in (("group", group), ("consumer", consumer)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty str, got {value!r}")
        if stream_id is not None and not isinstance(stream_id, str):
            raise TypeError("stream_id must be a string")
        _positive_int("claim_idle_ms", claim_idle_ms)
        _positive_int("block_ms", block_ms)
        _positive_int("count", count)
        key = self.keys.events if stream_id is None else self.keys.session(stream_id)
        await asyncio.to_thread(self.check)
        client = self._async_client(block_ms)
        open_client = [True]

        def delivery(entry_id: bytes, fields: Any) -> Delivery:
            text = entry_id.decode()

            async def ack() -> None:
                try:
                    if open_client[0]:
                        await client.xack(key, group, text)
                    else:  # acknowledged after the iteration ended
                        await asyncio.to_thread(self._sync().xack, key, group, text)
                except Exception as error:
                    raise _translate(error, self.url, f"acknowledging {text} on {key!r}") from None

            return Delivery(
                id=text,
                key=key,
                host=fields.get(b"host", b"").decode(),
                seq=int(fields.get(b"seq", b"0") or 0),
                event=self._decode(fields, raw),
                _ack=ack,
            )

        try:
            await self._create_group(client, key, group, start)
            # This consumer's own pending entries (delivered before a crash, never acked).
            own = "0-0"
            while True:
                reply = await self._call(
                    client.xreadgroup(group, consumer, {key: own}, count=count), key
                )
                entries = reply[0][1] if reply else []
                if not entries:
                    break
                for entry_id, fields in entries:
                    own = entry_id.decode()
                    if fields:
                        yield delivery(entry_id, fields)
                    else:  # trimmed away while pending: nothing to hand out
                        await self._call(client.xack(key, group, entry_id), key)
            cursor = "0-0"
            claim_at = 0.0
            while True:
                now = time.monotonic()
                if now >= claim_at:
                    claimed = await self._call(
                        client.xautoclaim(
                            key, group, consumer, claim_idle_ms, start_id=cursor, count=count
                        ),
                        key,
                    )
                    cursor = claimed[0].decode() if isinstance(claimed[0], bytes) else "0-0"
                    deleted = claimed[2] if len(claimed) > 2 else []
                    if deleted:
                        await self._call(client.xack(key, group, *deleted), key)
                    for entry_id, fields in claimed[1]:
                        if fields:
                            yield delivery(entry_id, fields)
                    if cursor == "0-0":
                        claim_at = now + claim_idle_ms / 2000
                    continue
                reply = await self._call(
                    client.xreadgroup(group, consumer, {key: ">"}, count=count, block=block_ms),
                    key,
                )
                for _key, entries in reply or ():
                    for entry_id, fields in entries:
                        if fields:
                            yield delivery(entry_id, fields)
        finally:
            open_client[0] = False
            await client.aclose()

    async def _create_group(self, client: aioredis.Redis, key: str, group: str, start: str) -> None:
        try:
            await client.xgroup_create(key, group, id=start, mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise _translate(error, self.url, f"creating group {group!r} on {key!r}") from None
        except Exception as error:
            raise _translate(error, self.url, f"creating group {group!r} on {key!r}") from None

    async def _call(self, awaitable: Any, key: str) -> Any:
        try:
            return await awaitable
        except Exception as error:
            raise _translate(error, self.url, f"reading {key!r}") from None
