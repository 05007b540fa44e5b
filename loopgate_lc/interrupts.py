"""How loopgate_lc pauses a run: request ids, response schemas and the ``interrupt()`` call.

Shared by the tool guard, the agent middleware and ``request_approval`` so that every
pause carries the same payload and accepts the same decisions. Nothing here has side
effects before ``interrupt()``: LangGraph re-runs a node from its top on every resume.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import suppress
from datetime import timedelta
from functools import lru_cache
from typing import Annotated, Any, Literal, cast

from langgraph.config import get_config
from langgraph.types import interrupt
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    TypeAdapter,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    create_model,
)
from pydantic.errors import PydanticUserError
from pydantic_core import from_json, to_json

from loopgate_lc.schema import (
    ApprovalRequest,
    ApproveDecision,
    CancelDecision,
    DecisionType,
    RejectDecision,
    RespondDecision,
    TimeoutDecision,
    utcnow,
)

__all__ = [
    "OBSERVER_KEY",
    "ask",
    "decision_schema",
    "new_request_id",
    "observer",
    "question_schema",
]

_NAMESPACE = uuid.UUID("6f1b0f3e-6f5c-4c1e-9a53-3c1f1f0e7a11")
_COUNTER_KEY = "__loopgate_request_counter"
OBSERVER_KEY = "__loopgate_observer"
"""Config key under which a gateway running the graph listens for auto-approvals."""


def observer() -> Any:
    """The gateway observing this run, if the run goes through one (else None)."""
    try:
        return get_config().get("configurable", {}).get(OBSERVER_KEY)
    except RuntimeError:
        return None


def new_request_id(key: str) -> str:
    """A request id that is the same every time the node re-runs up to this pause.

    LangGraph re-executes a node from its top on resume, so a random id would change on
    every re-run. The id is derived from the thread, the task's checkpoint namespace, a
    caller key (the tool call id, or the question) and how often that key was already
    asked in this task.
    """
    try:
        configurable = get_config().get("configurable", {})
    except RuntimeError:  # outside a graph: nothing to keep stable
        return str(uuid.uuid4())
    counter = configurable.setdefault(_COUNTER_KEY, Counter())
    occurrence = counter[key]
    counter[key] += 1
    thread = configurable.get("thread_id", "")
    namespace = configurable.get("checkpoint_ns", "")
    return str(uuid.uuid5(_NAMESPACE, f"{thread}\x1f{namespace}\x1f{key}\x1f{occurrence}"))


_WHO: dict[str, Any] = {"actor": (str | None, None), "channel": (str | None, None)}


def _as_sent(answer: object, check: ValidatorFunctionWrapHandler) -> object:
    """Validate an edit, then keep it as sent so the tool validates its own args once."""
    check(answer)
    return answer


def _edit_branch(name: str, args_schema: object) -> object:
    if isinstance(args_schema, type) and issubclass(args_schema, BaseModel):
        args_type: object = args_schema
    else:
        shown = args_schema if isinstance(args_schema, dict) else {"type": "object"}
        args_type = Annotated[dict[str, Any], WithJsonSchema(shown)]
    action_fields: dict[str, Any] = {"name": (Literal[name], ...), "args": (args_type, ...)}
    edited_action = create_model(
        "EditedAction", __config__=ConfigDict(extra="forbid"), **action_fields
    )
    decision_fields: dict[str, Any] = {
        "type": (Literal["edit"], ...),
        "edited_action": (edited_action, ...),
        **_WHO,
    }
    decision = create_model("EditDecision", __config__=ConfigDict(extra="ignore"),
                            **decision_fields)
    return Annotated[decision, WrapValidator(_as_sent)]


def _respond_branch(options: tuple[str, ...]) -> object:
    if not options:
        return RespondDecision
    fields: dict[str, Any] = {
        "type": (Literal["respond"], ...),
        "message": (Literal[options], ...),
        **_WHO,
    }
    return create_model("ChoiceDecision", __config__=ConfigDict(extra="ignore"), **fields)


def decision_schema(
    allowed: Sequence[DecisionType],
    *,
    name: str = "",
    args_schema: object = None,
    options: Sequence[str] = (),
) -> object:
    """The ``response_schema`` for one pause: the allowed decisions, plus the system's own
    ``timeout`` and ``cancel``.

    An edit's ``name`` is pinned (an edit cannot switch tools) and its ``args`` follow the
    tool's own schema; a choice's ``respond`` must name one of the options. LangGraph
    validates a resume value against this type before saving it, so a wrong answer
    raises and leaves the interrupt pending. Building the type costs a little, so
    callers build it once per tool (or per question shape) and reuse it.
    """
    branches: dict[str, object] = {}
    for kind in dict.fromkeys(allowed):
        if kind == "approve":
            branches[kind] = ApproveDecision
        elif kind == "reject":
            branches[kind] = RejectDecision
        elif kind == "respond":
            branches[kind] = _respond_branch(tuple(options))
        elif kind == "edit":
            branches[kind] = _edit_branch(name, args_schema)
    branches["timeout"] = TimeoutDecision
    branches["cancel"] = CancelDecision
    union: Any = None
    for member in branches.values():
        union = member if union is None else union | member
    one: Any = Annotated[union, Discriminator("type")]
    # LangChain's batched resume, {"decisions": [...]}, for this one call
    batch = create_model("DecisionBatch", __config__=ConfigDict(extra="forbid"),
                         decisions=(Annotated[list[one], Field(min_length=1, max_length=1)],
                                    ...))
    return _with_published_schema(one | batch)


_SLOW_PATH = (PydanticUserError, TypeError, ValueError, AttributeError)
"""What a type pydantic cannot prepare for the fast paths raises (no schema it can
generate or inline, no attributes it can carry): it keeps the old, slower path."""


def _with_published_schema(schema: Any) -> object:
    """``schema`` carrying its JSON schema, generated once, here.

    LangGraph publishes a pause's ``response_schema`` by generating its JSON schema on
    every ``interrupt()`` that pauses; for a decision union that took about 4 ms, more
    than the rest of the pause. With the finished JSON schema attached, generating it is
    a copy. Pydantic cannot take a finished schema with ``$ref``s in it, so definitions
    are inlined; a schema that cannot be inlined (a recursive tool argument type, a
    foreign ``$ref``) keeps the slow path, unchanged. Validation is the same either way.
    """
    try:
        published = _inline_refs(TypeAdapter(schema).json_schema())
    except _SLOW_PATH:
        return _compiled(schema)
    return _published_as_text(_compiled(Annotated[schema, WithJsonSchema(published)]))


_PUBLISHED = "__loopgate_published_schema__"



def _published_as_text(schema: Any) -> object:
    """``schema`` carrying the JSON text of the JSON schema pydantic publishes for it.

    Even with the finished schema attached, pydantic's generator counts references in,
    sorts and copies the ~8 kB result on every pause (0.4-1 ms). When an ``interrupt()``
    is sure to pause (nothing to validate), :func:`ask` hands LangGraph a fresh parse of
    this text instead: the very same dict, in a tenth of the time. A resume still passes
    the type, so LangGraph validates the answer before saving it, as before.
    """
    with suppress(*_SLOW_PATH):
        setattr(schema, _PUBLISHED, to_json(TypeAdapter(schema).json_schema()))
    return cast(object, schema)


_COMPILED = ("__pydantic_core_schema__", "__pydantic_validator__", "__pydantic_serializer__")


def _compiled(schema: Any) -> object:
    """``schema`` carrying its compiled validator, so adapting it again is free.

    LangGraph wraps a ``response_schema`` in a new ``TypeAdapter`` on every
    ``interrupt()`` call, the pause and the resume alike, and building one compiles the
    decision union again: about 1.5 ms each, twice per round trip. Pydantic takes a
    type's own compiled core schema, validator and serializer when the type carries
    them (as a model class does), so compiling once here makes the later adapters a
    lookup. Validation and the JSON schema are the very same objects; a type that cannot
    carry them keeps the slow path, unchanged.
    """
    with suppress(*_SLOW_PATH):
        adapter = TypeAdapter(schema)
        for name in _COMPILED:
            setattr(schema, name, getattr(adapter, name.strip("_").removeprefix("pydantic_")))
    return cast(object, schema)


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every local ``#/$defs/...`` reference replaced by its definition.

    Raises:
        ValueError: A reference is recursive or not local.
    """
    defs = schema.get("$defs", {})

    def walk(node: Any, seen: frozenset[str]) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                key = ref.removeprefix("#/$defs/")
                if key == ref or key in seen or key not in defs:
                    raise ValueError(f"cannot inline {ref!r}")
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return {**walk(defs[key], seen | {key}), **walk(rest, seen)}
            out = {k: walk(v, seen) for k, v in node.items()}
            mapping = out.get("discriminator", {}).get("mapping") if isinstance(
                out.get("discriminator"), dict) else None
            if isinstance(mapping, dict):  # it pointed into $defs, which are gone
                out["discriminator"] = {
                    k: v for k, v in out["discriminator"].items() if k != "mapping"}
            return out
        if isinstance(node, list):
            return [walk(item, seen) for item in node]
        return node

    inlined: dict[str, Any] = walk({k: v for k, v in schema.items() if k != "$defs"},
                                   frozenset())
    return inlined


@lru_cache(maxsize=256)
def question_schema(
    allowed: tuple[DecisionType, ...], name: str, options: tuple[str, ...]
) -> object:
    """:func:`decision_schema` for node questions, which have no tool schema to pin."""
    return decision_schema(allowed, name=name, options=options)


def ask(request: ApprovalRequest, schema: object) -> dict[str, Any]:
    """Pause the run with ``request`` and return the validated decision as a plain dict.

    The first time through, ``interrupt()`` raises LangGraph's ``GraphInterrupt`` (never
    caught here); on resume it returns the answer, already checked against ``schema``.
    """
    if request.timeout_seconds is not None and request.expires_at is None:
        request.expires_at = utcnow() + timedelta(seconds=request.timeout_seconds)
    published: bytes | None = getattr(schema, _PUBLISHED, None)
    if published is not None and _surely_pauses():  # nothing to validate: publish only
        answer = interrupt(request.to_interrupt(), response_schema=from_json(published))
        answer = TypeAdapter(cast(type[Any], schema)).validate_python(answer)  # never, if sure
    else:
        answer = interrupt(request.to_interrupt(), response_schema=cast(type[Any], schema))
    return single_decision(answer)


_SCRATCHPAD = "__pregel_scratchpad"
"""Where LangGraph keeps a task's resume values, in its config's ``configurable``."""


def _surely_pauses() -> bool:
    """Whether the next ``interrupt()`` of this task will pause, not return an answer.

    True only when the task holds no resume value at all (none of its own, none for
    the whole run), as on a run's first pass to a pause; anything unexpected says False,
    which keeps LangGraph's own path (the answer validated before it is saved).
    """
    try:
        scratchpad = get_config()["configurable"][_SCRATCHPAD]
        return not scratchpad.resume and scratchpad.get_null_resume(False) is None
    except (RuntimeError, KeyError, AttributeError):  # not inside a task (get_config),
        return False  # or a LangGraph that keeps them elsewhere or in another shape


def single_decision(answer: Any) -> dict[str, Any]:
    """A decision as a plain dict; LangChain's ``{"decisions": [d]}`` for one call is
    read as ``d``."""
    decisions = getattr(answer, "decisions", None)
    if decisions is None and isinstance(answer, Mapping):
        decisions = answer.get("decisions")
    if isinstance(decisions, list) and len(decisions) == 1:
        answer = decisions[0]
    if isinstance(answer, BaseModel):
        return answer.model_dump(mode="json", exclude_none=True)
    return dict(answer)
