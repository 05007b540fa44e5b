"""``loopgate-lc approve/reject`` decide as ``--as NAME``: where a session names its
approvers, the CLI decides only as one of them (it used to skip the list)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from loopgate_lc.gateway import Loopgate


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loopgate_lc.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))


def test_the_cli_decides_only_as_a_named_approver(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'cli.db'}"
    with Loopgate(store) as gateway:
        gateway.register_session("finance", "bot", approvers=["ann"])
        record = gateway.submit("pay?", session_id="finance")
    unnamed = _cli("approve", record.id, "--store", store, cwd=tmp_path)
    assert unnamed.returncode == 1
    assert "decide as one of them with --as NAME" in unnamed.stderr
    stranger = _cli("reject", record.id, "--reason", "no", "--as", "bob", "--store", store,
                    cwd=tmp_path)
    assert stranger.returncode == 1 and "not an approver" in stranger.stderr
    allowed = _cli("approve", record.id, "--as", "ann", "--store", store, cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    with Loopgate(store) as gateway:
        events = gateway.audit(request_id=record.id)
        assert gateway.get(record.id).decided_by == "cli:ann"
    refusals = [(e.channel, e.details["approver_id"]) for e in events
                if e.event == "unauthorized"]
    assert refusals == [("cli", None), ("cli", "bob")]
