"""Notifiers: how a pending request reaches a person.

Built-ins are importable from here; any notifier, including third-party ones, can be
created by name with :func:`load_notifier`, which looks in the ``loopgate_lc.notifiers``
entry-point group. A package adds its own with::

    [project.entry-points."loopgate_lc.notifiers"]
    slack = "my_package.slack:SlackNotifier"
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from loopgate_lc._lazy import lazy_exports
from loopgate_lc.errors import ConfigurationError
from loopgate_lc.notifiers.base import DeliveryError, LifecycleNotifier, Notifier

if TYPE_CHECKING:
    from loopgate_lc.notifiers.console import ConsoleNotifier
    from loopgate_lc.notifiers.log import LogNotifier
    from loopgate_lc.notifiers.webhook import WebhookNotifier

__all__ = [
    "ENTRY_POINT_GROUP",
    "ConsoleNotifier",
    "DeliveryError",
    "LifecycleNotifier",
    "LogNotifier",
    "Notifier",
    "WebhookNotifier",
    "available_notifiers",
    "load_notifier",
]

ENTRY_POINT_GROUP = "loopgate_lc.notifiers"


# Each notifier is imported when it is first used (httpx with the webhook one): deciding a
# request from the terminal, which writes its deliveries to the outbox, sends none.
__getattr__ = lazy_exports(__name__, {
    "ConsoleNotifier": "loopgate_lc.notifiers.console",
    "LogNotifier": "loopgate_lc.notifiers.log",
    "WebhookNotifier": "loopgate_lc.notifiers.webhook",
})


def available_notifiers() -> list[str]:
    """Names :func:`load_notifier` accepts, sorted: built-ins and installed plugins."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def load_notifier(name: str, /, **kwargs: Any) -> Notifier:
    """Create the notifier registered under ``name`` with ``kwargs``.

    Configuration files and the CLI name notifiers as strings; resolving them through
    entry points lets an installed package add a channel without loopgate_lc knowing it.
    ``name`` is positional-only so ``name=`` in ``kwargs`` can rename the instance.

    Raises:
        ConfigurationError: No notifier has that name (the message lists those that do),
            its module cannot be imported (a missing optional dependency, say), the
            arguments do not fit it, or what it makes is not a notifier.
    """
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        names = ", ".join(available_notifiers()) or "none installed"
        raise ConfigurationError(f"unknown notifier {name!r}; available: {names}")
    entry = found[0]
    try:
        factory = entry.load()
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"notifier {name!r} ({entry.value}) cannot be loaded: {exc}"
        ) from exc
    try:
        notifier = factory(**kwargs)
    except TypeError as exc:
        raise ConfigurationError(f"notifier {name!r} does not take these arguments: {exc}") from exc
    if not isinstance(notifier, Notifier):
        raise ConfigurationError(
            f"entry point {entry.value} for notifier {name!r} made {type(notifier).__name__}, "
            "which lacks name, notify() and on_resolved()"
        )
    return notifier
