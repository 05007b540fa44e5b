"""Every notebook executes top to bottom, offline, in a kernel running this interpreter, and
is committed with its outputs cleared."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import KernelManager
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


# one kernel for the whole module (and so on one pytest-xdist worker): starting a kernel and
# importing LangChain in it again for every notebook was most of these tests' time
pytestmark = pytest.mark.xdist_group("notebook-kernel")


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelManager]:
    """A ``python3`` kernel running this interpreter, shared by this module's tests.

    Its kernelspec is pinned to this interpreter and visible to this kernel only:
    ``JUPYTER_PATH`` comes first in Jupyter's search path, so a kernelspec elsewhere on the
    machine (a user-wide one for another Python) cannot be picked by mistake; nothing is
    installed anywhere. The kernel inherits no Telegram or Loopgate settings, so no real bot
    or store can be reached. Each notebook starts from an empty namespace (``%reset``) in a
    working directory of its own.
    """
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "loopgate_lc tests",
        "language": "python",
    }))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("JUPYTER_PATH", str(root))
        for name in [n for n in os.environ if n.startswith(("TELEGRAM_", "LOOPGATE_"))]:
            env.delenv(name)
        manager = KernelManager(kernel_name=KERNEL)
        manager.start_kernel(cwd=str(root))
    try:
        yield manager
    finally:
        manager.shutdown_kernel(now=True)


@pytest.fixture
def kernel_env(tmp_path: Path) -> Path:
    """An empty working directory for one notebook."""
    work = tmp_path / "work"
    work.mkdir()
    return work


def execute(nb: NotebookNode, kernel: KernelManager, cwd: Path) -> NotebookNode:
    """Run every cell of ``nb`` on the shared kernel, from a clean namespace in ``cwd``."""
    fresh = nbformat.v4.new_code_cell(
        f"%reset -f\nimport os as _os\n_os.chdir({str(cwd)!r})\ndel _os")
    nb.cells.insert(0, fresh)
    client = NotebookClient(nb, km=kernel, timeout=60)
    try:
        ran = client.execute()
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
    del ran.cells[0]
    return ran


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


def test_the_kernel_runs_this_interpreter(kernel: KernelManager, kernel_env: Path) -> None:
    probe = nbformat.v4.new_notebook()
    probe.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    ran = execute(probe, kernel, kernel_env)
    assert outputs_text(ran).strip() == sys.executable


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_offline(path: Path, kernel: KernelManager, kernel_env: Path) -> None:
    ran = execute(nbformat.read(path, as_version=4), kernel, kernel_env)
    text = outputs_text(ran)
    missing = [line for line in EXPECTED[path.stem] if line not in text]
    assert not missing, f"{path.name}: missing {missing} in:\n{text}"
    errors = [o for c in ran.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert list(kernel_env.iterdir()) == []  # nothing left in the working directory
