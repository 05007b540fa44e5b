"""loopgate_lc: a person between an AI agent and its risky actions.

Policies decide which tool calls need a person; guards pause LangGraph runs with
``interrupt()``; the gateway files each pause, reaches a person through a notifier, and
resumes the run with their decision, exactly once.
"""

from loopgate_lc.errors import (
    AlreadyDecided,
    ApproverNotAllowed,
    ConfigurationError,
    DecisionNotAllowed,
    InvalidDecision,
    InvalidPolicy,
    LoopgateError,
    RequestNotFound,
    SessionExists,
    SessionNotFound,
    SignatureError,
    StaleDecision,
    StoreError,
)
from loopgate_lc.guard import GuardedTool, guard, guard_tools
from loopgate_lc.nodes import request_approval
from loopgate_lc.policy import ApprovalPolicy, PolicySet, RiskLevel, Verdict
from loopgate_lc.routing import route_tool_calls
from loopgate_lc.schema import (
    ApprovalRequest,
    HumanResponse,
    Option,
    RequestKind,
    Status,
    option_approves,
)

__version__ = "0.1.0"

__all__ = [
    "AlreadyDecided",
    "ApprovalPolicy",
    "ApprovalRequest",
    "ApproverNotAllowed",
    "ConfigurationError",
    "DecisionNotAllowed",
    "GuardedTool",
    "HumanResponse",
    "InvalidDecision",
    "InvalidPolicy",
    "LoopgateError",
    "Option",
    "PolicySet",
    "RequestKind",
    "RequestNotFound",
    "RiskLevel",
    "SessionExists",
    "SessionNotFound",
    "SignatureError",
    "StaleDecision",
    "Status",
    "StoreError",
    "Verdict",
    "__version__",
    "guard",
    "guard_tools",
    "option_approves",
    "request_approval",
    "route_tool_calls",
]
