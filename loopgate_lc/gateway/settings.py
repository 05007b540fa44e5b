"""What a gateway is configured with: timeouts, what a timeout means, escalation steps.

Plain values checked once, at construction, so every part can trust them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from loopgate_lc.errors import ConfigurationError

__all__ = ["DEFAULT_TIMEOUT", "Escalation", "OnTimeout", "seconds"]

DEFAULT_TIMEOUT = 3600.0
"""Seconds a request waits when neither it nor the gateway names a timeout. One hour,
not the original server's 300 s: runs are checkpointed, so a wait costs nothing, and a
person answering from a phone is often away for more than five minutes; yet a forgotten
request still ends as ``timeout`` (fail closed) within the same working session."""

OnTimeout = Literal["reject", "approve", "escalate"]


@dataclass(frozen=True)
class Escalation:
    """One step of ``on_timeout="escalate"``: when the deadline passes, tell these
    notifiers (by name) and let these approvers decide too, for ``timeout`` more seconds.
    """

    timeout: float
    notifiers: tuple[str, ...] = ()
    approvers: tuple[str, ...] = ()


def seconds(value: float | timedelta | None) -> float | None:
    """A timeout as positive seconds (None stays None).

    Raises:
        ConfigurationError: Zero, negative or NaN: a request that can never wait is a
            mistake, not a way to skip people.
    """
    if value is None:
        return None
    found = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if math.isnan(found) or found <= 0:
        raise ConfigurationError(f"a timeout must be a positive number of seconds, got {value!r}")
    return found
