"""``Deployment``: one LangGraph Server the bridge watches, and how to reach it.

Kept apart from the driver so the CLI and the in-deployment app can build and check
deployments (from flags, environment or code) without importing the SDK.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from loopgate_lc.errors import ConfigurationError

__all__ = ["Deployment", "parse_deployments"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Deployment:
    """A LangGraph Server deployment whose paused threads people decide.

    Args:
        url: The deployment's base URL (``http://127.0.0.1:2024``, a hosted
            ``https://...langgraph.app``).
        name: How requests and the audit name it (``graph`` of its requests); unique
            per gateway. Default: ``langgraph``.
        api_key: Sent as ``X-Api-Key``; None uses the SDK's environment variables
            (``LANGGRAPH_API_KEY``, ``LANGSMITH_API_KEY``).
        graphs: Graph ids or assistant ids whose threads are watched; empty watches
            every graph of the deployment.
        include_foreign: Also file interrupts loopgate_lc did not raise (LangChain's
            ``HumanInTheLoopMiddleware``, plain ``interrupt("question")``); by default
            only loopgate_lc requests are filed, so other human-in-the-loop code on the
            same deployment keeps working untouched.
        poll_interval: Seconds between searches for paused threads. Run webhooks tell
            the bridge sooner; polling catches what they miss.
        page_size, max_pages: Each search reads at most ``page_size * max_pages``
            threads, newest first, and stops at the last one it saw before.
        lease: Seconds after which a resume another bridge process claimed and never
            finished is taken over (it checks the server's runs first, so a resume that
            reached the server is never sent twice). A resume the server refuses because
            the thread runs is sent again for up to 5 s (at most half the lease), then its
            claim is given back, so it never waits for the lease.
        timeout: Seconds each call to the server may take.
        headers: Extra HTTP headers for every call (a proxy's auth, say).
    """

    url: str
    name: str = "langgraph"
    api_key: str | None = field(default=None, repr=False)
    graphs: tuple[str, ...] = ()
    include_foreign: bool = False
    poll_interval: float = 2.0
    page_size: int = 100
    max_pages: int = 10
    lease: float = 30.0
    timeout: float = 10.0
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(
                f"deployment {self.name!r}: the URL must be http(s)://host[:port], got "
                f"{self.url!r}")
        if not _NAME.match(self.name):
            raise ConfigurationError(
                f"deployment name must be 1-64 letters, digits, '_', '.' or '-', got "
                f"{self.name!r}")
        object.__setattr__(self, "url", self.url.rstrip("/"))
        object.__setattr__(self, "graphs", tuple(self.graphs))
        for label in ("poll_interval", "lease", "timeout"):
            value = getattr(self, label)
            if not isinstance(value, int | float) or math.isnan(value) or value <= 0 \
                    or math.isinf(value):
                raise ConfigurationError(
                    f"deployment {self.name!r}: {label} must be a positive number of "
                    f"seconds, got {value!r}")
        for label in ("page_size", "max_pages"):
            value = getattr(self, label)
            if not isinstance(value, int) or not 1 <= value <= 1000:
                raise ConfigurationError(
                    f"deployment {self.name!r}: {label} must be a whole number from 1 to "
                    f"1000, got {value!r}")

    def watches(self, graph_id: str | None, assistant_id: str | None) -> bool:
        """Whether a thread run by this graph or assistant is this bridge's to file."""
        return not self.graphs or graph_id in self.graphs or assistant_id in self.graphs


def parse_deployments(specs: Sequence[str], *, graphs: Sequence[str] = (),
                      include_foreign: bool = False, poll_interval: float | None = None,
                      env: Mapping[str, str] | None = None) -> list[Deployment]:
    """Deployments from ``[name=]url`` specs (CLI flags, ``LOOPGATE_LANGGRAPH``).

    Each deployment's API key comes from ``LOOPGATE_LANGGRAPH_API_KEY_<NAME>`` (the name
    upper-cased, ``-`` and ``.`` as ``_``), else ``LANGGRAPH_API_KEY``.

    Raises:
        ConfigurationError: A spec is malformed or two deployments share a name.
    """
    env = os.environ if env is None else env
    found: list[Deployment] = []
    for spec in specs:
        spec = spec.strip()
        if not spec:
            continue
        name, sep, url = spec.partition("=")
        if not sep or "://" in name:
            name, url = "", spec
        if not name:
            name = "langgraph" if not found else f"langgraph{len(found) + 1}"
        key_var = "LOOPGATE_LANGGRAPH_API_KEY_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
        api_key = env.get(key_var) or env.get("LANGGRAPH_API_KEY") or None
        deployment = Deployment(url=url, name=name, api_key=api_key, graphs=tuple(graphs),
                                include_foreign=include_foreign)
        if poll_interval is not None:
            deployment = dataclasses.replace(deployment, poll_interval=poll_interval)
        found.append(deployment)
    names = [d.name for d in found]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"deployment names must be unique, got {names}")
    return found
