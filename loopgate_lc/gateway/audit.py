"""Audit events and error reports, for every part of the gateway.

An event that records a state change is built here and committed by the store together
with that change; an event that records nothing else (a refusal, an error) is appended
on its own. Errors from hooks, notifiers and background tasks are logged, audited and
passed to ``on_error`` hooks, and never raised: they must not lose a decision.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from loopgate_lc._lru import LRU
from loopgate_lc.hooks import Hooks, fire, parts_of
from loopgate_lc.policy import RiskLevel, Verdict
from loopgate_lc.stores.base import AuditEvent, RequestRecord, Store

if TYPE_CHECKING:
    import logging

__all__ = ["Auditor", "Clock", "args_hash", "log", "shadow_details"]


def log() -> logging.Logger:
    """The gateway's logger (``loopgate_lc``). ``logging`` is imported with the first
    report: a process that only decides (the CLI) reports nothing, and starts faster."""
    import logging

    return logging.getLogger("loopgate_lc")

Clock = Callable[[], datetime]
"""Returns "now", timezone-aware UTC; tests inject one to move time."""


#: One encoder each for hashes and details: ``json.dumps`` with any option set builds a
#: new encoder on every call, which costs more than encoding a small value.
_CANONICAL = json.JSONEncoder(sort_keys=True, default=str, separators=(",", ":"))
_PLAIN = json.JSONEncoder(default=str)


def args_hash(args: Any) -> str | None:
    """A stable SHA-256 of a call's arguments, so the audit proves what ran without
    storing secrets twice."""
    if args is None:
        return None
    canonical = _CANONICAL.encode(args)
    return hashlib.sha256(canonical.encode()).hexdigest()


class _NotPlain(Exception):
    """A value :func:`_json_copy` leaves to the JSON module."""


_SCALARS = frozenset({str, int, float, bool, type(None)})
_JSON_KINDS = (str, int, float, list, tuple, dict)


def _json_copy(value: Any, depth: int = 0) -> Any:
    """What ``json.loads(json.dumps(value, default=str))`` returns, built directly: JSON's
    own types (exactly) as they are, dicts keyed by strings and lists or tuples copied,
    a string subclass (a ``StrEnum``) as its text, anything else JSON has no type for
    (a datetime) as ``str()`` of it, as ``default=str`` makes it.

    Raises:
        _NotPlain: What the JSON module treats its own way (a subclass of int, float, a
            container; a key that is not a string) or nesting deeper than any detail
            goes (it may be a cycle): the JSON module decides it.
    """
    kind = type(value)
    if kind in _SCALARS:
        return value
    if depth > 16:
        raise _NotPlain
    if kind is dict:
        copy = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotPlain
            copy[key] = _json_copy(item, depth + 1)
        return copy
    if kind is list or kind is tuple:
        return [_json_copy(item, depth + 1) for item in value]
    if isinstance(value, str):
        return str.__str__(value)  # JSON writes a string subclass's text, not its str()
    if isinstance(value, _JSON_KINDS):
        raise _NotPlain
    return str.__str__(str(value))


def plain_details(details: dict[str, Any] | None) -> dict[str, Any]:
    """``details`` as JSON data (``str`` for what JSON has no type for): what an audit
    event keeps. Built by :func:`_json_copy` where it can, which costs a fraction of
    the JSON round trip it stands for; the round trip decides the rest."""
    if not details:
        return {}
    try:
        copied: dict[str, Any] = _json_copy(details)
    except _NotPlain:
        return dict(json.loads(_PLAIN.encode(details)))
    return copied


def shadow_details(call: dict[str, Any], *, enforced_policy: str | None, enforced_auto: bool,
                   policy: str | None, would_auto: bool, reason: str) -> dict[str, Any]:
    """The audit details of a ``shadow`` event: the call, what the enforced policy did and
    what the shadow policy would have done (``agrees`` says whether they match)."""
    return {**call, "policy": policy, "would": "auto" if would_auto else "ask",
            "reason": reason, "enforced_policy": enforced_policy,
            "enforced": "auto" if enforced_auto else "ask",
            "agrees": would_auto == enforced_auto}


class Auditor:
    """Builds audit events, appends the ones that stand alone, fires hooks and reports
    errors."""

    def __init__(self, store: Store, hooks: Hooks, clock: Clock) -> None:
        self._store = store
        self._hooks = hooks
        self.clock = clock
        # each request's args hash, by request id, with the args it was computed from: a
        # round trip audits one request four times, mostly from one record
        self._hashes: LRU[str, tuple[object, str | None]] = LRU(1024)

    def _args_hash(self, record: RequestRecord) -> str | None:
        """The hash of ``record``'s call arguments, read from its payload: the parsed
        request holds the very same values (a filing's record need not be parsed for
        its audit), and one record is hashed once."""
        args = record.payload.get("args")
        if args is not None and type(args) is not dict:  # malformed: as the request says
            args = record.request.args
        known = self._hashes.get(record.id)
        if known is not None and known[0] is args:
            return known[1]
        digest = args_hash(args)
        self._hashes.put(record.id, (args, digest))
        return digest

    def event(self, event: str, record: RequestRecord | None = None, *,
              actor: str | None = None, channel: str | None = None,
              thread_id: str | None = None, session_id: str | None = None,
              details: dict[str, Any] | None = None) -> AuditEvent:
        """An audit event, to append on its own or to commit with a state change."""
        return AuditEvent(
            at=self.clock(),
            event=event,
            request_id=record.id if record else None,
            session_id=record.session_id if record else session_id,
            thread_id=record.thread_id if record else thread_id,
            actor=actor,
            channel=channel,
            args_hash=self._args_hash(record) if record else None,
            details=plain_details(details),
        )

    async def append(self, event: str, record: RequestRecord | None = None, *,
                     actor: str | None = None, channel: str | None = None,
                     thread_id: str | None = None, session_id: str | None = None,
                     details: dict[str, Any] | None = None) -> None:
        """Append an event that records no state change of its own."""
        await self._store.append_audit(self.event(
            event, record, actor=actor, channel=channel, thread_id=thread_id,
            session_id=session_id, details=details))

    async def auto_approved(self, name: str, args: dict[str, Any], verdict: Verdict,
                            tool_call_id: str | None, thread_id: str | None,
                            risk: RiskLevel, confidence: float | None) -> None:
        """Record a call a policy let through without asking anyone (and what a shadow
        policy would have done), then run ``on_approve``."""
        call = {"tool": name, "tool_call_id": tool_call_id, "risk_level": risk.value,
                "confidence": confidence}
        await self._store.append_audit(AuditEvent(
            at=self.clock(), event="auto_approved", thread_id=thread_id,
            channel="policy", args_hash=args_hash(args),
            details={**call, "policy": verdict.policy, "reason": verdict.reason}))
        if verdict.shadow is not None:
            await self._store.append_audit(AuditEvent(
                at=self.clock(), event="shadow", thread_id=thread_id, channel="policy",
                args_hash=args_hash(args), details=shadow_details(
                    call, enforced_policy=verdict.policy, enforced_auto=True,
                    policy=verdict.shadow.policy, would_auto=verdict.shadow.auto_approved,
                    reason=verdict.shadow.reason)))
        await self.fire("on_approve", None, True, verdict.policy)

    async def fire(self, name: str, *args: Any) -> list[Any]:
        """Run hook ``name``; a failing hook is reported, never raised."""
        return await fire(self._hooks, name, *args, report=self.report)

    async def filed(self, record: RequestRecord) -> None:
        """Run ``on_filed`` for a request this process has just stored (the one place
        both ways of storing one, filing and filing already decided, call)."""
        if self.wants("on_filed"):
            await self.fire("on_filed", record)

    def wants(self, name: str) -> bool:
        """Whether any hook part implements ``name`` (so callers skip work for none)."""
        return any(getattr(part, name) is not None for part in parts_of(self._hooks))

    async def report(self, error: BaseException, context: dict[str, Any], *,
                     audit: bool = True) -> None:
        """Log, audit (unless the caller already did) and pass to ``on_error`` hooks;
        never raises, so a failure elsewhere cannot lose a decision."""
        log().warning("loopgate_lc: %s in %s", error, context)
        if audit:
            try:
                await self._store.append_audit(AuditEvent(
                    at=self.clock(), event="error", request_id=context.get("request_id"),
                    thread_id=context.get("thread_id"),
                    details={"error": f"{type(error).__name__}: {error}",
                             **{k: str(v) for k, v in context.items()}}))
            except Exception:  # the audit itself failing must not hide the first error
                log().exception("loopgate_lc: could not audit an error")
        if context.get("hook") == "on_error":
            return
        for part in parts_of(self._hooks):
            if part.on_error is None:
                continue
            try:
                result = part.on_error(error, context)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log().exception("loopgate_lc: on_error hook failed")
