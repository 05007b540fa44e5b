"""Trading: small orders go through on their own; big ones wait for the risk desk, who may
approve, reject, or cut the size (an ``edit``).

The risk of an order is computed from its arguments: notional = quantity x price. Up to
the limit it is a data modification the policy allows; above it, irreversible.

    python examples/trading.py          # you are the risk desk, at this terminal
    python examples/trading.py --auto   # a scripted desk cuts big orders to the limit
"""

from __future__ import annotations

import argparse
from typing import Any, Literal

from langchain.agents import create_agent
from langchain_core.messages import ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from loopgate_lc import ApprovalPolicy, ConsoleNotifier, Loopgate, RiskLevel, guard
from loopgate_lc.notifiers.console import has_terminal
from loopgate_lc.testing import ScriptedApprover, ScriptedChatModel, ai, call

PRICES = {"AAPL": 190.0, "NVDA": 120.0, "MSFT": 410.0}
LIMIT = 10_000.0  # orders above this notional need a person
FILLED: list[str] = []


@tool
def get_quote(symbol: str) -> str:
    """The last traded price of a symbol."""
    return f"{symbol} last {PRICES[symbol]:.2f} USD"


@tool
def place_order(symbol: str, side: Literal["buy", "sell"], quantity: int) -> str:
    """Send a market order."""
    FILLED.append(f"{side} {quantity} {symbol}")
    return f"filled: {side} {quantity} {symbol} at {PRICES[symbol]:.2f}"


def notional(args: dict[str, Any]) -> float:
    return float(args.get("quantity", 0)) * PRICES.get(args.get("symbol", ""), float("inf"))


def order_risk(args: dict[str, Any]) -> RiskLevel:
    return RiskLevel.DATA_MODIFICATION if notional(args) <= LIMIT else RiskLevel.IRREVERSIBLE


def describe(name: str, args: dict[str, Any]) -> str:
    return (f"{args['side']} {args['quantity']} {args['symbol']} = ${notional(args):,.0f} "
            f"(limit ${LIMIT:,.0f})")


POLICIES = [
    ApprovalPolicy("quotes", "get_quote", max_risk_level=RiskLevel.READ_ONLY),
    ApprovalPolicy("small orders", "place_order", max_risk_level=RiskLevel.DATA_MODIFICATION),
]


def risk_desk(record: Any) -> dict[str, Any]:
    """The scripted desk: cut an order to the largest size within the limit."""
    args = dict(record.payload["args"])
    args["quantity"] = int(LIMIT // PRICES[args["symbol"]])
    return {"type": "edit", "edited_action": {"name": "place_order", "args": args}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--auto", action="store_true", help="a scripted risk desk answers")
    args = parser.parse_args()
    if not args.auto and not has_terminal():
        print("no terminal to ask, so nothing was run: start it in a terminal to answer "
              "at the prompt, or with --auto to let a scripted person answer")
        return

    model = ScriptedChatModel(script=[
        ai("", call("get_quote", "q1", symbol="AAPL"), call("get_quote", "q2", symbol="NVDA")),
        # two orders at once: the small one fills while the big one waits for the desk
        ai("", call("place_order", "o1", symbol="AAPL", side="buy", quantity=20),
           call("place_order", "o2", symbol="NVDA", side="buy", quantity=500)),
        "Orders handled.",
    ])
    desk: Any = ScriptedApprover(risk_desk, actor="risk-desk") if args.auto else ConsoleNotifier()

    with Loopgate(store="memory://", notifiers=[desk], policies=POLICIES,
                  default_timeout=120) as gate:
        tools = [
            guard(get_quote, policies=gate.policies, risk=RiskLevel.READ_ONLY),
            guard(place_order, policies=gate.policies, risk=order_risk, description=describe,
                  allowed_decisions=["approve", "edit", "reject"]),
        ]
        agent = create_agent(model, tools=tools, checkpointer=InMemorySaver())
        result = gate.run(agent, {"messages": [("user", "Buy 20 AAPL and 500 NVDA")]})

        for message in result["messages"]:
            if isinstance(message, ToolMessage) and message.name == "place_order":
                print(f"{message.tool_call_id}: {message.content}\n")
        print("filled:", "; ".join(FILLED) or "nothing")
        print("\nwho decided:")
        for event in gate.audit():
            if event.event == "auto_approved":
                print(f"  {event.details['tool']:<12} auto-approved by policy "
                      f"{event.details['policy']!r}")
            elif event.event.startswith("decided:"):
                print(f"  place_order  {event.event[8:]} by {event.actor}: "
                      f"{event.details['decision']}")


if __name__ == "__main__":
    main()
