"""What the inbox pages show, as plain data for the templates: folded JSON, durations,
the edit schema, a decided request in words.

No HTML is built here: the templates escape every value (Jinja2 autoescape), so text from
agents and users can never become markup.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from loopgate_lc.decisions import response_schema
from loopgate_lc.stores.base import RequestRecord

__all__ = ["FOLD_AT", "JsonNode", "args_schema", "decided_words", "json_tree"]

FOLD_AT = 160
"""Strings longer than this are shown folded: the start, and the rest on demand."""


@dataclass
class JsonNode:
    """One JSON value for the template: ``kind`` is obj, arr, str or lit."""

    kind: str
    text: str = ""
    short: str | None = None
    items: list[tuple[str | None, JsonNode]] = field(default_factory=list)


def json_tree(value: Any, *, fold_at: int = FOLD_AT) -> JsonNode:
    """``value`` as nested nodes; long strings carry a ``short`` preview to fold under."""
    if isinstance(value, dict):
        return JsonNode("obj", items=[(json.dumps(str(k), ensure_ascii=False),
                                       json_tree(v, fold_at=fold_at)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return JsonNode("arr", items=[(None, json_tree(v, fold_at=fold_at)) for v in value])
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        short = None
        if len(value) > fold_at:
            short = json.dumps(value[: fold_at // 2], ensure_ascii=False)[:-1] + \
                f"… ({len(value)} characters)\""
        return JsonNode("str", text=text, short=short)
    return JsonNode("lit", text=json.dumps(value, default=str))


def args_schema(record: RequestRecord) -> dict[str, Any] | None:
    """The JSON schema an edit's arguments must meet, read from the request's published
    ``response_schema`` (the same one the gateway validates against), if it has one."""
    raw = response_schema(record.shown)
    try:
        schema = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    if not isinstance(schema, dict):
        return None
    branches = schema.get("oneOf") or schema.get("anyOf") or [schema]
    for branch in branches:
        if not isinstance(branch, dict):
            continue
        props = branch.get("properties") or {}
        kind = props.get("type", {}) if isinstance(props, dict) else {}
        if isinstance(kind, dict) and "edit" in (kind.get("const"), kind.get("default"),
                                                 *(kind.get("enum") or ())):
            action = props.get("edited_action") or {}
            found = (action.get("properties") or {}).get("args")
            return found if isinstance(found, dict) else None
    return None


def when(moment: datetime | None) -> str:
    """A timestamp as people read it in the inbox (UTC, to the second)."""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


def decided_words(status: str, decided_by: str | None, channel: str | None,
                  decided_at: datetime | None) -> str:
    """"approved by api:ann via inbox at 2026-…": what a late click is told."""
    parts = [status]
    if decided_by:
        parts.append(f"by {decided_by}")
    if channel:
        parts.append(f"via {channel}")
    if decided_at:
        parts.append(f"at {when(decided_at)}")
    return " ".join(parts)
