"""Replicate stores into Redis Streams, and read them from any machine (extra ``[redis]``).

Each host's store stays the source of truth for that host. A ``RedisReplicator`` ships its
events to Redis; a ``RedisEventReader`` on any machine queries, tails and consumes them.

Keys (``prefix`` defaults to ``"oca"``):

- ``{prefix}:events``: every event of every host, trimmed to ``global_maxlen``;
- ``{prefix}:session:{stream_id}``: one stream per session, trimmed to ``session_maxlen``; a
  ``lifecycle.session.deleted`` event sets a TTL (``session_ttl``) on it;
- ``{prefix}:meta``: a hash with each host's last shipped seq (``shipped:{host}``) and the
  largest clock skew seen on the global key (``global_skew_ms``).

Each entry has the fields ``seq``, ``host``, ``type`` and ``data`` (the event's JSON line,
byte-identical to the file); readers parse ``data`` for anything else (session, actor, time).

Exactly once, without trusting the client: a batch is one Lua script. It checks the key types,
reads the host's marker, writes only the events past it, and moves the marker, all in one atomic
step that Redis logs to its AOF as one transaction. A replicator killed at any point, or a Redis
restarted from its AOF, therefore leaves every key with each event once, in seq order: a batch
shipped again is skipped by the marker, and a batch Redis lost took the marker back with it. If
the marker is behind where the replicator thought it was (Redis lost data), the script refuses
the batch and the replicator rewinds to the marker and ships again from the file.

Entry ids are ``<ms>-<n>`` with ``ms`` the event's timestamp, raised to the key's last id when
that is later (another host's clock, or a host catching up). So ``since`` is an exact lower
bound on ids, and on the global key ``until`` plus the largest raise ever made is an upper one:
time-range queries read only the range they need.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from opencode_addons import _core
from opencode_addons.events import RAW_SESSION_DELETED, SESSION_DELETED, session_id_of

try:
    import redis
    import redis.asyncio as aioredis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as _error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "opencode_addons.redis_streams needs redis-py with hiredis: "
        "pip install 'opencode-addons[redis]'"
    ) from _error

_loads: Callable[[Union[bytes, str]], Any]
try:
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is optional
    import json

    _loads = json.loads

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "oca"
COMPONENT_NAME = "redis_replicator"
# Readers: Redis 6.2 has XAUTOCLAIM and exclusive ranges. The replicator: 7.0 takes "<ms>-*" ids.
READER_MIN_VERSION = (6, 2, 0)
REPLICATOR_MIN_VERSION = (7, 0, 0)
REPLICATOR_COMMANDS = ("EVALSHA", "XADD", "XINFO", "HGET", "HSET", "EXPIRE", "TYPE", "EXISTS")
READER_COMMANDS = ("XRANGE", "XREVRANGE", "XREAD", "XREADGROUP", "XACK", "XAUTOCLAIM", "XGROUP")
# Event types after which the session's key gets a TTL.
DELETED_TYPES = frozenset({SESSION_DELETED, RAW_SESSION_DELETED})
# Stream ids keep the millisecond part exact in a Lua number (a double).
MAX_ID_MS = 2**53 - 1
# A script call carries at most this many bytes of event lines (besides the `batch` count).
MAX_BATCH_BYTES = 8 << 20
# How many events a file read returns at most: each read scans the whole file (the native
# reader has no seek by seq), so catching up reads big chunks and ships them in batches.
FILE_CHUNK = 20_000
FILE_CHUNK_BYTES = 32 << 20
PAGE = 500

# One batch, atomically. KEYS[1] the global stream, KEYS[2] the meta hash, KEYS[3..] session
# streams. ARGV: host, the seq the batch was read after, global maxlen, session maxlen, "~" or
# "=", ttl seconds, event count, then 6 values per event: session key index (0: none), seq, id
# ms, type, data, index of a key to expire (0: none).
# Every check comes before the first write, and no write after it can fail, so an error never
# leaves a batch half written. An entry's id is "<ms>-*" (Redis numbers entries within a ms),
# with ms the event's, or the key's last ms when that is later: a key's last id is only looked
# up (XINFO) when the first write to it in this batch is refused for being earlier.
SHIP_SCRIPT = """
local host, prev = ARGV[1], ARGV[2]
local gmax, smax, trim, ttl = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local count = tonumber(ARGV[7])

local function seq_lt(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end

for i = 1, #KEYS do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  local want = 'stream'
  if i == 2 then want = 'hash' end
  if kind ~= want and kind ~= 'none' then
    return redis.error_reply('OCA-WRONGTYPE ' .. want .. ' ' .. kind .. ' ' .. KEYS[i])
  end
end

local marker = redis.call('HGET', KEYS[2], 'shipped:' .. host) or '0'
if seq_lt(marker, prev) then return {'rewind', marker, 0} end

-- The last id's ms part of each key written in this batch, as a number and as text.
local last_ms, last_text = {}, {}
local function learn(i)
  local info = redis.call('XINFO', 'STREAM', KEYS[i])
  for j = 1, #info, 2 do
    if info[j] == 'last-generated-id' then
      local id = info[j + 1]
      local text = string.sub(id, 1, string.find(id, '-', 1, true) - 1)
      last_ms[i], last_text[i] = tonumber(text), text
    end
  end
end

local skew = 0
local function add(i, maxlen, ms, ms_text, ...)
  local lm = last_ms[i]
  if lm == nil then
    local id = redis.pcall('XADD', KEYS[i], 'MAXLEN', trim, maxlen, ms_text .. '-*', ...)
    if type(id) == 'string' then
      last_ms[i], last_text[i] = ms, ms_text
      return
    end
    -- Only the first write of a script can fail otherwise (a missing command, OOM): that
    -- error is the script's, and nothing was written.
    if not string.find(id['err'] or '', 'smaller', 1, true) then error(id) end
    learn(i)  -- refused: the key holds a later id
    lm = last_ms[i]
  end
  if ms > lm then
    last_ms[i], last_text[i] = ms, ms_text
  else
    if i == 1 and lm - ms > skew then skew = lm - ms end
    ms_text = last_text[i]
  end
  redis.call('XADD', KEYS[i], 'MAXLEN', trim, maxlen, ms_text .. '-*', ...)
end

local written, newest = 0, marker
for e = 0, count - 1 do
  local b = 7 + e * 6
  local seq = ARGV[b + 2]
  if seq_lt(newest, seq) then
    local k, ms_text, expire = tonumber(ARGV[b + 1]), ARGV[b + 3], tonumber(ARGV[b + 6])
    local ms = tonumber(ms_text)
    local typ, data = ARGV[b + 4], ARGV[b + 5]
    add(1, gmax, ms, ms_text, 'seq', seq, 'host', host, 'type', typ, 'data', data)
    if k > 0 then add(k, smax, ms, ms_text, 'seq', seq, 'host', host, 'type', typ, 'data', data) end
    if expire > 0 then redis.call('EXPIRE', KEYS[expire], ttl) end
    written, newest = written + 1, seq
  end
end

if written > 0 then redis.call('HSET', KEYS[2], 'shipped:' .. host, newest) end
if skew > 0 then
  local known = tonumber(redis.call('HGET', KEYS[2], 'global_skew_ms') or '0')
  if skew > known then
    redis.call('HSET', KEYS[2], 'global_skew_ms', string.format('%.0f', skew))
  end
end
return {'ok', newest, written}
"""


# -- errors -----------------------------------------------------------------------------------


class RedisStreamError(Exception):
    """Something went wrong talking to Redis; the message names the server and what failed.

    ``retryable`` is True when trying again later may succeed (the server is down, loading or
    out of memory), False when something must be fixed first (URL, credentials, commands,
    keys of another type under the prefix).
    """

    retryable = False


class RedisConfigError(RedisStreamError, ValueError):
    """A bad URL, wrong credentials, a server without the needed commands, or keys under the
    prefix that hold something else."""


class RedisUnavailableError(RedisStreamError, ConnectionError):
    """The server cannot be reached, is loading its data, or is out of memory."""

    retryable = True


def safe_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and stats."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _check_url(url: Any) -> str:
    if not isinstance(url, str) or not url:
        raise RedisConfigError(f"the Redis URL must be a non-empty str, got {url!r}")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in ("redis", "rediss", "unix"):
        raise RedisConfigError(
            f"bad Redis URL {safe_url(url)!r}: expected redis://, rediss:// or unix://"
        )
    try:
        redis.connection.parse_url(url)
    except (ValueError, TypeError) as error:
        raise RedisConfigError(f"bad Redis URL {safe_url(url)!r}: {error}") from None
    return url


def _translate(error: Exception, url: str, doing: str) -> RedisStreamError:
    """One clear ``RedisStreamError`` for a redis-py exception."""
    where = f"Redis at {safe_url(url)}"
    text = str(error) or type(error).__name__
    if isinstance(error, RedisStreamError):
        return error
    if isinstance(error, redis.AuthenticationError) or text.startswith(
        ("WRONGPASS", "NOAUTH", "invalid password", "invalid username-password")
    ):
        return RedisConfigError(f"{where} refused the credentials ({doing}): {text}")
    if isinstance(error, redis.exceptions.NoPermissionError):
        return RedisConfigError(f"{where}: the user may not do this ({doing}): {text}")
    if isinstance(error, redis.BusyLoadingError):
        return RedisUnavailableError(f"{where} is loading its data ({doing}); try again")
    if isinstance(error, (redis.ConnectionError, redis.TimeoutError, OSError)):
        return RedisUnavailableError(f"cannot reach {where} ({doing}): {text}")
    if isinstance(error, redis.exceptions.OutOfMemoryError):
        return RedisUnavailableError(f"{where} is out of memory (maxmemory) ({doing}): {text}")
    if isinstance(error, redis.ResponseError):
        if "OCA-WRONGTYPE" in text:
            _, want, kind, key = text.split("OCA-WRONGTYPE", 1)[1].split(" ", 3)
            return RedisConfigError(
                f"{where}: key {key!r} holds a {kind}, not a {want}; another application "
                "uses this prefix (choose another prefix or remove the key)"
            )
        if text.startswith("WRONGTYPE"):
            return RedisConfigError(
                f"{where}: wrong key type ({doing}); does another application use this "
                f"prefix? {text}"
            )
        lowered = text.lower()
        if "unknown command" in lowered or "unknown redis command" in lowered:
            return RedisConfigError(f"{where} does not have a command this needs ({doing}): {text}")
        return RedisStreamError(f"{where} answered an error ({doing}): {text}")
    return RedisStreamError(f"{where} failed ({doing}): {type(error).__name__}: {text}")


# -- connections ------------------------------------------------------------------------------


def _client_options(socket_timeout: Optional[float]) -> dict[str, Any]:
    return {
        # RESP2 whatever the redis-py default: the reply shapes parsed here stay the same.
        "protocol": 2,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": 5.0,
        # Retries are ours (with backoff, counted in stats), not hidden in the client.
        "retry": Retry(NoBackoff(), 0),
    }


def _connect(url: str, socket_timeout: Optional[float] = 10.0) -> redis.Redis:
    try:
        return redis.Redis.from_url(url, **_client_options(socket_timeout))
    except (ValueError, TypeError) as error:
        raise RedisConfigError(f"bad Redis URL {safe_url(url)!r}: {error}") from None


def _version(text: str) -> tuple[int, ...]:
    numbers = []
    for part in text.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        numbers.append(int(digits or 0))
    return tuple(numbers)


def check_server(
    client: redis.Redis,
    url: str,
    commands: Sequence[str],
    min_version: tuple[int, ...] = READER_MIN_VERSION,
) -> dict[str, Any]:
    """Connects and checks version and commands; returns ``{"version", "aof"}``.

    Raises ``RedisConfigError`` or ``RedisUnavailableError`` naming what is wrong.
    """
    where = f"Redis at {safe_url(url)}"
    try:
        client.ping()
        info = client.info("server")
    except Exception as error:
        raise _translate(error, url, "connecting") from None
    version = str(info.get("redis_version", "0"))
    if _version(version) < min_version:
        wanted = ".".join(map(str, min_version))
        raise RedisConfigError(f"{where} is version {version}; this needs {wanted} or later")
    try:
        # Raw reply: None for a command the server does not have (redis-py's parser chokes).
        client.set_response_callback("COMMAND", lambda response, **_: response)
        found = client.execute_command("COMMAND", "INFO", *commands)
    except redis.ResponseError:
        found = None  # COMMAND itself renamed or denied: the commands are tried when used
    except Exception as error:
        raise _translate(error, url, "listing commands") from None
    if isinstance(found, dict):
        missing = [name for name in commands if not found.get(name.lower())]
    elif isinstance(found, list):
        missing = [name for name, spec in zip(commands, found) if not spec]
    else:
        missing = []
    if missing:
        raise RedisConfigError(
            f"{where} does not have the command(s) {', '.join(missing)} "
            "(renamed or disabled in its configuration); Redis Streams need them"
        )
    return {"version": version}


def _check_key_types(client: redis.Redis, url: str, wanted: Mapping[str, str]) -> None:
    try:
        pipe = client.pipeline(transaction=False)
        for key in wanted:
            pipe.type(key)
        kinds = pipe.execute()
    except Exception as error:
        raise _translate(error, url, "checking key types") from None
    for (key, want), kind in zip(wanted.items(), kinds):
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind not in (want, "none"):
            raise RedisConfigError(
                f"Redis at {safe_url(url)}: key {key!r} holds a {kind}, not a {want}; another "
                "application uses this prefix (choose another prefix or remove the key)"
            )


@dataclass(frozen=True)
class RedisKeys:
    """The key names under one prefix."""

    prefix: str

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def meta(self) -> str:
        return f"{self.prefix}:meta"

    def session(self, stream_id: str) -> str:
        return f"{self.prefix}:session:{stream_id}"


def _keys(prefix: Any) -> RedisKeys:
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"prefix must be a non-empty str, got {prefix!r}")
    return RedisKeys(prefix)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def _positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


def _seq_of(line: bytes) -> int:
    # A raw line always ends with its `"seq":N}` member (the native readers add it).
    return int(line[line.rindex(b'"seq":') + 6 : -1])


def _id_ms(value: Any) -> int:
    """The id millisecond part for a timestamp: floor, kept within 0..MAX_ID_MS."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    if isinstance(value, float) and not math.isfinite(value):
        return MAX_ID_MS if value > 0 else 0
    return min(max(math.floor(value), 0), MAX_ID_MS)


def default_host_id(path: str) -> str:
    """``<hostname>-<8 hex of the store's absolute path>``: stable across restarts, distinct
    for two stores on one machine."""
    digest = hashlib.sha1(os.path.abspath(path).encode("utf-8")).hexdigest()[:8]
    return f"{socket.gethostname()}-{digest}"


# -- the replicator ---------------------------------------------------------------------------


class _Rewind(Exception):
    def __init__(self, marker: int) -> None:
        super().__init__(marker)
        self.marker = marker


class RedisReplicator:
    """Ships a store's events to Redis Streams; see the module docstring.

    ``source`` is a store file path, or an open ``JsonlStore`` or ``DurableStream`` (read from
    its cache while it covers what is left to ship, else from the file). Nothing here blocks an
    append: shipping runs in ``run_once()`` or in the background thread of ``start()``, which
    retries with exponential backoff (``retry_min`` to ``retry_max`` seconds) while Redis is
    unreachable and catches up from the file afterwards. Seqs never readable from the source
    (dropped by retention before they were shipped, or corrupt lines) are counted in
    ``stats()["lost"]`` and logged, never skipped silently.

    ``exact_trim=True`` trims with ``MAXLEN =`` (each key holds exactly its maximum once full)
    instead of ``MAXLEN ~`` (Redis trims whole nodes; cheaper, keeps a few more entries).
    """

    def __init__(
        self,
        source: Any,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        host_id: Optional[str] = None,
        session_maxlen: int = 10_000,
        global_maxlen: int = 1_000_000,
        batch: int = 500,
        session_ttl: int = 3600,
        exact_trim: bool = False,
        poll_interval: Optional[float] = None,
        retry_min: float = 0.05,
        retry_max: float = 5.0,
        socket_timeout: float = 10.0,
        drain_timeout: float = 2.0,
        name: str = COMPONENT_NAME,
    ) -> None:
        self.url = _check_url(url)
        self.keys = _keys(prefix)
        self.session_maxlen = _positive_int("session_maxlen", session_maxlen)
        self.global_maxlen = _positive_int("global_maxlen", global_maxlen)
        self.batch = _positive_int("batch", batch)
        self.session_ttl = _positive_int("session_ttl", session_ttl)
        self.exact_trim = bool(exact_trim)
        self._retry_min = _positive_number("retry_min", retry_min)
        self._retry_max = max(self._retry_min, _positive_number("retry_max", retry_max))
        self._socket_timeout = _positive_number("socket_timeout", socket_timeout)
        self._drain_timeout = _positive_number("drain_timeout", drain_timeout)
        self.name = name
        self._store: Any = None
        if isinstance(source, (str, os.PathLike)):
            self._path = os.fspath(source)
        elif callable(getattr(source, "query", None)) and hasattr(source, "path"):
            self._store = source
            self._path = os.fspath(str(source.path))
        else:
            raise TypeError(
                "source must be a store path or an open JsonlStore/DurableStream, "
                f"got {type(source).__name__}"
            )
        if isinstance(self._path, bytes):  # pragma: no cover - os.fspath of a bytes path
            raise TypeError("source path must be a str path")
        if host_id is None:
            host_id = default_host_id(self._path)
        if not isinstance(host_id, str) or not host_id:
            raise ValueError(f"host_id must be a non-empty str, got {host_id!r}")
        self.host_id = host_id
        if poll_interval is None:
            poll_interval = 0.01 if self._store is not None else 0.2
        self._poll_interval = _positive_number("poll_interval", poll_interval)

        self._client: Optional[redis.Redis] = None
        self._script: Any = None
        self._checked = False
        self._lock = threading.RLock()
        self._position: Optional[int] = None
        self._lost_counted_to = 0
        self._last_seen = 0
        self._file_signature: Optional[tuple[int, int]] = None
        # How many lines a file read asks for: small first, then about FILE_CHUNK_BYTES.
        self._file_limit = self.batch * 4
        self._file_read_at = 0.0
        self._thread: Optional[threading.Thread] = None
        self._executor: Optional[ThreadPoolExecutor] = None
        self._stop = threading.Event()
        self._closed = False
        self._healthy = True
        # Counters.
        self._shipped = 0
        self._batch_count = 0
        self._lost = 0
        self._errors = 0
        self._rewinds = 0
        self._last_error: Optional[str] = None
        self._last_error_at: Optional[float] = None
        self._last_ship_at: Optional[float] = None

    # -- public API -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def path(self) -> str:
        return self._path

    def check(self) -> dict[str, Any]:
        """Connects and checks the server (version, commands, key types under the prefix).

        Raises ``RedisConfigError``/``RedisUnavailableError`` naming what is wrong.
        """
        with self._lock:
            client = self._connection()
            info = check_server(client, self.url, REPLICATOR_COMMANDS, REPLICATOR_MIN_VERSION)
            _check_key_types(client, self.url, {self.keys.events: "stream", self.keys.meta: "hash"})
            self._checked = True
            return info

    def run_once(self, *, timeout: Optional[float] = None) -> int:
        """Ships every event readable now past this host's marker (or what ``timeout`` seconds
        allow, whole batches); returns how many were written. Raises ``RedisStreamError`` (the
        position is then read again from Redis)."""
        if self._closed:
            raise RuntimeError("the replicator is shut down")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            try:
                shipped = self._ship_available(deadline=deadline)
            except Exception as error:
                self._record_error(error)
                raise self._as_stream_error(error) from None
            self._healthy = True
            return shipped

    def start(self) -> RedisReplicator:
        """Follow appends in a background (daemon) thread until ``stop()``; returns self."""
        if self._closed:
            raise RuntimeError("the replicator is shut down")
        if self.running:
            return self
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._follow, name=f"{self.name}:{self.host_id}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, *, drain: bool = True, timeout: float = 10.0) -> None:
        """Stop following; with ``drain`` (and Redis answering lately) ship what is left, for
        at most ``drain_timeout`` seconds."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("replicator thread %s did not stop within %.1f s", thread.name, timeout)
                return
        if drain and self._healthy and not self._closed:
            try:
                self.run_once(timeout=self._drain_timeout)
            except (RedisStreamError, _core.StoreError, OSError) as error:
                log.warning("replicator %s: last shipment failed: %s", self.host_id, error)

    def shutdown(self) -> None:
        """Stop (shipping what is left when Redis answers), close the connection; idempotent."""
        if self._closed:
            return
        try:
            self.stop(drain=True)
        finally:
            self._closed = True
            executor, self._executor = self._executor, None
            if executor is not None:
                executor.shutdown(wait=True)
            client, self._client = self._client, None
            if client is not None:
                try:
                    client.close()
                except Exception:  # pragma: no cover - closing a broken pool
                    log.debug("closing the Redis client failed", exc_info=True)

    close = shutdown

    def __enter__(self) -> RedisReplicator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def stats(self) -> dict[str, Any]:
        """Counters: ``shipped`` (events written), ``lag`` (events in the source not yet in
        Redis, None until the position is known), ``lost``, ``errors``, ``last_error``..."""
        last = self._source_last_seq()
        position = self._position
        lag = None if position is None or last is None else max(0, last - position)
        return {
            "name": self.name,
            "host": self.host_id,
            "url": safe_url(self.url),
            "prefix": self.keys.prefix,
            "source": self._path,
            "running": self.running,
            "closed": self._closed,
            "position": position,
            "source_last_seq": last,
            "lag": lag,
            "shipped": self._shipped,
            "batches": self._batch_count,
            "lost": self._lost,
            "rewinds": self._rewinds,
            "errors": self._errors,
            "last_error": self._last_error,
            "last_error_at": self._last_error_at,
            "last_ship_at": self._last_ship_at,
        }

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self.running else "idle")
        target = safe_url(self.url)
        return f"RedisReplicator({self._path!r} -> {target}, host={self.host_id!r}, {state})"

    # -- following ---------------------------------------------------------------------------

    def _follow(self) -> None:
        delay = self._retry_min
        while not self._stop.is_set():
            try:
                with self._lock:
                    shipped = self._ship_available(self._stop)
                self._healthy = True
                delay = self._retry_min
                if shipped == 0:
                    self._stop.wait(self._poll_interval)
            except Exception as error:
                self._record_error(error)
                self._stop.wait(delay)
                delay = min(delay * 2, self._retry_max)

    def _record_error(self, error: Exception) -> None:
        translated = self._as_stream_error(error)
        self._errors += 1
        self._healthy = False
        self._position = None  # read it again from Redis: it may have lost data
        self._client_reset(error)
        message = str(translated)
        if message != self._last_error:
            level = logging.WARNING if getattr(translated, "retryable", False) else logging.ERROR
            log.log(level, "replicator %s: %s", self.host_id, message)
        self._last_error = message
        self._last_error_at = time.time()

    def _as_stream_error(self, error: Exception) -> Exception:
        if isinstance(error, (_core.StoreError, RedisStreamError)):
            return error
        if isinstance(error, redis.RedisError):
            return _translate(error, self.url, "shipping")
        return error

    def _client_reset(self, error: Exception) -> None:
        if isinstance(error, (redis.ConnectionError, redis.TimeoutError, RedisUnavailableError)):
            self._checked = False

    def _connection(self) -> redis.Redis:
        if self._client is None:
            self._client = _connect(self.url, self._socket_timeout)
            self._script = self._client.register_script(SHIP_SCRIPT)
        return self._client

    # -- shipping ----------------------------------------------------------------------------

    def _ship_available(
        self, stop: Optional[threading.Event] = None, deadline: Optional[float] = None
    ) -> int:
        if not self._checked:
            self.check()
        client = self._connection()
        if self._position is None:
            self._position = self._read_marker(client)
        shipped = 0
        rewinds = 0

        def keep_going() -> bool:
            if stop is not None and stop.is_set():
                return False
            return deadline is None or time.monotonic() <= deadline

        while keep_going():
            lines, complete = self._read(self._position, polling=stop is not None)
            if not lines:
                break
            try:
                shipped += self._ship_lines(client, lines, keep_going)
            except _Rewind as rewind:
                rewinds += 1
                self._rewinds += 1
                log.warning(
                    "replicator %s: Redis has seq %d for this host, below the %d shipped; "
                    "shipping again from there (Redis lost data)",
                    self.host_id,
                    rewind.marker,
                    self._position,
                )
                self._position = rewind.marker
                if rewinds > 3:
                    raise RedisStreamError(
                        f"Redis at {safe_url(self.url)} keeps moving the marker of host "
                        f"{self.host_id!r} back; is another process resetting it?"
                    ) from None
                continue
            if complete or not keep_going():
                break
        return shipped

    def _read_marker(self, client: redis.Redis) -> int:
        try:
            value = client.hget(self.keys.meta, f"shipped:{self.host_id}")
        except Exception as error:
            raise _translate(error, self.url, "reading the shipped marker") from None
        marker = int(value) if value is not None else 0
        last = self._source_last_seq()
        if last is not None and last < marker:
            log.warning(
                "replicator %s: Redis has seq %d for this host but the store ends at %d; "
                "events appended up to seq %d will not be shipped (a new store under the same "
                "host id? give it another host_id)",
                self.host_id,
                marker,
                last,
                marker,
            )
        return marker

    def _read(self, after: int, polling: bool = False) -> tuple[list[bytes], bool]:
        """Lines past ``after`` (at most one chunk) and whether that was everything. When
        ``polling`` a path source is read only if the file may have changed."""
        store = self._store
        if store is not None and getattr(store, "closed", False):
            store = self._store = None  # closed under us: the file has everything
        if store is not None:
            limit = self.batch * 4
            try:
                lines: list[bytes] = store.query(after_seq=after, raw=True, limit=limit)
            except _core.StoreClosedError:
                store = self._store = None
            else:
                if not lines or _seq_of(lines[0]) == after + 1:
                    if lines:
                        self._last_seen = max(self._last_seen, _seq_of(lines[-1]))
                    return lines, len(lines) < limit
                # The cache starts later than what is left to ship: read the file.
                return self._read_file(after)
        if not self._file_changed() and polling:
            return [], True
        return self._read_file(after)

    def _read_file(self, after: int) -> tuple[list[bytes], bool]:
        limit = self._file_limit
        try:
            lines = _core.read_events(self._path, after_seq=after, raw=True, limit=limit)
        except FileNotFoundError:
            return [], True
        if lines:
            self._last_seen = max(self._last_seen, _seq_of(lines[-1]))
            # Next time read about FILE_CHUNK_BYTES of lines (events may be up to 1 MiB each).
            mean = max(1, sum(map(len, lines)) // len(lines))
            self._file_limit = max(self.batch, min(FILE_CHUNK, FILE_CHUNK_BYTES // mean))
        return lines, len(lines) < limit

    def _file_changed(self) -> bool:
        """For a path source: whether the file may hold new lines. A memory-mapped writer does
        not move size or mtime on every append, so the file is also read once a second."""
        try:
            status = os.stat(self._path)
            signature: Optional[tuple[int, int]] = (status.st_size, status.st_mtime_ns)
        except OSError:
            signature = None
        now = time.monotonic()
        if signature == self._file_signature and now - self._file_read_at < 1.0:
            return False
        self._file_signature = signature
        self._file_read_at = now
        return True

    def _batches(self, lines: list[bytes]) -> Iterable[list[bytes]]:
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            if chunk and (len(chunk) >= self.batch or size + len(line) > MAX_BATCH_BYTES):
                yield chunk
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            yield chunk

    def _count_gap(self, expected: int, seq: int) -> None:
        start = max(expected, self._lost_counted_to + 1)
        if seq > start:
            self._lost += seq - start
            log.warning(
                "replicator %s: seqs %d..%d are no longer readable in %s (dropped by retention "
                "or damaged) and were never shipped",
                self.host_id,
                start,
                seq - 1,
                self._path,
            )
        self._lost_counted_to = max(self._lost_counted_to, seq - 1)

    def _build_batch(self, lines: list[bytes], prev: int) -> tuple[list[str], list[Any]]:
        """The script's keys and arguments for ``lines``, read after seq ``prev``."""
        keys = [self.keys.events, self.keys.meta]
        index: dict[str, int] = {}
        args: list[Any] = [
            self.host_id,
            str(prev),
            self.global_maxlen,
            self.session_maxlen,
            "=" if self.exact_trim else "~",
            self.session_ttl,
            len(lines),
        ]

        def key_index(stream_id: str) -> int:
            position = index.get(stream_id)
            if position is None:
                keys.append(self.keys.session(stream_id))
                position = index[stream_id] = len(keys)
            return position

        expected = prev + 1
        loads = _loads
        for line in lines:
            event = loads(line)
            seq = event.get("seq")
            if type(seq) is not int:
                seq = _seq_of(line)
            if seq > expected:
                self._count_gap(expected, seq)
            expected = seq + 1
            stream_id = event.get("stream_id")
            session = key_index(stream_id) if type(stream_id) is str else 0
            event_type = event.get("type")
            expire = 0
            if event_type in DELETED_TYPES:
                deleted = session_id_of(event)
                expire = key_index(deleted) if deleted is not None else session
            timestamp = event.get("timestamp")
            if type(timestamp) is int and 0 <= timestamp <= MAX_ID_MS:
                ms = timestamp
            else:
                ms = _id_ms(timestamp)
            args += (
                session,
                seq,
                ms,
                event_type if type(event_type) is str else "",
                line,
                expire,
            )
        return keys, args

    def _run_script(self, client: redis.Redis, keys: list[str], args: list[Any]) -> Any:
        try:
            return self._script(keys=keys, args=args, client=client)
        except Exception as error:
            raise _translate(error, self.url, "shipping a batch") from None

    def _sender(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-send")
        return self._executor

    def _ship_lines(
        self, client: redis.Redis, lines: list[bytes], keep_going: Callable[[], bool]
    ) -> int:
        """Ships ``lines`` batch by batch; the next batch is built while Redis runs the one
        before (one script in flight: each is sent only after the previous one answered)."""
        assert self._position is not None
        shipped = 0
        in_flight: Optional[Future[Any]] = None
        prev = self._position
        try:
            for chunk in self._batches(lines):
                if not keep_going():
                    break
                keys, args = self._build_batch(chunk, prev)
                if in_flight is not None:
                    shipped += self._apply(in_flight.result())
                in_flight = self._sender().submit(self._run_script, client, keys, args)
                prev = _seq_of(chunk[-1])
            if in_flight is not None:
                shipped += self._apply(in_flight.result())
                in_flight = None
        finally:
            if in_flight is not None:
                # Stopped by an error: let the script sent last finish before anything else.
                wait([in_flight])
        return shipped

    def _apply(self, result: Any) -> int:
        status, marker, written = result
        if status == b"rewind":
            raise _Rewind(int(marker))
        self._position = int(marker)
        self._shipped += int(written)
        self._batch_count += 1
        self._last_ship_at = time.time()
        return int(written)

    def _source_last_seq(self) -> Optional[int]:
        store = self._store
        if store is not None and not getattr(store, "closed", False):
            # The newest cached line: a native read, safe from any thread (a DurableStream's
            # own stats() is not).
            try:
                newest = store.query(limit=1, newest_first=True, raw=True)
            except _core.StoreError:
                newest = None
            if newest is not None:
                return _seq_of(newest[0]) if newest else self._last_seen
        return self._last_seen or None


def replicator_for_stream(
    stream: Any, url: str, options: Optional[Mapping[str, Any]] = None
) -> RedisReplicator:
    """The replicator ``DurableStream(replicate_to=url, replicate_options=...)`` owns: built
    from ``options`` (``RedisReplicator``'s keywords) and started."""
    replicator = RedisReplicator(stream, url, **dict(options or {}))
    return replicator.start()


# -- reading ----------------------------------------------------------------------------------


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
        self._socket_timeout = _positive_number("socket_timeout", socket_timeout)
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
        options = _client_options(self._socket_timeout + block_ms / 1000)
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


__all__ = [
    "COMPONENT_NAME",
    "DEFAULT_PREFIX",
    "Delivery",
    "RedisConfigError",
    "RedisEventReader",
    "RedisKeys",
    "RedisReplicator",
    "RedisStreamError",
    "RedisUnavailableError",
    "check_server",
    "default_host_id",
    "replicator_for_stream",
    "safe_url",
]
