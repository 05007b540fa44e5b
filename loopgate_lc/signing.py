"""Signed webhooks in the Standard Webhooks format, signed decisions and decision tokens.

Receivers live in other people's apps, so this module uses nothing but the standard
library: copy it next to your handler (swap the ``SignatureError`` import for a local
exception), ``pip install loopgate-lc`` and import it, or use any Standard Webhooks
library (https://www.standardwebhooks.com), such as the ``standardwebhooks`` package.

**Outgoing** (webhook notifier deliveries and ``callback_url`` callbacks)::

    webhook-id: <message id; the same on every retry of one message>
    webhook-timestamp: 1767225600
    webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>

**Incoming signed decisions** (``POST /hitl/webhook/decision/{request_id}``) carry the
same three headers, but they are signed with a *derived* key and over the method and
path too::

    key'    = HMAC-SHA256(key, "loopgate-lc decision-signature v1")
    signed  = "<id>.<timestamp>.POST /hitl/webhook/decision/<request id>\n<body>"

The path binds a decision to its request (the body alone would approve any request it is
posted to), and the derived key means an outgoing signature can never pass as a
decision, nor a decision as a delivery. With a Standard Webhooks library, sign with
``decision_signing_secret(secret)`` and the ``"POST <path>\n<body>"`` string as data.

A decision signature is accepted once: the server remembers its ``webhook-id`` through
the tolerance window (see :class:`ReplayGuard`), and the timestamp must be within
``DEFAULT_TOLERANCE`` seconds of now.

Secrets: ``whsec_<base64>`` (the Standard Webhooks form; the key is the decoded bytes) or
any other string (the key is its UTF-8 bytes). Several secrets may be given while
rotating: the sender signs with each (several space-separated ``v1,`` values) and a
receiver that knows any one of them accepts.

Example (any framework; only the raw body and the headers are needed)::

    from loopgate_lc.signing import verify_signature
    from loopgate_lc.errors import SignatureError

    try:
        message_id = verify_signature(raw_body, request.headers, secret)
    except SignatureError as exc:
        return 401, str(exc)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets as _random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from loopgate_lc.errors import SignatureError

__all__ = [
    "DEFAULT_TOLERANCE",
    "IDEMPOTENCY_HEADER",
    "ID_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "MemoryReplayGuard",
    "ReplayGuard",
    "Secret",
    "Secrets",
    "decision_signing_secret",
    "decision_token",
    "message_id_for",
    "sign",
    "sign_decision",
    "verify_decision_signature",
    "verify_decision_token",
    "verify_signature",
]

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"

DEFAULT_TOLERANCE = 300
"""Seconds a timestamp may lie in the past or future: room for clock skew and retries,
little room for replays."""

Secret = str | bytes
Secrets = str | bytes | Sequence[str | bytes]
"""One secret, or several while rotating (any one of them verifies)."""

_PREFIX = "whsec_"
_MESSAGE_ID = re.compile(r"[A-Za-z0-9_:\-]{1,256}")
_TOKEN_CONTEXT = b"loopgate-lc decision-token v1\x00"
_DECISION_CONTEXT = b"loopgate-lc decision-signature v1"


def _key(secret: Secret) -> bytes:
    if isinstance(secret, str) and secret.startswith(_PREFIX):
        try:
            key = base64.b64decode(secret[len(_PREFIX):] + "==", validate=False)
        except (binascii.Error, ValueError) as exc:
            raise SignatureError("a whsec_ secret is not valid base64") from exc
    else:
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


def _decision_key(key: bytes) -> bytes:
    return hmac.new(key, _DECISION_CONTEXT, hashlib.sha256).digest()


def decision_signing_secret(secret: Secret) -> str:
    """The ``whsec_`` secret that signs decisions, for Standard Webhooks libraries
    (``Webhook(decision_signing_secret(secret)).sign(id, at, "POST <path>\\n<body>")``)."""
    return _PREFIX + base64.b64encode(_decision_key(_key(secret))).decode()


def _bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else bytes(body)


def _digest(key: bytes, message_id: str, timestamp: int, content: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + content
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def message_id_for(key: str) -> str:
    """A valid, stable ``webhook-id`` for any idempotency key (``<request>:<event>``), so
    every retry of one message carries the same id."""
    return "msg_" + hashlib.sha256(key.encode()).hexdigest()[:32]


def _message_id(message_id: str | None) -> str:
    if message_id is None:
        return f"msg_{_random.token_urlsafe(18)}"
    if not _MESSAGE_ID.fullmatch(message_id):
        raise SignatureError(
            f"malformed {ID_HEADER} {message_id[:40]!r}: up to 256 of A-Z a-z 0-9 _ : -")
    return message_id


def _headers(keys: list[bytes], message_id: str, timestamp: int | None,
             content: bytes) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else int(timestamp)
    values = [f"v1,{_digest(key, message_id, ts, content)}" for key in keys]
    return {ID_HEADER: message_id, TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: " ".join(values)}


def sign(body: bytes | str, secret: Secrets, *, message_id: str | None = None,
         timestamp: int | None = None) -> dict[str, str]:
    """Headers that let a receiver check ``body`` came from someone holding ``secret``.

    Args:
        body: The exact bytes sent; any re-serialisation on the way breaks the signature,
            which is the point.
        secret: The shared secret, or several (new first) while rotating: each adds one
            ``v1,`` value.
        message_id: The ``webhook-id``; the same for every retry of one message so
            receivers can drop duplicates. Random when omitted.
        timestamp: Unix seconds; defaults to now. Pass one only to make tests repeatable.
    """
    return _headers(_keys(secret), _message_id(message_id), timestamp, _bytes(body))


def _decision_content(method: str, path: str, body: bytes | str) -> bytes:
    return f"{method.upper()} {path}\n".encode() + _bytes(body)


def sign_decision(body: bytes | str, secret: Secrets, *, path: str, method: str = "POST",
                  message_id: str | None = None, timestamp: int | None = None
                  ) -> dict[str, str]:
    """Headers for a decision posted to ``path`` (``/hitl/webhook/decision/<id>``).

    The signature covers method, path and body, with the decision key (see the module
    notes), so it decides that one request and cannot be taken for a delivery.
    """
    keys = [_decision_key(k) for k in _keys(secret)]
    return _headers(keys, _message_id(message_id), timestamp,
                    _decision_content(method, path, body))


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


def _parse_timestamp(raw: str | None) -> int:
    if raw is None:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} header")
    text = raw.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 15):
        raise SignatureError(
            f"malformed {TIMESTAMP_HEADER} header {text[:40]!r}: expected integer unix seconds")
    return int(text)


def _parse_signatures(raw: str | None) -> list[bytes]:
    if raw is None:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    digests: list[bytes] = []
    for part in raw.split():
        version, sep, value = part.partition(",")
        if not sep:
            raise SignatureError(
                f"malformed {SIGNATURE_HEADER} header: {part[:40]!r} is not version,signature")
        if version != "v1":
            continue  # a scheme we do not know; another value may still be v1
        try:
            digests.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise SignatureError(
                f"malformed {SIGNATURE_HEADER} header: a v1 value is not base64") from exc
    if not digests:
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header: no v1 signature in it")
    return digests


def _verify(content: bytes, headers: Mapping[str, str], keys: list[bytes], tolerance: int,
            now: float | None) -> tuple[str, int]:
    message_id = _header(headers, ID_HEADER)
    if message_id is None:
        raise SignatureError(f"missing {ID_HEADER} header")
    message_id = _message_id(message_id.strip())
    ts = _parse_timestamp(_header(headers, TIMESTAMP_HEADER))
    candidates = _parse_signatures(_header(headers, SIGNATURE_HEADER))
    matched = False
    for key in keys:
        expected = base64.b64decode(_digest(key, message_id, ts, content))
        for candidate in candidates:
            # Every pair is compared (no early exit) so timing says nothing about which.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError(
            "signature mismatch: the body, path or timestamp was altered, or the secret "
            "differs")
    current = time.time() if now is None else now
    age = current - ts
    if age > tolerance:
        raise SignatureError(
            f"stale timestamp: signed {int(age)} seconds ago, more than the {tolerance} allowed")
    if -age > tolerance:
        raise SignatureError(
            f"timestamp {int(-age)} seconds in the future, more than the {tolerance} allowed")
    return message_id, ts


def verify_signature(body: bytes | str, headers: Mapping[str, str], secret: Secrets, *,
                     tolerance: int = DEFAULT_TOLERANCE, now: float | None = None) -> str:
    """Check a delivery's signature and freshness; return its message id or raise.

    Args:
        body: The raw request body, exactly as received (before any JSON parsing).
        headers: The request headers (any ``Mapping``; looked up case-insensitively).
        secret: The shared secret, or several while rotating.
        tolerance: Seconds the timestamp may differ from ``now`` either way.
        now: Unix seconds to compare against; defaults to the clock (tests pin it).

    Returns:
        The ``webhook-id``: drop a message whose id you have already handled.

    Raises:
        SignatureError: A header is missing or malformed, no signature matches any
            secret, or the timestamp is outside the tolerance window. The message says
            which, so an operator can tell a clock problem from a wrong secret.
    """
    return _verify(_bytes(body), headers, _keys(secret), tolerance, now)[0]


def verify_decision_signature(
    body: bytes | str, headers: Mapping[str, str], secret: Secrets, *, path: str,
    method: str = "POST", tolerance: int = DEFAULT_TOLERANCE, now: float | None = None,
) -> tuple[str, int]:
    """Check a signed decision (see :func:`sign_decision`).

    Returns:
        ``(message_id, timestamp)``: the caller refuses a message id it has seen within
        the tolerance window (a :class:`ReplayGuard`).

    Raises:
        SignatureError: As for :func:`verify_signature`; a signature made for another
            path (another request) or as an outgoing delivery is a mismatch.
    """
    keys = [_decision_key(k) for k in _keys(secret)]
    return _verify(_decision_content(method, path, body), headers, keys, tolerance, now)


class ReplayGuard(Protocol):
    """Remembers signed message ids so each is accepted once.

    The in-memory :class:`MemoryReplayGuard` protects one process; the server's default,
    ``loopgate_lc.server.replay.StoreReplayGuard``, every process sharing a store.
    """

    async def first_use(self, message_id: str, expires_at: float) -> bool:
        """True the first time ``message_id`` is seen; False for a replay. The id may be
        forgotten after ``expires_at`` (unix seconds), when its signature has expired."""


class MemoryReplayGuard:
    """A :class:`ReplayGuard` for one process.

    Args:
        max_entries: A bound on remembered ids; when full (a flood of valid signatures)
            new ids are refused until old ones expire, which fails closed.
        clock: Returns unix seconds; tests inject one.
    """

    def __init__(self, *, max_entries: int = 100_000,
                 clock: Callable[[], float] = time.time) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._max = max_entries
        self._clock = clock

    async def first_use(self, message_id: str, expires_at: float) -> bool:
        now = self._clock()
        with self._lock:
            if len(self._seen) >= self._max:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
            known = self._seen.get(message_id)
            if known is not None and known > now:
                return False
            if len(self._seen) >= self._max:
                return False
            self._seen[message_id] = expires_at
            return True


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
