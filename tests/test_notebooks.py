"""Every notebook executes top to bottom, offline, in a kernel running this interpreter, and
is committed with its outputs cleared."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat import NotebookNode

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "python3"

# notebook -> text its outputs must contain (proof the story ran, not just that it did not fail)
EXPECTED = {
    "01_quickstart": [
        "deployed so far: []",
        "deployed: ['api@production']",
        "api deployed to staging",
        "refused: request",
        "decided:edited",
    ],
    "02_policies": [
        "pay_invoice       0.62  data_modification  PERSON",
        "policy 'github via MCP' requires a person to approve every call",
        "no policy matches tool 'restart', so a person decides",
        "InvalidPolicy: policy 'typo': min_confidence must be within [0, 1], got 1.5",
        "confidence [",
        "shadow:   payments-strict person - confidence 0.92 is below 0.95",
        "!! 1 call(s) a person rejected would run automatically",
        "send_email   1      1      0     0          1           1               mail (1)",
        "<Figure size 750x300 with 1 Axes>",  # the chart rendered
    ],
    "03_telegram": [
        "Pay 4,800 EUR to ACME GmbH?",
        "[ ✅ Approve ]",
        "request approved by telegram:4242 (@ana) via telegram",
        "money sent: [(4800, 'ACME GmbH')]",
        "request rejected by telegram:4242 (@ana): Already paid by bank transfer last week",
    ],
    "04_custom_node": [
        "refused: Input should be 'Send now', 'Send Monday 9:00' or 'Do not send'",
        "when: Send Monday 9:00",
        "when: never",
        "outbox still holds only the first announcement: 1",
    ],
    "05_decide_in_jupyter": [
        "asked: deploy {'service': 'api', 'environment': 'production'}",
        "refused: True | deployed so far: []",
        "decided: edited | deployed: ['api@staging']",
        "buttons disabled: True",
        "options: ['Restart', 'Not now']",
        "shown: answered by cli:ann via cli",
        "late click: True",
    ],
}


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``python3`` kernelspec pinned to this interpreter, visible to this test only.

    ``JUPYTER_PATH`` comes first in Jupyter's search path, so a kernelspec elsewhere on the
    machine (a user-wide one for another Python) cannot be picked by mistake; nothing is
    installed anywhere. The kernel inherits no Telegram or Loopgate settings, so no real bot
    or store can be reached.
    """
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "loopgate_lc tests",
        "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    for name in [n for n in os.environ if n.startswith(("TELEGRAM_", "LOOPGATE_"))]:
        monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    return work


def execute(nb: NotebookNode, cwd: Path) -> NotebookNode:
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=60,
                            resources={"metadata": {"path": str(cwd)}})
    return client.execute()


def outputs_text(nb: NotebookNode) -> str:
    parts: list[str] = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                parts.append(output.text)
            elif "data" in output:
                parts.append(str(output.data.get("text/plain", "")))
    return "".join(parts)


def test_every_notebook_has_expectations() -> None:
    assert [p.stem for p in NOTEBOOKS] == sorted(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_valid_and_has_no_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.kernelspec.name == KERNEL
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, "a notebook without code"
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"cells {dirty} of {path.name} still have outputs; clear them"


def test_the_kernel_runs_this_interpreter(kernel_env: Path) -> None:
    probe = nbformat.v4.new_notebook()
    probe.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    ran = execute(probe, kernel_env)
    assert outputs_text(ran).strip() == sys.executable


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_offline(path: Path, kernel_env: Path) -> None:
    ran = execute(nbformat.read(path, as_version=4), kernel_env)
    text = outputs_text(ran)
    missing = [line for line in EXPECTED[path.stem] if line not in text]
    assert not missing, f"{path.name}: missing {missing} in:\n{text}"
    errors = [o for c in ran.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert list(kernel_env.iterdir()) == []  # nothing left in the working directory
