"""Who is looking at the inbox: one-time sign-in links, session cookies and CSRF tokens.

A person signs in with an API key or a one-time link; either way the session names an
API key's identity, and that key's scope (see :mod:`loopgate_lc.server.tenancy`) decides
what the inbox shows, exactly as it decides what the API answers.

Links live in the store (its short-key table, the one Telegram buttons use), so a link
made by ``loopgate-lc inbox-link`` in one process signs in on a server in another. Only a
hash of the token is stored. A link is used once: the server marks it used in the store
and remembers it in its replay guard, so a second use in the same process is refused
atomically and a later use anywhere is refused by the mark.

The session cookie is signed (HMAC-SHA256) with the inbox secret, carries the identity,
an expiry and a random nonce, and is re-read against the server's keys on every request,
so removing a key ends its sessions. CSRF tokens are derived from the nonce.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from loopgate_lc.errors import LoopgateError
from loopgate_lc.schema import utcnow
from loopgate_lc.signing import ReplayGuard
from loopgate_lc.stores.base import Store

__all__ = [
    "COOKIE_NAME",
    "DEFAULT_LINK_TTL",
    "DEFAULT_SESSION_TTL",
    "InboxSession",
    "LinkInvalid",
    "SessionSigner",
    "issue_link",
    "link_path",
    "peek_link",
    "use_link",
]

COOKIE_NAME = "loopgate_inbox"
DEFAULT_LINK_TTL = 600.0
"""Seconds a sign-in link stays valid: long enough to open it, short enough to leak little."""
DEFAULT_SESSION_TTL = 8 * 3600.0
_LINK_KEY = "inbox-link:"
_LINK_OP = "inbox_link"


class LinkInvalid(LoopgateError):
    """A sign-in link that is unknown, expired or already used."""


def _link_key(token: str) -> str:
    return _LINK_KEY + hashlib.sha256(token.encode()).hexdigest()


def link_path(token: str) -> str:
    """The path a sign-in link opens (append it to the server's public URL)."""
    return f"/inbox/link/{token}"


class LinkKeys(Protocol):
    """Where a sign-in link is kept: a store, or a notifier's desk (which holds no
    store)."""

    async def put_callback(self, key: str, request_id: str, action: dict[str, Any]) -> None:
        ...


async def issue_link(store: LinkKeys, identity: str, *, ttl: float = DEFAULT_LINK_TTL,
                     now: datetime | None = None) -> str:
    """Make a one-time sign-in link for ``identity``; returns its token.

    Raises:
        ValueError: ``identity`` is empty or ``ttl`` is not positive.
    """
    if not identity or identity != identity.strip():
        raise ValueError("a sign-in link needs an identity (an API key's name)")
    if not ttl > 0:
        raise ValueError(f"ttl must be positive, got {ttl}")
    token = secrets.token_urlsafe(32)
    expires = (now or utcnow()) + timedelta(seconds=ttl)
    await store.put_callback(_link_key(token), "", {
        "op": _LINK_OP, "identity": identity, "expires_at": expires.isoformat(),
        "used_at": None})
    return token


async def peek_link(store: Store, token: str, *, now: datetime | None = None
                    ) -> tuple[str, datetime]:
    """The identity and expiry of a usable link, without using it.

    Raises:
        LinkInvalid: Unknown, expired or used; the message says which.
    """
    if not token or len(token) > 200:
        raise LinkInvalid("this sign-in link is not valid")
    found = await store.get_callback(_link_key(token))
    if found is None or found[1].get("op") != _LINK_OP:
        raise LinkInvalid("this sign-in link is not valid")
    action = found[1]
    if action.get("used_at"):
        raise LinkInvalid("this sign-in link was already used; ask for a new one")
    expires = datetime.fromisoformat(str(action["expires_at"]))
    if expires <= (now or utcnow()):
        raise LinkInvalid("this sign-in link has expired; ask for a new one")
    return str(action["identity"]), expires


async def use_link(store: Store, token: str, guard: ReplayGuard, *,
                   now: datetime | None = None) -> str:
    """Use a link once; returns its identity.

    Raises:
        LinkInvalid: Unknown, expired, or already used (here or by another process).
    """
    identity, expires = await peek_link(store, token, now=now)
    if not await guard.first_use(_link_key(token), expires.timestamp() + 1):
        raise LinkInvalid("this sign-in link was already used; ask for a new one")
    moment = now or utcnow()
    await store.put_callback(_link_key(token), "", {
        "op": _LINK_OP, "identity": identity, "expires_at": expires.isoformat(),
        "used_at": moment.isoformat()})
    return identity


@dataclass(frozen=True)
class InboxSession:
    """What the cookie says: who (None before sign-in), until when, and the CSRF nonce."""

    identity: str | None
    nonce: str
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Signs and reads session cookies and CSRF tokens with one secret.

    Args:
        secret: At least 16 bytes; several processes serving one inbox share it.
        ttl: Seconds a signed-in session lasts.
    """

    def __init__(self, secret: bytes, *, ttl: float = DEFAULT_SESSION_TTL) -> None:
        if len(secret) < 16:
            raise ValueError("the inbox secret must be at least 16 bytes")
        self._cookie_key = hmac.new(secret, b"loopgate-lc inbox cookie v1", "sha256").digest()
        self._csrf_key = hmac.new(secret, b"loopgate-lc inbox csrf v1", "sha256").digest()
        self.ttl = ttl

    def new(self, identity: str | None) -> InboxSession:
        """A fresh session (a new nonce, so a sign-in never keeps an old CSRF token)."""
        ttl = self.ttl if identity else 3600.0
        return InboxSession(identity, secrets.token_urlsafe(16), float(int(time.time() + ttl)))

    def dump(self, session: InboxSession) -> str:
        body = _b64(json.dumps({"i": session.identity, "n": session.nonce,
                                "e": int(session.expires)}).encode())
        mac = _b64(hmac.new(self._cookie_key, body.encode(), "sha256").digest())
        return f"{body}.{mac}"

    def load(self, cookie: str | None) -> InboxSession | None:
        """The session a cookie holds, or None when it is missing, forged or expired."""
        if not cookie or len(cookie) > 1000 or "." not in cookie:
            return None
        body, _, mac = cookie.partition(".")
        expected = _b64(hmac.new(self._cookie_key, body.encode(), "sha256").digest())
        if not hmac.compare_digest(expected.encode(), mac.encode()):
            return None
        try:
            data = json.loads(_unb64(body))
            session = InboxSession(data["i"], str(data["n"]), float(data["e"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        if session.expires <= time.time():
            return None
        return session

    def csrf(self, session: InboxSession) -> str:
        """The CSRF token every form of this session carries."""
        return _b64(hmac.new(self._csrf_key, session.nonce.encode(), "sha256").digest())

    def check_csrf(self, session: InboxSession | None, token: str | None) -> bool:
        if session is None or not token:
            return False
        return hmac.compare_digest(self.csrf(session).encode(), token.encode())
