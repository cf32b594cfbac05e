"""MemoryLaneStore: the learning memory, on embedded SQLite with FTS5 ranking.

Items are ranked by a product of signals: text relevance (FTS5 ``bm25``, optionally blended with
embedding cosine similarity), recency decay with a half-life, a feedback weight the user trains
with :meth:`MemoryLaneStore.record_feedback`, the item's confidence and an entity-overlap boost.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import sqlite3
import threading
import time
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)
# Memories kept by default (a host captures learnings forever; see max_items).
MAX_ITEMS = 100_000

Embedder = Callable[[str], Sequence[float]]

HELPFUL_FACTOR = 1.1
UNHELPFUL_FACTOR = 0.5
# Feedback weights stay in a sane band so repeated votes cannot overflow or zero an item forever.
MIN_FEEDBACK = 1e-3
MAX_FEEDBACK = 1e3
ENTITY_BOOST = 0.5
TEXT_WEIGHT = 0.6
EMBEDDING_WEIGHT = 0.4
MAX_QUERY_TERMS = 32
# How many FTS matches / embedded rows a single search looks at before scoring in Python.
FTS_CANDIDATES = 200
EMBEDDING_SCAN = 2000
SECONDS_PER_DAY = 86_400.0

_TOKEN = re.compile(r"\w+", re.UNICODE)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    id TEXT PRIMARY KEY,
    content TEXT NOT NULL,
    collection TEXT NOT NULL,
    tags TEXT NOT NULL,
    entities TEXT NOT NULL,
    confidence REAL NOT NULL,
    feedback REAL NOT NULL DEFAULT 1.0,
    created_at REAL NOT NULL,
    metadata TEXT NOT NULL,
    embedding BLOB
);
CREATE INDEX IF NOT EXISTS memories_collection ON memories(collection);
CREATE INDEX IF NOT EXISTS memories_created ON memories(created_at);
-- Entities live outside the FTS table: bm25 counts every column in a row's length, so entity
-- strings there would penalize the text score of exactly the items they should boost.
CREATE TABLE IF NOT EXISTS memory_entities (
    entity TEXT NOT NULL,
    memory_id TEXT NOT NULL,
    PRIMARY KEY (entity, memory_id)
) WITHOUT ROWID;
CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(
    id UNINDEXED, content, tags, tokenize = 'unicode61'
);
"""

# Column weights (id, content, tags): a word in the content counts twice a word in the tags.
_BM25 = "bm25(memories_fts, 0.0, 1.0, 0.5)"
_COLUMNS = "id, content, collection, tags, entities, confidence, feedback, created_at, metadata"


class MemoryLaneClosedError(RuntimeError):
    """Raised when a closed :class:`MemoryLaneStore` is used."""


@dataclass
class MemoryHit:
    """One stored memory, with its ranking score (0.0 when fetched by id)."""

    id: str
    content: str
    collection: str
    tags: list[str]
    entities: list[str]
    score: float
    confidence: float
    created_at: float
    metadata: dict[str, Any] = field(default_factory=dict)
    feedback: float = 1.0


def sanitize_query(query: str) -> str:
    """Turn arbitrary text into a safe FTS5 query: quoted word tokens joined with OR.

    Quoting each ``\\w+`` token makes operators (AND, NEAR, ``*``, ``"``) plain words, so no
    user input can produce an FTS syntax error. Returns ``""`` when nothing searchable is left.
    """
    seen: dict[str, None] = {}
    for token in _TOKEN.findall(query.lower()):
        seen.setdefault(token, None)
        if len(seen) >= MAX_QUERY_TERMS:
            break
    return " OR ".join(f'"{token}"' for token in seen)


def _require_fts5(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("CREATE VIRTUAL TABLE temp.fts5_probe USING fts5(x)")
        conn.execute("DROP TABLE temp.fts5_probe")
    except sqlite3.OperationalError as exc:
        raise RuntimeError(
            f"MemoryLaneStore needs SQLite with FTS5 (this sqlite3 is {sqlite3.sqlite_version}): "
            f"{exc}"
        ) from exc


def _encode_vector(vector: Sequence[float]) -> bytes:
    return array("f", (float(x) for x in vector)).tobytes()


def _decode_vector(blob: bytes) -> array:
    vector = array("f")
    vector.frombytes(blob)
    return vector


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b) or not a:
        return 0.0
    dot = sum(x * y for x, y in zip(a, b))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def _normalize_entities(entities: Iterable[str] | None) -> set[str]:
    return {str(e).strip().lower() for e in entities or () if str(e).strip()}


class MemoryLaneStore:
    """Embedded learning memory; thread-safe (one connection behind a lock)."""

    name = "memory_lane_store"

    def __init__(
        self,
        path: str | os.PathLike[str] = ":memory:",
        *,
        embed: Optional[Embedder] = None,
        half_life_days: float = 30.0,
        clock: Callable[[], float] = time.time,
        max_items: Optional[int] = MAX_ITEMS,
    ) -> None:
        if half_life_days <= 0:
            raise ValueError("half_life_days must be positive")
        if max_items is not None and (isinstance(max_items, bool) or max_items < 1):
            raise ValueError(f"max_items must be a positive int or None, got {max_items!r}")
        # A long-running host captures learnings forever: past max_items (plus 10% slack, so
        # pruning runs in batches) the least valuable memories are dropped.
        self.max_items = max_items
        self.pruned = 0
        self.path = os.fspath(path)
        self._embed = embed
        self._half_life_s = half_life_days * SECONDS_PER_DAY
        self._clock = clock
        self._lock = threading.RLock()
        self._conn: Optional[sqlite3.Connection] = self._open()
        self._count = self.count()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            _require_fts5(conn)
            if self.path != ":memory:":
                # WAL lets readers in other processes see a consistent snapshot while we write.
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except Exception:
            conn.close()
            raise
        return conn

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise MemoryLaneClosedError("MemoryLaneStore is closed")
        return self._conn

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._conn is None

    # -- writing -------------------------------------------------------------------------------

    def store(
        self,
        content: str,
        *,
        collection: str = "default",
        tags: Iterable[str] = (),
        entities: Iterable[str] = (),
        confidence: float = 1.0,
        metadata: Optional[Mapping[str, Any]] = None,
    ) -> str:
        """Store one memory and return its id."""
        if not isinstance(content, str) or not content.strip():
            raise ValueError("content must be a non-empty string")
        if not 0.0 <= confidence <= 1.0:
            raise ValueError("confidence must be within [0, 1]")
        memory_id = f"mem_{secrets.token_hex(8)}"
        tag_list = [str(t) for t in tags]
        entity_list = [str(e) for e in entities]
        # Embedding happens outside the lock: it may be slow and needs no database access.
        embedding = _encode_vector(self._embed(content)) if self._embed else None
        with self._lock:
            conn = self._connection()
            with conn:
                conn.execute("BEGIN")
                conn.execute(
                    f"INSERT INTO memories ({_COLUMNS}, embedding) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        memory_id,
                        content,
                        collection,
                        json.dumps(tag_list),
                        json.dumps(entity_list),
                        float(confidence),
                        1.0,
                        float(self._clock()),
                        json.dumps(dict(metadata or {}), default=str),
                        embedding,
                    ),
                )
                conn.execute(
                    "INSERT INTO memories_fts (id, content, tags) VALUES (?,?,?)",
                    (memory_id, content, " ".join(tag_list)),
                )
                conn.executemany(
                    "INSERT OR IGNORE INTO memory_entities (entity, memory_id) VALUES (?,?)",
                    [(entity, memory_id) for entity in _normalize_entities(entity_list)],
                )
            self._count += 1
            self._prune_if_over()
        return memory_id

    def _prune_if_over(self) -> None:
        limit = self.max_items
        if limit is None or self._count <= limit + max(1, limit // 10):
            return
        excess = self._count - limit
        # Value = confidence x feedback, fading with age (a hyperbolic stand-in for the
        # half-life decay smart_find uses, which SQLite cannot compute without math functions).
        victims = (
            "SELECT id FROM memories ORDER BY confidence * feedback / "
            "(1.0 + MAX(0.0, ? - created_at) / ?) ASC, created_at ASC LIMIT ?"
        )
        args = (float(self._clock()), self._half_life_s, excess)
        conn = self._connection()
        with conn:
            conn.execute("BEGIN")
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS doomed (id TEXT PRIMARY KEY)")
            conn.execute("DELETE FROM doomed")
            conn.execute(f"INSERT INTO doomed {victims}", args)
            removed = conn.execute(
                "DELETE FROM memories WHERE id IN (SELECT id FROM doomed)"
            ).rowcount
            conn.execute("DELETE FROM memories_fts WHERE id IN (SELECT id FROM doomed)")
            conn.execute("DELETE FROM memory_entities WHERE memory_id IN (SELECT id FROM doomed)")
        self._count -= removed
        self.pruned += removed
        log.info("memory lane pruned %d memories (max_items=%d)", removed, limit)

    def record_feedback(self, memory_id: str, helpful: bool) -> float:
        """Multiply the item's feedback weight by 1.1 (helpful) or 0.5; return the new weight."""
        factor = HELPFUL_FACTOR if helpful else UNHELPFUL_FACTOR
        with self._lock:
            conn = self._connection()
            with conn:
                # One transaction, so a second process voting at the same time is not lost.
                conn.execute("BEGIN IMMEDIATE")
                cursor = conn.execute(
                    "UPDATE memories SET feedback = MIN(?, MAX(?, feedback * ?)) WHERE id = ?",
                    (MAX_FEEDBACK, MIN_FEEDBACK, factor, memory_id),
                )
                if cursor.rowcount == 0:
                    raise KeyError(memory_id)
                row = conn.execute(
                    "SELECT feedback FROM memories WHERE id = ?", (memory_id,)
                ).fetchone()
        return float(row[0])

    def delete(self, memory_id: str) -> bool:
        """Delete one memory; return whether it existed."""
        with self._lock:
            conn = self._connection()
            with conn:
                conn.execute("BEGIN")
                cursor = conn.execute("DELETE FROM memories WHERE id = ?", (memory_id,))
                conn.execute("DELETE FROM memories_fts WHERE id = ?", (memory_id,))
                conn.execute("DELETE FROM memory_entities WHERE memory_id = ?", (memory_id,))
            self._count -= cursor.rowcount
        return cursor.rowcount > 0

    # -- reading -------------------------------------------------------------------------------

    def get(self, memory_id: str) -> Optional[MemoryHit]:
        """The memory with ``memory_id``, or None."""
        with self._lock:
            row = (
                self._connection()
                .execute(f"SELECT {_COLUMNS} FROM memories WHERE id = ?", (memory_id,))
                .fetchone()
            )
        return self._hit(row, 0.0) if row else None

    def count(self, collection: Optional[str] = None) -> int:
        """Number of memories, overall or in one collection."""
        sql = "SELECT COUNT(*) FROM memories"
        args: tuple[str, ...] = ()
        if collection is not None:
            sql, args = sql + " WHERE collection = ?", (collection,)
        with self._lock:
            return int(self._connection().execute(sql, args).fetchone()[0])

    def collections(self) -> list[str]:
        """Names of the collections that hold at least one memory, sorted."""
        with self._lock:
            rows = (
                self._connection()
                .execute("SELECT DISTINCT collection FROM memories ORDER BY collection")
                .fetchall()
            )
        return [row[0] for row in rows]

    def stats(self) -> dict[str, Any]:
        """Counts and settings, for health reports."""
        with self._lock:
            if self._conn is None:
                return {"closed": True, "path": self.path}
            conn = self._conn
            total, embedded = conn.execute(
                "SELECT COUNT(*), COUNT(embedding) FROM memories"
            ).fetchone()
            per_collection = dict(
                conn.execute("SELECT collection, COUNT(*) FROM memories GROUP BY collection")
            )
        return {
            "closed": False,
            "path": self.path,
            "count": int(total),
            "embedded": int(embedded),
            "collections": per_collection,
            "half_life_days": self._half_life_s / SECONDS_PER_DAY,
            "embeddings_enabled": self._embed is not None,
            "max_items": self.max_items,
            "pruned": self.pruned,
        }

    def smart_find(
        self,
        query: str,
        limit: int = 10,
        entities: Optional[Iterable[str]] = None,
        collection: Optional[str] = None,
    ) -> list[MemoryHit]:
        """The best ``limit`` memories for ``query``, highest score first."""
        if limit <= 0:
            return []
        wanted_entities = _normalize_entities(entities)
        query_vector = list(self._embed(query)) if self._embed and query.strip() else None
        with self._lock:
            conn = self._connection()
            text_scores = self._text_candidates(conn, query, collection)
            semantic = self._semantic_candidates(conn, query_vector, collection)
            entity_ids = self._entity_candidates(conn, wanted_entities, collection)
            ids = list(dict.fromkeys([*text_scores, *semantic, *entity_ids]))
            rows = self._rows(conn, ids)
        now = float(self._clock())
        hits = [
            self._hit(row, self._score(row, text_scores, semantic, wanted_entities, now))
            for row in rows
        ]
        hits = [hit for hit in hits if hit.score > 0.0]
        hits.sort(key=lambda hit: hit.score, reverse=True)
        return hits[:limit]

    # -- ranking internals ---------------------------------------------------------------------

    def _text_candidates(
        self, conn: sqlite3.Connection, query: str, collection: Optional[str]
    ) -> dict[str, float]:
        """FTS matches with relevance normalized to (0, 1] against the best match."""
        fts_query = sanitize_query(query)
        if not fts_query:
            return {}
        sql = (
            f"SELECT f.id, {_BM25} FROM memories_fts f "
            "JOIN memories m ON m.id = f.id WHERE memories_fts MATCH ?"
        )
        args: list[Any] = [fts_query]
        if collection is not None:
            sql += " AND m.collection = ?"
            args.append(collection)
        sql += f" ORDER BY {_BM25} LIMIT ?"
        args.append(FTS_CANDIDATES)
        # bm25() is negative, more negative meaning more relevant.
        raw = {row[0]: -row[1] for row in conn.execute(sql, args)}
        best = max(raw.values(), default=0.0)
        if best <= 0:
            return dict.fromkeys(raw, 1.0)
        return {memory_id: max(value, 0.0) / best for memory_id, value in raw.items()}

    def _semantic_candidates(
        self,
        conn: sqlite3.Connection,
        query_vector: Optional[Sequence[float]],
        collection: Optional[str],
    ) -> dict[str, float]:
        """Cosine similarity (clamped to >= 0) of the newest embedded memories to the query."""
        if query_vector is None:
            return {}
        sql = "SELECT id, embedding FROM memories WHERE embedding IS NOT NULL"
        args: list[Any] = []
        if collection is not None:
            sql += " AND collection = ?"
            args.append(collection)
        sql += " ORDER BY created_at DESC LIMIT ?"
        args.append(EMBEDDING_SCAN)
        similarities = {}
        for memory_id, blob in conn.execute(sql, args):
            similarity = _cosine(query_vector, _decode_vector(blob))
            if similarity > 0:
                similarities[memory_id] = similarity
        return similarities

    def _entity_candidates(
        self, conn: sqlite3.Connection, entities: set[str], collection: Optional[str]
    ) -> list[str]:
        if not entities:
            return []
        placeholders = ",".join("?" * len(entities))
        sql = (
            "SELECT DISTINCT e.memory_id FROM memory_entities e JOIN memories m "
            f"ON m.id = e.memory_id WHERE e.entity IN ({placeholders})"
        )
        args: list[Any] = sorted(entities)
        if collection is not None:
            sql += " AND m.collection = ?"
            args.append(collection)
        sql += " LIMIT ?"
        args.append(FTS_CANDIDATES)
        return [row[0] for row in conn.execute(sql, args)]

    @staticmethod
    def _rows(conn: sqlite3.Connection, ids: list[str]) -> list[tuple[Any, ...]]:
        if not ids:
            return []
        placeholders = ",".join("?" * len(ids))
        return conn.execute(
            f"SELECT {_COLUMNS} FROM memories WHERE id IN ({placeholders})", ids
        ).fetchall()

    def _score(
        self,
        row: tuple[Any, ...],
        text_scores: Mapping[str, float],
        semantic: Mapping[str, float],
        wanted_entities: set[str],
        now: float,
    ) -> float:
        memory_id, confidence, feedback, created_at = row[0], row[5], row[6], row[7]
        relevance = text_scores.get(memory_id, 0.0)
        if self._embed is not None:
            relevance = TEXT_WEIGHT * relevance + EMBEDDING_WEIGHT * semantic.get(memory_id, 0.0)
        if wanted_entities:
            overlap = len(wanted_entities & _normalize_entities(json.loads(row[4])))
            fraction = overlap / len(wanted_entities)
            # An entity match alone makes an item findable, with a floor relevance.
            relevance = max(relevance, 0.1 * fraction) * (1.0 + ENTITY_BOOST * fraction)
        return relevance * self._recency(created_at, now) * feedback * confidence

    def _recency(self, created_at: float, now: float) -> float:
        age = max(0.0, now - created_at)
        return 0.5 ** (age / self._half_life_s)

    @staticmethod
    def _hit(row: tuple[Any, ...], score: float) -> MemoryHit:
        return MemoryHit(
            id=row[0],
            content=row[1],
            collection=row[2],
            tags=json.loads(row[3]),
            entities=json.loads(row[4]),
            score=score,
            confidence=row[5],
            created_at=row[7],
            metadata=json.loads(row[8]),
            feedback=row[6],
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database; idempotent."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if self.path != ":memory:":
                # Fold the WAL back so the file is self-contained after a clean shutdown.
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            log.warning("memory lane WAL checkpoint failed", exc_info=True)
        finally:
            conn.close()

    def shutdown(self) -> None:
        """Alias of :meth:`close`, for the shutdown sequence."""
        self.close()

    def __enter__(self) -> MemoryLaneStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
