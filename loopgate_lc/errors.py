"""One error tree, so callers can catch everything loopgate_lc raises with one clause.

Control-flow signals from LangGraph (``GraphInterrupt``, ``GraphBubbleUp``) are never
wrapped or caught here: a pause is not an error.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

__all__ = [
    "AlreadyDecided",
    "ApproverNotAllowed",
    "ConfigurationError",
    "DeadlinePassed",
    "DecisionNotAllowed",
    "DuplicateVote",
    "GrantNotFound",
    "InvalidDecision",
    "InvalidPolicy",
    "InvalidUpdate",
    "LoopgateError",
    "OutOfScope",
    "RequestNotFound",
    "SelfApproval",
    "SessionExists",
    "SessionNotFound",
    "SignatureError",
    "StaleDecision",
    "StoreError",
    "ThreadBusy",
]


class LoopgateError(Exception):
    """Base of every error loopgate_lc raises on purpose."""


class InvalidPolicy(LoopgateError, ValueError):
    """A policy or policy file is malformed.

    It is also a ``ValueError`` so code that validates configuration generically
    keeps working.
    """


class ConfigurationError(LoopgateError, ValueError):
    """The library was set up in a way that cannot work (missing checkpointer, bad URL)."""


class StoreError(LoopgateError):
    """The store could not do what was asked for a reason other than the request's state."""


class RequestNotFound(LoopgateError, KeyError):
    """No request has this id.

    Unknown ids are always an error, never silently ignored.
    """

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        super().__init__(f"no approval request with id {request_id!r}")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class SessionNotFound(LoopgateError, KeyError):
    """No session has this id."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(f"no session with id {session_id!r}")

    def __str__(self) -> str:
        return str(self.args[0])


class GrantNotFound(LoopgateError, KeyError):
    """No remembered permission (grant) has this id."""

    def __init__(self, grant_id: str) -> None:
        self.grant_id = grant_id
        super().__init__(f"no grant with id {grant_id!r}")

    def __str__(self) -> str:
        return str(self.args[0])


class SessionExists(LoopgateError):
    """A session with this id is already registered (and active)."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(f"session {session_id!r} is already registered")


class AlreadyDecided(LoopgateError):
    """The request already left ``pending``: the loser of a race learns who won.

    Attributes:
        request_id: The request that was answered twice.
        status: The final status it already has.
        decided_by: Who decided it (``None`` for a timeout).
        decided_at: When it was decided.
        channel: Through which channel it was decided.
    """

    def __init__(
        self,
        request_id: str,
        *,
        status: str,
        decided_by: str | None,
        decided_at: datetime | None,
        channel: str | None = None,
    ) -> None:
        self.request_id = request_id
        self.status = status
        self.decided_by = decided_by
        self.decided_at = decided_at
        self.channel = channel
        who = f" by {decided_by}" if decided_by else ""
        when = f" at {decided_at.isoformat(timespec='seconds')}" if decided_at else ""
        via = f" via {channel}" if channel else ""
        super().__init__(f"request {request_id!r} was already {status}{who}{via}{when}")


class DeadlinePassed(LoopgateError):
    """A request is still pending past its deadline, and this process does not time it out.

    The process that serves the request owns its timeout (``on_timeout``, escalation); a
    one-off decision made after the deadline would overrule that, so it is refused.

    Attributes:
        request_id: The overdue request.
        expires_at: Its deadline.
    """

    def __init__(self, request_id: str, expires_at: datetime) -> None:
        self.request_id = request_id
        self.expires_at = expires_at
        super().__init__(
            f"request {request_id!r} passed its deadline at "
            f"{expires_at.isoformat(timespec='seconds')}; the process that serves it times "
            "it out (its on_timeout decides), so it is not decided here")


class InvalidDecision(LoopgateError, ValueError):
    """A decision does not fit its request: wrong shape, wrong tool, bad edited arguments."""

    def __init__(self, message: str, *, errors: list[dict[str, Any]] | None = None,
                 options: list[str] | None = None) -> None:
        self.errors = errors or []
        self.options = options  # the labels to choose from, when choosing is the fix
        super().__init__(message)


class DecisionNotAllowed(InvalidDecision):
    """The decision type is not among the request's ``allowed_decisions``."""


class ApproverNotAllowed(LoopgateError, PermissionError):
    """The actor is not one of the approvers the session or policy names."""


class SelfApproval(ApproverNotAllowed):
    """Under a quorum, the request's own requester tried to vote on it: asking for an
    action and approving it are never the same person's two votes."""


class DuplicateVote(LoopgateError):
    """This identity already voted on this request; under a quorum a vote counts once
    and cannot be changed.

    Attributes:
        request_id: The request voted on.
        voter: The identity that voted twice.
        vote: What it voted the first time (``approve`` or ``reject``).
        approvals: Approvals counted so far.
        approvals_needed: Approvals the request needs.
    """

    def __init__(self, request_id: str, *, voter: str, vote: str, approvals: int,
                 approvals_needed: int) -> None:
        self.request_id = request_id
        self.voter = voter
        self.vote = vote
        self.approvals = approvals
        self.approvals_needed = approvals_needed
        super().__init__(
            f"{voter} already voted {vote} on request {request_id!r} (approvals: {approvals} "
            f"of {approvals_needed}); a vote counts once and cannot be changed")


class OutOfScope(LoopgateError, PermissionError):
    """An API key asked for something outside its scope that is its own to name (a
    client id to file under); what belongs to other tenants is reported as not found."""


class StaleDecision(LoopgateError):
    """The decision's interrupt is no longer pending in the graph's checkpoint.

    LangGraph ignores resume values for unknown interrupt ids without a word; loopgate_lc
    reports them instead.
    """


class ThreadBusy(LoopgateError):
    """The graph's thread is running another run, so a resume was refused before
    anything ran; nothing was sent. The gateway gives the claim back and resumes the
    thread once it is free."""


class InvalidUpdate(LoopgateError, ValueError):
    """A Telegram webhook body is not a Telegram update."""


class SignatureError(LoopgateError):
    """A webhook signature is missing, malformed, wrong, or its timestamp is stale."""
