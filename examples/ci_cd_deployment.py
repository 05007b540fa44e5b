"""CI/CD: an agent checks the build, deploys to staging on its own, and asks a person
before it deploys to production.

This one gates the agent with ``ApprovalMiddleware`` (every tool call of a
``create_agent`` agent goes through the policies); ``loopgate-lc demo`` shows the same
scenario with ``guard()`` on each tool.

    python examples/ci_cd_deployment.py                  # answer at this terminal
    python examples/ci_cd_deployment.py --auto approve   # nobody needed (CI)
    python examples/ci_cd_deployment.py --model openai:gpt-4o-mini   # a real model
"""

from __future__ import annotations

import argparse
from typing import Any, Literal

from langchain.agents import create_agent
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from loopgate_lc import (
    ApprovalMiddleware,
    ApprovalPolicy,
    ConsoleNotifier,
    Loopgate,
    RiskLevel,
    ToolSettings,
)
from loopgate_lc.notifiers.console import has_terminal
from loopgate_lc.testing import ScriptedApprover, ScriptedChatModel, ai, call


@tool
def check_build_status(branch: str) -> str:
    """Report the latest CI build of a branch."""
    return f"build #1287 of {branch} passed"


@tool
def deploy(environment: Literal["staging", "production"], version: str) -> str:
    """Deploy a version to an environment."""
    print(f"    *** deploying {version} to {environment} ***")
    return f"{version} is live on {environment}"


def deploy_risk(args: dict[str, Any]) -> RiskLevel:
    # Staging is overwritten by the next deploy; production is not (and unknown = production).
    if args.get("environment") == "staging":
        return RiskLevel.DATA_MODIFICATION
    return RiskLevel.IRREVERSIBLE


# The first matching policy decides; a tool no policy matches always goes to a person.
POLICIES = [
    ApprovalPolicy("deploys", "deploy", max_risk_level=RiskLevel.DATA_MODIFICATION),
    ApprovalPolicy("read-only", "check_*", max_risk_level=RiskLevel.READ_ONLY),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--auto", choices=["approve", "reject"],
                        help="answer automatically instead of at the terminal")
    parser.add_argument("--model", help="a real chat model, e.g. openai:gpt-4o-mini")
    args = parser.parse_args()
    if not args.auto and not has_terminal():
        print("no terminal to ask, so nothing was run: start it in a terminal to answer "
              "at the prompt, or with --auto to let a scripted person answer")
        return

    if args.model:
        from langchain.chat_models import init_chat_model

        model: Any = init_chat_model(args.model)
    else:  # an offline model that plays its part turn by turn
        model = ScriptedChatModel(script=[
            ai("", call("check_build_status", branch="main")),
            ai("", call("deploy", "c1", environment="staging", version="1.4.2")),
            ai("", call("deploy", "c2", environment="production", version="1.4.2")),
            lambda messages: "Release 1.4.2 is done." if messages[-1].status == "success"
            else "Production was not approved; 1.4.2 is on staging only.",
        ])

    # Who answers: a scripted approver for CI, or the person at this terminal.
    if args.auto:
        notifier: Any = ScriptedApprover({"type": args.auto, "message": "--auto reject"}
                                         if args.auto == "reject" else {"type": "approve"})
    else:
        notifier = ConsoleNotifier()

    with Loopgate(store="memory://", notifiers=[notifier], policies=POLICIES,
                  default_timeout=120) as gate:  # nobody answers in 2 minutes: rejected
        middleware = ApprovalMiddleware(gate, tools={
            "check_build_status": ToolSettings(risk=RiskLevel.READ_ONLY),
            "deploy": ToolSettings(risk=deploy_risk),
        })
        agent = create_agent(model, tools=[check_build_status, deploy],
                             middleware=[middleware], checkpointer=InMemorySaver(),
                             system_prompt="Check the build of main, deploy 1.4.2 to "
                                           "staging, then to production.")
        result = gate.run(agent, {"messages": [("user", "Ship release 1.4.2")]})
        print("agent:", result["messages"][-1].content)

        print("\naudit trail:")
        for event in gate.audit():
            what = event.details.get("tool") or (event.request_id or "")[:8]
            print(f"  {event.event:<18} {what:<20} {event.actor or '-':<22} "
                  f"{event.channel or '-'}")


if __name__ == "__main__":
    main()
