"""Shared fixtures: fresh thread configs and side-effect counters."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest

_threads = itertools.count()


@pytest.fixture
def config() -> dict[str, Any]:
    """A LangGraph config on a thread no other test uses."""
    return {"configurable": {"thread_id": f"thread-{next(_threads)}"}}


@pytest.fixture
def runs() -> Counter[str]:
    """How often each tool body ran: the exactly-once invariant is read from here."""
    return Counter()
