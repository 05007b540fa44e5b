"""The policy table: first match decides, thresholds, fail-closed, files."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from loopgate_lc import ApprovalPolicy, InvalidPolicy, PolicySet, RiskLevel

R = RiskLevel


def test_risk_levels_are_ordered_by_harm_not_alphabet() -> None:
    assert R.READ_ONLY < R.DATA_MODIFICATION < R.IRREVERSIBLE
    assert R.IRREVERSIBLE >= R.IRREVERSIBLE and R.READ_ONLY <= R.DATA_MODIFICATION
    assert sorted([R.IRREVERSIBLE, R.READ_ONLY, R.DATA_MODIFICATION]) == [
        R.READ_ONLY, R.DATA_MODIFICATION, R.IRREVERSIBLE,
    ]
    assert [r.value for r in R] == ["read_only", "data_modification", "irreversible"]
    assert R.parse("Data-Modification") is R.DATA_MODIFICATION
    with pytest.raises(InvalidPolicy, match="unknown risk level 'catastrophic'"):
        R.parse("catastrophic")


@pytest.mark.parametrize(
    ("policy", "tool", "confidence", "risk", "auto", "reason"),
    [
        # threshold equality passes
        (ApprovalPolicy("p", "pay*", 0.8, R.DATA_MODIFICATION), "pay", 0.8, R.DATA_MODIFICATION,
         True, "confidence 0.80 meets 0.80 and risk data_modification is within"),
        (ApprovalPolicy("payments", "pay*", 0.8, R.IRREVERSIBLE), "pay", 0.62, R.READ_ONLY,
         False, "confidence 0.62 is below 0.80 required by policy 'payments'"),
        (ApprovalPolicy("p", "pay*", 0.5, R.READ_ONLY), "pay", 0.9, R.DATA_MODIFICATION,
         False, "risk data_modification is above read_only allowed by policy 'p'"),
        # NaN and out-of-range confidence never auto-approve
        (ApprovalPolicy("p", "*", 0.0, R.IRREVERSIBLE), "x", math.nan, R.READ_ONLY,
         False, "confidence nan is not a number between 0 and 1"),
        (ApprovalPolicy("p", "*", 0.0, R.IRREVERSIBLE), "x", 1.5, R.READ_ONLY,
         False, "confidence 1.5 is not a number between 0 and 1"),
        (ApprovalPolicy("p", "*", 0.0, R.IRREVERSIBLE), "x", -0.1, R.READ_ONLY,
         False, "not a number between 0 and 1"),
        (ApprovalPolicy("strict", "*", 0.0, R.IRREVERSIBLE, require_explicit=True), "x", 1.0,
         R.READ_ONLY, False, "policy 'strict' requires a person to approve every call"),
        # '*' matches '/' and '.'
        (ApprovalPolicy("mcp", "github/*", 0.0, R.IRREVERSIBLE), "github/repos.delete", 0.0,
         R.IRREVERSIBLE, True, "under policy 'mcp'"),
    ],
)
def test_policy_table(
    policy: ApprovalPolicy, tool: str, confidence: float, risk: RiskLevel, auto: bool,
    reason: str,
) -> None:
    verdict = PolicySet([policy]).evaluate(tool, confidence=confidence, risk=risk)
    assert verdict.auto_approved is auto
    assert verdict.policy == policy.name
    assert reason in verdict.reason


def test_no_match_sends_to_a_person() -> None:
    verdict = PolicySet([ApprovalPolicy("reads", "get_*", 0.0, R.IRREVERSIBLE)]).evaluate(
        "delete_user", confidence=1.0, risk=R.READ_ONLY
    )
    assert not verdict.auto_approved
    assert verdict.policy is None
    assert verdict.reason == "no policy matches tool 'delete_user', so a person decides"


def test_first_match_alone_decides_even_when_a_later_policy_would_approve() -> None:
    policies = PolicySet([
        ApprovalPolicy("all-deletes-explicit", "delete_*", require_explicit=True),
        ApprovalPolicy("lenient", "*", 0.0, R.IRREVERSIBLE),
    ])
    shadowed = policies.evaluate("delete_user", confidence=1.0, risk=R.READ_ONLY)
    assert (shadowed.auto_approved, shadowed.policy) == (False, "all-deletes-explicit")
    other = policies.evaluate("get_user", confidence=0.0, risk=R.IRREVERSIBLE)
    assert (other.auto_approved, other.policy) == (True, "lenient")


def test_glob_features_and_anchoring() -> None:
    p = ApprovalPolicy("p", "get_?ser[0-9]", 0.0, R.IRREVERSIBLE)
    assert p.matches("get_user1") and p.matches("get_aser9")
    assert not p.matches("get_user10") and not p.matches("xget_user1")
    assert ApprovalPolicy("n", "[!d]*").matches("read") and not ApprovalPolicy(
        "n", "[!d]*").matches("delete")
    assert ApprovalPolicy("lit", "a.b").matches("a.b") and not ApprovalPolicy(
        "lit", "a.b").matches("axb")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tool_pattern": ""}, "tool_pattern must not be empty"),
        ({"tool_pattern": "   "}, "tool_pattern must not be empty"),
        ({"tool_pattern": "get_[abc"}, "unclosed '['"),
        ({"tool_pattern": "get_[]"}, "empty '[]' class"),
        ({"tool_pattern": "a\nb"}, "control characters"),
        ({"tool_pattern": "[z-a]"}, "malformed"),
        ({"min_confidence": 1.01}, "within [0, 1]"),
        ({"min_confidence": -0.5}, "within [0, 1]"),
        ({"min_confidence": math.nan}, "within [0, 1]"),
        ({"min_confidence": "high"}, "must be a number"),
        ({"max_risk_level": "catastrophic"}, "unknown risk level"),
        ({"name": ""}, "name must be a non-empty string"),
    ],
)
def test_invalid_policies_raise_a_clear_value_error(
    kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"name": "p", "tool_pattern": "x*", **kwargs}
    with pytest.raises(InvalidPolicy) as info:
        ApprovalPolicy(**args)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert message in str(info.value)


def test_from_file_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "policies.toml"
    toml.write_text(
        '[[policies]]\nname = "reads"\ntool_pattern = "get_*"\nmax_risk_level = "read_only"\n'
        '[[policies]]\nname = "payments"\ntool_pattern = "pay*"\nmin_confidence = 0.8\n'
        'max_risk_level = "data_modification"\napprovers = ["42"]\n'
    )
    from_toml = PolicySet.from_file(toml)
    assert [p.name for p in from_toml] == ["reads", "payments"]
    assert from_toml.policies[1].approvers == ("42",)
    data = {"policies": [{"name": p.name, "tool_pattern": p.tool_pattern,
                          "min_confidence": p.min_confidence,
                          "max_risk_level": p.max_risk_level.value} for p in from_toml]}
    js = tmp_path / "policies.json"
    js.write_text(json.dumps(data))
    from_json = PolicySet.from_file(js)
    verdict = from_json.evaluate("pay_bill", confidence=0.9, risk="data_modification")
    assert verdict.auto_approved and verdict.policy == "payments"


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ('[[policies]]\nname = "a"\ntool_pattern = "x"\n[[policies]]\nname = "b"\n'
         'tool_pattern = "y"\nmin_confidence = 2\n', ".toml", "policies[1].min_confidence"),
        ('[[policies]]\nname = "a"\ntool_pattern = "x"\nmax_risk_level = "huge"\n', ".toml",
         "policies[0].max_risk_level"),
        ('{"policies": [{"name": "a"}]}', ".json", "policies[0].tool_pattern: missing"),
        ('{"policies": [{"name": "a", "tool_pattern": "x", "colour": "red"}]}', ".json",
         "policies[0]: unknown field(s) colour"),
        ('{"policies": [{"name": "a", "tool_pattern": "[x"}]}', ".json",
         "policies[0].tool_pattern"),
        ("{not json", ".json", "not valid JSON"),
        ("policies = 3", ".toml", "'policies' must be a list"),
        ("x = 1", ".yaml", "must end in .toml or .json"),
    ],
)
def test_file_errors_name_the_file_the_index_and_the_field(
    tmp_path: Path, content: str, suffix: str, message: str
) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(InvalidPolicy) as info:
        PolicySet.from_file(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidPolicy, match="cannot read policy file"):
        PolicySet.from_file(tmp_path / "nope.toml")


def test_patterns_are_compiled_once_not_per_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    import loopgate_lc.policy as policy_module

    policies = PolicySet(
        ApprovalPolicy(f"p{i}", f"tool_{i}_*", 0.5, R.READ_ONLY) for i in range(10_000)
    )
    compiled: list[str] = []
    original = policy_module.compile_glob

    def counting(pattern: str):  # type: ignore[no-untyped-def]
        compiled.append(pattern)
        return original(pattern)

    monkeypatch.setattr(policy_module, "compile_glob", counting)
    for _ in range(3):
        verdict = policies.evaluate("tool_9999_x", confidence=0.9, risk=R.READ_ONLY)
        assert verdict.policy == "p9999" and verdict.auto_approved
    assert compiled == []
    policies.add(ApprovalPolicy("late", "*"))  # adding a policy compiles only that one
    assert compiled == ["*"]
    assert policies.evaluate("zzz", confidence=0.0, risk=R.READ_ONLY).policy == "late"


# Order is the only priority, however a pattern is written: policies are looked up by what
# their patterns fix outright (an exact name, a literal start or end), and these tests hold
# that lookup to the plain reading "the first policy in the list that matches decides".


def test_an_earlier_glob_decides_before_a_later_exact_name_and_the_reverse() -> None:
    glob_first = PolicySet([ApprovalPolicy("globbed", "deploy*", 0.0, R.IRREVERSIBLE),
                            ApprovalPolicy("named", "deploy", require_explicit=True)])
    assert glob_first.match("deploy").name == "globbed"  # type: ignore[union-attr]
    named_first = PolicySet([ApprovalPolicy("named", "deploy", require_explicit=True),
                             ApprovalPolicy("globbed", "deploy*", 0.0, R.IRREVERSIBLE)])
    assert named_first.match("deploy").name == "named"  # type: ignore[union-attr]
    assert named_first.match("deploy_prod").name == "globbed"  # type: ignore[union-attr]


def test_each_kind_of_pattern_finds_its_names_and_only_those() -> None:
    policies = PolicySet([
        ApprovalPolicy("dotted", "a.b"),          # exact: the dot is no wildcard
        ApprovalPolicy("ends", "*_delete"),       # a literal end only
        ApprovalPolicy("both", "get_*_v2"),       # a literal start and end
        ApprovalPolicy("class", "[xy]*"),         # no literal start: a class
        ApprovalPolicy("one", "?un"),             # no literal start: one character
        ApprovalPolicy("middle", "*admin*"),      # nothing fixed at either end
    ])
    expected = {
        "a.b": "dotted", "axb": None, "a.bc": None,
        "user_delete": "ends", "_delete": "ends", "user_delete_x": None,
        "get_user_v2": "both", "get__v2": "both", "get_user_v3": None,
        "xylophone": "class", "yes": "class", "zed": None,
        "run": "one", "un": None, "runs": None,
        "superadmin_tool": "middle", "admin": "middle",
    }
    for name, policy in expected.items():
        found = policies.match(name)
        assert (found.name if found else None) == policy, name


def test_a_shadow_policy_first_rides_along_with_the_enforced_one_after_it() -> None:
    policies = PolicySet([
        ApprovalPolicy("watch", "send_mail", 0.8, R.DATA_MODIFICATION, shadow=True),
        ApprovalPolicy("mail", "send_*", require_explicit=True),
    ])
    verdict = policies.evaluate("send_mail", confidence=0.9, risk=R.READ_ONLY)
    assert verdict.policy == "mail" and not verdict.auto_approved
    assert verdict.shadow is not None and verdict.shadow.policy == "watch"
    assert verdict.shadow.auto_approved
    other = policies.evaluate("send_sms", confidence=0.9, risk=R.READ_ONLY)
    assert other.policy == "mail" and other.shadow is None


def test_adding_a_policy_after_evaluating_changes_the_next_answer() -> None:
    policies = PolicySet([ApprovalPolicy("reads", "get_*", 0.0, R.IRREVERSIBLE)])
    assert policies.match("deploy") is None  # remembered as "no policy"
    policies.add(ApprovalPolicy("named", "deploy", require_explicit=True))
    assert policies.match("deploy").name == "named"  # type: ignore[union-attr]
    # a later policy never takes a name from an earlier one, remembered or not
    assert policies.match("get_user").name == "reads"  # type: ignore[union-attr]
    policies.add(ApprovalPolicy("users", "get_user"))
    assert policies.match("get_user").name == "reads"  # type: ignore[union-attr]
    policies.add(ApprovalPolicy("ends", "*_prod"))
    assert policies.match("deploy_prod").name == "ends"  # type: ignore[union-attr]


def test_the_index_agrees_with_trying_every_policy_in_order() -> None:
    rng = random.Random(11)
    alphabet = "ab_."
    pieces = ["a", "b", "_", ".", "*", "?", "[ab]", "[!a]"]

    def word(low: int, high: int, parts: list[str]) -> str:
        return "".join(rng.choice(parts) for _ in range(rng.randint(low, high)))

    for _ in range(40):
        listed = [ApprovalPolicy(f"p{i}", word(1, 5, pieces), shadow=rng.random() < 0.2)
                  for i in range(rng.randint(1, 120))]
        policies = PolicySet(listed)
        for name in {word(0, 6, list(alphabet)) for _ in range(60)}:
            enforced = next((p for p in listed if not p.shadow and p.matches(name)), None)
            first = next((p for p in listed if p.matches(name)), None)
            verdict = policies.evaluate(name, confidence=1.0, risk=R.READ_ONLY)
            assert policies.match(name) is enforced, (name, [p.tool_pattern for p in listed])
            assert verdict.policy == (enforced.name if enforced else None)
            watched = first if first is not None and first is not enforced else None
            assert (verdict.shadow.policy if verdict.shadow else None) == (
                watched.name if watched else None)


def test_globs_with_plain_characters_inside_only_find_names_holding_them() -> None:
    policies = PolicySet([*(ApprovalPolicy(f"svc{i}", f"*svc{i}*") for i in range(200)),
                          ApprovalPolicy("admins", "*admin*"),
                          ApprovalPolicy("rest", "*")])
    for name, policy in (("call_svc7_now", "svc7"), ("svc150", "svc1"), ("svc", "rest"),
                         ("superadmin", "admins"), ("x" * 5_000 + "svc42", "svc4"),
                         ("", "rest")):
        assert policies.match(name).name == policy, name  # type: ignore[union-attr]


def test_an_answer_found_while_a_policy_was_added_is_not_remembered_past_it() -> None:
    # guards evaluate in graph worker threads while Loopgate.add_policy may run: here the
    # add happens in the middle of a scan, deterministically, from inside a match
    policies = PolicySet()

    class AddsWhileTried(ApprovalPolicy):
        def matches(self, tool_name: str) -> bool:
            if len(policies) == 1:
                policies.add(ApprovalPolicy("late", tool_name))
            return False

    policies.add(AddsWhileTried("first", "*"))
    assert policies.match("deploy") is None  # the scan began before "late" existed
    assert policies.match("deploy").name == "late"  # type: ignore[union-attr]
