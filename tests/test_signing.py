"""Webhook signatures (Standard Webhooks), signed decisions and decision tokens, checked
the way a receiver checks them, and against the ``standardwebhooks`` library."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from datetime import UTC, datetime

import pytest

from loopgate_lc.errors import SignatureError
from loopgate_lc.signing import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    MemoryReplayGuard,
    decision_signing_secret,
    decision_token,
    sign,
    sign_decision,
    verify_decision_signature,
    verify_decision_token,
    verify_signature,
)

BODY = b'{"event":"approval.requested","request":{"id":"req-1"}}'
SECRET = "s3cret"
NOW = 1_767_225_600
PATH = "/hitl/webhook/decision/req-1"


def _hmac(key: bytes, text: bytes) -> str:
    return base64.b64encode(hmac.new(key, text, hashlib.sha256).digest()).decode()


def test_sign_produces_the_documented_format() -> None:
    headers = sign(BODY, SECRET, message_id="msg_1", timestamp=NOW)
    expected = _hmac(SECRET.encode(), f"msg_1.{NOW}.".encode() + BODY)
    assert headers == {ID_HEADER: "msg_1", TIMESTAMP_HEADER: str(NOW),
                       SIGNATURE_HEADER: f"v1,{expected}"}


def test_whsec_secrets_are_base64_keys() -> None:
    key = b"\x00\x01binary key"
    secret = "whsec_" + base64.b64encode(key).decode()
    headers = sign(BODY, secret, message_id="msg_1", timestamp=NOW)
    assert headers[SIGNATURE_HEADER] == f"v1,{_hmac(key, f'msg_1.{NOW}.'.encode() + BODY)}"
    verify_signature(BODY, headers, secret, now=NOW)


def test_round_trip_returns_the_message_id() -> None:
    headers = sign(BODY, SECRET, timestamp=NOW)
    assert verify_signature(BODY, headers, SECRET, now=NOW + 5) == headers[ID_HEADER]
    verify_signature(BODY, sign(BODY, SECRET), SECRET)  # with the clock


def test_str_and_bytes_secrets_and_bodies_agree() -> None:
    headers = sign(BODY.decode(), SECRET.encode(), timestamp=NOW)
    verify_signature(BODY, headers, SECRET, now=NOW)


def test_header_lookup_is_case_insensitive() -> None:
    headers = {k.upper(): v for k, v in sign(BODY, SECRET, timestamp=NOW).items()}
    verify_signature(BODY, headers, SECRET, now=NOW)


@pytest.mark.parametrize("change", ["body", "timestamp", "id", "secret"])
def test_any_change_is_a_mismatch(change: str) -> None:
    headers = sign(BODY, SECRET, message_id="msg_1", timestamp=NOW)
    body, secret = BODY, SECRET
    if change == "body":
        body = BODY.replace(b"req-1", b"req-2")
    elif change == "timestamp":
        headers[TIMESTAMP_HEADER] = str(NOW + 1)
    elif change == "id":
        headers[ID_HEADER] = "msg_2"
    else:
        secret = "other"
    with pytest.raises(SignatureError, match="mismatch"):
        verify_signature(body, headers, secret, now=NOW)


def test_stale_and_future_timestamps() -> None:
    headers = sign(BODY, SECRET, timestamp=NOW)
    verify_signature(BODY, headers, SECRET, now=NOW + 300)  # the edge is still fresh
    with pytest.raises(SignatureError, match="stale timestamp: signed 301 seconds ago"):
        verify_signature(BODY, headers, SECRET, now=NOW + 301)
    future = sign(BODY, SECRET, timestamp=NOW + 400)
    with pytest.raises(SignatureError, match="400 seconds in the future"):
        verify_signature(BODY, future, SECRET, now=NOW)
    verify_signature(BODY, future, SECRET, now=NOW, tolerance=400)


@pytest.mark.parametrize("missing", [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER])
def test_missing_header(missing: str) -> None:
    headers = sign(BODY, SECRET, timestamp=NOW)
    del headers[missing]
    with pytest.raises(SignatureError, match=f"missing {missing} header"):
        verify_signature(BODY, headers, SECRET, now=NOW)


@pytest.mark.parametrize("value", ["", "abc", "12.5", "-5", "１２３", "9" * 40])
def test_malformed_timestamp(value: str) -> None:
    headers = sign(BODY, SECRET, timestamp=NOW)
    headers[TIMESTAMP_HEADER] = value
    with pytest.raises(SignatureError, match=f"malformed {TIMESTAMP_HEADER}"):
        verify_signature(BODY, headers, SECRET, now=NOW)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "no v1 signature"),
        ("deadbeef", "is not version,signature"),
        ("v1,not*base64", "not base64"),
        ("v0,AAAA", "no v1 signature"),
    ],
)
def test_malformed_signature(value: str, why: str) -> None:
    headers = sign(BODY, SECRET, timestamp=NOW)
    headers[SIGNATURE_HEADER] = value
    with pytest.raises(SignatureError, match=f"malformed {SIGNATURE_HEADER} header.*{why}"):
        verify_signature(BODY, headers, SECRET, now=NOW)


def test_malformed_message_id() -> None:
    headers = sign(BODY, SECRET, timestamp=NOW)
    headers[ID_HEADER] = "has.dots and spaces"
    with pytest.raises(SignatureError, match=f"malformed {ID_HEADER}"):
        verify_signature(BODY, headers, SECRET, now=NOW)


def test_rotation_sender_signs_with_two_secrets() -> None:
    headers = sign(BODY, ["new", "old"], timestamp=NOW)
    assert headers[SIGNATURE_HEADER].count("v1,") == 2
    verify_signature(BODY, headers, "old", now=NOW)  # a receiver not yet rotated
    verify_signature(BODY, headers, "new", now=NOW)  # a receiver already rotated
    verify_signature(BODY, sign(BODY, "old", timestamp=NOW), ["new", "old"], now=NOW)
    with pytest.raises(SignatureError, match="mismatch"):
        verify_signature(BODY, headers, "neither", now=NOW)


def test_unknown_versions_beside_v1_are_ignored() -> None:
    headers = sign(BODY, SECRET, timestamp=NOW)
    headers[SIGNATURE_HEADER] = "v1a,whatever " + headers[SIGNATURE_HEADER]
    verify_signature(BODY, headers, SECRET, now=NOW)


def test_empty_secret_is_refused() -> None:
    with pytest.raises(SignatureError, match="secret is empty"):
        sign(BODY, "")
    with pytest.raises(SignatureError, match="no signing secret"):
        verify_signature(BODY, sign(BODY, SECRET), [])


# --- decisions: bound to method and path, and never interchangeable with deliveries ------


def test_a_decision_signature_covers_the_path() -> None:
    body = b'{"decision": {"type": "approve"}}'
    headers = sign_decision(body, SECRET, path=PATH, timestamp=NOW)
    verify_decision_signature(body, headers, SECRET, path=PATH, now=NOW)
    with pytest.raises(SignatureError, match="mismatch"):  # posted to another request
        verify_decision_signature(body, headers, SECRET, path="/hitl/webhook/decision/B",
                                  now=NOW)
    with pytest.raises(SignatureError, match="mismatch"):
        verify_decision_signature(body, headers, SECRET, path=PATH, method="PUT", now=NOW)


def test_deliveries_and_decisions_never_verify_as_each_other() -> None:
    body = b'{"decision": {"type": "approve"}}'
    delivery = sign(body, SECRET, timestamp=NOW)
    with pytest.raises(SignatureError, match="mismatch"):
        verify_decision_signature(body, delivery, SECRET, path=PATH, now=NOW)
    decision = sign_decision(body, SECRET, path=PATH, timestamp=NOW)
    with pytest.raises(SignatureError, match="mismatch"):
        verify_signature(body, decision, SECRET, now=NOW)
    with pytest.raises(SignatureError, match="mismatch"):  # not even with the path glued on
        verify_signature(f"POST {PATH}\n".encode() + body, decision, SECRET, now=NOW)


def test_replay_guard_accepts_each_id_once_until_it_expires() -> None:
    now = [1000.0]
    guard = MemoryReplayGuard(clock=lambda: now[0], max_entries=2)

    async def run() -> list[bool]:
        return [await guard.first_use("a", 1300), await guard.first_use("a", 1300),
                await guard.first_use("b", 1300), await guard.first_use("c", 1300)]

    # "c" is refused while the guard is full of live ids: it fails closed
    assert asyncio.run(run()) == [True, False, True, False]
    now[0] = 1301.0
    assert asyncio.run(guard.first_use("a", 1600)) is True


# --- receivers can use a Standard Webhooks library ----------------------------------------


def test_standardwebhooks_library_verifies_deliveries_and_signs_decisions() -> None:
    standardwebhooks = pytest.importorskip("standardwebhooks")
    secret = "whsec_" + base64.b64encode(b"a shared key of 32 bytes........").decode()
    headers = sign(BODY, secret)
    assert standardwebhooks.Webhook(secret).verify(BODY, headers) == {
        "event": "approval.requested", "request": {"id": "req-1"}}
    # A plain (non-whsec) secret is its UTF-8 bytes: give the library those bytes.
    standardwebhooks.Webhook(SECRET.encode()).verify(BODY, sign(BODY, SECRET))

    body = '{"decision": {"type": "approve"}}'
    at = datetime.now(UTC)
    signature = standardwebhooks.Webhook(decision_signing_secret(secret)).sign(
        "msg_receiver_1", at, f"POST {PATH}\n{body}")
    verify_decision_signature(body, {ID_HEADER: "msg_receiver_1",
                                     TIMESTAMP_HEADER: str(int(at.timestamp())),
                                     SIGNATURE_HEADER: signature}, secret, path=PATH)


def test_decision_token_round_trip() -> None:
    token = decision_token(SECRET, "req-1")
    assert token == decision_token(SECRET, "req-1")  # derived, nothing stored
    assert token.replace("-", "").replace("_", "").isalnum()  # URL-safe, no padding
    verify_decision_token(SECRET, "req-1", token)
    verify_decision_token(["new", SECRET], "req-1", token)


@pytest.mark.parametrize(
    ("secret", "request_id", "token", "message"),
    [
        (SECRET, "req-2", None, "invalid decision token for request 'req-2'"),
        ("other", "req-1", None, "invalid decision token"),
        (SECRET, "req-1", "", "missing decision token"),
        (SECRET, "req-1", "not-a-token-é", "invalid decision token"),
    ],
)
def test_decision_token_rejected(
    secret: str, request_id: str, token: str | None, message: str
) -> None:
    if token is None:
        token = decision_token(SECRET, "req-1")
    with pytest.raises(SignatureError, match=message):
        verify_decision_token(secret, request_id, token)


def test_a_webhook_signature_is_not_a_decision_token() -> None:
    signature = sign(b"req-1", SECRET, timestamp=0)[SIGNATURE_HEADER].partition(",")[2]
    with pytest.raises(SignatureError):
        verify_decision_token(SECRET, "req-1", signature)
