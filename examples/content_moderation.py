"""Content moderation: a classifier flags posts; removals it is at least 95% sure of run on
their own, the rest wait for a moderator.

The confidence comes from the classifier (a stub here), not from the model, and the
policy's ``min_confidence=0.95`` does the sorting. This example uses a hand-built
LangGraph graph instead of an agent: one task per post (``Send``), each calling the
guarded tool from its own node, so a post waiting for a person never holds up the others.

    python examples/content_moderation.py          # you are the moderator
    python examples/content_moderation.py --auto   # a scripted moderator keeps borderline posts
"""

from __future__ import annotations

import argparse
import operator
from typing import Annotated, Any, TypedDict

from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from loopgate_lc import ApprovalPolicy, ConsoleNotifier, Loopgate, RiskLevel, guard
from loopgate_lc.notifiers.console import has_terminal
from loopgate_lc.testing import ScriptedApprover

POSTS = {
    "p1": "BUY CHEAP WATCHES!!! limited offer, click here",
    "p2": "That concert was sick, the drummer killed it",
    "p3": "Anyone know a good recipe for sourdough?",
    "p4": "FREE crypto giveaway, send 1 BTC get 2 back, click here",
}
REMOVED: list[str] = []


def classify(text: str) -> tuple[str, float]:
    """A stand-in for a real classifier: a label and how sure it is."""
    lowered = text.lower()
    if "click here" in lowered:
        return "spam", 0.99
    if any(word in lowered for word in ("killed", "sick")):
        return "violence", 0.61  # probably slang: a person should look
    return "ok", 0.98


@tool
def remove_post(post_id: str, label: str) -> str:
    """Take a post down."""
    REMOVED.append(post_id)
    return f"{post_id} removed ({label})"


class State(TypedDict, total=False):
    post_ids: list[str]
    outcomes: Annotated[list[str], operator.add]


class PostTask(TypedDict):
    post_id: str


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--auto", action="store_true", help="a scripted moderator answers")
    args = parser.parse_args()
    if not args.auto and not has_terminal():
        print("no terminal to ask, so nothing was run: start it in a terminal to answer "
              "at the prompt, or with --auto to let a scripted person answer")
        return

    moderator: Any = (
        ScriptedApprover({"type": "reject", "message": "slang, not a threat: keep it"},
                         actor="moderator:sam")
        if args.auto else ConsoleNotifier()
    )
    policies = [ApprovalPolicy("confident removals", "remove_post", min_confidence=0.95,
                               max_risk_level=RiskLevel.DATA_MODIFICATION)]

    with Loopgate(store="memory://", notifiers=[moderator], policies=policies,
                  default_timeout=120) as gate:
        gated_remove = guard(
            remove_post, policies=gate.policies, risk=RiskLevel.DATA_MODIFICATION,
            # the classifier's score for this post is the call's confidence
            confidence=lambda call: classify(POSTS[call["post_id"]])[1],
            metadata={"queue": "community"},
        )

        def fan_out(state: State) -> list[Send]:
            return [Send("moderate", {"post_id": pid}) for pid in state["post_ids"]]

        def moderate(task: PostTask) -> State:
            # Pure work only before the guarded call: a node re-runs from its top on resume.
            post_id = task["post_id"]
            label, score = classify(POSTS[post_id])
            if label == "ok":
                return {"outcomes": [f"{post_id} kept ({label}, {score:.2f})"]}
            result = gated_remove.invoke({"post_id": post_id, "label": label})
            return {"outcomes": [f"{post_id}: {result}"]}

        builder = StateGraph(State)
        builder.add_node("moderate", moderate)
        builder.add_conditional_edges(START, fan_out, ["moderate"])
        builder.add_edge("moderate", END)
        graph = builder.compile(checkpointer=InMemorySaver())

        final = gate.run(graph, {"post_ids": list(POSTS)})
        for line in sorted(final["outcomes"]):
            print(line)
        print("\nremoved:", ", ".join(sorted(REMOVED)))
        requests = [e for e in gate.audit() if e.event == "requested"]
        print(f"asked a person {len(requests)} time(s): "
              + "; ".join(str(e.details["reason"]) for e in requests))


if __name__ == "__main__":
    main()
