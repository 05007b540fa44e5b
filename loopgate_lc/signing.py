"""Signed webhooks and decision tokens, with nothing but the standard library.

Receivers live in other people's apps, so this module stays small and dependency-free:
copy it next to your handler (swap the ``SignatureError`` import for a local exception)
or ``pip install loopgate-lc`` and import it.

Wire format of a signed delivery::

    X-Loopgate-Timestamp: 1767225600
    X-Loopgate-Signature: v1=<hex HMAC-SHA256(secret, b"1767225600." + body)>
    Idempotency-Key: <request id>:<event>

The timestamp is inside the signed bytes, so a captured delivery cannot be replayed later
with a fresh timestamp; the tolerance window bounds how long a replay of the untouched
delivery works (``Idempotency-Key`` lets receivers drop those). Several comma-separated
``v1=`` values may be sent: while a secret is being rotated the sender signs with the old
and the new one, and a receiver that knows either accepts.

Example (any framework; only the raw body and the headers are needed)::

    from loopgate_lc.signing import verify_signature
    from loopgate_lc.errors import SignatureError

    try:
        verify_signature(raw_body, request.headers, secret)
    except SignatureError as exc:
        return 401, str(exc)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence

from loopgate_lc.errors import SignatureError

__all__ = [
    "DEFAULT_TOLERANCE",
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Secret",
    "Secrets",
    "compute_signature",
    "decision_token",
    "sign",
    "verify_decision_token",
    "verify_signature",
]

TIMESTAMP_HEADER = "X-Loopgate-Timestamp"
SIGNATURE_HEADER = "X-Loopgate-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"

DEFAULT_TOLERANCE = 300
"""Seconds a timestamp may lie in the past or future: room for clock skew and retries,
little room for replays."""

Secret = str | bytes
Secrets = str | bytes | Sequence[str | bytes]
"""One secret, or several while rotating (any one of them verifies)."""

_SCHEME = "v1"
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
_TOKEN_CONTEXT = b"loopgate-lc decision-token v1\x00"


def _key(secret: Secret) -> bytes:
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not key:
        # An empty key would make every signature forgeable by anyone who reads this code.
        raise SignatureError("the signing secret is empty")
    return key


def _keys(secrets: Secrets) -> list[bytes]:
    if isinstance(secrets, str | bytes):
        return [_key(secrets)]
    keys = [_key(s) for s in secrets]
    if not keys:
        raise SignatureError("no signing secret given")
    return keys


def _body_bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else bytes(body)


def compute_signature(body: bytes | str, secret: Secret, timestamp: int) -> str:
    """The bare hex digest for one secret: what follows ``v1=`` in the header."""
    message = f"{timestamp}.".encode() + _body_bytes(body)
    return hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def sign(body: bytes | str, secret: Secrets, *, timestamp: int | None = None) -> dict[str, str]:
    """Headers that let a receiver check ``body`` came from someone holding ``secret``.

    Args:
        body: The exact bytes sent; any re-serialisation on the way breaks the signature,
            which is the point.
        secret: The shared secret, or several (new first) while rotating: each adds one
            ``v1=`` value.
        timestamp: Unix seconds; defaults to now. Pass one only to make tests repeatable.

    Returns:
        ``{"X-Loopgate-Timestamp": ..., "X-Loopgate-Signature": "v1=...[,v1=...]"}``.
    """
    ts = int(time.time()) if timestamp is None else int(timestamp)
    values = [f"{_SCHEME}={compute_signature(body, key, ts)}" for key in _keys(secret)]
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: ",".join(values)}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup that also works on a plain ``dict``."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, found in headers.items():
        if key.lower() == wanted:
            return found
    return None


def _parse_timestamp(raw: str | int | None) -> int:
    if raw is None:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} header")
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    text = str(raw).strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 15):
        raise SignatureError(
            f"malformed {TIMESTAMP_HEADER} header {text[:40]!r}: expected integer unix seconds"
        )
    return int(text)


def _parse_signatures(raw: str | None) -> list[str]:
    if raw is None:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    digests: list[str] = []
    for part in raw.split(","):
        scheme, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError(
                f"malformed {SIGNATURE_HEADER} header: {part.strip()[:40]!r} is not scheme=value"
            )
        if scheme != _SCHEME:
            continue  # a newer scheme we do not know; another value may still be v1
        if not _HEX_SHA256.fullmatch(value):
            raise SignatureError(
                f"malformed {SIGNATURE_HEADER} header: v1 value is not 64 lowercase hex digits"
            )
        digests.append(value)
    if not digests:
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header: no v1= signature in it")
    return digests


def verify_signature(
    body: bytes | str,
    headers: Mapping[str, str] | str,
    secret: Secrets,
    *,
    timestamp: int | str | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check a delivery's signature and freshness; return quietly or raise.

    Args:
        body: The raw request body, exactly as received (before any JSON parsing).
        headers: The request headers (any ``Mapping``; looked up case-insensitively),
            or the bare ``X-Loopgate-Signature`` value when ``timestamp`` is given.
        secret: The shared secret, or several while rotating.
        timestamp: The ``X-Loopgate-Timestamp`` value; needed only when ``headers`` is the
            bare signature string.
        tolerance: Seconds the timestamp may differ from ``now`` either way.
        now: Unix seconds to compare against; defaults to the clock (tests pin it).

    Raises:
        SignatureError: A header is missing or malformed, no signature matches any
            secret, or the timestamp is outside the tolerance window. The message says
            which, so an operator can tell a clock problem from a wrong secret.
    """
    if isinstance(headers, str):
        raw_signature: str | None = headers
        raw_timestamp: str | int | None = timestamp
    else:
        raw_signature = _header(headers, SIGNATURE_HEADER)
        raw_timestamp = _header(headers, TIMESTAMP_HEADER) if timestamp is None else timestamp
    ts = _parse_timestamp(raw_timestamp)
    candidates = _parse_signatures(raw_signature)
    keys = _keys(secret)

    matched = False
    for key in keys:
        expected = compute_signature(body, key, ts)
        for candidate in candidates:
            # Every pair is compared (no early exit) so timing says nothing about which.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError(
            "signature mismatch: the body or timestamp was altered, or the secret differs"
        )

    current = time.time() if now is None else now
    age = current - ts
    if age > tolerance:
        raise SignatureError(
            f"stale timestamp: signed {int(age)} seconds ago, more than the {tolerance} allowed"
        )
    if -age > tolerance:
        raise SignatureError(
            f"timestamp {int(-age)} seconds in the future, more than the {tolerance} allowed"
        )


def decision_token(secret: Secret, request_id: str) -> str:
    """A URL-safe token that lets its bearer decide one request, with nothing stored.

    It is derived from the secret and the request id (domain-separated from webhook
    signatures, so a signature can never pass as a token). It needs no expiry or storage
    of its own to be one-time: a request leaves ``pending`` once, so a second use only
    ever meets ``AlreadyDecided``.
    """
    if not request_id:
        raise SignatureError("cannot make a decision token for an empty request id")
    digest = hmac.new(_key(secret), _TOKEN_CONTEXT + request_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def verify_decision_token(secret: Secrets, request_id: str, token: str | None) -> None:
    """Check a decision token against its request id.

    Raises:
        SignatureError: The token is missing, or was not made for this request with this
            secret (or any of the rotating secrets).
    """
    if not token:
        raise SignatureError("missing decision token")
    if not request_id:
        raise SignatureError("cannot verify a decision token for an empty request id")
    matched = False
    for key in _keys(secret):
        expected = decision_token(key, request_id).encode()
        matched |= hmac.compare_digest(expected, token.strip().encode())
    if not matched:
        raise SignatureError(f"invalid decision token for request {request_id!r}")
