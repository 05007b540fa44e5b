"""Asking and waiting: :meth:`Loopgate.request_interaction`, Beluga's
``RequestInteraction``: file a question, block until it is answered."""

from __future__ import annotations

from loopgate_lc.decisions import response_of
from loopgate_lc.errors import AlreadyDecided
from loopgate_lc.gateway.audit import Auditor
from loopgate_lc.gateway.deciding import Deciding
from loopgate_lc.gateway.filing import Filing, Question
from loopgate_lc.gateway.waiting import Waiters
from loopgate_lc.policy import PolicySet, RiskLevel
from loopgate_lc.schema import HumanResponse, Status
from loopgate_lc.stores.base import Store

__all__ = ["ask"]


async def ask(question: Question, wait: float | None, *, store: Store, policies: PolicySet,
              auditor: Auditor, filing: Filing, deciding: Deciding, waiters: Waiters
              ) -> HumanResponse:
    """The answer to ``question``: at once when a policy lets its call through, else
    once a person (or the timer) decides; past ``wait`` seconds it is cancelled."""
    tool, confidence, risk = question.tool_name, question.confidence, question.risk
    if tool is not None and confidence is not None and risk is not None:
        verdict = policies.evaluate(tool, confidence=confidence, risk=risk)
        if verdict.auto_approved:  # the policy lets it through: nobody is asked
            await auditor.auto_approved(tool, dict(question.args or {}), verdict, None, None,
                                        RiskLevel.parse(risk), float(confidence))
            return HumanResponse(approved=True, status=Status.APPROVED,
                                 decided_by=f"policy:{verdict.policy}",
                                 decision={"type": "approve"})
    record = await filing.submit(question)
    try:
        record = await waiters.wait(record.id, wait)
    except TimeoutError:
        try:
            record = await deciding.cancel(record.id, "loopgate", "wait ended")
        except AlreadyDecided:
            record = await store.get_request(record.id)
    return response_of(record)
