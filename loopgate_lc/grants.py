"""Remembered permissions ("allow this again"): a person approves a call and asks for
calls like it to be approved without asking again, for a while or until revoked.

A grant is made by a decision: ``{"type": "approve", "grant": {...}}`` on any channel
(HTTP, webhook, MCP, Python; Telegram offers it as a button). It names:

- ``scope``: ``"thread"`` (the decided request's run), ``"session"`` (its session) or
  ``"everyone"`` (every request of the same client, the API's tenant; requests filed
  without a client, such as a graph's own, count as one client). Default: the narrowest
  the request has (its thread, else its session).
- ``args``: per-argument constraints the later calls' arguments must meet. Omitted,
  every argument must equal the approved call's (the same call again); ``"any"`` allows
  any arguments (the tool as such). As an object, each argument name maps to ONE of:

  ``{"equals": value}``
      The same JSON value (types compared too: ``1``, ``1.0`` and ``true`` differ).
  ``{"prefix": "text"}``
      A string starting with ``text`` (non-empty; compared as text, so a path prefix
      does not stop ``..``: prefer ``equals``/``one_of`` for paths).
  ``{"one_of": [v1, v2, ...]}``
      Equal to one of 1-100 values.
  ``{"min": n, "max": n}``
      A number (not a boolean) within the bounds, either one may be left out.
  ``{"any": true}``
      Any value, or the argument left out.

  Arguments the object does not name must equal the approved call's value (and be
  absent when it was absent); the key ``"*"`` gives one constraint for all of them
  instead (``{"*": {"any": true}}``). So nothing is allowed that was not said.
  The approved call must itself meet the constraints, or the decision is refused.
- How long: exactly one of ``ttl_seconds`` (up to 366 days), ``expires_at`` (an ISO
  time within that) or ``until_revoked: true``. A grant that never ends is asked for
  in words, never by leaving a field out.

Grants are checked when the policies send a call to a person, before anyone is notified
(after ``on_request`` hooks, whose veto stands). A live grant that matches (tool, scope,
arguments, and its maker still an approver of the new request where approvers are
named) files the request already approved, by ``grant:<id>``, in one transaction with
its audit. A grant never applies where a ``require_explicit`` policy or a quorum
decides, and none can be made there. Expired and revoked grants never match.

This module holds the rules (pure) and :class:`GrantDesk`, the gateway's part that
applies them against a store.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from loopgate_lc.errors import InvalidDecision
from loopgate_lc.policy import PolicySet
from loopgate_lc.schema import ApprovalRequest, RequestKind
from loopgate_lc.stores._values import utc
from loopgate_lc.stores.base import (
    AuditEvent,
    GrantQuery,
    GrantRecord,
    GrantScope,
    GrantTarget,
    RequestRecord,
    Store,
)

__all__ = [
    "GRANT_CHANNEL",
    "MAX_GRANT_SECONDS",
    "GrantDesk",
    "GrantSpec",
    "args_match",
    "describe_constraints",
    "grant_refusal",
    "grant_summary",
    "parse_grant",
]

GRANT_CHANNEL = "grant"
"""The channel of decisions a grant made (their actor is ``grant:<id>``)."""

MAX_GRANT_SECONDS = 366 * 86_400.0
"""The longest a grant with an end may last; longer needs ``until_revoked``."""

MAX_CONSTRAINTS = 64
MAX_ONE_OF = 100
MAX_TEXT = 4_096
MAX_CONSTRAINTS_JSON = 16_384
_SCOPES: tuple[GrantScope, ...] = ("thread", "session", "everyone")
_SPEC_FIELDS = {"scope", "args", "ttl_seconds", "expires_at", "until_revoked"}
_REST = "*"
_GRANTABLE_KINDS = (RequestKind.TOOL_APPROVAL, RequestKind.APPROVAL, RequestKind.CONFIRMATION)


@dataclass(frozen=True, slots=True)
class GrantSpec:
    """A checked ``grant`` field of a decision: everything but who and when."""

    scope: GrantScope
    args: dict[str, dict[str, Any]]
    expires_at: datetime | None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def _holds(constraint: Mapping[str, Any], present: bool, value: Any) -> bool:
    """Whether one argument (``present`` or left out) meets one checked constraint; a
    value that is not plain JSON (NaN, an object) meets none but ``any``."""
    if "any" in constraint:
        return True
    if not present:
        return False
    try:
        return _compare(constraint, value)
    except (TypeError, ValueError):
        return False


def _compare(constraint: Mapping[str, Any], value: Any) -> bool:
    if "equals" in constraint:
        return _canonical(value) == _canonical(constraint["equals"])
    if "one_of" in constraint:
        text = _canonical(value)
        return any(text == _canonical(choice) for choice in constraint["one_of"])
    if "prefix" in constraint:
        return isinstance(value, str) and value.startswith(constraint["prefix"])
    if not _number(value):
        return False
    low, high = constraint.get("min"), constraint.get("max")
    return (low is None or value >= low) and (high is None or value <= high)


def args_match(constraints: Mapping[str, Mapping[str, Any]], args: Mapping[str, Any]) -> bool:
    """Whether a call's arguments meet a grant's constraints (closed: an argument no
    constraint covers, named or ``"*"``, fails)."""
    rest = constraints.get(_REST)
    for name, constraint in constraints.items():
        if name != _REST and not _holds(constraint, name in args, args.get(name)):
            return False
    for name, value in args.items():
        if name in constraints:
            continue
        if rest is None or not _holds(rest, True, value):
            return False
    return True


def _check_constraint(name: str, raw: Any) -> dict[str, Any]:
    where = f"grant.args[{name!r}]"
    if not isinstance(raw, Mapping) or not raw:
        raise InvalidDecision(f"{where} must be an object with one of: equals, prefix, "
                              "one_of, min/max, any")
    keys = set(raw)
    if keys <= {"min", "max"}:
        for bound in keys:
            if not _number(raw[bound]):
                raise InvalidDecision(f"{where}.{bound} must be a finite number")
        if "min" in raw and "max" in raw and raw["min"] > raw["max"]:
            raise InvalidDecision(f"{where}: min is above max")
        return {k: raw[k] for k in sorted(keys)}
    if len(keys) != 1:
        raise InvalidDecision(f"{where} must name ONE of equals, prefix, one_of, min/max, any;"
                              f" got {sorted(keys)}")
    (kind,) = keys
    value = raw[kind]
    if kind == "equals":
        return {"equals": value}
    if kind == "prefix":
        if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
            raise InvalidDecision(f"{where}.prefix must be a non-empty string of at most "
                                  f"{MAX_TEXT} characters (for any value use any: true)")
        return {"prefix": value}
    if kind == "one_of":
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_ONE_OF:
            raise InvalidDecision(f"{where}.one_of must list 1 to {MAX_ONE_OF} values")
        return {"one_of": list(value)}
    if kind == "any":
        if value is not True:
            raise InvalidDecision(f"{where}.any must be true")
        return {"any": True}
    raise InvalidDecision(f"{where}: unknown constraint {kind!r}; use equals, prefix, one_of, "
                          "min/max or any")


def _constraints(raw: Any, args: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The full constraint map: what was stated, plus ``equals`` for every argument of
    the approved call it does not cover."""
    if raw is None or raw == "exact":
        stated: dict[str, dict[str, Any]] = {}
    elif raw == "any":
        stated = {_REST: {"any": True}}
    elif isinstance(raw, Mapping):
        if len(raw) > MAX_CONSTRAINTS:
            raise InvalidDecision(f"grant.args names at most {MAX_CONSTRAINTS} arguments")
        stated = {}
        for name, constraint in raw.items():
            if not isinstance(name, str) or not name or len(name) > 256:
                raise InvalidDecision("grant.args: argument names are 1-256 characters")
            stated[name] = _check_constraint(name, constraint)
    else:
        raise InvalidDecision('grant.args must be "exact", "any" or an object of '
                              "per-argument constraints")
    full = dict(stated)
    if _REST not in stated:
        for name, value in args.items():
            full.setdefault(name, {"equals": value})
    try:
        size = len(_canonical(full))
    except (TypeError, ValueError) as exc:
        raise InvalidDecision(f"grant.args is not plain JSON: {exc}") from exc
    if size > MAX_CONSTRAINTS_JSON:
        raise InvalidDecision(f"grant.args is too large ({size} characters of JSON, at most "
                              f"{MAX_CONSTRAINTS_JSON}); constrain fewer arguments")
    return full


def _expiry(raw: Mapping[str, Any], now: datetime) -> datetime | None:
    given = [k for k in ("ttl_seconds", "expires_at", "until_revoked") if k in raw]
    if len(given) != 1:
        raise InvalidDecision(
            "grant needs exactly one of ttl_seconds, expires_at or until_revoked: true "
            f"(got {', '.join(given) or 'none'})")
    longest = now + timedelta(seconds=MAX_GRANT_SECONDS)
    if given[0] == "until_revoked":
        if raw["until_revoked"] is not True:
            raise InvalidDecision("grant.until_revoked must be true (or give ttl_seconds)")
        return None
    if given[0] == "ttl_seconds":
        ttl = raw["ttl_seconds"]
        if not _number(ttl) or not 0 < ttl <= MAX_GRANT_SECONDS:
            raise InvalidDecision(f"grant.ttl_seconds must be a number of seconds above 0 and "
                                  f"at most {MAX_GRANT_SECONDS:.0f} (366 days)")
        return now + timedelta(seconds=float(ttl))
    text = raw["expires_at"]
    try:
        when = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise InvalidDecision("grant.expires_at must be an ISO 8601 time with a time zone, "
                              "e.g. 2030-01-01T12:00:00+00:00")
    if not now < when <= longest:
        raise InvalidDecision("grant.expires_at must be in the future and at most 366 days "
                              "away (or use until_revoked: true)")
    return when


def grant_refusal(request: ApprovalRequest, policies: PolicySet | None = None) -> str | None:
    """Why calls like ``request`` cannot be remembered, or None when they can.

    Only one tool call answered with a plain approve can; never one that a
    ``require_explicit`` policy decides, nor one under a quorum (the request's own, or
    the gateway's for its tool: either one forbidding is enough). A quorum means that
    many people approve each call; a grant would let the next ones run with none.
    """
    if request.name is None or request.type not in _GRANTABLE_KINDS:
        return "only a tool call can be remembered"
    if request.is_batch or request.is_foreign:
        return "a batch of calls cannot be remembered; answer each call"
    if request.options or "approve" not in request.allowed_decisions:
        return "only a request answered with approve can be remembered"
    explicit = request.policy if request.require_explicit else None
    quorum = request.quorum
    if policies is not None:
        named = next((p for p in policies if p.name == request.policy and not p.shadow), None)
        matched = policies.match(request.name)
        for policy in (named, matched):
            if policy is not None and policy.require_explicit and explicit is None:
                explicit = policy.name
            if policy is not None and policy.quorum > quorum:
                quorum = policy.quorum
    if quorum > 1:
        return (f"calls to {request.name!r} need {quorum} approvals each (a quorum), so "
                "they cannot be remembered")
    if explicit is not None or request.require_explicit:
        which = f"policy {explicit!r}" if explicit is not None else "a require_explicit policy"
        return (f"{which} requires a person to approve every call, so its calls cannot be "
                "remembered")
    return None


def parse_grant(raw: Any, record: RequestRecord, request: ApprovalRequest, *,
                now: datetime, policies: PolicySet | None = None) -> GrantSpec:
    """Check a decision's ``grant`` field against the request it approves.

    Raises:
        InvalidDecision: What is wrong, in words a person can act on.
    """
    if not isinstance(raw, Mapping):
        raise InvalidDecision("grant must be an object, e.g. "
                              '{"scope": "session", "ttl_seconds": 3600}')
    unknown = sorted(set(raw) - _SPEC_FIELDS)
    if unknown:
        raise InvalidDecision(f"grant has unknown field(s) {', '.join(map(str, unknown))}; "
                              f"allowed: {', '.join(sorted(_SPEC_FIELDS))}")
    refusal = grant_refusal(request, policies)
    if refusal is not None:
        raise InvalidDecision(refusal)
    scope = raw.get("scope") or ("thread" if record.thread_id else "session")
    if scope not in _SCOPES:
        raise InvalidDecision(f"grant.scope must be one of {', '.join(_SCOPES)}; got {scope!r}")
    if scope == "thread" and record.thread_id is None:
        raise InvalidDecision("grant.scope 'thread': this request belongs to no thread; "
                              "use 'session' or 'everyone'")
    if scope == "session" and record.session_id is None:
        raise InvalidDecision("grant.scope 'session': this request belongs to no session; "
                              "use 'thread' or 'everyone'")
    args = dict(request.args or {})
    constraints = _constraints(raw.get("args"), args)
    if not args_match(constraints, args):
        raise InvalidDecision("grant.args: the approved call itself does not meet these "
                              "constraints")
    return GrantSpec(scope=cast(GrantScope, scope), args=constraints,
                     expires_at=_expiry(raw, now))


def _target(record: RequestRecord) -> GrantTarget:
    return GrantTarget(thread_id=record.thread_id, session_id=record.session_id,
                       client_id=record.client_id)


def _matches(grant: GrantRecord, record: RequestRecord, request: ApprovalRequest,
             now: datetime) -> bool:
    """Checked again here, whatever the store filtered: a third-party store that lists
    too much cannot widen a grant."""
    return (grant.live(now) and grant.tool == request.name
            and grant.covers(_target(record)) and args_match(grant.args, request.args or {}))


def describe_constraints(args: Mapping[str, Mapping[str, Any]]) -> str:
    """The constraints in one short line: ``to=bob, subject^='Re:', *=any``."""
    parts = []
    for name, c in args.items():
        if "equals" in c:
            parts.append(f"{name}={json.dumps(c['equals'], ensure_ascii=False)}")
        elif "prefix" in c:
            parts.append(f"{name}^={json.dumps(c['prefix'], ensure_ascii=False)}")
        elif "one_of" in c:
            parts.append(f"{name} in {json.dumps(c['one_of'], ensure_ascii=False)}")
        elif "any" in c:
            parts.append(f"{name}=any")
        else:
            low, high = c.get("min"), c.get("max")
            parts.append(f"{'' if low is None else f'{low}<='}{name}"
                         f"{'' if high is None else f'<={high}'}")
    return ", ".join(parts) or "no arguments"


def grant_summary(grant: GrantRecord) -> dict[str, Any]:
    """What a decision and the audit keep of a grant (who made it is theirs already)."""
    return {"id": grant.id, "tool": grant.tool, "scope": grant.scope,
            "session_id": grant.session_id, "thread_id": grant.thread_id,
            "args": grant.args, "expires_at": grant.expires_at}


Approvers = Callable[[RequestRecord], Awaitable[tuple[set[str], bool]]]


class GrantDesk:
    """The gateway's part for grants: reads the ``grant`` field of decisions, makes the
    records, finds the grant that approves a new request, revokes.

    Args:
        store: Where grants live.
        clock: Returns "now" (UTC).
        policies: Returns the gateway's live policy set (checked with the request's own
            ``require_explicit``).
        approvers: Who may decide a request and whether anyone is named (the gateway's
            one rule), so a grant applies only where its maker could have decided.
    """

    def __init__(self, store: Store, *, clock: Callable[[], datetime],
                 policies: Callable[[], PolicySet], approvers: Approvers) -> None:
        self._store = store
        self._clock = clock
        self._policies = policies
        self._approvers = approvers

    def read(self, decision: Any, record: RequestRecord,
             request: ApprovalRequest) -> tuple[Any, GrantSpec | None]:
        """Split a decision into the decision proper and its checked ``grant``.

        Raises:
            InvalidDecision: The grant is malformed, or on a decision that is not an
                approve, or on a request whose calls cannot be remembered.
        """
        if not isinstance(decision, Mapping) or "grant" not in decision:
            return decision, None
        rest = {k: v for k, v in decision.items() if k != "grant"}
        if decision.get("grant") is None:
            return rest, None
        if rest.get("type") != "approve":
            raise InvalidDecision("only an approve decision can carry a grant (got "
                                  f"{rest.get('type')!r})")
        return rest, parse_grant(decision["grant"], record, request, now=self._clock(),
                                 policies=self._policies())

    def issue(self, spec: GrantSpec, record: RequestRecord, request: ApprovalRequest, *,
              actor: str | None, approver_id: str | None, channel: str | None
              ) -> GrantRecord:
        """The record a checked grant becomes, to store with its decision."""
        return GrantRecord(
            id=f"g_{secrets.token_urlsafe(12)}", tool=str(request.name), args=spec.args,
            scope=spec.scope, session_id=record.session_id, thread_id=record.thread_id,
            client_id=record.client_id, request_id=record.id, created_by=actor,
            approver_id=approver_id, channel=channel, created_at=self._clock(),
            expires_at=spec.expires_at)

    async def match(self, record: RequestRecord, request: ApprovalRequest
                    ) -> GrantRecord | None:
        """The oldest live grant that approves this (not yet filed) request, if any."""
        query = self.query(record, request)
        if query is None:
            return None
        return await self.pick(await self._store.list_grants(
            tool=query.tool, live_at=query.live_at, covering=query.covering), record, request)

    def query(self, record: RequestRecord, request: ApprovalRequest) -> GrantQuery | None:
        """The grants that may approve this (not yet filed) request, as a store query;
        None when calls like it cannot be remembered (nothing to look up)."""
        if grant_refusal(request, self._policies()) is not None:
            return None
        return GrantQuery(tool=request.name, live_at=utc(self._clock()),
                          covering=_target(record))

    async def pick(self, candidates: Sequence[GrantRecord], record: RequestRecord,
                   request: ApprovalRequest) -> GrantRecord | None:
        """The oldest of ``candidates`` (what :meth:`query` found) that approves the
        request, if any."""
        now = self._clock()
        found = [g for g in candidates if _matches(g, record, request, now)]
        if not found:
            return None
        allowed, named = await self._approvers(record)
        return next((g for g in found
                     if not named or (g.approver_id is not None and g.approver_id in allowed)),
                    None)

    async def revoke(self, grant_id: str, *, actor: str | None, channel: str
                     ) -> GrantRecord:
        """Revoke once; revoking again returns the grant as the first revocation left it.

        Raises:
            GrantNotFound: Unknown id.
        """
        grant = await self._store.get_grant(grant_id)
        now = self._clock()
        event = AuditEvent(at=now, event="grant_revoked", request_id=grant.request_id,
                           session_id=grant.session_id, thread_id=grant.thread_id,
                           actor=actor, channel=channel,
                           details={"grant_id": grant.id, "tool": grant.tool,
                                    "scope": grant.scope})
        revoked, _ = await self._store.revoke_grant(grant_id, revoked_by=actor, at=now,
                                                    audit=[event])
        return revoked
