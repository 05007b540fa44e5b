"""One error shape for every HTTP answer that is not a success.

Clients of the Loopgate API branch on ``error.code`` (stable, snake_case) and show
``error.message`` (for people); ``error.details`` carries what a program needs to recover
(who already decided, which fields are wrong). The status code follows the cause:

=====  ======================================================================
400    ``malformed_json``, ``bad_request``
401    ``unauthorized`` (no credentials, a bad webhook signature or token)
403    ``forbidden`` (a wrong API key), ``approver_not_allowed``
404    ``not_found`` (unknown request, session or route)
405    ``method_not_allowed``
409    ``already_decided``, ``already_voted``, ``session_exists``, ``session_inactive``,
       ``stale_decision``
413    ``payload_too_large``
422    ``invalid_fields``, ``invalid_decision``
503    ``store_unavailable``, ``not_configured``
500    ``internal_error``: a bug on our side, never a client's mistake
=====  ======================================================================

Every :class:`~loopgate_lc.errors.LoopgateError` maps to one of these in
:func:`from_loopgate_error`, so a new code path that raises one never turns into a 500.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse

from loopgate_lc.errors import (
    AlreadyDecided,
    ApproverNotAllowed,
    ConfigurationError,
    DuplicateVote,
    GrantNotFound,
    InvalidDecision,
    InvalidPolicy,
    LoopgateError,
    OutOfScope,
    RequestNotFound,
    SessionExists,
    SessionNotFound,
    SignatureError,
    StaleDecision,
    StoreError,
)

__all__ = [
    "ApiError",
    "BodyTooLarge",
    "error_response",
    "from_loopgate_error",
    "from_validation_error",
    "internal_error",
]

log = logging.getLogger("loopgate_lc.server")


class ApiError(Exception):
    """An HTTP error with its stable code; raised anywhere in a handler, rendered once.

    Args:
        status: The HTTP status code.
        code: The stable machine-readable code (see the module table).
        message: What a person should read.
        details: Structured data for programs; JSON-safe.
        headers: Extra response headers (``WWW-Authenticate``, ...).
    """

    def __init__(self, status: int, code: str, message: str,
                 details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}

    def response(self) -> JSONResponse:
        return error_response(self)


class BodyTooLarge(ApiError):
    """The request body passed the size limit (announced or counted while streaming)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, "payload_too_large",
                         f"the request body is larger than the {limit} bytes this server accepts",
                         {"max_body_bytes": limit})


def error_response(error: ApiError) -> JSONResponse:
    """The JSON response for an :class:`ApiError`."""
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def from_loopgate_error(exc: LoopgateError) -> ApiError:
    """Translate a library error at the edge: each one has exactly one status and code."""
    message = str(exc)
    if isinstance(exc, AlreadyDecided):
        return ApiError(409, "already_decided", message, {
            "request_id": exc.request_id,
            "status": exc.status,
            "decided_by": exc.decided_by,
            "decided_at": exc.decided_at.isoformat() if exc.decided_at else None,
            "channel": exc.channel,
        })
    if isinstance(exc, DuplicateVote):
        return ApiError(409, "already_voted", message, {
            "request_id": exc.request_id, "voter": exc.voter, "vote": exc.vote,
            "approvals": exc.approvals, "approvals_needed": exc.approvals_needed})
    if isinstance(exc, RequestNotFound):
        return ApiError(404, "not_found", message, {"request_id": exc.request_id})
    if isinstance(exc, SessionNotFound):
        return ApiError(404, "not_found", message, {"session_id": exc.session_id})
    if isinstance(exc, GrantNotFound):
        return ApiError(404, "not_found", message, {"grant_id": exc.grant_id})
    if isinstance(exc, SessionExists):
        return ApiError(409, "session_exists", message, {"session_id": exc.session_id})
    if isinstance(exc, ApproverNotAllowed):
        return ApiError(403, "approver_not_allowed", message)
    if isinstance(exc, OutOfScope):
        return ApiError(403, "forbidden", message)
    if isinstance(exc, SignatureError):
        return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Signature"})
    if isinstance(exc, InvalidDecision):
        details: dict[str, Any] = {"errors": _clean(exc.errors)}
        if exc.options is not None:
            details["options"] = exc.options
        return ApiError(422, "invalid_decision", message, details)
    if isinstance(exc, InvalidPolicy):
        return ApiError(422, "invalid_fields", message)
    if isinstance(exc, StaleDecision):
        return ApiError(409, "stale_decision", message)
    if isinstance(exc, StoreError):
        log.warning("store error: %s", exc)
        return ApiError(503, "store_unavailable", "the store could not complete the operation",
                        {"reason": message})
    if isinstance(exc, ConfigurationError):
        # The server is set up so that this cannot work; the client can do nothing.
        return ApiError(503, "not_configured", message)
    if isinstance(exc, ValueError):
        return ApiError(422, "invalid_fields", message)
    return ApiError(400, "bad_request", message)


def from_validation_error(exc: ValidationError, *, where: str = "body") -> ApiError:
    """422 with pydantic's findings, minus the rejected values (they are the caller's
    data and may be large or secret)."""
    errors = _clean(json.loads(exc.json()))
    for err in errors:
        err["loc"] = [where, *err.get("loc", [])]
    first = errors[0] if errors else {}
    place = ".".join(str(p) for p in first.get("loc", []))
    message = f"invalid {where}: {place}: {first.get('msg', 'invalid value')}" if first \
        else f"invalid {where}"
    return ApiError(422, "invalid_fields", message, {"errors": errors})


def internal_error(exc: BaseException) -> ApiError:
    """A 500 that says nothing about internals; the traceback goes to the log."""
    log.error("unhandled error in the HTTP API", exc_info=exc)
    return ApiError(500, "internal_error", "the server failed to handle this request")


def _clean(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = ("loc", "msg", "type")
    return [{k: e[k] for k in keep if k in e} for e in errors if isinstance(e, dict)]
