"""MemoryLaneStore: storage, ranking signals, hostile queries, lifecycle, persistence."""

from __future__ import annotations

import threading

import pytest
from opencode_addons.memory_lane import (
    MemoryLaneClosedError,
    MemoryLaneStore,
    sanitize_query,
)

DAY = 86_400.0


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store():
    lane = MemoryLaneStore()
    yield lane
    lane.close()


def ids(hits):
    return [hit.id for hit in hits]


def test_store_and_get_round_trip(store):
    memory_id = store.store(
        "cancel timers on shutdown",
        collection="learnings",
        tags=["timer", "shutdown"],
        entities=["observer.py"],
        confidence=0.8,
        metadata={"session_id": "s1"},
    )
    hit = store.get(memory_id)
    assert hit is not None
    assert hit.content == "cancel timers on shutdown"
    assert hit.collection == "learnings"
    assert hit.tags == ["timer", "shutdown"]
    assert hit.entities == ["observer.py"]
    assert hit.confidence == 0.8
    assert hit.metadata == {"session_id": "s1"}
    assert store.get("mem_missing") is None


def test_store_rejects_bad_input(store):
    with pytest.raises(ValueError):
        store.store("   ")
    with pytest.raises(ValueError):
        store.store("x", confidence=1.5)


def test_relevant_item_ranks_above_irrelevant(store):
    relevant = store.store("asyncio timer handles must be cancelled on shutdown")
    store.store("the ledger renders markdown tables")
    other = store.store("timer wheels are one way to schedule work")
    hits = store.smart_find("cancel asyncio timer shutdown")
    assert hits[0].id == relevant
    assert other in ids(hits)
    assert hits[0].score > hits[-1].score
    assert "markdown" not in " ".join(h.content for h in hits)


def test_feedback_multiplies_weight_and_reorders(store):
    first = store.store("retry the flaky network call")
    second = store.store("retry the flaky network call later")
    before = ids(store.smart_find("retry flaky network call"))
    top, bottom = before[0], before[1]
    assert {top, bottom} == {first, second}

    assert store.record_feedback(top, helpful=False) == pytest.approx(0.5)
    assert store.record_feedback(bottom, helpful=True) == pytest.approx(1.1)
    assert store.get(bottom).feedback == pytest.approx(1.1)
    after = ids(store.smart_find("retry flaky network call"))
    assert after == [bottom, top]
    assert store.record_feedback(bottom, helpful=True) == pytest.approx(1.21)


def test_feedback_unknown_id_raises_key_error(store):
    with pytest.raises(KeyError):
        store.record_feedback("mem_nope", helpful=True)


def test_recency_decay_halves_score_per_half_life():
    clock = FakeClock()
    lane = MemoryLaneStore(half_life_days=10.0, clock=clock)
    old = lane.store("database migration checklist")
    clock.now += 10 * DAY
    new = lane.store("database migration checklist")
    hits = {hit.id: hit.score for hit in lane.smart_find("database migration checklist")}
    assert hits[new] > hits[old]
    assert hits[old] / hits[new] == pytest.approx(0.5, rel=1e-6)
    clock.now += 10 * DAY
    later = {hit.id: hit.score for hit in lane.smart_find("database migration checklist")}
    assert later[new] == pytest.approx(hits[new] * 0.5, rel=1e-6)
    lane.close()


def test_entities_boost_matching_items(store):
    plain = store.store("fix the flaky test in the suite")
    tagged = store.store("fix the flaky test in the suite", entities=["tests/test_ledger.py"])
    without = {h.id: h.score for h in store.smart_find("flaky test")}
    assert without[plain] == pytest.approx(without[tagged])
    boosted = store.smart_find("flaky test", entities=["TESTS/test_ledger.py"])
    assert boosted[0].id == tagged
    assert boosted[0].score > boosted[1].score * 1.4


def test_entity_alone_finds_item_without_text_match(store):
    memory_id = store.store("remember to bump the version", entities=["release"])
    hits = store.smart_find("unrelated words", entities=["release"])
    assert ids(hits) == [memory_id]


def test_embedding_changes_scores_and_finds_semantic_matches():
    vectors = {"cat": [1.0, 0.0], "dog": [0.0, 1.0], "kitten": [0.9, 0.1]}

    def embed(text):
        for word, vector in vectors.items():
            if word in text:
                return vector
        return [0.5, 0.5]

    plain = MemoryLaneStore()
    semantic = MemoryLaneStore(embed=embed)
    for lane in (plain, semantic):
        lane.store("pet care for a dog")
        lane.store("pet care for a cat")
    plain_hits = plain.smart_find("pet care kitten")
    semantic_hits = semantic.smart_find("pet care kitten")
    assert plain_hits[0].score == pytest.approx(plain_hits[1].score)
    assert semantic_hits[0].content == "pet care for a cat"
    assert semantic_hits[0].score > semantic_hits[1].score
    # No shared word at all: only the embedding can find it.
    kitten_hits = semantic.smart_find("kitten")
    assert [h.content for h in kitten_hits] == ["pet care for a cat", "pet care for a dog"]
    assert kitten_hits[0].score > 5 * kitten_hits[1].score
    assert plain.smart_find("kitten") == []
    assert semantic.stats()["embedded"] == 2
    plain.close()
    semantic.close()


@pytest.mark.parametrize(
    "query",
    [
        '"AND OR NEAR( \' " *',
        "NEAR(a b, 2)",
        "col:value",
        "a AND",
        "(((",
        "^start",
        "-",
        "",
        "'; DROP TABLE memories; --",
        "名前 über",
    ],
)
def test_hostile_queries_never_raise(store, query):
    store.store("AND OR NEAR are words here; 名前 über alles")
    hits = store.smart_find(query)
    assert isinstance(hits, list)
    assert store.count() == 1


def test_sanitize_query_quotes_every_term():
    assert sanitize_query('foo AND "bar" NEAR(') == '"foo" OR "and" OR "bar" OR "near"'
    assert sanitize_query("*** ((( '") == ""


def test_collection_filter_and_listing(store):
    a = store.store("shared words here", collection="alpha")
    b = store.store("shared words here", collection="beta")
    assert store.collections() == ["alpha", "beta"]
    assert ids(store.smart_find("shared", collection="beta")) == [b]
    assert store.count() == 2
    assert store.count("alpha") == 1
    assert store.stats()["collections"] == {"alpha": 1, "beta": 1}
    assert store.delete(a) is True
    assert store.delete(a) is False
    assert store.smart_find("shared") and ids(store.smart_find("shared")) == [b]


def test_limit_is_respected(store):
    for index in range(15):
        store.store(f"note number {index} about caching")
    assert len(store.smart_find("caching", limit=5)) == 5
    assert store.smart_find("caching", limit=0) == []


def test_closed_store_raises_and_close_is_idempotent():
    lane = MemoryLaneStore()
    lane.store("x marks the spot")
    lane.close()
    lane.shutdown()
    assert lane.closed
    assert lane.stats()["closed"] is True
    with pytest.raises(MemoryLaneClosedError, match="closed"):
        lane.smart_find("spot")
    with pytest.raises(RuntimeError):
        lane.store("again")


def test_persists_across_reopen(tmp_path):
    path = tmp_path / "lane.db"
    lane = MemoryLaneStore(path)
    memory_id = lane.store("persist me across restarts", tags=["durable"])
    lane.record_feedback(memory_id, helpful=True)
    lane.shutdown()

    reopened = MemoryLaneStore(path)
    hits = reopened.smart_find("persist restarts")
    assert ids(hits) == [memory_id]
    assert hits[0].feedback == pytest.approx(1.1)
    assert reopened.get(memory_id).tags == ["durable"]
    journal = reopened._connection().execute("PRAGMA journal_mode").fetchone()[0]
    assert journal == "wal"
    reopened.close()


def test_concurrent_writers_are_serialized():
    lane = MemoryLaneStore()
    errors = []

    def writer(worker):
        try:
            for index in range(50):
                lane.store(f"worker {worker} item {index}")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert lane.count() == 200
    assert len(lane.smart_find("worker item", limit=500)) == 200
    lane.close()


def test_max_items_prunes_the_least_valuable_memories():
    now = [1_000_000.0]
    lane = MemoryLaneStore(max_items=10, clock=lambda: now[0], half_life_days=1.0)
    keeper = lane.store("keep this one: the deploy needs the staging flag", confidence=1.0)
    for _ in range(5):
        lane.record_feedback(keeper, helpful=True)
    notes = []
    for index in range(40):
        now[0] += 3600.0
        notes.append(lane.store(f"routine note number {index}", confidence=0.6))
    stats = lane.stats()
    assert 10 <= stats["count"] <= 11
    assert stats["pruned"] == 41 - stats["count"]
    assert lane.get(keeper) is not None, "a valuable memory was pruned before routine ones"
    # Among equally rated notes the oldest go first.
    kept = [note for note in notes if lane.get(note) is not None]
    assert kept == notes[len(notes) - len(kept) :]
    lane.close()


def test_max_items_must_be_positive():
    with pytest.raises(ValueError, match="max_items"):
        MemoryLaneStore(max_items=0)
    lane = MemoryLaneStore(max_items=None)
    for index in range(30):
        lane.store(f"note {index}")
    assert lane.count() == 30 and lane.stats()["pruned"] == 0
    lane.close()
