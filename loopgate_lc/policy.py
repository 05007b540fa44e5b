"""Approval policies: which tool calls a person must see.

Pure on purpose: no I/O (beyond ``from_file`` reading its one file), no LangChain, no clock.
A policy set is evaluated on every guarded tool call, so patterns are compiled and
indexed once, when a policy is added, and matching is memoised per tool name: a tool
name a model makes up costs no more with 10,000 policies than with one.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from loopgate_lc._lru import LRU
from loopgate_lc.errors import InvalidPolicy

__all__ = ["ApprovalPolicy", "PolicySet", "RiskLevel", "Verdict", "compile_glob"]


class RiskLevel(StrEnum):
    """How much harm a call can do, ordered ``READ_ONLY < DATA_MODIFICATION < IRREVERSIBLE``.

    The values are strings so they travel through JSON unchanged; comparisons use the
    rank, not the alphabet.
    """

    READ_ONLY = "read_only"
    DATA_MODIFICATION = "data_modification"
    IRREVERSIBLE = "irreversible"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    @classmethod
    def parse(cls, value: object) -> RiskLevel:
        """Read a risk level from its value or name, case-insensitively.

        Raises:
            InvalidPolicy: ``value`` names no risk level.
        """
        if isinstance(value, RiskLevel):
            return value
        if isinstance(value, str):
            key = value.strip().lower().replace("-", "_").replace(" ", "_")
            for level in cls:
                if key == level.value:
                    return level
        allowed = ", ".join(repr(level.value) for level in cls)
        raise InvalidPolicy(f"unknown risk level {value!r}; expected one of {allowed}")

    def _cmp(self, other: object) -> int | None:
        if not isinstance(other, RiskLevel):
            return None
        return self.rank - other.rank

    def __lt__(self, other: object) -> bool:
        diff = self._cmp(other)
        return NotImplemented if diff is None else diff < 0

    def __le__(self, other: object) -> bool:
        diff = self._cmp(other)
        return NotImplemented if diff is None else diff <= 0

    def __gt__(self, other: object) -> bool:
        diff = self._cmp(other)
        return NotImplemented if diff is None else diff > 0

    def __ge__(self, other: object) -> bool:
        diff = self._cmp(other)
        return NotImplemented if diff is None else diff >= 0

    __hash__ = str.__hash__


_RANKS = {RiskLevel.READ_ONLY: 0, RiskLevel.DATA_MODIFICATION: 1, RiskLevel.IRREVERSIBLE: 2}


def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile a tool-name glob: ``*`` any run of characters (``/`` and ``.`` included),
    ``?`` one character, ``[abc]``/``[!abc]``/``[a-z]`` one character of a class.

    Raises:
        InvalidPolicy: The pattern is empty, blank, has control characters, or has an
            unclosed or empty ``[`` class.
    """
    pieces = _glob_pieces(pattern)
    try:
        return re.compile("".join(piece for piece, _ in pieces) + r"\Z", re.DOTALL)
    except re.error as exc:  # e.g. a reversed range such as [z-a]
        raise InvalidPolicy(f"tool_pattern {pattern!r} is malformed: {exc}") from exc


def _glob_pieces(pattern: str) -> list[tuple[str, str | None]]:
    """A glob as regex pieces in order, each with the one character a name must hold
    there, or None for a wildcard."""
    if not isinstance(pattern, str):
        raise InvalidPolicy(f"tool_pattern must be a string, got {type(pattern).__name__}")
    if not pattern or not pattern.strip():
        raise InvalidPolicy("tool_pattern must not be empty")
    if pattern != pattern.strip():
        raise InvalidPolicy(f"tool_pattern {pattern!r} has leading or trailing whitespace")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in pattern):
        raise InvalidPolicy(f"tool_pattern {pattern!r} contains control characters")
    out: list[tuple[str, str | None]] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            while i + 1 < n and pattern[i + 1] == "*":
                i += 1
            out.append((".*", None))
        elif ch == "?":
            out.append((".", None))
        elif ch == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "^") else i + 1)
            if end == -1:
                raise InvalidPolicy(f"tool_pattern {pattern!r} has an unclosed '[' at {i}")
            body = pattern[i + 1 : end]
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            if not body:
                raise InvalidPolicy(f"tool_pattern {pattern!r} has an empty '[]' class at {i}")
            escaped = body.replace("\\", "\\\\").replace("^", "\\^").replace("[", "\\[")
            out.append((f"[{'^' if negate else ''}{escaped}]", None))
            i = end
        else:
            out.append((re.escape(ch), ch))
        i += 1
    return out


@dataclass(frozen=True, slots=True)
class _Literal:
    """What a glob fixes outright: the characters every matching name starts with,
    ends with, and holds somewhere (its longest run of plain characters), and whether
    the glob is one exact name (no wildcard at all)."""

    prefix: str
    suffix: str
    inner: str
    exact: bool

    @classmethod
    def of(cls, pattern: str) -> _Literal:
        runs = [""]  # the plain characters between wildcards, in order
        for _, char in _glob_pieces(pattern):
            if char is None:
                runs.append("")
            else:
                runs[-1] += char
        if len(runs) == 1:
            return cls(pattern, pattern, pattern, True)
        return cls(runs[0], runs[-1], max(runs, key=len), False)


def _fmt(value: float) -> str:
    text = f"{value:.2f}"
    return text if float(text) == value else f"{value:.6g}"


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """One rule: for tools matching ``tool_pattern``, when may a call skip the human?

    A call is auto-approved when its confidence is at least ``min_confidence`` and its
    risk is at most ``max_risk_level``, unless ``require_explicit`` sends every call to
    a person. ``approvers``, when given, narrows who may decide calls under this policy.

    ``quorum`` asks for that many approvals from distinct approvers before a call runs
    (the requester's own vote never counts); ``rejections_needed`` is how many
    rejections end it (one, at once, unless raised). Under a quorum only approve and
    reject are votes: see :mod:`loopgate_lc.quorum`.

    A ``shadow`` policy decides nothing: calls run as the enforced policies say, and
    :meth:`PolicySet.evaluate` reports on :attr:`Verdict.shadow` what the policy would have
    decided had it been enforced, so a team can watch a stricter (or looser) rule on real
    traffic before switching it on.

    Raises:
        InvalidPolicy: On an empty name, a malformed pattern, a threshold outside
            [0, 1] or NaN, or an unknown risk level.
    """

    name: str
    tool_pattern: str
    min_confidence: float = 0.0
    max_risk_level: RiskLevel = RiskLevel.READ_ONLY
    require_explicit: bool = False
    approvers: tuple[str, ...] = ()
    shadow: bool = False
    quorum: int = 1
    rejections_needed: int = 1
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _literal: _Literal = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidPolicy("policy name must be a non-empty string")
        object.__setattr__(self, "_regex", compile_glob(self.tool_pattern))
        object.__setattr__(self, "_literal", _Literal.of(self.tool_pattern))
        conf = self.min_confidence
        if isinstance(conf, bool) or not isinstance(conf, int | float):
            raise InvalidPolicy(
                f"policy {self.name!r}: min_confidence must be a number, got {conf!r}"
            )
        if math.isnan(conf) or not 0.0 <= conf <= 1.0:
            raise InvalidPolicy(
                f"policy {self.name!r}: min_confidence must be within [0, 1], got {conf!r}"
            )
        object.__setattr__(self, "min_confidence", float(conf))
        object.__setattr__(self, "max_risk_level", RiskLevel.parse(self.max_risk_level))
        if not isinstance(self.require_explicit, bool):
            raise InvalidPolicy(
                f"policy {self.name!r}: require_explicit must be true or false, "
                f"got {self.require_explicit!r}"
            )
        if not isinstance(self.shadow, bool):
            raise InvalidPolicy(
                f"policy {self.name!r}: shadow must be true or false, got {self.shadow!r}"
            )
        approvers = self.approvers
        if isinstance(approvers, str) or not all(isinstance(a, str | int) for a in approvers):
            raise InvalidPolicy(f"policy {self.name!r}: approvers must be a list of ids")
        object.__setattr__(self, "approvers", tuple(str(a) for a in approvers))
        for what in ("quorum", "rejections_needed"):
            count = getattr(self, what)
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise InvalidPolicy(
                    f"policy {self.name!r}: {what} must be a whole number of at least 1, "
                    f"got {count!r}")
            if self.approvers and count > len(set(self.approvers)):
                # distinct approvers could never reach it: every call would time out
                raise InvalidPolicy(
                    f"policy {self.name!r}: {what} {count} is more than its "
                    f"{len(set(self.approvers))} distinct approvers can reach")

    def matches(self, tool_name: str) -> bool:
        return self._regex.match(tool_name) is not None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of evaluating one call.

    Attributes:
        auto_approved: True when no person needs to see the call.
        policy: The name of the policy that decided, or None when none matched.
        reason: One sentence a person understands, shown to approvers and in the audit.
        approvers: Who may decide under the deciding policy (empty: the session's).
        shadow: What a shadow policy would have decided instead, when the first policy
            matching the tool (shadow policies included) is a shadow one; else None.
        explicit: The deciding policy is ``require_explicit``: a person approves every
            call, and no remembered permission (grant) may stand in for them.
        quorum: Approvals from distinct approvers the deciding policy needs.
        rejections_needed: Rejections that end the request under it.
    """

    auto_approved: bool
    policy: str | None
    reason: str
    approvers: tuple[str, ...] = ()
    shadow: Verdict | None = None
    explicit: bool = False
    quorum: int = 1
    rejections_needed: int = 1


_POLICY_FIELDS = {
    "name",
    "tool_pattern",
    "min_confidence",
    "max_risk_level",
    "require_explicit",
    "approvers",
    "shadow",
    "quorum",
    "rejections_needed",
}


class _Index:
    """Policy positions by what their patterns fix outright, so a name is tried only
    against the policies that can match it.

    Each policy sits in one bucket: its exact name, else its literal start or end (the
    longer of the two), else the plain characters it holds somewhere (``*admin*``),
    else (``*``, ``[a-c]*``: no plain character at all) the patterns tried for every name.
    Positions only ever grow (policies are appended), so every bucket stays sorted.
    """

    def __init__(self) -> None:
        self.exact: dict[str, list[int]] = {}
        self.starts: dict[str, list[int]] = {}
        self.ends: dict[str, list[int]] = {}
        self.inside: dict[str, list[int]] = {}
        self.start_lengths: list[int] = []
        self.end_lengths: list[int] = []
        self.inside_lengths: list[int] = []
        self.inside_count = 0
        self.anywhere: list[int] = []

    def add(self, position: int, literal: _Literal) -> None:
        if literal.exact:
            self.exact.setdefault(literal.prefix, []).append(position)
        elif literal.prefix and len(literal.prefix) >= len(literal.suffix):
            self.start_lengths = _put(self.starts, self.start_lengths, literal.prefix, position)
        elif literal.suffix:
            self.end_lengths = _put(self.ends, self.end_lengths, literal.suffix, position)
        elif literal.inner:
            self.inside_lengths = _put(self.inside, self.inside_lengths, literal.inner,
                                       position)
            self.inside_count += 1
        else:
            self.anywhere.append(position)

    def candidates(self, name: str) -> list[int]:
        """Positions of the policies that may match ``name``, in order. A policy left
        out cannot match it; one listed still has its pattern tried."""
        found = list(self.exact.get(name, ()))
        size = len(name)
        for length in self.start_lengths:
            if length > size:
                break
            found += self.starts.get(name[:length], ())
        for length in self.end_lengths:
            if length > size:
                break
            found += self.ends.get(name[size - length:], ())
        if self.inside_count:
            found += self._inside(name)
        found += self.anywhere
        found.sort()
        return found

    def _inside(self, name: str) -> list[int]:
        """The policies whose plain run occurs in ``name``: every window of each run
        length is looked up, unless that would take more lookups than the policies it
        could rule out (a very long name), when they are all tried."""
        size = len(name)
        windows = sum(max(0, size - length + 1) for length in self.inside_lengths)
        if windows > self.inside_count:
            return [i for positions in list(self.inside.values()) for i in positions]
        found: list[int] = []
        for length in self.inside_lengths:
            if length > size:
                break
            seen = {name[at:at + length] for at in range(size - length + 1)}
            for key in seen:
                found += self.inside.get(key, ())
        return found


def _put(buckets: dict[str, list[int]], lengths: list[int], key: str, position: int
         ) -> list[int]:
    """File ``position`` under ``key``; the key lengths to look up, sorted.

    Safe beside readers in other threads (guards evaluate in graph worker threads):
    the largest position is appended, so a bucket stays sorted, and a new lengths list
    replaces the old one whole, so no reader sees it half sorted.
    """
    buckets.setdefault(key, []).append(position)
    return lengths if len(key) in lengths else sorted([*lengths, len(key)])


class PolicySet:
    """An ordered list of policies where the FIRST match alone decides.

    No match sends the call to a person (fail closed). Order is the only priority: a
    policy decides for a tool exactly when no earlier policy (shadow ones aside) matches
    it, whether its pattern is an exact name or a glob.

    Evaluation does not grow with the number of policies. Policies are indexed by what
    their patterns fix outright: an exact name, else a literal start (``deploy*``) or end
    (``*_delete``), else plain characters inside (``*admin*``); a new name looks up only
    the policies that can match it and tries those in order. Only patterns with no plain
    character at all (``*``, ``[a-c]*``) are tried for every name. The answer is also
    memoised per tool name (the ``cache_size`` most recently used names), so a name seen
    before costs one lookup.
    """

    def __init__(self, policies: Iterable[ApprovalPolicy] = (), *,
                 cache_size: int = 4096) -> None:
        self._policies: list[ApprovalPolicy] = []
        # name -> (the set's generation, first enforced, first of any kind)
        self._first_match: LRU[str, tuple[int, int | None, int | None]] = LRU(cache_size)
        self._generation = 0
        self._index = _Index()
        for policy in policies:
            self.add(policy)

    @property
    def policies(self) -> tuple[ApprovalPolicy, ...]:
        return tuple(self._policies)

    def __len__(self) -> int:
        return len(self._policies)

    def __iter__(self) -> Any:
        return iter(self._policies)

    def add(self, policy: ApprovalPolicy) -> None:
        """Append a policy; it decides only for tools no earlier policy matches."""
        if not isinstance(policy, ApprovalPolicy):
            raise InvalidPolicy(f"expected an ApprovalPolicy, got {type(policy).__name__}")
        # the policy first, then where to find it: a reader in another thread never
        # meets a position with no policy behind it
        self._policies.append(policy)
        self._index.add(len(self._policies) - 1, policy._literal)
        self._generation += 1
        self._first_match.clear()

    def _matches(self, tool_name: str) -> tuple[int | None, int | None]:
        """The indexes of the first enforced policy and of the first policy of any kind
        (shadow included) matching ``tool_name``, memoised per name.

        An answer remembers the set it was found in: one found while another thread
        added a policy is found again, never served stale.
        """
        generation = self._generation
        known = self._first_match.get(tool_name)
        if known is not None and known[0] == generation:
            return known[1], known[2]
        enforced, first = self._scan(tool_name)
        self._first_match.pop(tool_name)
        self._first_match.get_or_make(tool_name, lambda: (generation, enforced, first))
        return enforced, first

    def _scan(self, tool_name: str) -> tuple[int | None, int | None]:
        first: int | None = None
        for i in self._index.candidates(tool_name):
            policy = self._policies[i]
            if not policy.matches(tool_name):
                continue
            if first is None:
                first = i
            if not policy.shadow:
                return i, first
        return None, first

    def match(self, tool_name: str) -> ApprovalPolicy | None:
        """The enforced policy that decides for ``tool_name``, if any."""
        index = self._matches(tool_name)[0]
        return None if index is None else self._policies[index]

    def evaluate(
        self, tool_name: str, *, confidence: float, risk: RiskLevel | str
    ) -> Verdict:
        """Decide whether a call may run without a person.

        A NaN or out-of-range confidence never auto-approves. When a shadow policy is the
        first to match, its would-be verdict rides along on :attr:`Verdict.shadow`.
        """
        level = RiskLevel.parse(risk)
        enforced, first = self._matches(tool_name)
        policy = None if enforced is None else self._policies[enforced]
        verdict = _judge(policy, tool_name, confidence, level)
        if first is not None and first != enforced:
            shadow = _judge(self._policies[first], tool_name, confidence, level)
            verdict = replace(verdict, shadow=shadow)
        return verdict

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | Sequence[Any], *, source: str = "") -> PolicySet:
        """Build a set from ``{"policies": [...]}`` or a bare list of policy tables.

        Errors name the source, the policy's index and the field.
        """
        where = f"{source}: " if source else ""
        items: Any = data.get("policies") if isinstance(data, Mapping) else data
        if isinstance(data, Mapping) and "policies" not in data:
            raise InvalidPolicy(f"{where}expected a top-level 'policies' list")
        if not isinstance(items, list):
            raise InvalidPolicy(f"{where}'policies' must be a list of tables")
        policies: list[ApprovalPolicy] = []
        for index, item in enumerate(items):
            at = f"{where}policies[{index}]"
            if not isinstance(item, Mapping):
                raise InvalidPolicy(f"{at}: expected a table, got {type(item).__name__}")
            unknown = sorted(set(item) - _POLICY_FIELDS)
            if unknown:
                raise InvalidPolicy(f"{at}: unknown field(s) {', '.join(unknown)}")
            for required in ("name", "tool_pattern"):
                if required not in item:
                    raise InvalidPolicy(f"{at}.{required}: missing")
            kwargs = dict(item)
            if "approvers" in kwargs and isinstance(kwargs["approvers"], list):
                kwargs["approvers"] = tuple(kwargs["approvers"])
            try:
                policies.append(ApprovalPolicy(**kwargs))
            except InvalidPolicy as exc:
                raise InvalidPolicy(f"{at}.{_field_of(str(exc))}: {exc}") from exc
        return cls(policies)

    @classmethod
    def from_file(cls, path: str | Path) -> PolicySet:
        """Load policies from a ``.toml`` or ``.json`` file."""
        file = Path(path)
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise InvalidPolicy(f"{file}: cannot read policy file: {exc.strerror}") from exc
        import tomllib  # here: its regular expressions cost every importer, files are rare

        try:
            if file.suffix.lower() == ".toml":
                data: Any = tomllib.loads(raw.decode("utf-8"))
            elif file.suffix.lower() == ".json":
                data = json.loads(raw)
            else:
                raise InvalidPolicy(f"{file}: policy files must end in .toml or .json")
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidPolicy(f"{file}: not valid {file.suffix[1:].upper()}: {exc}") from exc
        return cls.from_dict(data, source=str(file))


def _judge(
    policy: ApprovalPolicy | None, tool_name: str, confidence: float, level: RiskLevel
) -> Verdict:
    """One policy's verdict on one call (None: no policy matched, so a person decides)."""
    if policy is None:
        return Verdict(False, None, f"no policy matches tool {tool_name!r}, so a person decides")
    name = policy.name
    if policy.require_explicit:
        return Verdict(
            False, name, f"policy {name!r} requires a person to approve every call",
            policy.approvers, explicit=True, quorum=policy.quorum,
            rejections_needed=policy.rejections_needed,
        )
    valid = (
        isinstance(confidence, int | float)
        and not isinstance(confidence, bool)
        and not math.isnan(confidence)
        and 0.0 <= confidence <= 1.0
    )
    problems: list[str] = []
    if not valid:
        problems.append(
            f"confidence {confidence!r} is not a number between 0 and 1 "
            f"(policy {name!r} cannot trust it)"
        )
    elif confidence < policy.min_confidence:
        problems.append(
            f"confidence {_fmt(confidence)} is below {_fmt(policy.min_confidence)} "
            f"required by policy {name!r}"
        )
    if level > policy.max_risk_level:
        problems.append(
            f"risk {level.value} is above {policy.max_risk_level.value} "
            f"allowed by policy {name!r}"
        )
    if problems:
        return Verdict(False, name, "; ".join(problems), policy.approvers,
                       quorum=policy.quorum, rejections_needed=policy.rejections_needed)
    return Verdict(
        True,
        name,
        f"confidence {_fmt(confidence)} meets {_fmt(policy.min_confidence)} and risk "
        f"{level.value} is within {policy.max_risk_level.value} under policy {name!r}",
        policy.approvers, quorum=policy.quorum, rejections_needed=policy.rejections_needed,
    )


def _field_of(message: str) -> str:
    for name in ("tool_pattern", "min_confidence", "max_risk_level", "require_explicit",
                 "rejections_needed", "quorum", "approvers", "shadow"):
        if name in message:
            return name
    if "risk level" in message:
        return "max_risk_level"
    return "name"
