"""Ships a store's events to Redis Streams: the batch script and ``RedisReplicator``.

Exactly once, without trusting the client: a batch is one Lua script. It checks the key types,
reads the host's marker, writes only the events past it, and moves the marker, all in one atomic
step that Redis logs to its AOF as one transaction. A replicator killed at any point, or a Redis
restarted from its AOF, therefore leaves every key with each event once, in seq order: a batch
shipped again is skipped by the marker, and a batch Redis lost took the marker back with it. If
the marker is behind where the replicator thought it was (Redis lost data), the script refuses
the batch and the replicator rewinds to the marker and ships again from the file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Optional

from opencode_addons import _core
from opencode_addons.events import RAW_SESSION_DELETED, SESSION_DELETED, session_id_of

# redis-py comes through redis_connection, which reports a missing [redis] extra.
from opencode_addons.redis_connection import (
    DEFAULT_PREFIX,
    MAX_ID_MS,
    REPLICATOR_COMMANDS,
    REPLICATOR_MIN_VERSION,
    RedisStreamError,
    RedisUnavailableError,
    _check_key_types,
    _check_url,
    _connect,
    _id_ms,
    _keys,
    _loads,
    _positive_int,
    _translate,
    check_server,
    log,
    redis,
    safe_url,
)
from opencode_addons.validation import positive_seconds

COMPONENT_NAME = "redis_replicator"
# Event types after which the session's key gets a TTL.
DELETED_TYPES = frozenset({SESSION_DELETED, RAW_SESSION_DELETED})
# A script call carries at most this many bytes of event lines (besides the `batch` count).
MAX_BATCH_BYTES = 8 << 20
# How many events a file read returns at most. A read after a seq starts where that seq is
# (the native reader seeks to it), so catching up reads big chunks and ships them in batches.
FILE_CHUNK = 20_000
FILE_CHUNK_BYTES = 32 << 20


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


def _seq_of(line: bytes) -> int:
    # A raw line always ends with its `"seq":N}` member (the native readers add it).
    return int(line[line.rindex(b'"seq":') + 6 : -1])


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
        self._retry_min = positive_seconds("retry_min", retry_min)
        self._retry_max = max(self._retry_min, positive_seconds("retry_max", retry_max))
        self._socket_timeout = positive_seconds("socket_timeout", socket_timeout)
        self._drain_timeout = positive_seconds("drain_timeout", drain_timeout)
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
        self._poll_interval = positive_seconds("poll_interval", poll_interval)

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
        self._healthy = False
        self._position = None  # read it again from Redis: it may have lost data
        self._client_reset(error)
        message = str(translated)
        if message != self._last_error:
            level = logging.WARNING if getattr(translated, "retryable", False) else logging.ERROR
            log.log(level, "replicator %s: %s", self.host_id, message)
        # The error is described before it is counted: stats() reads the count first, so a
        # reader that sees a count also sees its message.
        self._last_error = message
        self._last_error_at = time.time()
        self._errors += 1

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
