"""What a Telegram message about an approval says, and which buttons it carries.

Pure on purpose (no I/O, no python-telegram-bot): everything an agent or a user wrote —
messages, tool names, arguments, metadata, reasons, option labels — reaches Telegram only
through :func:`escape`, and every text is cut to Telegram's limits here, so the rules
that keep a hostile string from breaking a message (or faking one) live in one place that
is easy to test exhaustively.

Lengths are counted in UTF-16 code units, the strictest way Telegram might count, so a
rendered text never exceeds 4,096 however Telegram measures it.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from loopgate_lc.grants import grant_refusal
from loopgate_lc.quorum import tally_text
from loopgate_lc.schema import ApprovalRequest, RequestKind, Status
from loopgate_lc.stores.base import RequestRecord

__all__ = [
    "CALLBACK_ANSWER_LIMIT",
    "CUT_MARKER",
    "MESSAGE_LIMIT",
    "Button",
    "already_decided_text",
    "clip",
    "decided_by_display",
    "escape",
    "escape_clip",
    "grant_button_label",
    "keyboard_for",
    "outcome_label",
    "render_edit_prompt",
    "render_reject_prompt",
    "render_request",
    "render_resolved",
    "text_length",
    "truncate_html",
    "utc_hhmm",
    "visible_length",
]

MESSAGE_LIMIT = 4096
"""Telegram's limit on one message's text."""

CALLBACK_ANSWER_LIMIT = 200
"""Telegram's limit on the text shown when a button is tapped."""

CUT_MARKER = "… (cut)"
"""Appended wherever text was shortened, so a person knows they are not seeing it all."""

BUTTON_LABEL_LIMIT = 60
"""Longer button labels are cut for display; the full label stays in the message body."""

INPUT_KINDS = frozenset({RequestKind.INPUT, RequestKind.FEEDBACK, RequestKind.ANNOTATION})
"""Kinds answered with free text (a ForceReply), not buttons."""

# Per-field budgets (of escaped text) so one huge field cannot push the rest out.
_TEXT_BUDGET = 3000
_ARGS_BUDGET = 1500
_VALUE_BUDGET = 600
_KEY_BUDGET = 200
_METADATA_ITEMS = 20

_TITLES = {
    RequestKind.TOOL_APPROVAL: "🔔 <b>Approval needed</b>",
    RequestKind.APPROVAL: "🔔 <b>Approval needed</b>",
    RequestKind.CONFIRMATION: "🔔 <b>Confirmation needed</b>",
    RequestKind.CHOICE: "🔘 <b>Choose an option</b>",
    RequestKind.INPUT: "✍️ <b>Input needed</b>",
    RequestKind.FEEDBACK: "✍️ <b>Feedback requested</b>",
    RequestKind.ANNOTATION: "✍️ <b>Annotation requested</b>",
}

_OUTCOMES = {
    Status.APPROVED: ("✅", "Approved"),
    Status.REJECTED: ("❌", "Rejected"),
    Status.EDITED: ("✏️", "Approved with edits"),
    Status.ANSWERED: ("💬", "Answered"),
    Status.TIMEOUT: ("⌛", "Timed out"),
    Status.CANCELLED: ("🚫", "Cancelled"),
    Status.FAILED: ("⚠️", "Failed"),
    Status.PENDING: ("⏳", "Pending"),
}

_ALREADY = {
    Status.APPROVED: "approved",
    Status.REJECTED: "rejected",
    Status.EDITED: "approved with edits",
    Status.ANSWERED: "answered",
    Status.TIMEOUT: "timed out",
    Status.CANCELLED: "cancelled",
    Status.FAILED: "failed",
    Status.PENDING: "pending",
}


# --- text primitives -------------------------------------------------------------------


def escape(value: object) -> str:
    """Escape text from agents and users for ``parse_mode="HTML"``.

    ``&``, ``<``, ``>`` and both quotes become entities Telegram understands, so no
    string can open a tag, close ours, or forge a link. Markdown characters need no
    escaping: messages are sent as HTML, where ``*`` and ``_`` are plain text.
    """
    return html.escape(str(value), quote=True)


def text_length(text: str) -> int:
    """Length in UTF-16 code units (an emoji outside the BMP counts two)."""
    return len(text.encode("utf-16-le")) // 2


def clip(text: str, limit: int, marker: str = CUT_MARKER) -> str:
    """Cut plain (unescaped) text to ``limit`` UTF-16 units, showing the cut."""
    if text_length(text) <= limit:
        return text
    room = max(0, limit - text_length(marker))
    out: list[str] = []
    used = 0
    for ch in text:
        size = text_length(ch)
        if used + size > room:
            break
        out.append(ch)
        used += size
    return "".join(out).rstrip() + marker


_TOKEN = re.compile(r"<[^<>]*>|&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);|.", re.S)
_TAG_NAME = re.compile(r"</?\s*([A-Za-z][A-Za-z0-9-]*)")


def visible_length(source: str) -> int:
    """Length of HTML as Telegram counts it: the text a person sees, in UTF-16 units
    (tags count nothing, an entity counts as the one character it stands for)."""
    return sum(_visible_size(m.group(0)) for m in _TOKEN.finditer(source))


def _visible_size(token: str) -> int:
    if token.startswith("<") and len(token) > 1:
        return 0
    if token.startswith("&") and len(token) > 1:
        return text_length(html.unescape(token))
    return text_length(token)


def truncate_html(
    source: str, limit: int = MESSAGE_LIMIT, marker: str = CUT_MARKER, *, separator: str = "\n"
) -> str:
    """Cut HTML to ``limit`` UTF-16 units of *visible* text without splitting a tag or an
    entity.

    Telegram's limits count the text after entities are parsed, so ``&lt;`` is one
    character and ``<b>`` none; counting the markup instead would cut a message full of
    escaped characters to a fraction of what fits. Tags still open at the cut are
    closed, and ``separator + marker`` is appended after them, so the result is valid
    Telegram HTML that shows where it was cut. Text that fits is returned unchanged.
    """
    if visible_length(source) <= limit:
        return source
    tail = separator + marker
    room = limit - text_length(tail)
    out: list[str] = []
    used = 0
    stack: list[str] = []
    for match in _TOKEN.finditer(source):
        token = match.group(0)
        size = _visible_size(token)
        if used + size > room:
            break
        if token.startswith("<") and size == 0:
            name_match = _TAG_NAME.match(token)
            name = name_match.group(1).lower() if name_match else ""
            if token.startswith("</"):
                if stack and stack[-1] == name:
                    stack = stack[:-1]
            elif not token.endswith("/>"):
                stack = [*stack, name]
        out.append(token)
        used += size
    # An opening tag with nothing after it is noise; drop trailing empty openers.
    while out and stack and out[-1].startswith("<") and not out[-1].startswith("</"):
        out.pop()
        stack = stack[:-1]
    closers = "".join(f"</{name}>" for name in reversed(stack))
    return "".join(out).rstrip() + closers + tail


def escape_clip(value: object, limit: int) -> str:
    """Escape, then cut to ``limit`` UTF-16 units of visible text (entities kept whole,
    each counting as the one character it shows)."""
    return truncate_html(escape(value), limit, separator="")


def utc_hhmm(when: datetime | None) -> str:
    """``HH:MM`` in UTC (naive datetimes are taken as UTC)."""
    if when is None:
        return "--:--"
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%H:%M")


def _utc_full(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def decided_by_display(decided_by: str | None) -> str | None:
    """A person-readable "who" from the actor string (``telegram:42 (@ann)`` -> ``@ann``);
    the voters of a quorum, joined by ``, ``, each so."""
    if not decided_by:
        return None
    if ", " in decided_by:
        return ", ".join(filter(None, map(_one_decider, decided_by.split(", "))))
    return _one_decider(decided_by)


def _one_decider(decided_by: str) -> str:
    match = re.search(r"\((@[^()\s]+)\)\s*$", decided_by)
    if match:
        return match.group(1)
    match = re.fullmatch(r"telegram:(-?\d+)(?:\s*\((.*)\))?", decided_by.strip())
    if match:
        return match.group(2) or f"user {match.group(1)}"
    return decided_by


def outcome_label(status: Status | str) -> tuple[str, str]:
    """``(emoji, words)`` for a final status."""
    try:
        return _OUTCOMES[Status(status)]
    except ValueError:
        return ("ℹ️", str(status))


def already_decided_text(
    status: Status | str, decided_by: str | None, decided_at: datetime | None
) -> str:
    """What a late tap is told: ``already approved by @x at 12:03 UTC`` (plain text)."""
    try:
        known: Status | None = Status(status)
    except ValueError:
        known = None
    words = _ALREADY[known] if known is not None else str(status)
    who = decided_by_display(decided_by)
    text = f"already {words}"
    if who and known is not Status.TIMEOUT:
        text += f" by {who}"
    if decided_at is not None:
        text += f" at {utc_hhmm(decided_at)} UTC"
    return clip(text, CALLBACK_ANSWER_LIMIT)


# --- request messages --------------------------------------------------------------------


def _pretty_json(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _compact_json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _kind(record: RequestRecord) -> RequestKind:
    try:
        return RequestKind(record.kind)
    except ValueError:
        return RequestKind.APPROVAL


def _option_meanings(request: ApprovalRequest) -> list[tuple[str, bool]]:
    return [(option.label, option.approved) for option in request.options]


def _body(record: RequestRecord) -> list[str]:
    """The request's details as escaped HTML lines (no title, no outcome)."""
    request = record.shown
    lines: list[str] = []
    text = request.message or request.description
    args = request.args
    if text:
        # a tool call shares the message with its arguments; a plain question has it all
        budget = _TEXT_BUDGET if args is None else _TEXT_BUDGET // 2
        lines += [escape_clip(text, budget), ""]
    name = request.name
    if name:
        lines.append(f"<b>Tool:</b> <code>{escape_clip(name, _KEY_BUDGET)}</code>")
    if args is not None:
        lines.append("<b>Arguments:</b>")
        lines.append(f"<pre>{escape_clip(_pretty_json(args), _ARGS_BUDGET)}</pre>")
    facts: list[str] = []
    risk = request.risk_level
    if risk:
        facts.append(f"<b>Risk:</b> {escape_clip(risk.value, 64)}")
    confidence = request.confidence
    if confidence is not None:
        facts.append(f"<b>Confidence:</b> {confidence:.0%}")
    if facts:
        lines.append(" · ".join(facts))
    policy = request.policy
    reason = request.reason
    if policy or reason:
        parts = [f"<code>{escape_clip(policy, _VALUE_BUDGET)}</code>"] if policy else []
        if reason:
            parts.append(escape_clip(reason, _VALUE_BUDGET))
        lines.append("<b>Policy:</b> " + " — ".join(parts))
    expires = record.expires_at
    if expires is not None:
        lines.append(f"<b>Expires:</b> {_utc_full(expires)}")
    options = _option_meanings(request)
    if options:
        # the person sees what each button means for the asker (approved or not)
        lines.append("<b>Options:</b>")
        lines += [
            f"• {escape_clip(label, _VALUE_BUDGET)}"
            + ("" if approves is None else " (approves)" if approves else " (does not approve)")
            for label, approves in options
        ]
    metadata = request.metadata
    if metadata:
        lines.append("<b>Details:</b>")
        for index, (key, value) in enumerate(metadata.items()):
            if index == _METADATA_ITEMS:
                lines.append(f"• {escape(CUT_MARKER)} ({len(metadata) - index} more)")
                break
            shown = value if isinstance(value, str) else _compact_json(value)
            lines.append(
                f"• {escape_clip(str(key), _KEY_BUDGET)}: {escape_clip(shown, _VALUE_BUDGET)}"
            )
    footer = [f"request <code>{escape_clip(record.id, 80)}</code>"]
    if record.session_id:
        footer.append(f"session <code>{escape_clip(record.session_id, 80)}</code>")
    lines.append("<i>" + " · ".join(footer) + "</i>")
    return lines


def render_request(record: RequestRecord, *, limit: int = MESSAGE_LIMIT) -> str:
    """The HTML message that asks a person about ``record``; at most ``limit`` long."""
    title = _TITLES.get(_kind(record), "🔔 <b>Approval needed</b>")
    lines = [title]
    counts = tally_text(record)
    if counts:  # a quorum request: the count so far, updated on every vote
        lines.append(f"🗳 <b>{escape(counts)}</b>")
    if _kind(record) in INPUT_KINDS:
        lines.append("<i>Reply to this message with your answer.</i>")
    lines += ["", *_body(record)]
    return truncate_html("\n".join(lines).strip(), limit)


def _decision_details(record: RequestRecord) -> list[str]:
    decision = record.decision if isinstance(record.decision, dict) else {}
    lines: list[str] = []
    kind = decision.get("type")
    message = decision.get("message")
    if kind == "edit":
        action = decision.get("edited_action")
        args = action.get("args") if isinstance(action, Mapping) else None
        if args is not None:
            lines.append("<b>Run with:</b>")
            lines.append(f"<pre>{escape_clip(_pretty_json(args), _ARGS_BUDGET)}</pre>")
    elif kind == "timeout":
        outcome = decision.get("outcome")
        if outcome:
            lines.append(f"<b>Outcome:</b> {escape_clip(str(outcome), 32)}")
    if message:
        label = {"reject": "Reason", "respond": "Answer"}.get(str(kind), "Note")
        lines.append(f"<b>{label}:</b> {escape_clip(str(message), _TEXT_BUDGET)}")
    grant = decision.get("grant")
    if isinstance(grant, Mapping):
        until = grant.get("expires_at")
        when = "until revoked"
        if isinstance(until, str):
            try:
                when = f"until {utc_hhmm(datetime.fromisoformat(until))} UTC"
            except ValueError:
                when = "for a while"
        where = {"thread": "in this run", "session": "in this session",
                 "everyone": "for everyone"}.get(str(grant.get("scope")), "")
        lines.append(f"<b>Allowed again</b> {escape(where)} {escape(when)} "
                     f"(grant <code>{escape_clip(str(grant.get('id')), 40)}</code>)")
    return lines


def render_resolved(record: RequestRecord, *, limit: int = MESSAGE_LIMIT) -> str:
    """The message after a decision: outcome, who and when (UTC) first, then the request."""
    emoji, words = outcome_label(record.status)
    head = f"{emoji} <b>{escape(words)}</b>"
    who = decided_by_display(record.decided_by)
    if who and record.status is not Status.TIMEOUT:
        head += f" by {escape_clip(who, 80)}"
    if record.channel and record.channel != "telegram":
        head += f" via {escape_clip(record.channel, 40)}"
    if record.decided_at is not None:
        head += f" at {utc_hhmm(record.decided_at)} UTC"
    details = _decision_details(record)
    lines = [head, *details, "", *_body(record)]
    return truncate_html("\n".join(lines).strip(), limit)


def render_reject_prompt(record: RequestRecord) -> str:
    """The ForceReply prompt that asks for a rejection reason."""
    name = record.shown.name
    what = f" <code>{escape_clip(name, _KEY_BUDGET)}</code>" if name else ""
    return truncate_html(
        f"💬 Reply to this message with the reason for rejecting{what} "
        f"(request <code>{escape_clip(record.id, 80)}</code>)."
    )


def render_edit_prompt(record: RequestRecord) -> str:
    """The ForceReply prompt that asks for replacement arguments as JSON."""
    request = record.shown
    name = request.name or "the tool"
    args = request.args or {}
    return truncate_html(
        "✏️ Reply to this message with the new arguments for "
        f"<code>{escape_clip(name, _KEY_BUDGET)}</code> as one JSON object "
        f"(request <code>{escape_clip(record.id, 80)}</code>). Current arguments:\n"
        f"<pre>{escape_clip(_pretty_json(args), 3000)}</pre>"
    )


# --- keyboards ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Button:
    """One inline button: what it says and what tapping it does.

    ``action`` is stored server-side under a short random key (Telegram allows only 64
    bytes of callback data): ``{"op": "decide", "decision": {...}}`` resolves the
    request at once; ``{"op": "prompt", "purpose": "reject" | "edit"}`` asks for a reply.
    """

    label: str
    action: dict[str, Any] = field(default_factory=dict)


def grant_button_label(seconds: float) -> str:
    """``✅ Approve & allow 1h``: the duration in the largest whole unit."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"✅ Approve & allow {int(seconds // size)}{unit}"
    return f"✅ Approve & allow {int(seconds)}s"


def _grant_row(record: RequestRecord, offers: Sequence[float]) -> list[Button]:
    """"Approve & allow ..." buttons: the same call again, in the request's session (else
    its thread), for each offered duration; none where a grant cannot be made (the
    gateway checks again when the button is tapped)."""
    if not offers or (record.session_id is None and record.thread_id is None):
        return []
    try:
        request = record.request
    except ValueError:  # malformed: shown, but never remembered
        return []
    if grant_refusal(request) is not None:
        return []
    scope = "session" if record.session_id is not None else "thread"
    return [Button(grant_button_label(seconds), {"op": "decide", "decision": {
        "type": "approve", "grant": {"scope": scope, "ttl_seconds": seconds}}})
        for seconds in offers]


def keyboard_for(record: RequestRecord, *, grant_offers: Sequence[float] = ()
                 ) -> list[list[Button]]:
    """The buttons a request's message carries, row by row (empty for free-text kinds).

    Approvals get Approve / Reject, Reject with reason, and Edit when ``edit`` is
    allowed for a tool call; choices, and approvals that offer options, get one button
    per option. With ``grant_offers`` (seconds), a tool call that may be remembered also
    gets "Approve & allow ..." buttons.
    """
    request = record.shown
    kind = _kind(record)
    if kind in INPUT_KINDS:
        return []
    allowed = set(request.allowed_decisions)
    labels = [option.label for option in request.options]
    if labels and (kind is RequestKind.CHOICE or "respond" in allowed):
        # choices, and approvals with options (the seed's default): one button per option
        return [
            [
                Button(
                    clip(label, BUTTON_LABEL_LIMIT),
                    {"op": "decide", "decision": {"type": "respond", "message": label}},
                )
            ]
            for label in labels
        ]
    first: list[Button] = []
    second: list[Button] = []
    if "approve" in allowed:
        first.append(Button("✅ Approve", {"op": "decide", "decision": {"type": "approve"}}))
    if "reject" in allowed:
        first.append(Button("❌ Reject", {"op": "decide", "decision": {"type": "reject"}}))
        second.append(Button("💬 Reject with reason", {"op": "prompt", "purpose": "reject"}))
    if "edit" in allowed and kind is RequestKind.TOOL_APPROVAL and request.name:
        second.append(Button("✏️ Edit", {"op": "prompt", "purpose": "edit"}))
    return [row for row in (first, second, _grant_row(record, grant_offers)) if row]
