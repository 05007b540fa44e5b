"""Start ``langgraph dev`` for this folder on a free loopback port, offline, for the
examples' ``--auto`` runs (your own deployment replaces this)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

FOLDER = Path(__file__).resolve().parent


@contextlib.contextmanager
def langgraph_dev(config: str = "langgraph.json", **env: str) -> Iterator[str]:
    """Serve a fresh copy of this folder's agent (``langgraph dev`` keeps threads in the
    folder it serves); yields its URL; stops it afterwards."""
    scratch = tempfile.TemporaryDirectory()
    folder = Path(scratch.name) / "deployment"
    shutil.copytree(FOLDER, folder, ignore=shutil.ignore_patterns(".langgraph_api",
                                                                   "__pycache__"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cli = Path(sys.executable).parent / "langgraph"
    if not cli.exists():
        raise SystemExit("this example needs: pip install 'langgraph-cli[inmem]'")
    server = subprocess.Popen(
        [str(cli), "dev", "--config", config, "--no-browser", "--no-reload",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "LANGGRAPH_CLI_NO_ANALYTICS": "1",
             "LANGGRAPH_NO_VERSION_CHECK": "true", "LANGSMITH_TRACING": "false", **env})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # up to a minute
            if server.poll() is not None:
                raise SystemExit(f"langgraph dev exited with {server.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/ok", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            raise SystemExit("langgraph dev did not start within a minute")
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(15)
        scratch.cleanup()
