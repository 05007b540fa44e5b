"""Bodies pydantic parses straight from their bytes end exactly as the dict path ends them:
the same model, or the same refusal (status, code, message, details)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from starlette.requests import Request

from loopgate_lc.server.errors import ApiError
from loopgate_lc.server.hitl import read_model, read_model_checked
from loopgate_lc.server.models import (
    RegisterBody,
    RequestBody,
    RespondBatchBody,
    RespondBody,
    WebhookDecisionBody,
)


def _request(body: bytes) -> Request:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)


async def _by_dict(body: bytes, model: type[BaseModel]) -> BaseModel:
    """The path every body took before: ``json.loads``, the checks, then the model."""
    return await read_model_checked(_request(body), model)


async def _outcome(parse: Any) -> tuple[Any, ...]:
    try:
        model = await parse
    except ApiError as exc:
        return ("refused", exc.status, exc.code, exc.message, exc.details)
    return ("parsed", type(model).__name__, model.model_dump(mode="json"))


@pytest.mark.parametrize(("model", "body"), [
    (RespondBody, b'{"request_id": "r1", "decision": {"type": "approve"}, "actor": "ann"}'),
    (RespondBody, b'{"request_id": "a", "request_id": "b", "approved": true}'),
    (RespondBody, b'{"request_id": "r", "decision": {"n": -0, "f": 0.1, "g": 1E5, "big": '
                  b'123456789012345678901234567890, "dup": 1, "dup": 2}}'),
    (RespondBody, b'  {"request_id": "\xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80"}  \n'),
    (RespondBody, b'{"request_id": "a\xff"}'),                  # not UTF-8
    (RespondBody, b'\xef\xbb\xbf{"request_id": "a"}'),           # a byte-order mark
    (RespondBody, b'{"request_id": "a\tb"}'),                    # a raw control character
    (RespondBody, b'{"request_id": "a", "approved": 1}'),
    (RespondBody, b'{"request_id": "a", "approved": "true"}'),
    (RespondBody, b'{"request_id": 5}'),
    (RespondBody, b'{"request_id": "a"} trailing'),
    (RespondBody, b'{"request_id": "a",}'),
    (RespondBody, b'{"request_id": "a", "decision": {"n": 01}}'),
    (RespondBody, b'[{"request_id": "a"}]'),
    (RespondBody, b''),
    (RespondBody, b'{}'),
    (RespondBody, b'{"request_id": "\\ud800"}'),                 # a lone surrogate
    (RespondBody, b'{"request_id": "a", "decision": {"deep": ' + b'[' * 40 + b']' * 40 + b'}}'),
    (RespondBody, b'{"request_id": "a", "decision": {"type": "respond", "message": "\\ud83d"}}'),
    (RequestBody, b'{"session_id": "s", "message": "m", "timeout_seconds": 5}'),
    (RequestBody, b'{"session_id": "s", "message": "m", "timeout_seconds": true}'),
    (RequestBody, b'{"session_id": "s", "message": "m", "timeout_seconds": NaN}'),
    (RequestBody, b'{"session_id": "s", "message": "m", "options": ["a", {"label": "b", '
                  b'"approved": true}], "callback_url": "https://example.com/x"}'),
    (RequestBody, b'{"session_id": "s", "message": "m", "options": [{"label": "b", '
                  b'"approved": 1}]}'),
    (RegisterBody, b'{"session_id": "s", "telegram_id": 5.0}'),
    (RegisterBody, b'{"session_id": "s", "approvers": [1, "x"], "metadata": {"k": [null]}}'),
    (WebhookDecisionBody, b'{"token": "t", "type": "respond", "message": "hi", "x": [1]}'),
    (RespondBatchBody, b'{"thread_id": "t", "decisions": [{"type": "approve"}]}'),
])
async def test_a_body_parsed_from_its_bytes_ends_as_by_way_of_a_dict(
        model: type[BaseModel], body: bytes) -> None:
    assert await _outcome(read_model(_request(body), model)) == \
        await _outcome(_by_dict(body, model))
