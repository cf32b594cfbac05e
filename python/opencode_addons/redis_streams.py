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

Entry ids are ``<ms>-<n>`` with ``ms`` the event's timestamp, raised to the key's last id when
that is later (another host's clock, or a host catching up). So ``since`` is an exact lower
bound on ids, and on the global key ``until`` plus the largest raise ever made is an upper one:
time-range queries read only the range they need.

How a batch is shipped exactly once is told in ``redis_replicator``. The code is in three
modules, re-exported here (this module is the public entry point): ``redis_connection``
(errors, URLs, server checks, key names), ``redis_replicator`` (the batch script,
``RedisReplicator``) and ``redis_reader`` (``RedisEventReader``, ``Delivery``).
"""

from __future__ import annotations

from opencode_addons.redis_connection import (
    DEFAULT_PREFIX,
    RedisConfigError,
    RedisKeys,
    RedisStreamError,
    RedisUnavailableError,
    check_server,
    safe_url,
)
from opencode_addons.redis_connection import MAX_ID_MS as MAX_ID_MS
from opencode_addons.redis_connection import READER_COMMANDS as READER_COMMANDS
from opencode_addons.redis_connection import READER_MIN_VERSION as READER_MIN_VERSION
from opencode_addons.redis_connection import REPLICATOR_COMMANDS as REPLICATOR_COMMANDS
from opencode_addons.redis_connection import REPLICATOR_MIN_VERSION as REPLICATOR_MIN_VERSION
from opencode_addons.redis_reader import PAGE as PAGE
from opencode_addons.redis_reader import Delivery, RedisEventReader
from opencode_addons.redis_replicator import (
    COMPONENT_NAME,
    RedisReplicator,
    default_host_id,
    replicator_for_stream,
)
from opencode_addons.redis_replicator import DELETED_TYPES as DELETED_TYPES
from opencode_addons.redis_replicator import FILE_CHUNK as FILE_CHUNK
from opencode_addons.redis_replicator import FILE_CHUNK_BYTES as FILE_CHUNK_BYTES
from opencode_addons.redis_replicator import MAX_BATCH_BYTES as MAX_BATCH_BYTES
from opencode_addons.redis_replicator import SHIP_SCRIPT as SHIP_SCRIPT

# The public API, unchanged by the split into modules. The module-level constants imported
# ``as`` themselves above (``SHIP_SCRIPT``, ``PAGE``...) stay importable from here, as before.
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
