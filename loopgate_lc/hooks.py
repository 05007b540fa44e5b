"""Lifecycle hooks: code that runs when a request is filed, notified, decided, timed out,
cancelled, resumed into its run, or when something fails.

Each hook fires exactly once per event. A hook that raises never loses the decision: the
error goes to ``on_error`` (and the audit log) and the gateway carries on. ``on_request``
alone may change the outcome, by returning a :class:`Veto`; because it can, the gateway
first looks for the request among those filed before (a veto must not decide those), which
costs a filing two store reads. A hook that only wants to know belongs on ``on_filed``,
which runs after the commit and costs the filing nothing.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from loopgate_lc.stores.base import RequestRecord

__all__ = ["Hooks", "Veto", "compose_hooks"]


@dataclass(frozen=True)
class Veto:
    """Returned by ``on_request`` to reject a request before anyone is asked."""

    reason: str


RecordHook: TypeAlias = Callable[["RequestRecord"], Awaitable[Any] | Any]


@dataclass
class Hooks:
    """Callbacks for the life of a request; each may be sync or async.

    Attributes:
        on_request: A request is being filed; return ``Veto(reason)`` to reject it at
            once (it is then stored already rejected, and nobody is told).
        on_filed: A request was stored: after its commit, in the process that filed it,
            once per request (never for one found filed before). Also for a request
            stored already decided, by a veto or a remembered permission, before that
            decision's hook. Cannot change anything: for counting and tracing.
        on_notified: ``(record, notifier_name)``: a notifier delivered it.
        on_approve: ``(record, auto, policy)``: approved by a person (``auto=False``,
            also for edits) or by a policy (``auto=True``; ``record`` is None then and
            the tool call is in ``policy``'s audit event).
        on_reject: A person rejected it (or a veto did).
        on_timeout: Nobody answered in time.
        on_cancel: It was withdrawn.
        on_resumed: The decision reached the paused run: LangGraph's checkpoint holds the
            resume. ``record.resumed_at`` is when the resume was claimed and
            ``record.resume_done_at`` when it was saved. Fires once per resumed request.
        on_error: ``(error, context)``: a notifier or another hook failed.
    """

    on_request: RecordHook | None = None
    on_filed: RecordHook | None = None
    on_notified: Callable[[RequestRecord, str], Awaitable[Any] | Any] | None = None
    on_approve: Callable[[RequestRecord | None, bool, str | None], Awaitable[Any] | Any] | None \
        = None
    on_reject: RecordHook | None = None
    on_timeout: RecordHook | None = None
    on_cancel: RecordHook | None = None
    on_resumed: RecordHook | None = None
    on_error: Callable[[BaseException, dict[str, Any]], Awaitable[Any] | Any] | None = None
    _parts: tuple[Hooks, ...] = field(default=(), repr=False)


def compose_hooks(*hooks: Hooks | None) -> Hooks:
    """Run several hook sets in the given order, as one.

    The first ``on_request`` that vetoes wins; later ones are not asked.
    """
    parts = tuple(h for h in hooks if h is not None)
    flat: list[Hooks] = []
    for part in parts:
        flat.extend(part._parts or (part,))
    return Hooks(_parts=tuple(flat))


def parts_of(hooks: Hooks) -> Sequence[Hooks]:
    return hooks._parts or (hooks,)


async def fire(
    hooks: Hooks,
    name: str,
    *args: Any,
    report: Callable[[BaseException, dict[str, Any]], Awaitable[None]],
) -> list[Any]:
    """Call hook ``name`` on every part, in order; errors go to ``report``, never up."""
    results: list[Any] = []
    for part in parts_of(hooks):
        fn = getattr(part, name)
        if fn is None:
            continue
        try:
            result = fn(*args)
            if inspect.isawaitable(result):  # a sync hook costs no coroutine of its own
                result = await result
        except Exception as exc:  # a hook must never lose a decision
            await report(exc, {"hook": name})
            continue
        results.append(result)
        if name == "on_request" and isinstance(result, Veto):
            break
    return results
