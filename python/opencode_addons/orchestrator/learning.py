"""LearningExtractor: turns agent outcomes, checkpoint decisions and session transcripts into
``learning.captured`` events (and memory-lane entries).

Event-derived learnings are captured at once. Transcript learnings are captured when a session
goes idle, ``capture_delay`` seconds later unless the user becomes active again in that session,
and finally when the session ends. Every per-session structure is bounded and dropped on the
session's terminal event; every pending capture is an owned timer cancelled on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from opencode_addons.background import running_loop
from opencode_addons.events import (
    AGENT_COMPLETED,
    AGENT_FAILED,
    CHECKPOINT_APPROVED,
    CHECKPOINT_REJECTED,
    LEARNING_CAPTURED,
    MESSAGE_COMPLETED,
    PLUGIN_SHUTDOWN_TYPES,
    RAW_SESSION_IDLE,
    SESSION_IDLE,
    SESSION_TERMINAL_TYPES,
    TEXT_DELTA,
    TEXT_SNAPSHOT,
    WILDCARD,
    Event,
    EventStream,
    Unsubscribe,
    first_str,
    is_mapping,
    payload_of,
    session_id_of,
)
from opencode_addons.memory_lane import MemoryLaneStore

log = logging.getLogger(__name__)

LEARNING_ACTOR = "learning"
LEARNING_COLLECTION = "learnings"
KINDS = ("correction", "failure", "success", "decision", "anti-pattern", "preference")
# Seconds after a session goes idle before its learnings are captured.
CAPTURE_DELAY = 2.0

# (kind, confidence) per event type, as in the reference plugin.
EVENT_RULES: Mapping[str, tuple[str, float]] = {
    AGENT_COMPLETED: ("decision", 0.7),
    AGENT_FAILED: ("anti-pattern", 0.8),
    CHECKPOINT_APPROVED: ("preference", 0.85),
    CHECKPOINT_REJECTED: ("anti-pattern", 0.8),
}
CORRECTION_CONFIDENCE = 0.9
FAILURE_CONFIDENCE = 0.8
SUCCESS_CONFIDENCE = 0.8

_CORRECTION = re.compile(
    r"^\s*no\b[\s,.!:;-]|\bactually\b|\bthat'?s\s+(?:wrong|not\s+right|incorrect|not\s+what)"
    r"|\binstead\b|\bdon'?t\b|\bdo\s+not\b|\bshould\s+have\b",
    re.IGNORECASE,
)
_FAILURE = re.compile(r"\b(?:error|errors|failed|failure|exception|traceback)\b", re.IGNORECASE)
# Exception class names such as ImportError or KeyboardInterruptException (case matters here).
_EXCEPTION_NAME = re.compile(r"\b[A-Z]\w*(?:Error|Exception)\b")
_SUCCESS = re.compile(
    r"\b(?:works|worked|working\s+now|perfect|thanks|thank\s+you|great)\b", re.IGNORECASE
)
_TRANSCRIPT_TYPES = frozenset({TEXT_SNAPSHOT, MESSAGE_COMPLETED, TEXT_DELTA})
_ASSISTANT_ROLES = frozenset({"assistant", "tool", "system"})
MAX_CONTENT_CHARS = 500


@dataclass
class Learning:
    """One thing worth remembering; ``created_at`` is epoch milliseconds."""

    kind: str
    content: str
    confidence: float
    session_id: Optional[str]
    source_event_id: Optional[str]
    created_at: int


def _now_ms() -> int:
    return int(time.time() * 1000)


def _clip(text: str, limit: int = MAX_CONTENT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _role_of(event: Mapping[str, Any]) -> Optional[str]:
    payload = payload_of(event)
    role = first_str(payload, ("role",))
    info = payload.get("info")
    if role is None and is_mapping(info):
        role = first_str(info, ("role",))
    if role is None and event.get("actor") == "user":
        role = "user"
    return role


def _describe_event(event: Mapping[str, Any]) -> str:
    """A one-line human summary of an agent or checkpoint event."""
    payload = payload_of(event)
    event_type = str(event.get("type", ""))
    subject = first_str(payload, ("agent", "agent_name", "agentName", "checkpoint_id", "id"))
    detail = first_str(
        payload, ("summary", "result", "reason", "error", "description", "intent", "question")
    )
    parts = [event_type.replace(".", " ")]
    if subject:
        parts.append(f"[{subject}]")
    if detail:
        parts.append(f": {detail}")
    return _clip(" ".join(parts).replace(" :", ":"))


# Words one of which a message must hold (folded) for the pattern beside them to match.
# Python's `re` tries every alternative at every position of a text: on 280-character messages
# `_CORRECTION` took about 27 us and `_FAILURE` with `_EXCEPTION_NAME` about 11 us (timeit), so
# the patterns run only on the messages that hold one of these words (`in` on the folded text
# costs well under a microsecond). Every way a pattern can match holds one of its words.
_CORRECTION_WORDS = ("actually", "instead", "don't", "dont", "should", "wrong", "incorrect")
_SUCCESS_WORDS = ("work", "perfect", "thank", "great")
_FAILURE_WORDS = ("error", "fail", "exception", "traceback")


def _folded(text: str) -> str:
    """``text`` folded at least as `re.IGNORECASE` folds: `casefold` does (the long s and the
    Kelvin sign to s and k, say) except for the dotless i, which IGNORECASE takes for an i."""
    return text.casefold().replace("\u0131", "i")


def _holds_any(folded: str, words: tuple[str, ...]) -> bool:
    return any(word in folded for word in words)


def _may_correct(folded: str) -> bool:
    """Whether `_CORRECTION` can match a text folded to ``folded``: "no" first, "actually",
    "instead", "don't"/"dont", "should have", "that's wrong"/"incorrect" hold a word of
    `_CORRECTION_WORDS`; "do not", "that's not right" and "that's not what" hold "not" and "do"
    or "that"."""
    return (
        folded.lstrip().startswith("no")
        or _holds_any(folded, _CORRECTION_WORDS)
        or ("not" in folded and ("do" in folded or "that" in folded))
    )


def _message_learning(message: Mapping[str, Any]) -> Optional[tuple[str, float]]:
    role = str(message.get("role") or "").lower()
    text = str(message.get("text") or message.get("content") or "")
    if not text.strip():
        return None
    if role == "user":
        folded = _folded(text)
        if _may_correct(folded) and _CORRECTION.search(text):
            return "correction", CORRECTION_CONFIDENCE
        if _holds_any(folded, _SUCCESS_WORDS) and _SUCCESS.search(text):
            return "success", SUCCESS_CONFIDENCE
        return None
    if (
        role in _ASSISTANT_ROLES
        and _holds_any(_folded(text), _FAILURE_WORDS)
        and (_FAILURE.search(text) or _EXCEPTION_NAME.search(text))
    ):
        return "failure", FAILURE_CONFIDENCE
    return None


@dataclass
class _Message:
    role: str
    text: str
    message_id: Optional[str]
    event_id: Optional[str]


class LearningExtractor:
    """Captures learnings from the event stream; see the module docstring."""

    name = "learning_extractor"

    @property
    def closed(self) -> bool:
        """True once ``shutdown()`` has run."""
        return self._closed

    def __init__(
        self,
        stream: EventStream,
        *,
        memory_lane: Optional[MemoryLaneStore] = None,
        capture_delay: float = CAPTURE_DELAY,
        min_confidence: float = 0.6,
        max_learnings: int = 10,
        max_messages_per_session: int = 200,
        max_sessions: int = 1000,
        max_message_chars: int = 8000,
    ) -> None:
        if capture_delay < 0 or max_learnings < 1 or max_messages_per_session < 1:
            raise ValueError("capture_delay >= 0, max_learnings >= 1, max_messages >= 1 required")
        self.stream = stream
        self.memory_lane = memory_lane
        self.capture_delay = capture_delay
        self.min_confidence = min_confidence
        self.max_learnings = max_learnings
        self.max_messages_per_session = max_messages_per_session
        self.max_sessions = max_sessions
        self.max_message_chars = max_message_chars
        self.pending_captures: dict[str, asyncio.TimerHandle] = {}
        # Least recently active session first, so the oldest is evicted past max_sessions.
        self.transcripts: OrderedDict[str, deque[_Message]] = OrderedDict()
        self._unsubscribe: Optional[Unsubscribe] = None
        self._closed = False
        self.learnings_captured = 0
        self.captures_run = 0
        self.errors = 0

    # -- classification ------------------------------------------------------------------------

    def classify_event(self, event: Mapping[str, Any]) -> Optional[Learning]:
        """The learning an agent/checkpoint event carries, or None for other events."""
        rule = EVENT_RULES.get(str(event.get("type", "")))
        if rule is None:
            return None
        kind, confidence = rule
        timestamp = event.get("timestamp")
        return Learning(
            kind=kind,
            content=_describe_event(event),
            confidence=confidence,
            session_id=session_id_of(event),
            source_event_id=event.get("id"),
            created_at=timestamp if isinstance(timestamp, int) else _now_ms(),
        )

    def classify_transcript(
        self, messages: Sequence[Mapping[str, Any]], session_id: Optional[str] = None
    ) -> list[Learning]:
        """Corrections, failures and successes in ``{role, text}`` messages.

        Keeps those at or above ``min_confidence`` and at most ``max_learnings`` of them, highest
        confidence first; equal confidences keep transcript order.
        """
        found = []
        for message in messages:
            match = _message_learning(message)
            if match is None or match[1] < self.min_confidence:
                continue
            text = str(message.get("text") or message.get("content") or "")
            found.append(
                Learning(
                    kind=match[0],
                    content=_clip(text),
                    confidence=match[1],
                    session_id=session_id,
                    source_event_id=message.get("event_id") or message.get("id"),
                    created_at=_now_ms(),
                )
            )
        found.sort(key=lambda learning: learning.confidence, reverse=True)
        return found[: self.max_learnings]

    # -- subscription --------------------------------------------------------------------------

    def attach(self) -> LearningExtractor:
        """Subscribe to the stream (once); returns self."""
        if self._closed:
            raise RuntimeError("LearningExtractor is shut down")
        if self._unsubscribe is None:
            self._unsubscribe = self.stream.subscribe(WILDCARD, self.handle_event)
        return self

    start = attach

    def handle_event(self, event: Event) -> None:
        """Subscriber entry point; never raises into the stream."""
        if self._closed or event.get("type") == LEARNING_CAPTURED:
            return
        try:
            self._dispatch(event)
        except Exception:
            self.errors += 1
            log.exception("learning extractor failed on %s", event.get("type"))

    def _dispatch(self, event: Event) -> None:
        event_type = str(event.get("type", ""))
        if event_type in PLUGIN_SHUTDOWN_TYPES:
            self.capture_all()
            return
        session_id = session_id_of(event)
        if event_type in SESSION_TERMINAL_TYPES:
            if session_id is not None:
                self.finish_session(session_id)
            return
        learning = self.classify_event(event)
        if learning is not None:
            self._emit([learning])
        if session_id is None:
            return
        role = _role_of(event)
        if role == "user":
            self._cancel_capture(session_id)
        if event_type in _TRANSCRIPT_TYPES:
            self._record_message(session_id, event, role)
        elif event_type in (SESSION_IDLE, RAW_SESSION_IDLE):
            self.schedule_capture(session_id)

    # -- transcripts ---------------------------------------------------------------------------

    def _record_message(self, session_id: str, event: Event, role: Optional[str]) -> None:
        payload = payload_of(event)
        text = first_str(payload, ("text", "content", "delta"))
        if text is None:
            return
        role = (role or "assistant").lower()
        message_id = first_str(payload, ("message_id", "messageID", "messageId"))
        transcript = self._transcript(session_id)
        last = transcript[-1] if transcript else None
        if message_id is not None and last is not None and last.message_id == message_id:
            # Same message again: deltas extend it, snapshots and completions replace it. A
            # message at its cap takes no more deltas (each would copy it whole to be cut).
            if event["type"] != TEXT_DELTA:
                last.text = text[: self.max_message_chars]
            elif len(last.text) < self.max_message_chars:
                last.text = (last.text + text)[: self.max_message_chars]
            return
        transcript.append(
            _Message(role, text[: self.max_message_chars], message_id, event.get("id"))
        )

    def _transcript(self, session_id: str) -> deque[_Message]:
        transcript = self.transcripts.get(session_id)
        if transcript is None:
            transcript = deque(maxlen=self.max_messages_per_session)
            self.transcripts[session_id] = transcript
            self._evict_sessions()
        else:
            self.transcripts.move_to_end(session_id)
        return transcript

    def _evict_sessions(self) -> None:
        while len(self.transcripts) > self.max_sessions:
            oldest, _ = self.transcripts.popitem(last=False)
            self._cancel_capture(oldest)
            log.debug("dropped transcript of inactive session %s", oldest)

    # -- captures ------------------------------------------------------------------------------

    def schedule_capture(self, session_id: str) -> None:
        """Capture ``session_id`` after ``capture_delay`` s (at once without a running loop)."""
        self._cancel_capture(session_id)
        loop = running_loop()
        if loop is None:
            self.capture(session_id)
            return
        self.pending_captures[session_id] = loop.call_later(
            self.capture_delay, self._run_scheduled_capture, session_id
        )

    def _run_scheduled_capture(self, session_id: str) -> None:
        self.pending_captures.pop(session_id, None)
        if self._closed:
            return
        try:
            self.capture(session_id)
        except Exception:
            self.errors += 1
            log.exception("scheduled learning capture failed for %s", session_id)

    def _cancel_capture(self, session_id: str) -> None:
        handle = self.pending_captures.pop(session_id, None)
        if handle is not None:
            handle.cancel()

    def capture(self, session_id: str) -> list[Learning]:
        """Extract and emit the learnings of the session's transcript so far, then clear it.

        Clearing means a later capture of the same session never re-emits the same messages.
        """
        transcript = self.transcripts.get(session_id)
        if not transcript:
            return []
        # Built field by field: `dataclasses.asdict` copies recursively, and took 3.8% of the
        # benchmark events' orchestration (py-spy), against 8.8% for the classification.
        messages = [
            {
                "role": message.role,
                "text": message.text,
                "message_id": message.message_id,
                "event_id": message.event_id,
            }
            for message in transcript
        ]
        transcript.clear()
        self.captures_run += 1
        learnings = self.classify_transcript(messages, session_id)
        self._emit(learnings)
        return learnings

    def finish_session(self, session_id: str) -> list[Learning]:
        """Final capture for an ended session, then drop all of its state."""
        self._cancel_capture(session_id)
        try:
            return self.capture(session_id)
        finally:
            self.transcripts.pop(session_id, None)

    def capture_all(self) -> None:
        """Final capture of every session (plugin shutdown), dropping all per-session state."""
        for session_id in list(self.transcripts):
            try:
                self.finish_session(session_id)
            except Exception:
                self.errors += 1
                log.exception("final learning capture failed for %s", session_id)
        for session_id in list(self.pending_captures):
            self._cancel_capture(session_id)

    def _emit(self, learnings: Sequence[Learning]) -> None:
        for learning in learnings:
            self.stream.append(
                {
                    "type": LEARNING_CAPTURED,
                    "stream_id": learning.session_id or LEARNING_ACTOR,
                    "actor": LEARNING_ACTOR,
                    "causation_id": learning.source_event_id,
                    "payload": {
                        "kind": learning.kind,
                        "content": learning.content,
                        "confidence": learning.confidence,
                        "source_event_id": learning.source_event_id,
                        "session_id": learning.session_id,
                    },
                }
            )
            self.learnings_captured += 1
            self._remember(learning)

    def _remember(self, learning: Learning) -> None:
        if self.memory_lane is None:
            return
        try:
            self.memory_lane.store(
                learning.content,
                collection=LEARNING_COLLECTION,
                tags=(learning.kind,),
                entities=(learning.session_id,) if learning.session_id else (),
                confidence=learning.confidence,
                metadata={
                    "session_id": learning.session_id,
                    "source_event_id": learning.source_event_id,
                    "kind": learning.kind,
                },
            )
        except Exception:
            # The event is already durable; a memory-lane failure must not lose the rest.
            self.errors += 1
            log.exception("could not store learning in the memory lane")

    # -- lifecycle -----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters and sizes, for health reports."""
        return {
            "pending_captures": len(self.pending_captures),
            "sessions": len(self.transcripts),
            "messages": sum(len(t) for t in self.transcripts.values()),
            "learnings_captured": self.learnings_captured,
            "captures_run": self.captures_run,
            "errors": self.errors,
            "attached": self._unsubscribe is not None,
            "closed": self._closed,
        }

    async def shutdown(self) -> None:
        """Cancel pending captures, drop transcripts, unsubscribe; idempotent."""
        self._closed = True
        for handle in self.pending_captures.values():
            handle.cancel()
        self.pending_captures.clear()
        self.transcripts.clear()
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
