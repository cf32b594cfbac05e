"""The learning extractor's word prefilters never change what a message yields.

`_message_learning` runs its patterns only on messages that hold one of their words (casefolded);
this checks it against the patterns run on every message, on texts built from the patterns' own
words, their near misses and the characters `re.IGNORECASE` folds specially.
"""

from __future__ import annotations

from typing import Optional

from hypothesis import given, settings
from hypothesis import strategies as st
from opencode_addons.orchestrator import learning
from opencode_addons.orchestrator.learning import _message_learning

FRAGMENTS = [
    "no", "No,", " no ", "nope", "actually", "ACTUALLY", "that's", "thats", "That's", " wrong",
    "not right", "incorrect", "not what", "instead", "don't", "dont", "DON'T", "do not",
    "do\tnot", "should have", "Should\nhave", "works", "worked", "working now", "perfect",
    "thanks", "thank you", "great", "error", "Errors", "failed", "FAILURE", "exception",
    "Traceback", "ValueError", "KeyboardInterruptException", "\u0131nstead", "\u017fhould have",
    "wor\u212a", "\u0130", " ", "\n", ",", ".", "x", "the",
]  # fmt: skip
ROLES = ["user", "User", "assistant", "tool", "system", "", "other"]


def reference(role: str, text: str) -> Optional[tuple[str, float]]:
    """What the patterns alone say (the extractor before its prefilters)."""
    role = role.lower()
    if not text.strip():
        return None
    if role == "user":
        if learning._CORRECTION.search(text):
            return "correction", learning.CORRECTION_CONFIDENCE
        if learning._SUCCESS.search(text):
            return "success", learning.SUCCESS_CONFIDENCE
        return None
    if role in learning._ASSISTANT_ROLES and (
        learning._FAILURE.search(text) or learning._EXCEPTION_NAME.search(text)
    ):
        return "failure", learning.FAILURE_CONFIDENCE
    return None


@settings(max_examples=3000, deadline=None)
@given(
    st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=10),
    st.sampled_from(ROLES),
)
def test_prefilters_never_change_what_a_message_yields(parts: list[str], role: str) -> None:
    text = "".join(parts)
    assert _message_learning({"role": role, "text": text}) == reference(role, text)


def test_letters_that_ignorecase_folds_specially_still_match() -> None:
    # The dotless i is not casefolded to i, but IGNORECASE matches it to one.
    for text in ("\u0131nstead", "\u017fhould have", "that's wrong", "  No, not that"):
        assert _message_learning({"role": "user", "text": text}) == (
            "correction",
            learning.CORRECTION_CONFIDENCE,
        ), text
    assert _message_learning({"role": "user", "text": "wor\u212as now"}) == (
        "success",
        learning.SUCCESS_CONFIDENCE,
    )
    failure = ("failure", learning.FAILURE_CONFIDENCE)
    assert _message_learning({"role": "tool", "text": "raised KeyError"}) == failure
    assert _message_learning({"role": "assistant", "text": "all good"}) is None
