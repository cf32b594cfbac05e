"""The OpenCode bridge on server events of today's and older shapes (tests/fixtures/opencode)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging

import pytest
from opencode_addons.bridge import (
    BRIDGE_STREAM,
    DEFAULT_DEDUP_WINDOW,
    MAPPED_TYPES,
    PERMISSION_REPLIES,
    OpenCodeBridge,
    fit_event,
)
from opencode_addons.durable_stream import DurableStream
from opencode_addons.opencode import seed_duplicate_window
from opencode_addons.orchestrator.checkpoints import CheckpointManager
from opencode_addons.orchestrator.learning import LearningExtractor
from opencode_fixtures import FIXTURES, NAMES, document, events, unwrap


@pytest.fixture
def stream(tmp_path):
    s = DurableStream(tmp_path / "stream.jsonl")
    yield s
    s.shutdown()


def feed(stream: DurableStream, name: str) -> list[dict]:
    for event in events(name):
        stream.bridge(event)
    return list(stream.get_event_history())


def types_and_actors(history: list[dict]) -> list[tuple[str, str]]:
    return [(e["type"], e["actor"]) for e in history]


def of_type(history: list[dict], event_type: str) -> list[dict]:
    return [e for e in history if e["type"] == event_type]


# -- the fixtures themselves -----------------------------------------------------------------


def test_fixture_files_are_what_build_py_writes():
    spec = importlib.util.spec_from_file_location("opencode_fixture_build", FIXTURES / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    built = build.build_all()
    assert sorted(built) == sorted(NAMES)
    for name in NAMES:
        assert document(name) == json.loads(json.dumps(built[name])), name


@pytest.mark.parametrize("name", NAMES)
def test_every_fixture_names_its_types_file_and_what_it_exercises(name):
    doc = document(name)
    types_file = doc["_source"]["file"]
    if name.startswith("current/"):
        assert types_file.endswith("packages/sdk/js/src/v2/gen/types.gen.ts")
        # Every current-shape event has an ascending evt_ id.
        ids = [unwrap(e)["id"] for e in doc["events"] if "id" in unwrap(e)]
        assert ids and all(i.startswith("evt_") for i in ids)
    else:
        assert types_file.endswith("packages/sdk/js/src/gen/types.gen.ts")
        assert not any("id" in unwrap(e) for e in doc["events"])
    assert doc["_source"]["types"] and doc["_exercises"] and doc["events"]


# -- a whole turn, current shape --------------------------------------------------------------


CURRENT_TURN = [
    ("lifecycle.session.created", "system"),
    ("message.created", "user"),
    ("execution.text_snapshot", "user"),
    ("lifecycle.session.status", "system"),
    ("message.created", "agent"),
    ("execution.step_start", "agent"),
    *[("execution.reasoning_delta", "agent")] * 3,
    ("execution.reasoning_snapshot", "agent"),
    ("execution.tool_start", "agent"),
    ("execution.tool_finish", "agent"),
    ("execution.tool_start", "agent"),
    ("execution.tool_finish", "agent"),
    ("lifecycle.session.status", "system"),
    ("lifecycle.session.status", "system"),
    *[("execution.text_delta", "agent")] * 4,
    ("execution.text_snapshot", "agent"),
    ("execution.step_finish", "agent"),
    ("message.completed", "agent"),
    ("lifecycle.session.status", "system"),
    ("lifecycle.session.idle", "system"),
]


def test_current_turn_maps_every_event(stream):
    history = feed(stream, "current/turn.json")
    assert types_and_actors(history) == CURRENT_TURN
    session_id = unwrap(events("current/turn.json")[0])["properties"]["sessionID"]
    assert {e["stream_id"] for e in history} == {session_id}
    stats = stream.stats()["bridge"]
    assert stats["bad_input"] == stats["duplicates"] == stats["unknown_part_deltas"] == 0


def test_deltas_follow_the_part_type_and_add_up_to_the_final_text(stream):
    history = feed(stream, "current/turn.json")
    for kind in ("text", "reasoning"):
        deltas = of_type(history, f"execution.{kind}_delta")
        snapshot = of_type(history, f"execution.{kind}_snapshot")[-1]
        assert "".join(d["payload"]["delta"] for d in deltas) == snapshot["payload"]["text"]
        assert {d["payload"]["partID"] for d in deltas} == {snapshot["payload"]["partID"]}
        # Deltas carry only the new text, never the part's text so far.
        assert all("text" not in d["payload"] for d in deltas)


def test_each_stream_event_names_the_server_event_that_caused_it(stream):
    sent = [e["id"] for e in events("current/turn.json")]
    history = feed(stream, "current/turn.json")
    causes = [e["causation_id"] for e in history]
    assert set(causes) <= set(sent)
    assert causes == sorted(causes)  # server ids ascend, and so does the stream


def test_tool_calls_start_once_when_running_and_finish_once_with_everything(stream):
    sent = [unwrap(e) for e in events("current/turn.json")]
    history = feed(stream, "current/turn.json")
    starts = of_type(history, "execution.tool_start")
    finishes = of_type(history, "execution.tool_finish")
    assert [s["payload"]["tool"] for s in starts] == ["bash", "read"]
    assert [f["payload"]["callID"] for f in finishes] == [s["payload"]["callID"] for s in starts]
    # The pending update's input is {}: the start carries the running update's input.
    running = next(
        e["properties"]["part"]["state"]
        for e in sent
        if e["type"] == "message.part.updated"
        and e["properties"]["part"].get("state", {}).get("status") == "running"
    )
    assert starts[0]["payload"]["input"] == running["input"] != {}
    bash = finishes[0]["payload"]
    assert bash["status"] == "completed" and bash["input"] == running["input"]
    assert bash["metadata"]["exit"] == 1 and bash["output"].startswith("FAIL")
    assert bash["title"] == "Run the parser tests" and set(bash["time"]) == {"start", "end"}
    # The attachment by reference: its data: URL body is left out.
    assert bash["attachments"] == [
        {"mime": "text/plain", "filename": "parser-test.log", "url": None, "inline_bytes": 32}
    ]
    failed = finishes[1]["payload"]
    assert failed["status"] == "error" and failed["error"] == "File not found: src/parser.ts"


def test_messages_are_user_and_agent_turns_with_their_role(stream):
    history = feed(stream, "current/turn.json")
    user, assistant = of_type(history, "message.created")
    assert (user["actor"], user["payload"]["role"]) == ("user", "user")
    assert (assistant["actor"], assistant["payload"]["role"]) == ("agent", "assistant")
    completed = of_type(history, "message.completed")[0]
    assert completed["payload"]["messageID"] == assistant["payload"]["messageID"]
    assert completed["payload"]["tokens"]["output"] == 310
    prompt = of_type(history, "execution.text_snapshot")[0]
    assert prompt["actor"] == "user" and prompt["payload"]["role"] == "user"
    assert "don't touch the public API" in prompt["payload"]["text"]


def test_session_status_keeps_busy_retry_idle(stream):
    history = feed(stream, "current/turn.json")
    statuses = [e["payload"] for e in of_type(history, "lifecycle.session.status")]
    assert [s["status"] for s in statuses] == ["busy", "retry", "busy", "idle"]
    assert statuses[1]["attempt"] == 1 and statuses[1]["message"] == "Rate limited, retrying"


async def test_user_prompt_on_real_traffic_cancels_a_pending_learning_capture(stream):
    extractor = LearningExtractor(stream, capture_delay=60.0).attach()
    turn = events("current/turn.json")
    for event in turn:
        stream.bridge(event)
    session_id = turn[0]["properties"]["sessionID"]
    assert extractor.stats()["pending_captures"] == 1  # scheduled by session.idle
    # The user writes again: the server's user message is user activity.
    user = next(e for e in turn if e["type"] == "message.updated")
    again = json.loads(json.dumps(user).replace(user["properties"]["info"]["id"], "msg_next"))
    again["id"] = "evt_ffffffffffff0000000000000a"
    stream.bridge(again)
    assert extractor.stats()["pending_captures"] == 0
    assert session_id in extractor.transcripts
    await extractor.shutdown()


# -- permissions and questions ----------------------------------------------------------------


def test_permissions_and_questions_are_checkpoints_with_the_server_replies(stream):
    sent = [unwrap(e) for e in events("current/requests.json")]
    seen_pending: list[list[str]] = []
    for event in sent:
        stream.bridge(event)
        seen_pending.append(sorted(c.id for c in stream.pending_checkpoints))
    asked = [e for e in sent if e["type"].endswith("asked")]
    history = list(stream.get_event_history())
    requested = of_type(history, "checkpoint.requested")
    assert [r["payload"]["id"] for r in requested] == [a["properties"]["id"] for a in asked]
    for request, ask in zip(requested, asked):
        if ask["type"].startswith("permission"):
            assert request["payload"]["options"] == list(PERMISSION_REPLIES)
        else:
            labels = [o["label"] for o in ask["properties"]["questions"][0]["options"]]
            assert request["payload"]["options"] == labels
        assert request["stream_id"] == ask["properties"]["sessionID"]
    # Each request was pending right after it was asked.
    for index, event in enumerate(sent):
        if event["type"].endswith("asked"):
            assert event["properties"]["id"] in seen_pending[index]
    approved = of_type(history, "checkpoint.approved")
    rejected = of_type(history, "checkpoint.rejected")
    assert [a["payload"]["selected_option"] for a in approved] == [
        "once",
        "always",
        "once",
        "staging",
    ]
    assert [r["payload"]["reason"] for r in rejected] == ["reject", "rejected"]
    assert all(e["actor"] == "user" for e in approved + rejected)
    # The one never answered was pending until session.deleted dropped it.
    last_ask = asked[-1]["properties"]["id"]
    assert seen_pending[-2] == [last_ask] and seen_pending[-1] == []
    assert stream.stats()["bridge"]["open_requests"] == 0


def test_legacy_permissions_are_checkpoints_too(stream):
    history = feed(stream, "older/turn.json")
    requested = of_type(history, "checkpoint.requested")
    assert [r["payload"]["options"] for r in requested] == [list(PERMISSION_REPLIES)] * 2
    assert requested[0]["payload"]["decision_point"] == "Edit src/cli.ts"
    assert of_type(history, "checkpoint.approved")[0]["payload"]["selected_option"] == "always"
    assert of_type(history, "checkpoint.rejected")[0]["payload"]["reason"] == "reject"
    assert stream.pending_checkpoints == []


async def test_checkpoint_manager_follows_the_server_requests(stream):
    manager = CheckpointManager(stream)
    sent = events("current/requests.json")
    first = next(e for e in sent if e["type"] == "permission.asked")
    stream.bridge(sent[0])
    stream.bridge(first)
    pending = manager.get(first["properties"]["id"])
    assert pending is not None and manager.pending == 1 and not pending.done()
    for event in sent[2:]:
        stream.bridge(event)
    outcome = await pending.wait(timeout=5)
    assert outcome.approved and outcome.option == "once" and outcome.by == "user"
    # The last one was dropped with its session, not left pending in the manager.
    assert manager.pending == 0
    await manager.shutdown()
    assert of_type(list(stream.get_event_history()), "checkpoint.rejected")[-1]["actor"] == "user"


# -- the other parts, removals, early deltas ----------------------------------------------------


def test_other_part_types_and_removals(stream):
    history = feed(stream, "current/parts.json")
    assert types_and_actors(history) == [
        ("lifecycle.session.created", "system"),
        ("message.created", "user"),
        ("execution.file", "user"),
        ("execution.agent", "user"),
        ("message.created", "agent"),
        ("execution.subtask", "agent"),
        ("execution.snapshot", "agent"),
        ("files.patched", "agent"),
        ("execution.retry", "agent"),
        ("execution.compaction", "agent"),
        ("execution.part_delta", "system"),
        ("execution.text_delta", "agent"),
        ("execution.text_snapshot", "agent"),
        ("message.part.removed", "system"),
        ("message.removed", "system"),
    ]
    file_part = of_type(history, "execution.file")[0]["payload"]
    assert file_part["url"].startswith("file://") and file_part["source"]["path"] == "README.md"
    subtask = of_type(history, "execution.subtask")[0]["payload"]
    assert subtask["agent"] == "review" and subtask["prompt"].startswith("Review")
    assert of_type(history, "execution.compaction")[0]["payload"]["auto"] is True


def test_a_delta_before_its_part_is_kept_and_counted(stream):
    history = feed(stream, "current/parts.json")
    early = of_type(history, "execution.part_delta")[0]["payload"]
    later = of_type(history, "execution.text_delta")[0]["payload"]
    assert early["partID"] == later["partID"] and early["delta"] == "Looks good "
    assert early["field"] == "text"
    snapshot = of_type(history, "execution.text_snapshot")[-1]["payload"]
    assert early["delta"] + later["delta"] == snapshot["text"]
    assert stream.stats()["bridge"]["unknown_part_deltas"] == 1


def test_older_deltas_ride_in_part_updates(stream):
    history = feed(stream, "older/turn.json")
    deltas = of_type(history, "execution.text_delta")
    assert [d["payload"]["delta"] for d in deltas] == ["Adding ", "the flag ", "now."]
    assert (
        of_type(history, "execution.text_snapshot")[-1]["payload"]["text"] == "Adding the flag now."
    )
    assert all("causation_id" not in e for e in history)  # older servers send no event id
    start = of_type(history, "execution.tool_start")[0]["payload"]
    finish = of_type(history, "execution.tool_finish")[0]["payload"]
    assert start["input"] == finish["input"] and start["input"]["newString"] == "args, verbose"
    assert "diff" in finish["metadata"]
    # message.updated of older servers names the session in info only.
    assert [e["actor"] for e in of_type(history, "message.created")] == ["user", "agent"]


# -- sessions, unknown types, disposal ---------------------------------------------------------


def test_session_events_todos_commands_and_unknown_types(stream):
    history = feed(stream, "current/session.json")
    session_id = unwrap(events("current/session.json")[0])["properties"]["sessionID"]
    assert types_and_actors(history) == [
        ("lifecycle.session.created", "system"),
        ("lifecycle.session.updated", "system"),
        ("files.diff", "system"),
        ("execution.todos", "system"),
        ("execution.command", "user"),
        ("lifecycle.session.compacted", "system"),
        ("lifecycle.session.error", "system"),
        ("lifecycle.session.error", "system"),
        ("files.changed", "system"),
        ("opencode.file.watcher.updated", "system"),
        ("opencode.installation.update-available", "system"),
        ("opencode.vcs.branch.updated", "system"),
        ("opencode.lsp.updated", "system"),
        ("lifecycle.session.deleted", "system"),
        ("lifecycle.session.created", "system"),
        ("lifecycle.session.status", "system"),
        ("lifecycle.instance.disposed", "system"),
        ("session.end", "system"),
    ]
    updated = of_type(history, "lifecycle.session.updated")[0]["payload"]
    assert updated["summary"] == {"additions": 1, "deletions": 0, "files": 1, "diffs_omitted": 1}
    diff = of_type(history, "files.diff")[0]["payload"]
    assert diff["files"] == [
        {"file": "src/cli.ts", "additions": 1, "deletions": 0, "status": "modified"}
    ]
    assert of_type(history, "execution.todos")[0]["payload"]["todos"][1]["status"] == "in_progress"
    errors = of_type(history, "lifecycle.session.error")
    assert [e["stream_id"] for e in errors] == [session_id, BRIDGE_STREAM]
    assert errors[1]["payload"]["error"]["name"] == "ProviderAuthError"
    unknown = of_type(history, "opencode.file.watcher.updated")[0]["payload"]
    assert unknown == {"file": "/home/dev/shop/src/cli.ts", "event": "change"}
    assert stream.stats()["bridge"]["unknown_types"] == 4


def test_a_disposed_instance_ends_the_sessions_of_its_directory(stream):
    history = feed(stream, "current/session.json")
    open_session = of_type(history, "lifecycle.session.created")[-1]["stream_id"]
    disposed = of_type(history, "lifecycle.instance.disposed")[0]["payload"]
    assert disposed == {"directory": "/home/dev/shop", "sessions": [open_session]}
    assert of_type(history, "session.end")[0]["stream_id"] == open_session
    stats = stream.stats()
    assert stats["sessions"] == stats["bridge"]["sessions"] == 0


def test_global_frames_directories_disposal_and_repeats(stream):
    history = feed(stream, "current/global.json")
    assert types_and_actors(history) == [
        ("lifecycle.session.created", "system"),
        ("lifecycle.session.status", "system"),
        ("lifecycle.session.created", "system"),
        ("lifecycle.instance.disposed", "system"),
        ("session.end", "system"),
        ("plugin.shutdown", "system"),
    ]
    shop, blog = (e["stream_id"] for e in of_type(history, "lifecycle.session.created"))
    # Disposing the blog's instance ends only the blog's session.
    assert of_type(history, "lifecycle.instance.disposed")[0]["payload"]["sessions"] == [blog]
    assert of_type(history, "session.end")[0]["stream_id"] == blog
    stats = stream.stats()["bridge"]
    # The sync repeat of session.created (same id as the bus event) is skipped.
    assert (stats["sync_repeats"], stats["transport"], stats["duplicates"]) == (1, 2, 0)
    # global.disposed ended every session, the shop's too.
    assert stats["sessions"] == 0 and shop


def test_sync_payloads_without_a_known_id_are_skipped(stream):
    frame = unwrap(events("current/global.json")[2])
    frame["id"] = "evt_000000000001aaaaaaaaaaaaaa"
    assert stream.bridge({"directory": "/x", "payload": frame}) is None
    assert stream.stats()["bridge"]["sync_repeats"] == 1 and len(stream.get_event_history()) == 0


def test_older_session_events_leave_whole_files_out(stream):
    sent = events("older/session.json")
    # Make the Session's whole-file diffs far larger than max_event_bytes (1 MiB).
    for event in sent:
        for diff in event["properties"].get("info", {}).get("summary", {}).get("diffs", []):
            diff["before"] *= 400
            diff["after"] *= 400
        for diff in event["properties"].get("diff", []):
            diff["before"] *= 400
    big = len(json.dumps(sent[1]))
    assert big > stream.max_event_bytes
    for event in sent:
        stream.bridge(event)
    history = list(stream.get_event_history())
    assert [e["type"] for e in history] == [
        "lifecycle.session.created",
        "lifecycle.session.updated",
        "files.diff",
        "execution.todos",
        "execution.command",
        "lifecycle.session.error",
        "lifecycle.session.deleted",
        "lifecycle.instance.disposed",
    ]
    for event in history:
        assert len(json.dumps(event)) < 4096, event["type"]
    assert (
        of_type(history, "lifecycle.session.deleted")[0]["payload"]["summary"]["diffs_omitted"] == 1
    )
    assert stream.stats()["bridge"]["bad_input"] == 0 and stream.stats()["sessions"] == 0


def test_older_global_frames(stream):
    history = feed(stream, "older/global.json")
    assert [e["type"] for e in history] == [
        "lifecycle.session.created",
        "lifecycle.session.idle",
        "lifecycle.instance.disposed",
        "session.end",
    ]


@pytest.mark.parametrize("name", NAMES)
def test_every_fixture_type_has_a_mapping(name):
    """The fixtures exercise mapped types, plus the few deliberately left to the catch-all."""
    catch_all = {"file.watcher.updated", "installation.update-available", "vcs.branch.updated"}
    catch_all.add("lsp.updated")
    for event in events(name):
        event_type = unwrap(event)["type"]
        assert event_type in MAPPED_TYPES or event_type in catch_all, event_type


# -- duplicates ---------------------------------------------------------------------------------


def test_a_replayed_stream_is_stored_once(stream):
    sent = events("current/turn.json")
    for event in sent[:20]:
        stream.bridge(event)
    for event in sent:  # a reconnect replays everything
        stream.bridge(event)
    assert types_and_actors(list(stream.get_event_history())) == CURRENT_TURN
    assert stream.stats()["bridge"]["duplicates"] == 20


def test_the_duplicate_window_is_bounded(tmp_path):
    bridge = OpenCodeBridge(dedup_window=3)
    ids = [f"evt_{i:012x}AAAAAAAAAAAAAA" for i in range(5)]
    assert bridge.remember_event_ids(ids) == 5
    assert bridge.stats()["dedup_window"] == 3
    with DurableStream(tmp_path / "s.jsonl") as stream:
        stream._bridge = bridge  # a stream whose bridge has a tiny window
        old = {"id": ids[0], "type": "session.idle", "properties": {"sessionID": "ses_1"}}
        recent = {**old, "id": ids[4]}
        assert stream.bridge(old) is not None  # forgotten: stored again
        assert stream.bridge(recent) is None
    assert DEFAULT_DEDUP_WINDOW >= 1000


def test_map_sdk_event_is_a_preview(stream):
    sent = events("current/turn.json")
    preview = stream.map_sdk_event(sent[0])
    assert [e["type"] for e in preview] == ["lifecycle.session.created"]
    assert stream.map_sdk_event(sent[0]) == preview  # nothing remembered, not a duplicate
    assert len(stream.get_event_history()) == 0
    stored = stream.bridge(sent[0])
    assert stored is not None and stored["type"] == "lifecycle.session.created"
    assert stream.map_sdk_event(sent[0]) == []  # now it is a duplicate


# -- bad input ----------------------------------------------------------------------------------

BAD_INPUT = [
    ["session.created"],
    "not json at all",
    None,
    {"properties": {"sessionID": "ses_1"}},
    {"type": "", "properties": {}},
    {"type": 7, "properties": {}},
    {"type": "session.idle", "properties": "ses_1"},
    {"type": "session.idle", "properties": {}},
    {"type": "session.status", "properties": {"sessionID": "ses_1", "status": 3}},
    {"type": "message.updated", "properties": {"info": "msg_1"}},
    {"type": "message.part.updated", "properties": {"part": {"type": "text"}}},
    {"type": "message.part.updated", "properties": {"part": ["text"]}},
    {"type": "message.part.updated", "properties": {"part": {"sessionID": "s", "type": "tool"}}},
    {"type": "message.part.delta", "properties": {"sessionID": "ses_1", "partID": "p", "delta": 5}},
    {"type": "permission.asked", "properties": {"sessionID": "ses_1"}},
    {"type": "permission.replied", "properties": {"sessionID": "ses_1", "requestID": "per_1"}},
    {
        "type": "permission.replied",
        "properties": {"sessionID": "ses_1", "requestID": "per_1", "reply": "maybe"},
    },
    {"type": "question.asked", "properties": {"id": "que_1", "sessionID": "s", "questions": 1}},
    {"type": "session.diff", "properties": {"sessionID": "ses_1", "diff": "all of it"}},
    {"directory": "/x", "payload": "session.idle"},
    {"type": "opencode.custom", "properties": {"value": {1, 2}}},
    {"type": "opencode.custom", "properties": {"value": float("nan")}},
]


@pytest.mark.parametrize("bad", BAD_INPUT, ids=[str(i) for i in range(len(BAD_INPUT))])
def test_bad_input_is_counted_and_logged_never_raised(stream, bad, caplog):
    stream.bridge(events("current/turn.json")[0])
    before = [json.dumps(e, sort_keys=True) for e in stream.get_event_history()]
    with caplog.at_level(logging.WARNING, logger="opencode_addons.bridge"):
        assert stream.bridge(bad) is None
    assert stream.stats()["bridge"]["bad_input"] == 1
    assert "OpenCode event ignored" in caplog.text
    assert [json.dumps(e, sort_keys=True) for e in stream.get_event_history()] == before


def test_a_delta_for_an_unknown_part_is_kept_not_dropped(stream):
    delta = {
        "type": "message.part.delta",
        "properties": {
            "sessionID": "ses_1",
            "messageID": "msg_1",
            "partID": "prt_never_seen",
            "field": "text",
            "delta": "hello",
        },
    }
    stored = stream.bridge(delta)
    assert stored is not None and stored["type"] == "execution.part_delta"
    assert stored["payload"]["delta"] == "hello" and stored["actor"] == "system"
    assert stream.stats()["bridge"]["unknown_part_deltas"] == 1


def test_bad_input_is_rate_limited_in_the_log(stream, caplog):
    with caplog.at_level(logging.WARNING, logger="opencode_addons.bridge"):
        for _ in range(200):
            stream.bridge({"properties": {}})
    assert stream.stats()["bridge"]["bad_input"] == 200
    assert 10 <= len(caplog.records) <= 25


def test_store_errors_propagate_and_nothing_is_remembered(tmp_path):
    stream = DurableStream(tmp_path / "s.jsonl")
    first = events("current/turn.json")[0]
    stream.shutdown()
    with pytest.raises(OSError):
        stream.bridge(first)
    assert stream.opencode_bridge.stats()["dedup_window"] == 0


# -- size bounds --------------------------------------------------------------------------------


def test_an_oversized_unknown_event_is_cut_and_marked(stream):
    huge = "x" * (stream.max_event_bytes + 10)
    stored = stream.bridge(
        {"id": "evt_1", "type": "lsp.updated", "properties": {"log": huge, "server": "ts"}}
    )
    assert stored is not None and stored["type"] == "opencode.lsp.updated"
    payload = stored["payload"]
    assert payload["server"] == "ts" and payload["log"].endswith("chars]")
    assert payload["_cut"]["paths"] == ["payload.log"]
    assert payload["_cut"]["original_bytes"] > stream.max_event_bytes
    assert stream.stats()["bridge"]["cut_events"] == 1


def test_an_oversized_tool_output_is_cut_in_place(stream):
    part = {
        "id": "prt_1",
        "sessionID": "ses_1",
        "messageID": "msg_1",
        "type": "tool",
        "callID": "c1",
        "tool": "bash",
        "state": {
            "status": "completed",
            "input": {"command": "cat big"},
            "output": "y" * (2 * stream.max_event_bytes),
            "title": "cat",
            "metadata": {"output": "y" * 100_000, "exit": 0},
            "time": {"start": 1, "end": 2},
        },
    }
    stream.bridge({"type": "message.part.updated", "properties": {"part": part}})
    start, finish = list(stream.get_event_history())
    assert start["type"] == "execution.tool_start"
    payload = finish["payload"]
    assert payload["metadata"]["exit"] == 0 and payload["input"] == {"command": "cat big"}
    assert "payload.output" in payload["_cut"]["paths"]
    # Metadata strings are capped on their own (an edit's metadata holds whole files).
    assert len(payload["metadata"]["output"]) < 9000


@pytest.mark.parametrize(
    "payload",
    [
        {"items": ["z" * 50] * 50_000},
        {"nested": {"deep": [{"k": "v" * 10} for _ in range(30_000)]}},
        {"text": "é" * 700_000},
    ],
)
def test_fit_event_always_fits(payload):
    limit = 64 * 1024
    fitted = fit_event({"type": "t", "stream_id": "s", "payload": payload}, limit)
    assert len(json.dumps(fitted, ensure_ascii=False).encode()) <= limit
    assert fitted["payload"]["_cut"]["original_bytes"] > limit


def test_fit_event_leaves_a_small_event_alone():
    event = {"type": "t", "stream_id": "s", "payload": {"a": 1}}
    assert fit_event(event, 4096) == event


# -- memory bounds ------------------------------------------------------------------------------


def test_session_memory_is_dropped_with_the_session(stream):
    feed(stream, "current/turn.json")
    assert stream.stats()["bridge"]["sessions"] == 1
    created = events("current/turn.json")[0]["properties"]
    session_id = created["sessionID"]
    stream.bridge({"type": "session.deleted", "properties": created})
    assert stream.stats()["bridge"]["sessions"] == 0
    # A late event of the deleted session does not bring its memory back.
    stream.bridge({"type": "session.idle", "properties": {"sessionID": session_id}})
    assert stream.stats()["bridge"]["sessions"] == 0


def test_deleted_sessions_are_remembered_up_to_their_limit(stream, monkeypatch):
    import opencode_addons.bridge as bridge_module

    monkeypatch.setattr(bridge_module, "MAX_ENDED_SESSIONS", 2)
    for index in range(4):
        properties = {"sessionID": f"ses_{index}"}
        stream.bridge({"type": "session.idle", "properties": properties})
        stream.bridge({"type": "session.deleted", "properties": {"info": {"id": f"ses_{index}"}}})
        assert stream.opencode_bridge.stats()["ended_sessions"] == min(index + 1, 2)


def test_per_session_part_memory_is_bounded(stream, monkeypatch):
    import opencode_addons.bridge as bridge_module

    monkeypatch.setattr(bridge_module, "MAX_PARTS_PER_SESSION", 10)
    for index in range(50):
        part = {
            "id": f"prt_{index}",
            "sessionID": "ses_1",
            "messageID": "msg_1",
            "type": "text",
            "text": "",
            "time": {"start": index},
        }
        stream.bridge({"type": "message.part.updated", "properties": {"part": part}})
    assert len(stream.opencode_bridge._sessions["ses_1"].parts) == 10


def test_bridge_rejects_bad_settings():
    with pytest.raises(ValueError, match="dedup_window"):
        OpenCodeBridge(dedup_window=-1)
    with pytest.raises(ValueError, match="request_timeout"):
        OpenCodeBridge(request_timeout=0)


def test_map_rejects_a_non_mapping(stream):
    with pytest.raises(TypeError, match="mapping"):
        stream.map_sdk_event(["session.created"])  # type: ignore[arg-type]


async def test_server_checkpoints_expire_after_the_request_timeout(tmp_path):
    with DurableStream(tmp_path / "s.jsonl") as stream:
        stream._bridge = OpenCodeBridge(request_timeout=0.05)
        asked = next(e for e in events("current/requests.json") if e["type"] == "permission.asked")
        requested = stream.bridge(asked)
        assert requested is not None
        assert requested["payload"]["expires_at"] - requested["payload"]["requested_at"] == 50
        await asyncio.sleep(0.2)  # past the expiry: the stream's timer rejects it
        stream.expire_checkpoints()
        assert stream.pending_checkpoints == []
        rejected = stream.query(type="checkpoint.rejected")
        assert [r["payload"]["reason"] for r in rejected] == ["timeout"]


async def test_checkpoint_manager_shutdown_leaves_server_requests_pending(stream):
    manager = CheckpointManager(stream)
    sent = events("current/requests.json")
    asked = next(e for e in sent if e["type"] == "permission.asked")
    stream.bridge(sent[0])
    stream.bridge(asked)
    pending = manager.get(asked["properties"]["id"])
    assert pending is not None
    await manager.shutdown()
    # Only the server decides: nothing was rejected on its behalf, the stream still waits.
    assert stream.query(type="checkpoint.rejected") == []
    assert [c.id for c in stream.pending_checkpoints] == [asked["properties"]["id"]]
    assert pending.done() and manager.stats()["dropped"] == 1


def test_a_replay_still_teaches_the_bridge_what_it_forgot(tmp_path):
    """After a restart the bridge has forgotten the assistant message; the server's replay of
    it is not stored again, yet the parts that follow are the agent's."""
    sent = events("current/turn.json")
    assistant = next(
        i
        for i, e in enumerate(sent)
        if e["type"] == "message.updated" and e["properties"]["info"]["role"] == "assistant"
    )
    with DurableStream(tmp_path / "s.jsonl") as stream:
        for event in sent[: assistant + 1]:
            stream.bridge(event)
    with DurableStream(tmp_path / "s.jsonl") as stream:  # the recorder restarted
        assert seed_duplicate_window(stream) == assistant + 1
        for event in sent:
            stream.bridge(event)
        history = list(stream.get_event_history())
        assert stream.stats()["bridge"]["duplicates"] == assistant + 1
    assert types_and_actors(history) == CURRENT_TURN


def test_a_session_ended_by_a_disposed_instance_can_come_back(stream):
    """OpenCode keeps sessions across instance reloads: after server.instance.disposed the same
    session's parts are still mapped by their type."""
    turn = events("current/turn.json")
    session_id = turn[0]["properties"]["sessionID"]
    for event in turn[:5]:
        stream.bridge(event)
    disposed = {"directory": "/home/dev/shop"}
    stream.bridge({"type": "server.instance.disposed", "properties": disposed})
    assert session_id not in stream.opencode_bridge.sessions()
    for event in turn[5:]:
        stream.bridge(event)
    history = list(stream.get_event_history())
    assert of_type(history, "execution.text_delta") and not of_type(history, "execution.part_delta")
    assert session_id in stream.opencode_bridge.sessions()


def test_a_tool_call_running_across_a_restart_starts_once(tmp_path):
    # The stream reopened between the call's running and completed updates rebuilds the
    # bridge's memory of its tool calls from the history: no second tool_start.
    path = tmp_path / "stream.jsonl"
    sent = events("current/turn.json")
    first_running = next(
        index
        for index, event in enumerate(sent)
        if unwrap(event)["type"] == "message.part.updated"
        and unwrap(event)["properties"]["part"].get("state", {}).get("status") == "running"
    )
    with DurableStream(path) as before:
        for event in sent[: first_running + 1]:
            before.bridge(event)
        assert len(of_type(list(before.get_event_history()), "execution.tool_start")) == 1
    with DurableStream(path) as after:
        for event in sent[first_running + 1 :]:
            after.bridge(event)
        history = list(after.get_event_history())
    starts = of_type(history, "execution.tool_start")
    finishes = of_type(history, "execution.tool_finish")
    assert [s["payload"]["tool"] for s in starts] == ["bash", "read"]
    assert [f["payload"]["callID"] for f in finishes] == [s["payload"]["callID"] for s in starts]


def test_replayed_tool_events_follow_the_session_ends_among_them():
    def tool(event_type: str, session: str, call: str) -> dict:
        return {"type": event_type, "payload": {"sessionID": session, "callID": call}}

    bridge = OpenCodeBridge()
    bridge.replay_tool_events(
        [
            tool("execution.tool_start", "s1", "c1"),
            tool("execution.tool_start", "s2", "c2"),
            {"type": "lifecycle.session.deleted", "stream_id": "s1", "payload": {}},
            tool("execution.tool_finish", "s2", "c2"),
        ]
    )
    assert bridge.sessions() == {"s2"}
    bridge.replay_tool_events([{"type": "plugin.shutdown", "payload": {}}])
    assert bridge.sessions() == set()
    bridge.replay_tool_events([tool("execution.tool_start", "s3", "c3")])
    assert bridge.sessions() == {"s3"}


def test_the_tool_call_replay_reads_only_the_newest_tool_events(tmp_path, monkeypatch):
    # The replay is bounded (TOOL_REPLAY_EVENTS): a call older than the newest few tool events
    # is not remembered, whatever the history holds.
    import opencode_addons.durable_stream as durable_stream

    monkeypatch.setattr(durable_stream, "TOOL_REPLAY_EVENTS", 2)
    path = tmp_path / "stream.jsonl"
    with DurableStream(path) as before:
        for n in range(1, 5):
            before.append(
                {
                    "type": "execution.tool_start",
                    "stream_id": f"s{n}",
                    "payload": {"sessionID": f"s{n}", "callID": f"c{n}"},
                }
            )
    with DurableStream(path) as after:
        assert after.opencode_bridge.sessions() == set()  # nothing replayed on opening
        after.map_sdk_event({"type": "server.connected", "properties": {}})
        assert after.opencode_bridge.sessions() == {"s3", "s4"}
