"""Waiting, bounded, for something a test cannot be told about directly."""

from __future__ import annotations

import time
from collections.abc import Callable


def until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll (bounded) until ``predicate()`` holds; a failing test waits ``timeout``."""
    for _ in range(int(timeout / 0.005)):
        if predicate():
            return
        time.sleep(0.005)
    raise AssertionError("condition not met in time")
