"""The gateway: files pauses, reaches people, takes answers once, resumes runs.

:class:`Loopgate` is a small facade over parts with one job each, every one handed its
collaborators (none reaches back into the facade):

- ``filing``: a pause or question becomes a request; the only deadline computation;
- ``deciding``: the one compare-and-set path, approver checks, validation once;
- ``timers``: deadlines from a heap; timeouts and escalation;
- ``outbox``: deliveries to notifiers, retried, given up with a record;
- ``resuming``: claims, leases, recovery; registered graphs run in the background;
- ``running``: ``run``/``stream`` for their caller, one implementation, two thin shells;
- ``waiting``, ``asking``, ``audit``, ``drivers``, ``desk`` (what notifiers get),
  ``validation``, ``settings``, ``tasks``;
- ``oneshot``: the deciding part alone, for a process that lives for one decision (the
  CLI), without the facade's timers, notifiers and loop thread.

Everything stateful runs on the gateway's home event loop (see ``_portal``): the loop of
whoever opens it asynchronously (an ASGI server, a notebook, ``async with``), else a private
loop thread, so the same object works from scripts, notebooks and ASGI servers; every
public coroutine has a blocking twin without the ``a`` prefix.
"""

from typing import TYPE_CHECKING

from loopgate_lc._lazy import lazy_exports

if TYPE_CHECKING:
    from loopgate_lc.gateway.audit import args_hash, shadow_details
    from loopgate_lc.gateway.drivers import GraphDriver, PauseReport
    from loopgate_lc.gateway.facade import Loopgate
    from loopgate_lc.gateway.settings import DEFAULT_TIMEOUT, Escalation, OnTimeout

__all__ = [
    "DEFAULT_TIMEOUT",
    "Escalation",
    "GraphDriver",
    "Loopgate",
    "OnTimeout",
    "PauseReport",
    "args_hash",
    "shadow_details",
]

# Imported on first use: importing one part (as the CLI's decisions do) must not bring in
# the facade and every other part with it.
__getattr__ = lazy_exports(__name__, {
    "DEFAULT_TIMEOUT": "loopgate_lc.gateway.settings",
    "Escalation": "loopgate_lc.gateway.settings",
    "GraphDriver": "loopgate_lc.gateway.drivers",
    "Loopgate": "loopgate_lc.gateway.facade",
    "OnTimeout": "loopgate_lc.gateway.settings",
    "PauseReport": "loopgate_lc.gateway.drivers",
    "args_hash": "loopgate_lc.gateway.audit",
    "shadow_details": "loopgate_lc.gateway.audit",
})
