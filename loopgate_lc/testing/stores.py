"""The one conformance suite every :class:`~loopgate_lc.stores.base.Store` passes.

The memory, SQLite and PostgreSQL stores run it, and so can yours: subclass
:class:`StoreConformance` in a test module and provide a ``make_store`` fixture, an async
factory returning a new, not yet set up store over the same backing data on every call
(the same file, the same database schema). The suite sets stores up itself. Backends
that keep nothing across instances set ``persistent = False``. It needs pytest and
pytest-asyncio (``asyncio_mode = "auto"``)::

    from loopgate_lc.testing.stores import MakeStore, StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def make_store(self, tmp_path) -> MakeStore:
            async def make() -> Store:
                return MyStore(tmp_path / "data")
            return make
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

import pytest

from loopgate_lc.errors import (
    AlreadyDecided,
    DuplicateVote,
    GrantNotFound,
    LoopgateError,
    RequestNotFound,
    SessionExists,
    SessionNotFound,
    StoreError,
)
from loopgate_lc.schema import RequestKind, Status, utcnow
from loopgate_lc.stores import (
    AuditEvent,
    Ballot,
    Delivered,
    OutboxItem,
    RequestRecord,
    RequestScope,
    SessionRecord,
    Store,
    Vote,
)
from loopgate_lc.stores.base import GrantQuery, GrantRecord, GrantTarget, Resolution

MakeStore = Callable[[], Awaitable[Store]]

#: A fixed point in time: every test states its clock explicitly instead of sleeping.
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def request(request_id: str, **fields: Any) -> RequestRecord:
    fields.setdefault("kind", RequestKind.TOOL_APPROVAL)
    fields.setdefault("payload", {"type": "tool_approval", "request_id": request_id})
    return RequestRecord(id=request_id, **fields)


APPROVE = {"type": "approve"}


def grant(grant_id: str, request_id: str, **fields: Any) -> GrantRecord:
    fields.setdefault("tool", "deploy")
    fields.setdefault("scope", "session")
    fields.setdefault("created_at", T0)
    return GrantRecord(id=grant_id, request_id=request_id, **fields)


def ballot(request_id: str, voter: str, vote: str = "approve", *, approvals_needed: int = 2,
           rejections_needed: int = 1, seconds: float = 1) -> Ballot:
    """A vote as a gateway casts it: its audit event, a ``voted`` delivery while the
    request stays pending, and the decision (with its own event and delivery) to commit
    when the vote reaches its threshold."""
    status = Status.APPROVED if vote == "approve" else Status.REJECTED
    return Ballot(
        request_id=request_id,
        vote=Vote(voter=voter, vote="approve" if vote == "approve" else "reject",
                  actor=f"actor:{voter}", channel="api", at=at(seconds)),
        approvals_needed=approvals_needed,
        rejections_needed=rejections_needed,
        audit=AuditEvent(at=at(seconds), event="voted", request_id=request_id,
                         actor=f"actor:{voter}"),
        outbox=[OutboxItem(request_id=request_id, notifier="chat", kind="voted",
                           due_at=at(seconds))],
        resolution=Resolution(
            request_id=request_id, status=status, decision={"type": vote},
            decided_by=f"actor:{voter}", channel="api", decided_at=at(seconds),
            audit=[AuditEvent(at=at(seconds), event=f"decided:{status.value}",
                              request_id=request_id)],
            outbox=[OutboxItem(request_id=request_id, notifier="chat", kind="resolved",
                               due_at=at(seconds))]),
    )


def assert_utc(value: datetime | None) -> None:
    assert value is not None
    assert value.tzinfo is not None
    assert value.utcoffset() == timedelta(0)


class StoreConformance:
    """Behaviour every store must show; see the module docstring for how to use it."""

    persistent: ClassVar[bool] = True

    @pytest.fixture
    async def store(self, make_store: MakeStore) -> AsyncIterator[Store]:
        store = await make_store()
        await store.setup()
        yield store
        await store.close()

    # lifecycle ---------------------------------------------------------------------------

    async def test_setup_twice_is_a_no_op(self, store: Store) -> None:
        await store.create_request(request("r1"))
        await store.setup()
        await store.setup()
        assert [r.id for r in await store.list_requests()] == ["r1"]

    async def test_context_manager_sets_up_and_closes(self, make_store: MakeStore) -> None:
        async with await make_store() as store:
            stored, created = await store.create_request(request("ctx"))
        assert created
        assert stored.id == "ctx"

    async def test_data_survives_close_and_reopen(self, make_store: MakeStore) -> None:
        if not self.persistent:
            pytest.skip("this backend keeps nothing once the store object is gone")
        first = await make_store()
        await first.setup()
        await first.create_session(SessionRecord(session_id="s1", telegram_id=42))
        await first.create_request(request("r1", thread_id="t1", interrupt_id="i1"))
        await first.resolve(
            "r1", status=Status.APPROVED, decision=APPROVE, decided_by="ann", channel="cli"
        )
        await first.append_audit(AuditEvent(event="approved", request_id="r1"))
        await first.enqueue_outbox(OutboxItem(request_id="r1", notifier="log", due_at=T0))
        await first.put_callback("k1", "r1", {"type": "approve"})
        await first.close()

        second = await make_store()
        await second.setup()  # must not wipe or re-migrate
        try:
            assert (await second.get_session("s1")).telegram_id == 42
            got = await second.get_request("r1")
            assert got.status is Status.APPROVED
            assert got.decided_by == "ann"
            assert (await second.find_request("t1", "i1")) == got
            assert [e.event for e in await second.list_audit()] == ["approved"]
            assert [i.notifier for i in await second.list_outbox()] == ["log"]
            assert await second.get_callback("k1") == ("r1", {"type": "approve"})
        finally:
            await second.close()

    # sessions ----------------------------------------------------------------------------

    async def test_create_and_get_session(self, store: Store) -> None:
        session = SessionRecord(
            session_id="s1",
            client_id="agent-7",
            telegram_id=-1001234567890,
            approvers=["alice", "123"],
            created_at=T0,
            metadata={"team": "ops", "tags": ["a", "b"]},
        )
        stored = await store.create_session(session)
        assert stored == session
        got = await store.get_session("s1")
        assert got == session
        assert_utc(got.created_at)

    async def test_duplicate_active_session_raises_and_changes_nothing(self, store: Store) -> None:
        await store.create_session(SessionRecord(session_id="s1", client_id="first"))
        with pytest.raises(SessionExists) as caught:
            await store.create_session(SessionRecord(session_id="s1", client_id="second"))
        assert caught.value.session_id == "s1"
        assert isinstance(caught.value, LoopgateError)
        assert (await store.get_session("s1")).client_id == "first"

    async def test_register_over_inactive_session_reactivates_with_new_fields(
        self, store: Store
    ) -> None:
        await store.create_session(SessionRecord(session_id="s1", client_id="old", telegram_id=1))
        deactivated = await store.deactivate_session("s1")
        assert deactivated.active is False
        assert (await store.get_session("s1")).active is False

        renewed = await store.create_session(
            SessionRecord(session_id="s1", client_id="new", telegram_id=2, approvers=["bob"])
        )
        assert renewed.active is True
        got = await store.get_session("s1")
        assert (got.client_id, got.telegram_id, got.approvers, got.active) == (
            "new",
            2,
            ["bob"],
            True,
        )
        assert len(await store.list_sessions()) == 1

    async def test_unknown_session_raises_session_not_found(self, store: Store) -> None:
        with pytest.raises(SessionNotFound) as caught:
            await store.get_session("nope")
        assert caught.value.session_id == "nope"
        with pytest.raises(SessionNotFound):
            await store.deactivate_session("nope")

    async def test_list_sessions_oldest_first_with_active_filter(self, store: Store) -> None:
        await store.create_session(SessionRecord(session_id="late", created_at=at(20)))
        await store.create_session(SessionRecord(session_id="early", created_at=at(0)))
        await store.create_session(SessionRecord(session_id="middle", created_at=at(10)))
        await store.deactivate_session("middle")
        assert [s.session_id for s in await store.list_sessions()] == ["early", "middle", "late"]
        assert [s.session_id for s in await store.list_sessions(active=True)] == ["early", "late"]
        assert [s.session_id for s in await store.list_sessions(active=False)] == ["middle"]

    # requests: filing and reading --------------------------------------------------------

    async def test_create_and_get_request_round_trips_every_field(self, store: Store) -> None:
        record = RequestRecord(
            id="r1",
            kind=RequestKind.CHOICE,
            session_id="s1",
            client_id="c1",
            thread_id="t1",
            interrupt_id="i1",
            graph="deploy",
            payload={"type": "choice", "options": [{"label": "Yes", "approved": True}], "n": 1.5},
            created_at=at(0),
            expires_at=at(60),
            escalation_level=0,
            message_refs={"telegram": {"chat_id": -100, "message_id": 7}},
        )
        stored, created = await store.create_request(record)
        assert created is True
        assert stored == record
        got = await store.get_request("r1")
        assert got == record
        assert got.pending
        for value in (got.created_at, got.expires_at):
            assert_utc(value)

    async def test_create_is_idempotent_on_id(self, store: Store) -> None:
        first, created = await store.create_request(request("r1", payload={"v": 1}))
        assert created
        again, created_again = await store.create_request(request("r1", payload={"v": 2}))
        assert created_again is False
        assert again == first
        assert again.payload == {"v": 1}
        assert len(await store.list_requests()) == 1

    async def test_create_is_idempotent_on_thread_and_interrupt(self, store: Store) -> None:
        first, _ = await store.create_request(request("r1", thread_id="t", interrupt_id="i"))
        again, created = await store.create_request(request("r2", thread_id="t", interrupt_id="i"))
        assert created is False
        assert again.id == "r1"
        assert again == first
        with pytest.raises(RequestNotFound):
            await store.get_request("r2")

    async def test_interrupt_uniqueness_needs_both_ids(self, store: Store) -> None:
        await store.create_request(request("a", thread_id="t1", interrupt_id="i"))
        _, other_thread = await store.create_request(request("b", thread_id="t2", interrupt_id="i"))
        _, no_interrupt_1 = await store.create_request(request("c", thread_id="t1"))
        _, no_interrupt_2 = await store.create_request(request("d", thread_id="t1"))
        _, no_thread = await store.create_request(request("e", interrupt_id="i"))
        assert (other_thread, no_interrupt_1, no_interrupt_2, no_thread) == (True,) * 4
        assert len(await store.list_requests()) == 5

    async def test_find_request(self, store: Store) -> None:
        stored, _ = await store.create_request(request("r1", thread_id="t", interrupt_id="i"))
        assert await store.find_request("t", "i") == stored
        assert await store.find_request("t", "other") is None
        assert await store.find_request("other", "i") is None

    async def test_unknown_request_raises_request_not_found(self, store: Store) -> None:
        with pytest.raises(RequestNotFound) as caught:
            await store.get_request("missing")
        assert caught.value.request_id == "missing"
        assert isinstance(caught.value, LoopgateError)
        assert isinstance(caught.value, KeyError)

    async def test_list_requests_filters_and_orders_oldest_first(self, store: Store) -> None:
        await store.create_request(
            request("c", session_id="s1", thread_id="t2", graph="g", created_at=at(2))
        )
        await store.create_request(request("a", session_id="s1", thread_id="t1", created_at=at(0)))
        await store.create_request(
            request("b", session_id="s2", thread_id="t1", graph="g", created_at=at(1))
        )
        await store.resolve(
            "b", status=Status.REJECTED, decision={"type": "reject"}, decided_by="x", channel="cli"
        )

        async def ids(**filters: Any) -> list[str]:
            return [r.id for r in await store.list_requests(**filters)]

        assert await ids() == ["a", "b", "c"]
        assert await ids(status=Status.PENDING) == ["a", "c"]
        assert await ids(status=Status.REJECTED) == ["b"]
        assert await ids(status=Status.APPROVED) == []
        assert await ids(session_id="s1") == ["a", "c"]
        assert await ids(thread_id="t1") == ["a", "b"]
        assert await ids(graph="g") == ["b", "c"]
        assert await ids(session_id="s1", graph="g") == ["c"]
        assert await ids(limit=2) == ["a", "b"]
        assert await ids(limit=0) == []
        with pytest.raises(ValueError):
            await store.list_requests(limit=-1)

    async def test_a_response_schema_reads_back_as_filed_on_every_path(
        self, make_store: MakeStore
    ) -> None:
        # a pause's response schema (JSON text, often 10 kB, the same for every call of a
        # tool) comes back with its request from every read, however the store keeps it,
        # also through a store object that has not seen it written
        schema = '{"type": "object", "title": "deploy", "note": "\\"quoted\\" ' + "x" * 9000 + '"}'
        other = '{"type": "object", "title": "other"}'

        def paused(request_id: str, body: str, **fields: Any) -> RequestRecord:
            return request(request_id, payload={
                "type": "tool_approval", "request_id": request_id, "response_schema": body},
                **fields)

        first = await make_store()
        await first.setup()
        try:
            # its first pause is answered by a remembered permission: nothing is written
            await first.create_request(request("g"))
            await first.resolve("g", status=Status.APPROVED, decision=APPROVE,
                                decided_by="ann", channel="c",
                                grants=[grant("g1", "g", session_id="s1")])
            granted = await first.create_request_unless_granted(
                paused("a", schema, session_id="s1"),
                GrantQuery(tool="deploy", live_at=at(1), covering=GrantTarget(session_id="s1")))
            assert (granted.record, granted.created) == (None, False)
            filed, _ = await first.create_request(paused(
                "a", schema, thread_id="t", interrupt_id="i", expires_at=at(5),
                created_at=at(0)))
            await first.create_request(paused("b", schema, created_at=at(1)))
            await first.create_request(paused("c", other, created_at=at(2)))
            again, created = await first.create_request(paused("a", schema))
            assert not created and again.payload["response_schema"] == schema
            assert filed.payload["response_schema"] == schema
        finally:
            if self.persistent:
                await first.close()
        second = await make_store() if self.persistent else first
        await second.setup()
        try:
            assert (await second.get_request("a")).payload["response_schema"] == schema
            assert (await second.find_request("t", "i")) == await second.get_request("a")
            assert [r.payload.get("response_schema")
                    for r in await second.list_requests()] == [None, schema, schema, other]
            assert [r.id for r in await second.expired(at(5))] == ["a"]
            decided = await second.resolve("b", status=Status.APPROVED, decision=APPROVE,
                                           decided_by="ann", channel="api")
            assert decided.payload["response_schema"] == schema
            with pytest.raises(AlreadyDecided) as lost:
                await second.resolve("b", status=Status.REJECTED, decision={"type": "reject"},
                                     decided_by="bob", channel="api")
            assert lost.value.decided_by == "ann"
        finally:
            await second.close()

    async def test_records_handed_out_are_copies(self, store: Store) -> None:
        stored, _ = await store.create_request(request("r1", payload={"k": ["v"]}))
        stored.payload["k"].append("changed")
        got = await store.get_request("r1")
        got.payload["k"].append("changed again")
        assert (await store.get_request("r1")).payload == {"k": ["v"]}

    async def test_non_json_payload_is_refused_and_nothing_is_stored(self, store: Store) -> None:
        with pytest.raises(StoreError, match="JSON"):
            await store.create_request(request("r1", payload={"f": object()}))
        with pytest.raises(StoreError, match="JSON"):
            await store.create_request(request("r2", payload={"nan": float("nan")}))
        assert await store.list_requests() == []

    async def test_json_fields_come_back_as_plain_json(self, store: Store) -> None:
        by = {1: "one"}
        payload = {"when": T0, "pair": (1, 2), "kind": Status.APPROVED, "by": by}
        filed, _ = await store.create_request(request("r1", payload=payload))
        by[2] = "two"  # the filer's own payload is not the record's
        got = await store.get_request("r1")
        # the record filing returns is the stored one, as every later read gives it
        assert filed == got
        assert got.payload["by"] == {"1": "one"}
        assert got.payload["pair"] == [1, 2]
        assert got.payload["kind"] == "approved"
        assert datetime.fromisoformat(got.payload["when"].replace("Z", "+00:00")) == T0

    async def test_naive_and_offset_times_are_stored_as_utc(self, store: Store) -> None:
        plus_two = timezone(timedelta(hours=2))
        await store.create_request(
            request(
                "r1",
                created_at=T0.replace(tzinfo=None),
                expires_at=datetime(2030, 1, 1, 14, 0, tzinfo=plus_two),
            )
        )
        got = await store.get_request("r1")
        assert got.created_at == T0
        assert got.expires_at == T0
        assert_utc(got.created_at)
        assert_utc(got.expires_at)

    # requests: deciding ------------------------------------------------------------------

    async def test_resolve_records_the_decision(self, store: Store) -> None:
        await store.create_request(request("r1"))
        decision = {"type": "edit", "edited_action": {"name": "deploy", "args": {"env": "prod"}}}
        resolved = await store.resolve(
            "r1",
            status=Status.EDITED,
            decision=decision,
            decided_by="alice",
            channel="telegram",
            decided_at=at(5),
        )
        assert resolved.status is Status.EDITED
        assert resolved.decision == decision
        assert (resolved.decided_by, resolved.channel, resolved.decided_at) == (
            "alice",
            "telegram",
            at(5),
        )
        assert await store.get_request("r1") == resolved

    async def test_resolve_with_the_record_seen_returns_what_is_stored(
        self, store: Store
    ) -> None:
        # what changed after the decider read the request (a message shown, an
        # escalation) comes back as stored, not as the decider saw it
        await store.create_request(request("r1", expires_at=at(10)))
        seen = await store.get_request("r1")
        await store.set_message_ref("r1", "chat", {"message_id": 7})
        assert await store.extend_expiry("r1", expires_at=at(20), escalation_level=1)
        resolved = await store.resolve(
            "r1", status=Status.APPROVED, decision={"type": "approve", "at": (1, 2)},
            decided_by="alice", channel="http", decided_at=at(5), resumed_at=at(6),
            seen=seen,
        )
        assert resolved == await store.get_request("r1")
        assert resolved.decision == {"type": "approve", "at": [1, 2]}
        assert resolved.message_refs == {"chat": {"message_id": 7}}
        assert (resolved.expires_at, resolved.escalation_level) == (at(20), 1)
        assert (resolved.decided_at, resolved.resumed_at) == (at(5), at(6))
        assert resolved.request == seen.request
        # a record of another request is no record of this one
        await store.create_request(request("r2"))
        other = await store.resolve("r2", status=Status.REJECTED, decision={"type": "reject"},
                                    decided_by="bob", channel="c", seen=seen)
        assert other == await store.get_request("r2")

    async def test_resolve_defaults_decided_at_to_now(self, store: Store) -> None:
        await store.create_request(request("r1"))
        before = utcnow()
        resolved = await store.resolve(
            "r1", status=Status.TIMEOUT, decision={"type": "timeout"}, decided_by=None, channel=None
        )
        after = utcnow()
        assert resolved.decided_at is not None
        assert_utc(resolved.decided_at)
        assert before - timedelta(seconds=1) <= resolved.decided_at <= after + timedelta(seconds=1)
        assert resolved.decided_by is None

    async def test_second_resolve_raises_already_decided_with_the_winner(
        self, store: Store
    ) -> None:
        await store.create_request(request("r1"))
        await store.resolve(
            "r1",
            status=Status.APPROVED,
            decision=APPROVE,
            decided_by="alice",
            channel="telegram",
            decided_at=at(1),
        )
        with pytest.raises(AlreadyDecided) as caught:
            await store.resolve(
                "r1",
                status=Status.REJECTED,
                decision={"type": "reject"},
                decided_by="bob",
                channel="webhook",
                decided_at=at(2),
            )
        error = caught.value
        assert error.request_id == "r1"
        assert error.status == Status.APPROVED
        assert error.decided_by == "alice"
        assert error.decided_at == at(1)
        assert error.channel == "telegram"
        stored = await store.get_request("r1")
        assert (stored.status, stored.decided_by, stored.decision) == (
            Status.APPROVED,
            "alice",
            APPROVE,
        )

    async def test_resolve_unknown_request_raises_request_not_found(self, store: Store) -> None:
        with pytest.raises(RequestNotFound):
            await store.resolve(
                "missing", status=Status.APPROVED, decision=APPROVE, decided_by="a", channel="c"
            )

    @pytest.mark.parametrize("status", [Status.PENDING, "pending", "maybe"])
    async def test_resolve_to_a_non_final_status_is_a_value_error(
        self, store: Store, status: Any
    ) -> None:
        await store.create_request(request("r1"))
        with pytest.raises(ValueError):
            await store.resolve("r1", status=status, decision=APPROVE, decided_by="a", channel="c")
        assert (await store.get_request("r1")).pending

    async def test_resolve_accepts_a_status_string(self, store: Store) -> None:
        await store.create_request(request("r1"))
        resolved = await store.resolve(
            "r1",
            status="cancelled",  # type: ignore[arg-type]
            decision={"type": "cancel"},
            decided_by="a",
            channel="api",
        )
        assert resolved.status is Status.CANCELLED

    async def test_mark_resumed_is_true_exactly_once(self, store: Store) -> None:
        await store.create_request(request("r1"))
        assert await store.mark_resumed("r1") is False  # pending: nothing to resume yet
        await store.resolve(
            "r1", status=Status.APPROVED, decision=APPROVE, decided_by="a", channel="c"
        )
        assert await store.mark_resumed("r1") is True
        assert await store.mark_resumed("r1") is False
        got = await store.get_request("r1")
        assert_utc(got.resumed_at)
        with pytest.raises(RequestNotFound):
            await store.mark_resumed("missing")

    async def test_a_decision_can_claim_its_resume_in_the_same_commit(
        self, store: Store
    ) -> None:
        await store.create_request(request("r1"))
        at = utcnow()
        resolved = await store.resolve(
            "r1", status=Status.APPROVED, decision=APPROVE, decided_by="a", channel="c",
            resumed_at=at,
        )
        assert resolved.resumed_at == at and resolved.resume_done_at is None
        assert (await store.get_request("r1")).resumed_at == at
        assert await store.mark_resumed("r1") is False  # claimed already, by the decision
        unresumed = await store.list_requests(unresumed=True, stale_before=at)
        assert [r.id for r in unresumed] == ["r1"]  # a lapsed claim is taken over as any

    async def test_claims_can_be_limited_to_the_channels_a_worker_has(
        self, store: Store
    ) -> None:
        now = utcnow()
        for rid in ("r1", "r2"):
            await store.create_request(request(rid))
        await store.enqueue_outbox(OutboxItem(request_id="r1", notifier="telegram", due_at=now))
        await store.enqueue_outbox(OutboxItem(request_id="r2", notifier="webhook", due_at=now))
        mine = await store.claim_outbox(now, notifiers=["webhook", "log"])
        assert [(i.request_id, i.notifier) for i in mine] == [("r2", "webhook")]
        assert await store.claim_outbox(now, notifiers=[]) == []
        rest = await store.claim_outbox(now)
        assert [(i.request_id, i.notifier) for i in rest] == [("r1", "telegram")]

    async def test_unresumed_lists_decided_requests_until_they_are_resumed(
        self, store: Store
    ) -> None:
        for rid in ("r1", "r2", "r3"):
            await store.create_request(request(rid))
        for rid in ("r1", "r2"):
            await store.resolve(
                rid, status=Status.APPROVED, decision=APPROVE, decided_by="a", channel="c"
            )
        assert [r.id for r in await store.list_requests(unresumed=True)] == ["r1", "r2"]
        assert await store.mark_resumed("r1") is True
        assert [r.id for r in await store.list_requests(unresumed=True)] == ["r2"]

    async def test_a_claim_that_sent_nothing_is_given_back_once_to_its_owner(
        self, store: Store
    ) -> None:
        t0 = datetime(2030, 1, 1, tzinfo=UTC)
        await store.create_request(request("r1"))
        await store.resolve(
            "r1", status=Status.APPROVED, decision=APPROVE, decided_by="a", channel="c"
        )
        assert await store.mark_resumed("r1", at=t0) is True
        later = t0 + timedelta(seconds=5)
        # not the owner's claim time: nothing is given back, nothing audited
        assert await store.release_resume("r1", claimed_at=later, audit=[AuditEvent(
            event="resume_deferred", request_id="r1")]) is False
        assert await store.release_resume("r1", claimed_at=t0, audit=[AuditEvent(
            event="resume_deferred", request_id="r1")]) is True
        assert await store.release_resume("r1", claimed_at=t0) is False  # once
        assert [e.event for e in await store.list_audit(request_id="r1")].count(
            "resume_deferred") == 1
        assert [r.id for r in await store.list_requests(unresumed=True)] == ["r1"]
        assert await store.mark_resumed("r1", at=later) is True  # anyone may claim it again
        await store.complete_resume("r1", at=later)
        assert await store.release_resume("r1", claimed_at=later) is False  # done stays
        assert (await store.get_request("r1")).resume_done_at == later
        with pytest.raises(RequestNotFound):
            await store.release_resume("missing", claimed_at=t0)

    async def test_a_claim_never_completed_can_be_taken_over_once_stale(
        self, store: Store
    ) -> None:
        t0 = datetime(2030, 1, 1, tzinfo=UTC)
        for rid in ("r1", "r2"):
            await store.create_request(request(rid))
            await store.resolve(
                rid, status=Status.APPROVED, decision=APPROVE, decided_by="a", channel="c"
            )
            assert await store.mark_resumed(rid, at=t0) is True
        await store.complete_resume("r2", at=t0 + timedelta(seconds=1))
        await store.complete_resume("r2")  # idempotent: the first time stands
        assert (await store.get_request("r2")).resume_done_at == t0 + timedelta(seconds=1)
        # a fresh claim is not stale; only claims at or before the cutoff are
        assert await store.mark_resumed("r1", stale_before=t0 - timedelta(seconds=1)) is False
        assert [r.id for r in await store.list_requests(
            unresumed=True, stale_before=t0 - timedelta(seconds=1))] == []
        assert [r.id for r in await store.list_requests(
            unresumed=True, stale_before=t0)] == ["r1"]
        later = t0 + timedelta(minutes=10)
        assert await store.mark_resumed("r1", stale_before=t0, at=later) is True
        assert await store.mark_resumed("r1", stale_before=t0, at=later) is False  # once
        assert (await store.get_request("r1")).resumed_at == later
        # a completed resume is never taken over
        assert await store.mark_resumed("r2", stale_before=later) is False
        with pytest.raises(RequestNotFound):
            await store.complete_resume("missing")

    async def test_extend_expiry_is_a_compare_and_set_on_escalation_level(
        self, store: Store
    ) -> None:
        await store.create_request(request("r1", expires_at=at(10)))
        assert await store.extend_expiry("r1", expires_at=at(20), escalation_level=1) is True
        got = await store.get_request("r1")
        assert (got.expires_at, got.escalation_level) == (at(20), 1)
        # a second escalator who also saw level 0 loses
        assert await store.extend_expiry("r1", expires_at=at(99), escalation_level=1) is False
        # skipping a level is refused too
        assert await store.extend_expiry("r1", expires_at=at(99), escalation_level=3) is False
        assert await store.extend_expiry("r1", expires_at=at(30), escalation_level=2) is True
        got = await store.get_request("r1")
        assert (got.expires_at, got.escalation_level) == (at(30), 2)

        await store.resolve(
            "r1", status=Status.APPROVED, decision=APPROVE, decided_by="a", channel="c"
        )
        assert await store.extend_expiry("r1", expires_at=at(40), escalation_level=3) is False
        assert (await store.get_request("r1")).expires_at == at(30)
        with pytest.raises(RequestNotFound):
            await store.extend_expiry("missing", expires_at=at(1), escalation_level=1)

    async def test_expired_lists_due_pending_requests_soonest_first(self, store: Store) -> None:
        await store.create_request(request("late", expires_at=at(30), created_at=at(0)))
        await store.create_request(request("soon", expires_at=at(10), created_at=at(1)))
        await store.create_request(request("exact", expires_at=at(50), created_at=at(2)))
        await store.create_request(request("future", expires_at=at(51), created_at=at(3)))
        await store.create_request(request("never", created_at=at(4)))
        await store.create_request(request("decided", expires_at=at(5), created_at=at(5)))
        await store.resolve(
            "decided", status=Status.APPROVED, decision=APPROVE, decided_by="a", channel="c"
        )

        assert [r.id for r in await store.expired(at(50))] == ["soon", "late", "exact"]
        assert [r.id for r in await store.expired(at(50), limit=2)] == ["soon", "late"]
        assert [r.id for r in await store.expired(at(10))] == ["soon"]
        assert await store.expired(at(9)) == []
        naive = at(10).replace(tzinfo=None)
        assert [r.id for r in await store.expired(naive)] == ["soon"]

    async def test_next_expiry_is_the_earliest_pending_deadline(self, store: Store) -> None:
        assert await store.next_expiry() is None
        await store.create_request(request("never"))
        assert await store.next_expiry() is None
        await store.create_request(request("b", expires_at=at(20)))
        await store.create_request(request("a", expires_at=at(10)))
        soonest = await store.next_expiry()
        assert soonest == at(10)
        assert_utc(soonest)
        await store.resolve(
            "a", status=Status.TIMEOUT, decision={"type": "timeout"}, decided_by=None, channel=None
        )
        assert await store.next_expiry() == at(20)

    async def test_set_message_ref_merges_per_channel(self, store: Store) -> None:
        await store.create_request(request("r1", message_refs={"log": "line-1"}))
        await store.set_message_ref("r1", "telegram", {"chat_id": -100, "message_id": 1})
        await store.set_message_ref("r1", "webhook", ("a", 2))
        await store.set_message_ref("r1", "telegram", {"chat_id": -100, "message_id": 2})
        assert (await store.get_request("r1")).message_refs == {
            "log": "line-1",
            "telegram": {"chat_id": -100, "message_id": 2},
            "webhook": ["a", 2],
        }
        with pytest.raises(RequestNotFound):
            await store.set_message_ref("missing", "telegram", 1)
        with pytest.raises(StoreError):
            await store.set_message_ref("r1", "bad", object())
        assert "bad" not in (await store.get_request("r1")).message_refs

    async def test_set_message_ref_with_an_odd_channel_name(self, store: Store) -> None:
        await store.create_request(request("r1"))
        await store.set_message_ref("r1", 'we"ird.$[0]', None)
        assert (await store.get_request("r1")).message_refs == {'we"ird.$[0]': None}

    # a state change commits with its audit events and deliveries -------------------------

    async def test_filing_writes_its_audit_and_deliveries_once(self, store: Store) -> None:
        audit = [AuditEvent(at=T0, event="requested", request_id="r1")]
        outbox = [OutboxItem(request_id="r1", notifier="n", due_at=T0)]
        _, created = await store.create_request(request("r1"), audit=audit, outbox=outbox)
        assert created
        _, again = await store.create_request(request("r1"), audit=audit, outbox=outbox)
        assert not again
        assert [e.event for e in await store.list_audit(request_id="r1")] == ["requested"]
        assert [(i.notifier, i.kind) for i in await store.list_outbox()] == [("n", "notify")]

    async def test_a_change_that_cannot_be_written_whole_writes_nothing(
        self, store: Store
    ) -> None:
        bad = [AuditEvent(at=T0, event="requested", details={"x": float("nan")})]
        with pytest.raises(StoreError):
            await store.create_request(request("r1"), audit=bad)
        with pytest.raises(RequestNotFound):
            await store.get_request("r1")
        await store.create_request(request("r2"))
        with pytest.raises(StoreError):
            await store.resolve("r2", status=Status.APPROVED, decision=APPROVE,
                                decided_by="a", channel="c", audit=bad)
        assert (await store.get_request("r2")).pending
        assert await store.list_audit() == []

    async def test_a_decision_commits_its_audit_and_resolved_deliveries(
        self, store: Store
    ) -> None:
        await store.create_request(request("r1"))
        await store.set_message_ref("r1", "telegram", {"message_id": 5})
        decided = await store.resolve(
            "r1", status=Status.APPROVED, decision=APPROVE, decided_by="ana", channel="api",
            decided_at=at(1), audit=[AuditEvent(at=at(1), event="decided:approved",
                                                request_id="r1")],
            outbox=[OutboxItem(request_id="r1", notifier="log", kind="resolved",
                               due_at=at(1))],
            resolved_to_message_refs=True)
        assert decided.status is Status.APPROVED
        assert [e.event for e in await store.list_audit(request_id="r1")] == [
            "decided:approved"]
        assert sorted((i.notifier, i.kind) for i in await store.list_outbox()) == [
            ("log", "resolved"), ("telegram", "resolved")]
        # the loser of the compare-and-set writes nothing
        with pytest.raises(AlreadyDecided):
            await store.resolve("r1", status=Status.REJECTED, decision={"type": "reject"},
                                decided_by="bo", channel="api",
                                audit=[AuditEvent(at=at(2), event="decided:rejected")],
                                outbox=[OutboxItem(request_id="r1", notifier="x",
                                                   kind="resolved")])
        assert len(await store.list_audit()) == 1
        assert len(await store.list_outbox()) == 2

    async def test_a_decision_owes_resolved_to_the_messages_stored_when_it_commits(
        self, store: Store
    ) -> None:
        # r1 is read before its message is stored; r2 never has one
        await store.create_request(request("r1"))
        await store.create_request(request("r2"))
        seen = {rid: await store.get_request(rid) for rid in ("r1", "r2")}
        await store.set_message_ref("r1", "telegram", {"message_id": 5})
        for rid in ("r1", "r2"):
            await store.resolve(
                rid, status=Status.APPROVED, decision=APPROVE, decided_by="ana",
                channel="api", decided_at=at(1), seen=seen[rid],
                outbox=[OutboxItem(request_id=rid, notifier="log", kind="resolved",
                                   due_at=at(1))],
                resolved_to_message_refs=True)
        assert sorted((i.request_id, i.notifier) for i in await store.list_outbox()) == [
            ("r1", "log"), ("r1", "telegram"), ("r2", "log")]

    # grants ------------------------------------------------------------------------------

    async def test_a_decision_commits_its_grants_whole(self, store: Store) -> None:
        await store.create_request(request("r1", session_id="s1"))
        made = grant("g1", "r1", args={"env": {"one_of": ["staging", "dev"]},
                                       "note": {"any": True}, "n": {"min": 1, "max": 2.5}},
                     session_id="s1", thread_id="t1", client_id="c1", created_by="ana",
                     approver_id="42", channel="telegram", expires_at=at(3600))
        await store.resolve("r1", status=Status.APPROVED, decision=APPROVE, decided_by="ana",
                            channel="telegram", decided_at=at(1), grants=[made],
                            audit=[AuditEvent(at=at(1), event="grant_created",
                                              request_id="r1")])
        got = await store.get_grant("g1")
        assert got == made
        assert_utc(got.created_at)
        assert_utc(got.expires_at)
        assert await store.list_grants(tool="deploy", live_at=at(2)) == [made]
        assert [e.event for e in await store.list_audit()] == ["grant_created"]
        # the loser of the compare-and-set writes no grant
        with pytest.raises(AlreadyDecided):
            await store.resolve("r1", status=Status.APPROVED, decision=APPROVE,
                                decided_by="bo", channel="api", grants=[grant("g2", "r1")])
        with pytest.raises(GrantNotFound):
            await store.get_grant("g2")
        assert [g.id for g in await store.list_grants()] == ["g1"]

    async def test_a_grant_that_cannot_be_written_leaves_the_request_pending(
        self, store: Store
    ) -> None:
        await store.create_request(request("r1"))
        await store.create_request(request("r2"))
        await store.resolve("r1", status=Status.APPROVED, decision=APPROVE, decided_by="a",
                            channel="c", grants=[grant("g1", "r1")])
        with pytest.raises(LoopgateError):  # the id is taken: the whole decision fails
            await store.resolve("r2", status=Status.APPROVED, decision=APPROVE,
                                decided_by="a", channel="c", grants=[grant("g1", "r2")],
                                audit=[AuditEvent(at=T0, event="decided:approved")])
        assert (await store.get_request("r2")).pending
        assert (await store.get_grant("g1")).request_id == "r1"
        assert await store.list_audit() == []

    async def test_grants_are_listed_oldest_first_and_live_ones_apart(
        self, store: Store
    ) -> None:
        made = [
            grant("old", "r1", tool="a", session_id="s1", created_at=at(0)),
            grant("expiring", "r2", tool="a", client_id="c1", created_at=at(1),
                  expires_at=at(10)),
            grant("other-tool", "r3", tool="b", session_id="s1", created_at=at(2)),
        ]
        for g in made:
            await store.create_request(request(g.request_id))
            await store.resolve(g.request_id, status=Status.APPROVED, decision=APPROVE,
                                decided_by="a", channel="c", grants=[g])
        ids = [g.id for g in await store.list_grants()]
        assert ids == ["old", "expiring", "other-tool"]
        assert [g.id for g in await store.list_grants(tool="a")] == ["old", "expiring"]
        assert [g.id for g in await store.list_grants(session_id="s1")] == ["old", "other-tool"]
        assert [g.id for g in await store.list_grants(client_id="c1")] == ["expiring"]
        assert [g.id for g in await store.list_grants(request_id="r3")] == ["other-tool"]
        assert [g.id for g in await store.list_grants(limit=1)] == ["old"]
        live = [g.id for g in await store.list_grants(tool="a", live_at=at(9))]
        assert live == ["old", "expiring"]
        # expiry is exclusive: at its expires_at a grant no longer matches
        assert [g.id for g in await store.list_grants(tool="a", live_at=at(10))] == ["old"]
        with pytest.raises(ValueError):
            await store.list_grants(limit=-1)

    async def test_grants_covering_a_place(self, store: Store) -> None:
        made = [
            grant("thread", "r1", scope="thread", thread_id="t1", session_id="s1"),
            grant("session", "r2", scope="session", thread_id="t2", session_id="s1"),
            grant("client", "r3", scope="everyone", session_id="s2", client_id="c1"),
            grant("no-client", "r4", scope="everyone", thread_id="t1"),
        ]
        for g in made:
            await store.create_request(request(g.request_id))
            await store.resolve(g.request_id, status=Status.APPROVED, decision=APPROVE,
                                decided_by="a", channel="c", grants=[g])

        async def covering(**place: Any) -> list[str]:
            found = await store.list_grants(covering=GrantTarget(**place))
            assert all(g.covers(GrantTarget(**place)) for g in found)
            return [g.id for g in found]

        assert await covering(thread_id="t1", session_id="s1") == ["thread", "session",
                                                                   "no-client"]
        assert await covering(thread_id="t2", session_id="s1", client_id="c1") == [
            "session", "client"]
        assert await covering(session_id="s9", client_id="c1") == ["client"]
        assert await covering(thread_id="t9", client_id="c2") == []
        assert await covering() == ["no-client"]  # requests without a client: one client

    async def test_a_request_is_filed_unless_a_grant_may_approve_it(
        self, store: Store
    ) -> None:
        await store.create_request(request("r0"))
        await store.resolve("r0", status=Status.APPROVED, decision=APPROVE, decided_by="a",
                            channel="c", grants=[grant("g1", "r0", session_id="s1")])
        place = GrantQuery(tool="deploy", live_at=at(1),
                           covering=GrantTarget(thread_id="t1", session_id="s1"))
        owed = [OutboxItem(request_id="r1", notifier="log", kind="notify")]
        requested = [AuditEvent(at=at(1), event="requested", request_id="r1")]
        # a grant covers it: nothing is written, the grant is handed back
        found = await store.create_request_unless_granted(
            request("r1", thread_id="t1", interrupt_id="i1", session_id="s1"), place,
            audit=requested, outbox=owed)
        assert (found.record, found.created, [g.id for g in found.grants]) == (
            None, False, ["g1"])
        with pytest.raises(RequestNotFound):
            await store.get_request("r1")
        # none covers it (another session): filed with its audit and deliveries, once
        elsewhere = replace(place, covering=GrantTarget(thread_id="t1", session_id="s2"))
        found = await store.create_request_unless_granted(
            request("r1", thread_id="t1", interrupt_id="i1", session_id="s2"), elsewhere,
            audit=requested, outbox=owed)
        assert found.created and found.grants == []
        assert found.record == await store.get_request("r1")
        again = await store.create_request_unless_granted(
            request("r2", thread_id="t1", interrupt_id="i1", session_id="s2"), elsewhere,
            audit=requested, outbox=owed)
        assert (again.record, again.created) == (found.record, False)
        # a grant there since: nothing written, the grant handed back all the same
        filed = await store.create_request_unless_granted(
            request("r1", session_id="s1"), place, audit=requested)
        assert (filed.record, [g.id for g in filed.grants]) == (None, ["g1"])
        assert [e.event for e in await store.list_audit(request_id="r1")] == ["requested"]
        assert len(await store.list_outbox(request_id="r1")) == 1

    async def test_a_grant_is_revoked_once_with_its_audit(self, store: Store) -> None:
        await store.create_request(request("r1"))
        await store.resolve("r1", status=Status.APPROVED, decision=APPROVE, decided_by="a",
                            channel="c", grants=[grant("g1", "r1")])
        revoked, changed = await store.revoke_grant(
            "g1", revoked_by="bob", at=at(5),
            audit=[AuditEvent(at=at(5), event="grant_revoked", request_id="r1")])
        assert changed
        assert (revoked.revoked_by, revoked.revoked_at) == ("bob", at(5))
        again, changed = await store.revoke_grant(
            "g1", revoked_by="eve", at=at(6),
            audit=[AuditEvent(at=at(6), event="grant_revoked", request_id="r1")])
        assert not changed
        assert (again.revoked_by, again.revoked_at) == ("bob", at(5))
        assert [e.actor for e in await store.list_audit()] == [None]
        assert await store.list_grants(live_at=at(1)) == []  # revoked: never live again
        assert [g.id for g in await store.list_grants()] == ["g1"]
        with pytest.raises(GrantNotFound):
            await store.revoke_grant("nope", revoked_by="bob")
        with pytest.raises(GrantNotFound):
            await store.get_grant("nope")

    async def test_racing_revocations_revoke_once(self, store: Store) -> None:
        await store.create_request(request("r1"))
        await store.resolve("r1", status=Status.APPROVED, decision=APPROVE, decided_by="a",
                            channel="c", grants=[grant("g1", "r1")])
        results = await asyncio.gather(*(
            store.revoke_grant("g1", revoked_by=f"p{i}", at=at(i),
                               audit=[AuditEvent(at=at(i), event="grant_revoked",
                                                 actor=f"p{i}")])
            for i in range(8)))
        winners = [g.revoked_by for g, changed in results if changed]
        assert len(winners) == 1
        assert {g.revoked_by for g, _ in results} == set(winners)
        assert [e.actor for e in await store.list_audit()] == winners

    async def test_resume_claims_and_completions_carry_their_audit(self, store: Store) -> None:
        for rid in ("r1", "r2", "r3"):
            await store.create_request(request(rid))
            await store.resolve(rid, status=Status.APPROVED, decision=APPROVE,
                                decided_by="a", channel="c")
        resumed = [AuditEvent(at=at(1), event="resumed", request_id="r1")]
        assert await store.mark_resumed("r1", at=at(1), audit=resumed)
        assert not await store.mark_resumed("r1", at=at(2), audit=resumed)
        # claimed and completed at once: a decision that can resume nothing any more
        stale = [AuditEvent(at=at(1), event="stale", request_id="r3")]
        assert await store.mark_resumed("r3", at=at(1), done=True, audit=stale)
        assert (await store.get_request("r3")).resume_done_at == at(1)
        assert [e.event for e in await store.list_audit()] == ["resumed", "stale"]
        with pytest.raises(RequestNotFound):  # one unknown id: nothing is written
            await store.complete_resume("r1", "nope", at=at(3),
                                        audit=[AuditEvent(at=at(3), event="finished")])
        assert (await store.get_request("r1")).resume_done_at is None
        assert await store.mark_resumed("r2", at=at(3))
        await store.complete_resume("r1", "r2", at=at(4),
                                    audit=[AuditEvent(at=at(4), event="finished")])
        assert [(await store.get_request(r)).resume_done_at for r in ("r1", "r2")] == [
            at(4), at(4)]
        assert [e.event for e in await store.list_audit()][-1] == "finished"

    async def test_escalation_writes_its_audit_and_deliveries_only_when_it_moves(
        self, store: Store
    ) -> None:
        await store.create_request(request("r1", expires_at=at(10)))
        effects: dict[str, Any] = {
            "audit": [AuditEvent(at=at(10), event="escalated", request_id="r1")],
            "outbox": [OutboxItem(request_id="r1", notifier="pager", due_at=at(10))]}
        assert await store.extend_expiry("r1", expires_at=at(20), escalation_level=1,
                                         **effects)
        assert not await store.extend_expiry("r1", expires_at=at(30), escalation_level=1,
                                             **effects)
        assert [e.event for e in await store.list_audit()] == ["escalated"]
        assert [i.notifier for i in await store.list_outbox()] == ["pager"]

    async def test_finishing_a_delivery_stores_its_reference_and_audit(
        self, store: Store
    ) -> None:
        await store.create_request(request("r1"))
        item = await store.enqueue_outbox(OutboxItem(request_id="r1", notifier="tg",
                                                     due_at=T0))
        assert item.id is not None
        failed = await store.retry_outbox(
            item.id, due_at=at(5), error="429",
            audit=[AuditEvent(at=T0, event="delivery_failed", request_id="r1")])
        assert failed.attempts == 1
        await store.complete_outbox(
            item.id, message_ref={"message_id": 9},
            audit=[AuditEvent(at=at(5), event="notified", request_id="r1")])
        assert (await store.get_request("r1")).message_refs == {"tg": {"message_id": 9}}
        assert [e.event for e in await store.list_audit()] == ["delivery_failed", "notified"]
        assert (await store.list_outbox())[0].done

    async def test_a_delivery_given_up_ends_dead_with_its_last_error(self, store: Store) -> None:
        await store.create_request(request("r1"))
        item = await store.enqueue_outbox(OutboxItem(request_id="r1", notifier="tg",
                                                     due_at=T0, created_at=at(-5)))
        assert item.id is not None and item.created_at == at(-5)
        await store.complete_outbox(item.id, error="chat not found",
                                    audit=[AuditEvent(at=T0, event="delivery_failed")])
        [ended] = await store.list_outbox()
        assert (ended.done, ended.dead, ended.attempts, ended.last_error) == (
            True, True, 1, "chat not found")
        assert await store.claim_outbox(at(3600)) == []

    async def test_dead_deliveries_are_listed_apart(self, store: Store) -> None:
        await store.create_request(request("r1"))
        ids = []
        for name in ("tg", "pager", "mail"):
            item = await store.enqueue_outbox(OutboxItem(request_id="r1", notifier=name,
                                                         due_at=T0))
            assert item.id is not None
            ids.append(item.id)
        await store.complete_outbox(ids[0], error="chat not found")
        await store.complete_outbox(ids[1])
        await store.complete_outbox(ids[2], error="550 no such user")
        dead = await store.list_outbox(dead=True)
        assert [i.notifier for i in dead] == ["tg", "mail"]
        assert [i.notifier for i in await store.list_outbox(dead=True, limit=1)] == ["tg"]
        assert [i.notifier for i in await store.list_outbox(dead=False)] == ["pager"]
        # paged: the next page starts after the last item id seen
        assert [i.notifier for i in await store.list_outbox(dead=True, after=ids[0])] == ["mail"]
        assert await store.list_outbox(dead=True, after=ids[2]) == []

    async def test_a_delivery_owed_and_leased_in_one_write_is_claimed_only_after_its_lease(
        self, store: Store
    ) -> None:
        owed = [OutboxItem(request_id="r1", notifier="tg", due_at=T0, leased_until=at(60))]
        await store.create_request(request("r1"), outbox=owed)
        [item] = await store.list_outbox()
        assert item.leased_until == at(60) and not item.done
        assert await store.claim_outbox(at(59)) == []  # the writer delivers it itself
        [taken] = await store.claim_outbox(at(60), lease_seconds=30)  # the writer died
        assert taken.id == item.id and taken.leased_until == at(90)

    async def test_a_delivery_is_recorded_under_its_lease_only(self, store: Store) -> None:
        for rid, lease in (("r1", at(60)), ("r2", at(30))):
            await store.create_request(request(rid), outbox=[OutboxItem(
                request_id=rid, notifier="tg", due_at=T0, leased_until=lease)])

        def delivered(request_id: str, lease: datetime, ref: Any = None) -> Delivered:
            return Delivered(request_id=request_id, notifier="tg", kind="notify",
                             leased_until=lease, message_ref=ref, audit=[AuditEvent(
                                 at=at(1), event="notified", request_id=request_id)])

        # r2's lease passed and another worker took it over: the late record is dropped
        [taken] = await store.claim_outbox(at(31), lease_seconds=30)
        assert taken.request_id == "r2"
        assert await store.complete_deliveries([
            delivered("r1", at(60), {"message_id": 7}), delivered("r2", at(30))]) == 1
        r1, r2 = await store.list_outbox()
        assert (r1.done, r1.leased_until, r2.done, r2.leased_until) == (
            True, None, False, at(61))
        assert (await store.get_request("r1")).message_refs == {"tg": {"message_id": 7}}
        assert [e.request_id for e in await store.list_audit()] == ["r1"]
        # recorded once: again, or under the taken-over lease by its new holder
        assert await store.complete_deliveries([delivered("r1", at(60))]) == 0
        assert await store.complete_deliveries([delivered("r2", at(61))]) == 1
        assert [e.request_id for e in await store.list_audit()] == ["r1", "r2"]
        assert await store.complete_deliveries([]) == 0

    async def test_a_decision_records_its_requests_deliveries_first_or_not_at_all(
        self, store: Store
    ) -> None:
        for rid in ("r1", "r2"):
            await store.create_request(request(rid), outbox=[OutboxItem(
                request_id=rid, notifier="tg", due_at=T0, leased_until=at(60))])
        shown = [Delivered(request_id="r1", notifier="tg", kind="notify",
                           leased_until=at(60), message_ref={"message_id": 3},
                           audit=[AuditEvent(at=at(1), event="notified", request_id="r1")])]
        decided = await store.resolve(
            "r1", status=Status.APPROVED, decision=APPROVE, decided_by="a", channel="c",
            decided_at=at(2), audit=[AuditEvent(at=at(2), event="decided:approved",
                                                request_id="r1")],
            resolved_to_message_refs=True, delivered=shown)
        # the reference it stored is the one the decision's `resolved` delivery goes to
        assert decided.message_refs == {"tg": {"message_id": 3}}
        assert sorted((i.request_id, i.kind, i.done) for i in await store.list_outbox()) == [
            ("r1", "notify", True), ("r1", "resolved", False), ("r2", "notify", False)]
        assert [e.event for e in await store.list_audit()] == ["notified", "decided:approved"]
        # a refused decision records nothing of what it carried
        with pytest.raises(AlreadyDecided):
            await store.resolve("r1", status=Status.REJECTED, decision={"type": "reject"},
                                decided_by="b", channel="c", delivered=[Delivered(
                                    request_id="r2", notifier="tg", kind="notify",
                                    leased_until=at(60))])
        assert not [i for i in await store.list_outbox(request_id="r2") if i.done]
        with pytest.raises(StoreError):  # a reference no column can hold: nothing at all
            await store.resolve("r2", status=Status.APPROVED, decision=APPROVE,
                                decided_by="a", channel="c", delivered=[Delivered(
                                    request_id="r2", notifier="tg", kind="notify",
                                    leased_until=at(60), message_ref={"n": float("nan")})])
        assert (await store.get_request("r2")).pending

    async def test_a_decisions_writes_keep_their_order_and_a_refused_one_writes_none(
        self, store: Store
    ) -> None:
        # everything a decision carries at once: a store may write it as one statement
        filing = [AuditEvent(at=T0, event=f"filed:{n}", request_id="r1") for n in (1, 2)]
        await store.create_request(request("r1"), audit=filing, outbox=[
            OutboxItem(request_id="r1", notifier=n, due_at=T0, leased_until=at(60))
            for n in ("tg", "mail")])
        for channel in ("slack", "chat"):
            await store.set_message_ref("r1", channel, {"id": channel})

        def carried(event: str, grant_id: str) -> dict[str, Any]:
            return {"audit": [AuditEvent(at=at(2), event=f"{event}:{n}", request_id="r1")
                              for n in (1, 2)],
                    "outbox": [OutboxItem(request_id="r1", notifier=n, kind="resolved",
                                          due_at=at(2)) for n in ("tg", "mail")],
                    "grants": [grant(grant_id, "r1")], "resolved_to_message_refs": True,
                    "delivered": [Delivered(
                        request_id="r1", notifier="tg", kind="notify", leased_until=at(60),
                        audit=[AuditEvent(at=at(1), event="notified", request_id="r1")])]}

        await store.resolve("r1", status=Status.APPROVED, decision=APPROVE, decided_by="a",
                            channel="c", decided_at=at(2), **carried("decided", "g1"))
        events = ["filed:1", "filed:2", "notified", "decided:1", "decided:2"]
        assert [e.event for e in await store.list_audit()] == events
        owed = [("tg", "notify", True), ("mail", "notify", False), ("tg", "resolved", False),
                ("mail", "resolved", False), ("chat", "resolved", False),
                ("slack", "resolved", False)]
        assert [(i.notifier, i.kind, i.done) for i in await store.list_outbox()] == owed
        with pytest.raises(AlreadyDecided) as caught:
            await store.resolve("r1", status=Status.REJECTED, decision={"type": "reject"},
                                decided_by="b", channel="c", decided_at=at(3),
                                **carried("refused", "g2"))
        assert caught.value.decided_by == "a"
        assert [e.event for e in await store.list_audit()] == events
        assert [(i.notifier, i.kind, i.done) for i in await store.list_outbox()] == owed
        assert [g.id for g in await store.query_grants(GrantQuery())] == ["g1"]
        # an unknown request's completed resume records none of its deliveries either
        with pytest.raises(RequestNotFound):
            await store.complete_resume("nope", at=at(4), delivered=[Delivered(
                request_id="r1", notifier="mail", kind="notify", leased_until=at(60),
                audit=[AuditEvent(at=at(4), event="notified", request_id="r1")])])
        assert [(i.notifier, i.kind, i.done) for i in await store.list_outbox()] == owed
        assert [e.event for e in await store.list_audit()] == events

    async def test_a_message_recorded_after_the_decision_is_owed_the_outcome(
        self, store: Store
    ) -> None:
        for rid in ("r1", "r2"):
            await store.create_request(request(rid), outbox=[OutboxItem(
                request_id=rid, notifier="tg", due_at=T0, leased_until=at(60))])
            await store.resolve(rid, status=Status.APPROVED, decision=APPROVE,
                                decided_by="a", channel="c", decided_at=at(5),
                                resolved_to_message_refs=True)
        # r2's channel had its outcome already (a decision made where it is known)
        await store.enqueue_outbox(OutboxItem(request_id="r2", notifier="tg",
                                              kind="resolved", due_at=at(5)))
        assert await store.complete_deliveries([
            Delivered(request_id=rid, notifier="tg", kind="notify", leased_until=at(60),
                      message_ref={"message_id": 1}) for rid in ("r1", "r2")]) == 2
        owed = [(i.request_id, i.kind) for i in await store.list_outbox() if not i.done]
        assert sorted(owed) == [("r1", "resolved"), ("r2", "resolved")]
        [outcome] = [i for i in await store.claim_outbox(at(5)) if i.request_id == "r1"]
        assert outcome.notifier == "tg"

    async def test_votes_and_escalations_record_deliveries_before_owing_new_ones(
        self, store: Store
    ) -> None:
        shown = [OutboxItem(request_id="q1", notifier=name, kind=kind, due_at=T0,
                            leased_until=at(60))
                 for name, kind in (("chat", "voted"), ("pager", "notify"))]
        await store.create_request(request("q1", expires_at=at(10)), outbox=shown)

        def made(name: str, kind: Any) -> list[Delivered]:
            return [Delivered(request_id="q1", notifier=name, kind=kind,
                              leased_until=at(60))]

        # the first count was shown and not yet recorded: the new one is owed anew
        await store.vote(replace(ballot("q1", "ana"), delivered=made("chat", "voted")))
        assert await store.extend_expiry(
            "q1", expires_at=at(20), escalation_level=1, delivered=made("pager", "notify"),
            outbox=[OutboxItem(request_id="q1", notifier="pager", due_at=at(10))])
        items = [(i.notifier, i.kind, i.done) for i in await store.list_outbox()]
        assert sorted(items) == [("chat", "voted", False), ("chat", "voted", True),
                                 ("pager", "notify", False), ("pager", "notify", True)]

    async def test_resume_claims_and_completions_record_deliveries(self, store: Store) -> None:
        for rid in ("r1", "r2"):
            await store.create_request(request(rid), outbox=[OutboxItem(
                request_id=rid, notifier="tg", due_at=T0, leased_until=at(60))])
            await store.resolve(rid, status=Status.APPROVED, decision=APPROVE,
                                decided_by="a", channel="c")

        def shown(rid: str) -> list[Delivered]:
            return [Delivered(request_id=rid, notifier="tg", kind="notify",
                              leased_until=at(60))]

        assert await store.mark_resumed("r1", at=at(1), delivered=shown("r1"))
        assert not await store.mark_resumed("r1", at=at(2), delivered=shown("r2"))
        assert [i.done for i in await store.list_outbox()] == [True, True]
        await store.create_request(request("r3"), outbox=[OutboxItem(
            request_id="r3", notifier="tg", due_at=T0, leased_until=at(60))])
        with pytest.raises(RequestNotFound):  # one unknown id: nothing is written
            await store.complete_resume("r1", "nope", at=at(3), delivered=shown("r3"))
        assert not (await store.list_outbox(request_id="r3"))[0].done
        await store.complete_resume("r1", at=at(3), delivered=shown("r3"))
        assert (await store.list_outbox(request_id="r3"))[0].done

    # paging ------------------------------------------------------------------------------

    async def test_list_requests_pages_with_a_cursor(self, store: Store) -> None:
        for n in range(5):
            await store.create_request(request(f"r{n}", created_at=T0))  # same instant
        await store.create_request(request("early", created_at=at(-1)))
        pages: list[list[str]] = []
        after = None
        for _ in range(10):
            page = await store.list_requests(limit=2, after=after)
            if not page:
                break
            pages.append([r.id for r in page])
            after = page[-1].id
        assert pages == [["early", "r0"], ["r1", "r2"], ["r3", "r4"]]
        assert [r.id for r in await store.list_requests(after="r3")] == ["r4"]
        with pytest.raises(RequestNotFound):
            await store.list_requests(after="nope")

    async def test_listings_filter_by_tool_risk_scope_and_decided_in_the_query(
        self, store: Store,
    ) -> None:
        def tool_call(request_id: str, name: str, risk: str, **fields: Any) -> RequestRecord:
            return request(request_id, payload={"type": "tool_approval", "name": name,
                                                "risk_level": risk}, **fields)

        await store.create_request(tool_call("a", "send_email", "high", session_id="s1",
                                             client_id="c1", created_at=at(0)))
        await store.create_request(tool_call("b", "delete_db", "critical", session_id="s2",
                                             client_id="c2", created_at=at(1)))
        await store.create_request(tool_call("c", "send_email", "low", session_id="s3",
                                             client_id="c2", created_at=at(2)))
        await store.create_request(request("d", session_id="s1", created_at=at(3)))
        await store.resolve("c", status=Status.APPROVED, decision=APPROVE, decided_by="x",
                            channel="cli")

        async def ids(**filters: Any) -> list[str]:
            return [r.id for r in await store.list_requests(**filters)]

        assert await ids(tool="send_email") == ["a", "c"]
        assert await ids(risk="critical") == ["b"]
        assert await ids(tool="send_email", risk="low") == ["c"]
        assert await ids(tool="nope") == []
        assert await ids(decided=True) == ["c"]
        assert await ids(status=Status.PENDING, tool="send_email") == ["a"]
        assert await ids(scope=RequestScope(sessions=frozenset({"s1"}))) == ["a", "d"]
        assert await ids(scope=RequestScope(clients=frozenset({"c2"}))) == ["b", "c"]
        assert await ids(scope=RequestScope(sessions=frozenset({"s1"}),
                                            clients=frozenset({"c2"}))) == ["a", "b", "c", "d"]
        assert await ids(scope=RequestScope()) == []  # an empty scope sees nothing
        assert await ids(scope=RequestScope(clients=frozenset({"c2"})), decided=True) == ["c"]

    async def test_newest_first_pages_with_a_cursor_under_filters(self, store: Store) -> None:
        for n in range(7):  # two share an instant: the cursor must still split them
            await store.create_request(request(
                f"r{n}", session_id="s1" if n % 2 == 0 else "s2",
                created_at=at(min(n, 5))))
        pages: list[list[str]] = []
        after = None
        for _ in range(10):
            page = await store.list_requests(newest_first=True, limit=3, after=after)
            if not page:
                break
            pages.append([r.id for r in page])
            after = page[-1].id
        assert pages == [["r6", "r5", "r4"], ["r3", "r2", "r1"], ["r0"]]
        # a filtered page continues from any request's position, matching or not
        assert [r.id for r in await store.list_requests(
            session_id="s1", newest_first=True, after="r5")] == ["r4", "r2", "r0"]
        assert [r.id for r in await store.list_requests(
            session_id="s1", newest_first=True, limit=2)] == ["r6", "r4"]
        with pytest.raises(RequestNotFound):
            await store.list_requests(newest_first=True, after="nope")

    async def test_audit_pages_forward_back_and_from_the_tail(self, store: Store) -> None:
        stored = [await store.append_audit(AuditEvent(event=f"e{n}", at=at(n),
                                                      request_id="r1" if n % 2 else "r2"))
                  for n in range(6)]
        ids = [e.id for e in stored]
        assert all(isinstance(i, int) for i in ids)

        async def events(**filters: Any) -> list[str]:
            return [e.event for e in await store.list_audit(**filters)]

        assert await events(after=ids[1], limit=2) == ["e2", "e3"]
        assert await events(before=ids[2]) == ["e0", "e1"]
        assert await events(limit=2, newest=True) == ["e4", "e5"]  # the tail, in order
        assert await events(limit=2, newest=True, before=ids[4]) == ["e2", "e3"]
        assert await events(request_id="r1", limit=2, newest=True) == ["e3", "e5"]
        assert await events(request_id="r1", newest=True, before=ids[3]) == ["e1"]
        assert await events(newest=True) == [f"e{n}" for n in range(6)]  # no limit: all

    # callback keys -----------------------------------------------------------------------

    async def test_callbacks_put_and_get(self, store: Store) -> None:
        assert await store.get_callback("k1") is None
        await store.put_callback("k1", "r1", {"type": "approve"})
        await store.put_callback("k2", "r1", {"type": "reject", "message": "no"})
        assert await store.get_callback("k1") == ("r1", {"type": "approve"})
        assert await store.get_callback("k2") == ("r1", {"type": "reject", "message": "no"})
        await store.put_callback("k1", "r2", {"type": "edit"})
        assert await store.get_callback("k1") == ("r2", {"type": "edit"})

    async def test_remember_once_admits_exactly_one_of_racing_callers(
        self, store: Store,
    ) -> None:
        until = at(3600)
        results = await asyncio.gather(
            *(store.remember_once("sig-1", expires_at=until) for _ in range(20)))
        assert sorted(results) == [False] * 19 + [True]
        assert await store.remember_once("sig-1", expires_at=until) is False
        assert await store.remember_once("sig-2", expires_at=until) is True
        # once-keys live apart from callback keys of the same name
        await store.put_callback("sig-3", "r1", {"type": "approve"})
        assert await store.remember_once("sig-3", expires_at=until) is True
        assert await store.get_callback("sig-3") == ("r1", {"type": "approve"})

    # votes (quorum) ----------------------------------------------------------------------

    async def test_votes_count_until_the_quorum_decides(self, store: Store) -> None:
        await store.create_request(request("q1"))
        first = await store.vote(ballot("q1", "ana", approvals_needed=3))
        assert first.pending and [(v.voter, v.vote) for v in first.votes] == [("ana", "approve")]
        assert first.votes[0].actor == "actor:ana" and first.votes[0].at == at(1)
        second = await store.vote(ballot("q1", "bob", approvals_needed=3, seconds=2))
        assert second.pending and second.counted("approve") == 2
        third = await store.vote(ballot("q1", "cy", approvals_needed=3, seconds=3))
        assert third.status is Status.APPROVED
        assert third.decided_by == "actor:ana, actor:bob, actor:cy"
        assert third.decision == {"type": "approve", "voters": ["ana", "bob", "cy"]}
        assert third.decided_at == at(3)
        assert await store.get_request("q1") == third
        events = await store.list_audit(request_id="q1")
        assert [e.event for e in events] == ["voted", "voted", "voted", "decided:approved"]
        assert [(e.details["voter"], e.details["approvals"], e.details["approvals_needed"])
                for e in events[:3]] == [("ana", 1, 3), ("bob", 2, 3), ("cy", 3, 3)]
        # a pending vote owes its channel the new count; the deciding one owes the outcome
        kinds = [(i.kind, i.done) for i in await store.list_outbox(request_id="q1")]
        assert kinds == [("voted", False), ("resolved", False)]
        with pytest.raises(AlreadyDecided) as caught:
            await store.vote(ballot("q1", "dan", approvals_needed=3, seconds=4))
        assert caught.value.decided_by == "actor:ana, actor:bob, actor:cy"
        assert len((await store.get_request("q1")).votes) == 3
        assert len(await store.list_audit(request_id="q1")) == 4

    async def test_a_second_vote_by_one_voter_is_refused_and_writes_nothing(
        self, store: Store,
    ) -> None:
        await store.create_request(request("q1"))
        await store.vote(ballot("q1", "ana"))
        for vote in ("approve", "reject"):  # neither counted again nor changed
            with pytest.raises(DuplicateVote) as caught:
                await store.vote(ballot("q1", "ana", vote))
            assert (caught.value.voter, caught.value.vote, caught.value.approvals,
                    caught.value.approvals_needed) == ("ana", "approve", 1, 2)
        stored = await store.get_request("q1")
        assert stored.pending and [v.voter for v in stored.votes] == ["ana"]
        assert [e.event for e in await store.list_audit(request_id="q1")] == ["voted"]

    async def test_one_rejection_decides_unless_more_are_needed(self, store: Store) -> None:
        await store.create_request(request("q1"))
        await store.create_request(request("q2"))
        await store.vote(ballot("q1", "ana"))
        rejected = await store.vote(ballot("q1", "bob", "reject", seconds=2))
        assert rejected.status is Status.REJECTED
        assert rejected.decided_by == "actor:bob"  # the approval before it does not count
        assert rejected.decision == {"type": "reject", "voters": ["bob"]}
        assert rejected.counted("approve") == 1 and rejected.counted("reject") == 1
        # two rejections needed: the first leaves it pending, the second decides
        once = await store.vote(ballot("q2", "ana", "reject", rejections_needed=2))
        assert once.pending and once.counted("reject") == 1
        twice = await store.vote(ballot("q2", "bob", "reject", rejections_needed=2))
        assert twice.status is Status.REJECTED and twice.decided_by == "actor:ana, actor:bob"
        details = [e.details for e in await store.list_audit(request_id="q2")
                   if e.event == "voted"]
        assert [(d["rejections"], d["rejections_needed"]) for d in details] == [(1, 2), (2, 2)]

    async def test_votes_on_decided_or_unknown_requests_write_nothing(self, store: Store) -> None:
        await store.create_request(request("q1"))
        await store.resolve("q1", status=Status.CANCELLED, decision={"type": "cancel"},
                            decided_by="me", channel="cancel")
        with pytest.raises(AlreadyDecided):
            await store.vote(ballot("q1", "ana"))
        with pytest.raises(RequestNotFound):
            await store.vote(ballot("nope", "ana"))
        assert (await store.get_request("q1")).votes == []
        assert await store.list_audit(request_id="q1") == []
        with pytest.raises(ValueError):
            await store.vote(ballot("q1", "ana", approvals_needed=0))

    async def test_racing_votes_decide_once_with_exactly_the_quorum_counted(
        self, store: Store, make_store: MakeStore,
    ) -> None:
        """Voters race from threads, each with its own event loop and (for stores that
        keep data) its own store object and connections."""
        quorum, voters, requests = 3, 8, 5
        ids = [f"race-{n}" for n in range(requests)]
        for request_id in ids:
            await store.create_request(request(request_id))
        results: list[tuple[str, str, str]] = []
        lock = threading.Lock()
        start = threading.Barrier(voters)

        def vote_all(voter: str) -> None:
            async def run() -> list[tuple[str, str, str]]:
                own = await make_store() if self.persistent else store
                if own is not store:
                    await own.setup()
                out = []
                try:
                    for request_id in ids:
                        try:
                            voted = await own.vote(ballot(request_id, voter,
                                                          approvals_needed=quorum))
                        except AlreadyDecided:
                            out.append((request_id, voter, "late"))
                        else:
                            out.append((request_id, voter,
                                        "pending" if voted.pending else "decided"))
                finally:
                    if own is not store:
                        await own.close()
                return out

            start.wait(timeout=30)
            found = asyncio.run(run())
            with lock:
                results.extend(found)

        threads = [threading.Thread(target=vote_all, args=(f"v{k}",)) for k in range(voters)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
        assert len(results) == voters * requests
        for request_id in ids:
            outcomes = sorted(r for rid, _, r in results if rid == request_id)
            assert outcomes == (["decided"] + ["late"] * (voters - quorum)
                                + ["pending"] * (quorum - 1))
            stored = await store.get_request(request_id)
            assert stored.status is Status.APPROVED
            counted = [v.voter for v in stored.votes]
            assert len(counted) == len(set(counted)) == quorum
            assert set(counted) == {v for rid, v, r in results
                                    if rid == request_id and r != "late"}
            events = [e.event for e in await store.list_audit(request_id=request_id)]
            assert events == ["voted"] * quorum + ["decided:approved"]

    # audit -------------------------------------------------------------------------------

    async def test_audit_is_append_only_in_order(self, store: Store) -> None:
        first = await store.append_audit(AuditEvent(event="requested", at=at(5), request_id="r1"))
        second = await store.append_audit(AuditEvent(event="requested", at=at(5), request_id="r1"))
        # an event's time does not reorder the log: it is kept in append order
        third = await store.append_audit(
            AuditEvent(id=1, event="approved", at=at(1), request_id="r1", actor="ann")
        )
        assert first.id is not None and second.id is not None and third.id is not None
        assert first.id < second.id < third.id
        events = await store.list_audit()
        assert [e.id for e in events] == [first.id, second.id, third.id]
        assert events[2] == third
        assert (third.event, third.actor, third.at) == ("approved", "ann", at(1))
        assert_utc(events[0].at)

    async def test_audit_filters(self, store: Store) -> None:
        rows = [
            AuditEvent(event="e0", at=at(0), request_id="r1", session_id="s1", thread_id="t1"),
            AuditEvent(event="e1", at=at(10), request_id="r2", session_id="s1", thread_id="t2"),
            AuditEvent(event="e2", at=at(20), request_id="r1", session_id="s2", thread_id="t1"),
            AuditEvent(
                event="e3",
                at=at(30),
                request_id="r3",
                actor="bob",
                channel="cli",
                args_hash="abc",
                details={"why": "because", "n": [1]},
            ),
        ]
        for row in rows:
            await store.append_audit(row)

        async def events(**filters: Any) -> list[str]:
            return [e.event for e in await store.list_audit(**filters)]

        assert await events() == ["e0", "e1", "e2", "e3"]
        assert await events(request_id="r1") == ["e0", "e2"]
        assert await events(session_id="s1") == ["e0", "e1"]
        assert await events(thread_id="t1") == ["e0", "e2"]
        assert await events(since=at(10)) == ["e1", "e2", "e3"]  # since is inclusive
        assert await events(until=at(20)) == ["e0", "e1"]  # until is exclusive
        assert await events(since=at(5), until=at(25)) == ["e1", "e2"]
        assert await events(limit=3) == ["e0", "e1", "e2"]
        assert await events(request_id="r1", since=at(1)) == ["e2"]
        assert await events(request_id="nope") == []
        assert await events(event="e2") == ["e2"]
        assert await events(event="e0", request_id="r1") == ["e0"]
        assert await events(event="e1", request_id="r1") == []
        full = (await store.list_audit(request_id="r3"))[0]
        assert (full.actor, full.channel, full.args_hash, full.details) == (
            "bob",
            "cli",
            "abc",
            {"why": "because", "n": [1]},
        )
        with pytest.raises(ValueError):
            await store.list_audit(limit=-5)

    # outbox ------------------------------------------------------------------------------

    async def test_enqueue_is_idempotent_while_not_done(self, store: Store) -> None:
        first = await store.enqueue_outbox(OutboxItem(request_id="r1", notifier="tg", due_at=T0))
        assert first.id is not None
        again = await store.enqueue_outbox(OutboxItem(request_id="r1", notifier="tg", due_at=at(9)))
        assert again == first
        other_kind = await store.enqueue_outbox(
            OutboxItem(request_id="r1", notifier="tg", kind="resolved", due_at=T0)
        )
        other_notifier = await store.enqueue_outbox(
            OutboxItem(request_id="r1", notifier="hook", due_at=T0)
        )
        assert len({first.id, other_kind.id, other_notifier.id}) == 3
        await store.complete_outbox(first.id)
        renewed = await store.enqueue_outbox(OutboxItem(request_id="r1", notifier="tg", due_at=T0))
        assert renewed.id not in (None, first.id)
        assert len(await store.list_outbox()) == 4

    async def test_claim_leases_due_items_once_until_the_lease_expires(self, store: Store) -> None:
        late = await store.enqueue_outbox(OutboxItem(request_id="r2", notifier="n", due_at=at(5)))
        early = await store.enqueue_outbox(OutboxItem(request_id="r1", notifier="n", due_at=at(0)))
        future = await store.enqueue_outbox(
            OutboxItem(request_id="r3", notifier="n", due_at=at(100))
        )

        claimed = await store.claim_outbox(at(10), lease_seconds=30)
        assert [i.id for i in claimed] == [early.id, late.id]  # due first, future left
        assert_utc(claimed[0].due_at)
        assert await store.claim_outbox(at(10), lease_seconds=30) == []
        assert await store.claim_outbox(at(39), lease_seconds=30) == []
        # the lease ran out (a worker died): due again, for one worker
        reclaimed = await store.claim_outbox(at(40), lease_seconds=100)
        assert [i.id for i in reclaimed] == [early.id, late.id]
        assert await store.claim_outbox(at(40), lease_seconds=30) == []

        assert [i.id for i in await store.claim_outbox(at(100))] == [future.id]
        everything = await store.claim_outbox(at(140))
        assert [i.id for i in everything] == [early.id, late.id, future.id]

    async def test_claim_respects_limit(self, store: Store) -> None:
        for n in range(5):
            await store.enqueue_outbox(OutboxItem(request_id=f"r{n}", notifier="n", due_at=at(n)))
        first = await store.claim_outbox(at(10), limit=2)
        second = await store.claim_outbox(at(10), limit=2)
        third = await store.claim_outbox(at(10), limit=2)
        assert [i.request_id for i in first + second + third] == [f"r{n}" for n in range(5)]
        assert await store.claim_outbox(at(10), limit=0) == []

    async def test_retry_counts_attempts_and_reschedules(self, store: Store) -> None:
        item = await store.enqueue_outbox(OutboxItem(request_id="r1", notifier="n", due_at=T0))
        assert item.id is not None
        (claimed,) = await store.claim_outbox(at(1), lease_seconds=300)
        retried = await store.retry_outbox(claimed.id or 0, due_at=at(60), error="HTTP 503")
        assert (retried.attempts, retried.due_at, retried.last_error, retried.done) == (
            1,
            at(60),
            "HTTP 503",
            False,
        )
        # released from its lease, but not due before its new time
        assert await store.claim_outbox(at(59)) == []
        (again,) = await store.claim_outbox(at(60))
        assert again.attempts == 1
        retried = await store.retry_outbox(item.id, due_at=at(120), error="timeout")
        assert (retried.attempts, retried.last_error) == (2, "timeout")
        assert (await store.list_outbox(request_id="r1"))[0] == retried

    async def test_complete_hides_an_item_from_claims(self, store: Store) -> None:
        done = await store.enqueue_outbox(OutboxItem(request_id="r1", notifier="n", due_at=T0))
        kept = await store.enqueue_outbox(OutboxItem(request_id="r2", notifier="n", due_at=T0))
        assert done.id is not None
        await store.complete_outbox(done.id)
        await store.complete_outbox(done.id)  # idempotent
        assert [i.id for i in await store.claim_outbox(at(1))] == [kept.id]
        # long after every lease ran out, only the undone item comes back
        assert [i.id for i in await store.claim_outbox(at(10_000))] == [kept.id]
        listed = await store.list_outbox()
        assert [(i.id, i.done) for i in listed] == [(done.id, True), (kept.id, False)]
        assert [i.id for i in await store.list_outbox(request_id="r2")] == [kept.id]
        assert await store.list_outbox(request_id="none") == []

    async def test_unknown_outbox_ids_are_errors(self, store: Store) -> None:
        with pytest.raises(StoreError):
            await store.complete_outbox(999_999)
        with pytest.raises(StoreError):
            await store.retry_outbox(999_999, due_at=T0, error="x")
