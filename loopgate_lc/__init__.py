"""loopgate_lc: a person between an AI agent and its risky actions.

Policies decide which tool calls need a person; guards pause LangGraph runs with
``interrupt()``; the gateway files each pause, reaches a person through a notifier, and
resumes the run with their decision, exactly once.
"""

import sys
import types
from typing import TYPE_CHECKING, Any

from loopgate_lc._lazy import lazy_exports
from loopgate_lc.errors import (
    AlreadyDecided,
    ApproverNotAllowed,
    ConfigurationError,
    DeadlinePassed,
    DecisionNotAllowed,
    DuplicateVote,
    GrantNotFound,
    InvalidDecision,
    InvalidPolicy,
    InvalidUpdate,
    LoopgateError,
    OutOfScope,
    RequestNotFound,
    SelfApproval,
    SessionExists,
    SessionNotFound,
    SignatureError,
    StaleDecision,
    StoreError,
    ThreadBusy,
)

if TYPE_CHECKING:
    from loopgate_lc.gateway import Escalation, Loopgate, args_hash
    from loopgate_lc.guard import GuardedTool, guard, guard_tools
    from loopgate_lc.hooks import Hooks, Veto, compose_hooks
    from loopgate_lc.middleware import ApprovalMiddleware, ToolSettings
    from loopgate_lc.nodes import request_approval
    from loopgate_lc.notifiers import (
        ConsoleNotifier,
        DeliveryError,
        LogNotifier,
        Notifier,
        WebhookNotifier,
        load_notifier,
    )
    from loopgate_lc.notifiers.telegram import TelegramNotifier
    from loopgate_lc.policy import ApprovalPolicy, PolicySet, RiskLevel, Verdict
    from loopgate_lc.routing import route_tool_calls
    from loopgate_lc.schema import (
        AFFIRMATIVE_OPTIONS,
        ApprovalRequest,
        HumanResponse,
        Option,
        RequestKind,
        Status,
        option_approves,
    )
    from loopgate_lc.signing import sign, verify_signature
    from loopgate_lc.simulate import Simulation, simulate
    from loopgate_lc.stores import (
        GrantRecord,
        MemoryStore,
        PostgresStore,
        SQLiteStore,
        Store,
        Vote,
        aopen_store,
        open_store,
    )

__version__ = "0.1.0"

# Everything but the errors is imported on first use. The CLI's store commands import
# this package to read a table: the pydantic models, LangGraph, LangChain, httpx and the
# optional extras that other names bring would cost them most of their start-up.
_LAZY = {
    "AFFIRMATIVE_OPTIONS": "loopgate_lc.schema",
    "ApprovalMiddleware": "loopgate_lc.middleware",  # the "agents" extra (langchain)
    "ApprovalPolicy": "loopgate_lc.policy",
    "ApprovalRequest": "loopgate_lc.schema",
    "ConsoleNotifier": "loopgate_lc.notifiers",
    "DeliveryError": "loopgate_lc.notifiers",
    "Escalation": "loopgate_lc.gateway",
    "GrantRecord": "loopgate_lc.stores",
    "GuardedTool": "loopgate_lc.guard",
    "Hooks": "loopgate_lc.hooks",
    "HumanResponse": "loopgate_lc.schema",
    "LogNotifier": "loopgate_lc.notifiers",
    "Loopgate": "loopgate_lc.gateway",
    "MemoryStore": "loopgate_lc.stores",
    "Notifier": "loopgate_lc.notifiers",
    "Option": "loopgate_lc.schema",
    "PolicySet": "loopgate_lc.policy",
    "PostgresStore": "loopgate_lc.stores",  # the "postgres" extra
    "RequestKind": "loopgate_lc.schema",
    "RiskLevel": "loopgate_lc.policy",
    "SQLiteStore": "loopgate_lc.stores",
    "Simulation": "loopgate_lc.simulate",
    "Status": "loopgate_lc.schema",
    "Store": "loopgate_lc.stores",
    "TelegramNotifier": "loopgate_lc.notifiers.telegram",
    "ToolSettings": "loopgate_lc.middleware",
    "Verdict": "loopgate_lc.policy",
    "Veto": "loopgate_lc.hooks",
    "Vote": "loopgate_lc.stores",
    "WebhookNotifier": "loopgate_lc.notifiers",
    "aopen_store": "loopgate_lc.stores",
    "args_hash": "loopgate_lc.gateway",
    "compose_hooks": "loopgate_lc.hooks",
    "guard": "loopgate_lc.guard",
    "guard_tools": "loopgate_lc.guard",
    "load_notifier": "loopgate_lc.notifiers",
    "open_store": "loopgate_lc.stores",
    "option_approves": "loopgate_lc.schema",
    "request_approval": "loopgate_lc.nodes",
    "route_tool_calls": "loopgate_lc.routing",
    "sign": "loopgate_lc.signing",
    "simulate": "loopgate_lc.simulate",
    "verify_signature": "loopgate_lc.signing",
}


__getattr__ = lazy_exports(__name__, _LAZY, extras={"loopgate_lc.middleware": "agents"})


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# Submodules named like the function they export: importing one sets the package's
# attribute to the module, and the function must stay there.
_SHADOWED = frozenset({"guard", "simulate"})


class _Package(types.ModuleType):
    """``loopgate_lc.guard`` and ``loopgate_lc.simulate`` are both submodules and the
    functions they export. Importing a submodule sets the package attribute to the module;
    this keeps the function there, as the eager ``from loopgate_lc.guard import guard``
    used to."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "AFFIRMATIVE_OPTIONS",
    "AlreadyDecided",
    "ApprovalMiddleware",
    "ApprovalPolicy",
    "ApprovalRequest",
    "ApproverNotAllowed",
    "ConfigurationError",
    "ConsoleNotifier",
    "DeadlinePassed",
    "DecisionNotAllowed",
    "DeliveryError",
    "DuplicateVote",
    "Escalation",
    "GrantNotFound",
    "GrantRecord",
    "GuardedTool",
    "Hooks",
    "HumanResponse",
    "InvalidDecision",
    "InvalidPolicy",
    "InvalidUpdate",
    "LogNotifier",
    "Loopgate",
    "LoopgateError",
    "MemoryStore",
    "Notifier",
    "Option",
    "OutOfScope",
    "PolicySet",
    "PostgresStore",
    "RequestKind",
    "RequestNotFound",
    "RiskLevel",
    "SQLiteStore",
    "SelfApproval",
    "SessionExists",
    "SessionNotFound",
    "SignatureError",
    "Simulation",
    "StaleDecision",
    "Status",
    "Store",
    "StoreError",
    "TelegramNotifier",
    "ThreadBusy",
    "ToolSettings",
    "Verdict",
    "Veto",
    "Vote",
    "WebhookNotifier",
    "__version__",
    "aopen_store",
    "args_hash",
    "compose_hooks",
    "guard",
    "guard_tools",
    "load_notifier",
    "open_store",
    "option_approves",
    "request_approval",
    "route_tool_calls",
    "sign",
    "simulate",
    "verify_signature",
]
