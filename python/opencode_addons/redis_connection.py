"""Connecting to Redis for the ``[redis]`` extra: what the replicator and the reader share.

The error classes and the translation of redis-py's exceptions into them, URL checks (and the
password-free form for messages), client options, the server's version and command checks, the
key names under a prefix (the layout is described in ``redis_streams``) and the small argument
checks. This is the one module that imports redis-py: ``redis_replicator`` and
``redis_reader`` take it from here, so a missing extra is reported once, with the same message,
whichever of them is imported first.
"""

from __future__ import annotations

import logging
import math
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

# The Redis modules take redis-py from here (redis_reader its asyncio client too), so a missing
# extra raises the message below whichever of them is imported first.
try:
    import redis
    import redis.asyncio as aioredis  # noqa: F401
    from redis.asyncio.retry import Retry as AsyncRetry
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

# One logger for the whole Redis integration, under its public module's name (as before the
# split into modules), so logging configured for ``opencode_addons.redis_streams`` still applies.
log = logging.getLogger("opencode_addons.redis_streams")

DEFAULT_PREFIX = "oca"
# Readers: Redis 6.2 has XAUTOCLAIM and exclusive ranges. The replicator: 7.0 takes "<ms>-*" ids.
READER_MIN_VERSION = (6, 2, 0)
REPLICATOR_MIN_VERSION = (7, 0, 0)
REPLICATOR_COMMANDS = ("EVALSHA", "XADD", "XINFO", "HGET", "HSET", "EXPIRE", "TYPE", "EXISTS")
READER_COMMANDS = ("XRANGE", "XREVRANGE", "XREAD", "XREADGROUP", "XACK", "XAUTOCLAIM", "XGROUP")
# Stream ids keep the millisecond part exact in a Lua number (a double).
MAX_ID_MS = 2**53 - 1


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


def _client_options(socket_timeout: Optional[float], asynchronous: bool = False) -> dict[str, Any]:
    # Retries are ours (with backoff, counted in stats), not hidden in the client. The asyncio
    # client takes its own Retry class (redis-py 8.2 converts a synchronous one, with a warning).
    retry = AsyncRetry(NoBackoff(), 0) if asynchronous else Retry(NoBackoff(), 0)
    return {
        # RESP2 whatever the redis-py default: the reply shapes parsed here stay the same.
        "protocol": 2,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": 5.0,
        "retry": retry,
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


def _id_ms(value: Any) -> int:
    """The id millisecond part for a timestamp: floor, kept within 0..MAX_ID_MS."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    if isinstance(value, float) and not math.isfinite(value):
        return MAX_ID_MS if value > 0 else 0
    return min(max(math.floor(value), 0), MAX_ID_MS)
