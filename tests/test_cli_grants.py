"""``loopgate-lc approve --grant``, ``grants`` and ``revoke-grant`` on a SQLite store: a
person at a terminal makes, lists and revokes remembered permissions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loopgate_lc.cli import main
from loopgate_lc.gateway import Loopgate


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def gateway(store: str) -> Any:
    with Loopgate(store) as gw:
        gw.register_session("ops", client_id="ci")
        yield gw


def deploy(gateway: Loopgate, env: str = "staging") -> Any:
    return gateway.submit("deploy?", tool_name="deploy", args={"env": env}, session_id="ops",
                          client_id="ci")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_approve_with_a_grant_then_list_and_revoke(
        gateway: Loopgate, store: str, capsys: pytest.CaptureFixture[str]) -> None:
    first = deploy(gateway)
    code, out, err = cli(capsys, "approve", first.id, "--as", "ann", "--store", store,
                         "--grant", json.dumps({"scope": "session", "ttl_seconds": 600,
                                                "args": {"env": {"one_of": ["staging",
                                                                            "dev"]}}}))
    assert code == 0, err
    assert "approved" in out
    assert not deploy(gateway, "dev").pending
    assert deploy(gateway, "production").pending

    code, out, _ = cli(capsys, "grants", "--store", store)
    [grant] = gateway.grants()
    lines = out.splitlines()
    assert lines[-1] == "1 grants"
    assert lines[0].startswith(f"{grant.id}  deploy")
    assert "session=ops" in lines[0] and "by cli:ann" in lines[0]
    assert 'env in ["staging", "dev"]' in lines[0]
    code, out, _ = cli(capsys, "grants", "--json", "--store", store)
    assert [json.loads(line)["id"] for line in out.splitlines()] == [grant.id]
    assert cli(capsys, "grants", "--tool", "other", "--store", store)[1] == "no grants\n"

    code, out, _ = cli(capsys, "revoke-grant", grant.id, "--as", "bob", "--store", store)
    assert code == 0
    assert f"grant {grant.id} (deploy): revoked by cli:bob at " in out
    assert deploy(gateway, "dev").pending
    assert cli(capsys, "grants", "--store", store)[1] == "no grants\n"
    code, out, _ = cli(capsys, "grants", "--all", "--store", store)
    assert "revoked by cli:bob" in out.splitlines()[0]
    audit = [e for e in gateway.audit() if e.event.startswith("grant_")]
    assert [(e.event, e.actor, e.channel) for e in audit] == [
        ("grant_created", "cli:ann", "cli"), ("grant_revoked", "cli:bob", "cli")]


def test_unknown_grants_and_bad_grants_exit_non_zero(
        gateway: Loopgate, store: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "revoke-grant", "g_nope", "--store", store)
    assert code == 1
    assert "no grant with id 'g_nope'" in err
    record = deploy(gateway)
    code, _, err = cli(capsys, "approve", record.id, "--store", store,
                       "--grant", '{"scope": "session"}')
    assert code == 1
    assert "exactly one of ttl_seconds, expires_at or until_revoked" in err
    assert gateway.get(record.id).pending
    with pytest.raises(SystemExit) as usage:
        main(["approve", record.id, "--store", store, "--grant", "[1]"])
    assert usage.value.code == 2
    assert "must be a JSON object" in capsys.readouterr().err


def test_grants_never_create_a_database(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    store = f"sqlite:///{tmp_path / 'absent.db'}"
    assert cli(capsys, "grants", "--store", store)[1] == "no grants\n"
    assert cli(capsys, "revoke-grant", "g_x", "--store", store)[0] == 1
    assert not (tmp_path / "absent.db").exists()
