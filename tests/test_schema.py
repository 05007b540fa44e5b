"""What a plain-string option means: one whole-label rule for every channel."""

from __future__ import annotations

import pytest

from loopgate_lc import AFFIRMATIVE_OPTIONS, Option, option_approves


@pytest.mark.parametrize("label", ["Yes", "yes", "  Deploy  Immediately ", "Approve", "OK!",
                                   "Proceed", "Execute", "Go ahead", "deploy"])
def test_whole_affirmative_labels_approve(label: str) -> None:
    assert option_approves(label)
    assert Option.parse(label).approved


@pytest.mark.parametrize("label", [
    "Deploy to Staging First", "Run rm -rf", "Run rm -rf /", "Yes, but only staging",
    "No", "Cancel", "Review", "Staging", "Production", "Investigate", "Auto-scale",
    "Wait for Better Price", "Don't deploy", "Approve later", "", "Deploy?"])
def test_anything_else_is_not_an_approval(label: str) -> None:
    assert not option_approves(label)


def test_object_options_state_their_meaning() -> None:
    assert Option.parse({"label": "Staging", "approved": True}).approved
    assert not Option.parse({"label": "Yes", "approved": False}).approved
    assert Option.parse({"label": "Ship it"}).approved  # no meaning given: the rule decides


def test_the_documented_list_is_the_rule() -> None:
    assert all(option_approves(phrase.title()) for phrase in AFFIRMATIVE_OPTIONS)
