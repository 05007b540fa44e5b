"""Notifiers depend on the narrow ``Desk``, never on the gateway or its store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from loopgate_lc.gateway import Loopgate
from loopgate_lc.notifiers.base import Desk
from loopgate_lc.testing import ScriptedApprover

ROOT = Path(__file__).resolve().parents[2]


def test_notifiers_import_without_the_gateway() -> None:
    code = ("import sys, loopgate_lc.notifiers.base, loopgate_lc.notifiers.telegram, "
            "loopgate_lc.notifiers.console; "
            "print([m for m in sys.modules if m.startswith('loopgate_lc.gateway')])")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


class _Keeper(ScriptedApprover):
    """Records what it was started with."""

    started_with: object = None

    async def start(self, desk: Desk) -> None:
        self.started_with = desk
        await super().start(desk)


def test_a_listening_notifier_gets_a_desk_not_the_gateway_or_its_store() -> None:
    keeper = _Keeper()
    with Loopgate(store="memory://", notifiers=[keeper]) as gate:
        desk = keeper.started_with
        assert desk is not None and desk is not gate and desk is not gate.store
        assert not hasattr(desk, "store")
        record = gate.submit("ship it?")
        decided = gate.wait(record.id, timeout=30)  # the scripted approver decided
        assert decided.status.value == "approved"
        assert decided.decided_by == keeper.actor
