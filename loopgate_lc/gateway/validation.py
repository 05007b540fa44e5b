"""Decision schemas, compiled off the event loop.

A request may carry a ``response_schema`` (JSON Schema text): an edit's arguments must
fit the tool's own schema. ``jsonschema`` takes about a second to import (far more on a
busy machine) and compiling a schema is not free either; both happen in a worker thread,
once per schema, so timers and Telegram never stall behind the first edit of a process.
Without an event loop (the CLI deciding inline) there is nothing to stall: it happens here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from loopgate_lc._inline import loop_running
from loopgate_lc._lru import LRU
from loopgate_lc.decisions import (
    SCHEMA_CHECKED,
    response_schema,
    schema_error,
    schemas_of_edited_args,
    validate_decision,
)
from loopgate_lc.schema import ApprovalRequest

__all__ = ["Schemas"]


def _compile(schema: str) -> Any:
    # imported here: jsonschema pulls in format checkers that slow every CLI start
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads(schema))


class Schemas:
    """Checks decisions; keeps a bounded cache of compiled validators (one per tool or
    question shape, in practice)."""

    def __init__(self, maxsize: int = 256) -> None:
        self._compiled: LRU[str, Any] = LRU(maxsize)

    async def check(self, request: ApprovalRequest, decision: Mapping[str, Any]
                    ) -> dict[str, Any]:
        """The decision, checked once: shape and rules, then, for the decisions a
        schema says more about, the request's ``response_schema``.

        Raises:
            InvalidDecision: It does not fit (``DecisionNotAllowed`` for a type the
                request does not allow).
        """
        checked = validate_decision(request, decision)
        for what, args_schema, args in schemas_of_edited_args(request, checked):
            error = schema_error(await self._validator(args_schema), args, what)
            if error is not None:
                raise error
        if checked["type"] not in SCHEMA_CHECKED:
            return checked
        schema = response_schema(request)
        if schema is None:
            return checked
        error = schema_error(await self._validator(schema), checked)
        if error is not None:
            raise error
        return checked

    async def _validator(self, schema: str) -> Any:
        validator = self._compiled.get(schema)
        if validator is None:
            if loop_running():
                import asyncio

                validator = await asyncio.to_thread(_compile, schema)
            else:
                validator = _compile(schema)
            self._compiled.get_or_make(schema, lambda: validator)
        return validator
