"""loopgate_lc: a person between an AI agent and its risky actions.

Policies decide which tool calls need a person; guards pause LangGraph runs with
``interrupt()``; the gateway files each pause, reaches a person through a notifier, and
resumes the run with their decision, exactly once.
"""

from typing import Any

from loopgate_lc.errors import (
    AlreadyDecided,
    ApproverNotAllowed,
    ConfigurationError,
    DecisionNotAllowed,
    InvalidDecision,
    InvalidPolicy,
    InvalidUpdate,
    LoopgateError,
    OutOfScope,
    RequestNotFound,
    SessionExists,
    SessionNotFound,
    SignatureError,
    StaleDecision,
    StoreError,
)
from loopgate_lc.gateway import Escalation, Loopgate, args_hash
from loopgate_lc.guard import GuardedTool, guard, guard_tools
from loopgate_lc.hooks import Hooks, Veto, compose_hooks
from loopgate_lc.nodes import request_approval
from loopgate_lc.notifiers import (
    ConsoleNotifier,
    DeliveryError,
    LogNotifier,
    Notifier,
    WebhookNotifier,
    load_notifier,
)
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
from loopgate_lc.stores import MemoryStore, SQLiteStore, Store, aopen_store, open_store

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import what needs optional extras only when it is asked for."""
    if name in ("ApprovalMiddleware", "ToolSettings"):
        from loopgate_lc import middleware  # needs the "agents" extra (langchain)

        return getattr(middleware, name)
    if name == "PostgresStore":
        from loopgate_lc.stores import PostgresStore  # needs the "postgres" extra

        return PostgresStore
    if name == "TelegramNotifier":
        from loopgate_lc.notifiers.telegram import TelegramNotifier

        return TelegramNotifier
    raise AttributeError(f"module 'loopgate_lc' has no attribute {name!r}")


__all__ = [
    "AFFIRMATIVE_OPTIONS",
    "AlreadyDecided",
    "ApprovalMiddleware",
    "ApprovalPolicy",
    "ApprovalRequest",
    "ApproverNotAllowed",
    "ConfigurationError",
    "ConsoleNotifier",
    "DecisionNotAllowed",
    "DeliveryError",
    "Escalation",
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
    "SessionExists",
    "SessionNotFound",
    "SignatureError",
    "Simulation",
    "StaleDecision",
    "Status",
    "Store",
    "StoreError",
    "TelegramNotifier",
    "ToolSettings",
    "Verdict",
    "Veto",
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
