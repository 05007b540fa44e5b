"""Running a graph for its caller (``Loopgate.run``/``arun``/``stream``/``astream``).

One implementation: :meth:`Runner.rounds` is a generator that says what to do next
(run the graph, do something on the gateway, hand the caller an item) and is told the
outcome. It holds every rule of a run: file each pause, wait for decisions, resume with
``Command(resume={interrupt_id: decision})``, mark resumes done once the next step
proves them saved, stop after ``max_pauses``. The two shells, :func:`drive` and
:func:`adrive`, only carry out its steps: the sync one runs the graph in the calling
thread and blocks on the gateway, the async one runs the graph on the caller's loop.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from loopgate_lc.errors import LoopgateError
from loopgate_lc.gateway.audit import Auditor
from loopgate_lc.gateway.drivers import Step, final, resume_command
from loopgate_lc.gateway.filing import Filing
from loopgate_lc.gateway.resuming import Resuming
from loopgate_lc.policy import RiskLevel, Verdict
from loopgate_lc.stores.base import RequestRecord

if TYPE_CHECKING:
    from langgraph.types import Interrupt

__all__ = ["Observer", "Runner", "adrive", "configure", "drive"]

T = TypeVar("T")


@dataclass(frozen=True)
class _Graph:
    """Run the graph with ``value``; reply with the :class:`Step` it ended at."""

    value: Any


@dataclass(frozen=True)
class _Gateway:
    """Run ``work`` on the gateway; reply with its result."""

    work: Coroutine[Any, Any, Any]


@dataclass(frozen=True)
class _Behind:
    """Call ``work`` on the gateway's loop; the caller need not wait for it (no reply).
    A plain call, not a coroutine: handed over from another thread, it runs in the
    loop's next pass, with no task or future around it for a reply nobody reads."""

    work: Callable[[], None]


@dataclass(frozen=True)
class _Emit:
    """Hand the caller ``(kind, item)``."""

    kind: str
    item: Any


Op: TypeAlias = _Graph | _Gateway | _Behind | _Emit
Rounds: TypeAlias = Generator[Op, Any, None]


class Observer:
    """Handed to guards through the run's config, so auto-approvals reach the audit
    (from whichever thread the graph runs in)."""

    def __init__(self, submit: Callable[[Coroutine[Any, Any, None]], object],
                 auditor: Auditor, thread_id: str | None) -> None:
        self._submit = submit
        self._auditor = auditor
        self._thread_id = thread_id

    def auto_approved(
        self, name: str, args: dict[str, Any], verdict: Verdict, tool_call_id: str | None,
        *, risk: RiskLevel, confidence: float | None,
    ) -> None:
        self._submit(self._auditor.auto_approved(
            name, args, verdict, tool_call_id, self._thread_id, risk, confidence))


def configure(config: Mapping[str, Any] | None, observer: Callable[[str], Observer]
              ) -> dict[str, Any]:
    """The run's config: a thread id (a new one unless given) and the guards' observer."""
    from loopgate_lc.interrupts import OBSERVER_KEY

    cfg = dict(config or {})
    configurable = dict(cfg.get("configurable") or {})
    configurable.setdefault("thread_id", str(uuid.uuid4()))
    configurable[OBSERVER_KEY] = observer(str(configurable["thread_id"]))
    cfg["configurable"] = configurable
    return cfg


class Runner:
    """The rules of a run driven by its caller."""

    def __init__(self, filing: Filing, resuming: Resuming, auditor: Auditor) -> None:
        self._filing = filing
        self._resuming = resuming
        self._auditor = auditor

    def rounds(self, value: Any, thread_id: str, name: str | None, max_pauses: int,
               *, streaming: bool) -> Rounds:
        """The run, step by step (see the module's docstring)."""
        done: list[str] = []  # resumes the last step carried into the checkpoint
        reported: set[str] = set()  # interrupts this run has seen (and filed) before
        for _ in range(max_pauses + 1):
            step: Step = yield _Graph(value)
            if not step.interrupts:
                yield _Behind(functools.partial(self._finish, thread_id, name, done))
                yield _Emit("result", step.value)
                return
            pending = {i.id for i in step.interrupts}
            new, reported = pending - reported, reported | pending
            if not streaming:  # nobody watches: file and wait in one trip
                records, resume, decided = yield _Gateway(self._pause(
                    step.interrupts, thread_id, name, done, new))
                for record in records:
                    yield _Emit("requested", record)
            else:  # show the requests before waiting for them
                records = yield _Gateway(self._file(step.interrupts, thread_id, name, done,
                                                    new))
                for record in records:
                    yield _Emit("requested", record)
                resume, decided = yield _Gateway(self._resuming.next_resume(
                    records, pending, thread_id))
            for record in decided:
                yield _Emit("decided", record)
            value, done = resume_command(resume), [r.id for r in decided]
        raise LoopgateError(f"run paused more than {max_pauses} times; stopping")

    async def _file(self, interrupts: Sequence[Interrupt], thread_id: str, name: str | None,
                    done: Sequence[str], new: set[str]) -> list[RequestRecord]:
        await self._resuming.complete(done)  # the run got this far: those resumes are saved
        return await self._filing.file_interrupts(interrupts, thread_id, name, new=new)

    async def _pause(self, interrupts: Sequence[Interrupt], thread_id: str, name: str | None,
                     done: Sequence[str], new: set[str],
                     ) -> tuple[list[RequestRecord], dict[str, Any], list[RequestRecord]]:
        records = await self._file(interrupts, thread_id, name, done, new)
        resume, decided = await self._resuming.next_resume(
            records, {i.id for i in interrupts}, thread_id)
        return records, resume, decided

    def _finish(self, thread_id: str, name: str | None, done: Sequence[str]) -> None:
        # the caller has its result as the commit begins (see Resuming.complete_behind)
        self._resuming.complete_behind(done, [self._auditor.event(
            "finished", thread_id=thread_id, details={"graph": name})])


def drive(rounds: Rounds, graph: Any, config: dict[str, Any], stream_mode: Any,
          call: Callable[[Coroutine[Any, Any, Any]], Any],
          soon: Callable[[Callable[[], None]], None] | None = None,
          ) -> Iterator[tuple[str, Any]]:
    """Carry out ``rounds`` from a sync caller: the graph in this thread, gateway work
    through ``call`` (which blocks), or ``soon`` (which does not) where the caller
    need not wait (through ``call`` without one)."""
    reply: Any = None
    while True:
        try:
            op = rounds.send(reply)
        except StopIteration:
            return
        if isinstance(op, _Emit):
            yield op.kind, op.item
            reply = None
        elif isinstance(op, _Behind):
            if soon is not None:
                soon(op.work)
            else:
                call(_now(op.work))
            reply = None
        elif isinstance(op, _Gateway):
            reply = call(op.work)
        elif stream_mode is None:
            reply = graph.invoke(op.value, config, version="v2")
        else:
            for chunk in graph.stream(op.value, config, stream_mode=stream_mode):
                yield "chunk", chunk
            reply = final(graph.get_state(config))


async def adrive(rounds: Rounds, graph: Any, config: dict[str, Any], stream_mode: Any,
                 call: Callable[[Coroutine[Any, Any, Any]], Awaitable[Any]]
                 ) -> AsyncIterator[tuple[str, Any]]:
    """Carry out ``rounds`` from an async caller: the graph on the caller's loop,
    gateway work awaited through ``call``."""
    reply: Any = None
    while True:
        try:
            op = rounds.send(reply)
        except StopIteration:
            return
        if isinstance(op, _Emit):
            yield op.kind, op.item
            reply = None
        elif isinstance(op, _Behind):
            reply = await call(_now(op.work))
        elif isinstance(op, _Gateway):
            reply = await call(op.work)
        elif stream_mode is None:
            reply = await graph.ainvoke(op.value, config, version="v2")
        else:
            async for chunk in graph.astream(op.value, config, stream_mode=stream_mode):
                yield "chunk", chunk
            reply = final(await graph.aget_state(config))


async def _now(work: Callable[[], None]) -> None:
    """``work`` as a coroutine, for a caller that has the gateway run one."""
    work()
