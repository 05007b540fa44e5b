"""The bridge against a real ``langgraph dev`` on 127.0.0.1: a guarded tool inside
``create_agent`` pauses on the server; people decide through the gateway; the server's
run resumes exactly once.

Each test makes its own assistant and watches only it, so tests sharing the server never
see each other's threads. Tool bodies append to a file; counting its lines is how
"ran exactly once" is read.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from langgraph_sdk import get_client

from loopgate_lc import InvalidDecision, Loopgate, Status
from loopgate_lc.background import BackgroundServer
from loopgate_lc.fake_telegram import FakeBotAPI
from loopgate_lc.langgraph_server import (
    RUN_METADATA_KEY,
    Deployment,
    LangGraphBridge,
    parse_deployments,
)
from loopgate_lc.notifiers.telegram import TelegramNotifier
from loopgate_lc.server import create_app
from loopgate_lc.stores.base import RequestRecord, Store
from loopgate_lc.testing.langgraph_dev import LangGraphDev, free_port, wait_ready
from tests.support.langgraph_dev import Relay, served

T = TypeVar("T")
ANN = {"id": 42, "username": "ann"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LangGraphDev]:
    with served(tmp_path_factory.mktemp("langgraph")) as srv:
        yield srv


@pytest.fixture
async def assistant(server: LangGraphDev) -> str:
    """A fresh assistant of the served agent: the threads of one test."""
    client = get_client(url=server.url, api_key=None)
    created = await client.assistants.create(graph_id="agent")
    return str(created["assistant_id"])


async def until(check: Callable[[], Awaitable[T | None]], timeout: float = 30.0,
                what: str = "condition") -> T:
    """Wait for ``check`` to return something truthy, re-checking every 50 ms."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"{what} not met within {timeout:.0f}s")
        await asyncio.sleep(0.05)


def tool_runs(server: LangGraphDev, marker: str) -> list[str]:
    log = server.folder / "tools.log"
    if not log.exists():
        return []
    return [line for line in log.read_text().splitlines() if marker in line]


@asynccontextmanager
async def bridged(server: LangGraphDev, assistant: str, *, url: str | None = None,
                  store: str | Store = "memory://", notifiers: list[Any] | None = None,
                  include_foreign: bool = False, public_url: str | None = None,
                  poll_interval: float = 0.2, **options: Any,
                  ) -> AsyncIterator[tuple[Loopgate, LangGraphBridge]]:
    gateway = Loopgate(store, notifiers=notifiers or [], poll_interval=0.1,
                       retry_backoff=0.05, **options)
    bridge = LangGraphBridge(gateway, [Deployment(
        url=url or server.url, name="prod", graphs=(assistant,), poll_interval=poll_interval,
        include_foreign=include_foreign, lease=1.0)], public_url=public_url)
    async with gateway:
        yield gateway, bridge


async def start(server: LangGraphDev, assistant: str, order: str,
                webhook: str | None = None) -> str:
    client = get_client(url=server.url, api_key=None)
    thread = await client.threads.create()
    await client.runs.create(thread["thread_id"], assistant, webhook=webhook,
                             input={"messages": [{"role": "user", "content": order}]})
    return str(thread["thread_id"])


async def filed(gateway: Loopgate, thread_id: str, count: int = 1,
                timeout: float = 30.0) -> list[RequestRecord]:
    async def check() -> list[RequestRecord] | None:
        found = await gateway.apending(thread_id=thread_id)
        return found if len(found) >= count else None

    return await until(check, timeout, f"{count} request(s) filed for {thread_id}")


async def finished(server: LangGraphDev, thread_id: str) -> dict[str, Any]:
    client = get_client(url=server.url, api_key=None)

    async def check() -> dict[str, Any] | None:
        thread = await client.threads.get(thread_id)
        return dict(thread) if thread["status"] == "idle" else None

    return await until(check, what=f"thread {thread_id} finished")


def last_tool_message(thread: dict[str, Any]) -> str:
    tools = [m for m in thread["values"]["messages"] if m["type"] == "tool"]
    return str(tools[-1]["content"])


async def events(gateway: Loopgate, request_id: str) -> list[str]:
    return [e.event for e in await gateway.aaudit(request_id=request_id)]


# --- approve, edit, reject, respond ----------------------------------------------------------


async def test_approve_resumes_the_servers_run_once(server: LangGraphDev,
                                                    assistant: str) -> None:
    env = f"prod-{uuid.uuid4().hex[:8]}"
    async with bridged(server, assistant) as (gateway, _):
        thread_id = await start(server, assistant, f"deploy:{env}")
        [record] = await filed(gateway, thread_id)
        assert record.graph == "prod"
        assert record.payload["name"] == "deploy"
        assert record.payload["args"] == {"environment": env}
        assert "response_schema" in record.payload  # published by the server, kept
        assert tool_runs(server, env) == []  # nothing ran before a person decided

        await gateway.arespond(record.id, {"type": "approve"}, actor="ann")
        thread = await finished(server, thread_id)
        assert last_tool_message(thread) == f"deployed to {env} x1"
        assert tool_runs(server, env) == [f"deploy {env} 1"]

        async def resumed() -> list[str] | None:
            seen = await events(gateway, record.id)
            return seen if "resumed" in seen else None

        assert (await until(resumed))[:3] == ["requested", "decided:approved", "resumed"]
        done = await gateway.aget(record.id)
        assert done.resume_done_at is not None


async def test_an_edit_is_checked_against_the_published_schema_before_any_resume(
        server: LangGraphDev, assistant: str) -> None:
    env = f"edit-{uuid.uuid4().hex[:8]}"
    client = get_client(url=server.url, api_key=None)
    async with bridged(server, assistant) as (gateway, _):
        thread_id = await start(server, assistant, f"deploy:{env}")
        [record] = await filed(gateway, thread_id)
        bad = {"type": "edit", "edited_action": {
            "name": "deploy", "args": {"environment": env, "replicas": "many"}}}
        with pytest.raises(InvalidDecision, match="replicas"):
            await gateway.arespond(record.id, bad, actor="ann")
        assert (await gateway.aget(record.id)).pending
        assert len(await client.runs.list(thread_id)) == 1  # no resume was sent
        assert (await client.threads.get(thread_id))["status"] == "interrupted"

        good = {"type": "edit", "edited_action": {
            "name": "deploy", "args": {"environment": env, "replicas": 3}}}
        await gateway.arespond(record.id, good, actor="ann")
        thread = await finished(server, thread_id)
        assert last_tool_message(thread).endswith(f"deployed to {env} x3")
        assert tool_runs(server, env) == [f"deploy {env} 3"]


async def test_reject_and_respond_do_not_run_the_tool(server: LangGraphDev,
                                                      assistant: str) -> None:
    rejected, answered = (f"{k}-{uuid.uuid4().hex[:8]}" for k in ("rej", "resp"))
    async with bridged(server, assistant) as (gateway, _):
        first = await start(server, assistant, f"deploy:{rejected}")
        second = await start(server, assistant, f"deploy:{answered}")
        [one] = await filed(gateway, first)
        [two] = await filed(gateway, second)
        await gateway.arespond(one.id, {"type": "reject", "message": "not on a Friday"})
        await gateway.arespond(two.id, {"type": "respond", "message": "use the canary"})
        assert "not on a Friday" in last_tool_message(await finished(server, first))
        assert "use the canary" in last_tool_message(await finished(server, second))
    assert tool_runs(server, rejected) == [] and tool_runs(server, answered) == []


async def test_a_timeout_resumes_with_the_configured_outcome(server: LangGraphDev,
                                                             assistant: str) -> None:
    env = f"late-{uuid.uuid4().hex[:8]}"
    async with bridged(server, assistant, default_timeout=0.5) as (gateway, _):
        thread_id = await start(server, assistant, f"deploy:{env}")
        [record] = await filed(gateway, thread_id)
        thread = await finished(server, thread_id)
        decided = await gateway.aget(record.id)
        assert decided.status is Status.TIMEOUT
        assert decided.decision is not None and decided.decision["outcome"] == "reject"
        assert "timed_out" in await events(gateway, record.id)
        assert "timed out" in last_tool_message(thread)
    assert tool_runs(server, env) == []


async def test_two_parallel_calls_are_decided_separately(server: LangGraphDev,
                                                         assistant: str) -> None:
    a, b = (f"{k}-{uuid.uuid4().hex[:8]}" for k in ("pa", "pb"))
    async with bridged(server, assistant) as (gateway, _):
        thread_id = await start(server, assistant, f"both:{a},{b}")
        records = await filed(gateway, thread_id, 2)
        by_env = {r.payload["args"]["environment"]: r for r in records}
        await gateway.arespond(by_env[a].id, {"type": "approve"})

        async def a_ran() -> list[str] | None:
            return tool_runs(server, a) or None

        assert await until(a_ran) == [f"deploy {a} 1"]
        assert (await gateway.aget(by_env[b].id)).pending  # still waiting for its person
        await gateway.arespond(by_env[b].id, {"type": "reject", "message": "only one"})
        thread = await finished(server, thread_id)
        contents = [m["content"] for m in thread["values"]["messages"] if m["type"] == "tool"]
        assert f"deployed to {a} x1" in contents
        assert any("only one" in str(c) for c in contents)
    assert tool_runs(server, a) == [f"deploy {a} 1"] and tool_runs(server, b) == []


# --- a busy thread ---------------------------------------------------------------------------


def held(server: LangGraphDev, env: str) -> Callable[[], Awaitable[bool]]:
    """Whether the ``hold-`` deploy to ``env`` is running (its run keeps the thread busy
    until :func:`release` is called)."""
    async def check() -> bool:
        return (server.folder / f"started-{env}").exists()

    return check


def release(server: LangGraphDev, env: str) -> None:
    (server.folder / f"release-{env}").touch()


def resumes_sent(runs: list[Any]) -> list[list[str]]:
    return sorted(r["metadata"][RUN_METADATA_KEY] for r in runs
                  if (r.get("metadata") or {}).get(RUN_METADATA_KEY))


async def test_a_decision_made_while_the_thread_runs_resumes_it_once_when_free(
        server: LangGraphDev, assistant: str) -> None:
    a, b = f"hold-{uuid.uuid4().hex[:8]}", f"next-{uuid.uuid4().hex[:8]}"
    client = get_client(url=server.url, api_key=None)
    async with bridged(server, assistant) as (gateway, _):
        thread_id = await start(server, assistant, f"both:{a},{b}")
        by_env = {r.payload["args"]["environment"]: r
                  for r in await filed(gateway, thread_id, 2)}
        await gateway.arespond(by_env[a].id, {"type": "approve"})
        await until(held(server, a))  # the resumed run is in flight, holding the thread
        await gateway.arespond(by_env[b].id, {"type": "approve"})
        assert (await client.threads.get(thread_id))["status"] == "busy"
        assert (await gateway.aget(by_env[b].id)).resumed_at is None  # not claimed yet
        release(server, a)
        thread = await finished(server, thread_id)
        contents = [m["content"] for m in thread["values"]["messages"] if m["type"] == "tool"]
        assert f"deployed to {a} x1" in contents and f"deployed to {b} x1" in contents
        assert (await events(gateway, by_env[b].id)).count("resumed") == 1
        assert resumes_sent(await client.runs.list(thread_id)) == sorted(
            [[by_env[a].id], [by_env[b].id]])
    assert tool_runs(server, a) == [f"deploy {a} 1"] and tool_runs(server, b) == [
        f"deploy {b} 1"]


async def test_a_resume_the_server_refuses_as_busy_sends_nothing_and_says_so(
        server: LangGraphDev, assistant: str) -> None:
    """The server answers 409 while the thread runs: the driver sends again with a
    bounded backoff, then raises ThreadBusy (the gateway gives its claim back); nothing
    reached the server, and the same resume goes in once the thread is free."""
    from loopgate_lc import ThreadBusy
    from loopgate_lc.langgraph_server import RemoteDriver

    a, b = f"hold-{uuid.uuid4().hex[:8]}", f"then-{uuid.uuid4().hex[:8]}"
    client = get_client(url=server.url, api_key=None)
    driver = RemoteDriver(Deployment(url=server.url, name="prod", graphs=(assistant,),
                                     lease=0.6))
    try:
        thread_id = await start(server, assistant, f"both:{a},{b}")

        async def paused() -> dict[str, str] | None:
            thread = await client.threads.get(thread_id)
            if thread["status"] != "interrupted":
                return None
            return {i["value"]["args"]["environment"]: i["id"]
                    for group in thread["interrupts"].values() for i in group}

        ids = await until(paused)
        await client.runs.create(thread_id, assistant,
                                 command={"resume": {ids[a]: {"type": "approve"}}})
        await until(held(server, a))
        sent_before = len(await client.runs.list(thread_id))
        with pytest.raises(ThreadBusy, match="running another run"):
            await driver.resume(thread_id, {ids[b]: {"type": "approve"}}, [])
        assert driver.busy_retries >= 1  # sent again before giving up
        assert len(await client.runs.list(thread_id)) == sent_before  # nothing was made

        release(server, a)

        async def only_b_left() -> bool:
            return set(await paused() or {}) == {b}

        await until(only_b_left)
        await driver.resume(thread_id, {ids[b]: {"type": "approve"}}, [])
        await finished(server, thread_id)
    finally:
        await driver.aclose()
    assert tool_runs(server, b) == [f"deploy {b} 1"]


# --- several bridge processes on one PostgreSQL store -----------------------------------------


async def test_two_bridges_on_one_postgresql_store_resume_each_decision_once(
        server: LangGraphDev, assistant: str, postgres_dsn: str, pg_schema: str) -> None:
    """Two gateways, each with its own connections to one PostgreSQL database, watch the
    same deployment: both file every pause (once, by interrupt), decisions are made on
    either, at the same moment, and the store's claims let exactly one resume each."""
    from loopgate_lc.stores.postgres import PostgresStore

    solo = [f"pg{i}-{uuid.uuid4().hex[:8]}" for i in range(3)]
    x, y = (f"pg{k}-{uuid.uuid4().hex[:8]}" for k in ("x", "y"))
    client = get_client(url=server.url, api_key=None)
    async with bridged(server, assistant, store=PostgresStore(postgres_dsn, schema=pg_schema)
                       ) as (first, _), \
            bridged(server, assistant, store=PostgresStore(postgres_dsn, schema=pg_schema)
                    ) as (second, _):
        threads = [await start(server, assistant, f"deploy:{env}") for env in solo]
        pair = await start(server, assistant, f"both:{x},{y}")
        records = {}
        for thread_id in threads:
            [one] = await filed(first, thread_id)
            [same] = await filed(second, thread_id)
            assert same.id == one.id
            records[one.payload["args"]["environment"]] = one
        for record in await filed(second, pair, 2):
            records[record.payload["args"]["environment"]] = record
        gateways = [first, second, first, second, first]
        await asyncio.gather(*(
            gateway.arespond(records[env].id, {"type": "approve"}, actor="ann")
            for gateway, env in zip(gateways, [*solo, x, y], strict=True)))
        for thread_id in [*threads, pair]:
            await finished(server, thread_id)
        for thread_id in [*threads, pair]:
            sent = resumes_sent(await client.runs.list(thread_id))
            mine = sorted(r.id for r in records.values() if r.thread_id == thread_id)
            assert sorted(i for ids in sent for i in ids) == mine  # each sent once
        for env, record in records.items():
            seen = await events(first, record.id)
            assert seen.count("resumed") == seen.count("resume_deferred") + 1, (env, seen)
    for env in [*solo, x, y]:
        assert tool_runs(server, env) == [f"deploy {env} 1"]


# --- foreign interrupts, stale decisions, webhooks -------------------------------------------


async def test_foreign_interrupts_only_by_option(server: LangGraphDev, assistant: str) -> None:
    question = f"colour-{uuid.uuid4().hex[:8]}"
    async with bridged(server, assistant) as (gateway, bridge):
        thread_id = await start(server, assistant, f"ask:{question}")
        client = get_client(url=server.url, api_key=None)

        async def paused() -> bool:
            return (await client.threads.get(thread_id))["status"] == "interrupted"

        await until(paused)
        driver = bridge.drivers["prod"]
        polls = driver.polls

        async def searched_twice() -> bool:
            return driver.polls >= polls + 2

        await until(searched_twice)
        assert await gateway.apending(thread_id=thread_id) == []  # not ours: left alone
    async with bridged(server, assistant, include_foreign=True) as (gateway, _):
        [record] = await filed(gateway, thread_id)
        assert record.payload["message"] == question
        await gateway.arespond(record.id, {"type": "respond", "message": "blue"})
        assert last_tool_message(await finished(server, thread_id)) == "blue"
    assert tool_runs(server, question) == [f"asked {question} -> blue"]


async def test_a_decision_for_an_interrupt_the_server_no_longer_has_is_stale(
        server: LangGraphDev, assistant: str) -> None:
    env = f"stale-{uuid.uuid4().hex[:8]}"
    client = get_client(url=server.url, api_key=None)
    async with bridged(server, assistant) as (gateway, _):
        thread_id = await start(server, assistant, f"deploy:{env}")
        [record] = await filed(gateway, thread_id)
        # someone answers on the server directly (Studio, their own code)
        await client.runs.wait(thread_id, assistant, command={
            "resume": {record.interrupt_id: {"type": "reject", "message": "elsewhere"}}})
        await gateway.arespond(record.id, {"type": "approve"}, actor="ann")

        async def stale() -> list[str] | None:
            seen = await events(gateway, record.id)
            return seen if "stale" in seen else None

        assert "resumed" not in await until(stale)
        assert len(await client.runs.list(thread_id)) == 2  # nothing sent by the bridge
    assert tool_runs(server, env) == []


async def test_run_webhooks_file_pauses_without_waiting_for_a_search(
        server: LangGraphDev, assistant: str) -> None:
    env = f"hook-{uuid.uuid4().hex[:8]}"
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    # searches every 10 minutes: only the webhook can file the pause in time
    async with bridged(server, assistant, public_url=public, poll_interval=600) as (
            gateway, bridge):
        app = create_app(gateway, bridge=bridge, mcp=False)
        async with BackgroundServer(app, port=port):
            hook = bridge.webhook_url("prod")
            assert hook is not None and hook.startswith(f"{public}/langgraph/webhook/prod/")
            await until(lambda: _true(bridge.drivers["prod"].polls >= 1))
            thread_id = await start(server, assistant, f"deploy:{env}", webhook=hook)
            [record] = await filed(gateway, thread_id, timeout=60)
            await gateway.arespond(record.id, {"type": "approve"})
            await finished(server, thread_id)

            async with httpx.AsyncClient(base_url=public) as http:
                wrong = await http.post(hook.replace(public, "")[:-4] + "xxxx",
                                        json={"thread_id": thread_id})
                assert wrong.status_code == 404
                broken = await http.post(hook.replace(public, ""), content=b"{not json",
                                         headers={"Content-Type": "application/json"})
                assert broken.status_code == 400
                empty = await http.post(hook.replace(public, ""), json={"run_id": "r"})
                assert empty.status_code == 422
                sent = await http.post(hook.replace(public, ""), json={"thread_id": thread_id})
                assert sent.status_code == 202
    assert tool_runs(server, env) == [f"deploy {env} 1"]


async def _true(value: bool) -> bool:
    return value


# --- Telegram --------------------------------------------------------------------------------


async def test_a_telegram_tap_resumes_the_servers_run(server: LangGraphDev,
                                                      assistant: str) -> None:
    env = f"tap-{uuid.uuid4().hex[:8]}"
    with FakeBotAPI() as fake:
        telegram = TelegramNotifier(fake.token, base_url=fake.base_url, default_chat_id=42,
                                    retry_backoff=0.01, poll_timeout=5)
        async with bridged(server, assistant, notifiers=[telegram]) as (gateway, _):
            thread_id = await start(server, assistant, f"deploy:{env}")
            [record] = await filed(gateway, thread_id)
            messages = await fake.await_for(
                lambda: [m for m in fake.messages(42) if env in m["plain_text"]], timeout=30)
            message = messages[-1]
            approve = next(b["callback_data"] for row in message["reply_markup"][
                "inline_keyboard"] for b in row if "Approve" in b["text"])
            fake.tap(42, message["message_id"], approve, ANN)
            thread = await finished(server, thread_id)
            assert last_tool_message(thread) == f"deployed to {env} x1"
            decided = await gateway.aget(record.id)
            assert decided.decided_by == "telegram:42 (@ann)"
    assert tool_runs(server, env) == [f"deploy {env} 1"]


# --- crashes and outages ---------------------------------------------------------------------


def _bridge_process(store: str, url: str, assistant: str, log: Path) -> subprocess.Popen[bytes]:
    port = free_port()
    env = {**os.environ, "LANGGRAPH_API_KEY": ""}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "loopgate_lc.cli", "serve", "--store", store, "--port",
             str(port), "--no-mcp", "--poll-interval", "0.1", "--langgraph",
             f"prod={url}", "--langgraph-graph", assistant, "--langgraph-poll", "0.2",
             "--log-level", "warning"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    process.port = port  # type: ignore[attr-defined]
    return process


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


async def test_a_bridge_killed_and_restarted_resumes_a_pending_decision_once(
        server: LangGraphDev, assistant: str, tmp_path: Path) -> None:
    env = f"crash-{uuid.uuid4().hex[:8]}"
    store = f"sqlite:///{tmp_path / 'loopgate.db'}"
    client = get_client(url=server.url, api_key=None)
    first = _bridge_process(store, server.url, assistant, tmp_path / "bridge.log")
    try:
        thread_id = await start(server, assistant, f"deploy:{env}")
        async with Loopgate(store, poll_interval=0.1) as gateway:  # no driver: reads only
            [record] = await filed(gateway, thread_id, timeout=60)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        # a person answers from a terminal while no bridge runs
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loopgate_lc.cli", "approve", record.id, "--store", store,
            "--as", "ann", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(cli.communicate(), 60)
        assert cli.returncode == 0, err.decode()
        assert "approved" in out.decode()
        assert (await client.threads.get(thread_id))["status"] == "interrupted"
        assert tool_runs(server, env) == []

        # two bridges come back at once; the store's claim lets one resume
        again = [_bridge_process(store, server.url, assistant, tmp_path / f"bridge{i}.log")
                 for i in range(2)]
        try:
            thread = await finished(server, thread_id)
            assert last_tool_message(thread) == f"deployed to {env} x1"
            async with Loopgate(store, poll_interval=0.1) as gateway:
                async def resumed() -> list[str] | None:
                    seen = await events(gateway, record.id)
                    return seen if "resumed" in seen else None

                assert (await until(resumed)).count("resumed") == 1
                assert (await gateway.aget(record.id)).resume_done_at is not None
        finally:
            for process in again:
                _kill(process)
    finally:
        _kill(first)
    runs = await client.runs.list(thread_id)
    sent = [r for r in runs if (r.get("metadata") or {}).get(RUN_METADATA_KEY)]
    assert [r["metadata"][RUN_METADATA_KEY] for r in sent] == [[record.id]]
    assert tool_runs(server, env) == [f"deploy {env} 1"]


async def test_an_unreachable_server_loses_no_decision(server: LangGraphDev,
                                                       assistant: str) -> None:
    env = f"away-{uuid.uuid4().hex[:8]}"
    relay = Relay(server.port)
    try:
        async with bridged(server, assistant, url=relay.url) as (gateway, _):
            thread_id = await start(server, assistant, f"deploy:{env}")
            [record] = await filed(gateway, thread_id)
            relay.cut()
            await gateway.arespond(record.id, {"type": "approve"}, actor="ann")

            async def failed() -> bool:
                audit = await gateway.aaudit(thread_id=thread_id)
                return sum(e.event == "resume_failed" for e in audit) >= 2

            await until(failed)  # tried, failed, tried again
            client = get_client(url=server.url, api_key=None)
            assert (await client.threads.get(thread_id))["status"] == "interrupted"
            assert (await gateway.aget(record.id)).status is Status.APPROVED

            relay.restore()
            thread = await finished(server, thread_id)
            assert last_tool_message(thread) == f"deployed to {env} x1"
    finally:
        relay.close()
    assert tool_runs(server, env) == [f"deploy {env} 1"]


# --- configuration ---------------------------------------------------------------------------


def test_deployments_from_flags_and_environment() -> None:
    prod, dev = parse_deployments(
        ["prod=https://prod.example.com/", "http://127.0.0.1:2024"], graphs=["agent"],
        env={"LOOPGATE_LANGGRAPH_API_KEY_PROD": "k1", "LANGGRAPH_API_KEY": "k0"})
    assert (prod.name, prod.url, prod.api_key, prod.graphs) == (
        "prod", "https://prod.example.com", "k1", ("agent",))
    assert (dev.name, dev.api_key) == ("langgraph2", "k0")
    with pytest.raises(Exception, match="unique"):
        parse_deployments(["a=http://x", "a=http://y"], env={})
    with pytest.raises(Exception, match="http"):
        parse_deployments(["ftp://x"], env={})
    with pytest.raises(Exception, match="poll_interval"):
        Deployment(url="http://x", poll_interval=0)


def test_serve_refuses_a_bad_deployment_before_serving() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "loopgate_lc.cli", "serve", "--store", "memory://",
         "--langgraph", "prod=nota-url"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "http(s)://host" in result.stderr


def test_wait_ready_is_bounded() -> None:
    with pytest.raises(TimeoutError):
        wait_ready(f"http://127.0.0.1:{free_port()}", timeout=0.5)


async def test_register_graph_takes_a_remote_graph(server: LangGraphDev,
                                                   assistant: str) -> None:
    from langgraph.pregel.remote import RemoteGraph

    from loopgate_lc import ConfigurationError

    env = f"remote-{uuid.uuid4().hex[:8]}"
    remote = RemoteGraph(assistant, url=server.url, api_key=None)
    async with Loopgate("memory://", poll_interval=0.1) as gateway:
        with pytest.raises(ConfigurationError, match="register_graph"):
            await gateway.arun(remote, {"messages": []})
        gateway.register_graph("remote", remote)
        thread_id = await start(server, assistant, f"deploy:{env}")
        [record] = await filed(gateway, thread_id)
        assert record.graph == "remote"
        await gateway.arespond(record.id, {"type": "approve"})
        await finished(server, thread_id)
    assert tool_runs(server, env) == [f"deploy {env} 1"]
