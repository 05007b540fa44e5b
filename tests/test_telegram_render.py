"""Rendering is where injection and length bugs would live, so it is checked against the
fake server's HTML parser (the same rules Telegram applies) for every hostile field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from loopgate_lc.fake_telegram import parse_html
from loopgate_lc.schema import RequestKind, Status
from loopgate_lc.telegram_render import (
    CUT_MARKER,
    MESSAGE_LIMIT,
    already_decided_text,
    clip,
    decided_by_display,
    escape,
    escape_clip,
    keyboard_for,
    render_edit_prompt,
    render_reject_prompt,
    render_request,
    render_resolved,
    text_length,
    truncate_html,
    utc_hhmm,
    visible_length,
)
from tests.notifiers._records import make_record, resolved

HOSTILE = [
    "<b>bold</b>",
    "</pre></code><script>alert(1)</script>",
    "&amp; &lt; & < > &#0; &nbsp;",
    "*bold* _italic_ [link](http://evil.example) `code` ~strike~ ||spoiler||",
    '<a href="javascript:alert(1)">click</a>',
    "\"double\" 'single' &#x27;",
    "<tg-spoiler>x</tg-spoiler><span class='tg-spoiler'>",
    "right-to-left \u202e override, emoji \U0001f680, zero\u200bwidth",
]


def _plain(source: str) -> str:
    """What a person sees; raises if Telegram would reject the HTML."""
    return parse_html(source)


# --- primitives ----------------------------------------------------------------------------


def test_escape_neutralises_markup() -> None:
    assert escape('<b a="1">&\'') == "&lt;b a=&quot;1&quot;&gt;&amp;&#x27;"
    assert _plain(escape(HOSTILE[1])) == HOSTILE[1]


def test_text_length_counts_utf16_units() -> None:
    assert text_length("abc") == 3
    assert text_length("\U0001f680") == 2


def test_clip_shows_the_cut() -> None:
    assert clip("short", 10) == "short"
    cut = clip("x" * 50, 20)
    assert cut.endswith(CUT_MARKER)
    assert text_length(cut) <= 20
    assert text_length(clip("\U0001f680" * 20, 9)) <= 9


def test_truncate_html_keeps_entities_and_tags_whole() -> None:
    source = "<b>" + "&amp;" * 100 + "</b><pre>" + "a&lt;b" * 100 + "</pre>"
    for limit in range(12, 200, 7):
        cut = truncate_html(source, limit)
        assert text_length(_plain(cut)) == visible_length(cut) <= limit
        assert cut.endswith(CUT_MARKER)
        _plain(cut)  # parses: no broken entity, every tag closed


def test_truncate_html_leaves_fitting_text_alone() -> None:
    assert truncate_html("<i>ok</i>", 100) == "<i>ok</i>"


def test_escape_clip_counts_what_a_person_sees() -> None:
    """An escaped ``<`` is one character on screen, not the four of ``&lt;``: 100 of
    them cut to 30 show 30 - len(marker) of them, not 5."""
    cut = escape_clip("<" * 100, 30)
    assert text_length(_plain(cut)) <= 30
    assert _plain(cut) == "<" * (30 - len(CUT_MARKER)) + CUT_MARKER


def test_a_long_message_of_markup_characters_shows_the_full_budget() -> None:
    """A 19k-character message used to show 1,991 characters: the cut counted the HTML
    escapes, not the visible text."""
    record = make_record(message="<&>" * 6500, args=None)
    plain = _plain(render_request(record))
    assert visible_length(render_request(record)) <= MESSAGE_LIMIT
    assert plain.count("<&>") >= 950 and CUT_MARKER in plain


def test_utc_hhmm() -> None:
    assert utc_hhmm(datetime(2026, 1, 2, 12, 3, tzinfo=UTC)) == "12:03"
    assert utc_hhmm(datetime(2026, 1, 2, 12, 3)) == "12:03"
    assert utc_hhmm(None) == "--:--"


@pytest.mark.parametrize(
    ("actor", "shown"),
    [
        ("telegram:42 (@alice)", "@alice"),
        ("telegram:42", "user 42"),
        ("api:key1", "api:key1"),
        (None, None),
    ],
)
def test_decided_by_display(actor: str | None, shown: str | None) -> None:
    assert decided_by_display(actor) == shown


def test_already_decided_text() -> None:
    at = datetime(2026, 1, 2, 12, 3, tzinfo=UTC)
    assert already_decided_text("approved", "telegram:1 (@x)", at) == (
        "already approved by @x at 12:03 UTC"
    )
    assert already_decided_text(Status.TIMEOUT, None, at) == "already timed out at 12:03 UTC"
    assert already_decided_text("weird", "someone", None) == "already weird by someone"


# --- request messages ----------------------------------------------------------------------


def test_request_message_shows_everything_a_person_needs() -> None:
    record = make_record(metadata={"ticket": "OPS-1", "count": 3})
    text = render_request(record)
    plain = _plain(text)
    for expected in (
        "Approval needed",
        "Delete a file",
        "delete_file",
        '"path": "/tmp/report.txt"',
        "irreversible",
        "42%",
        "irreversible tools need a person",
        "ticket: OPS-1",
        "count: 3",
        "2026-01-02 04:04 UTC",
        "req-1",
        "sess-1",
    ):
        assert expected in plain
    assert "<pre>" in text  # arguments as preformatted JSON


@pytest.mark.parametrize("hostile", HOSTILE)
def test_every_field_is_escaped(hostile: str) -> None:
    record = make_record(
        request_id=f"id {hostile}",
        message=f"message {hostile}",
        name=f"tool {hostile}",
        args={f"key {hostile}": f"value {hostile}", "nested": [hostile]},
        reason=f"reason {hostile}",
        policy=f"policy {hostile}",
        metadata={f"meta {hostile}": f"data {hostile}", "obj": {"k": hostile}},
        options=[f"option {hostile}", "Yes"],
    )
    plain = _plain(render_request(record))  # Telegram would accept it...
    for shown in (
        f"message {hostile}",
        f"tool {hostile}",
        f"reason {hostile}",
        f"policy {hostile}",
        f"option {hostile}",
        f"meta {hostile}: data {hostile}",
    ):
        assert shown in plain  # ...and shows the text as written, not as markup
    decided = resolved(record, Status.REJECTED, {"type": "reject", "message": f"why {hostile}"})
    decided = decided.model_copy(update={"decided_by": f"telegram:1 (@{hostile})"})
    assert f"why {hostile}" in _plain(render_resolved(decided))
    _plain(render_reject_prompt(record))
    _plain(render_edit_prompt(record))


def test_huge_fields_are_cut_to_the_limit_with_the_cut_shown() -> None:
    record = make_record(
        message="m<&>" * 5000,
        args={"blob": "<&>" * 10000},
        metadata={f"k{i}": "&" * 1000 for i in range(100)},
        options=["o" * 256] * 50,
    )
    for render in (render_request, render_resolved):
        text = render(record)
        assert visible_length(text) <= MESSAGE_LIMIT
        assert CUT_MARKER in text
        _plain(text)
    text = render_request(record)
    assert "Expires:" in _plain(text)  # short facts come before the long tail


def test_resolved_message_says_who_and_when() -> None:
    record = resolved(make_record(), Status.APPROVED, {"type": "approve"})
    plain = _plain(render_resolved(record))
    assert plain.startswith("✅ Approved by @alice at 03:10 UTC")
    assert "delete_file" in plain


def test_resolved_other_channel_and_timeout() -> None:
    api = resolved(make_record(), Status.APPROVED, {"type": "approve"}, by="api:ops", channel="api")
    assert _plain(render_resolved(api)).startswith("✅ Approved by api:ops via api at 03:10 UTC")
    timeout = resolved(
        make_record(),
        Status.TIMEOUT,
        {"type": "timeout", "outcome": "reject", "message": "no answer within 60s"},
        by=None,
        channel="timer",
    )
    plain = _plain(render_resolved(timeout))
    assert plain.startswith("⌛ Timed out via timer at 03:10 UTC")
    assert "Outcome: reject" in plain


def test_resolved_edit_shows_the_new_arguments() -> None:
    record = resolved(
        make_record(),
        Status.EDITED,
        {"type": "edit", "edited_action": {"name": "delete_file", "args": {"path": "/tmp/<x>"}}},
    )
    plain = _plain(render_resolved(record))
    assert "Approved with edits" in plain
    assert "Run with:" in plain and "/tmp/<x>" in plain


def test_input_kinds_ask_for_a_reply() -> None:
    record = make_record(kind=RequestKind.INPUT, message="Which branch?")
    plain = _plain(render_request(record))
    assert "Input needed" in plain and "Reply to this message" in plain


# --- keyboards -----------------------------------------------------------------------------


def _labels(record: Any) -> list[list[str]]:
    return [[b.label for b in row] for row in keyboard_for(record)]


def test_tool_approval_buttons() -> None:
    record = make_record()
    assert _labels(record) == [
        ["✅ Approve", "❌ Reject"],
        ["💬 Reject with reason", "✏️ Edit"],
    ]
    actions = [b.action for row in keyboard_for(record) for b in row]
    assert actions == [
        {"op": "decide", "decision": {"type": "approve"}},
        {"op": "decide", "decision": {"type": "reject"}},
        {"op": "prompt", "purpose": "reject"},
        {"op": "prompt", "purpose": "edit"},
    ]


def test_buttons_follow_allowed_decisions() -> None:
    assert _labels(make_record(allowed_decisions=["approve", "reject"])) == [
        ["✅ Approve", "❌ Reject"],
        ["💬 Reject with reason"],
    ]
    assert _labels(make_record(allowed_decisions=["approve"])) == [["✅ Approve"]]
    plain_approval = make_record(kind=RequestKind.APPROVAL, message="Go?")
    assert ["✏️ Edit"] not in _labels(plain_approval)


def test_choice_buttons_one_per_option() -> None:
    long_label = "Deploy " + "x" * 200
    record = make_record(
        kind=RequestKind.CHOICE,
        message="Where?",
        options=["Production", {"label": "Staging <b>", "approved": True}, long_label],
    )
    rows = keyboard_for(record)
    assert [b.action["decision"]["message"] for row in rows for b in row] == [
        "Production",
        "Staging <b>",
        long_label,
    ]
    assert rows[1][0].label == "Staging <b>"  # button text is plain text, not HTML
    assert text_length(rows[2][0].label) <= 60 and rows[2][0].label.endswith(CUT_MARKER)


@pytest.mark.parametrize("kind", [RequestKind.INPUT, RequestKind.FEEDBACK, RequestKind.ANNOTATION])
def test_free_text_kinds_have_no_buttons(kind: RequestKind) -> None:
    assert keyboard_for(make_record(kind=kind, message="?")) == []


def test_options_show_what_they_mean_for_the_asker() -> None:
    record = make_record(kind=RequestKind.APPROVAL, message="Deploy v2.1.0?",
                         options=["Deploy", "Cancel", {"label": "Review", "approved": True}])
    plain = _plain(render_request(record))
    assert "• Deploy (approves)" in plain
    assert "• Cancel (does not approve)" in plain  # the one fail-closed rule
    assert "• Review (approves)" in plain  # an explicit meaning wins


def test_a_payload_that_does_not_parse_still_shows_what_does() -> None:
    # a row edited by hand or written by another store: no type, an unknown risk level
    from pydantic import ValidationError

    from loopgate_lc.notifiers.console import render_request as console_request
    from loopgate_lc.stores.base import RequestRecord

    record = RequestRecord(id="odd-1", kind=RequestKind.TOOL_APPROVAL, payload={
        "name": "<b>rm</b>", "args": {"path": "/tmp/x"}, "risk_level": "catastrophic",
        "reason": "a & b"})
    with pytest.raises(ValidationError):
        record.request  # noqa: B018 - the strict view refuses it
    assert record.shown.name == "<b>rm</b>" and record.shown.risk_level is None
    shown = _plain(render_request(record))
    assert "Tool: <b>rm</b>" in shown and "a & b" in shown and "odd-1" in shown
    assert "catastrophic" not in shown
    assert "tool:       <b>rm</b>" in console_request(record)
    assert keyboard_for(record, grant_offers=[3600])  # buttons, but never a grant offer
    assert not any("allow" in b.label for row in keyboard_for(record, grant_offers=[3600])
                   for b in row)
