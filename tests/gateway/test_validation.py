"""A decision is validated once, and nothing slow runs on the gateway's event loop.

Run in a fresh interpreter: whether ``jsonschema`` gets imported, and on which thread, is
only visible before anything in the process has imported it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import json, sys, threading, time
imports = []
sys.addaudithook(lambda event, args: imports.append(threading.current_thread().name)
                 if event == "import" and args[0] == "jsonschema" else None)
from tests.support.crash_child import build
from loopgate_lc.errors import InvalidDecision
from loopgate_lc.gateway import Loopgate

gate = Loopgate(store="memory://").open()
gate.register_graph("deployer", build(sys.argv[1], sys.argv[2]))
for thread in ("a", "b"):
    gate.start("deployer", {"messages": [("user", thread)]},
               {"configurable": {"thread_id": thread}})
for _ in range(3000):
    if len(gate.pending()) == 2:
        break
    time.sleep(0.01)
a, b = sorted(gate.pending(), key=lambda r: r.thread_id)
gate.respond(a.id, {"type": "approve"})
after_approve = "jsonschema" in sys.modules
try:
    gate.respond(b.id, {"type": "edit",
                        "edited_action": {"name": "deploy", "args": {"build": 7}}})
    refused = None
except InvalidDecision as exc:
    refused = str(exc)
decided = gate.respond(b.id, {"type": "edit",
                              "edited_action": {"name": "deploy", "args": {"build": "z"}}})
gate.close()
print(json.dumps({"after_approve": after_approve, "imported_on": imports,
                  "refused": refused, "decided": decided.status.value,
                  "has_schema": "response_schema" in b.payload}))
"""


def test_jsonschema_is_imported_off_the_loop_and_only_for_what_it_checks(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "checkpoints.db"), str(tmp_path / "log")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["has_schema"]
    # an approve is checked in one pass; the schema has nothing to add to it
    assert seen["after_approve"] is False
    # an edit's arguments meet the tool's own schema, compiled in a worker thread: the
    # gateway's loop ("loopgate") never waits for the import
    assert seen["imported_on"], "the edit was never checked against its schema"
    assert "loopgate" not in seen["imported_on"]
    assert seen["refused"] is not None and "build" in seen["refused"]
    assert seen["decided"] == "edited"
