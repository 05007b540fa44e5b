"""Shadow policies and simulation: watch a policy before enforcing it, replay history
against a policy file. The history is recorded by real agent runs through a gateway."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.tools import BaseTool, tool
from langgraph.checkpoint.memory import InMemorySaver

from loopgate_lc import ApprovalPolicy, InvalidPolicy, PolicySet, RiskLevel, guard
from loopgate_lc.cli import main
from loopgate_lc.gateway import Loopgate
from loopgate_lc.simulate import simulate
from loopgate_lc.testing import ScriptedApprover, ScriptedChatModel, ai, call

RISKS = {"read_file": "read_only", "send_email": "data_modification",
         "delete_file": "irreversible"}

ENFORCED = [ApprovalPolicy("reads", "read_*", 0.5, RiskLevel.READ_ONLY)]


def office_tools(runs: Counter[str], policies: Any) -> list[BaseTool]:
    @tool
    def read_file(path: str) -> str:
        """Read a file."""
        runs["read_file"] += 1
        return "contents"

    @tool
    def send_email(to: str) -> str:
        """Send an email."""
        runs["send_email"] += 1
        return "sent"

    @tool
    def delete_file(path: str) -> str:
        """Delete a file."""
        runs["delete_file"] += 1
        return "deleted"

    return [guard(t, policies=policies, risk=RISKS[t.name], confidence=0.9)
            for t in (read_file, send_email, delete_file)]


def record_history(store: str, policies: Any = ENFORCED, hooks: Any = None) -> Counter[str]:
    """Five calls: two reads run automatically; a person approves one delete and rejects
    the other, and rejects the email."""
    verdicts = {"d-1": {"type": "approve"}, "d-2": {"type": "reject", "message": "keep it"},
                "e-1": {"type": "reject", "message": "not to the CEO"}}
    runs: Counter[str] = Counter()
    approver = ScriptedApprover(lambda r: verdicts[r.payload["tool_call_id"]], actor="bob")
    script = [ai("", call("read_file", "r-1", path="a"), call("read_file", "r-2", path="b"),
                 call("delete_file", "d-1", path="x"), call("delete_file", "d-2", path="y"),
                 call("send_email", "e-1", to="ceo")),
              "done"]
    with Loopgate(store, notifiers=[approver], hooks=hooks) as gate:
        agent = create_agent(ScriptedChatModel(script=script),
                             tools=office_tools(runs, policies), checkpointer=InMemorySaver())
        gate.run(agent, {"messages": [("user", "tidy up")]},
                 {"configurable": {"thread_id": "history"}})
    return runs


NEW_POLICIES = PolicySet([
    ApprovalPolicy("reads", "read_*", 0.5, RiskLevel.READ_ONLY),
    ApprovalPolicy("deletes", "delete_*", require_explicit=True),
    ApprovalPolicy("mail", "send_*", 0.8, RiskLevel.DATA_MODIFICATION),
])


def test_simulation_replays_recorded_calls_and_flags_rejections_that_would_run(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'history.db'}"
    runs = record_history(store)
    assert runs == Counter(read_file=2, delete_file=1)
    with Loopgate(store) as gate:
        result = simulate(gate.audit(), NEW_POLICIES)
    summary = {s.tool: s for s in result.tools}
    # the email a person rejected would now run unseen: it is flagged, and listed first
    assert [c.tool for c in result.flagged] == ["send_email"]
    assert result.flagged[0].decided_by == "bob"
    assert result.tools[0].tool == "send_email"
    assert summary["send_email"].rejections_would_run == 1
    assert (summary["send_email"].asked_before, summary["send_email"].would_auto) == (1, 1)
    assert summary["send_email"].policies == {"mail": 1}
    # deletes stay with a person, under the new explicit policy
    assert (summary["delete_file"].would_ask, summary["delete_file"].rejections_would_run) == (
        2, 0)
    assert summary["delete_file"].policies == {"deletes": 2}
    # reads were automatic and stay so
    assert (summary["read_file"].auto_before, summary["read_file"].would_auto) == (2, 2)
    assert result.skipped == 0
    assert {c.outcome for c in result.calls if c.tool == "delete_file"} == {
        "approved", "rejected"}


def test_a_stricter_file_sends_automatic_calls_to_a_person(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'history.db'}"
    record_history(store)
    strict = PolicySet([ApprovalPolicy("reads", "read_*", 0.95, RiskLevel.READ_ONLY)])
    with Loopgate(store) as gate:
        result = simulate(gate.audit(), strict)
    reads = next(s for s in result.tools if s.tool == "read_file")
    assert (reads.auto_before, reads.would_ask, reads.would_auto) == (2, 2, 0)
    assert result.flagged == []


def test_simulate_cli_prints_the_table_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    store = f"sqlite:///{tmp_path / 'history.db'}"
    record_history(store)
    policy_file = tmp_path / "new.toml"
    policy_file.write_text(
        '[[policies]]\nname = "reads"\ntool_pattern = "read_*"\nmin_confidence = 0.5\n'
        'max_risk_level = "read_only"\n\n'
        '[[policies]]\nname = "mail"\ntool_pattern = "send_*"\nmin_confidence = 0.8\n'
        'max_risk_level = "data_modification"\n')
    assert main(["simulate", "--store", store, "--policies", str(policy_file)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("!! 1 call(s) a person rejected would run automatically")
    assert "send_email" in text.splitlines()[1]
    assert main(["simulate", "--store", store, "--policies", str(policy_file), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [f["tool"] for f in data["flagged"]] == ["send_email"]
    tools = {row["tool"]: row for row in data["tools"]}
    # no policy in the file matches deletes, so both would go to a person
    assert tools["delete_file"]["would_ask"] == 2 and tools["delete_file"]["policies"] == {
        "(none)": 2}


def test_simulate_cli_names_a_bad_policy_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[policies]]\nname = "x"\ntool_pattern = "*"\nshadow = "yes"\n')
    store = f"sqlite:///{tmp_path / 'history.db'}"
    assert main(["simulate", "--store", store, "--policies", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "policies[0].shadow" in err and "true or false" in err


def test_simulate_refuses_anything_but_a_policy_set() -> None:
    with pytest.raises(InvalidPolicy):
        simulate([], ENFORCED)  # type: ignore[arg-type]


# --- shadow policies --------------------------------------------------------------------


def test_a_shadow_policy_decides_nothing_but_reports_what_it_would_do() -> None:
    policies = PolicySet([
        ApprovalPolicy("strict-reads", "read_*", 0.99, RiskLevel.READ_ONLY, shadow=True),
        ApprovalPolicy("reads", "read_*", 0.5, RiskLevel.READ_ONLY),
    ])
    verdict = policies.evaluate("read_file", confidence=0.9, risk="read_only")
    assert verdict.auto_approved and verdict.policy == "reads"
    assert verdict.shadow is not None
    assert (verdict.shadow.auto_approved, verdict.shadow.policy) == (False, "strict-reads")
    assert "below 0.99" in verdict.shadow.reason
    # a tool no shadow policy matches carries no shadow verdict
    assert policies.evaluate("write", confidence=1, risk="read_only").shadow is None
    # and a shadow policy alone never approves anything
    alone = PolicySet([ApprovalPolicy("lenient", "*", 0, RiskLevel.IRREVERSIBLE, shadow=True)])
    verdict = alone.evaluate("delete_file", confidence=1, risk="irreversible")
    assert not verdict.auto_approved and verdict.policy is None
    assert verdict.shadow is not None and verdict.shadow.auto_approved


def test_shadow_policies_load_from_files(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"policies": [
        {"name": "watch", "tool_pattern": "*", "shadow": True},
        {"name": "all", "tool_pattern": "*", "min_confidence": 0.5},
    ]}))
    loaded = PolicySet.from_file(path)
    assert [p.shadow for p in loaded] == [True, False]
    assert loaded.match("anything") is not None and loaded.match("anything").name == "all"


def test_shadow_verdicts_reach_the_audit_for_automatic_and_asked_calls(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'shadow.db'}"
    watched = [
        # would ask for reads (stricter) and would let emails run (looser)
        ApprovalPolicy("strict-reads", "read_*", 0.99, RiskLevel.READ_ONLY, shadow=True),
        ApprovalPolicy("loose-mail", "send_*", 0, RiskLevel.DATA_MODIFICATION, shadow=True),
        *ENFORCED,
    ]
    runs = record_history(store, policies=watched)
    # enforcement is unchanged: the same calls ran as without the shadow policies
    assert runs == Counter(read_file=2, delete_file=1)
    with Loopgate(store) as gate:
        events = gate.audit()
    shadow = [e for e in events if e.event == "shadow"]
    by_tool = Counter(e.details["tool"] for e in shadow)
    assert by_tool == Counter(read_file=2, send_email=1)
    mail = next(e for e in shadow if e.details["tool"] == "send_email")
    assert mail.details["would"] == "auto" and mail.details["enforced"] == "ask"
    assert mail.details["policy"] == "loose-mail" and mail.details["agrees"] is False
    assert mail.request_id is not None
    reads = [e for e in shadow if e.details["tool"] == "read_file"]
    assert all(e.details["would"] == "ask" and e.details["enforced"] == "auto" for e in reads)
    assert all(e.details["enforced_policy"] == "reads" for e in reads)
