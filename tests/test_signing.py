"""Webhook signatures and decision tokens, checked the way a receiver checks them."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from loopgate_lc.errors import SignatureError
from loopgate_lc.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    compute_signature,
    decision_token,
    sign,
    verify_decision_token,
    verify_signature,
)

BODY = b'{"event":"approval.requested","request":{"id":"req-1"}}'
SECRET = "s3cret"
NOW = 1_767_225_600


def test_sign_produces_the_documented_format() -> None:
    headers = sign(BODY, SECRET, timestamp=NOW)
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert headers == {TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: f"v1={expected}"}


def test_round_trip() -> None:
    verify_signature(BODY, sign(BODY, SECRET, timestamp=NOW), SECRET, now=NOW + 5)


def test_round_trip_with_the_clock() -> None:
    verify_signature(BODY, sign(BODY, SECRET), SECRET)


def test_str_and_bytes_secrets_and_bodies_agree() -> None:
    headers = sign(BODY.decode(), SECRET.encode(), timestamp=NOW)
    verify_signature(BODY, headers, SECRET, now=NOW)


def test_header_lookup_is_case_insensitive() -> None:
    headers = {k.lower(): v for k, v in sign(BODY, SECRET, timestamp=NOW).items()}
    verify_signature(BODY, headers, SECRET, now=NOW)


def test_bare_signature_with_timestamp() -> None:
    headers = sign(BODY, SECRET, timestamp=NOW)
    verify_signature(
        BODY, headers[SIGNATURE_HEADER], SECRET, timestamp=headers[TIMESTAMP_HEADER], now=NOW
    )


def test_tampered_body_is_a_mismatch() -> None:
    headers = sign(BODY, SECRET, timestamp=NOW)
    with pytest.raises(SignatureError, match="mismatch"):
        verify_signature(BODY.replace(b"req-1", b"req-2"), headers, SECRET, now=NOW)


def test_tampered_timestamp_is_a_mismatch() -> None:
    headers = sign(BODY, SECRET, timestamp=NOW)
    headers[TIMESTAMP_HEADER] = str(NOW + 1)
    with pytest.raises(SignatureError, match="mismatch"):
        verify_signature(BODY, headers, SECRET, now=NOW)


def test_wrong_secret_is_a_mismatch() -> None:
    headers = sign(BODY, SECRET, timestamp=NOW)
    with pytest.raises(SignatureError, match="mismatch"):
        verify_signature(BODY, headers, "other", now=NOW)


def test_stale_timestamp() -> None:
    headers = sign(BODY, SECRET, timestamp=NOW)
    verify_signature(BODY, headers, SECRET, now=NOW + 300)  # the edge is still fresh
    with pytest.raises(SignatureError, match="stale timestamp: signed 301 seconds ago"):
        verify_signature(BODY, headers, SECRET, now=NOW + 301)


def test_future_timestamp() -> None:
    headers = sign(BODY, SECRET, timestamp=NOW + 400)
    with pytest.raises(SignatureError, match="400 seconds in the future"):
        verify_signature(BODY, headers, SECRET, now=NOW)
    verify_signature(BODY, headers, SECRET, now=NOW, tolerance=400)


@pytest.mark.parametrize("missing", [TIMESTAMP_HEADER, SIGNATURE_HEADER])
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
        ("", "is not scheme=value"),
        ("deadbeef", "is not scheme=value"),
        ("v1=xyz", "not 64 lowercase hex"),
        ("v1=" + "A" * 64, "not 64 lowercase hex"),
        ("v0=" + "a" * 64, "no v1= signature"),
    ],
)
def test_malformed_signature(value: str, why: str) -> None:
    headers = sign(BODY, SECRET, timestamp=NOW)
    headers[SIGNATURE_HEADER] = value
    with pytest.raises(SignatureError, match=f"malformed {SIGNATURE_HEADER} header.*{why}"):
        verify_signature(BODY, headers, SECRET, now=NOW)


def test_rotation_sender_signs_with_two_secrets() -> None:
    headers = sign(BODY, ["new", "old"], timestamp=NOW)
    assert headers[SIGNATURE_HEADER].count("v1=") == 2
    verify_signature(BODY, headers, "old", now=NOW)  # a receiver not yet rotated
    verify_signature(BODY, headers, "new", now=NOW)  # a receiver already rotated
    with pytest.raises(SignatureError, match="mismatch"):
        verify_signature(BODY, headers, "neither", now=NOW)


def test_rotation_receiver_accepts_either_secret() -> None:
    headers = sign(BODY, "old", timestamp=NOW)
    verify_signature(BODY, headers, ["new", "old"], now=NOW)


def test_unknown_schemes_beside_v1_are_ignored() -> None:
    headers = sign(BODY, SECRET, timestamp=NOW)
    headers[SIGNATURE_HEADER] = "v2=whatever, " + headers[SIGNATURE_HEADER]
    verify_signature(BODY, headers, SECRET, now=NOW)


def test_empty_secret_is_refused() -> None:
    with pytest.raises(SignatureError, match="secret is empty"):
        sign(BODY, "")
    with pytest.raises(SignatureError, match="no signing secret"):
        verify_signature(BODY, sign(BODY, SECRET), [])


def test_compute_signature_is_the_header_value() -> None:
    headers = sign(BODY, SECRET, timestamp=NOW)
    assert headers[SIGNATURE_HEADER] == "v1=" + compute_signature(BODY, SECRET, NOW)


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
    signature = compute_signature(b"req-1", SECRET, 0)
    with pytest.raises(SignatureError):
        verify_decision_token(SECRET, "req-1", signature)
