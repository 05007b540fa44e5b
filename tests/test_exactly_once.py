"""An approved body runs exactly once across processes and sibling resumes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.deploy_graph", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    )
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.timeout(600)  # starts interpreters in turn; the guard only stops a hung test
def test_resume_in_a_new_process_from_a_sqlite_checkpoint(tmp_path: Path) -> None:
    db, log = str(tmp_path / "checkpoints.db"), tmp_path / "side_effects.log"
    log.touch()
    pauses = run(db, str(log), "start", "t1")
    by_call = {p["call"]: p["id"] for p in pauses}
    assert set(by_call) == {"d1", "d2"}
    assert log.read_text() == ""  # nothing ran before a person decided

    approve = json.dumps({"type": "approve"})
    left = run(db, str(log), "resume", "t1", by_call["d1"], approve)  # process 2
    assert [p["call"] for p in left] == ["d2"]
    assert log.read_text() == "deploy production\n"

    # process 3 answers the sibling; the first approved body must not run again
    assert run(db, str(log), "resume", "t1", by_call["d2"], approve) == []
    assert log.read_text() == "deploy production\ndeploy staging\n"

    # a duplicate delivery of an answer changes nothing
    run(db, str(log), "resume", "t1", by_call["d1"], approve)
    assert log.read_text().count("deploy production") == 1
