"""Sign-in links and session cookies on every store backend."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from loopgate_lc.schema import utcnow
from loopgate_lc.server.inbox.auth import (
    LinkInvalid,
    SessionSigner,
    issue_link,
    peek_link,
    use_link,
)
from loopgate_lc.signing import MemoryReplayGuard


async def test_a_link_is_used_once_even_by_a_process_with_its_own_memory(
        any_store: Any) -> None:
    async with any_store as store:
        token = await issue_link(store, "ann", ttl=60)
        assert (await peek_link(store, token))[0] == "ann"
        assert await use_link(store, token, MemoryReplayGuard()) == "ann"
        # another process: its own replay guard has never seen the link, the store has
        with pytest.raises(LinkInvalid, match="already used"):
            await use_link(store, token, MemoryReplayGuard())
        with pytest.raises(LinkInvalid, match="not valid"):
            await peek_link(store, token + "x")
        with pytest.raises(LinkInvalid, match="not valid"):
            await peek_link(store, "")


async def test_an_expired_link_is_refused(any_store: Any) -> None:
    async with any_store as store:
        token = await issue_link(store, "ann", ttl=60, now=utcnow() - timedelta(minutes=2))
        with pytest.raises(LinkInvalid, match="expired"):
            await use_link(store, token, MemoryReplayGuard())


async def test_a_link_needs_an_identity_and_a_positive_lifetime(any_store: Any) -> None:
    async with any_store as store:
        with pytest.raises(ValueError, match="identity"):
            await issue_link(store, " ann")
        with pytest.raises(ValueError, match="ttl"):
            await issue_link(store, "ann", ttl=0)


def test_cookies_are_signed_expire_and_carry_their_own_csrf_token() -> None:
    signer = SessionSigner(b"0123456789abcdef0123")
    session = signer.new("ann")
    cookie = signer.dump(session)
    assert signer.load(cookie) == session
    assert signer.load(cookie[:-2] + "AA") is None
    assert SessionSigner(b"another-secret-0123456").load(cookie) is None
    assert signer.load("garbage") is None and signer.load(None) is None
    assert signer.check_csrf(session, signer.csrf(session))
    assert not signer.check_csrf(signer.new("ann"), signer.csrf(session))
    assert not signer.check_csrf(None, signer.csrf(session))
    stale = SessionSigner(b"0123456789abcdef0123", ttl=-1).new("ann")
    assert stale.expires < time.time() and signer.load(signer.dump(stale)) is None
    with pytest.raises(ValueError, match="16 bytes"):
        SessionSigner(b"short")
