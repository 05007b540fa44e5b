"""Several teams, one gateway: requests are routed by session to each team's Telegram chat,
and only that session's approvers may decide them.

    deploy   -> the release group chat; approvers: Ana (1001) and Bo (1004)
    alerts   -> the on-call engineer's private chat (1002)
    finance  -> the controller's private chat (1003)

Offline (the default, or --auto) it runs against a local fake of the Telegram Bot API and
plays the people itself. With TELEGRAM_BOT_TOKEN, DEPLOY_CHAT_ID, ALERTS_CHAT_ID and
FINANCE_CHAT_ID set (and no --auto), the messages go to your real chats and it waits for
your taps.

    python examples/multi_session.py
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import ExitStack
from typing import Any

from langchain.agents import create_agent
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from loopgate_lc import Loopgate, TelegramNotifier, guard
from loopgate_lc.fake_telegram import FakeBotAPI
from loopgate_lc.testing import ScriptedChatModel, ai, call

ANA, BO, CARL, DANA, EVE = 1001, 1004, 1005, 1002, 1003  # Telegram user ids
OFFLINE_CHATS = {"deploy": -100123, "alerts": DANA, "finance": EVE}


@tool
def deploy(version: str) -> str:
    """Deploy a version to production."""
    return f"{version} deployed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--auto", action="store_true", help="offline, people played by the script")
    args = parser.parse_args()
    real = bool(os.environ.get("TELEGRAM_BOT_TOKEN")) and not args.auto

    with ExitStack() as stack:
        if real:
            chats = {s: int(os.environ[f"{s.upper()}_CHAT_ID"]) for s in OFFLINE_CHATS}
            telegram = TelegramNotifier()  # reads TELEGRAM_BOT_TOKEN
        else:
            api = stack.enter_context(FakeBotAPI())  # a Bot API on 127.0.0.1, no network
            chats = OFFLINE_CHATS
            telegram = TelegramNotifier(api.token, base_url=api.base_url, poll_timeout=1)
        gate = stack.enter_context(Loopgate(store="memory://", notifiers=[telegram],
                                            default_timeout=300))

        # 1. Each team registers a session: its chat, and who may decide.
        gate.register_session("deploy", client_id="release-bot", telegram_id=chats["deploy"],
                              approvers=[ANA, BO])
        gate.register_session("alerts", client_id="monitoring", telegram_id=chats["alerts"])
        gate.register_session("finance", client_id="ap-agent", telegram_id=chats["finance"])

        # 2. Requests name their session. A guarded tool in an agent running in the background:
        agent = create_agent(
            ScriptedChatModel(script=[ai("", call("deploy", version="1.4.2")), "Deployed."]),
            tools=[guard(deploy, session_id="deploy",
                         description=lambda _, args: f"Deploy {args['version']} to production?")],
            checkpointer=InMemorySaver())
        gate.register_graph("release-bot", agent)  # the gateway resumes it when answered
        thread_id = gate.start("release-bot", {"messages": [("user", "ship 1.4.2")]})
        # ...and plain requests, as the Loopgate HTTP API would file them:
        gate.submit("Disk on db-1 is 95% full. Page the on-call engineer?",
                    kind="confirmation", session_id="alerts")
        gate.submit("Pay invoice #881 from ACME ($12,400)?", kind="choice",
                    session_id="finance",
                    options=[{"label": "Pay now", "approved": True},
                             {"label": "Pay next week", "approved": False}])

        for _ in range(200):  # the agent files its request in the background
            if len(gate.pending()) == 3:
                break
            time.sleep(0.05)

        # 3. Routing: each session sees only its own requests, in its own chat.
        print("pending, by session:")
        requests: dict[str, Any] = {}
        for session in chats:
            (record,) = gate.pending(session_id=session)
            requests[session] = record
            text = record.payload["message"] or record.payload["description"].splitlines()[0]
            print(f"  {session:<8} -> chat {chats[session]:<8} {text}")

        if real:
            print("\nanswer in Telegram; waiting (up to 5 minutes each)...")
        else:
            play_the_people(api, chats, requests)

        # 4. Every answer comes back through the gateway, checked and audited.
        print("\noutcomes:")
        for session, record in requests.items():
            done = gate.wait(record.id, timeout=300)
            said = (done.decision or {}).get("message")
            print(f"  {session:<8} {done.status:<9} by {done.decided_by}"
                  + (f" ({said})" if said else ""))
        release: Any = {"configurable": {"thread_id": thread_id}}
        for _ in range(200):  # the release bot resumes in the background
            if not agent.get_state(release).next:
                break
            time.sleep(0.05)
        print(f"  release-bot says: {agent.get_state(release).values['messages'][-1].content}")
        refused = [e for e in gate.audit() if e.event == "unauthorized"]
        for event in refused:
            print(f"  refused: {event.actor} is not an approver of session {event.session_id!r}")


def play_the_people(api: FakeBotAPI, chats: dict[str, int], requests: dict[str, Any]) -> None:
    """What people would do in their chats: tap a button on the request's message."""

    def tap(session: str, button: str, user: int, name: str) -> str:
        chat = chats[session]
        (message,) = api.wait_for(lambda: api.messages(chat), timeout=10)
        keys = [b for row in message["reply_markup"]["inline_keyboard"] for b in row]
        data = next(b["callback_data"] for b in keys if button in b["text"])
        query = api.tap(chat, message["message_id"], data, {"id": user, "first_name": name,
                                                           "username": name.lower()})
        answer = api.wait_for(lambda: api.callback_answer(query), timeout=10)
        return str(answer.get("text") or "")

    # Carl is in the release group but is not an approver: his tap is refused.
    print(f"\nCarl taps Approve in the deploy group: {tap('deploy', 'Approve', CARL, 'Carl')!r}")
    tap("deploy", "Approve", ANA, "Ana")
    tap("alerts", "Approve", DANA, "Dana")
    tap("finance", "Pay next week", EVE, "Eve")


if __name__ == "__main__":
    main()
